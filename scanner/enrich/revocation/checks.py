"""Does the CA's revocation information agree with itself? OCSP vs the CRLs vs crt.sh, per certificate and per responder.

For every unexpired certificate (or `Config.ocsp_sample` per responder, known-revoked first)
the first AIA responder is asked twice: a SHA-1 CertID over GET (what browsers send, and what
CDNs cache) and a SHA-256 CertID over POST. Findings come from the GET/SHA-1 answer (the POST
one stands in when GET got no answer); a definitive disagreement between the two is its own
finding. CRL problems (stale, unreachable, unparseable, bad signature) are reported in the
per-CRL table and as findings on each unexpired certificate that points at that CRL, because
those are the certificates whose status a relying party cannot learn.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtensionOID

from scanner.core.config import Config
from scanner.core.net import FetchError, HostRateLimits, get_with_retries, new_session
from scanner.core.records import (
    CERT_COLUMNS,
    FINDING_COLUMNS,
    Finding,
    coerce,
    empty_frame,
    frame_from_rows,
)
from scanner.enrich.revocation.crl import REVOCATION_COLUMNS, apply_revocations
from scanner.enrich.revocation.crl_fetch import (
    CRL_TABLE_COLUMNS,
    READABLE,
    CrlFetch,
    ccadb_crl_urls,
    fetch_crls,
)
from scanner.enrich.revocation.ocsp import OcspResult, query

#: Two revocation times closer than this are the same event (CRL and OCSP round differently).
TIME_TOLERANCE = timedelta(seconds=5)
MAX_WORKERS = 32

_STATUS_CODES = {
    "unknown": "ocsp_unknown",
    "unauthorized": "ocsp_unauthorized",
    "malformed": "ocsp_malformed",
    "tryLater": "ocsp_try_later",
    "internalError": "ocsp_internal_error",
    "malformedRequest": "ocsp_error_status",
    "sigRequired": "ocsp_error_status",
    "unreachable": "ocsp_unreachable",
}
_CRL_CODES = {"stale": "crl_stale", "unreachable": "crl_unreachable", "unparseable": "crl_unparseable",
              "bad_signature": "crl_bad_signature"}

RESPONDER_COLUMNS: dict[str, str] = {
    "responder": "string",
    "certificates": "Int64",
    "requests": "Int64",
    "good": "Int64",
    "revoked": "Int64",
    "unknown": "Int64",
    "unauthorized": "Int64",
    "try_later": "Int64",
    "internal_error": "Int64",
    "other_error_status": "Int64",
    "malformed": "Int64",
    "unreachable": "Int64",
    "bad_signature": "Int64",
    "stale_or_future": "Int64",
    "sha256_certid_answered": "Int64",  # SHA-256/POST requests that got a good/revoked answer
    "median_latency_ms": "float64",
    "errors": "string",  # the first few distinct error texts
}
OCSP_RESULT_COLUMNS: dict[str, str] = {
    "sha256": "string",
    "serial": "string",
    "responder": "string",
    "method": "string",
    "hash": "string",
    "status": "string",
    "http_status": "Int64",
    "latency_ms": "float64",
    "this_update": "datetime64[us, UTC]",
    "next_update": "datetime64[us, UTC]",
    "revocation_time": "datetime64[us, UTC]",
    "revocation_reason": "string",
    "signature": "string",
    "signer": "string",
    "freshness": "string",
    "error": "string",
}


@dataclass
class RevocationCheck:
    """Everything the revocation check found: findings, per-responder and per-CRL tables, CRL revocations, errors."""

    findings: pd.DataFrame
    responders: pd.DataFrame
    crls: pd.DataFrame
    revocations: pd.DataFrame
    errors: list[dict[str, Any]] = field(default_factory=list)
    ocsp_results: pd.DataFrame = field(default_factory=lambda: empty_frame(OCSP_RESULT_COLUMNS))


# --- issuers --------------------------------------------------------------------------------


def key_id_of(cert: x509.Certificate) -> str:
    """The certificate's subjectKeyIdentifier as hex (computed from the key when absent)."""
    try:
        return cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()  # type: ignore[arg-type]


def issuers_by_key_id(certs: list[x509.Certificate]) -> dict[str, x509.Certificate]:
    """CA certificates keyed by their subject key id (hex): the `issuers` argument of check_revocation."""
    return {key_id_of(c): c for c in certs}


def load_issuer_bytes(data: bytes) -> list[x509.Certificate]:
    """Certificates from DER, PEM or a PKCS#7 certs-only bundle (what AIA caIssuers URLs serve)."""
    if b"-----BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificates(data)
    for loader in (lambda d: [x509.load_der_x509_certificate(d)], pkcs7.load_der_pkcs7_certificates,
                   pkcs7.load_pem_pkcs7_certificates):
        try:
            return list(loader(data))
        except Exception:  # try the next container format
            continue
    raise ValueError("neither a DER/PEM certificate nor a PKCS#7 bundle")


def fetch_issuer(session: requests.Session, url: str, timeout: float, retries: int) -> list[x509.Certificate]:
    """The certificates an AIA caIssuers URL serves (FetchError or ValueError when it cannot)."""
    resp = get_with_retries(session, url, retries=retries, timeout=timeout)
    return load_issuer_bytes(resp.content)


def _resolve_issuers(
    base: pd.DataFrame, issuers: dict[str, x509.Certificate], session: requests.Session, config: Config,
    errors: list[dict[str, Any]],
) -> dict[str, x509.Certificate]:
    """issuers, plus any the certificates' caIssuers URLs (a `ca_issuers` list column, when present) supply."""
    found = dict(issuers)
    if "ca_issuers" not in base.columns:
        return found
    tried: set[str] = set()
    for kid, urls in zip(base["issuer_key_id"].fillna(""), base["ca_issuers"]):
        if not kid or kid in found or not isinstance(urls, (list, tuple)):
            continue
        for url in urls:
            if url in tried or not str(url).lower().startswith("http"):
                continue
            tried.add(url)
            try:
                for cert in fetch_issuer(session, url, config.timeout, config.retries):
                    found.setdefault(key_id_of(cert), cert)
            except (FetchError, ValueError) as exc:
                errors.append(_err("ocsp", url, "", f"caIssuers {url}: {exc}"))
            if kid in found:
                break
    return found


def _issuer_for(kid: str, dn: str, issuers: dict[str, x509.Certificate], by_dn: dict[str, x509.Certificate]):
    if kid:
        return issuers.get(kid)
    return by_dn.get(dn)


# --- the check ------------------------------------------------------------------------------


def check_revocation(
    certs: pd.DataFrame,
    config: Config,
    *,
    issuers: dict[str, x509.Certificate] | None = None,
    now: datetime | None = None,
    session: requests.Session | None = None,
    ccadb: Any = None,
    backoff_base: float = 0.5,
) -> RevocationCheck:
    """Fetch the CRLs, ask the OCSP responders, and report every disagreement (never raises for network trouble).

    issuers: CA certificates keyed by subject key id hex (see issuers_by_key_id); certificates of
    an issuer not given (nor found through a `ca_issuers` column) get one error row, not OCSP.
    ccadb: an AllCertificateRecords CSV path whose CRL columns add CRLs to fetch.
    """
    now = now or datetime.now(timezone.utc)
    session = session or new_session()
    errors: list[dict[str, Any]] = []
    base = coerce(certs, CERT_COLUMNS)
    if "ca_issuers" in certs.columns:
        base["ca_issuers"] = certs["ca_issuers"]
    known = _resolve_issuers(base, issuers or {}, session, config, errors)
    by_dn = {c.subject.rfc4514_string(): c for c in known.values()}

    # 1. CRLs
    crl_urls: list[str | tuple[str, str]] = []
    if config.fetch_crls:
        crl_urls = sorted({u for urls in base["crl_distribution_points"] if isinstance(urls, list) for u in urls})
        if ccadb:
            crl_urls += ccadb_crl_urls(ccadb)
    fetched = fetch_crls(crl_urls, issuers=known, session=session, timeout=config.timeout, retries=config.retries,
                         workers=min(8, config.lookup_concurrency), now=now, backoff_base=backoff_base)
    errors += fetched.errors
    crl_view = _crl_view(base, fetched.revocations)

    findings: list[Finding] = []
    unexpired = base["not_after"] > pd.Timestamp(now)
    findings += _crl_findings(base[unexpired], fetched)

    # 2. OCSP
    jobs = _ocsp_jobs(base[unexpired], config, known, by_dn, errors)
    results = _run_ocsp(jobs, session, config, now, backoff_base)
    rows_by_sha = {row["sha256"]: row for row in base[unexpired].to_dict("records")}
    for sha, pair in results.items():
        findings += _ocsp_findings(rows_by_sha[sha], pair, crl_view.get(sha), fetched, now)
    for sha, pair in results.items():
        for r in pair:
            if r.status == "unreachable":
                errors.append(_err("ocsp", r.url, sha, f"OCSP {r.method}/{r.hash_name}: {r.error}"))

    return RevocationCheck(
        findings=frame_from_rows([f.as_row() for f in findings], FINDING_COLUMNS),
        responders=_responder_table(jobs, results),
        crls=fetched.crls if len(fetched.crls) else empty_frame(CRL_TABLE_COLUMNS),
        revocations=fetched.revocations.astype(REVOCATION_COLUMNS),
        errors=errors,
        ocsp_results=_results_frame(results, rows_by_sha),
    )


def _err(stage: str, provenance: str, sha: str, message: str) -> dict[str, Any]:
    return {"stage": stage, "source": "revocation-check", "provenance": provenance, "sha256": sha, "error": message}


def _crl_view(base: pd.DataFrame, revocations: pd.DataFrame) -> dict[str, tuple[pd.Timestamp, str]]:
    """sha256 -> (revocation time, CRL url) from the fetched CRLs alone."""
    if base.empty or revocations.empty:
        return {}
    blank = base[["sha256", "issuer_dn", "issuer_key_id", "serial"]].copy()
    blank["revoked_at"] = pd.Series(pd.NaT, index=blank.index, dtype="datetime64[us, UTC]")
    blank["revocation_reason"] = ""
    blank["revocation_source"] = ""
    applied = apply_revocations(blank, revocations, source="crl")
    hit = applied[applied["revoked_at"].notna()]
    urls = revocations.drop_duplicates(["issuer_key_id", "serial"]).set_index(["issuer_key_id", "serial"])["crl"]
    out = {}
    for row in hit.itertuples():
        out[row.sha256] = (row.revoked_at, str(urls.get((row.issuer_key_id, row.serial), "")))
    return out


def _crl_findings(unexpired: pd.DataFrame, fetched: CrlFetch) -> list[Finding]:
    bad = {r.url: r for r in fetched.crls.itertuples() if r.status in _CRL_CODES}
    out = []
    if not bad:
        return out
    for row in unexpired.itertuples():
        for url in row.crl_distribution_points if isinstance(row.crl_distribution_points, list) else []:
            r = bad.get(url)
            if r is None:
                continue
            out.append(Finding(row.sha256, _CRL_CODES[r.status], name=url,
                               evidence=f"The CRL this certificate points at ({url}) is {r.status}: {r.error}",
                               detail=json.dumps({"crl": url, "status": r.status})))
    return out


def _serial_int(serial: str) -> int | None:
    try:
        return -int(serial[1:], 16) if serial.startswith("-") else int(serial, 16)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class _Job:
    sha256: str
    serial: int
    responder: str
    issuer: x509.Certificate


def _ocsp_jobs(unexpired: pd.DataFrame, config: Config, known, by_dn, errors) -> list[_Job]:
    """One job per certificate to ask, at most ocsp_sample per responder, known-revoked certificates first."""
    per_responder: dict[str, list[tuple[int, str, _Job]]] = defaultdict(list)
    missing: Counter[tuple[str, str]] = Counter()
    for row in unexpired.itertuples():
        urls = [u for u in (row.ocsp_urls if isinstance(row.ocsp_urls, list) else []) if u.lower().startswith("http")]
        if not urls:
            continue
        issuer = _issuer_for(row.issuer_key_id or "", row.issuer_dn or "", known, by_dn)
        if issuer is None:
            missing[(row.issuer_key_id or "", row.issuer_dn or "")] += 1
            continue
        serial = _serial_int(row.serial or "")
        if serial is None:
            continue
        priority = 0 if pd.notna(row.revoked_at) else 1
        per_responder[urls[0]].append((priority, row.sha256, _Job(row.sha256, serial, urls[0], issuer)))
    for (kid, dn), n in missing.items():
        errors.append(_err("ocsp", dn, "", f"{n} unexpired certificate(s) of issuer {dn} (key id {kid or 'none'}): "
                           "no issuer certificate, so OCSP was not asked; pass it with --issuer-cert"))
    jobs = []
    for items in per_responder.values():
        items.sort(key=lambda t: (t[0], t[1]))
        take = items if config.ocsp_sample is None else items[: config.ocsp_sample]
        jobs += [job for _, _, job in take]
    return jobs


_VARIANTS = (("sha1", "GET"), ("sha256", "POST"))


def _run_ocsp(jobs: list[_Job], session, config: Config, now, backoff_base) -> dict[str, list[OcspResult]]:
    limits = HostRateLimits(config.ocsp_rate)
    tasks = [(job, h, m) for job in jobs for h, m in _VARIANTS]

    def one(task: tuple[_Job, str, str]) -> OcspResult:
        job, hash_name, method = task
        return query(session, job.responder, job.serial, job.issuer, hash_name=hash_name, method=method,
                     limiter=limits.for_url(job.responder), retries=config.retries, timeout=config.timeout,
                     backoff_base=backoff_base, now=now)

    out: dict[str, list[OcspResult]] = defaultdict(list)
    if not tasks:
        return out
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, max(1, config.lookup_concurrency))) as pool:
        for (job, _, _), result in zip(tasks, pool.map(one, tasks)):
            out[job.sha256].append(result)
    return out


def _fmt(t: Any) -> str:
    return "" if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%SZ")


def _ocsp_findings(row: dict, pair: list[OcspResult], crl_hit, fetched: CrlFetch, now: datetime) -> list[Finding]:
    sha = row["sha256"]
    primary = pair[0]
    if not primary.answered and len(pair) > 1 and pair[1].answered:
        primary = pair[1]
    r = primary
    where = f"{r.url} ({r.method}, {r.hash_name} CertID)"
    base_detail = {"responder": r.url, "method": r.method, "hash": r.hash_name, "http_status": r.http_status,
                   "latency_ms": round(r.latency_ms, 1) if r.latency_ms is not None else None}
    out: list[Finding] = []

    def add(code: str, evidence: str, **extra: Any) -> None:
        out.append(Finding(sha, code, evidence, name=r.url, detail=json.dumps({**base_detail, **extra}, default=str)))

    if r.status in _STATUS_CODES:
        add(_STATUS_CODES[r.status], f"{where} answered {r.status} for this unexpired certificate"
            + (f": {r.error}" if r.error else ""), error=r.error)
        return out
    if r.signature in ("bad", "unauthorised_signer"):
        add("ocsp_bad_signature", f"{where}: signature {r.signature.replace('_', ' ')}; signer {r.signer}",
            signer=r.signer)
    if r.freshness in ("stale", "future"):
        add(f"ocsp_{r.freshness}", f"{where}: {'; '.join(r.notes)}", this_update=_fmt(r.this_update),
            next_update=_fmt(r.next_update))
    crl_time, crl_url = crl_hit if crl_hit else (None, "")
    listed_time = row.get("revoked_at")
    listed_source = row.get("revocation_source") or ""
    if r.status == "good":
        if crl_time is not None or (listed_time is not None and pd.notna(listed_time)):
            when = crl_time if crl_time is not None else listed_time
            source = f"the CRL {crl_url}" if crl_time is not None else (listed_source or "the input")
            lag = (pd.Timestamp(r.this_update) - pd.Timestamp(when)) if r.this_update else None
            made = ("signed after the revocation" if lag is not None and lag > timedelta(0)
                    else "made before the revocation and still served")
            add("ocsp_good_but_revoked",
                f"{where} says good (thisUpdate {_fmt(r.this_update)}, {made}) but {source} says revoked at {_fmt(when)}",
                revoked_at=_fmt(when), revocation_source="crl" if crl_time is not None else listed_source,
                this_update=_fmt(r.this_update), lag_seconds=lag.total_seconds() if lag is not None else None)
    elif r.status == "revoked":
        other = crl_time if crl_time is not None else (
            listed_time if listed_source in ("crl", "crtsh") and pd.notna(listed_time) else None)
        if other is not None and r.revocation_time is not None:
            diff = abs(pd.Timestamp(r.revocation_time) - pd.Timestamp(other))
            if diff > TIME_TOLERANCE:
                src = f"the CRL {crl_url}" if crl_time is not None else listed_source
                add("revocation_time_mismatch",
                    f"{where} says revoked at {_fmt(r.revocation_time)} but {src} says {_fmt(other)} "
                    f"({diff.total_seconds():.0f} s apart)",
                    ocsp_revocation_time=_fmt(r.revocation_time), crl_revocation_time=_fmt(other))
        if crl_time is None:
            covering = _covering_crls(row, fetched)
            # A CRL made before the revocation cannot list it; only a later one is at fault.
            late = [c for c in covering if r.revocation_time is None
                    or pd.Timestamp(c.this_update) > pd.Timestamp(r.revocation_time) + TIME_TOLERANCE]
            if late:
                c = late[0]
                add("crl_missing_revoked",
                    f"{where} says revoked at {_fmt(r.revocation_time)} but the CRL {c.url} "
                    f"(thisUpdate {_fmt(c.this_update)}) does not list serial {row['serial']}",
                    crl=c.url, ocsp_revocation_time=_fmt(r.revocation_time), crl_this_update=_fmt(c.this_update))
    definitive = [p for p in pair if p.status in ("good", "revoked")]
    if len({p.status for p in definitive}) > 1:
        add("ocsp_variant_disagrees", "; ".join(f"{p.method}/{p.hash_name}: {p.status}" for p in pair),
            answers={f"{p.method}/{p.hash_name}": p.status for p in pair})
    return out


def _covering_crls(row: dict, fetched: CrlFetch) -> list[Any]:
    """The readable fetched CRLs this certificate points at that were issued by its issuer."""
    urls = row.get("crl_distribution_points")
    if not isinstance(urls, list) or fetched.crls.empty:
        return []
    table = fetched.crls[fetched.crls["url"].isin(urls) & fetched.crls["status"].isin(READABLE)]
    out = []
    for c in table.itertuples():
        kid, dn = row.get("issuer_key_id") or "", row.get("issuer_dn") or ""
        if (kid and c.issuer_key_id and kid == c.issuer_key_id) or (c.issuer_dn == dn):
            out.append(c)
    return out


def _responder_table(jobs: list[_Job], results: dict[str, list[OcspResult]]) -> pd.DataFrame:
    stats: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    errs: dict[str, list[str]] = defaultdict(list)
    bucket = {"good": "good", "revoked": "revoked", "unknown": "unknown", "unauthorized": "unauthorized",
              "tryLater": "try_later", "internalError": "internal_error", "malformedRequest": "other_error_status",
              "sigRequired": "other_error_status", "malformed": "malformed", "unreachable": "unreachable"}
    for job in jobs:
        s = stats.setdefault(job.responder, {k: 0 for k in RESPONDER_COLUMNS if k not in
                                             ("responder", "median_latency_ms", "errors")})
        s["certificates"] += 1
        for r in results.get(job.sha256, []):
            s["requests"] += 1
            s[bucket.get(r.status, "malformed")] += 1
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


def _results_frame(results: dict[str, list[OcspResult]], rows_by_sha: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for sha, pair in results.items():
        for r in pair:
            rows.append({"sha256": sha, "serial": rows_by_sha[sha]["serial"], "responder": r.url, "method": r.method,
                         "hash": r.hash_name, "status": r.status, "http_status": r.http_status,
                         "latency_ms": r.latency_ms, "this_update": r.this_update, "next_update": r.next_update,
                         "revocation_time": r.revocation_time, "revocation_reason": r.revocation_reason,
                         "signature": r.signature, "signer": r.signer, "freshness": r.freshness, "error": r.error})
    return frame_from_rows(rows, OCSP_RESULT_COLUMNS)
