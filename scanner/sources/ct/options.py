"""What a CT log read needs: which logs, which CA, which entries, how fast, and whether to check and resume."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scanner.core.config import Config


@dataclass(frozen=True)
class CtOptions:
    """The options of one CT read; the defaults are a scan's."""

    log_list: Path | None = None  # log list v3 JSON: it gives each log's URL, key and API
    logs: tuple[str, ...] = ()  # log names (description) or URLs / monitoring prefixes
    log_states: tuple[str, ...] = ()  # e.g. ("usable", "readonly"): every log of the list in those states
    for_not_after: tuple[datetime | None, datetime | None] = (None, None)  # keep logs whose interval overlaps
    issuer_certs: tuple[Path, ...] = ()  # PEM files of the CA(s) under audit; () = keep every entry
    start: int | None = None  # first entry index to read
    end: int | None = None  # the index to stop before; None = the tree size
    batch: int = Config.ct_batch  # entries per get-entries request
    parallel: int = Config.ct_parallel  # get-entries ranges (or tiles) in flight per log
    rate: float = Config.ct_rate  # requests per second per log; 0 = unlimited
    verify: bool = True  # check tree head / checkpoint signatures and Merkle roots
    resume: bool = True  # continue each log where the last read of the store stopped
    progress: bool | None = None  # a progress bar on stderr; None = when stderr is a TTY
    timeout: float = Config.timeout  # seconds per request
    retries: int = Config.retries  # attempts after the first for 429s, 5xx and short or broken answers
    offline: bool = False  # ask no log: each log's entries come from the store, as far as earlier reads got

    def __post_init__(self) -> None:
        # A notebook passes lists and strings; the log selection and the issuer filter want tuples of paths.
        object.__setattr__(self, "logs", tuple(self.logs))
        object.__setattr__(self, "log_states", tuple(self.log_states))
        object.__setattr__(self, "issuer_certs", tuple(Path(p) for p in self.issuer_certs))
        if self.log_list is not None:
            object.__setattr__(self, "log_list", Path(self.log_list))

    @classmethod
    def from_config(cls, config: Config) -> CtOptions:
        """The options a scan's Config gives (--log-list, --log, --logs, --issuer-cert, --start, --end, ...)."""
        progress = config.progress if config.progress is not None else (False if config.quiet else None)
        return cls(log_list=config.log_list, logs=config.logs, log_states=config.log_states,
                   for_not_after=config.for_not_after, issuer_certs=config.issuer_certs,
                   start=config.log_start, end=config.log_end, batch=config.ct_batch,
                   parallel=config.ct_parallel, rate=config.ct_rate, verify=config.ct_verify,
                   resume=config.ct_resume, progress=progress, timeout=config.timeout, retries=config.retries,
                   offline=config.offline)
