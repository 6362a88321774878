"""One frozen Config for a scan: flag > environment (CTSCAN_*) > default; bad values fail loudly."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from scanner.core.times import iso

REGISTRATION_MODES = ("auto", "rdap", "whois", "dns", "off")
REGISTRATION_DATES = ("flagged", "all")
SOURCES = ("files", "crtsh-sql", "crtsh-json", "store", "ct")


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which and why."""


#: What a number-valued setting may be: rule name -> (test, what the value must be). The CLI checks
#: flags and CTSCAN_* variables with the same rules, so both say the same thing.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rate": (lambda v: math.isfinite(v) and v >= 0, "must be a number >= 0 (0 = no limit)"),
    "seconds": (lambda v: math.isfinite(v) and v > 0, "must be a number of seconds > 0"),
    "at_least_1": (lambda v: v >= 1, "must be at least 1"),
    "at_least_0": (lambda v: v >= 0, "must be 0 or more"),
}

#: Config field -> its rule (None values of optional fields are not checked).
FIELD_RULES: dict[str, str] = {
    "crtsh_rate": "rate", "ct_rate": "rate", "ocsp_rate": "rate", "rdap_rate": "rate", "whois_rate": "rate",
    "timeout": "seconds",
    "ct_batch": "at_least_1", "ct_parallel": "at_least_1", "lookup_concurrency": "at_least_1",
    "ocsp_sample": "at_least_1", "max_sans_per_cert": "at_least_1", "max_crl_bytes": "at_least_1",
    "log_start": "at_least_0", "log_end": "at_least_0", "retries": "at_least_0", "workers": "at_least_0",
}

#: Config field -> the flag that sets it, where the names differ (for messages a CLI user understands).
FLAG_NAMES: dict[str, str] = {"log_start": "--start", "log_end": "--end", "ca_ids": "--ca-id",
                              "whois_server": "--whois-server", "dns_server": "--dns-server",
                              "dns_root": "--dns-root", "zone_files": "--zone-file"}


def flag_name(field_name: str) -> str:
    """The command-line flag of a Config field: '--rdap-rate' for rdap_rate."""
    return FLAG_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def check_rule(rule: str, value: Any) -> str | None:
    """Why value breaks the named RULES entry ('must be ..., not X'), or None when it is fine."""
    test, text = RULES[rule]
    return None if test(value) else f"{text}, not {value!r}"


def server_problem(value: str) -> str | None:
    """Why value is not HOST[:PORT] / [V6]:PORT, or None when it is."""
    text = value.strip()
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else None)
        if not closed or port is None:
            return f"not HOST[:PORT] or [ADDRESS]:PORT: {value!r}"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        return f"no host in {value!r}"
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"port must be a number from 1 to 65535: {value!r}"
    return None


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
    max_crl_bytes: int | None = None  # a fetched CRL past this is refused; None = bounded.LIMITS["crl"]

    # registration lookups
    registration: str = "auto"
    rdap_bootstrap: Path | None = None  # None = the bundled IANA dns.json snapshot
    rdap_rate: float | None = None  # requests per second per registry server; 0 = unlimited; None = rdap_rates table
    whois_rate: float = 1.0  # queries per second per WHOIS server; 0 = unlimited
    whois_server: str | None = None  # HOST[:PORT] that answers every WHOIS question (tests, mirrors)
    dns_server: str | None = None  # ADDR[:PORT] that answers every DNS question of the tool
    dns_root: str | None = None  # ADDR[:PORT] of the root server the delegation check starts from (None = IANA's)
    zone_files: tuple[Path, ...] = ()  # TLD zone files (plain or gzip, as CZDS publishes them): names in them are registered
    registration_dates: str = "flagged"  # all / flagged: whose registration dates RDAP is asked for
    lookup_concurrency: int = 32
    timeout: float = 10.0  # seconds per network request
    retries: int = 4  # attempts after the first for retryable failures
    cache_dir: Path = field(default_factory=default_cache_dir)
    use_cache: bool = True
    offline: bool = False  # cache (and recorded answers) only: nothing goes on the network
    registry_answers: tuple[Path, ...] = ()  # registrations.csv files of earlier runs, used as answers

    # detectors
    revocation_window: timedelta = timedelta(days=7)  # revoked within this of notBefore = early
    reissue_window: timedelta = timedelta(days=2)  # B issued after A, at most this after A's revocation = a pair
    max_sans_per_cert: int = 5000  # beyond this, a certificate's extra SANs are not looked up
    lint: bool = False  # pkilint's CA/Browser Forum TLS linter on every certificate (findings lint:<code>)

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
        for name, rule in FIELD_RULES.items():
            value = getattr(self, name)
            problem = None if value is None else check_rule(rule, value)
            if problem:
                raise ConfigError(f"{flag_name(name)} {problem}")
        if self.engine not in ("pandas", "dask"):
            raise ConfigError(f"--engine must be pandas or dask, not {self.engine!r}")
        # -1 is crt.sh's own id for "Issuer Not Found": a search may ask for those certificates.
        bad_ids = [i for i in self.ca_ids if i < 1 and i != -1]
        if bad_ids:
            raise ConfigError(f"--ca-id must be a crt.sh CA id (1 or more, or -1 for crt.sh's 'Issuer Not "
                              f"Found'), not {bad_ids[0]}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigError(f"--since ({iso(self.since)}) must be before --until "
                              f"({iso(self.until)}): notBefore >= since and < until selects nothing")
        if self.log_start is not None and self.log_end is not None and self.log_start >= self.log_end:
            raise ConfigError(f"--start ({self.log_start}) must be less than --end ({self.log_end}), "
                              "the index to stop before")
        low, high = self.for_not_after
        if low is not None and high is not None and low >= high:
            raise ConfigError("--for-not-after: the range's start must be before its end")
        if not self.crtsh_url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"--crtsh-url must be an http:// or https:// URL, not {self.crtsh_url!r}")
        if self.registration_dates not in REGISTRATION_DATES:
            raise ConfigError(f"--registration-dates must be one of {', '.join(REGISTRATION_DATES)}, "
                              f"not {self.registration_dates!r}")
        for name in ("whois_server", "dns_server", "dns_root"):
            value = getattr(self, name)
            problem = server_problem(value) if value else None  # empty = not set
            if problem:
                raise ConfigError(f"{flag_name(name)}: {problem}")
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
