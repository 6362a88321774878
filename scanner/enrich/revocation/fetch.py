"""Ask the CA's revocation services about its certificates: caIssuers, CRLs, OCSP; tables, never findings.

For every unexpired certificate (or `Config.ocsp_sample` per responder, known-revoked first)
the first AIA responder is asked twice: a SHA-1 CertID over GET (what browsers send, and what
CDNs cache) and a SHA-256 CertID over POST. Each answer is a row of the OCSP results table; every
CRL the certificates (or CCADB) point at is a row of the CRL table. Comparing them is the job of
`scanner.detect.revocation_status`. Network trouble becomes error rows and table rows, never an exception.
"""

from __future__ import annotations

import statistics
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import requests
from cryptography import x509

from scanner.core.config import Config
from scanner.core.net import HostRateLimits, new_session
from scanner.core.records import CERT_COLUMNS, ErrorRecord, coerce, empty_frame, frame_from_rows
from scanner.enrich.revocation.ccadb import CcadbScope, read_ccadb, scope_ccadb
from scanner.enrich.revocation.crl_fetch import fetch_crls
from scanner.enrich.revocation.issuers import issuer_for, resolve_issuers
from scanner.enrich.revocation.ocsp import OcspResult, query
from scanner.enrich.revocation.tables import (
    CRL_TABLE_COLUMNS,
    OCSP_RESULT_COLUMNS,
    RESPONDER_COLUMNS,
    REVOCATION_COLUMNS,
)

MAX_WORKERS = 32
#: The two requests per certificate, in the order asked: (CertID hash, HTTP method).
VARIANTS = (("sha1", "GET"), ("sha256", "POST"))
_SOURCE = "revocation-check"
#: With --lint, pkilint's OCSP response linter reads this many answers of each responder (and every CRL).
OCSP_LINT_PER_RESPONDER = 10


@dataclass
class RevocationTables:
    """What the revocation services said: one row per OCSP request, per CRL, per CRL entry, per responder; errors."""

    ocsp_results: pd.DataFrame  # OCSP_RESULT_COLUMNS, a certificate's rows in VARIANTS order
    crls: pd.DataFrame  # CRL_TABLE_COLUMNS
    revocations: pd.DataFrame  # REVOCATION_COLUMNS, from the readable fetched CRLs
    responders: pd.DataFrame  # RESPONDER_COLUMNS
    errors: list[dict[str, str]]  # ERROR_COLUMNS rows
    #: with config.lint: (url, "crl" / "ocsp", DER) of every fetched CRL and of OCSP_LINT_PER_RESPONDER answers
    #: per responder, for pkilint's CRL and OCSP response linters
    documents: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    sha256: str
    serial_text: str
    serial: int
    responder: str
    issuer: x509.Certificate


def fetch_revocation(
    certs: pd.DataFrame,
    config: Config,
    *,
    issuers: dict[str, x509.Certificate] | None = None,
    now: datetime | None = None,
    session: requests.Session | None = None,
    ccadb: Any = None,
    backoff_base: float = 0.5,
) -> RevocationTables:
    """Fetch the CRLs and ask the OCSP responders about the unexpired certificates (never raises for network trouble).

    issuers: CA certificates keyed by subject key id hex (see issuers_by_key_id); certificates of
    an issuer not given (nor found through their caIssuers URLs) get one error row, not OCSP.
    ccadb: a CcadbScope (scanner.enrich.revocation.ccadb), or an AllCertificateRecords CSV path scoped here:
    the CRLs its records of the certificates' issuing CAs disclose are fetched too.
    """
    now = now or datetime.now(timezone.utc)
    session = session or new_session()
    base = coerce(certs, CERT_COLUMNS)
    known, errors = resolve_issuers(base, issuers or {}, session, config.timeout, config.retries)

    crl_urls: list[str | tuple[str, str]] = []
    if config.fetch_crls:
        # any sequence: a list, a shared tuple, or an array when the table was read back from Parquet
        crl_urls = sorted({u for urls in base["crl_distribution_points"]
                           if isinstance(urls, (list, tuple, np.ndarray)) for u in urls})
        if ccadb:  # the records of the certificates' issuing CAs only, not every CA in the file
            scope = ccadb if isinstance(ccadb, CcadbScope) else scope_ccadb(read_ccadb(ccadb), base, known.values())
            crl_urls += scope.crl_urls()
    fetched = fetch_crls(crl_urls, issuers=known, session=session, timeout=config.timeout, retries=config.retries,
                         workers=min(8, config.lookup_concurrency), now=now, backoff_base=backoff_base,
                         max_bytes=config.max_crl_bytes, keep_der=config.lint)
    errors += fetched.errors

    jobs, missing = ocsp_jobs(base[base["not_after"] > pd.Timestamp(now)], known, config.ocsp_sample)
    errors += missing
    results = _run_ocsp(jobs, session, config, now, backoff_base)
    errors += [ErrorRecord(_SOURCE, r.url, f"OCSP {r.method}/{r.hash_name}: {r.error}", job.sha256, "ocsp").as_row()
               for job, pair in results for r in pair if r.status == "unreachable"]

    return RevocationTables(
        ocsp_results=_results_frame(results),
        crls=fetched.crls if len(fetched.crls) else empty_frame(CRL_TABLE_COLUMNS),
        revocations=fetched.revocations.astype(REVOCATION_COLUMNS),
        responders=_responder_table(results),
        errors=errors,
        documents=fetched.documents + [(r.url, "ocsp", r.der) for _, pair in results for r in pair if r.der],
    )


def _serial_int(serial: str) -> int | None:
    try:
        return -int(serial[1:], 16) if serial.startswith("-") else int(serial, 16)
    except (ValueError, TypeError):
        return None


def ocsp_jobs(
    unexpired: pd.DataFrame, issuers: dict[str, x509.Certificate], sample: int | None,
) -> tuple[list[_Job], list[dict[str, str]]]:
    """One job per certificate to ask, at most `sample` per responder, known-revoked certificates first.

    Also one error row per issuer whose certificate is not known (its certificates cannot be asked).
    """
    by_dn = {c.subject.rfc4514_string(): c for c in issuers.values()}
    per_responder: dict[str, list[tuple[int, str, _Job]]] = defaultdict(list)
    missing: Counter[tuple[str, str]] = Counter()
    unsupported: list[dict[str, str]] = []
    for row in unexpired.itertuples():
        listed = list(row.ocsp_urls) if isinstance(row.ocsp_urls, (list, tuple)) else []
        urls = [u for u in listed if u.lower().startswith(("http://", "https://"))]
        if not urls:
            if listed:  # ldap: and the like are named, not tried: a certificate's URLs are the CA's to choose
                unsupported.append(ErrorRecord(
                    _SOURCE, listed[0][:300],
                    f"OCSP not asked: {listed[0][:200]!r} is not an http or https URL (only those are fetched)",
                    row.sha256, "ocsp").as_row())
            continue
        issuer = issuer_for(row.issuer_key_id or "", row.issuer_dn or "", issuers, by_dn)
        if issuer is None:
            missing[(row.issuer_key_id or "", row.issuer_dn or "")] += 1
            continue
        serial = _serial_int(row.serial or "")
        if serial is None:
            continue
        priority = 0 if pd.notna(row.revoked_at) else 1
        per_responder[urls[0]].append((priority, row.sha256, _Job(row.sha256, row.serial, serial, urls[0], issuer)))
    errors = [ErrorRecord(_SOURCE, dn, f"{n} unexpired certificate(s) of issuer {dn} (key id {kid or 'none'}): "
                          "no issuer certificate, so OCSP was not asked; pass it with --issuer-cert",
                          stage="ocsp").as_row()
              for (kid, dn), n in missing.items()] + unsupported
    jobs = []
    for items in per_responder.values():
        items.sort(key=lambda t: (t[0], t[1]))
        take = items if sample is None else items[:sample]
        jobs += [job for _, _, job in take]
    return jobs, errors


def _run_ocsp(jobs: list[_Job], session: requests.Session, config: Config, now: datetime,
              backoff_base: float) -> list[tuple[_Job, list[OcspResult]]]:
    """Every job's answers, in VARIANTS order, jobs in the order given."""
    limits = HostRateLimits(config.ocsp_rate)
    tasks = [(job, h, m) for job in jobs for h, m in VARIANTS]
    kept: Counter[str] = Counter()  # answers kept per responder for the OCSP response linter (--lint)
    lock = threading.Lock()

    def one(task: tuple[_Job, str, str]) -> OcspResult:
        job, hash_name, method = task
        keep = False
        if config.lint:
            with lock:
                keep = kept[job.responder] < OCSP_LINT_PER_RESPONDER
                kept[job.responder] += keep
        return query(session, job.responder, job.serial, job.issuer, hash_name=hash_name, method=method,
                     limiter=limits.for_url(job.responder), retries=config.retries, timeout=config.timeout,
                     backoff_base=backoff_base, now=now, keep_der=keep)

    if not tasks:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, max(1, config.lookup_concurrency))) as pool:
        answers = list(pool.map(one, tasks))
    n = len(VARIANTS)
    return [(job, answers[i * n:(i + 1) * n]) for i, job in enumerate(jobs)]


_BUCKETS = {"good": "good", "revoked": "revoked", "unknown": "unknown", "unauthorized": "unauthorized",
            "tryLater": "try_later", "internalError": "internal_error", "malformedRequest": "other_error_status",
            "sigRequired": "other_error_status", "malformed": "malformed", "unreachable": "unreachable"}


def _responder_table(results: list[tuple[_Job, list[OcspResult]]]) -> pd.DataFrame:
    stats: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    errs: dict[str, list[str]] = defaultdict(list)
    for job, pair in results:
        s = stats.setdefault(job.responder, {k: 0 for k in RESPONDER_COLUMNS if k not in
                                             ("responder", "median_latency_ms", "errors")})
        s["certificates"] += 1
        for r in pair:
            s["requests"] += 1
            s[_BUCKETS.get(r.status, "malformed")] += 1
            if r.signature in ("bad", "unauthorised_signer"):
                s["bad_signature"] += 1
            if r.freshness in ("stale", "future"):
                s["stale_or_future"] += 1
            if r.hash_name == "sha256" and r.status in ("good", "revoked"):
                s["sha256_certid_answered"] += 1
            if r.latency_ms is not None:
                latencies[job.responder].append(r.latency_ms)
            if r.error and r.error not in errs[job.responder] and len(errs[job.responder]) < 3:
                errs[job.responder].append(r.error[:200])
    rows = []
    for url, s in stats.items():
        lat = latencies.get(url)
        rows.append({"responder": url, **s, "median_latency_ms": statistics.median(lat) if lat else None,
                     "errors": " | ".join(errs.get(url, []))})
    return frame_from_rows(rows, RESPONDER_COLUMNS)


def _results_frame(results: list[tuple[_Job, list[OcspResult]]]) -> pd.DataFrame:
    rows = [{"sha256": job.sha256, "serial": job.serial_text, "responder": r.url, "method": r.method,
             "hash": r.hash_name, "status": r.status, "http_status": r.http_status, "latency_ms": r.latency_ms,
             "this_update": r.this_update, "next_update": r.next_update, "revocation_time": r.revocation_time,
             "revocation_reason": r.revocation_reason, "signature": r.signature, "signer": r.signer,
             "freshness": r.freshness, "error": r.error, "notes": "; ".join(r.notes)}
            for job, pair in results for r in pair]
    return frame_from_rows(rows, OCSP_RESULT_COLUMNS)
