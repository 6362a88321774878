"""The lenient reader (asn1crypto, for certificates cryptography refuses) against parse_der in the same run.

No target: malformed certificates are rare, so this only says what a CA with many of them would pay.
Usage: python benchmarks/bench_lenient.py [N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import make_corpus  # noqa: E402

from scanner.parse.certs import parse_der, parse_lenient  # noqa: E402


def rate(fn, ders: list[bytes], repeat: int = 3) -> float:
    """Best certificates per second over a few runs."""
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        for d in ders:
            fn(d)
        best = max(best, len(ders) / (time.perf_counter() - t))
    return best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    _, ders, _ = make_corpus(n, n // 2)
    strict = rate(parse_der, ders)
    lenient = rate(lambda d: parse_lenient(d, "bench"), ders)
    print(f"certificates: {n}")
    print(f"parse_der (cryptography):  {strict:,.0f} certs/s")
    print(f"parse_lenient (asn1crypto): {lenient:,.0f} certs/s")
    print(f"ratio, lenient vs strict: {lenient / strict:.2f}")


if __name__ == "__main__":
    main()
