"""Does the CA's revocation information agree with itself? OCSP vs the CRLs vs crt.sh, per certificate.

Pure: it compares the tables `scanner.enrich.revocation.fetch` returned and never asks anyone.
OCSP findings come from the GET/SHA-1 answer (the POST/SHA-256 one stands in when GET got no
answer); a definitive disagreement between the two is its own finding. CRL problems (stale,
unreachable, unparseable, bad signature) are findings on each unexpired certificate that points
at that CRL, because those are the certificates whose status a relying party cannot learn. Each
rule below makes one comparison and returns its findings, so each can be tested alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from scanner.core.records import CERT_COLUMNS, Finding, coerce
from scanner.core.times import iso
from scanner.detect.findings import findings_frame
from scanner.enrich.revocation.crl import apply_revocations
from scanner.enrich.revocation.tables import READABLE

#: Two revocation times closer than this are the same event (CRL and OCSP round differently).
TIME_TOLERANCE = timedelta(seconds=5)

#: OCSP answers that are themselves the finding: the responder could not say good or revoked.
STATUS_CODES = {
    "unknown": "ocsp_unknown",
    "unauthorized": "ocsp_unauthorized",
    "malformed": "ocsp_malformed",
    "tryLater": "ocsp_try_later",
    "internalError": "ocsp_internal_error",
    "malformedRequest": "ocsp_error_status",
    "sigRequired": "ocsp_error_status",
    "unreachable": "ocsp_unreachable",
}
CRL_CODES = {"stale": "crl_stale", "unreachable": "crl_unreachable", "unparseable": "crl_unparseable",
             "bad_signature": "crl_bad_signature"}


def _text(value: Any) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def _time(value: Any) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


@dataclass(frozen=True)
class Answer:
    """One row of the OCSP results table with its missing values as None or ''."""

    sha256: str
    responder: str
    method: str
    hash_name: str
    status: str
    http_status: int | None = None
    latency_ms: float | None = None
    this_update: pd.Timestamp | None = None
    next_update: pd.Timestamp | None = None
    revocation_time: pd.Timestamp | None = None
    revocation_reason: str = ""
    signature: str = ""
    signer: str = ""
    freshness: str = ""
    error: str = ""
    notes: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Answer:
        """An Answer from a dict of OCSP_RESULT_COLUMNS values."""
        http, latency = row.get("http_status"), row.get("latency_ms")
        return cls(
            sha256=_text(row.get("sha256")), responder=_text(row.get("responder")), method=_text(row.get("method")),
            hash_name=_text(row.get("hash")), status=_text(row.get("status")),
            http_status=None if http is None or pd.isna(http) else int(http),
            latency_ms=None if latency is None or pd.isna(latency) else float(latency),
            this_update=_time(row.get("this_update")), next_update=_time(row.get("next_update")),
            revocation_time=_time(row.get("revocation_time")),
            revocation_reason=_text(row.get("revocation_reason")), signature=_text(row.get("signature")),
            signer=_text(row.get("signer")), freshness=_text(row.get("freshness")), error=_text(row.get("error")),
            notes=_text(row.get("notes")),
        )

    @property
    def answered(self) -> bool:
        """True when the responder returned a readable OCSP response (any status)."""
        return self.status not in ("malformed", "unreachable")

    @property
    def where(self) -> str:
        """'<responder> (GET, sha1 CertID)': who was asked, and how, for the evidence."""
        return f"{self.responder} ({self.method}, {self.hash_name} CertID)"

    def finding(self, code: str, evidence: str, **extra: Any) -> Finding:
        """A finding on this answer's certificate, its detail naming the request and adding `extra`."""
        detail = {"responder": self.responder, "method": self.method, "hash": self.hash_name,
                  "http_status": self.http_status,
                  "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None, **extra}
        return Finding(self.sha256, code, evidence, name=self.responder, detail=json.dumps(detail, default=str))


@dataclass(frozen=True)
class Listed:
    """What else says the certificate is revoked: a fetched CRL, and the revocation already on its row."""

    crl_time: pd.Timestamp | None = None  # from the fetched CRLs alone
    crl_url: str = ""
    listed_time: pd.Timestamp | None = None  # the certificate's revoked_at (crt.sh, --crl files)
    listed_source: str = ""
    crl_reason: str = ""  # the fetched CRL entry's reasonCode name, '' when it has none
    listed_reason: str = ""  # the certificate's revocation_reason


def answers_by_certificate(ocsp_results: pd.DataFrame) -> dict[str, list[Answer]]:
    """sha256 -> its answers in the order they were asked (SHA-1 GET first), certificates in table order."""
    out: dict[str, list[Answer]] = {}
    for row in ocsp_results.to_dict("records"):
        answer = Answer.from_row(row)
        out.setdefault(answer.sha256, []).append(answer)
    return out


def primary_answer(answers: list[Answer]) -> Answer:
    """The answer findings are read from: the first, unless it got no answer and the second did."""
    if not answers[0].answered and len(answers) > 1 and answers[1].answered:
        return answers[1]
    return answers[0]


def crl_view(certs: pd.DataFrame, revocations: pd.DataFrame) -> dict[str, tuple[pd.Timestamp, str, str]]:
    """sha256 -> (revocation time, CRL url, reasonCode name) from the fetched CRLs alone (as apply_revocations matches).

    The url is the CRL of the earliest entry, found by issuer key id, else by issuer DN (an indirect CRL's entry
    names its CA by DN only).
    """
    if certs.empty or revocations.empty:
        return {}
    blank = certs[["sha256", "issuer_dn", "issuer_key_id", "serial"]].copy()
    blank["revoked_at"] = pd.Series(pd.NaT, index=blank.index, dtype="datetime64[us, UTC]")
    blank["revocation_reason"] = ""
    blank["revocation_source"] = ""
    applied = apply_revocations(blank, revocations, source="crl")
    hit = applied[applied["revoked_at"].notna()]
    first = revocations.sort_values("revoked_at", kind="stable")
    by_kid = first.drop_duplicates(["issuer_key_id", "serial"]).set_index(["issuer_key_id", "serial"])["crl"]
    by_dn = first.drop_duplicates(["issuer_dn", "serial"]).set_index(["issuer_dn", "serial"])["crl"]
    return {row.sha256: (row.revoked_at,
                         str(by_kid.get((row.issuer_key_id, row.serial), by_dn.get((row.issuer_dn, row.serial), ""))),
                         _text(row.revocation_reason))
            for row in hit.itertuples()}


def _urls(value: Any) -> list[str]:
    """A URL list cell as a list: a list, a tuple (a shared empty one) or an array (read back from Parquet)."""
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


def covering_crls(cert: dict[str, Any], crls: pd.DataFrame) -> list[dict[str, Any]]:
    """The readable, complete CRLs (rows of the CRL table) this certificate points at that its issuer made.

    A delta CRL or one limited to some reasons or to CA certificates (a `scope`) need not list it.
    """
    urls = _urls(cert.get("crl_distribution_points"))
    if not urls or crls.empty:
        return []
    kid, dn = cert.get("issuer_key_id") or "", cert.get("issuer_dn") or ""
    table = crls[crls["url"].isin(urls) & crls["status"].isin(READABLE)]
    if "scope" in table.columns:  # a table written before the column existed has only complete CRLs in it
        table = table[table["scope"].fillna("") == ""]
    return [c for c in table.to_dict("records")
            if (kid and _text(c["issuer_key_id"]) and kid == c["issuer_key_id"]) or _text(c["issuer_dn"]) == dn]


# --- the rules: one comparison each -----------------------------------------------------------


def crl_problem_findings(cert: dict[str, Any], bad_crls: dict[str, dict[str, Any]]) -> list[Finding]:
    """A finding per CRL this certificate points at that is stale, unreachable, unparseable or badly signed."""
    out = []
    for url in _urls(cert.get("crl_distribution_points")):
        crl = bad_crls.get(url)
        if crl is not None:
            status = crl["status"]
            out.append(Finding(cert["sha256"], CRL_CODES[status], name=url,
                               evidence=f"The CRL this certificate points at ({url}) is {status}: {_text(crl['error'])}",
                               detail=json.dumps({"crl": url, "status": status})))
    return out


def status_finding(r: Answer) -> list[Finding]:
    """The responder answered neither good nor revoked (unknown, an error status, unreadable, unreachable)."""
    if r.status not in STATUS_CODES:
        return []
    return [r.finding(STATUS_CODES[r.status], f"{r.where} answered {r.status} for this unexpired certificate"
                      + (f": {r.error}" if r.error else ""), error=r.error)]


def signature_finding(r: Answer) -> list[Finding]:
    """The answer's signature does not verify, or its signer may not speak for the issuer."""
    if r.signature not in ("bad", "unauthorised_signer"):
        return []
    return [r.finding("ocsp_bad_signature", f"{r.where}: signature {r.signature.replace('_', ' ')}; signer {r.signer}",
                      signer=r.signer)]


def freshness_finding(r: Answer) -> list[Finding]:
    """The answer is stale (nextUpdate passed, or too old) or dated in the future."""
    if r.freshness not in ("stale", "future"):
        return []
    return [r.finding(f"ocsp_{r.freshness}", f"{r.where}: {r.notes}", this_update=iso(r.this_update),
                      next_update=iso(r.next_update))]


def good_but_revoked_finding(r: Answer, listed: Listed) -> list[Finding]:
    """OCSP says good while a fetched CRL, or the revocation already recorded (crt.sh, --crl), says revoked."""
    if r.status != "good" or (listed.crl_time is None and listed.listed_time is None):
        return []
    from_crl = listed.crl_time is not None
    when = listed.crl_time if from_crl else listed.listed_time
    source = f"the CRL {listed.crl_url}" if from_crl else (listed.listed_source or "the input")
    lag = r.this_update - when if r.this_update is not None and when is not None else None
    made = ("signed after the revocation" if lag is not None and lag > timedelta(0)
            else "made before the revocation and still served")
    return [r.finding("ocsp_good_but_revoked",
                      f"{r.where} says good (thisUpdate {iso(r.this_update)}, {made}) but {source} says revoked at "
                      f"{iso(when)}",
                      revoked_at=iso(when), revocation_source="crl" if from_crl else listed.listed_source,
                      this_update=iso(r.this_update), lag_seconds=lag.total_seconds() if lag is not None else None)]


def _other_revocation(listed: Listed) -> tuple[pd.Timestamp, str, str] | None:
    """The revocation OCSP's is compared with: (time, reason, where it is from), the fetched CRL's first, else crt.sh's or --crl's."""
    if listed.crl_time is not None:
        return listed.crl_time, listed.crl_reason, f"the CRL {listed.crl_url}"
    if listed.listed_source in ("crl", "crtsh") and listed.listed_time is not None:
        return listed.listed_time, listed.listed_reason, listed.listed_source
    return None


def revocation_time_mismatch_finding(r: Answer, listed: Listed) -> list[Finding]:
    """OCSP and a CRL (fetched, or crt.sh's) both say revoked, at times more than TIME_TOLERANCE apart."""
    if r.status != "revoked" or r.revocation_time is None:
        return []
    against = _other_revocation(listed)
    if against is None:
        return []
    other, _, source = against
    diff = abs(r.revocation_time - other)
    if diff <= TIME_TOLERANCE:
        return []
    return [r.finding("revocation_time_mismatch",
                      f"{r.where} says revoked at {iso(r.revocation_time)} but {source} says {iso(other)} "
                      f"({diff.total_seconds():.0f} s apart)",
                      ocsp_revocation_time=iso(r.revocation_time), crl_revocation_time=iso(other))]


def _same_reason(a: str, b: str) -> bool | None:
    """Whether two reasonCode names say the same; None when either could not be read (unknown stays unknown).

    An absent reasonCode means unspecified (RFC 5280 5.3.1), so '' and 'unspecified' agree.
    """
    if a.startswith("invalid") or b.startswith("invalid"):
        return None
    return (a or "unspecified") == (b or "unspecified")


def revocation_reason_mismatch_finding(r: Answer, listed: Listed) -> list[Finding]:
    """OCSP and a CRL (fetched, or crt.sh's) both say revoked, for different reasons."""
    if r.status != "revoked":
        return []
    against = _other_revocation(listed)
    if against is None:
        return []
    _, other, source = against
    if _same_reason(r.revocation_reason, other) is not False:
        return []
    return [r.finding("revocation_reason_mismatch",
                      f"{r.where} says revoked for {r.revocation_reason or 'no reason given'} but {source} says "
                      f"{other or 'no reason given'}",
                      ocsp_revocation_reason=r.revocation_reason, crl_revocation_reason=other)]


def crl_missing_revoked_finding(r: Answer, listed: Listed, cert: dict[str, Any], crls: pd.DataFrame) -> list[Finding]:
    """OCSP says revoked but a CRL of the issuer made after the revocation does not list the serial."""
    if r.status != "revoked" or listed.crl_time is not None:
        return []
    # A CRL made before the revocation cannot list it; only a later one is at fault.
    late = [c for c in covering_crls(cert, crls) if r.revocation_time is None
            or pd.Timestamp(c["this_update"]) > r.revocation_time + TIME_TOLERANCE]
    if not late:
        return []
    c = late[0]
    return [r.finding("crl_missing_revoked",
                      f"{r.where} says revoked at {iso(r.revocation_time)} but the CRL {c['url']} "
                      f"(thisUpdate {iso(c['this_update'])}) does not list serial {cert['serial']}",
                      crl=c["url"], ocsp_revocation_time=iso(r.revocation_time),
                      crl_this_update=iso(c["this_update"]))]


def variant_disagreement_finding(r: Answer, answers: list[Answer]) -> list[Finding]:
    """The SHA-1/GET and SHA-256/POST requests got different definitive answers (good vs revoked)."""
    if len({a.status for a in answers if a.status in ("good", "revoked")}) <= 1:
        return []
    return [r.finding("ocsp_variant_disagrees", "; ".join(f"{a.method}/{a.hash_name}: {a.status}" for a in answers),
                      answers={f"{a.method}/{a.hash_name}": a.status for a in answers})]


def ocsp_findings(cert: dict[str, Any], answers: list[Answer], listed: Listed,
                  crls: pd.DataFrame) -> list[Finding]:
    """Every OCSP rule over one certificate's answers; an answer that is itself a failure stops there."""
    r = primary_answer(answers)
    failed = status_finding(r)
    if failed:
        return failed
    return [
        *signature_finding(r),
        *freshness_finding(r),
        *good_but_revoked_finding(r, listed),
        *revocation_time_mismatch_finding(r, listed),
        *revocation_reason_mismatch_finding(r, listed),
        *crl_missing_revoked_finding(r, listed, cert, crls),
        *variant_disagreement_finding(r, answers),
    ]


def detect_revocation_status(
    certs: pd.DataFrame, ocsp_results: pd.DataFrame, crls: pd.DataFrame, revocations: pd.DataFrame, now: datetime,
) -> pd.DataFrame:
    """Findings where OCSP, the fetched CRLs and the recorded revocations disagree, or a CRL is unusable.

    certs: CERT_COLUMNS; ocsp_results, crls, revocations: the tables of the fetch step. Only
    certificates unexpired at `now` are judged: an expired certificate's status is nobody's concern.
    """
    base = coerce(certs, CERT_COLUMNS)
    unexpired = base[base["not_after"] > pd.Timestamp(now)].to_dict("records")
    bad_crls = {c["url"]: c for c in crls.to_dict("records") if c["status"] in CRL_CODES}
    findings = [f for cert in unexpired for f in crl_problem_findings(cert, bad_crls)]
    by_sha = {cert["sha256"]: cert for cert in unexpired}
    from_crls = crl_view(base, revocations)
    for sha, answers in answers_by_certificate(ocsp_results).items():
        cert = by_sha.get(sha)
        if cert is None:
            continue
        crl_time, crl_url, crl_reason = from_crls.get(sha, (None, "", ""))
        listed = Listed(crl_time, crl_url, _time(cert.get("revoked_at")), cert.get("revocation_source") or "",
                        crl_reason, _text(cert.get("revocation_reason")))
        findings += ocsp_findings(cert, answers, listed, crls)
    return findings_frame(findings)
