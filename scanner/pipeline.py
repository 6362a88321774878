"""Wires sources -> parse -> enrich -> detect -> report. The CLI and notebooks both call `run`."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from scanner.core.atomic import write_text_atomic
from scanner.core.config import Config
from scanner.core.records import (
    CERT_COLUMNS,
    ERROR_COLUMNS,
    FINDING_COLUMNS,
    REGISTRATION_COLUMNS,
    ErrorRecord,
    frame_from_rows,
)
from scanner.core.times import iso
from scanner.detect.rates import rates_summary, rates_table
from scanner.detect.run import run_detectors, sort_findings
from scanner.detect.score import build_suspects
from scanner.enrich.revocation.crl import apply_revocations, read_crl_files
from scanner.parse.certs import records_frame
from scanner.parse.domains import Classified, classify_all, registrable_domains
from scanner.parse.items import parse_in_chunks
from scanner.parse.link import collapse_chunks, collapse_precerts, share_repeated_lists
from scanner.scale.columnar import read_parquet, read_tables, write_parquet, write_tables
from scanner.sources.base import RawCert, SourceItem, SourceNotice, SourceState

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
    rates: pd.DataFrame | None = None  # the trends table: counts and rates per month and for the whole scan


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
    """Wall seconds and peak resident memory of each stage, for the summary and -v logs.

    The peak is this process's (not the parse workers'): Linux's high-water mark when it rose during
    the stage, else the largest size a thread sampled every 50 ms. The high-water mark is never reset
    (/proc/self/clear_refs would also reset what wait4 reports as the whole run's peak).
    """

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.stages: dict[str, float] = {}
        self.peaks: dict[str, float] = {}  # stage -> peak resident MiB during it
        self._hwm = _peak_rss_mib()
        self._sampled = _rss_mib()
        threading.Thread(target=_sample_rss, args=(weakref.ref(self),), name="stage-rss", daemon=True).start()

    def lap(self, stage: str) -> None:
        """Record the time since the previous lap, and the peak resident memory since then, under `stage`."""
        now = time.monotonic()
        self.stages[stage] = round(now - self.last, 3)
        hwm, rss = _peak_rss_mib(), _rss_mib()
        self.peaks[stage] = round(hwm if hwm > self._hwm else max(self._sampled, rss), 1)
        self._hwm, self._sampled = hwm, rss
        self.last = now
        log.info("%s done in %.1f s (resident memory %.0f MiB, peak %.0f MiB)", stage, self.stages[stage],
                 rss, self.peaks[stage])


def _sample_rss(ref: weakref.ReferenceType[StageClock]) -> None:
    """Keep the clock's largest sampled resident size of the stage; ends when the clock is gone."""
    while (clock := ref()) is not None:
        clock._sampled = max(clock._sampled, _rss_mib())
        del clock
        time.sleep(0.05)


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def _peak_rss_mib() -> float:
    """The high-water mark of resident memory (VmHWM) since the process began; the current size if unknown."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return _rss_mib()


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
    source_notices: int = 0  # how many of notices the source gave (the first ones)
    source_token: str | None = None  # the source's state token, kept when its reading had no source errors
    linter: Any = None  # with --lint: the enrich.lint.LintService every certificate of the source passes
    lint_summary: dict[str, Any] | None = None
    freeze: bool = False  # the parsed table is kept from the cyclic collector (gc.freeze) until the scan ends


#: Bumped when what a scan keeps for the next round changes meaning: an older round is then not reused.
ROUND_STATE_VERSION = 1
#: The pre-collapse certificate rows and the key of each certificate's reading: the next round's parse cache.
PARSED_TABLE = "parsed.parquet"
ROUND_KEYS_TABLE = "round-keys.parquet"
DOMAINS_TABLE = "domains.parquet"
#: The certificates with findings and those they pair with: all a round with nothing new needs of certs.parquet.
FINDING_CERTS_TABLE = "finding-certs.parquet"
_ROUND_KEY_COLUMNS = {"sha256": "string", "key": "Int64", "parsed": "bool"}
_DOMAIN_COLUMNS = {"domain": "string"}
#: Options that change how a scan runs, never what it answers.
_NOT_IN_FINGERPRINT = frozenset({"out_dir", "quiet", "verbose", "progress", "workers", "scheduler", "engine"})


def _occurrence_key(raw: RawCert) -> int:
    """A 63-bit key of how a source gave a certificate (where from, and the facts it laid over it)."""
    data = f"{raw.source}\0{raw.provenance}".encode("utf-8", "surrogatepass")
    if raw.extra:  # facts that change answers (a revocation from crt.sh): a cryptographic hash
        data += repr(sorted(raw.extra.items(), key=lambda kv: kv[0])).encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1
    # Where it was read only names the row, so two C checksums do (a third of blake2b's cost, at a
    # million certificates a round): a collision could leave an old path in the provenance column.
    return (zlib.crc32(data) << 31) ^ zlib.adler32(data)


def config_fingerprint(config: Config) -> str:
    """A digest of every option that can change a scan's answer (not where it writes nor how verbosely)."""
    parts = [f"{f.name}={getattr(config, f.name)!r}" for f in fields(config) if f.name not in _NOT_IN_FINGERPRINT]
    if getattr(config, "lint", False):  # another pkilint lints differently
        from importlib.metadata import PackageNotFoundError, version

        try:
            parts.append(f"pkilint={version('pkilint')}")
        except PackageNotFoundError:
            parts.append("pkilint=none")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _parse_fingerprint(config: Config) -> str:
    """What a parsed row depends on besides the DER and its reading: this ctscan and the SAN cap."""
    from scanner import __version__

    return f"{__version__}|max_sans={config.max_sans_per_cert}"


def _file_digests(paths: Iterable[Path]) -> list[list[str]]:
    """[path, sha256] of each file (a missing one as ""), to tell whether the --crl files changed."""
    out = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            digest = ""
        out.append([str(path), digest])
    return out


@dataclass
class _Previous:
    """The scan a round builds on: its folder, its summary and how it read each certificate."""

    folder: Path
    summary: dict[str, Any]
    registrations: pd.DataFrame
    domains: list[str]
    readings: int  # certificates it read (rows of its round keys)

    @property
    def state(self) -> dict[str, Any]:
        """The summary's round_state block."""
        return self.summary.get("round_state") or {}

    @cached_property
    def _keys(self) -> pd.DataFrame:
        # read only when this round reads its source: a round whose source is unchanged needs none of it
        return read_parquet(self.folder / ROUND_KEYS_TABLE, _ROUND_KEY_COLUMNS)

    @cached_property
    def keys(self) -> dict[str, int]:
        """sha256 -> occurrence key of each certificate it read."""
        keys = self._keys
        return dict(zip(keys["sha256"].astype("object").tolist(), keys["key"].astype("int64").tolist()))

    @cached_property
    def parsed_ok(self) -> set[str]:
        """The sha256 among keys that parsed (the others are parse errors)."""
        keys = self._keys
        return set(keys.loc[keys["parsed"].astype(bool), "sha256"].astype("object"))


def previous_scan(folder: Path | None, config: Config) -> _Previous | None:
    """The scan in folder, when this scan can build on it (same ctscan and parse options, tables intact)."""
    import json

    if folder is None:
        return None
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text())
        state = summary.get("round_state") or {}
        if state.get("version") != ROUND_STATE_VERSION or state.get("parse") != _parse_fingerprint(config):
            return None
        parsed = read_parquet(folder / ROUND_KEYS_TABLE, {"parsed": "bool"})["parsed"]
        registrations = read_parquet(folder / "registrations.parquet", REGISTRATION_COLUMNS)
        domains = read_parquet(folder / DOMAINS_TABLE, _DOMAIN_COLUMNS)["domain"].astype("object").tolist()
        rows = {name: _parquet_rows(folder / name) for name in (PARSED_TABLE, "certs.parquet", "findings.parquet",
                                                                "errors.parquet")}
        if rows[PARSED_TABLE] != int(parsed.sum()) or rows["certs.parquet"] != summary.get("certificates"):
            raise ValueError("its tables do not hold what its summary says")
        if (folder / FINDING_CERTS_TABLE).exists():
            _parquet_rows(folder / FINDING_CERTS_TABLE)  # readable, or not built on
    except (OSError, ValueError, KeyError, TypeError) as exc:  # not reused: this round parses everything
        log.warning("not building on the previous scan %s (%s): every certificate is parsed again", folder, exc)
        return None
    return _Previous(folder, summary, registrations, domains, len(parsed))


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    with open(path, "rb") as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


class _Tally:
    """Counts a source's items on their way to the parser and holds back what the previous scan parsed as read now.

    A certificate is held back when the previous scan read it with the same key (same source, provenance
    and facts); any other reading, and every certificate new to it, is parsed. A source that opens with the
    state token the previous scan met (a store at the same revision) is not read at all: everything it
    would give is held back.
    """

    def __init__(self, previous: _Previous | None):
        self.previous = previous
        self.keys: dict[str, int] = {}  # this scan's first reading of each certificate it passed on
        self._reused: set[str] = set()  # held back: read as the previous scan read them (their key is known's)
        self.passed = 0  # items handed to the parser: certificates new or read differently, and source errors
        self.held_duplicates = 0  # second readings of a held-back certificate
        self.token: str | None = None  # the source's state token, when it gave one before any other item
        self.unchanged = False  # the token was the previous scan's: the source was not read

    @property
    def known(self) -> dict[str, int]:
        """How the previous scan read each certificate (sha256 -> key)."""
        return self.previous.keys if self.previous else {}

    @property
    def reused(self) -> set[str]:
        """The certificates held back."""
        if self.unchanged and not self._reused:
            self._reused = set(self.known)
        return self._reused

    def _same_source(self, token: str) -> bool:
        prev = self.previous
        return bool(token) and prev is not None and prev.state.get("source_token") == token

    def passing(self, items: Iterable[SourceItem]) -> Iterator[SourceItem]:
        """The items to parse; the rest are tallied."""
        keys, reused = self.keys, self._reused
        first = True
        for item in items:
            if isinstance(item, SourceState):
                if first:
                    self.token = item.token
                    if self._same_source(item.token):
                        self.unchanged = True
                        close = getattr(items, "close", None)
                        if close is not None:
                            close()  # the rest is what the previous scan read: not read again
                        return
                continue
            first = False
            if isinstance(item, RawCert):
                sha = item.digest()
                if sha in reused:  # read again in this scan: a duplicate of a held-back certificate
                    if sha in self.ok:
                        self.held_duplicates += 1
                        continue
                elif sha not in keys:
                    key = _occurrence_key(item)
                    if self.known.get(sha) == key:
                        reused.add(sha)
                        continue
                    keys[sha] = key
            if not isinstance(item, SourceNotice):
                self.passed += 1
            yield item

    @cached_property
    def ok(self) -> set[str]:
        """The previous scan's certificates that parsed."""
        return self.previous.parsed_ok if self.previous else set()

    def all_keys(self) -> dict[str, int]:
        """sha256 -> key of every certificate this scan read (held back or passed on)."""
        return {**{sha: self.known[sha] for sha in self.reused}, **self.keys}

    @property
    def dropped(self) -> bool:
        """True when some certificate of the previous scan was not read this time."""
        if self.unchanged:
            return False
        keys, reused = self.keys, self.reused
        return any(sha not in reused and sha not in keys for sha in self.known)

    def counts(self) -> tuple[int, int]:
        """(read, parsed) for the held-back certificates, as parsing them would have counted."""
        if self.unchanged and self.previous is not None:  # the very reading the previous scan counted
            return int(self.previous.summary.get("read", 0)), int(self.previous.summary.get("parsed", 0))
        parsed = sum(1 for sha in self.reused if sha in self.ok) + self.held_duplicates
        return len(self.reused) + self.held_duplicates, parsed


def _ingest(config: Config, registry: Any, state: _Run, tally: _Tally | None = None) -> pd.DataFrame:
    """Parse the source into the certificate table, handing new domains to the lookups as they appear.

    With a tally, the certificates the previous scan parsed, as that scan read them, pass by unparsed.
    """
    frames: list[pd.DataFrame] = []
    urls: dict[Any, Any] = {}  # each distinct URL list once, shared by the certificates naming it
    show = config.progress if config.progress is not None else (sys.stderr.isatty() and not config.quiet)
    bar = tqdm(unit=" cert", desc="parse", file=sys.stderr, disable=not show)
    items = open_source(config) if state.linter is None else state.linter.tap(open_source(config))
    items = items if tally is None else tally.passing(items)
    # Without lookups nothing waits for a chunk's domains: run finds the whole table's at once (_table_domains).
    for chunk in parse_in_chunks(items, workers=config.workers, max_sans_per_cert=config.max_sans_per_cert,
                                 domains=config.registration != "off"):
        bar.update(chunk.read)
        new = chunk.domains - state.domains
        if new:  # lookups start while later chunks are still being parsed
            state.domains.update(new)
            # names of certificates suspect already (revoked, short-lived) are looked up first
            registry.submit(sorted(new), first=_suspect_domains(chunk.certs, config))
        state.counts["read"] += chunk.read
        state.counts["parsed"] += len(chunk.certs)
        state.errors.extend(chunk.errors)
        state.notices.extend(n.message for n in chunk.notices)
        state.partial_reasons.extend(n.message for n in chunk.notices
                                     if n.partial and n.message not in state.partial_reasons)
        if not chunk.certs.empty:
            frames.append(share_repeated_lists(chunk.certs, urls))
            if state.freeze:
                # The table's million lists live until the scan ends and make no cycles: kept out of the
                # cyclic collector's full passes, which at a million rows took seconds of the main process.
                gc.freeze()
    bar.close()
    if not frames:
        return records_frame([])
    # Nothing reads the rows as parsed unless a round keeps them for the next: then twins merge here, where
    # the chunks can be let go column by column, so the table is never held twice (run's collapse is a no-op).
    return collapse_chunks(frames) if tally is None else pd.concat(frames, ignore_index=True)


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
    documents: list[tuple[str, str, bytes]] = field(default_factory=list)  # with config.lint: fetched DER


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
                           tables.ocsp_results, tables.documents)


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
    if config.lint:  # pkilint's CRL and OCSP response linters on what was fetched: a table, not findings
        from scanner.enrich.lint import lint_revocation_documents

        linted = lint_revocation_documents(check.documents)
        state.extra_tables["revocation-lint.csv"] = ("Revocation lint", linted)
        state.revocation_checks["lint"] = {
            "crls": sum(kind == "crl" for _, kind, _ in check.documents),
            "ocsp_responses": sum(kind == "ocsp" for _, kind, _ in check.documents),
            "findings_per_code": {f"{k}:{c}": int(n) for (k, c), n in
                                  linted[linted["code"] != ""].groupby(["kind", "code"]).size().items()},
        }
    disclosure = _crl_disclosure(certs, scope, check.crls, state)
    if disclosure is None or disclosure.empty:
        return certs, check.findings
    return certs, disclosure if check.findings.empty else pd.concat([check.findings, disclosure], ignore_index=True)


def _ccadb_scope(certs: pd.DataFrame, config: Config, state: _Run) -> Any:
    """The --ccadb file's records of the scanned certificates' issuing CAs (a CcadbScope; None without --ccadb).

    A file that cannot be checked against makes the scan partial, with the reason, not its every URL undisclosed.
    """
    if config.ccadb is None:
        return None
    from scanner.enrich.revocation.ccadb import CcadbError, read_ccadb, scope_ccadb
    from scanner.sources.ct.issuers import load_issuer_certs

    try:
        file = read_ccadb(config.ccadb)
    except CcadbError as exc:
        state.partial_reasons.append(f"{exc}; CRL disclosure was not checked")
        state.notices.append(f"{exc}; CRL disclosure was not checked")
        return None
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


def _table_domains(config: Config, state: _Run, certs: pd.DataFrame, classified: Classified | None = None) -> None:
    """state.domains of a scan without lookups, whose parse left them out: the whole table's, found at once."""
    if config.registration == "off":
        state.domains = registrable_domains(certs, config.max_sans_per_cert, classified)


def _detect(certs: pd.DataFrame, registrations: pd.DataFrame, config: Config,
            revocation_findings: pd.DataFrame | None, lint_findings: pd.DataFrame | None = None,
            classified: Classified | None = None) -> pd.DataFrame:
    if config.engine == "dask":
        from scanner.scale.engine import run_detectors_dask

        findings = run_detectors_dask(certs, registrations, config)
    else:
        findings = run_detectors(certs, registrations, config, classified=classified)
    extra = [f for f in (revocation_findings, lint_findings) if f is not None and not f.empty]
    if extra:
        findings = pd.concat([findings, *extra], ignore_index=True)
    return sort_findings(findings)


def _suspect_domains(certs: pd.DataFrame, config: Config) -> list[str]:
    """The registrable domains of a parsed chunk's already-suspect certificates (their lookups go first)."""
    if certs.empty or config.registration == "off":
        return []
    from scanner.enrich.registration import flagged_domains

    return flagged_domains(certs, _flagged(certs), config.max_sans_per_cert)


def _flagged(certs: pd.DataFrame, findings: pd.DataFrame | None = None) -> pd.Series:
    """Certificates already suspect: revoked, short-lived, or (given findings) carrying any finding."""
    from scanner.detect.rules import is_short_lived

    mask = certs["revoked_at"].notna() | is_short_lived(certs)
    return mask if findings is None else mask | certs["sha256"].isin(findings["sha256"])


def _registration_dates(config: Config, certs: pd.DataFrame, findings: pd.DataFrame, registrations: pd.DataFrame,
                        lookups: dict[str, Any], clock: StageClock) -> tuple[pd.DataFrame, pd.DataFrame]:
    """--registration-dates flagged: the registry's dates for the flagged certificates' names that DNS or a
    zone file settled, then registered_after_issuance on those certificates -> (findings, registrations)."""
    if config.registration != "auto" or config.registration_dates != "flagged" or certs.empty:
        return findings, registrations
    from scanner.detect.registration import detect_registered_after_issuance
    from scanner.detect.run import concat_findings
    from scanner.enrich.registration import add_registration_dates, flagged_domains
    from scanner.parse.domains import name_table

    flagged = _flagged(certs, findings)
    wanted = flagged_domains(certs, flagged, config.max_sans_per_cert)
    registrations, dates = add_registration_dates(config, registrations, wanted)
    lookups["registration_dates"] = dates
    if dates.get("found"):
        dated = registrations[registrations["domain"].isin(wanted) & registrations["registered_at"].notna()]
        sub = certs[flagged.to_numpy(bool)]
        extra = detect_registered_after_issuance(sub, name_table(sub, config.max_sans_per_cert), dated)
        known = set(zip(findings["sha256"], findings["code"], findings["name"]))
        extra = extra[[k not in known for k in zip(extra["sha256"], extra["code"], extra["name"])]]
        findings = sort_findings(concat_findings([findings, extra]))
    if dates.get("asked"):
        clock.lap("registration dates")
    return findings, registrations


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
        "stage_rss_mib": dict(clock.peaks),  # peak resident memory of this process in each stage
    }


def _write(config: Config, result: ScanResult, extra_tables: dict[str, tuple[str, pd.DataFrame]],
           clock: StageClock, *, link_from: Path | None = None, rounds: bool = False) -> dict[str, Path]:
    """The reports, then the Parquet tables (linked from link_from, the previous scan, when they are its own).

    rounds: also the certificates of the findings on their own, for a next round with nothing new.
    """
    from concurrent.futures import ThreadPoolExecutor

    from scanner.report import write_reports

    with ThreadPoolExecutor(1, thread_name_prefix="ctscan-tables") as pool:
        tables = None
        if link_from is None:
            # Parquet encodes and compresses outside the GIL: the tables are written on the second core
            # while the reports (Python through and through) are written here.
            Path(config.out_dir).mkdir(parents=True, exist_ok=True)
            tables = pool.submit(write_tables, config.out_dir, {
                "certs.parquet": result.certs, "findings.parquet": result.findings,
                "registrations.parquet": result.registrations, "errors.parquet": result.errors,
            })
        reports = write_reports(config.out_dir, result.suspects, result.certs, result.findings, result.errors,
                                result.registrations, result.summary, extra_tables=extra_tables)
        clock.lap("reports")
        if tables is None:
            reports.update(_link_tables(link_from, Path(config.out_dir), [
                "certs.parquet", "findings.parquet", "registrations.parquet", "errors.parquet",
                PARSED_TABLE, ROUND_KEYS_TABLE, DOMAINS_TABLE,
                *([FINDING_CERTS_TABLE] if (link_from / FINDING_CERTS_TABLE).is_file() else [])]))
        else:
            reports.update(tables.result())
            if rounds:
                wanted = _finding_hashes(result.findings)
                reports[FINDING_CERTS_TABLE] = write_parquet(result.certs[result.certs["sha256"].isin(wanted)],
                                                             Path(config.out_dir) / FINDING_CERTS_TABLE,
                                                             CERT_COLUMNS)
    if config.plots:
        from scanner.report.plots import write_plots

        reports.update(write_plots(config.out_dir, result.certs, result.findings, suspects=result.suspects))
        if "trends.csv" in extra_tables:
            from scanner.report.plots import RATES_PLOT, rates_per_month, save_png

            reports[RATES_PLOT] = save_png(rates_per_month(extra_tables["trends.csv"][1]), config.out_dir / RATES_PLOT)
    clock.lap("tables and plots")
    return reports


def _stale_registrations(registrations: pd.DataFrame, config: Config, now: pd.Timestamp) -> list[str]:
    """Domains of an earlier answer to ask again: unknown ones (retried) and answers past the cache's trust."""
    from scanner.enrich.registration import CACHE_TTL

    if registrations.empty or config.registration == "off" or config.offline:
        return []
    status = registrations["status"].fillna("").astype("object")
    checked = pd.to_datetime(registrations["checked_at"], utc=True)
    ttl = status.map(lambda s: pd.Timedelta(CACHE_TTL[s]) if s in CACHE_TTL else pd.Timedelta(0))
    stale = checked.isna() | (checked + ttl <= now)
    return registrations.loc[stale, "domain"].astype("object").tolist()


def _merge_registrations(previous: pd.DataFrame, fresh: pd.DataFrame, domains: set[str]) -> pd.DataFrame:
    """The previous answers for this scan's domains, each replaced by this scan's answer when it asked again."""
    keep = previous[previous["domain"].isin(domains) & ~previous["domain"].isin(set(fresh["domain"]))]
    frames = [f for f in (keep, fresh) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else fresh


def _same_answers(previous: pd.DataFrame, fresh: pd.DataFrame) -> bool:
    """True when asking again changed no domain's status or registration date."""
    if fresh.empty:
        return True
    cols = ["domain", "status", "registered_at"]
    old = previous[previous["domain"].isin(set(fresh["domain"]))][cols].sort_values("domain").reset_index(drop=True)
    new = fresh[cols].drop_duplicates("domain").sort_values("domain").reset_index(drop=True)
    return old.astype("string").equals(new.astype("string"))


def _nothing_changed(prev: _Previous, config: Config, state: _Run, tally: _Tally) -> bool:
    """True when this scan read exactly what the previous one read, with the same options and --crl files."""
    said_partial = set(prev.summary.get("partial_reasons") or [])
    return (tally.passed == 0 and not tally.dropped and not state.errors and not config.check_revocation
            and prev.state.get("config") == config_fingerprint(config)
            and prev.state.get("crl_files") == _file_digests(config.crl_files)
            and _ccadb_unchanged(prev, config)
            and set(state.partial_reasons) <= said_partial)


def _ccadb_unchanged(prev: _Previous, config: Config) -> bool:
    """True without --ccadb, or when its file is as before and no CRL URL of the previous round was still
    within its disclosure deadline (one may be overdue now: crldp_not_disclosed is then taken afresh)."""
    if config.ccadb is None:
        return True
    table = prev.folder / "crl-disclosure.csv"
    return (prev.state.get("ccadb") == _file_digests((config.ccadb,)) and table.is_file()
            and "not_disclosed_within_deadline" not in table.read_text(encoding="utf-8", errors="replace"))


def _round_state(config: Config, state: _Run) -> dict[str, Any]:
    # source_notices: the notices the source gave this scan (a reused round says its own, not these again)
    return {"version": ROUND_STATE_VERSION, "parse": _parse_fingerprint(config),
            "source_notices": state.notices[:state.source_notices], "source_token": state.source_token,
            "config": config_fingerprint(config), "crl_files": _file_digests(config.crl_files),
            "ccadb": _file_digests((config.ccadb,) if config.ccadb else ())}


def _write_round_tables(out_dir: Path, parsed: pd.DataFrame, tally: _Tally, state: _Run) -> None:
    """The parse cache the next round builds on: parsed rows, how each certificate was read, the domains."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = set(parsed["sha256"].astype("object")) | (tally.previous.parsed_ok & tally.reused if tally.previous else set())
    every = tally.all_keys()
    keys = pd.DataFrame({"sha256": list(every), "key": list(every.values())})
    keys["parsed"] = keys["sha256"].isin(ok)
    write_parquet(parsed, out_dir / PARSED_TABLE, CERT_COLUMNS)
    write_parquet(keys, out_dir / ROUND_KEYS_TABLE, _ROUND_KEY_COLUMNS)
    write_parquet(pd.DataFrame({"domain": sorted(state.domains)}), out_dir / DOMAINS_TABLE, _DOMAIN_COLUMNS)


def _link_or_copy(source: Path, target: Path) -> Path:
    """target as a hard link to source (else a copy): a scan's files are replaced, never written in place."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def _link_tables(source: Path, out_dir: Path, names: Iterable[str]) -> dict[str, Path]:
    """The unchanged tables of the previous scan, linked into out_dir."""
    return {name: _link_or_copy(source / name, out_dir / name) for name in names}


#: Files of a round that are its own, never taken over from the round it reused.
_ROUND_OWN_FILES = frozenset({"summary.json", "alerts.json", "diff.csv", "diff.xlsx", "diff.md"})


def _finding_hashes(findings: pd.DataFrame) -> set[str]:
    """The certificates findings are about, and those they pair with."""
    related = findings["related_sha256"].dropna().astype("object")
    return set(findings["sha256"].astype("object")) | set(related[related != ""])


def _read_certs_of(path: Path, hashes: set[str]) -> pd.DataFrame:
    """The rows of certs.parquet with these sha256 (every column), without holding the others at once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(sorted(hashes), type=pa.string())
    return read_parquet(path, CERT_COLUMNS, filters=pc.field("sha256").isin(wanted))


def _rates_of(path: Path, findings: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The trends table from the three certificate columns it counts."""
    certs = read_parquet(path, {k: CERT_COLUMNS[k] for k in ("sha256", "not_before", "revoked_at")})
    return rates_table(certs, findings, config.revocation_window)


def _link_tree(source: Path, out_dir: Path) -> dict[str, Path]:
    """Every file of the previous round but its own (summary, alerts, diff), linked into out_dir."""
    out: dict[str, Path] = {}
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or path.is_symlink() or str(rel) in _ROUND_OWN_FILES or rel.name.startswith("."):
            continue
        out[str(rel)] = _link_or_copy(path, out_dir / rel)
    return out


def _expired_between(certs: pd.DataFrame, then: str | None, now: pd.Timestamp) -> bool:
    """True when a certificate expired after `then` (an ISO time, None = unknown) and by now."""
    if then is None:
        return True
    after = pd.to_datetime(certs["not_after"], utc=True)
    return bool(((after > pd.Timestamp(then)) & (after <= now)).any())


def _reused_result(config: Config, prev: _Previous, state: _Run, lookups: dict[str, Any],
                   clock: StageClock, write: bool, source_read: bool = True) -> ScanResult:
    """The previous scan's answer, for a scan that read nothing new.

    Its tables are linked, not written. Its reports are linked too when time changed nothing in them (no
    certificate with a finding expired since); otherwise they are written again as of now. The result's
    certs are the certificates with findings (load_scan gives them all).
    """
    now = pd.Timestamp.now(tz="UTC")
    findings = read_parquet(prev.folder / "findings.parquet", FINDING_COLUMNS)
    errors = read_parquet(prev.folder / "errors.parquet", ERROR_COLUMNS)
    if (prev.folder / FINDING_CERTS_TABLE).is_file():
        certs = read_parquet(prev.folder / FINDING_CERTS_TABLE, CERT_COLUMNS)
    else:  # a round written before it kept them apart: picked out of every certificate
        certs = _read_certs_of(prev.folder / "certs.parquet", _finding_hashes(findings))
    rates = _rates_of(prev.folder / "certs.parquet", findings, config)
    clock.lap("reuse")
    suspects = build_suspects(certs, findings)
    summary = dict(prev.summary)
    for key in ("report_as_of", "report_files", "problems", "appendix_format", "reports_linked_from"):
        summary.pop(key, None)  # written afresh with the reports
    reuse = (f"Nothing new since the previous scan {prev.folder.name}: its certificates, lookups and findings "
             "are reused.")
    # The previous scan's own findings about its inputs still hold; its source's notices were its own.
    theirs = set(prev.state.get("source_notices") or [])
    earlier = [n for n in prev.summary.get("notices") or []
               if n not in theirs and not n.startswith("Nothing new since the previous")]
    state.notices[:] = list(dict.fromkeys([*state.notices, *earlier, reuse]))
    summary.update(read=state.counts["read"], parsed=state.counts["parsed"], notices=state.notices,
                   partial=bool(state.partial_reasons), partial_reasons=state.partial_reasons,
                   lookups=lookups, reused_from=prev.folder.name, round_state=_round_state(config, state),
                   round={"built_on": prev.folder.name, "parsed_now": 0, "reused": prev.readings,
                          "nothing_new": True, "source_read": source_read})
    summary["rates"] = rates_summary(rates, config.revocation_window)
    result = ScanResult(certs, findings, suspects, errors, prev.registrations, summary, rates=rates)
    if not write:
        return result
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if _expired_between(certs, prev.summary.get("report_as_of"), now):
        state.extra_tables["trends.csv"] = ("Trends", rates)
        result.reports = _write(config, result, state.extra_tables, clock, link_from=prev.folder)
    else:
        import json

        result.reports = _link_tree(prev.folder, out)
        clock.lap("reports")
        summary["wall_seconds"] = round(time.monotonic() - clock.started, 3)
        summary["stage_seconds"] = dict(clock.stages)
        document = {**summary, "report_as_of": iso(now), "reports_linked_from": prev.folder.name,
                    **{k: prev.summary[k] for k in ("appendix_format", "problems", "report_files") if k in prev.summary}}
        write_text_atomic(out / "summary.json", json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")
        result.reports["summary.json"] = out / "summary.json"
    return result


def run(config: Config, *, write: bool = True, previous: Path | None = None, rounds: bool = False) -> ScanResult:
    """Run one scan end to end and (unless write=False) write its reports into config.out_dir.

    previous: the report folder of an earlier scan of the same selection written with rounds (a `watch`
    round): its parsed certificates are not parsed again, and when nothing at all changed, its lookups and
    findings are taken as they are. The answer is the one a scan from scratch gives.
    rounds: keep what the next round builds on (the parse cache) in the report folder; implied by previous.
    """
    state = _Run(freeze=gc.get_freeze_count() == 0)  # a caller's own gc.freeze() is left as it is
    try:
        return _run(config, state, write=write, previous=previous, rounds=rounds)
    finally:
        if state.freeze:
            gc.unfreeze()  # what the scan kept from the collector is its again (a notebook runs many scans)


def _run(config: Config, state: _Run, *, write: bool, previous: Path | None, rounds: bool) -> ScanResult:
    from scanner.enrich.registration import RegistrationService

    clock = StageClock()
    rounds = rounds or previous is not None
    prev = previous_scan(previous, config) if previous is not None else None
    tally = _Tally(prev) if rounds else None
    with RegistrationService(config, progress=config.progress) as registry, _lint_service(config) as linter:
        state.linter = linter
        if prev is not None:
            # Only domains new to this scan are looked up, and the earlier answers no longer to be trusted.
            state.domains.update(prev.domains)
            registry.submit(_stale_registrations(prev.registrations, config, pd.Timestamp.now(tz="UTC")))
        certs = _ingest(config, registry, state, tally)
        if tally is not None and tally.unchanged:
            _source_said_again(prev, state)
        state.source_notices = len(state.notices)
        if tally is not None:
            read, parsed = tally.counts()
            state.counts["read"] += read
            state.counts["parsed"] += parsed
            # a reading with source errors is read again next round: they are its news
            if not any(e.get("stage") != "parse" for e in state.errors):
                state.source_token = tally.token
        clock.lap("parse")
        if prev is not None and _nothing_changed(prev, config, state, tally):
            fresh = registry.results()
            if _same_answers(prev.registrations, fresh):
                result = _reused_result(config, prev, state, registry.summary(), clock, write,
                                        source_read=not tally.unchanged)
                _say(state)
                return result
        if prev is not None:
            certs = _with_previous_rows(prev, tally, certs, state, config)
        if tally is not None and write:
            _table_domains(config, state, certs)
            _write_round_tables(Path(config.out_dir), certs, tally, state)
        certs = collapse_precerts(certs)
        state.errors.extend(_unchecked_names(certs, config.max_sans_per_cert))
        clock.lap("collapse")
        # OCSP and CRL fetches run while the registration lookups finish in the background.
        certs, revocation_findings = _revocations(certs, config, state)
        clock.lap("revocations")
        registrations = registry.results()
        if prev is not None:
            registrations = _merge_registrations(prev.registrations, registrations, state.domains)
        clock.lap("lookups")
        lookups = registry.summary()
        if registry.notice:
            state.notices.append(registry.notice)
            state.said.add(registry.notice)  # the registration service said it once already
        lint_findings = _lint(state, certs)  # the linters ran beside the parse; the last batches finish here
        if lint_findings is not None:
            clock.lap("lint")

    classified = classify_all(certs) if config.engine != "dask" else None  # once, for the domains and detect
    if not (tally is not None and write):
        _table_domains(config, state, certs, classified)
    findings = _detect(certs, registrations, config, revocation_findings, lint_findings, classified)
    del classified  # with what the detectors kept in its memo: hundreds of MB at a million certificates
    clock.lap("detect")
    findings, registrations = _registration_dates(config, certs, findings, registrations, lookups, clock)
    suspects = build_suspects(certs, findings)
    clock.lap("score")
    errors = frame_from_rows(state.errors, ERROR_COLUMNS)
    rates = rates_table(certs, findings, config.revocation_window)
    state.extra_tables["trends.csv"] = ("Trends", rates)
    summary = _summary(config, state, certs, findings, suspects, errors, lookups, clock)
    summary["rates"] = rates_summary(rates, config.revocation_window)
    if state.lint_summary is not None:
        summary["lint"] = state.lint_summary  # pkilint's version, the BR version, counts, findings per code
    if tally is not None:
        summary["round_state"] = _round_state(config, state)
        # parsed_now: certificates (and source errors) parsed by this scan; reused: taken from the previous one
        summary["round"] = {"built_on": prev.folder.name if prev else None, "parsed_now": tally.passed,
                            "reused": len(tally.reused), "nothing_new": False, "source_read": not tally.unchanged}
    result = ScanResult(certs, findings, suspects, errors, registrations, summary, rates=rates)
    if write:
        result.reports = _write(config, result, state.extra_tables, clock, rounds=tally is not None)
    _say(state)
    return result


def _source_said_again(prev: _Previous, state: _Run) -> None:
    """What the source said last round, for a round that did not read it again (it would say the same)."""
    said = prev.state.get("source_notices") or []
    state.notices.extend(n for n in said if n not in state.notices)
    state.partial_reasons.extend(r for r in prev.summary.get("partial_reasons") or []
                                 if r in said and r not in state.partial_reasons)


def _say(state: _Run) -> None:
    for n in state.notices:
        if n not in state.said:
            log.warning(n)


def _with_previous_rows(prev: _Previous, tally: _Tally, new: pd.DataFrame, state: _Run,
                        config: Config) -> pd.DataFrame:
    """The previous scan's parsed rows of the certificates read as before, then the rows parsed now."""
    parsed = read_parquet(prev.folder / PARSED_TABLE, CERT_COLUMNS)
    kept = parsed[parsed["sha256"].isin(tally.reused)]
    old_errors = read_parquet(prev.folder / "errors.parquet", ERROR_COLUMNS)
    again = old_errors[(old_errors["stage"] == "parse") & old_errors["sha256"].isin(tally.reused)]
    state.errors[:0] = again.to_dict("records")
    frames = [f for f in (kept, new) if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else new
    # Certificates left the selection: their domains are no longer this scan's (without lookups, run
    # finds every domain from the whole table anyway: _table_domains).
    if tally.dropped and config.registration != "off":
        state.domains = registrable_domains(table, config.max_sans_per_cert)
    return table
