"""OCSP checks per second against a loopback responder, and CRL parse rate for a 1,000,000-entry CRL.

    python benchmarks/bench_ocsp.py [--certs 400] [--limited-certs 40] [--crl-entries 1000000]

OCSP: check_revocation over certificates whose AIA points at tests/loopback/ocsp_server.py, with
the default per-responder rate limit (Config.ocsp_rate), with the limit lifted, and (baseline)
lifted but one worker. Each certificate costs two requests (SHA-1 GET and SHA-256 POST).
CRL: scanner/revocation/crl.py's load_crl + crl_revocations on a synthetic CRL built once into
/tmp (about a second; see build_crl), in a child process so peak RSS is the parse alone; the
real 20,685-entry InCommon CRL is the baseline.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CRL_CACHE = Path("/tmp/ctscan-bench-crl-{n}.der")
REAL_CRL = REPO / "tests" / "fixtures" / "crl" / "InCommon-RSA-Server-CA_2018-08-20.crl"


def bench_ocsp(n_certs: int, n_limited: int) -> None:
    import pandas as pd

    from scanner.core.config import Config
    from scanner.enrich.revocation.issuers import issuers_by_key_id
    from scanner.parse.certs import parse_der
    from scanner.pipeline import check_revocation
    from tests.loopback.ocsp_server import OcspServer
    from tests.synth import TestCA, der

    ca = TestCA(name="ctscan Bench OCSP CA")
    now = datetime.now(timezone.utc)
    with OcspServer(ca.cert, ca.key) as server:
        rows = [parse_der(der(ca.issue(serial=s, not_before=now - timedelta(days=5), ocsp_url=server.url)))
                for s in range(1, n_certs + 1)]
        certs = pd.DataFrame(rows)
        issuers = issuers_by_key_id([ca.cert])
        default_rate = Config(out_dir=Path(".")).ocsp_rate

        def run(frame, **kw) -> float:
            cfg = Config(out_dir=Path("."), check_revocation=True, fetch_crls=False, retries=1, **kw)
            start = time.perf_counter()
            result = check_revocation(frame, cfg, issuers=issuers, now=now)
            elapsed = time.perf_counter() - start
            assert int(result.responders["good"].iloc[0]) == 2 * len(frame), result.responders
            return len(frame) / elapsed

        base = run(certs.head(max(1, n_certs // 4)), ocsp_rate=0, lookup_concurrency=1)
        lifted = run(certs, ocsp_rate=0)
        limited = run(certs.head(n_limited), ocsp_rate=default_rate)
    print(f"OCSP baseline (no limit, 1 worker):       {base:8.1f} certificates/s ({2 * base:.1f} requests/s)")
    print(f"OCSP no limit, 32 workers ({n_certs} certs):   {lifted:8.1f} certificates/s "
          f"({2 * lifted:.1f} requests/s), x{lifted / base:.1f} the baseline")
    print(f"OCSP default limit {default_rate:g} req/s/responder ({n_limited} certs): {limited:8.1f} certificates/s "
          f"({2 * limited:.1f} requests/s), x{limited / base:.2f} the baseline")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _elements(buf: bytes) -> list[bytes]:
    """The DER elements laid end to end in buf."""
    out, pos = [], 0
    while pos < len(buf):
        length, hdr = buf[pos + 1], 2
        if length & 0x80:
            k = length & 0x7F
            length, hdr = int.from_bytes(buf[pos + 2:pos + 2 + k], "big"), 2 + k
        out.append(buf[pos:pos + hdr + length])
        pos += hdr + length
    return out


def _body(element: bytes) -> bytes:
    length, hdr = element[1], 2
    if length & 0x80:
        hdr = 2 + (length & 0x7F)
    return element[hdr:]


def build_crl(n: int) -> Path:
    """A signed n-entry CRL, cached in /tmp.

    CertificateRevocationListBuilder copies its entry list on every add (quadratic), so a
    two-entry CRL is built with cryptography and its entries are used as templates: the
    revokedCertificates list is filled by hand, then the TBS is signed with the CA key.
    """
    path = Path(str(CRL_CACHE).format(n=n))
    if path.exists():
        return path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.synth import TestCA, der

    ca = TestCA(name="ctscan Bench CRL CA")
    when = datetime(2025, 1, 1, tzinfo=timezone.utc)
    start = time.perf_counter()
    first = 0x1000_0000_0000_0000
    template = ca.crl([(first, when, x509.ReasonFlags.superseded), (first + 1, when, None)], this_update=when)
    tbs_fields = _elements(_body(template.tbs_certlist_bytes))
    revoked_at = next(i for i, f in enumerate(tbs_fields) if f[0] == 0x30 and _body(f)[:1] == b"\x30"
                      and i >= 4)  # version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates
    with_reason, plain = _elements(_body(tbs_fields[revoked_at]))
    serial_der = _elements(_body(with_reason))[0]
    entries = bytearray()
    for i in range(n):
        serial = first + i * 7919
        tmpl = with_reason if i % 4 == 0 else plain
        entries += _der(0x30, serial.to_bytes(8, "big").join([serial_der[:2], b""]) + _body(tmpl)[len(serial_der):])
    tbs_fields[revoked_at] = _der(0x30, bytes(entries))
    tbs = _der(0x30, b"".join(tbs_fields))
    signature = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    outer = _elements(_body(der(template)))
    data = _der(0x30, tbs + outer[1] + _der(0x03, b"\x00" + signature))
    crl = x509.load_der_x509_crl(data)
    assert crl.is_signature_valid(ca.key.public_key()) and len(crl) == n
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    print(f"built a {n:,}-entry CRL ({len(data) / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s -> {path}")
    return path


def crl_child(path: str) -> None:
    """Runs in a fresh process: parse one CRL file and print entries, seconds and peak RSS (MB)."""
    from scanner.enrich.revocation.crl import crl_revocations, load_crl

    data = Path(path).read_bytes()
    start = time.perf_counter()
    info, _frame = crl_revocations(load_crl(data, path), path)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{info.entries} {elapsed} {peak_mb}")


def bench_crl(n: int) -> None:
    def measure(path: Path) -> tuple[int, float, float]:
        out = subprocess.run([sys.executable, __file__, "--crl-child", str(path)], capture_output=True, text=True,
                             check=True).stdout.split()
        return int(out[0]), float(out[1]), float(out[2])

    e0, t0, m0 = measure(REAL_CRL)
    print(f"CRL baseline (real InCommon, {e0:,} entries): {e0 / t0:,.0f} entries/s, peak RSS {m0:.0f} MB")
    e, t, m = measure(build_crl(n))
    print(f"CRL {e:,} entries: {t:.1f} s, {e / t:,.0f} entries/s, peak RSS {m:.0f} MB, "
          f"x{(e / t) / (e0 / t0):.2f} the baseline rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=int, default=400)
    parser.add_argument("--limited-certs", type=int, default=40)
    parser.add_argument("--crl-entries", type=int, default=1_000_000)
    parser.add_argument("--skip-crl", action="store_true")
    parser.add_argument("--crl-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crl_child:
        crl_child(args.crl_child)
        return
    bench_ocsp(args.certs, args.limited_certs)
    if not args.skip_crl:
        bench_crl(args.crl_entries)


if __name__ == "__main__":
    main()
