"""--lint: ctscan's lint stage against a bare pkilint loop in the same run, then a rerun with the lint cache warm.

Baseline: one process, one validator container built once and reused, pkilint's finding filters, as
``lint_cabf_serverauth_cert lint -d`` does per certificate minus its start-up. ctscan: enrich.lint's
LintService on 2 worker processes (spawn, pkilint import and validator builds included), results
written to a fresh store; then the same certificates again with that store warm.
Targets: 2 cores >= 1.6 x the bare loop's rate; the warm rerun >= 50 x faster than the cold one.
Usage: python benchmarks/bench_lint.py [N]   (N distinct throwaway certificates, 90 days each; default 3000)
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

# the throwaway CA lives with the tests (it is no part of the scanner's API); the checkout's root on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Everything heavy is imported inside the functions: each spawned lint worker re-imports this script
# as its __main__, and ctscan's own entry point (scanner.cli) costs a worker no more than that.


def corpus(n: int) -> list[bytes]:
    """n distinct DV-like leaf certificates (90 days) of one throwaway CA, a few with internal names or IPs."""
    from tests.synth import TestCA, der, new_key, utc

    ca = TestCA(name="ctscan Lint Benchmark CA")
    keys = [new_key() for _ in range(16)]
    start = utc("2025-06-01T00:00")
    out = []
    for i in range(n):
        dns = [f"www.site{i}.example.com", f"site{i}.example.com"]
        if i % 50 == 0:
            dns.append(f"host{i}.corp")
        out.append(der(ca.issue(serial=0x200000 + i, not_before=start + timedelta(minutes=5 * i), days=90,
                                cn=dns[0], dns=dns, ips=["10.0.0.1"] if i % 97 == 0 else (),
                                key=keys[i % len(keys)], crl_url="http://crl.example.com/ca.crl",
                                ocsp_url="http://ocsp.example.com")))
    return out


def bare(ders: list[bytes]) -> int:
    """The baseline: one validator container and its finding filters, reused for every certificate."""
    from pkilint import finding_filter, loader
    from pkilint.cabf import serverauth
    from pkilint.pkix import certificate

    cert_type = serverauth.determine_certificate_type(loader.RFC5280CertificateDocumentLoader().load_der_document(
        ders[0], "certificate"))
    container = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(), serverauth.create_validators(cert_type))
    filters = serverauth.create_serverauth_finding_filters(cert_type)
    findings = 0
    for d in ders:
        doc = loader.RFC5280CertificateDocumentLoader().load_der_document(d, "certificate")
        results, _ = finding_filter.filter_results(filters, container.validate(doc.root))
        findings += sum(len(r.finding_descriptions) for r in results)
    return findings


def ctscan(ders: list[bytes], store: Path, workers: int) -> dict:
    """ctscan's lint stage: every certificate through LintService (cache lookups, workers, store writes)."""
    from scanner.enrich.lint import LintService

    with LintService(store, workers=workers) as service:
        for d in ders:
            service.add(d)
        return service.finish().summary


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    from scanner.enrich.lint import pkilint_version

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    ders = corpus(n)
    print(f"pkilint {pkilint_version()}, {n} certificates, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    bare(ders[:50])  # pkilint imported and warmed outside the timing: the baseline is its steady rate
    t0, c0 = time.perf_counter(), time.process_time()
    bare(ders)
    bare_s, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"bare pkilint loop, 1 core, one validator: {n / bare_s:8.1f} certs/s ({bare_s:.1f} s; "
          f"{n / bare_cpu:.1f} certs per CPU second)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.sqlite3"
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        cold = ctscan(ders, store, workers=2)
        cold_s = time.perf_counter() - t0
        cold_cpu = time.process_time() - c0 + _children_cpu() - k0  # the workers are reaped by now
        assert cold["linted"] == n and cold["from_cache"] == 0, cold
        print(f"ctscan --lint, 2 workers, cold store:     {n / cold_s:8.1f} certs/s ({cold_s:.1f} s), "
              f"{n / cold_s / (n / bare_s):.2f} x the bare loop (target >= 1.6); "
              f"{n / cold_cpu:.1f} certs per CPU second, start-up included ({bare_cpu / cold_cpu:.2f} of the bare "
              "loop's: on 2 idle cores the wall ratio is about twice that)")
        t0 = time.perf_counter()
        warm = ctscan(ders, store, workers=2)
        warm_s = time.perf_counter() - t0
        assert warm["linted"] == 0 and warm["from_cache"] == n, warm
        print(f"ctscan --lint, warm store (rerun):        {n / warm_s:8.1f} certs/s ({warm_s:.2f} s), "
              f"{cold_s / warm_s:.0f} x faster than cold (target >= 50)")
    print(f"total {time.perf_counter() - started:.1f} s; load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
