"""One frozen Config for a scan: flag > environment (CTSCAN_*) > default; bad values fail loudly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

REGISTRATION_MODES = ("auto", "rdap", "whois", "dns", "off")
SOURCES = ("files", "crtsh-sql", "crtsh-json", "store", "ct")


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and why."""


def default_cache_dir() -> Path:
    """CTSCAN_CACHE, else $XDG_CACHE_HOME/ctscan, else ~/.cache/ctscan."""
    env = os.environ.get("CTSCAN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ctscan"


@dataclass(frozen=True)
class Config:
    """Everything one scan needs to know; built by the CLI or by a notebook."""

    out_dir: Path
    source: str = "files"
    paths: tuple[Path, ...] = ()
    crl_files: tuple[Path, ...] = ()

    # crt.sh sources (--source crtsh-sql / crtsh-json)
    dsn: str = "postgresql://guest@crt.sh:5432/certwatch"
    ca_ids: tuple[int, ...] = ()
    ca_names: tuple[str, ...] = ()
    since: datetime | None = None  # notBefore >= since (UTC)
    until: datetime | None = None  # notBefore < until (UTC)
    crtsh_url: str = "https://crt.sh"
    identities: tuple[str, ...] = ()  # crt.sh Identity (q=) searches
    orgs: tuple[str, ...] = ()  # crt.sh O= searches
    exclude_expired: bool = False
    crtsh_rate: float = 5.0  # requests per minute to the crt.sh web interface; 0 = unlimited
    store_path: Path | None = None  # the local certificate store; None = <cache_dir>/store.sqlite3
    refresh_days: float = 7.0  # crtsh-sql windows ending this recently are re-read (crt.sh still gains rows)
    refresh_revocations: bool = False  # re-read crt.sh's crl_revoked for the stored certificates

    # CT logs (--source ct)
    log_list: Path | None = None  # log list v3 JSON; None = required for --logs selection
    logs: tuple[str, ...] = ()  # log names (description) or URLs / monitoring prefixes
    log_states: tuple[str, ...] = ()  # e.g. ("usable", "readonly") with --logs
    for_not_after: tuple[datetime | None, datetime | None] = (None, None)  # keep logs whose interval overlaps
    issuer_certs: tuple[Path, ...] = ()  # PEM files of the CA(s) under audit
    log_start: int | None = None
    log_end: int | None = None  # exclusive
    ct_batch: int = 256  # entries per get-entries request
    ct_parallel: int = 4  # get-entries ranges in flight per log
    ct_rate: float = 0.0  # requests per second per log; 0 = unlimited
    ct_verify: bool = True  # check STH / checkpoint signatures and tree roots
    ct_resume: bool = True  # continue each log where the last run stopped

    # revocation checks (--check-revocation)
    check_revocation: bool = False
    ocsp_sample: int | None = None  # per responder; None = every unexpired certificate
    ocsp_rate: float = 10.0  # requests per second per responder
    fetch_crls: bool = True  # with --check-revocation, fetch the CRLs the certificates point at
    ccadb: Path | None = None  # CCADB / Mozilla report CSV: CRL URLs of the CA (and test websites)

    # registration lookups
    registration: str = "auto"
    rdap_bootstrap: Path | None = None  # None = the bundled IANA dns.json snapshot
    rdap_rate: float = 5.0  # requests per second per registry server; 0 = unlimited
    whois_rate: float = 1.0  # queries per second per WHOIS server; 0 = unlimited
    whois_server: str | None = None  # HOST[:PORT] that answers every WHOIS question (tests, mirrors)
    dns_server: str | None = None  # ADDR[:PORT] that answers every DNS question of the tool
    lookup_concurrency: int = 32
    timeout: float = 10.0  # seconds per network request
    retries: int = 4  # attempts after the first for retryable failures
    cache_dir: Path = field(default_factory=default_cache_dir)
    use_cache: bool = True
    offline: bool = False  # cache (and recorded answers) only: nothing goes on the network
    registry_answers: tuple[Path, ...] = ()  # registrations.csv files of earlier runs, used as answers

    # detectors
    revocation_window: timedelta = timedelta(days=7)  # revoked within this of notBefore = early
    reissue_window: timedelta = timedelta(days=2)  # B issued within this of A's revocation = a pair
    max_sans_per_cert: int = 5000  # beyond this, a certificate's extra SANs are not looked up

    # scale
    engine: str = "pandas"  # pandas / dask: where the detectors run
    scheduler: str | None = None  # dask scheduler address; None = a LocalCluster
    workers: int = 0  # parsing processes; 0 = one per core

    # output
    plots: bool = False  # PNG plots into the report folder
    quiet: bool = False
    verbose: int = 0
    progress: bool | None = None  # None = only when stderr is a TTY

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"--source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.registration not in REGISTRATION_MODES:
            raise ConfigError(
                f"--registration must be one of {', '.join(REGISTRATION_MODES)}, not {self.registration!r}"
            )
        for name in ("rdap_rate", "whois_rate", "timeout", "crtsh_rate", "ocsp_rate"):
            if not getattr(self, name) >= 0:  # NaN fails this too
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, not {getattr(self, name)}")
        if self.lookup_concurrency < 1:
            raise ConfigError("--lookup-concurrency must be at least 1")
        if self.engine not in ("pandas", "dask"):
            raise ConfigError(f"--engine must be pandas or dask, not {self.engine!r}")
        if self.retries < 0:
            raise ConfigError("--retries must be >= 0")
        if not 0 <= self.refresh_days <= 36_525:  # NaN fails this too; a century bounds the timedelta
            raise ConfigError(f"--refresh-days must be between 0 and 36525, not {self.refresh_days}")
        if self.revocation_window <= timedelta(0) or self.reissue_window <= timedelta(0):
            raise ConfigError("--window and --reissue-window must be positive durations")


    @property
    def store_file(self) -> Path:
        """Where the local certificate store lives."""
        return self.store_path or self.cache_dir / "store.sqlite3"


#: The longest --window / --reissue-window: a century, longer than any certificate's life.
MAX_DURATION = timedelta(days=36_525)


def parse_duration(text: str) -> timedelta:
    """'7d', '36h', '90m', '45s' or a bare number of days -> timedelta."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds", "w": "weeks"}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            duration = timedelta(**{units[t[-1]]: float(t[:-1])})
        else:
            duration = timedelta(days=float(t))
    except (ValueError, OverflowError):
        raise ConfigError(f"not a duration: {text!r} (use e.g. 7d, 36h, 90m)") from None
    if abs(duration) > MAX_DURATION:  # dates plus or minus it must stay within what pandas can hold
        raise ConfigError(f"duration too long: {text!r} (at most {MAX_DURATION.days}d)")
    return duration


def env_default(name: str, default: str | None = None) -> str | None:
    """The CTSCAN_<NAME> environment value, or default."""
    return os.environ.get("CTSCAN_" + name.upper().replace("-", "_"), default)
