"""Benchmark: entries per second and memory reading a large tiled log and a large RFC 6962 log on loopback.

The logs are generated (default 1,000,000 entries each) and served by real HTTP servers in a child
process, so the figures are the reader's own. Distinct signed certificates for a million entries take
too long to make, so entries reuse a pool of real DER certificates (entry i = pool[i % pool size], with
its own timestamp and leaf_index); one pool certificate in `--share` belongs to the audited CA.
Baseline: the same tiles / get-entries pages fetched with plain requests and no parsing, in this process.

    python benchmarks/bench_ct.py [--entries 1000000] [--only tiled|rfc6962]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from scanner.sources.base import RawCert, SourceError
from scanner.sources.ct import CtOptions, read
from scanner.sources.ct.issuers import spki_sha256
from scanner.sources.ct.merkle import root_of
from tests.loopback.ct_server import (
    CTServer,
    LogKey,
    RFC6962Log,
    TiledLog,
    leaf_index_extension,
    log_list,
    rfc6962_entry,
    tile_leaf,
    timestamped_entry,
)
from tests.synth import TestCA, der, pem, utc

POOL = 64
T0 = 1_700_000_000_000


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_pool(share: int) -> tuple[list[tuple[bytes, bytes, bool, bytes]], TestCA]:
    """(cert DER, issuer DER, precert?, issuer key hash) for POOL entries; 1 in `share` from the audited CA."""
    audited = TestCA(name="Audited CA")
    others = [TestCA(name=f"Other CA {n}") for n in range(8)]
    pool = []
    for i in range(POOL):
        ca = audited if i % share == 0 else others[i % len(others)]
        precert = i % 2 == 0
        c = ca.issue(serial=10_000 + i, not_before=utc("2024-06-01T00:00"), dns=[f"host{i}.example.org"],
                     precert=precert)
        pool.append((der(c), der(ca.cert), precert, spki_sha256(ca.cert)))
    return pool, audited


def _te(pool, i: int, tiled: bool) -> bytes:
    cert, _, precert, ikh = pool[i % POOL]
    ext = leaf_index_extension(i) if tiled else b""
    if precert:
        return timestamped_entry(T0 + i, tbs=cert[4:-80], issuer_key_hash=ikh, extensions=ext)
    return timestamped_entry(T0 + i, cert, extensions=ext)


def serve(kind: str, n: int, share: int, key_pem: bytes, pool, conn) -> None:
    """Child process: build the log and serve it until killed."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = LogKey(load_pem_private_key(key_pem, None))

    def tes(i: int) -> bytes:
        return _te(pool, i, kind == "tiled")

    if kind == "tiled":
        hashes = b"".join(hashlib.sha256(b"\x00\x00\x00" + tes(i)).digest() for i in range(n))
        root = root_of(hashes[i:i + 32] for i in range(0, len(hashes), 32))

        def leaf(i: int) -> bytes:
            cert, issuer, precert, _ = pool[i % POOL]
            return tile_leaf(tes(i), [hashlib.sha256(issuer).digest()], cert if precert else None)

        issuers = {hashlib.sha256(p[1]).digest(): p[1] for p in pool}
        log = TiledLog(hashes, key.checkpoint("bench.test", n, root), tile_leaf=leaf, issuers=issuers)
    else:
        def entry(i: int) -> tuple[bytes, bytes]:
            cert, issuer, precert, _ = pool[i % POOL]
            return rfc6962_entry(tes(i), [issuer], cert if precert else None)

        root = root_of(hashlib.sha256(b"\x00" + entry(i)[0]).digest() for i in range(n))
        log = RFC6962Log(entry, key.sth(n, root), max_batch=1024, size=n)
    srv = CTServer(log)
    srv.__enter__()
    conn.send(srv.url)
    while True:
        time.sleep(3600)


def baseline(kind: str, url: str, n: int) -> float:
    """Entries per second fetching the same pages with plain requests, no parsing."""
    s = requests.Session()
    t = time.perf_counter()
    if kind == "tiled":
        for tile in range(n // 256):
            _ = s.get(f"{url}tile/data/{tile:03d}" if tile < 1000 else
                  f"{url}tile/data/x{tile // 1000:03d}/{tile % 1000:03d}").content
    else:
        for a in range(0, n, 1024):
            _ = s.get(f"{url}ct/v1/get-entries", params={"start": a, "end": min(n, a + 1024) - 1}).content
    return n / (time.perf_counter() - t)


def run(kind: str, n: int, share: int) -> None:
    pool, audited = make_pool(share)
    key = LogKey()
    from cryptography.hazmat.primitives import serialization
    key_pem = key.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    parent, child = mp.Pipe()
    t = time.perf_counter()
    proc = mp.get_context("fork").Process(target=serve, args=(kind, n, share, key_pem, pool, child), daemon=True)
    proc.start()
    url = parent.recv()
    print(f"\n[{kind}] {n:,} entries generated and served in {time.perf_counter() - t:.1f}s "
          f"(pool of {POOL} real DER certificates reused across entries; 1 in {share} from the audited CA)")
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        lg = key.log_json(f"bench {kind}", url=url) if kind != "tiled" else \
            key.log_json(f"bench {kind}", monitoring_url=url, submission_url="https://bench.test/")
        (tmpd / "list.json").write_text(json.dumps(log_list([lg]) if kind != "tiled" else log_list(tiled=[lg])))
        (tmpd / "ca.pem").write_bytes(pem(audited.cert))
        options = CtOptions(log_list=tmpd / "list.json", logs=(f"bench {kind}",), issuer_certs=(tmpd / "ca.pem",),
                            batch=1024, parallel=4, progress=False)
        base_n = min(n, 100_000)
        base = baseline(kind, url, base_n)
        print(f"  baseline (plain GETs, no parsing) over {base_n:,} entries: {base:,.0f} entries/s")
        kept = errors = 0
        marks = {100_000, 300_000, n}
        t = time.perf_counter()
        last_index = 0
        start_rss = rss_mb()
        for item in read(options, store=tmpd / "store.sqlite3"):
            if isinstance(item, RawCert):
                kept += 1
                last_index = int(item.provenance.rsplit("#", 1)[1])
                for m in sorted(marks):
                    if last_index + POOL >= m > last_index:
                        el = time.perf_counter() - t
                        print(f"  at {m:>9,} entries: {m / el:,.0f} entries/s, RSS {rss_mb():.0f} MB")
                        marks.discard(m)
            elif isinstance(item, SourceError):
                errors += 1
                print("  error:", item.error[:200])
        el = time.perf_counter() - t
        print(f"  read {n:,} entries in {el:.1f}s: {n / el:,.0f} entries/s ({n / el / base:.2f}x baseline), "
              f"kept {kept:,} for the audited CA, {errors} errors; RSS {start_rss:.0f} MB before, "
              f"{rss_mb():.0f} MB after, peak {peak_mb():.0f} MB")
    proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--share", type=int, default=16, help="1 in SHARE pool certificates is the audited CA's")
    ap.add_argument("--only", choices=["tiled", "rfc6962"])
    args = ap.parse_args()
    for kind in ("tiled", "rfc6962"):
        if args.only in (None, kind):
            run(kind, args.entries, args.share)


if __name__ == "__main__":
    main()
