"""Are the CA's CRLs disclosed in CCADB, and do its partitioned CRLs say which partition they are? (CCADB Policy 6.2)

Pure: it compares the certificates, the CCADB records of their issuing CAs (scoped by
`scanner.enrich.revocation.ccadb.scope_ccadb`) and, with --check-revocation, the fetched CRL table.

- `crldp_not_disclosed`, per certificate and URL: an http(s) crlDistributionPoints URL of an
  unexpired certificate that a CCADB record of its issuer (neither revoked nor expired) does not
  list, exactly as written, once the policy's deadline has passed: 7 days after the first
  certificate carrying it, or 4 hours after the first of them was revoked, whichever is earlier.
  Needs only the certificates and the file, so it works offline.
- `crl_idp_mismatch`, per certificate and URL: a URL disclosed as a partitioned CRL whose fetched
  CRL has no Issuing Distribution Point, a non-critical one, or one that does not name that URL.

A problem of a disclosed URL (unreachable, stale, a bad IDP) is a row of the per-URL table
(crl-disclosure.csv) always, and a finding on the unexpired certificates that point at that URL:
those are the certificates whose status a relying party cannot learn, and a finding is evidence
against one certificate. A disclosed URL that no scanned certificate points at has no certificate
to carry a finding, so it is the table's row and a notice only; scoring some other certificate of
the CA for it would rank suspects by a fact that is not theirs. (crl_unreachable and crl_stale on
the certificates come from `scanner.detect.revocation_status`, which judges every fetched CRL.)
An issuing CA with no CCADB record, or a CRL not fetched, is unknown: a table row, never a finding.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from scanner.core.records import (
    CERT_COLUMNS,
    FINDING_COLUMNS,
    coerce,
    empty_frame,
    finding_code,
    frame_from_rows,
)
from scanner.core.times import iso
from scanner.detect.findings import as_json
from scanner.enrich.revocation.ccadb import CcadbRecord, CcadbScope, IssuingCa
from scanner.enrich.revocation.tables import READABLE

#: CCADB Policy 2.1 section 6.2: disclose within 7 days of the first certificate with the URL, or
#: within 4 hours of revoking the first certificate with it, whichever comes first.
DISCLOSE_AFTER_ISSUANCE = timedelta(days=7)
DISCLOSE_AFTER_REVOCATION = timedelta(hours=4)

#: One row per issuing CA and CRL URL (seen in its unexpired certificates, or disclosed): crl-disclosure.csv.
CRL_DISCLOSURE_COLUMNS: dict[str, str] = {
    "issuer_dn": "string",
    "issuer_key_id": "string",
    "ccadb_records": "string",  # the matching CCADB records' names, "; "-joined
    "matched_by": "string",  # subject key identifier / SHA-256 / name
    "url": "string",
    "certificates": "Int64",  # unexpired scanned certificates carrying the URL
    "first_not_before": "datetime64[us, UTC]",
    "disclosed_as": "string",  # full / partitioned / "" (not disclosed)
    "disclosure": "string",  # disclosed / not_disclosed / not_disclosed_within_deadline / not_required / no_record
    "missing_from": "string",  # the requiring records that do not list it, "; "-joined
    "fetch_status": "string",  # the CRL table's status, "not fetched" without --check-revocation
    "this_update": "datetime64[us, UTC]",
    "next_update": "datetime64[us, UTC]",
    "idp_urls": "string",
    "idp_critical": "boolean",
    "idp_check": "string",  # ok / missing / not_critical / other_url (joined by "; "), "" when not checked
    "error": "string",
}
NOT_FETCHED = "not fetched"


@dataclass
class CrlDisclosure:
    """The findings (FINDING_COLUMNS), the per-URL table (CRL_DISCLOSURE_COLUMNS) and notices."""

    findings: pd.DataFrame
    table: pd.DataFrame
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Url:
    """What the unexpired certificates of one issuing CA say about one CRL URL."""

    shas: tuple[str, ...]
    first_not_before: pd.Timestamp | None = None
    first_revoked: pd.Timestamp | None = None

    def deadline(self) -> pd.Timestamp | None:
        """When the URL had to be in CCADB (None when no date is known)."""
        times = [t + d for t, d in ((self.first_not_before, DISCLOSE_AFTER_ISSUANCE),
                                    (self.first_revoked, DISCLOSE_AFTER_REVOCATION)) if t is not None]
        return min(times) if times else None


def _time_or_none(value: Any) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


_CERT_FIELDS = ("sha256", "issuer_key_id", "issuer_dn", "not_before", "not_after", "revoked_at",
                "crl_distribution_points")


def certificate_urls(certs: pd.DataFrame, now: datetime) -> dict[IssuingCa, dict[str, _Url]]:
    """Per issuing CA, the http(s) CRL URLs of its certificates unexpired at now (as written, first seen first)."""
    base = coerce(certs, {k: CERT_COLUMNS[k] for k in _CERT_FIELDS})
    live = base[base["not_after"] > pd.Timestamp(now)].drop(columns="not_after")
    urls = live.explode("crl_distribution_points").rename(columns={"crl_distribution_points": "url"})
    urls = urls[urls["url"].map(lambda u: isinstance(u, str) and u.lower().startswith(("http://", "https://")))]
    if urls.empty:
        return {}
    urls = urls.assign(url=urls["url"].str.strip(), issuer_key_id=urls["issuer_key_id"].fillna(""),
                       issuer_dn=urls["issuer_dn"].fillna("")).drop_duplicates(["sha256", "url"])
    out: dict[IssuingCa, dict[str, _Url]] = defaultdict(dict)
    grouped = urls.groupby(["issuer_key_id", "issuer_dn", "url"], sort=False, dropna=False)
    summary = grouped.agg(first_not_before=("not_before", "min"), first_revoked=("revoked_at", "min"))
    shas = grouped["sha256"].agg(list)
    for (kid, dn, url), row in summary.iterrows():
        out[IssuingCa(str(kid), str(dn))][str(url)] = _Url(
            tuple(shas[(kid, dn, url)]), _time_or_none(row["first_not_before"]), _time_or_none(row["first_revoked"]))
    return out


def _findings(shas: tuple[str, ...] | list[str], code: str, evidence: str, name: str, detail: str) -> pd.DataFrame:
    """One finding per certificate with the same evidence, built as columns (a CA may have a million of them)."""
    n = len(shas)
    frame = pd.DataFrame({"sha256": list(shas), "code": [code] * n, "severity": [finding_code(code).severity] * n,
                          "name": [name] * n, "related_sha256": [""] * n, "evidence": [evidence] * n,
                          "detail": [detail] * n})
    return coerce(frame, FINDING_COLUMNS)


def _near_miss(url: str, listed: list[str]) -> str:
    """A listed URL equal to url but for case or a trailing slash ('' when none)."""
    key = url.rstrip("/").casefold()
    return next((u for u in listed if u != url and u.rstrip("/").casefold() == key), "")


def idp_check(url: str, crl: dict[str, Any] | None) -> str:
    """The policy's IDP rule for a partitioned CRL fetched from url: 'ok', the problems, or '' when unknown."""
    if crl is None or crl.get("status") not in READABLE:
        return ""
    critical = crl.get("idp_critical")
    if critical is None or pd.isna(critical):
        return "missing"
    problems = [] if bool(critical) else ["not_critical"]
    if url not in str(crl.get("idp_urls") or "").split():
        problems.append("other_url")
    return "; ".join(problems) or "ok"


_IDP_TEXT = {"missing": "has no Issuing Distribution Point extension",
             "not_critical": "has an Issuing Distribution Point that is not critical",
             "other_url": "has an Issuing Distribution Point that does not name the URL it was fetched from"}


def not_disclosed_findings(ca: IssuingCa, url: str, seen: _Url, missing: list[CcadbRecord], file_name: str,
                           all_full_urls: bool, listed: list[str]) -> pd.DataFrame:
    """crldp_not_disclosed on every unexpired certificate of ca carrying url."""
    names = "; ".join(r.label for r in missing)
    evidence = (f"crlDistributionPoints URL {url} of this certificate is not disclosed in the CCADB record(s) "
                f"\"{names}\" of {file_name} for its issuer {ca.label}")
    near = _near_miss(url, listed)
    if near:
        evidence += f"; CCADB lists {near}, which differs only in case or a trailing slash (an exact match is required)"
    if not all_full_urls and any(r.full_crls for r in missing):
        evidence += ("; this file shows only the first full CRL URL of a record (no 'JSON Array of All Full CRL "
                     "URLs' column): check the record in CCADB")
    detail = as_json({"url": url, "issuer": ca.dn, "issuer_key_id": ca.key_id, "ccadb_file": file_name,
                      "ccadb_records": [r.label for r in missing], "first_not_before": iso(seen.first_not_before),
                      "deadline": iso(seen.deadline())})
    return _findings(seen.shas, "crldp_not_disclosed", evidence, url, detail)


def idp_mismatch_findings(ca: IssuingCa, url: str, check: str, crl: dict[str, Any],
                          shas: tuple[str, ...]) -> pd.DataFrame:
    """crl_idp_mismatch on every unexpired certificate of ca pointing at the partitioned CRL url."""
    if check in ("", "ok"):
        return _findings((), "crl_idp_mismatch", "", url, "")
    problems = check.split("; ")
    idp = str(crl.get("idp_urls") or "")
    evidence = (f"The partitioned CRL {url} (disclosed in CCADB for {ca.label}) "
                + " and ".join(_IDP_TEXT[p] for p in problems)
                + (f" (it names {idp})" if "other_url" in problems and idp else "")
                + "; CCADB Policy 6.2 asks for a critical one naming that URL")
    detail = as_json({"crl": url, "problems": problems, "idp_urls": idp.split(),
                      "idp_critical": None if "missing" in problems else "not_critical" not in problems})
    return _findings(shas, "crl_idp_mismatch", evidence, url, detail)


def _record_status(url: str, recs: tuple[CcadbRecord, ...], required: list[CcadbRecord],
                   seen: _Url | None, now: pd.Timestamp) -> tuple[str, list[CcadbRecord]]:
    if not recs:
        return "no_record", []
    if not required:
        return "not_required", []
    missing = [r for r in required if url not in r.urls]
    if not missing:
        return "disclosed", []
    if seen is None:  # disclosed by some record, not by others, and no certificate carries it: nothing owed
        return "disclosed", missing
    deadline = seen.deadline()
    if deadline is not None and now <= deadline:
        return "not_disclosed_within_deadline", missing
    return "not_disclosed", missing


def detect_crl_disclosure(certs: pd.DataFrame, scope: CcadbScope, crls: pd.DataFrame | None,
                          now: datetime) -> CrlDisclosure:
    """Findings and the per-URL table for every issuing CA of the certificates (crls: the fetched CRL table, or None)."""
    stamp = pd.Timestamp(now)
    by_url = {} if crls is None or crls.empty else {c["url"]: c for c in crls.to_dict("records")}
    seen_urls = certificate_urls(certs, now)
    findings: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    lonely: dict[str, int] = defaultdict(int)  # problems of disclosed URLs no certificate points at
    for ca, recs in scope.by_issuer.items():
        required = [r for r in recs if r.requires_disclosure(now)]
        listed = [u for r in recs for u in r.urls]
        partitioned = {u for r in recs for u in r.partitioned_crls}
        full = {u for r in recs for u in r.full_crls}
        in_certs = seen_urls.get(ca, {})
        for url in dict.fromkeys([*in_certs, *listed]):
            seen = in_certs.get(url)
            status, missing = _record_status(url, recs, required, seen, stamp)
            crl = by_url.get(url)
            check = idp_check(url, crl) if url in partitioned else ""
            if url in full and url not in partitioned and crl is not None and not pd.isna(crl.get("idp_critical")):
                check = "present (a full CRL SHOULD NOT carry one)"
            shas = seen.shas if seen is not None else ()
            if status == "not_disclosed" and seen is not None:
                findings.append(not_disclosed_findings(ca, url, seen, missing, scope.file.name,
                                                       scope.file.all_full_urls, listed))
            if url in partitioned and crl is not None:
                findings.append(idp_mismatch_findings(ca, url, check, crl, shas))
            fetch_status = NOT_FETCHED if crl is None else str(crl.get("status") or "")
            bad_idp = url in partitioned and check not in ("", "ok")
            if not shas and crl is not None and (bad_idp or fetch_status not in ("ok", "unverified")):
                lonely[f"IDP {check}" if bad_idp else fetch_status] += 1
            crl = crl or {}
            rows.append({
                "issuer_dn": ca.dn, "issuer_key_id": ca.key_id, "ccadb_records": "; ".join(r.label for r in recs),
                "matched_by": scope.how.get(ca, ""), "url": url, "certificates": len(shas),
                "first_not_before": seen.first_not_before if seen else None,
                "disclosed_as": "partitioned" if url in partitioned else "full" if url in full else "",
                "disclosure": status, "missing_from": "; ".join(r.label for r in missing),
                "fetch_status": fetch_status, "this_update": crl.get("this_update"),
                "next_update": crl.get("next_update"), "idp_urls": crl.get("idp_urls"),
                "idp_critical": crl.get("idp_critical"), "idp_check": check, "error": crl.get("error"),
            })
    notices = [scope.notice(fetched=crls is not None)]
    if lonely:
        what = ", ".join(f"{n} {k}" for k, n in sorted(lonely.items()))
        notices.append(f"CRLs disclosed in CCADB that no scanned certificate points at have problems ({what}): "
                       "see crl-disclosure.csv; they are not findings, having no certificate to carry them.")
    table = frame_from_rows(rows, CRL_DISCLOSURE_COLUMNS) if rows else empty_frame(CRL_DISCLOSURE_COLUMNS)
    found = [f for f in findings if not f.empty]
    frame = pd.concat(found, ignore_index=True) if found else empty_frame(FINDING_COLUMNS)
    return CrlDisclosure(frame, table, notices)
