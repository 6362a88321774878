"""The tables the reports share: per-problem figures and per-problem certificate lists.

Computed once here so the XLSX summary sheet, the incident summary and summary.json cannot disagree.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from scanner.core import records
from scanner.core.records import SUSPECT_COLUMNS, crtsh_url

#: Columns a per-problem list adds from the finding to the suspect's columns.
FINDING_EXTRA_COLUMNS: dict[str, str] = {
    "name": "name",
    "related_sha256": "related_sha256",
    "evidence": "finding_evidence",
    "detail": "finding_detail",
}

#: Per-problem figures, in this order everywhere they are shown.
PROBLEM_COLUMNS: tuple[str, ...] = (
    "title",
    "code",
    "severity",
    "certificates",
    "first_not_before",
    "last_not_before",
    "revoked",
    "expired",
    "valid",
    "short_lived",
)

REVOKED, EXPIRED, VALID = "revoked", "expired", "valid"

_FACT_COLUMNS = (
    "sha256",
    "cert_sha256",
    "precert_sha256",
    "subject_dn",
    "issuer_dn",
    "serial",
    "dns_names",
    "not_before",
    "not_after",
    "revoked_at",
    "revocation_reason",
)
_SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


def now_utc(now: datetime | None = None) -> pd.Timestamp:
    """The reference time for expired/valid as a UTC Timestamp (default: the current time)."""
    ts = pd.Timestamp(now if now is not None else datetime.now(timezone.utc))
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def suspect_frame(suspects: pd.DataFrame) -> pd.DataFrame:
    """The suspects with SUSPECT_COLUMNS first (missing ones added empty), extra columns after."""
    out = suspects.copy()
    for name in SUSPECT_COLUMNS:
        if name not in out.columns:
            out[name] = pd.Series([pd.NA] * len(out), index=out.index, dtype="string")
    extras = [c for c in out.columns if c not in SUSPECT_COLUMNS]
    return out[list(SUSPECT_COLUMNS) + extras].reset_index(drop=True)


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True, errors="coerce")


def certificate_facts(certs: pd.DataFrame, suspects: pd.DataFrame) -> pd.DataFrame:
    """One row per sha256 with what the appendix and the figures need; certs win over suspects."""
    parts = []
    if len(certs):
        from_certs = pd.DataFrame(
            {
                "sha256": certs["sha256"].astype("string"),
                "cert_sha256": certs.get("cert_sha256"),
                "precert_sha256": certs.get("precert_sha256"),
                "subject_dn": certs.get("subject_dn"),
                "issuer_dn": certs.get("issuer_dn"),
                "serial": certs.get("serial"),
                "dns_names": certs["san_dns"].map(_join_names) if "san_dns" in certs else None,
                "not_before": _utc(certs["not_before"]),
                "not_after": _utc(certs["not_after"]),
                "revoked_at": _utc(certs["revoked_at"]),
                "revocation_reason": certs.get("revocation_reason"),
            }
        )
        parts.append(from_certs)
    if len(suspects):
        s = suspect_frame(suspects)
        from_suspects = pd.DataFrame({name: s.get(name) for name in _FACT_COLUMNS if name != "dns_names"})
        from_suspects["dns_names"] = s["sans"]
        for name in ("not_before", "not_after", "revoked_at"):
            from_suspects[name] = _utc(from_suspects[name])
        parts.append(from_suspects[list(_FACT_COLUMNS)])
    if not parts:
        empty = {name: pd.Series(dtype="string") for name in _FACT_COLUMNS}
        for name in ("not_before", "not_after", "revoked_at"):
            empty[name] = pd.Series(dtype="datetime64[us, UTC]")
        return pd.DataFrame(empty).set_index("sha256", drop=False)
    facts = pd.concat(parts, ignore_index=True)
    facts = facts[facts["sha256"].notna()].drop_duplicates("sha256", keep="first")
    return facts.set_index("sha256", drop=False)


def _join_names(names: object) -> str:
    if isinstance(names, (list, tuple)):
        return ";".join(str(n) for n in names)
    return "" if names is None or (isinstance(names, float) and pd.isna(names)) else str(names)


def revocation_states(facts: pd.DataFrame, now: datetime | None = None) -> pd.Series:
    """revoked / expired / valid per row: revoked if revoked_at is set, expired if notAfter < now.

    A certificate with no known notAfter counts as valid: it is not known to be expired, so the
    CA still has to act on it.
    """
    ref = now_utc(now)
    revoked = facts["revoked_at"].notna()
    expired = ~revoked & (facts["not_after"] < ref).fillna(False).astype(bool)
    states = pd.Series(VALID, index=facts.index, dtype="object")
    states[expired] = EXPIRED
    states[revoked] = REVOKED
    return states


def finding_title(code: str) -> str:
    """The human title of a finding code (the code itself if it is not in records.FINDING_CODES)."""
    # Rendering only: a code from another ctscan version keeps its own name as its title.
    meta = _meta(code)
    return meta.title if meta else code


def _meta(code: str, lint_severity: dict[str, str] | None = None) -> records.FindingCode | None:
    """A code's FindingCode; a lint:<pkilint code> with the most severe severity its findings have."""
    meta = records.FINDING_CODES.get(code)
    if meta is None and records.is_lint_code(code):
        return records.lint_finding_code(code, (lint_severity or {}).get(code, "high"))
    return meta


def _lint_severities(findings: pd.DataFrame) -> dict[str, str]:
    """lint:<pkilint code> -> the most severe severity among its findings (each lint finding has its own)."""
    if not len(findings) or "severity" not in findings:
        return {}
    lint = findings[findings["code"].astype("string").str.startswith(records.LINT_PREFIX, na=False)]
    ranks = lint["severity"].map(lambda s: _SEVERITY_RANK.get(s, len(_SEVERITY_RANK)))
    best = ranks.groupby(lint["code"].astype("object")).min()
    by_rank = {rank: name for name, rank in _SEVERITY_RANK.items()}
    return {str(code): by_rank.get(int(rank), "info") for code, rank in best.items()}


def codes_present(findings: pd.DataFrame) -> list[str]:
    """Finding codes in findings, most severe first, then in FINDING_CODES order, then by name."""
    present = [c for c in pd.unique(findings["code"].dropna()) if str(c)] if len(findings) else []
    order = {code: i for i, code in enumerate(records.FINDING_CODES)}
    lint_severity = _lint_severities(findings)

    def key(code: str) -> tuple[int, int, str]:
        meta = _meta(code, lint_severity)
        severity = _SEVERITY_RANK.get(meta.severity if meta else "info", len(_SEVERITY_RANK))
        return (severity, order.get(code, len(order)), code)

    return sorted((str(c) for c in present), key=key)


def problem_stats(findings: pd.DataFrame, facts: pd.DataFrame, now: datetime | None = None) -> pd.DataFrame:
    """Per finding code: title, certificates, first/last notBefore, and how many revoked/expired/valid/short-lived.

    valid counts the unrevoked, unexpired certificates the CA still has to act on; an unrevoked
    Short-lived Subscriber Certificate is counted as short_lived instead.
    """
    from scanner.detect.rules import is_short_lived

    rows = []
    states = revocation_states(facts, now)
    # A Short-lived Subscriber Certificate need not be revoked (BR 4.9.1.1): not "still valid" for the CA to act on.
    short = is_short_lived(facts) if len(facts) else pd.Series(False, index=facts.index, dtype=bool)
    lint_severity = _lint_severities(findings)
    for code in codes_present(findings):
        hashes = pd.unique(findings.loc[findings["code"] == code, "sha256"].dropna())
        known = facts.index.intersection(pd.Index(hashes))
        sub_states = states.reindex(pd.Index(hashes)).fillna(VALID)
        sub_short = short.reindex(pd.Index(hashes)).fillna(False).astype(bool)
        not_before = facts.loc[known, "not_before"]
        meta = _meta(code, lint_severity)
        rows.append(
            {
                "title": finding_title(code),
                "code": code,
                "severity": meta.severity if meta else "",
                "certificates": len(hashes),
                "first_not_before": not_before.min() if len(not_before) else pd.NaT,
                "last_not_before": not_before.max() if len(not_before) else pd.NaT,
                "revoked": int((sub_states == REVOKED).sum()),
                "expired": int((sub_states == EXPIRED).sum()),
                "valid": int(((sub_states == VALID) & ~sub_short).sum()),
                "short_lived": int(((sub_states == VALID) & sub_short).sum()),
            }
        )
    stats = pd.DataFrame(rows, columns=list(PROBLEM_COLUMNS))
    for name in ("first_not_before", "last_not_before"):
        stats[name] = _utc(stats[name])
    for name in ("certificates", "revoked", "expired", "valid", "short_lived"):
        stats[name] = stats[name].astype("int64")
    return stats


def code_table(code: str, findings: pd.DataFrame, suspects: pd.DataFrame) -> pd.DataFrame:
    """The certificates with one finding code: suspect columns plus the finding's name, pair and evidence.

    One row per finding (a certificate with two unregistered SANs has two rows), in suspect order.
    """
    s = suspect_frame(suspects)
    s["_rank"] = range(len(s))
    s = s.drop_duplicates("sha256")
    picked = findings.loc[findings["code"] == code, ["sha256", *FINDING_EXTRA_COLUMNS]]
    picked = picked.rename(columns=FINDING_EXTRA_COLUMNS)
    merged = picked.merge(s, on="sha256", how="left", sort=False)
    missing_url = merged["crtsh_url"].isna() | (merged["crtsh_url"].astype("string") == "")
    merged.loc[missing_url, "crtsh_url"] = merged.loc[missing_url, "sha256"].map(crtsh_url)
    merged = merged.sort_values(["_rank", "name"], na_position="last", kind="stable")
    columns = [c for c in s.columns if c != "_rank"] + list(FINDING_EXTRA_COLUMNS.values())
    return merged[columns].reset_index(drop=True)
