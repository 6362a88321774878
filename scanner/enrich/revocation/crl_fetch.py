"""Fetch CRLs over HTTP (from certificates' CRL distribution points or CCADB), check them, and read their entries.

Each CRL gets one row in the per-CRL table (url, status, times, entries, error). Its status is
`ok`, `unverified` (read, but no issuer certificate to check the signature against), `stale`
(nextUpdate passed), `bad_signature`, `unparseable` or `unreachable`. Only CRLs we could read
(ok, unverified, stale) contribute revocation rows; a CRL with a bad signature is not evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import requests
from cryptography import x509

from scanner.core.bounded import limit
from scanner.core.net import FetchError, HostRateLimits, get_with_retries, new_session
from scanner.core.records import ErrorRecord, empty_frame, frame_from_rows
from scanner.core.times import iso
from scanner.enrich.revocation.crl import (
    CRLError,
    crl_revocations,
    crl_scope,
    issuing_distribution_point,
    load_crl,
)
from scanner.enrich.revocation.tables import CRL_TABLE_COLUMNS, READABLE, REVOCATION_COLUMNS


@dataclass
class CrlFetch:
    """The per-CRL table, the revocation rows of the readable ones, and error rows (ERROR_COLUMNS keys)."""

    crls: pd.DataFrame
    revocations: pd.DataFrame
    errors: list[dict[str, str]] = field(default_factory=list)
    documents: list[tuple[str, str, bytes]] = field(default_factory=list)  # with keep_der: (url, "crl", DER)

    def status_of(self, url: str) -> str:
        """The status of one fetched CRL URL ('' when it was not fetched)."""
        hit = self.crls.loc[self.crls["url"] == url, "status"]
        return str(hit.iloc[0]) if len(hit) else ""


def find_issuer(
    crl_or_cert: x509.CertificateRevocationList | x509.Certificate,
    key_id: str,
    issuers: dict[str, x509.Certificate],
) -> x509.Certificate | None:
    """The issuer certificate by authority key id (hex), else by subject name equal to the issuer name."""
    if key_id and key_id in issuers:
        return issuers[key_id]
    for cert in issuers.values():
        if cert.subject == crl_or_cert.issuer:
            return cert
    return None


def check_crl(
    data: bytes,
    url: str,
    issuers: dict[str, x509.Certificate],
    now: datetime,
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Parse, verify and date-check one CRL's bytes: (table row, revocation rows or None)."""
    row: dict[str, Any] = {"url": url, "bytes": len(data), "signature": "unchecked"}
    try:
        crl = load_crl(data, url)
        info, revs = crl_revocations(crl, url)
    except (CRLError, ValueError) as exc:
        row.update(status="unparseable", error=str(exc)[:300])
        return row, None
    row.update(issuer_dn=info.issuer_dn, issuer_key_id=info.issuer_key_id, this_update=info.this_update,
               next_update=info.next_update, entries=info.entries)
    idp = issuing_distribution_point(crl)  # its extensions were read already: an unreadable one is unparseable
    if idp is not None:
        row.update(idp_urls=" ".join(idp[0]), idp_critical=idp[1])
    row["scope"] = crl_scope(crl)
    issuer = find_issuer(crl, info.issuer_key_id, issuers)
    status = "unverified"
    if issuer is not None:
        try:
            good = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError):
            good = False
        row["signature"] = "ok" if good else "bad"
        if not good:
            row.update(status="bad_signature",
                       error=f"signature does not verify with {issuer.subject.rfc4514_string()}")
            return row, None
        status = "ok"
    if info.next_update is not None and info.next_update < pd.Timestamp(now):
        status = "stale"
        row["error"] = f"nextUpdate {iso(info.next_update)} has passed"
    elif issuer is None:
        row["error"] = "no issuer certificate known: signature not checked (pass it with --issuer-cert)"
    row["status"] = status
    return row, revs


def fetch_crls(
    urls: Iterable[str | tuple[str, str]],
    *,
    issuers: dict[str, x509.Certificate] | None = None,
    session: requests.Session | None = None,
    timeout: float = 30.0,
    retries: int = 2,
    rate: float = 0.0,
    workers: int = 8,
    now: datetime | None = None,
    backoff_base: float = 0.5,
    max_bytes: int | None = None,
    keep_der: bool = False,
) -> CrlFetch:
    """Fetch each CRL URL once (http/https only), check it, and collect its revocations.

    urls may be (url, source) pairs; the source (e.g. "ccadb:<CA name>") lands in the table.
    max_bytes: refuse a CRL larger than this, on the wire or decompressed (default bounded.LIMITS["crl"]).
    keep_der: keep each fetched CRL's bytes in documents (for pkilint's CRL linter, --lint).
    """
    bound = limit("crl", max_bytes=max_bytes)
    now = now or datetime.now(timezone.utc)
    issuers = issuers or {}
    session = session or new_session()
    limits = HostRateLimits(rate)
    wanted: dict[str, str] = {}
    for item in urls:
        url, source = (item, "certificates") if isinstance(item, str) else item
        wanted.setdefault(url.strip(), source)

    def one(url: str) -> tuple[dict[str, Any], pd.DataFrame | None, dict[str, str] | None]:
        if not url.lower().startswith(("http://", "https://")):
            row = {"url": url, "status": "unreachable", "error": "not an http(s) URL (LDAP and others are not fetched)"}
            return row, None, None
        try:
            resp = get_with_retries(session, url, limiter=limits.for_url(url), retries=retries, timeout=timeout,
                                    base_delay=backoff_base, bound=bound)
        except FetchError as exc:
            row = {"url": url, "status": "unreachable", "http_status": exc.status, "error": str(exc)[:300]}
            hint = "raise --max-crl-bytes, or pass the file with --crl" if "limit" in exc.reason else \
                "check the URL or pass the file with --crl"
            message = f"CRL unreachable: {exc}; {hint}"
            return row, None, ErrorRecord("crl-fetch", url, message, stage="crl").as_row()
        row, revs = check_crl(resp.content, url, issuers, now)
        if keep_der:
            documents.append((url, "crl", resp.content))
        row["http_status"] = resp.status_code
        err = None
        if row["status"] in ("unparseable", "bad_signature"):
            err = ErrorRecord("crl-fetch", url, f"CRL {row['status']}: {row.get('error', '')}", stage="crl").as_row()
        return row, revs, err

    rows, frames, errors = [], [], []
    documents: list[tuple[str, str, bytes]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (_url, source), (row, revs, err) in zip(wanted.items(), pool.map(one, list(wanted))):
            row["source"] = source
            rows.append(row)
            if revs is not None and row["status"] in READABLE:
                frames.append(revs)
            if err is not None:
                errors.append(err)
    revocations = pd.concat(frames, ignore_index=True) if frames else empty_frame(REVOCATION_COLUMNS)
    return CrlFetch(frame_from_rows(rows, CRL_TABLE_COLUMNS), revocations.astype(REVOCATION_COLUMNS), errors,
                    sorted(documents))

