"""What every CT log reader shares: the HTTP session, retries, rate limit, issuer filter, the store and progress."""

from __future__ import annotations

import hashlib
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests
from tqdm import tqdm

from scanner.core import net
from scanner.core.bounded import LIMITS, BoundExceeded, gunzip, size_text
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.ct.issuers import IssuerFilter
from scanner.sources.ct.loglist import LogInfo
from scanner.sources.ct.options import CtOptions
from scanner.sources.ct.verify import VerifyError
from scanner.sources.store import CertStore, CTProgress

SOURCE = "ct"


def maybe_gunzip(body: bytes, expected_len: int | None = None, *, url: str = "",
                 max_bytes: int = LIMITS["ct_tile"].max_bytes) -> bytes:
    """Undo gzip on a tile stored compressed (served without Content-Encoding), never past max_bytes.

    FetchError when the stored tile inflates past max_bytes (a gzip bomb that no Content-Encoding
    announced, so the bounded read could not undo it as it came).
    """
    if body[:2] != b"\x1f\x8b" or (expected_len is not None and len(body) == expected_len):
        return body
    try:
        return gunzip(body, max_bytes)
    except BoundExceeded:
        raise net.FetchError(url, f"stored gzip tile inflates past the {size_text(max_bytes)} limit; not read") from None
    except zlib.error:  # not gzip after all, or cut short: the bytes as they came
        return body


def ms_to_datetime(ms: int) -> datetime:
    """A CT timestamp (ms since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def selection_key(issuers: IssuerFilter, verified: bool) -> str:
    """What a log read kept depends on the issuer set and on whether it was verified: one key for both."""
    keys = sorted(h.hex() for h in issuers.key_hashes) + sorted("fp:" + f.hex() for f in issuers.fingerprints)
    scope = ",".join(keys) if issuers.active else "every entry"
    return ("verified " if verified else "unverified ") + hashlib.sha256(scope.encode()).hexdigest()[:32]


@dataclass
class Context:
    """One run's shared machinery; readers take one per log."""

    options: CtOptions
    filter: IssuerFilter
    store: CertStore  # kept entries and resume points
    session: requests.Session = field(default_factory=net.new_session)

    def __post_init__(self) -> None:
        self.verify = self.options.verify
        self.resume = self.options.resume
        self.progress = sys.stderr.isatty() if self.options.progress is None else self.options.progress
        self.selection = selection_key(self.filter, self.verify)

    def limiter(self) -> net.RateLimiter:
        """A fresh per-log rate limiter (options.rate requests per second)."""
        return net.RateLimiter(self.options.rate)

    def get(self, url: str, limiter: net.RateLimiter, **kwargs: Any) -> requests.Response:
        """GET with the run's timeout, retries and the log's rate limit; FetchError when it gives up."""
        kwargs.setdefault("bound", "ct_json")
        return net.get_with_retries(self.session, url, limiter=limiter, retries=self.options.retries,
                                    timeout=self.options.timeout, **kwargs)

    def saved(self, log: LogInfo) -> CTProgress | None:
        """How far an earlier run of this selection read the log (None when resuming is off or it never did)."""
        return self.store.ct_progress(self.selection, log.url) if self.resume else None

    def commit(self, log: LogInfo, kept: list[tuple[int, RawCert]], progress: CTProgress, *,
               pending: bool = False) -> None:
        """Store what a batch kept and how far the read got, together: a kill loses at most the batch."""
        self.store.ct_commit(self.selection, log.url, kept, progress, pending=pending)

    def stored(self, log: LogInfo, start: int, end: int) -> Iterator[RawCert]:
        """The checked entries of [start, end) that earlier reads of this selection kept."""
        return self.store.ct_iter(self.selection, log.url, start, end)

    def bar(self, log: LogInfo, total: int, initial: int) -> tqdm:
        """A per-log progress bar (entries/s, ETA) on stderr; silent unless progress is on."""
        return tqdm(total=total, initial=initial, desc=log.name[:40], unit=" entries", unit_scale=True,
                    disable=not self.progress, file=sys.stderr, leave=True, dynamic_ncols=True)

    def index_range(self, tree_size: int, saved: CTProgress | None) -> tuple[int, int, int, bool]:
        """(first index asked for, first index still to read, end, whether the saved progress applies).

        Saved progress covers [saved.first, saved.next); it only counts when that span holds the
        first index asked for, so a run asking for earlier entries is never skipped past them.
        """
        first = max(0, self.options.start or 0)
        end = tree_size if self.options.end is None else max(first, min(tree_size, self.options.end))
        reuse = saved is not None and saved.next > 0 and saved.first <= first <= saved.next
        start = min(end, max(first, saved.next)) if reuse else first
        return first, start, end, reuse


def older_head(ctx: Context, log: LogInfo, tree_size: int) -> Iterator[SourceItem] | None:
    """What an earlier read kept, when the log now signs a smaller tree than that read reached; else None.

    A replica or cache of a log may answer an older tree head (or checkpoint) than one an earlier run
    read up to: that older tree holds nothing new, and the entries read since stand.
    """
    saved = ctx.saved(log)
    first = max(0, ctx.options.start or 0)
    if saved is None or saved.next <= tree_size or not saved.first <= first <= saved.next:
        return None
    end = saved.next if ctx.options.end is None else max(first, min(saved.next, ctx.options.end))

    def items() -> Iterator[SourceItem]:
        yield SourceNotice(f"CT log {log.name}: it answered a tree of {tree_size} entries, older than the "
                           f"{saved.next} an earlier run read and checked (a stale replica or cache, or a log that "
                           f"lost entries); entries {first}..{end - 1} come from the store, nothing new was read")
        yield from ctx.stored(log, first, end)

    return items()


def skipped_log(log: LogInfo, what: str, exc: Exception, ctx: Context | None = None) -> Iterator[SourceItem]:
    """The error and partial notice for a log whose tree head (`what`) could not be read or trusted.

    With ctx, a log that could not be read (not one that failed verification) still yields what earlier
    checked reads of it kept: a log down for an hour has not unlogged its certificates, and a standing
    control must not report them gone.
    """
    if isinstance(exc, VerifyError):
        yield SourceError(SOURCE, log.url, f"{exc}; nothing from this log is trusted, so it was skipped",
                          stage="verify")
        yield SourceNotice(f"CT log {log.name}: {what} signature check failed; the log was skipped", True)
    elif isinstance(exc, net.FetchError) and exc.status == 404:
        yield SourceError(SOURCE, log.url, f"the {what} of {log.name} is missing (404 Not Found): {exc}; check "
                          "the log's URL in the log list (a retired log may have moved or been shut down); "
                          "the log is skipped")
        yield SourceNotice(f"CT log {log.name} ({log.url}) was not read: its {what} is missing (404)", True)
    else:
        yield SourceError(SOURCE, log.url, f"cannot read the {what} of {log.name}: {exc}; "
                          "the log is skipped, rerun later to read it")
        yield SourceNotice(f"CT log {log.name} ({log.url}) was not read: its {what} is unreachable", True)
    if ctx is None or isinstance(exc, VerifyError):
        return
    done = ctx.saved(log)
    if done is not None and done.next > done.first:
        yield SourceNotice(f"CT log {log.name}: entries {done.first}..{done.next - 1}, read and checked by an "
                           "earlier run, come from the store; newer entries were not read")
        yield from ctx.stored(log, done.first, done.next)


def offline_log(log: LogInfo, ctx: Context) -> Iterator[SourceItem]:
    """A log not asked (offline): what earlier checked reads of this selection kept, and a notice saying so."""
    done = ctx.store.ct_progress(ctx.selection, log.url)
    if done is None or done.next <= done.first:
        yield SourceNotice(f"offline: CT log {log.name} was not asked and no earlier run read it into the store: "
                           "none of its certificates are reported (run once without --offline)", True)
        return
    yield SourceNotice(f"offline: CT log {log.name} was not asked; entries {done.first}..{done.next - 1} (tree size "
                       f"{done.tree_size}), read and checked by an earlier run, come from the store")
    yield from ctx.stored(log, done.first, done.next)


def resumed_notice(log: LogInfo, first: int, start: int) -> SourceNotice:
    """Says that entries before `start` come from the store, read by an earlier run."""
    return SourceNotice(f"CT log {log.name}: resumed at entry {start}; entries {first}..{start - 1} were read by "
                        "an earlier run and come from the store (--restart reads them again)")


def unreachable(log: LogInfo, what: str, at: int, end: int, exc: Exception) -> Iterator[SourceItem]:
    """The error and partial notice of a read that stopped at entry `at` because the log did not answer `what`."""
    yield SourceError(SOURCE, f"{log.url}#{at}", f"cannot read {what}: {exc}; rerun to resume at entry {at}")
    yield SourceNotice(f"CT log {log.name}: stopped at entry {at} of {end} (log unreachable); rerun to resume", True)
