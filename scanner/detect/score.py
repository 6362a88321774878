"""The suspect score: per-certificate sum of signal weights, so combined evidence ranks first.

Weights live in records.FINDING_CODES; the only extras are the bonuses below, kept here in one place.
"""

from __future__ import annotations

import json

import pandas as pd

from ..records import FINDING_CODES, crtsh_url

#: Extra weight when a signal's detail shows the strongest form of that evidence.
BONUSES: dict[tuple[str, str, str], float] = {
    ("typo_neighbour", "neighbour_source", "subject_o"): 10.0,  # a typo of the subscriber's own name
    ("revoke_reissue", "change", "san_typo_fixed"): 10.0,  # the reissue corrected exactly that typo
}

SUSPECT_COLUMNS = [
    "sha256", "crtsh_url", "serial", "subject_o", "subject_cn", "sans", "not_before", "not_after",
    "revoked_at", "signals", "score", "evidence",
    "cert_sha256", "precert_sha256", "issuer_dn", "subject_dn", "revocation_reason", "provenance",
]


def bonus(code: str, detail: str) -> float:
    """The extra points one finding earns from its detail (BONUSES)."""
    if not detail:
        return 0.0
    try:
        d = json.loads(detail)
    except ValueError:
        return 0.0
    return sum(w for (c, k, v), w in BONUSES.items() if c == code and d.get(k) == v)


MAX_SENTENCES_PER_SIGNAL = 3  # the rest are in the per-problem lists; a 5,000-SAN cert stays readable


def _joined_evidence(sentences: pd.Series) -> str:
    unique = list(dict.fromkeys(sentences))
    text = " ".join(unique[:MAX_SENTENCES_PER_SIGNAL])
    extra = len(unique) - MAX_SENTENCES_PER_SIGNAL
    return f"{text} (and {extra} more of this kind)" if extra > 0 else text


def code_points(findings: pd.DataFrame) -> pd.DataFrame:
    """Per (certificate, code): the code's weight plus the largest bonus among its findings (sha256, code, points)."""
    f = pd.DataFrame({"sha256": findings["sha256"].astype("object"), "code": findings["code"].astype("object")})
    f["weight"] = f["code"].map(lambda c: FINDING_CODES[c].weight if c in FINDING_CODES else 1.0).astype("float64")
    f["bonus"] = 0.0
    # Only codes that can earn a bonus need their JSON detail read: at 100k findings that is most of the cost.
    has_bonus = f["code"].isin({code for code, _, _ in BONUSES}).to_numpy()
    if has_bonus.any():
        details = findings["detail"].astype("object").fillna("").to_numpy()[has_bonus]
        f.loc[has_bonus, "bonus"] = [bonus(c, d) for c, d in zip(f["code"].to_numpy()[has_bonus], details)]
    per_code = f.groupby(["sha256", "code"], sort=False).agg(weight=("weight", "first"), bonus=("bonus", "max"))
    per_code["points"] = per_code["weight"] + per_code["bonus"]
    return per_code[["points"]].reset_index()


def certificate_scores(findings: pd.DataFrame) -> pd.Series:
    """The suspect score of every certificate with findings (sha256 -> score), as in suspects.csv."""
    if findings.empty:
        return pd.Series([], dtype="float64")
    return code_points(findings).groupby("sha256", sort=False)["points"].sum().astype("float64")


def score_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Per certificate: score (distinct codes' weights + bonuses), signals and evidence."""
    if findings.empty:
        return pd.DataFrame(columns=["sha256", "score", "signals", "evidence"])
    evidence = findings.groupby(["sha256", "code"], sort=False)["evidence"].agg(_joined_evidence).reset_index()
    per_code = code_points(findings).merge(evidence.astype({"sha256": "object", "code": "object"}),
                                           on=["sha256", "code"])
    per_code = per_code.sort_values(["sha256", "points"], ascending=[True, False])
    return per_code.groupby("sha256", sort=False).agg(
        score=("points", "sum"),
        signals=("code", ";".join),
        evidence=("evidence", " | ".join),
    ).reset_index()


def build_suspects(certs: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """One row per certificate with findings, most suspicious first (SUSPECT_COLUMNS)."""
    scored = score_findings(findings)
    if scored.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SUSPECT_COLUMNS})
    df = scored.merge(certs, on="sha256", how="left")
    df["crtsh_url"] = df["sha256"].map(crtsh_url)
    df["sans"] = df["san_dns"].map(lambda v: ";".join(v) if isinstance(v, (list, tuple)) else "")
    df["score"] = df["score"].astype(float).round(1)
    df = df.sort_values(["score", "not_before", "sha256"], ascending=[False, True, True], kind="stable")
    return df[SUSPECT_COLUMNS].reset_index(drop=True)


