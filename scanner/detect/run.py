"""Every detector in one place: the per-certificate ones and those that compare certificates."""

from __future__ import annotations

import pandas as pd

from scanner.core.config import Config
from scanner.core.records import FINDING_COLUMNS, empty_frame
from scanner.detect.malformed import detect_malformed
from scanner.detect.names import detect_name_kinds
from scanner.detect.registration import detect_registered_after_issuance, detect_unregistered
from scanner.detect.revocation import detect_early_revocation, detect_revoke_reissue
from scanner.detect.rules import (
    detect_crl_reason_forbidden,
    detect_crl_reason_missing,
    detect_validity_exceeds_limit,
)
from scanner.detect.typo import IssuanceCounts, detect_typo_neighbours
from scanner.parse.domains import Classified, classify_all, name_table


def per_certificate_findings(
    certs: pd.DataFrame, registrations: pd.DataFrame, config: Config, *, classified: Classified | None = None
) -> pd.DataFrame:
    """Findings that look at one certificate at a time (any partition of the rows gives the same union)."""
    names = name_table(certs, config.max_sans_per_cert, classified)
    return concat_findings([
        detect_unregistered(certs, names, registrations),
        detect_registered_after_issuance(certs, names, registrations),
        detect_early_revocation(certs, config.revocation_window),
        detect_name_kinds(names),
        detect_validity_exceeds_limit(certs),
        detect_crl_reason_forbidden(certs),
        detect_malformed(certs),
    ])


def cross_certificate_findings(
    certs: pd.DataFrame, config: Config, *, counts: IssuanceCounts | None = None,
    classified: Classified | None = None,
) -> pd.DataFrame:
    """Findings that compare certificates of one subscriber (a partition must hold whole subscribers).

    counts: the CA-wide issuance counts the typo ranking uses, when certs is only a partition.
    """
    reissues = detect_revoke_reissue(certs, config.revocation_window, config.reissue_window, classified=classified)
    return concat_findings([
        detect_typo_neighbours(certs, counts=counts, classified=classified),
        reissues,
        detect_crl_reason_missing(certs, reissues),
    ])


def run_detectors(certs: pd.DataFrame, registrations: pd.DataFrame, config: Config, *,
                  classified: Classified | None = None) -> pd.DataFrame:
    """Every detector over the certificate table: one findings table (pure; no network).

    classified: classify_all(certs), when the caller has it already.
    """
    if classified is None:
        classified = classify_all(certs)  # once for every detector: the costliest step at a million names
    per_certificate = per_certificate_findings(certs, registrations, config, classified=classified)
    # Only the per-certificate detectors read the name table: the cross-certificate ones, where detect
    # peaks, do without its memory (a few hundred MB at a million certificates).
    classified.forget_name_tables()
    return concat_findings([per_certificate, cross_certificate_findings(certs, config, classified=classified)])


def concat_findings(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One findings table from several (empty ones dropped, schema kept)."""
    parts = [p for p in parts if not p.empty]
    if not parts:
        return empty_frame(FINDING_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def sort_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """A canonical order, so two engines' outputs compare equal row for row."""
    return findings.sort_values(["sha256", "code", "name", "related_sha256", "evidence"],
                                kind="stable").reset_index(drop=True)
