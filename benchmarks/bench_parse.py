"""Parse DER -> record rows, against a bare cryptography parse loop in the same run.

Target: ctscan's parse reaches >= 0.8 of the bare loop's rate. Also the ingest of N single-certificate
PEM files, read by the parse workers themselves (the files source) and, as before, read in this process.
Usage: python benchmarks/bench_parse.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import make_corpus  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.x509.oid import ExtensionOID, NameOID  # noqa: E402

from scanner.parse.certs import IssuerNames, parse_der  # noqa: E402
from scanner.parse.items import parse_in_chunks  # noqa: E402
from scanner.sources import files  # noqa: E402
from scanner.sources.base import RawCert  # noqa: E402


def pem_of(der: bytes) -> bytes:
    """One certificate as a PEM file."""
    import base64

    body = base64.encodebytes(der).replace(b"\n", b"")
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + (
        b"\n-----END CERTIFICATE-----\n")


def bare(ders: list[bytes]) -> int:
    """The baseline: load each certificate and read subject, issuer, serial, validity and SANs; no record."""
    n = 0
    for d in ders:
        c = x509.load_der_x509_certificate(d)
        c.subject.rfc4514_string()
        c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        c.issuer.rfc4514_string()
        c.serial_number
        c.not_valid_before_utc, c.not_valid_after_utc
        try:
            c.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(
                x509.DNSName)
        except x509.ExtensionNotFound:
            pass
        n += 1
    return n


def ours(ders: list[bytes]) -> int:
    """ctscan's parser: the full record per certificate, one issuer-name cache for the run as parse_chunk keeps."""
    names = IssuerNames()
    for d in ders:
        parse_der(d, source="files", provenance="bench", names=names)
    return len(ders)


def ours_parallel(ders: list[bytes]) -> int:
    """ctscan's ingest: chunks of records as DataFrames, parsed by one process per core."""
    items = (RawCert(d, "files", "bench") for d in ders)
    return sum(len(chunk.certs) for chunk in parse_in_chunks(items, workers=0))


def files_in_workers(folder: Path) -> int:
    """ctscan's ingest of a folder of PEM files: the workers read the files themselves."""
    return sum(len(chunk.certs) for chunk in parse_in_chunks(files.read(files.FilesOptions([folder])), workers=0))


def files_read_here(folder: Path) -> int:
    """The same folder read in this process and handed to the workers as items (a tally or the lint tap does so)."""
    items = (item for item in files.read_files([folder]))
    return sum(len(chunk.certs) for chunk in parse_in_chunks(items, workers=0))


def rate(fn, ders: list[bytes], repeat: int = 3) -> float:
    """Best certificates per second over a few runs."""
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn(ders)
        best = max(best, len(ders) / (time.perf_counter() - t))
    return best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    _, ders, _ = make_corpus(n, n // 2)
    b = rate(bare, ders)
    o = rate(ours, ders)
    print(f"certificates: {n}")
    print(f"bare cryptography loop: {b:,.0f} certs/s")
    print(f"ctscan parse_der:       {o:,.0f} certs/s")
    p = rate(ours_parallel, ders, repeat=2)
    print(f"ratio, one process: {o / b:.2f} (target >= 0.8)")
    print(f"ctscan ingest (records as DataFrames, one process per core, workers' start-up included): {p:,.0f} certs/s")
    print(f"ratio, ingest vs the single bare loop: {p / b:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for k, d in enumerate(ders):
            sub = folder / f"{k // 1000:04d}"
            sub.mkdir(exist_ok=True)
            (sub / f"{k}.pem").write_bytes(pem_of(d))
        w = rate(lambda _: files_in_workers(folder), ders, repeat=2)
        h = rate(lambda _: files_read_here(folder), ders, repeat=2)
    print(f"ingest of {n} PEM files, read by the workers: {w:,.0f} certs/s; read here: {h:,.0f} certs/s "
          f"(ratio {w / h:.2f}); load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
