"""What every CT log reader shares: the HTTP session, retries, rate limit, issuer filter, resume and progress."""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests
from tqdm import tqdm

from ... import net
from ...config import Config
from ..base import SourceError, SourceItem, SourceNotice
from .checkpoint_state import LogState, StateFile, load_state, state_path
from .issuers import IssuerFilter
from .loglist import LogInfo
from .verify import VerifyError

SOURCE = "ct"


def maybe_gunzip(body: bytes, expected_len: int | None = None) -> bytes:
    """Undo gzip on a tile stored compressed (served without Content-Encoding)."""
    if body[:2] != b"\x1f\x8b" or (expected_len is not None and len(body) == expected_len):
        return body
    try:
        return gzip.decompress(body)
    except (OSError, EOFError, zlib.error):
        return body


def ms_to_datetime(ms: int) -> datetime:
    """A CT timestamp (ms since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@dataclass
class Context:
    """One run's shared machinery; readers take one per log."""

    config: Config
    filter: IssuerFilter
    session: requests.Session = field(default_factory=net.new_session)
    progress: bool = False
    verify: bool = True
    resume: bool = True

    def limiter(self) -> net.RateLimiter:
        """A fresh per-log rate limiter (Config.ct_rate requests per second)."""
        return net.RateLimiter(self.config.ct_rate)

    def get(self, url: str, limiter: net.RateLimiter, **kwargs: Any) -> requests.Response:
        """GET with the run's timeout, retries and the log's rate limit; FetchError when it gives up."""
        return net.get_with_retries(self.session, url, limiter=limiter, retries=self.config.retries,
                                    timeout=self.config.timeout, **kwargs)

    def load_state(self, log: LogInfo) -> tuple[LogState, StateFile]:
        """The log's resume state (fresh when resuming is off) and the file that keeps it."""
        path = state_path(self.config.cache_dir, log.url)
        return (load_state(path, log.url) if self.resume else LogState(log.url)), StateFile(path)

    def start_state(self, sf: StateFile, state: LogState) -> None:
        """Begin this run's state for a log (where it starts, what it covers)."""
        if self.resume:
            sf.reset(state)

    def save_state(self, sf: StateFile, state: LogState) -> None:
        """Persist the resume point."""
        if self.resume:
            sf.advance(state)

    def bar(self, log: LogInfo, total: int, initial: int) -> tqdm:
        """A per-log progress bar (entries/s, ETA) on stderr; silent unless progress is on."""
        return tqdm(total=total, initial=initial, desc=log.name[:40], unit=" entries", unit_scale=True,
                    disable=not self.progress, file=sys.stderr, leave=True, dynamic_ncols=True)

    def index_range(self, tree_size: int, state: LogState) -> tuple[int, int, int, bool]:
        """(first index asked for, first index still to read, end, whether the saved state applies).

        The saved state covers [extra.first, next_index); it only counts when that span holds the
        first index asked for, so a run asking for earlier entries is never skipped past them.
        """
        cfg = self.config
        first = max(0, cfg.log_start or 0)
        end = tree_size if cfg.log_end is None else max(first, min(tree_size, cfg.log_end))
        saved_first = int(state.extra.get("first", 0))
        reuse = state.next_index > 0 and saved_first <= first <= state.next_index
        start = min(end, max(first, state.next_index)) if reuse else first
        return first, start, end, reuse


def skipped_log(log: LogInfo, what: str, exc: Exception) -> Iterator[SourceItem]:
    """The error and partial notice for a log whose tree head (`what`) could not be read or trusted."""
    if isinstance(exc, VerifyError):
        yield SourceError(SOURCE, log.url, f"{exc}; nothing from this log is trusted, so it was skipped",
                          stage="verify")
        yield SourceNotice(f"CT log {log.name}: {what} signature check failed; the log was skipped", True)
    else:
        yield SourceError(SOURCE, log.url, f"cannot read the {what} of {log.name}: {exc}; "
                          "the log is skipped, rerun later to read it")
        yield SourceNotice(f"CT log {log.name} ({log.url}) was not read: its {what} is unreachable", True)
