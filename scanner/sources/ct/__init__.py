"""Source: Certificate Transparency logs (RFC 6962 and static-ct-api), verified, filtered to one CA, resumable."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import requests

from scanner.core.config import Config
from scanner.core.net import new_session
from scanner.sources.base import SourceError, SourceItem, SourceNotice
from scanner.sources.ct.context import SOURCE, Context
from scanner.sources.ct.issuers import IssuerError, IssuerFilter, load_issuer_certs
from scanner.sources.ct.loglist import RFC6962, LogInfo, LogListError, load_log_list, select_logs
from scanner.sources.ct.rfc6962 import read_rfc6962_log
from scanner.sources.ct.static import read_static_log
from scanner.sources.store import CertStore

__all__ = ["IssuerError", "LogInfo", "LogListError", "choose_logs", "read_ct", "read_log"]


def choose_logs(config: Config) -> list[LogInfo]:
    """The logs Config asks for (--log / --logs / --for-not-after) from Config.log_list; LogListError if none."""
    if config.log_list is None:
        raise LogListError("--source ct needs --log-list FILE (a log list v3 JSON, e.g. "
                           "https://www.gstatic.com/ct/log_list/v3/all_logs_list.json): it gives each log's key")
    logs = select_logs(load_log_list(config.log_list), config.logs, config.log_states, config.for_not_after)
    if not logs:
        raise LogListError(f"no log in {config.log_list} is in state {', '.join(config.log_states)} with a "
                           "temporal interval overlapping --for-not-after")
    return logs


def read_log(log: LogInfo, ctx: Context) -> Iterator[SourceItem]:
    """One log, whichever API it speaks."""
    reader = read_rfc6962_log if log.api == RFC6962 else read_static_log
    yield from reader(log, ctx)


def read_ct(
    config: Config,
    *,
    progress: bool | None = None,
    verify: bool = True,
    resume: bool = True,
    session: requests.Session | None = None,
) -> Iterator[SourceItem]:
    """Yield the audited CA's certificates from the chosen CT logs, one log after another.

    What each log read keeps goes to the store (Config.store_file) with its log index, with the resume
    point of that read: a rerun fetches only entries past it and yields the earlier ones from the store.
    A read is keyed by (log, issuer set, verified or not): another issuer reads the log again for itself,
    and a verified run never trusts an unverified read. verify=False skips the tree head signature and
    Merkle root checks (and says so); resume=False reads every chosen entry again.
    """
    logs = choose_logs(config)  # a bad list or name fails before any network traffic
    certs = load_issuer_certs(config.issuer_certs)
    if progress is None:
        progress = config.progress if config.progress is not None else (sys.stderr.isatty() and not config.quiet)
    if not certs:
        yield SourceNotice("no --issuer-cert given: every CT entry of the chosen logs is kept")
    if not verify:
        yield SourceNotice("CT tree head signatures and Merkle roots were NOT checked (verification skipped)",
                           True)
    with CertStore(config.store_file) as store:
        ctx = Context(config, IssuerFilter(certs), session or new_session(), bool(progress), verify, resume, store)
        for log in logs:
            try:
                yield from read_log(log, ctx)
            except (OSError, requests.RequestException) as exc:
                # Not a FetchError: something local or unexpected; the other logs still get read.
                yield SourceError(SOURCE, log.url, f"reading {log.name} failed: {type(exc).__name__}: {exc}")
                yield SourceNotice(f"CT log {log.name} was not fully read ({type(exc).__name__})", True)
