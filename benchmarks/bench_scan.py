"""End to end: `ctscan scan --source files` on a generated corpus with a CRL and a loopback RDAP server.

Targets (issue "ctscan scan"): 100,000 certificates (~60,000 registrable domains), rate limit lifted:
<= 90 s wall with an empty cache, <= 30 s rerun with the cache warm, <= 2 GB peak RSS.
Usage: python benchmarks/bench_scan.py [N_CERTS] [N_DOMAINS]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_registration import serve  # noqa: E402  (the loopback RDAP registry)
from corpus import write_corpus  # noqa: E402

TLDS = ["com", "net", "org", "es", "de", "uk", "fr", "io"]


def bootstrap(path: Path, base: str) -> None:
    """An IANA-format RDAP bootstrap pointing every corpus TLD at the loopback server."""
    path.write_text(json.dumps({"version": "1.0", "publication": "2026-01-01T00:00:00Z",
                                "services": [[TLDS, [base]]]}))


def run_scan(args: list[str]) -> tuple[float, float, dict]:
    """Run the CLI in a child process: (wall seconds, peak RSS MiB of the child, summary)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"scan failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out = Path(args[args.index("--out") + 1])
    return wall, rss, json.loads((out / "summary.json").read_text())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    domains = int(sys.argv[2]) if len(sys.argv) > 2 else int(n * 0.6)
    corpus = Path(tempfile.gettempdir()) / f"ctscan-bench-corpus-{n}-{domains}"
    t = time.perf_counter()
    if not (corpus / "ca.crl").exists():
        write_corpus(corpus, n, domains)
    print(f"corpus: {n} certificates, {domains} domains in {corpus} ({time.perf_counter() - t:.1f} s to prepare)")

    q: mp.Queue = mp.Queue()
    server = mp.Process(target=serve, args=(q,), daemon=True)
    server.start()
    port = q.get(timeout=30)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            bootstrap(tmp_path / "dns.json", f"http://127.0.0.1:{port}/rdap/")
            common = ["scan", "--source", "files", str(corpus / "certs"), "--crl", str(corpus / "ca.crl"),
                      "--registration", "rdap", "--rdap-bootstrap", str(tmp_path / "dns.json"),
                      "--rdap-rate", "0", "--lookup-concurrency", "64", "--cache", str(tmp_path / "cache"),
                      "--no-progress", "-q"]
            cold, rss_cold, s1 = run_scan([*common, "--out", str(tmp_path / "out1")])
            print(f"cold cache: {cold:.1f} s wall (target <= 90), peak RSS {rss_cold:.0f} MiB (target <= 2048); "
                  f"{s1['certificates']} certs, {s1['registrable_domains']} domains, lookups {s1['lookups']['by_status']}")
            warm, rss_warm, s2 = run_scan([*common, "--out", str(tmp_path / "out2")])
            print(f"warm cache: {warm:.1f} s wall (target <= 30), peak RSS {rss_warm:.0f} MiB; "
                  f"cache hits {s2['lookups'].get('cache_hits')}")
            print(f"suspects: {s1['suspects']} / {s2['suspects']}; findings {s1['findings']}")
    finally:
        server.terminate()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
