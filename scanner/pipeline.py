"""Wires sources -> parse -> enrich -> detect -> report. The CLI and notebooks both call `run`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .columnar import read_tables, write_tables
from .config import Config
from .detect.run import run_detectors, sort_findings
from .detect.score import build_suspects
from .ingest import error_row, parse_in_chunks
from .parse import collapse_precerts, records_frame
from .records import ERROR_COLUMNS, frame_from_rows
from .revocation.crl import apply_revocations, read_crl_files
from .sources.base import SourceItem, SourceNotice

log = logging.getLogger(__name__)


@dataclass
class ScanResult:
    """Everything a scan produced, as DataFrames, plus the summary and the report paths."""

    certs: pd.DataFrame
    findings: pd.DataFrame
    suspects: pd.DataFrame
    errors: pd.DataFrame
    registrations: pd.DataFrame
    summary: dict[str, Any]
    reports: dict[str, Path] = field(default_factory=dict)


def open_source(config: Config) -> Iterator[SourceItem]:
    """The items of the configured source."""
    if config.source == "files":
        from .sources.files import read_files

        return read_files(config.paths)
    if config.source == "crtsh-sql":
        from .sources.crtsh_sql import read_crtsh_sql

        return read_crtsh_sql(config)
    if config.source == "crtsh-json":
        from .sources.crtsh_json import read_crtsh_json

        return read_crtsh_json(config)
    if config.source == "ct":
        from .sources.ct import read_ct

        return read_ct(config, progress=config.progress, verify=config.ct_verify, resume=config.ct_resume)
    if config.source == "store":
        from .store import read_store

        return read_store(config)
    raise NotImplementedError(f"--source {config.source} is not available yet")


class StageClock:
    """Wall seconds and resident memory after each stage, for the summary and -v logs."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Record the time since the previous lap under `stage`."""
        now = time.monotonic()
        self.stages[stage] = round(now - self.last, 3)
        self.last = now
        log.info("%s done in %.1f s (resident memory %.0f MiB)", stage, self.stages[stage], _rss_mib())


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def load_scan(out_dir: Path) -> ScanResult:
    """A finished scan's tables from its report folder (Parquet and summary.json): no re-parsing."""
    import json

    tables = read_tables(out_dir)
    summary_path = Path(out_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    certs, findings = tables["certs.parquet"], tables["findings.parquet"]
    return ScanResult(certs, findings, build_suspects(certs, findings), tables.get("errors.parquet"),
                      tables.get("registrations.parquet"), summary)


def load_issuers(paths: Iterable[Path]) -> list[Any]:
    """The CA certificates given with --issuer-cert (PEM bundles or DER)."""
    from cryptography import x509

    out = []
    for path in paths:
        data = Path(path).read_bytes()
        out.extend(x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                   else [x509.load_der_x509_certificate(data)])
    return out


def _check_revocation(certs: pd.DataFrame, config: Config) -> Any:
    from .revocation.checks import check_revocation, issuers_by_key_id

    issuers = issuers_by_key_id(load_issuers(config.issuer_certs))
    return check_revocation(certs, config, issuers=issuers, ccadb=config.ccadb)


def run(config: Config, *, write: bool = True) -> ScanResult:
    """Run one scan end to end and (unless write=False) write its reports into config.out_dir."""
    from .enrich.registration import RegistrationService

    clock = StageClock()
    errors: list[dict[str, str]] = []
    counts = {"read": 0, "parsed": 0}
    notices: list[str] = []
    seen_domains: set[str] = set()

    with RegistrationService(config, progress=config.progress) as registry:

        source_notices: list[SourceNotice] = []
        frames: list[pd.DataFrame] = []
        for chunk in parse_in_chunks(open_source(config), workers=config.workers,
                                     max_sans_per_cert=config.max_sans_per_cert):
            new = chunk.domains - seen_domains
            if new:  # lookups start while later chunks are still being parsed
                seen_domains.update(new)
                registry.submit(sorted(new))
            counts["read"] += chunk.read
            counts["parsed"] += len(chunk.certs)
            errors.extend(chunk.errors)
            source_notices.extend(chunk.notices)
            if not chunk.certs.empty:
                frames.append(chunk.certs)
        notices.extend(n.message for n in source_notices)
        clock.lap("parse")
        certs = collapse_precerts(pd.concat(frames, ignore_index=True) if frames else records_frame([]))
        del frames
        clock.lap("collapse")

        crl_infos, revocations, crl_errors = read_crl_files(config.crl_files)
        for line in crl_errors:
            errors.append(error_row("crl", "crl", line.split(":")[0], line))
        certs = apply_revocations(certs, revocations)

        # OCSP and CRL fetches run while the registration lookups finish in the background.
        extra_tables: dict[str, tuple[str, pd.DataFrame]] = {}
        revocation_findings: pd.DataFrame | None = None
        revocation_checks: dict[str, Any] | None = None
        if config.check_revocation and config.offline:
            notices.append("Offline: OCSP and CRL checks (--check-revocation) were not run.")
        elif config.check_revocation:
            check = _check_revocation(certs, config)
            certs = apply_revocations(certs, check.revocations, source="crl")
            revocation_findings = check.findings
            errors.extend(check.errors)
            extra_tables["ocsp-responders.csv"] = ("OCSP responders", check.responders)
            extra_tables["crls.csv"] = ("CRLs", check.crls)
            revocation_checks = {
                "responders": len(check.responders),
                "crls": {k: int(v) for k, v in check.crls["status"].value_counts().items()}
                if not check.crls.empty else {},
                "errors": len(check.errors),
            }

        clock.lap("revocations")
        registrations = registry.results()
        clock.lap("lookups")
        lookup_summary = registry.summary()
        already_said = set()
        if registry.notice:
            notices.append(registry.notice)
            already_said.add(registry.notice)  # the registration service said it once already

    if config.engine == "dask":
        from .engine_dask import run_detectors_dask

        findings = run_detectors_dask(certs, registrations, config)
    else:
        findings = run_detectors(certs, registrations, config)
    if revocation_findings is not None and not revocation_findings.empty:
        findings = pd.concat([findings, revocation_findings], ignore_index=True)
    findings = sort_findings(findings)
    clock.lap("detect")
    suspects = build_suspects(certs, findings)
    clock.lap("score")
    errors_df = frame_from_rows(errors, ERROR_COLUMNS)
    revocation_data: list[str] = [f"CRL {i.source}: {i.entries} entries, thisUpdate {i.this_update:%Y-%m-%dT%H:%M:%SZ}"
                       for i in crl_infos]
    from_source = int(certs["revocation_source"].isin(["crtsh"]).sum()) if not certs.empty else 0
    if from_source:
        revocation_data.append(f"crt.sh crl_revoked: {from_source} revoked certificates")
    if config.check_revocation and not config.offline:
        revocation_data.append("OCSP and fetched CRLs (--check-revocation)")
    if not revocation_data:
        notices.append("No revocation data (no --crl given): revocation-based checks found nothing to check.")
    summary: dict[str, Any] = {
        "source": config.source,
        "read": counts["read"],
        "parsed": counts["parsed"],
        "errors": len(errors_df),
        "certificates": len(certs),
        "precertificate_pairs_merged": int((certs["precert_sha256"].fillna("") != "").sum()
                                           - certs["is_precert"].sum()) if not certs.empty else 0,
        "revoked": int(certs["revoked_at"].notna().sum()) if not certs.empty else 0,
        "registrable_domains": len(seen_domains),
        "lookups": lookup_summary,
        "findings": {k: int(v) for k, v in findings["code"].value_counts().items()} if not findings.empty else {},
        "suspects": len(suspects),
        "revocation_data": revocation_data,
        "notices": notices,
        "partial": any(n.partial for n in source_notices),
        "revocation_checks": revocation_checks,
    }
    summary["wall_seconds"] = round(time.monotonic() - clock.started, 3)
    summary["stage_seconds"] = dict(clock.stages)  # report writing is timed in the -v log only
    result = ScanResult(certs, findings, suspects, errors_df, registrations, summary)
    if write:
        from .report import write_reports

        result.reports = write_reports(config.out_dir, suspects, certs, findings, errors_df, registrations, summary,
                                       extra_tables=extra_tables)
        clock.lap("reports")
        result.reports.update(write_tables(config.out_dir, {
            "certs.parquet": certs, "findings.parquet": findings,
            "registrations.parquet": registrations, "errors.parquet": errors_df,
        }))
        if config.plots:
            from .report.plots import write_plots

            result.reports.update(write_plots(config.out_dir, certs, findings))
        clock.lap("tables and plots")
    for n in notices:
        if n not in already_said:
            log.warning(n)
    return result
