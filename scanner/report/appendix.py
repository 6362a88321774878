"""The CCADB incident-report appendix (Incident Reporting Guidelines v3.2, effective 2026-03-20).

Per problem (finding code) a ``<code>.csv`` whose first columns are exactly APPENDIX_COLUMNS, our
own columns only to the right of "Revocation reason" so that automated parsers keep working; a
``<code>.crtsh.txt`` with one ``https://crt.sh/?sha256=<UPPERCASE hex>`` per line (the form the
guidelines allow for 10,000 or more certificates); and ``incident-summary.md`` for a Bugzilla comment.

"Is revoked?" is filled as far as CT and the CRL can tell: "Yes" when a revocation is recorded,
"N/A" when the certificate expired unrevoked or is a Short-lived Subscriber Certificate (BR 1.6.1,
which BR 4.9.1.1 does not require revoking), otherwise "Planned" -- a placeholder the CA must
edit (to "Delayed" where it applies) together with the planned "Revocation date", which this
tool cannot know and writes as "N/A". The crt.sh link and hashes name the final certificate when
one was seen, else the precertificate; the "Certificate SHA-256 hash" column stays empty when no
final certificate was seen, as the guidelines allow: in v3.2 "certificate" means the final
certificate, so a precertificate with no final certificate is a row of its own. An empty Subject
(common in DV certificates) is written "N/A", the guidelines' mark for a field with nothing in it,
never a blank that reads as a value left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from scanner.core.atomic import write_text_atomic
from scanner.core.times import human_duration
from scanner.core.times import iso as format_time
from scanner.detect.rules import is_short_lived
from scanner.report.csv_report import write_frame
from scanner.report.problems import (
    EXPIRED,
    REVOKED,
    certificate_facts,
    crtsh_url,
    revocation_states,
    suspect_frame,
)

#: The guidelines the appendix follows, named in incident-summary.md and the XLSX summary.
GUIDELINES = "CCADB Incident Reporting Guidelines v3.2 (effective 2026-03-20)"
GUIDELINES_URL = "https://www.ccadb.org/cas/incident-report"

#: The appendix's mandatory columns, first and in this order (v3.2: custom ones only after them).
APPENDIX_COLUMNS: tuple[str, ...] = (
    "Precertificate SHA-256 hash",
    "Certificate SHA-256 hash",
    "Subject",
    "Issuer",
    "Not before",
    "Not after",
    "Serial #",
    "dNSNames",
    "Is revoked?",
    "Revocation date",
    "Revocation reason",
)

#: Our own columns, only ever to the right of APPENDIX_COLUMNS.
EXTRA_COLUMNS: tuple[str, ...] = ("Signals", "Score", "Evidence", "crt.sh URL", "Revocation latency")

_IS_REVOKED = {REVOKED: "Yes", EXPIRED: "N/A"}
_PLANNED = "Planned"
_NOT_APPLICABLE = "N/A"
_FILENAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def appendix_filename(code: str, used: set[str]) -> str:
    """A file-name stem for a finding code: only [A-Za-z0-9_.-], never hidden, unique in used."""
    stem = _FILENAME_BAD.sub("_", code).lstrip(".") or "code"
    name, n = stem, 1
    while name.lower() in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name.lower())
    return name


def appendix_files(codes: Iterable[str]) -> dict[str, str]:
    """code -> the appendix CSV write_appendix writes its list to ("appendix/<stem>.csv"), in order."""
    used: set[str] = {"incident-summary"}
    return {code: f"appendix/{appendix_filename(code, used)}.csv" for code in codes}


def appendix_frame(
    code: str, findings: pd.DataFrame, facts: pd.DataFrame, suspects: pd.DataFrame, now: datetime
) -> pd.DataFrame:
    """One row per certificate with this finding code, in suspect order, CCADB columns first."""
    picked = findings.loc[findings["code"] == code, ["sha256", "evidence"]]
    # A plain loop beats groupby with a Python aggregate by an order of magnitude on 100k findings.
    evidence: dict[str, dict[str, None]] = {}
    for sha, text in zip(picked["sha256"].tolist(), picked["evidence"].tolist()):
        if isinstance(sha, str):
            sentences = evidence.setdefault(sha, {})
            if isinstance(text, str) and text:
                sentences[text] = None
    s = suspect_frame(suspects).drop_duplicates("sha256").set_index("sha256", drop=False)
    ranked = s.index[s.index.isin(list(evidence))].tolist()
    order = ranked + sorted(set(evidence) - set(ranked))
    if missing := [h for h in order if h not in facts.index]:
        facts = pd.concat([facts, certificate_facts(pd.DataFrame(), pd.DataFrame({"sha256": missing}))])
    f = facts.loc[order]
    ours = s.reindex(order)
    states = revocation_states(f, now)
    revoked = (states == REVOKED).tolist()
    frame = pd.DataFrame(
        {
            "Precertificate SHA-256 hash": f["precert_sha256"].tolist(),
            "Certificate SHA-256 hash": f["cert_sha256"].tolist(),
            "Subject": [dn if isinstance(dn, str) and dn else _NOT_APPLICABLE for dn in f["subject_dn"]],
            "Issuer": f["issuer_dn"].tolist(),
            "Not before": f["not_before"].tolist(),
            "Not after": f["not_after"].tolist(),
            "Serial #": f["serial"].tolist(),
            "dNSNames": f["dns_names"].tolist(),
            "Is revoked?": [_IS_REVOKED.get(state, _NOT_APPLICABLE if short else _PLANNED)
                            for state, short in zip(states, is_short_lived(f))],
            "Revocation date": [
                format_time(t) if r else _NOT_APPLICABLE for t, r in zip(f["revoked_at"], revoked)
            ],
            "Revocation reason": [
                reason if r and isinstance(reason, str) else ""
                for reason, r in zip(f["revocation_reason"], revoked)
            ],
            "Signals": ours["signals"].fillna(code).tolist(),
            "Score": ours["score"].tolist(),
            "Evidence": [" | ".join(evidence[h]) for h in order],
            "crt.sh URL": [crtsh_url(h) for h in order],
            "Revocation latency": [  # revocationDate - notBefore, as the BR deadlines count it
                human_duration(t - nb) if r and pd.notna(nb) else ""
                for t, nb, r in zip(f["revoked_at"], f["not_before"], revoked)
            ],
        }
    )
    for name in ("Not before", "Not after"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame[list(APPENDIX_COLUMNS + EXTRA_COLUMNS)]


def incident_summary_md(stats: pd.DataFrame, files: dict[str, str], now: datetime) -> str:
    """Markdown for a Bugzilla comment: per problem the count, first/last notBefore, revoked/expired/valid."""
    lines = [
        f"## Summary of the problematic certificates (figures as of {format_time(now)})",
        "",
        f"Listings in the appendix format of the {GUIDELINES}: <{GUIDELINES_URL}>.",
        "",
    ]
    if stats.empty:
        lines += ["No problematic certificates were found.", ""]
        return "\n".join(lines)
    lines += [
        (
            "| Problem | Code | Certificates | First notBefore (UTC) | Last notBefore (UTC) "
            "| Revoked | Expired, not revoked | Still valid, not revoked | Short-lived, not revoked | Listing |"
        ),
        "|---|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for row in stats.itertuples(index=False):
        cells = [
            _md(row.title),
            f"`{_md(row.code)}`",
            str(row.certificates),
            "" if pd.isna(row.first_not_before) else format_time(row.first_not_before),
            "" if pd.isna(row.last_not_before) else format_time(row.last_not_before),
            str(row.revoked),
            str(row.expired),
            str(row.valid),
            str(row.short_lived),
            f"`{files.get(row.code, '')}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "Each listing's first 11 columns are the appendix fields of the guidelines, in their order; "
            'our own columns come after "Revocation reason". An empty Subject is written "N/A", and a '
            'precertificate with no final certificate has a row of its own with "Certificate SHA-256 '
            'hash" empty. '
            '"Is revoked?" says "Yes" where a revocation is recorded, "N/A" where the certificate expired '
            'unrevoked or is a Short-lived Subscriber Certificate, and "Planned" otherwise; the CA must '
            'confirm each "Planned" row (or change it to '
            '"Delayed") and fill in the planned revocation date. The matching `.crtsh.txt` file lists one '
            "crt.sh link per certificate."
        ),
        "",
    ]
    return "\n".join(lines)


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("`", "'").replace("\n", " ")


def write_appendix(
    out_dir: Path,
    stats: pd.DataFrame,
    findings: pd.DataFrame,
    facts: pd.DataFrame,
    suspects: pd.DataFrame,
    now: datetime,
) -> dict[str, Path]:
    """Write appendix/<code>.csv, appendix/<code>.crtsh.txt and appendix/incident-summary.md atomically."""
    directory = out_dir / "appendix"
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    listed = appendix_files(stats["code"])
    for code, name in listed.items():
        stem = name.removeprefix("appendix/").removesuffix(".csv")
        frame = appendix_frame(code, findings, facts, suspects, now)
        written[name] = write_frame(directory / f"{stem}.csv", frame)
        urls = "".join(f"{u}\n" for u in frame["crt.sh URL"] if u)
        written[f"appendix/{stem}.crtsh.txt"] = write_text_atomic(directory / f"{stem}.crtsh.txt", urls)
    summary = incident_summary_md(stats, listed, now)
    written["appendix/incident-summary.md"] = write_text_atomic(directory / "incident-summary.md", summary)
    return written
