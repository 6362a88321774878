"""Scale: the detect stage on 100k and 1M certificates, pandas engine vs Dask LocalCluster (2 workers).

    python benchmarks/bench_scale.py                    # 100k only
    python benchmarks/bench_scale.py --sizes 100000 1000000

Each size's certificate table (make_corpus DER -> parse -> precert collapse -> CRL applied) is built
once and cached as a pickle in --cache (pickle keeps the SAN lists as lists; Parquet would hand
them back as arrays). Every figure then comes from a fresh process, so peak RSS is that run's own:

* build   : sign + parse + collapse + CRL for the table (the end-to-end cost up to the detectors);
* pandas  : run_detectors on the whole table, wall time and the process's peak RSS;
* dask    : run_detectors_dask on a fresh LocalCluster (2 worker processes, 1 thread each), wall
            time excluding the cluster start (printed apart), driver peak RSS and the largest
            worker's peak RSS.

Ratios: dask / pandas at each size, and 1M / 100k per engine (10.0 = linear).
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def build(n: int, cache: Path) -> Path:
    """The cached certificate table for n certificates (built if missing); prints the build time."""
    path = cache / f"certs-{n}.pkl"
    if path.exists():
        return path
    from benchmarks.corpus import make_corpus
    from scanner.enrich.revocation.crl import apply_revocations, crl_revocations
    from scanner.parse.certs import record_from_raw, records_frame
    from scanner.parse.link import collapse_precerts
    from scanner.sources.base import RawCert

    started = time.perf_counter()
    _, ders, crl = make_corpus(n, max(n // 5, 1))  # ~5 certificates per domain, small subscribers
    signed = time.perf_counter()
    certs = collapse_precerts(records_frame([record_from_raw(RawCert(d, "files", f"#{i}"))
                                             for i, d in enumerate(ders)]))
    certs = apply_revocations(certs, crl_revocations(crl, "bench.crl")[1])
    done = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(certs, fh, protocol=pickle.HIGHEST_PROTOCOL)
    print(json.dumps({"stage": "build", "n": n, "sign_s": round(signed - started, 1),
                      "parse_collapse_crl_s": round(done - signed, 1)}), flush=True)
    return path


def measure(engine: str, path: Path) -> dict:
    """One detect run in this process: wall seconds, findings, peak RSS."""
    from scanner.core.config import Config
    from scanner.core.records import REGISTRATION_COLUMNS, empty_frame

    with open(path, "rb") as fh:
        certs = pickle.load(fh)
    config = Config(out_dir=Path("/tmp/ctscan-bench-scale-out"), engine=engine)
    registrations = empty_frame(REGISTRATION_COLUMNS)
    out = {"engine": engine, "n": len(certs)}
    if engine == "pandas":
        from scanner.detect.run import run_detectors, sort_findings

        started = time.perf_counter()
        findings = sort_findings(run_detectors(certs, registrations, config))
        out["detect_s"] = round(time.perf_counter() - started, 2)
    else:
        from scanner.scale.engine import dask_client, run_detectors_dask

        started = time.perf_counter()
        with dask_client(config) as client:
            out["cluster_start_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            findings = run_detectors_dask(certs, registrations, config, client=client)
            out["detect_s"] = round(time.perf_counter() - started, 2)
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            out["worker_peak_rss_mb"] = round(max(peaks.values()), 0)
    out["findings"] = {k: int(v) for k, v in findings["code"].value_counts().items()}
    out["peak_rss_mb"] = round(_rss_mb(), 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--engines", nargs="+", default=["pandas", "dask"])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ctscan-bench-scale"))
    parser.add_argument("--measure", nargs=2, metavar=("ENGINE", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))), flush=True)
        return
    results: dict[tuple[str, int], dict] = {}
    for n in args.sizes:
        path = build(n, args.cache)
        for engine in args.engines:
            run = subprocess.run([sys.executable, __file__, "--measure", engine, str(path)],
                                 capture_output=True, text=True, check=True)
            results[engine, n] = json.loads(run.stdout.strip().splitlines()[-1])
            print(json.dumps(results[engine, n]), flush=True)
    for n in args.sizes:
        if ("pandas", n) in results and ("dask", n) in results:
            ratio = results["dask", n]["detect_s"] / results["pandas", n]["detect_s"]
            print(f"n={n}: dask/pandas detect time = {ratio:.2f}")
    if len(args.sizes) > 1:
        small, big = min(args.sizes), max(args.sizes)
        for engine in args.engines:
            if (engine, small) in results and (engine, big) in results:
                growth = results[engine, big]["detect_s"] / results[engine, small]["detect_s"]
                print(f"{engine}: detect time x{growth:.1f} for x{big / small:.0f} certificates")


if __name__ == "__main__":
    main()
