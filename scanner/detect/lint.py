"""pkilint's findings as ctscan findings: ``lint:<pkilint code>`` on the certificate (row) they concern (--lint)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from scanner.core.records import (
    FINDING_COLUMNS,
    LINT_PREFIX,
    LINT_SEVERITIES,
    ErrorRecord,
    coerce,
    empty_frame,
)


def _row_of(certs: pd.DataFrame) -> tuple[dict[str, str], set[str]]:
    """DER SHA-256 -> the sha256 of the certificate row it is part of; and the precertificates' hashes."""
    rows: dict[str, str] = {}
    precerts: set[str] = set()
    for column in ("precert_sha256", "cert_sha256", "sha256"):  # the row's own hash wins
        if column not in certs:
            continue
        for der_sha, row_sha in zip(certs[column].tolist(), certs["sha256"].tolist()):
            if isinstance(der_sha, str) and der_sha and isinstance(row_sha, str):
                rows[der_sha] = row_sha
                if column == "precert_sha256":
                    precerts.add(der_sha)
    return rows, precerts


def detect_lint(certs: pd.DataFrame, lint: pd.DataFrame) -> pd.DataFrame:
    """One finding per pkilint finding (enrich.lint.LINT_COLUMNS) of a scanned certificate or its precertificate.

    A precertificate's finding that its final certificate repeats (same code, place and message) is listed
    once, as the certificate's. DEBUG findings were never kept; the severity follows records.LINT_SEVERITIES.
    """
    if lint.empty or certs.empty:
        return empty_frame(FINDING_COLUMNS)
    rows, precerts = _row_of(certs)
    lint = lint[lint["sha256"].isin(rows.keys())]
    if lint.empty:
        return empty_frame(FINDING_COLUMNS)
    row_sha = lint["sha256"].map(rows)
    from_precert = (lint["sha256"].isin(precerts) & (row_sha != lint["sha256"])).to_numpy()
    key = pd.DataFrame({"row": row_sha.to_numpy(), "code": lint["code"].to_numpy(),
                        "node_path": lint["node_path"].fillna("").to_numpy(),
                        "message": lint["message"].fillna("").to_numpy()})
    order = np.argsort(from_precert, kind="stable")  # the certificate's own findings first
    keep = ~key.iloc[order].duplicated(keep="first").to_numpy()
    lint, precert = lint.iloc[order[keep]], from_precert[order[keep]]
    # A finding's sentence and detail depend only on what pkilint said and where: made once per distinct
    # finding (a million certificates share a few hundred), so the table holds shared strings.
    made: dict[tuple[Any, ...], tuple[str, str]] = {}
    evidence, details = [], []
    is_precert = lint["sha256"].isin(precerts).tolist()
    for key in zip(lint["severity"], lint["code"], lint["node_path"], lint["message"], lint["certificate_type"],
                   lint["linter"], precert.tolist(), is_precert):
        if key not in made:
            severity, code, node_path, message, certificate_type, linter, in_precert, a_precert = key
            where = f" at {node_path}" if isinstance(node_path, str) and node_path else ""
            said = f": {message}" if isinstance(message, str) and message else ""
            document = ", in the precertificate" if in_precert else ""
            made[key] = (
                f"pkilint {severity} {code}{where}{said} ({certificate_type}{document}).",
                json.dumps({"pkilint_severity": severity, "pkilint_code": code, "node_path": node_path,
                            "message": message, "certificate_type": certificate_type, "linter": linter,
                            "document": "precertificate" if a_precert else "certificate"}, sort_keys=True),
            )
        sentence, detail = made[key]
        evidence.append(sentence)
        details.append(detail)
    out = pd.DataFrame({
        "sha256": lint["sha256"].map(rows).to_numpy(),
        "code": (LINT_PREFIX + lint["code"].astype("object")).to_numpy(),
        "severity": lint["severity"].map(lambda s: LINT_SEVERITIES.get(str(s), "info")).to_numpy(),
        "name": "",
        "related_sha256": "",
        "evidence": evidence,
        "detail": details,
    })
    return coerce(out, FINDING_COLUMNS)


def lint_errors(certs: pd.DataFrame, failures: pd.DataFrame) -> list[dict[str, str]]:
    """An error row (stage "lint") per scanned certificate pkilint could not lint (enrich.lint.LINT_FAILURE_COLUMNS).

    Bytes no parser read are an error row already, so only certificates of the table get one here.
    """
    if failures.empty or certs.empty:
        return []
    rows, _ = _row_of(certs)
    by_sha = certs.drop_duplicates("sha256").set_index("sha256")
    out = []
    for f in failures.itertuples(index=False):
        row = rows.get(f.sha256)
        if row is None or row not in by_sha.index:
            continue
        cert = by_sha.loc[row]
        out.append(ErrorRecord(str(cert.get("source") or ""), str(cert.get("provenance") or ""),
                               f"{f.linter}: {f.error}", f.sha256, "lint").as_row())
    return out
