"""The Baseline Requirements' dated rules, checked from the certificate table: CRL reasons and validity limits.

The rules follow the TLS Baseline Requirements v2.2.6 (31 March 2026; cabforum/servercert
docs/BR.md): section 1.6.1's definitions of Validity Period and Short-lived Subscriber Certificate,
4.9.1.1 (the CRLReason each revocation cause takes), 4.9.13 (no suspension), 6.3.2 (the maximum
Validity Period by issuance date, ballot SC-081) and 7.2.2 (the reasonCode CRL entry extension,
ballot SC061). Every certificate of a scan is taken as a Subscriber Certificate of the CA under
audit, and its notBefore as its issuance date: a backdated notBefore is not seen through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scanner.core.records import Finding
from scanner.core.times import iso, iso_column
from scanner.detect.findings import as_json, findings_frame


@dataclass(frozen=True)
class ValidityLimit:
    """The maximum Validity Period for Subscriber Certificates issued on or after `since`, and its source."""

    since: pd.Timestamp
    days: int
    source: str


def _day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


#: BR 6.3.2, oldest first: each row holds until the next one's date. Certificates issued before the
#: first row are not checked (the limit was 39 months then, counted in months, not days).
VALIDITY_LIMITS: tuple[ValidityLimit, ...] = (
    ValidityLimit(_day("2018-03-01"), 825, "ballot 193 (BR 1.4.4)"),
    ValidityLimit(_day("2020-09-01"), 398, "ballot SC31 (BR 1.7.1)"),
    ValidityLimit(_day("2026-03-15"), 200, "ballot SC-081 (BR 2.1.5)"),
    ValidityLimit(_day("2027-03-15"), 100, "ballot SC-081 (BR 2.1.5)"),
    ValidityLimit(_day("2029-03-15"), 47, "ballot SC-081 (BR 2.1.5)"),
)

#: BR 1.6.1 "Short-lived Subscriber Certificate" (ballot SC063): the longest Validity Period, in days,
#: of one issued on or after each date; before the first date the BRs had no such certificates.
SHORT_LIVED_LIMITS: tuple[ValidityLimit, ...] = (
    ValidityLimit(_day("2024-03-15"), 10, "ballot SC063 (BR 2.0.1)"),
    ValidityLimit(_day("2026-03-15"), 7, "ballot SC-081 (BR 2.1.5)"),
)

#: BR 7.2.2 (ballot SC061): CRL entries for revocations from this day on must carry a reasonCode, and
#: unspecified (0) is represented only by leaving it out.
REASON_CODES_REQUIRED = _day("2023-07-15")

UNSPECIFIED, CERTIFICATE_HOLD, KEY_COMPROMISE = "unspecified", "certificateHold", "keyCompromise"

_SECOND = pd.Timedelta(seconds=1)
_DAY_SECONDS = 86_400


def validity_period(certs: pd.DataFrame) -> pd.Series:
    """BR 1.6.1 Validity Period per certificate: notBefore through notAfter inclusive, so one second more."""
    return pd.to_datetime(certs["not_after"], utc=True) - pd.to_datetime(certs["not_before"], utc=True) + _SECOND


def _in_force(not_before: pd.Series, table: tuple[ValidityLimit, ...]) -> np.ndarray:
    """Per row, the index of the table row in force on its notBefore (-1 before the first, or no notBefore)."""
    starts = np.array([row.since.tz_convert(None).to_datetime64() for row in table], dtype="datetime64[us]")
    nb = pd.to_datetime(not_before, utc=True).dt.tz_convert(None).to_numpy("datetime64[us]")
    at = np.searchsorted(starts, nb, side="right") - 1
    return np.where(np.isnat(nb), -1, at)


def is_short_lived(certs: pd.DataFrame) -> pd.Series:
    """Whether each certificate is a Short-lived Subscriber Certificate (BR 1.6.1), which need not be revoked.

    A day is 86,400 seconds (BR 6.3.2), so a Validity Period of 7 days and one second is not short-lived.
    """
    at = _in_force(certs["not_before"], SHORT_LIVED_LIMITS)
    days = np.array([row.days for row in SHORT_LIVED_LIMITS])
    limit = pd.Series(np.where(at >= 0, days[np.maximum(at, 0)] * _DAY_SECONDS, -1), index=certs.index)
    seconds = validity_period(certs).dt.total_seconds()
    return ((at >= 0) & (seconds <= limit)).fillna(False).astype(bool)


def _period_text(seconds: float) -> str:
    days, rest = divmod(int(seconds), _DAY_SECONDS)
    return f"{days} days" + (f" and {rest} seconds" if rest else "")


def detect_validity_exceeds_limit(certs: pd.DataFrame) -> pd.DataFrame:
    """A finding per TLS subscriber certificate whose Validity Period exceeds the BR 6.3.2 maximum in force on its notBefore.

    Any time past the last whole day counts as another day (BR 6.3.2), so 398 days and one second
    exceeds 398 days. CA, OCSP responder, S/MIME and other non-TLS certificates (cert_kind) have
    other limits or none: a CA's issuance on crt.sh holds its subordinate CAs too.
    """
    if certs.empty:
        return findings_frame([])
    at = _in_force(certs["not_before"], VALIDITY_LIMITS)
    seconds = validity_period(certs).dt.total_seconds().to_numpy()
    days = np.array([row.days for row in VALIDITY_LIMITS])
    limit = np.where(at >= 0, days[np.maximum(at, 0)] * _DAY_SECONDS, np.inf)
    if "cert_kind" in certs.columns:  # "" (a table from before the column) is checked as TLS
        limit = np.where(certs["cert_kind"].fillna("").isin(["", "tls"]).to_numpy(bool), limit, np.inf)
    over = np.nonzero(seconds > limit)[0]  # NaN (no notAfter) compares False
    # Columns read once as lists: a row lookup per finding took minutes at 250,000 findings.
    picked = certs.iloc[over]
    # Times written a column at a time, and each rule's part of the detail once: a finding each
    # for a CA issuing over-long certificates is hundreds of thousands.
    details = [_validity_detail(rule) for rule in VALIDITY_LIMITS]
    found = []
    for sha, nb, na, period, i in zip(picked["sha256"].tolist(), _iso_times(picked["not_before"]),
                                      _iso_times(picked["not_after"]), seconds[over].tolist(), at[over].tolist()):
        rule = VALIDITY_LIMITS[i]
        found.append(Finding(
            sha, "validity_exceeds_limit",
            f"Validity Period {_period_text(period)} (notBefore {nb} through notAfter {na}, "
            f"inclusive) exceeds the {rule.days}-day maximum of BR 6.3.2 for certificates issued on or "
            f"after {rule.since:%Y-%m-%d} ({rule.source}).",
            detail=details[i] + json.dumps(period) + "}",
        ))
    return findings_frame(found)


def _iso_times(times: pd.Series) -> list[str]:
    """iso() of each time, a column at a time where the years have four digits (iso writes 999, not 0999)."""
    years = times.dt.year
    if bool(((years >= 1000) & (years <= 9999)).all()):
        return iso_column(times)
    return [iso(t) for t in times.tolist()]


def _validity_detail(rule: ValidityLimit) -> str:
    """as_json of a validity finding's detail up to its last value, validity_seconds (sorted last), left open."""
    whole = as_json({"validity_seconds": 0, "limit_days": rule.days, "limit_since": f"{rule.since:%Y-%m-%d}",
                     "limit_source": rule.source})
    head = whole[: -len("0}")]
    assert head.endswith('"validity_seconds":')  # the key sorts last, so the value closes the object
    return head


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _crl_revoked(certs: pd.DataFrame) -> pd.DataFrame:
    """The revoked certificates whose reason was read from a CRL entry (a --crl file, a fetched CRL, crt.sh's)."""
    wanted = [c for c in ("sha256", "not_before", "revoked_at", "revocation_reason", "revocation_source")
              if c in certs.columns]
    revoked = certs.loc[certs["revoked_at"].notna(), wanted]  # only what the rules read: rows are tuples below
    # OCSP's revocationReason is a different field: its absence says nothing about the CRL entry.
    return revoked[revoked["revocation_source"].fillna("").astype(str) != "ocsp"]


def detect_crl_reason_forbidden(certs: pd.DataFrame) -> pd.DataFrame:
    """A finding per Subscriber Certificate whose CRL entry carries a reasonCode the BRs forbid.

    certificateHold (6) never (BR 4.9.13 and 7.2.2); unspecified (0) present as a reasonCode for a
    revocation dated on or after 2023-07-15 (BR 7.2.2: unspecified is represented by omitting it).
    """
    found = []
    revoked = _crl_revoked(certs)
    if "revocation_reason" not in revoked.columns:
        return findings_frame(found)
    # Only the two reasons below can be forbidden: the other rows are never looked at one by one.
    revoked = revoked[revoked["revocation_reason"].isin([CERTIFICATE_HOLD, UNSPECIFIED]).to_numpy(dtype=bool)]
    for r in revoked.itertuples(index=False):
        reason = _text(r.revocation_reason)
        if reason == CERTIFICATE_HOLD:
            why = ("certificateHold (6): BR 4.9.13 forbids suspension and 7.2.2 forbids this reasonCode "
                   "for a certificate subject to the Baseline Requirements")
        elif reason == UNSPECIFIED and r.revoked_at >= REASON_CODES_REQUIRED:
            why = ("unspecified (0) present as a reasonCode: since 2023-07-15 BR 7.2.2 represents "
                   "unspecified only by omitting the reasonCode")
        else:
            continue
        found.append(Finding(
            r.sha256, "crl_reason_forbidden",
            f"Revoked {iso(r.revoked_at)} ({_text(r.revocation_source) or 'CRL'}) with reasonCode {why}.",
            detail=as_json({"reason": reason, "revoked_at": iso(r.revoked_at),
                            "revocation_source": _text(r.revocation_source)}),
        ))
    return findings_frame(found)


def detect_crl_reason_missing(certs: pd.DataFrame, reissues: pd.DataFrame) -> pd.DataFrame:
    """A finding per typo-correcting revoke-and-reissue whose CRL entry has no reasonCode.

    BR 7.2.2 allows leaving the reasonCode out only for unspecified (0), i.e. a subscriber's request
    that names no reason or a cause 4.9.1.1 gives no reason for (items 1, 14, 15). The cause of a
    revocation is the CA's knowledge; what the data shows is a certificate replaced soon after by
    one that corrects a typo in its names (revoke_reissue, change san_typo_fixed): inaccurate
    information (4.9.1.1 item 13, privilegeWithdrawn), a certificate not issued per the
    requirements (item 12, superseded), or a replacement the subscriber asked for (7.2.2,
    superseded). Revocations before 2023-07-15, when the reasonCode was not yet required, are not
    checked; other causes (key compromise, misuse, failed validation) cannot be told from the data.
    """
    if reissues.empty:
        return findings_frame([])
    picked = reissues[reissues["code"] == "revoke_reissue"]
    fixes = {}
    for sha, related, detail in zip(picked["sha256"], picked["related_sha256"], picked["detail"]):
        if json.loads(detail or "{}").get("change") == "san_typo_fixed":
            fixes[sha] = related
    if not fixes:
        return findings_frame([])
    revoked = _crl_revoked(certs)
    found = []
    for r in revoked[revoked["sha256"].isin(list(fixes))].itertuples(index=False):
        reason = _text(r.revocation_reason)
        if reason or r.revoked_at < REASON_CODES_REQUIRED:
            continue
        latency = r.revoked_at - r.not_before
        found.append(Finding(
            r.sha256, "crl_reason_missing",
            f"Revoked {iso(r.revoked_at)} with no reasonCode, "
            f"and replaced by {fixes[r.sha256][:16]}… correcting a typo in its names: unless the subscriber "
            "asked for revocation without a reason, BR 4.9.1.1 and 7.2.2 require one (privilegeWithdrawn for "
            "inaccurate information, superseded for a misissuance or a replacement).",
            related_sha256=fixes[r.sha256],
            detail=as_json({"revoked_at": iso(r.revoked_at), "latency_seconds": latency.total_seconds(),
                            "revocation_source": _text(r.revocation_source)}),
        ))
    return findings_frame(found)
