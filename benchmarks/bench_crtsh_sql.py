"""Benchmark: crtsh-sql from a local PostgreSQL into the store — certificates per second and peak RSS.

    python benchmarks/bench_crtsh_sql.py                 # 100,000 and 1,000,000 rows
    python benchmarks/bench_crtsh_sql.py --sizes 20000,100000

Data: a few thousand real certificates (tests.synth) spread over 20 days of notBefore; the rows are
those DER blobs with 4 bytes of the serial number overwritten per row (done inside PostgreSQL), so
every row is a distinct certificate that parses, but whose signature no longer verifies. 1% are in
crl_revoked. Each size runs in a fresh child process so its peak RSS is its own; the baseline is a
bare psycopg server-side cursor over the same query in the same child (no store, no RawCert).
Memory is flat when the peak RSS of the 1,000,000-row run is about that of the 100,000-row run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DAYS = 20
TEMPLATES = 2000
SERIAL_BASE = 0x7100000000000000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(dsn: str, sizes: list[int]) -> None:
    """One CA per size, each holding that many distinct certificates."""
    import psycopg

    from tests.synth import TestCA, der, utc

    ca = TestCA(name="Bench Issuing CA")
    t0 = utc("2024-01-01T00:00")
    rows = []
    for k in range(TEMPLATES):
        serial = SERIAL_BASE + k
        nb = t0 + timedelta(seconds=k * DAYS * 86400 // TEMPLATES)
        blob = der(ca.issue(serial=serial, not_before=nb, cn=f"b{k}.example.com", dns=[f"b{k}.example.com"]))
        off = blob.find(serial.to_bytes(8, "big"))
        assert off > 0
        rows.append((k, blob, off, nb.replace(tzinfo=None)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS c_ica_notbefore")
        conn.execute("CREATE TEMP TABLE tmpl (k int, der bytea, off int, nb timestamp)")
        with conn.cursor().copy("COPY tmpl FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        for n, size in enumerate(sizes, start=1):
            conn.execute("INSERT INTO ca (id, name) VALUES (%s, %s)", (n, f"Bench CA {size}"))
            conn.execute(f"""
                CREATE TEMP TABLE gen AS
                SELECT overlay(t.der PLACING int4send(i) FROM t.off + 5 FOR 4) AS d, t.off, t.nb, i
                  FROM generate_series(0, {size} - 1) i JOIN tmpl t ON t.k = i % {TEMPLATES}""")
            conn.execute("INSERT INTO x509_facts SELECT sha256(d), nb, substring(d FROM off + 1 FOR 8) FROM gen "
                         "ON CONFLICT DO NOTHING")
            conn.execute("INSERT INTO crl_revoked SELECT %s, substring(d FROM off + 1 FOR 8), 1, nb + interval '1 day', "
                         "nb FROM gen WHERE i %% 100 = 0 ON CONFLICT DO NOTHING", (n,))
            conn.execute("INSERT INTO certificate (issuer_ca_id, certificate) SELECT %s, d FROM gen", (n,))
            conn.execute("DROP TABLE gen")
        conn.execute("INSERT INTO ct_log_entry SELECT id, id, now() - interval '1 year', 1 FROM certificate")
        conn.execute("CREATE INDEX c_ica_notbefore ON certificate (issuer_ca_id, x509_notBefore(certificate))")
        conn.execute("ANALYZE")


def child(dsn: str, ca_id: int, size: int) -> None:
    """Measure one size: the source into a fresh store, then the bare-cursor baseline."""
    import psycopg

    from scanner.sources.base import RawCert
    from scanner.sources.crtsh_sql import WINDOW_QUERY, CrtshSqlOptions, read
    from tests.synth import utc

    start_rss = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        since = utc("2024-01-01T00:00")
        options = CrtshSqlOptions(dsn=dsn, ca_ids=(ca_id,), since=since, until=since + timedelta(days=DAYS))
        t = time.perf_counter()
        certs = sum(1 for item in read(options, store=Path(tmp) / "store.sqlite3") if isinstance(item, RawCert))
        seconds = time.perf_counter() - t
        peak = rss_mb()
        t = time.perf_counter()
        base_rows = 0
        with psycopg.connect(dsn) as conn, conn.cursor(name="bench", binary=True) as cur:
            cur.itersize = 2000
            cur.execute(WINDOW_QUERY, {"ca_ids": [ca_id], "start": since.replace(tzinfo=None),
                                       "end": (since + timedelta(days=DAYS)).replace(tzinfo=None)})
            for _ in cur:
                base_rows += 1
        base_seconds = time.perf_counter() - t
    print(json.dumps({"size": size, "certs": certs, "seconds": seconds, "start_rss_mb": start_rss,
                      "peak_rss_mb": peak, "baseline_rows": base_rows, "baseline_seconds": base_seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--child", nargs=3, metavar=("DSN", "CA_ID", "SIZE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    from tests.loopback.pg import start_postgres

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="ctscan-bench-pg-") as pgdata:
        server, dsn = start_postgres(Path(pgdata))
        try:
            t = time.perf_counter()
            load(dsn, sizes)
            print(f"loaded {sum(sizes):,} rows into PostgreSQL in {time.perf_counter() - t:.0f} s "
                  f"({TEMPLATES} real certificates, serials rewritten per row)", flush=True)
            results = []
            for n, size in enumerate(sizes, start=1):
                out = subprocess.run([sys.executable, __file__, "--child", dsn, str(n), str(size)],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                results.append(r)
                rate, base = r["certs"] / r["seconds"], r["baseline_rows"] / r["baseline_seconds"]
                print(f"{size:>9,} rows: {r['certs']:,} certs in {r['seconds']:.1f} s = {rate:,.0f} certs/s to the "
                      f"store; bare cursor {base:,.0f} rows/s (ratio {rate / base:.2f}); peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB (after imports {r['start_rss_mb']:.0f} MB)", flush=True)
            if len(results) > 1:
                first, last = results[0], results[-1]
                print(f"peak RSS {last['size']:,} vs {first['size']:,} rows: "
                      f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x for {last['size'] / first['size']:.0f}x the rows")
        finally:
            server.cleanup()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
