"""pkilint's findings as ctscan findings: ``lint:<pkilint code>`` on the certificate (row) they concern (--lint)."""

from __future__ import annotations

import json

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
    evidence, details = [], []
    for r, in_precert in zip(lint.itertuples(index=False), precert):
        where = f" at {r.node_path}" if isinstance(r.node_path, str) and r.node_path else ""
        message = f": {r.message}" if isinstance(r.message, str) and r.message else ""
        document = ", in the precertificate" if in_precert else ""
        evidence.append(f"pkilint {r.severity} {r.code}{where}{message} ({r.certificate_type}{document}).")
        details.append(json.dumps({"pkilint_severity": r.severity, "pkilint_code": r.code, "node_path": r.node_path,
                                   "message": r.message, "certificate_type": r.certificate_type,
                                   "linted_sha256": r.sha256, "linter": r.linter}, sort_keys=True))
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
