"""The suspect score: per-certificate sum of signal weights, so combined evidence ranks first.

Weights live in records.FINDING_CODES; the only extras are the bonuses and factors below, kept here
in one place. Detectors put facts in a finding's JSON detail; this module alone turns them into points.
"""

from __future__ import annotations

import json

import pandas as pd

from scanner.core.records import LINT_PREFIX, SUSPECT_COLUMNS, crtsh_url, finding_code

#: Extra weight when a signal's detail shows the strongest form of that evidence.
BONUSES: dict[tuple[str, str, str], float] = {
    ("typo_neighbour", "neighbour_source", "subject_o"): 10.0,  # a typo of the subscriber's own name
    ("revoke_reissue", "change", "san_typo_fixed"): 10.0,  # the reissue corrected exactly that typo
}

#: Multipliers of a finding's points (weight + bonus) when its detail shows weaker evidence.
FACTORS: dict[tuple[str, str, object], float] = {
    # The registry was asked after the certificate had expired: the name may have lapsed since,
    # which says little about the day it was issued.
    ("unregistered_domain", "unexpired_when_checked", False): 0.25,
    # The flagged name is itself certified again and again: likely a second site of one company.
    ("typo_neighbour", "established", True): 0.4,
}

#: The most a certificate's lint:<pkilint code> findings add up to (--lint): a CA whose every certificate
#: breaks the same few rules must not bury the certificates with typo, registration or revocation evidence.
LINT_MAX_POINTS = 30.0

def _detail(detail: str) -> dict:
    if not detail:
        return {}
    try:
        d = json.loads(detail)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _matches(d: dict, key: str, value: object) -> bool:
    # `is` for booleans: 0 == False would count a number as a flag.
    got = d.get(key)
    return got is value if isinstance(value, bool) else got == value


def bonus(code: str, detail: str) -> float:
    """The extra points one finding earns from its detail (BONUSES)."""
    d = _detail(detail)
    return sum(w for (c, k, v), w in BONUSES.items() if c == code and _matches(d, k, v))


def factor(code: str, detail: str) -> float:
    """The multiplier of one finding's points from its detail (FACTORS; 1.0 when none applies)."""
    d = _detail(detail)
    out = 1.0
    for (c, k, v), f in FACTORS.items():
        if c == code and _matches(d, k, v):
            out *= f
    return out


MAX_SENTENCES_PER_SIGNAL = 3  # the rest are in the per-problem lists; a 5,000-SAN cert stays readable


def _joined_evidence(sentences: pd.Series) -> str:
    unique = list(dict.fromkeys(sentences))
    text = " ".join(unique[:MAX_SENTENCES_PER_SIGNAL])
    extra = len(unique) - MAX_SENTENCES_PER_SIGNAL
    return f"{text} (and {extra} more of this kind)" if extra > 0 else text


def code_points(findings: pd.DataFrame) -> pd.DataFrame:
    """Per (certificate, code): the most any of its findings earns, (weight + bonus) x factor (sha256, code, points)."""
    f = pd.DataFrame({"sha256": findings["sha256"].astype("object"), "code": findings["code"].astype("object")})
    lint = f["code"].str.startswith(LINT_PREFIX, na=False).to_numpy()
    weight = pd.Series(0.0, index=f.index)
    weight[~lint] = f["code"][~lint].map(lambda c: finding_code(c).weight)
    if lint.any():  # a lint:<pkilint code> weighs what its own severity does (records.LINT_WEIGHTS)
        severity = (findings["severity"] if "severity" in findings else pd.Series(None, index=f.index))
        weight[lint] = [finding_code(c, s if isinstance(s, str) else None).weight
                        for c, s in zip(f["code"].to_numpy()[lint], severity.astype("object").to_numpy()[lint])]
    weight = weight.astype("float64")
    f["points"] = weight
    # Only codes that can earn a bonus or a factor need their JSON detail read: at 100k findings that
    # is most of the cost.
    special = f["code"].isin({code for code, _, _ in BONUSES} | {code for code, _, _ in FACTORS}).to_numpy()
    if special.any():
        codes = f["code"].to_numpy()[special]
        details = findings["detail"].astype("object").fillna("").to_numpy()[special]
        f.loc[special, "points"] = [(w + bonus(c, d)) * factor(c, d)
                                    for w, c, d in zip(weight.to_numpy()[special], codes, details)]
    per_code = f.groupby(["sha256", "code"], sort=False).agg(points=("points", "max"))
    per_code = per_code[["points"]].reset_index()
    if lint.any():  # a certificate's lint codes together earn at most LINT_MAX_POINTS, shared in proportion
        is_lint = per_code["code"].str.startswith(LINT_PREFIX).to_numpy()
        total = per_code["points"].where(is_lint, 0.0).groupby(per_code["sha256"]).transform("sum")
        scale = (LINT_MAX_POINTS / total).clip(upper=1.0).where(is_lint & (total > 0), 1.0)
        per_code["points"] = per_code["points"] * scale
    return per_code


def certificate_scores(findings: pd.DataFrame) -> pd.Series:
    """The suspect score of every certificate with findings (sha256 -> score), as in suspects.csv."""
    if findings.empty:
        return pd.Series([], dtype="float64")
    return code_points(findings).groupby("sha256", sort=False)["points"].sum().astype("float64")


def score_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Per certificate: score (distinct codes' weights + bonuses, times their factors), signals and evidence."""
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
    latency = pd.to_datetime(df["revoked_at"], utc=True) - pd.to_datetime(df["not_before"], utc=True)
    df["revocation_latency_hours"] = (latency.dt.total_seconds() / 3600).round(3)
    df = df.sort_values(["score", "not_before", "sha256"], ascending=[False, True, True], kind="stable")
    return df[list(SUSPECT_COLUMNS)].reset_index(drop=True)


