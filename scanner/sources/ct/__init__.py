"""Source: Certificate Transparency logs (RFC 6962 and static-ct-api), verified, filtered to one CA, resumable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import requests

from scanner.core.net import new_session
from scanner.sources.base import SourceError, SourceItem, SourceNotice
from scanner.sources.ct.context import SOURCE, Context, offline_log
from scanner.sources.ct.issuers import IssuerError, IssuerFilter, load_issuer_certs
from scanner.sources.ct.loglist import RFC6962, LogInfo, LogListError, load_log_list, select_logs
from scanner.sources.ct.options import CtOptions
from scanner.sources.ct.rfc6962 import read_rfc6962_log
from scanner.sources.ct.static import read_static_log
from scanner.sources.store import CertStore, opened_store

__all__ = ["CtOptions", "IssuerError", "LogInfo", "LogListError", "choose_logs", "read", "read_log"]


def choose_logs(options: CtOptions) -> list[LogInfo]:
    """The logs the options ask for (logs / log_states / for_not_after) from options.log_list; LogListError if none."""
    if options.log_list is None:
        raise LogListError("--source ct needs --log-list FILE (a log list v3 JSON, e.g. "
                           "https://www.gstatic.com/ct/log_list/v3/all_logs_list.json): it gives each log's key")
    logs = select_logs(load_log_list(options.log_list), options.logs, options.log_states, options.for_not_after)
    if not logs:
        raise LogListError(f"no log in {options.log_list} is in state {', '.join(options.log_states)} with a "
                           "temporal interval overlapping --for-not-after")
    return logs


def read_log(log: LogInfo, ctx: Context) -> Iterator[SourceItem]:
    """One log, whichever API it speaks."""
    reader = read_rfc6962_log if log.api == RFC6962 else read_static_log
    yield from reader(log, ctx)


def read(
    options: CtOptions,
    *,
    store: CertStore | Path | str | None = None,
    session: requests.Session | None = None,
) -> Iterator[SourceItem]:
    """Yield the audited CA's certificates from the chosen CT logs, one log after another.

    What each log read keeps goes to the store with its log index, with the resume point of that read:
    a rerun fetches only entries past it and yields the earlier ones from the store. store is an open
    CertStore (left open), a store file, or None for one in memory that lasts this read only.
    A read is keyed by (log, issuer set, verified or not): another issuer reads the log again for itself,
    and a verified run never trusts an unverified read. options.verify=False skips the tree head
    signature and Merkle root checks (and says so); options.resume=False reads every chosen entry again.
    """
    logs = choose_logs(options)  # a bad list or name fails before any network traffic
    certs = load_issuer_certs(options.issuer_certs)
    if not certs:
        yield SourceNotice("no --issuer-cert given: every CT entry of the chosen logs is kept")
    if not options.verify:
        yield SourceNotice("CT tree head signatures and Merkle roots were NOT checked (verification skipped)",
                           True)
    with opened_store(store) as kept:
        ctx = Context(options, IssuerFilter(certs), kept, session or new_session())
        for log in logs:
            if options.offline:
                yield from offline_log(log, ctx)
                continue
            try:
                yield from read_log(log, ctx)
            except (OSError, requests.RequestException) as exc:
                # Not a FetchError: something local or unexpected; the other logs still get read.
                yield SourceError(SOURCE, log.url, f"reading {log.name} failed: {type(exc).__name__}: {exc}")
                yield SourceNotice(f"CT log {log.name} was not fully read ({type(exc).__name__})", True)
