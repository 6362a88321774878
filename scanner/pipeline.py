"""Wires sources -> parse -> enrich -> detect -> report. The CLI and notebooks both call `run`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from scanner.core.config import Config
from scanner.core.records import ERROR_COLUMNS, ErrorRecord, frame_from_rows
from scanner.core.times import iso
from scanner.detect.rates import rates_summary, rates_table
from scanner.detect.run import run_detectors, sort_findings
from scanner.detect.score import build_suspects
from scanner.enrich.revocation.crl import apply_revocations, read_crl_files
from scanner.parse.certs import records_frame
from scanner.parse.items import parse_in_chunks
from scanner.parse.link import collapse_precerts
from scanner.scale.columnar import read_tables, write_tables
from scanner.sources.base import SourceItem

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
        from scanner.sources import files

        return files.read(files.FilesOptions.from_config(config))
    if config.source == "crtsh-sql":
        from scanner.sources import crtsh_sql

        return crtsh_sql.read(crtsh_sql.CrtshSqlOptions.from_config(config), store=config.store_file)
    if config.source == "crtsh-json":
        from scanner.sources import crtsh_json

        return crtsh_json.read(crtsh_json.CrtshJsonOptions.from_config(config), store=config.store_file)
    if config.source == "ct":
        from scanner.sources import ct

        return ct.read(ct.CtOptions.from_config(config), store=config.store_file)
    if config.source == "store":
        from scanner.sources import store

        return store.read(store.StoreOptions.from_config(config))
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


@dataclass
class _Run:
    """What one scan gathers on its way: counts, errors and the sentences for the summary."""

    errors: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"read": 0, "parsed": 0})
    notices: list[str] = field(default_factory=list)
    said: set[str] = field(default_factory=set)  # notices already logged by the part that raised them
    partial_reasons: list[str] = field(default_factory=list)  # why part of the selection was not read or checked
    domains: set[str] = field(default_factory=set)
    revocation_data: list[str] = field(default_factory=list)
    revocation_checks: dict[str, Any] | None = None
    extra_tables: dict[str, tuple[str, pd.DataFrame]] = field(default_factory=dict)
    linter: Any = None  # with --lint: the enrich.lint.LintService every certificate of the source passes
    lint_summary: dict[str, Any] | None = None


def _ingest(config: Config, registry: Any, state: _Run) -> pd.DataFrame:
    """Parse the source into the certificate table, handing new domains to the lookups as they appear."""
    frames: list[pd.DataFrame] = []
    show = config.progress if config.progress is not None else (sys.stderr.isatty() and not config.quiet)
    bar = tqdm(unit=" cert", desc="parse", file=sys.stderr, disable=not show)
    items = open_source(config) if state.linter is None else state.linter.tap(open_source(config))
    for chunk in parse_in_chunks(items, workers=config.workers,
                                 max_sans_per_cert=config.max_sans_per_cert):
        bar.update(chunk.read)
        new = chunk.domains - state.domains
        if new:  # lookups start while later chunks are still being parsed
            state.domains.update(new)
            registry.submit(sorted(new))
        state.counts["read"] += chunk.read
        state.counts["parsed"] += len(chunk.certs)
        state.errors.extend(chunk.errors)
        state.notices.extend(n.message for n in chunk.notices)
        state.partial_reasons.extend(n.message for n in chunk.notices
                                     if n.partial and n.message not in state.partial_reasons)
        if not chunk.certs.empty:
            frames.append(chunk.certs)
    bar.close()
    return pd.concat(frames, ignore_index=True) if frames else records_frame([])


def _unchecked_names(certs: pd.DataFrame, cap: int) -> list[dict[str, str]]:
    """An error row per certificate with more SAN names than the checks look at (padding must not hide a name)."""
    if certs.empty:
        return []
    def count(values: Any) -> int:
        return len(values) if isinstance(values, (list, tuple)) else 0

    sizes = certs["san_dns"].map(count) + certs["san_ip"].map(count)
    over = certs[sizes > cap]
    return [ErrorRecord(r.source, r.provenance,
                        f"only the first {cap:,} of its {n:,} SAN names were checked; the rest were not looked up "
                        "in the registries nor checked for IP addresses, internal or invalid names", r.sha256,
                        "check").as_row()
            for r, n in zip(over.itertuples(index=False), sizes[sizes > cap])]


def _crl_is_for(info: Any, certs: pd.DataFrame) -> bool:
    """True when a CRL's issuer is the issuer of some certificate (matched as apply_revocations matches)."""
    kids = certs["issuer_key_id"].fillna("")
    if info.issuer_key_id and (kids == info.issuer_key_id).any():
        return True
    same_dn = certs["issuer_dn"].fillna("") == info.issuer_dn
    return bool((same_dn if not info.issuer_key_id else same_dn & (kids == "")).any())


@dataclass
class RevocationCheck:
    """The revocation check: its findings, and the per-responder, per-CRL, CRL-entry and per-request tables."""

    findings: pd.DataFrame
    responders: pd.DataFrame
    crls: pd.DataFrame
    revocations: pd.DataFrame
    errors: list[dict[str, str]]
    ocsp_results: pd.DataFrame


def check_revocation(certs: pd.DataFrame, config: Config, *, now: datetime | None = None,
                     **fetch_options: Any) -> RevocationCheck:
    """Ask the OCSP responders and CRLs (enrich), then find every disagreement (detect); never raises for network trouble.

    fetch_options: issuers, session, ccadb, backoff_base, as scanner.enrich.revocation.fetch.fetch_revocation takes them.
    """
    from scanner.detect.revocation_status import detect_revocation_status
    from scanner.enrich.revocation.fetch import fetch_revocation

    now = now or datetime.now(timezone.utc)
    tables = fetch_revocation(certs, config, now=now, **fetch_options)
    findings = detect_revocation_status(certs, tables.ocsp_results, tables.crls, tables.revocations, now)
    return RevocationCheck(findings, tables.responders, tables.crls, tables.revocations, tables.errors,
                           tables.ocsp_results)


def _revocations(certs: pd.DataFrame, config: Config, state: _Run) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Revocation dates from --crl files, then (with --check-revocation) OCSP and fetched CRLs."""
    crl_infos, revocations, crl_errors = read_crl_files(config.crl_files)
    state.errors.extend(crl_errors)
    certs = apply_revocations(certs, revocations)
    state.revocation_data += [f"CRL {i.source}: {i.entries} entries, thisUpdate {iso(i.this_update)}"
                              for i in crl_infos]
    if not certs.empty:
        state.notices += [f"CRL {i.source} (issuer {i.issuer_dn}) is not from the issuer of any scanned certificate, "
                          "so it revoked none of them: check that it is the CRL of the CA under audit."
                          for i in crl_infos if not _crl_is_for(i, certs)]
    from_crtsh = int((certs["revocation_source"] == "crtsh").sum()) if not certs.empty else 0
    if from_crtsh:
        state.revocation_data.append(f"crt.sh crl_revoked: {from_crtsh} revoked certificates")
    scope = _ccadb_scope(certs, config, state)
    if not config.check_revocation:
        return certs, _crl_disclosure(certs, scope, None, state)
    if config.offline:
        state.notices.append("Offline: OCSP and CRL checks (--check-revocation) were not run.")
        return certs, _crl_disclosure(certs, scope, None, state)
    from scanner.enrich.revocation.issuers import issuers_by_key_id
    from scanner.sources.ct.issuers import load_issuer_certs

    check = check_revocation(certs, config, issuers=issuers_by_key_id(load_issuer_certs(config.issuer_certs)),
                             ccadb=scope)
    certs = apply_revocations(certs, check.revocations, source="crl")
    state.errors.extend(check.errors)
    state.extra_tables["ocsp-responders.csv"] = ("OCSP responders", check.responders)
    state.extra_tables["crls.csv"] = ("CRLs", check.crls)
    state.revocation_data.append("OCSP and fetched CRLs (--check-revocation)")
    state.revocation_checks = {
        "responders": len(check.responders),
        "crls": {k: int(v) for k, v in check.crls["status"].value_counts().items()} if not check.crls.empty else {},
        "errors": len(check.errors),
    }
    disclosure = _crl_disclosure(certs, scope, check.crls, state)
    if disclosure is None or disclosure.empty:
        return certs, check.findings
    return certs, disclosure if check.findings.empty else pd.concat([check.findings, disclosure], ignore_index=True)


def _ccadb_scope(certs: pd.DataFrame, config: Config, state: _Run) -> Any:
    """The --ccadb file's records of the scanned certificates' issuing CAs (a CcadbScope; None without --ccadb)."""
    if config.ccadb is None:
        return None
    from scanner.enrich.revocation.ccadb import read_ccadb, scope_ccadb
    from scanner.sources.ct.issuers import load_issuer_certs

    file = read_ccadb(config.ccadb)
    state.errors.extend(file.errors)
    return scope_ccadb(file, certs, load_issuer_certs(config.issuer_certs))


def _crl_disclosure(certs: pd.DataFrame, scope: Any, crls: pd.DataFrame | None, state: _Run) -> pd.DataFrame | None:
    """CCADB Policy 6.2 findings (crls: the fetched CRL table, None when nothing was fetched); crl-disclosure.csv."""
    if scope is None:
        return None
    from scanner.detect.crl_disclosure import detect_crl_disclosure

    result = detect_crl_disclosure(certs, scope, crls, datetime.now(timezone.utc))
    state.notices.extend(result.notices)
    state.extra_tables["crl-disclosure.csv"] = ("CRL disclosure", result.table)
    return result.findings


def _detect(certs: pd.DataFrame, registrations: pd.DataFrame, config: Config,
            revocation_findings: pd.DataFrame | None, lint_findings: pd.DataFrame | None = None) -> pd.DataFrame:
    if config.engine == "dask":
        from scanner.scale.engine import run_detectors_dask

        findings = run_detectors_dask(certs, registrations, config)
    else:
        findings = run_detectors(certs, registrations, config)
    extra = [f for f in (revocation_findings, lint_findings) if f is not None and not f.empty]
    if extra:
        findings = pd.concat([findings, *extra], ignore_index=True)
    return sort_findings(findings)


def _lint_service(config: Config) -> Any:
    """With --lint, the lint service the source's certificates pass through (pkilint loads only then)."""
    if not config.lint:
        return contextlib.nullcontext()
    from scanner.enrich.lint import LintService

    return LintService(config.store_file, workers=config.workers)


def _lint(state: _Run, certs: pd.DataFrame) -> pd.DataFrame | None:
    """With --lint: pkilint's findings as lint:<code> findings; certificates it could not lint become error rows."""
    if state.linter is None:
        return None
    from scanner.detect.lint import detect_lint, lint_errors

    tables = state.linter.finish()
    state.lint_summary = tables.summary
    state.errors.extend(lint_errors(certs, tables.failures))
    return detect_lint(certs, tables.findings)



def _summary(config: Config, state: _Run, certs: pd.DataFrame, findings: pd.DataFrame, suspects: pd.DataFrame,
             errors: pd.DataFrame, lookups: dict[str, Any], clock: StageClock) -> dict[str, Any]:
    if certs.empty:
        state.notices.append(f"No certificates were read from --source {config.source}: check the paths or "
                             "the selection; every report was still written, empty.")
    if not state.revocation_data:
        state.notices.append("No revocation data (no --crl given): revocation-based checks found nothing to check.")
    merged = int((certs["precert_sha256"].fillna("") != "").sum() - certs["is_precert"].sum()) if not certs.empty else 0
    return {
        "source": config.source,
        "read": state.counts["read"],
        "parsed": state.counts["parsed"],
        "errors": len(errors),
        "certificates": len(certs),
        "precertificate_pairs_merged": merged,
        # one certificate read again (a second file or search) is one row: parsed = certificates + both merges
        "duplicates_merged": state.counts["parsed"] - len(certs) - merged,
        "revoked": int(certs["revoked_at"].notna().sum()) if not certs.empty else 0,
        "registrable_domains": len(state.domains),
        "lookups": lookups,
        "findings": {k: int(v) for k, v in findings["code"].value_counts().items()} if not findings.empty else {},
        "suspects": len(suspects),
        "revocation_data": state.revocation_data,
        "notices": state.notices,
        # Done but partial (exit status 3): each reason is a part of the selection not read or not verified.
        "partial": bool(state.partial_reasons),
        "partial_reasons": state.partial_reasons,
        "revocation_checks": state.revocation_checks,
        "wall_seconds": round(time.monotonic() - clock.started, 3),
        "stage_seconds": dict(clock.stages),  # report writing is timed in the -v log only
    }


def _write(config: Config, result: ScanResult, extra_tables: dict[str, tuple[str, pd.DataFrame]],
           clock: StageClock) -> dict[str, Path]:
    from scanner.report import write_reports

    reports = write_reports(config.out_dir, result.suspects, result.certs, result.findings, result.errors,
                            result.registrations, result.summary, extra_tables=extra_tables)
    clock.lap("reports")
    reports.update(write_tables(config.out_dir, {
        "certs.parquet": result.certs, "findings.parquet": result.findings,
        "registrations.parquet": result.registrations, "errors.parquet": result.errors,
    }))
    if config.plots:
        from scanner.report.plots import write_plots

        reports.update(write_plots(config.out_dir, result.certs, result.findings, suspects=result.suspects))
        if "trends.csv" in extra_tables:
            from scanner.report.plots import RATES_PLOT, rates_per_month, save_png

            reports[RATES_PLOT] = save_png(rates_per_month(extra_tables["trends.csv"][1]), config.out_dir / RATES_PLOT)
    clock.lap("tables and plots")
    return reports


def run(config: Config, *, write: bool = True) -> ScanResult:
    """Run one scan end to end and (unless write=False) write its reports into config.out_dir."""
    from scanner.enrich.registration import RegistrationService

    clock = StageClock()
    state = _Run()
    with RegistrationService(config, progress=config.progress) as registry, _lint_service(config) as linter:
        state.linter = linter
        certs = _ingest(config, registry, state)
        clock.lap("parse")
        certs = collapse_precerts(certs)
        state.errors.extend(_unchecked_names(certs, config.max_sans_per_cert))
        clock.lap("collapse")
        # OCSP and CRL fetches run while the registration lookups finish in the background.
        certs, revocation_findings = _revocations(certs, config, state)
        clock.lap("revocations")
        registrations = registry.results()
        clock.lap("lookups")
        lookups = registry.summary()
        if registry.notice:
            state.notices.append(registry.notice)
            state.said.add(registry.notice)  # the registration service said it once already
        lint_findings = _lint(state, certs)  # the linters ran beside the parse; the last batches finish here
        if lint_findings is not None:
            clock.lap("lint")

    findings = _detect(certs, registrations, config, revocation_findings, lint_findings)
    clock.lap("detect")
    suspects = build_suspects(certs, findings)
    clock.lap("score")
    errors = frame_from_rows(state.errors, ERROR_COLUMNS)
    rates = rates_table(certs, findings, config.revocation_window)
    state.extra_tables["trends.csv"] = ("Trends", rates)
    summary = _summary(config, state, certs, findings, suspects, errors, lookups, clock)
    summary["rates"] = rates_summary(rates, config.revocation_window)
    if state.lint_summary is not None:
        summary["lint"] = state.lint_summary  # pkilint's version, the BR version, counts, findings per code
    result = ScanResult(certs, findings, suspects, errors, registrations, summary)
    if write:
        result.reports = _write(config, result, state.extra_tables, clock)
    for n in state.notices:
        if n not in state.said:
            log.warning(n)
    return result
