"""Command line: parse flags -> Config -> pipeline.run -> exit code (0 done, 1 failure, 2 usage, 3 partial)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from scanner import __version__
from scanner.core.config import (
    REGISTRATION_DATES,
    REGISTRATION_MODES,
    SOURCES,
    Config,
    ConfigError,
    check_rule,
    default_cache_dir,
    env_default,
    parse_duration,
    server_problem,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from scanner.control.watch import WatchOptions

EPILOG = """\
Exit status: 0 when the scan completed (findings are in the reports), 1 on failure, 2 on a usage error,
3 when the scan completed and wrote its reports but part of the selection could not be read or verified
(a CT log skipped or not matching its signed tree head, a crt.sh window that kept failing, crt.sh
unreachable, a search capped at crt.sh's row limit): summary.json lists each reason under partial_reasons.
Reports in --out: suspects.csv, suspects.xlsx, errors.csv, registrations.csv, summary.json, appendix/.
Environment: CTSCAN_CACHE sets the cache folder; CTSCAN_<FLAG> (e.g. CTSCAN_RDAP_RATE) sets a flag's default,
read and checked as the flag would be (an empty variable counts as unset).
"""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors, from any subcommand, end in one 'ctscan: error: ...' line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"ctscan: error: {message}\n")


class _BadEnvironment:
    """A CTSCAN_* value that does not parse: a usage error once the command line shows the flag was not given."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        self.message = message

    def __repr__(self) -> str:
        return f"<invalid {self.variable}>"


def _from_env(flag: str, parse: Callable[[str], Any], fallback: Any = None) -> Any:
    """The default of --flag: CTSCAN_<FLAG> parsed exactly as the flag would be, else fallback."""
    text = env_default(flag)
    if not text:
        return fallback
    try:
        return parse(text)
    except (argparse.ArgumentTypeError, ConfigError, ValueError) as exc:
        # Kept, not raised: --help must still work, and a flag on the command line overrides the variable.
        return _BadEnvironment("CTSCAN_" + flag.upper().replace("-", "_"), str(exc))


def _environment_error(args: argparse.Namespace) -> str | None:
    """The usage error of the first unusable CTSCAN_* variable still in effect, if any."""
    for value in vars(args).values():
        if isinstance(value, _BadEnvironment):
            return f"{value.variable}: {value.message}"
    return None


def _number(kind: type, rule: str) -> Callable[[str], Any]:
    """An argparse type: text -> int or float that obeys config.RULES[rule]."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        problem = check_rule(rule, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:I?B)?\s*$", re.IGNORECASE)


def _size(text: str) -> int:
    """An argparse type: '512M', '2G', '1048576' -> bytes (binary units), at least 1."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size (bytes, or a number with K, M or G): {text!r}")
    value = int(float(match.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, not {text!r}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parser for a CTSCAN_* variable of a flag with choices (argparse checks only the flag's own values)."""
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, not {text!r}")
        return text
    return parse


def _server(text: str) -> str:
    problem = server_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _smtp(text: str) -> str:
    from scanner.control.alerts import SmtpServer

    try:
        SmtpServer.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--smtp: ")) from None
    return text


def _http_url(text: str) -> str:
    if not text.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, not {text!r}")
    return text


_RATE = _number(float, "rate")


def _add_scan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="audit one CA's certificates and write the reports",
        description="Read certificates from a source, check their names and revocations, write CSV/XLSX reports.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_scan_arguments(p)


def _add_scan_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `scan`, which `watch` takes too."""
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="with --source files: certificate files (PEM bundles or DER) and directories (read recursively)")
    p.add_argument("--source", choices=SOURCES, default=_from_env("source", _choice(SOURCES), "files"),
                   help="where certificates come from (default: files)")
    p.add_argument("--crl", action="append", type=Path, default=[], metavar="FILE",
                   help="a CRL (DER or PEM) giving revocation date and reason per serial; repeatable")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the reports (created)")

    c = p.add_argument_group("crt.sh sources (--source crtsh-sql, crtsh-json, store)")
    c.add_argument("--dsn", default=_from_env("dsn", str, "postgresql://guest@crt.sh:5432/certwatch"),
                   help="crt.sh PostgreSQL DSN (default: crt.sh's public guest replica)")
    c.add_argument("--ca-id", action="append", type=int, default=[], metavar="N",
                   help="crt.sh CA id of the issuer to audit; repeatable")
    c.add_argument("--ca-name", action="append", default=[], metavar="TEXT",
                   help="crt.sh CA name (matched in the ca table; what it matched is printed); repeatable")
    c.add_argument("--since", type=_date, metavar="DATE", help="only certificates with notBefore >= DATE (UTC)")
    c.add_argument("--until", type=_date, metavar="DATE", help="only certificates with notBefore < DATE (UTC)")
    c.add_argument("--crtsh-url", type=_http_url, default=_from_env("crtsh_url", _http_url, "https://crt.sh"),
                   help="crt.sh web interface (default: https://crt.sh; a local mirror for tests)")
    c.add_argument("--identity", action="append", default=[], metavar="TEXT",
                   help="crt.sh Identity search (q=) for --source crtsh-json; repeatable")
    c.add_argument("--org", action="append", default=[], metavar="TEXT",
                   help="crt.sh organisation (O=) search for --source crtsh-json; repeatable")
    c.add_argument("--exclude-expired", action="store_true", help="crt.sh: leave out expired certificates")
    c.add_argument("--crtsh-rate", type=_RATE, default=_from_env("crtsh_rate", _RATE, 5.0),
                   metavar="N",
                   help="requests per minute to the crt.sh web interface; 0 = no limit (default: 5)")
    c.add_argument("--store", type=Path, default=None, metavar="FILE",
                   help="local certificate store (default: <cache>/store.sqlite3)")
    c.add_argument("--refresh-days", type=float, default=7.0, metavar="N",
                   help="crtsh-sql: re-read windows whose notBefore range ended less than N days ago, since crt.sh "
                        "still gains late-logged and backdated certificates for them; 0 = only windows reaching "
                        "into the future (default: 7)")
    c.add_argument("--refresh-revocations", action="store_true",
                   help="crtsh-sql: re-read crt.sh's crl_revoked for every stored certificate of the selection "
                        "(a revocation crt.sh no longer lists is kept); --crl files are read on every run anyway")

    t = p.add_argument_group("CT logs (--source ct)")
    t.add_argument("--log-list", type=Path, metavar="FILE", default=_from_env("log_list", Path),
                   help="CT log list v3 JSON (Google's all_logs_list.json format)")
    t.add_argument("--log", action="append", default=[], metavar="NAME_OR_URL",
                   help="a log to read, by description or URL / monitoring prefix; repeatable")
    t.add_argument("--logs", default="", metavar="STATES",
                   help="pick logs from --log-list by state, e.g. usable,readonly")
    t.add_argument("--for-not-after", default="", metavar="RANGE",
                   help="with --logs: only logs whose notAfter interval overlaps RANGE (DATE..DATE, either side open)")
    t.add_argument("--start", type=_number(int, "at_least_0"), default=None, metavar="INDEX",
                   help="first log entry index to read")
    t.add_argument("--end", type=_number(int, "at_least_0"), default=None, metavar="INDEX",
                   help="log entry index to stop before (more than --start)")
    t.add_argument("--no-verify", action="store_true",
                   help="do not check tree head signatures and roots (never for an audit you will report)")
    t.add_argument("--restart", action="store_true", help="read each log from --start again instead of resuming")

    r = p.add_argument_group("revocation checks")
    r.add_argument("--issuer-cert", action="append", type=Path, default=[], metavar="PEM",
                   help="the CA certificate(s) under audit: filter CT log entries, verify CRLs and OCSP; repeatable")
    r.add_argument("--check-revocation", action="store_true",
                   help="ask OCSP responders and fetch CRLs for unexpired certificates; disagreements become findings")
    r.add_argument("--ocsp-sample", type=_number(int, "at_least_1"), default=None, metavar="N",
                   help="with --check-revocation: at most N certificates per OCSP responder (default: all)")
    r.add_argument("--ocsp-rate", type=_RATE, default=_from_env("ocsp_rate", _RATE, 10.0),
                   metavar="N",
                   help="OCSP requests per second per responder; 0 = no limit (default: 10)")
    r.add_argument("--max-crl-bytes", type=_size, default=None, metavar="SIZE",
                   help="refuse a fetched CRL larger than SIZE (bytes, or with K, M, G: 512M); "
                        "default 256M, about 8 million entries")
    r.add_argument("--ccadb", type=Path, metavar="FILE",
                   help="CCADB AllCertificateRecords CSV: its records of the scanned certificates' issuing CAs give "
                        "the CRLs they disclose (checked against the certificates: crl-disclosure.csv, offline "
                        "too; fetched with --check-revocation)")

    g = p.add_argument_group("registration lookups")
    g.add_argument("--registration", choices=REGISTRATION_MODES,
                   default=_from_env("registration", _choice(REGISTRATION_MODES), "auto"),
                   help="auto = --zone-file, then the delegation check at the TLD's own DNS servers (delegated = "
                        "registered), then RDAP (WHOIS for TLDs without RDAP) for the names those cannot settle; "
                        "off = no lookups (default: auto)")
    g.add_argument("--zone-file", action="append", type=Path, default=[], metavar="FILE",
                   help="a TLD zone file (master-file format, plain or gzip, as ICANN CZDS publishes it): names "
                        "delegated in it are registered; a name missing from it is not thereby unregistered; "
                        "repeatable")
    g.add_argument("--registration-dates", choices=REGISTRATION_DATES,
                   default=_from_env("registration_dates", _choice(REGISTRATION_DATES), "flagged"),
                   help="whose RDAP registration dates to fetch (for registered_after_issuance): all names, or "
                        "only those of certificates flagged otherwise, revoked or short-lived (default: flagged)")
    g.add_argument("--dns-root", metavar="ADDR[:PORT]", type=_server, default=_from_env("dns_root", _server),
                   help="the root server the delegation check starts from, every server of the walk asked on its "
                        "port (a local root copy, or a test server); default: the IANA root servers")
    g.add_argument("--rdap-bootstrap", type=Path, metavar="FILE",
                   help="IANA RDAP dns.json to use instead of the bundled snapshot")
    g.add_argument("--rdap-rate", type=_RATE, default=_from_env("rdap_rate", _RATE, None),
                   metavar="N",
                   help="RDAP requests per second for every registry server, overriding the per-registry table "
                        "(scanner/enrich/rdap_rates.py: 5 where a registry publishes no limit); 0 = no limit")
    g.add_argument("--whois-rate", type=_RATE, default=_from_env("whois_rate", _RATE, 1.0),
                   metavar="N",
                   help="WHOIS queries per second per server; 0 = no limit (default: 1)")
    g.add_argument("--whois-server", metavar="HOST[:PORT]", type=_server, default=_from_env("whois_server", _server),
                   help="send every WHOIS question to this server (a mirror, or a test server)")
    g.add_argument("--dns-server", metavar="ADDR[:PORT]", type=_server, default=_from_env("dns_server", _server),
                   help="send every DNS question of the tool to this server")
    g.add_argument("--lookup-concurrency", type=_number(int, "at_least_1"), default=32, metavar="N",
                   help="lookups in flight at once (default: 32)")
    g.add_argument("--timeout", type=_number(float, "seconds"), default=10.0, metavar="SECONDS",
                   help="timeout of one network request (default: 10)")
    g.add_argument("--retries", type=_number(int, "at_least_0"), default=4, metavar="N",
                   help="retries of a failed request (429, 5xx, timeouts) before giving up (default: 4)")
    g.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help=f"cache folder (default: {default_cache_dir()})")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    g.add_argument("--offline", action="store_true",
                   help="no network: answers come from the cache and --registry-answers only; the rest is unknown")
    g.add_argument("--registry-answers", action="append", type=Path, default=[], metavar="FILE",
                   help="registrations.csv of an earlier run, used as recorded answers; repeatable")

    d = p.add_argument_group("detectors")
    d.add_argument("--window", default="7d", metavar="DURATION",
                   help="a revocation this soon after notBefore is early (default: 7d; units d, h, m)")
    d.add_argument("--reissue-window", default="2d", metavar="DURATION",
                   help="an early-revoked certificate pairs with its replacement when that was issued after it "
                        "and no later than this after its revocation: while it was still valid, or soon after "
                        "(default: 2d)")
    d.add_argument("--lint", action="store_true",
                   help="lint every certificate with pkilint's CA/Browser Forum TLS linter (type detected per "
                        "certificate, one process per core, results kept in the store): findings lint:<code>")

    e = p.add_argument_group("scale")
    e.add_argument("--engine", choices=("pandas", "dask"),
                   default=_from_env("engine", _choice(("pandas", "dask")), "pandas"),
                   help="run the detectors with pandas on this machine, or on Dask (default: pandas)")
    e.add_argument("--scheduler", metavar="ADDRESS", default=_from_env("scheduler", str),
                   help="with --engine dask: an existing Dask scheduler (default: a local cluster)")
    e.add_argument("--workers", type=_number(int, "at_least_0"), default=0, metavar="N",
                   help="processes that parse certificates (default: one per core)")

    o = p.add_argument_group("output")
    o.add_argument("--plots", action="store_true",
                   help="also write PNG plots (issuance timeline, revocation latency, findings per month)")
    o.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr, no progress bars")
    o.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr (-vv for debug)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: only when stderr is a terminal)")


def _date(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD or an ISO 8601 time)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _range(text: str) -> tuple[datetime | None, datetime | None]:
    if not text:
        return (None, None)
    start, _, end = text.partition("..")
    try:
        return (_date(start) if start else None, _date(end) if end else None)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--for-not-after: {exc}") from None


def _add_test_websites_parser(sub: argparse._SubParsersAction) -> None:
    def positive(kind: type) -> object:
        def parse(text: str) -> object:
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
            if not 0 < value < float("inf"):  # NaN fails this too
                raise argparse.ArgumentTypeError(f"must be a finite number more than 0: {text!r}")
            return value
        return parse

    p = sub.add_parser(
        "test-websites",
        help="check the CA's CCADB test websites over TLS, every address of every name",
        description="Connect to each address of each CCADB test website and check that the valid site serves an "
                    "unexpired, unrevoked certificate chaining to its root, the expired site an expired one and "
                    "the revoked site a revoked one.",
        epilog="Each row of test-websites.csv has a status: ok, finding, or unknown (a lookup or connection that "
               "timed out or had no route; never a finding). Exit status: 0 when every address was checked, "
               "3 when some rows are unknown (or none could be reached at all: the network looks unavailable), "
               "1 on failure, 2 on a usage error (e.g. a --ca-owner that is not in the file).",
    )
    p.add_argument("--ccadb", type=Path, required=True, metavar="FILE",
                   help="Mozilla's IncludedCACertificateWithPEMReport or CCADB's AllCertificateRecords CSV")
    p.add_argument("--ca-owner", metavar="NAME", help="only this CA owner's roots (case-insensitive)")
    p.add_argument("--dns-server", metavar="ADDR[:PORT]", type=_server, help="send every DNS question to this server")
    p.add_argument("--timeout", type=positive(float), default=10.0, metavar="SECONDS",
                   help="DNS, connect and read timeout (default: 10)")
    p.add_argument("--concurrency", type=positive(int), default=16, metavar="N",
                   help="names resolved and addresses connected to at once (default: 16)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for test-websites.csv and .xlsx")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: only when stderr is a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and partial results on stderr, no bars")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")


def _test_websites(args: argparse.Namespace) -> int:
    from scanner.testsites.checks import OFFLINE, UnknownOwner, run_test_websites

    if not args.ccadb.is_file():
        print(f"ctscan: error: --ccadb: no such file: {args.ccadb}", file=sys.stderr)
        return 2
    try:
        run = run_test_websites(args.ccadb, args.out, ca_owner=args.ca_owner, dns_server=args.dns_server,
                                timeout=args.timeout, workers=args.concurrency,
                                progress=False if args.quiet else args.progress)
    except UnknownOwner as exc:
        print(f"ctscan: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger(__name__).debug("test-websites failed", exc_info=True)
        print(f"ctscan: error: {exc}", file=sys.stderr)
        return 1
    frame = run.frame
    if run.offline:
        print(f"ctscan: {OFFLINE}", file=sys.stderr)
    elif run.unknown:
        why = ", ".join(f"{n} {reason}" for reason, n in run.unknown.most_common())
        print(f"ctscan: partial: {sum(run.unknown.values())} of {len(frame)} rows unknown ({why}); "
              f"see the status and evidence columns", file=sys.stderr)
    if not args.quiet:
        counts = frame["status"].value_counts()
        print(f"ctscan: {len(frame)} site addresses: {counts.get('ok', 0)} ok, {counts.get('finding', 0)} with "
              f"findings, {counts.get('unknown', 0)} unknown; reports in {args.out}", file=sys.stderr)
    return 0 if run.complete else 3


WATCH_EPILOG = """\
Each round writes its reports into a dated folder under --out (UTC, e.g. out/2026-12-01T14-05-00Z/), points
out/latest at it, writes diff.csv, diff.xlsx and diff.md against the previous round, and alerts.json. Each new
(certificate, finding code) pair is alerted once per channel; the pairs are kept in the store (--store), and an
alert that could not be delivered is sent again next round. By default every finding of severity high and every
early_revocation alerts. Exit status: as for scan; 3 also when an alert could not be delivered.
"""


def _add_watch_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="scan in rounds (--once for cron, --every for a loop), diff each round, alert on new findings",
        description="Scan incrementally in rounds, each into a dated folder with the diff against the previous "
                    "round, and send each new finding once to the alert channels. Takes every flag of scan.",
        epilog=WATCH_EPILOG + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="one round, then exit (for cron or a systemd timer)")
    when.add_argument("--every", type=_watch_duration, metavar="DURATION",
                      help="a round, then sleep DURATION (e.g. 15m, 6h, 1d), until Ctrl-C or SIGTERM "
                           "(which end after the current round)")
    a = p.add_argument_group("alerts")
    a.add_argument("--alert-exec", action="append", default=[], metavar="CMD",
                   help="run CMD for each round with new alerts: the alert JSON on stdin, CTSCAN_ALERT_ID, "
                        "CTSCAN_ALERT_COUNT, CTSCAN_ROUND and CTSCAN_REPORT_DIR in the environment; repeatable")
    a.add_argument("--alert-webhook", action="append", type=_http_url, default=[], metavar="URL",
                   help="POST the alert JSON to URL (retried, with an Idempotency-Key per delivery); repeatable")
    a.add_argument("--alert-email", action="append", default=[], metavar="ADDR",
                   help="mail the new findings, diff.md and suspects.csv to ADDR (needs --smtp); repeatable")
    a.add_argument("--smtp", type=_smtp, default=_from_env("smtp", _smtp), metavar="[smtps://]HOST[:PORT]",
                   help="SMTP server for --alert-email: port 25 by default, STARTTLS when offered; smtps://HOST "
                        "(port 465 by default) or port 465 for implicit TLS; the server's certificate verified "
                        "against the system's CAs or SSL_CERT_FILE; CTSCAN_SMTP_USER, CTSCAN_SMTP_PASSWORD, "
                        "CTSCAN_SMTP_FROM from the environment")
    a.add_argument("--alert-on", default=None, metavar="CODES",
                   help="alert only on these finding codes (comma-separated; lint:<pkilint code>, or lint:* "
                        "for every lint finding)")
    a.add_argument("--min-severity", choices=("info", "low", "medium", "high"), default=None,
                   help="alert only on findings at least this severe (default without --alert-on: high, "
                        "plus every early_revocation)")
    _add_scan_arguments(p)


def _watch_duration(text: str) -> timedelta:
    try:
        duration = parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if duration.total_seconds() <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration, not {text!r}")
    return duration


def _watch_options(args: argparse.Namespace) -> WatchOptions:
    """The WatchOptions of parsed `watch` flags (ConfigError on a bad value)."""
    from scanner.control.alerts import AlertPolicy, parse_codes
    from scanner.control.watch import WatchOptions

    if args.alert_email and not args.smtp:
        raise ConfigError("--alert-email needs --smtp HOST[:PORT]")
    codes = parse_codes(args.alert_on) if args.alert_on is not None else frozenset()
    return WatchOptions(every=args.every, policy=AlertPolicy(codes, args.min_severity),
                        alert_exec=tuple(args.alert_exec), alert_webhooks=tuple(args.alert_webhook),
                        alert_emails=tuple(args.alert_email), smtp=args.smtp)


def _watch(config: Config, options: WatchOptions, quiet: bool) -> int:
    from scanner.control.watch import RoundResult, watch

    def said(result: RoundResult) -> None:
        alerts = result.alerts
        if not quiet:
            print(f"ctscan: round {result.folder.name}: {result.summary['certificates']} certificates, "
                  f"{result.summary['suspects']} suspects, {sum(alerts.get('new_pairs', {}).values())} new "
                  f"alert(s), {sum(alerts.get('delivered_pairs', {}).values())} delivered; reports in "
                  f"{result.folder}", file=sys.stderr)
        if result.partial_reasons:  # said even with -q, as for scan
            print("ctscan: partial: " + "; ".join(result.partial_reasons[:5]), file=sys.stderr)

    try:
        return watch(config, options, on_round=said)
    except KeyboardInterrupt:
        print("ctscan: interrupted; alerts not yet delivered stay pending for the next round", file=sys.stderr)
        return 1
    except Exception as exc:
        logging.getLogger(__name__).debug("watch failed", exc_info=True)
        print(f"ctscan: error: {exc}", file=sys.stderr)
        return 1


def _add_diff_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff",
        help="what changed between two scans: new suspects, signals added or removed, new revocations, rates",
        description="Compare two report folders of `ctscan scan` (any sources) by certificate and finding code, "
                    "from their Parquet tables: new suspects, suspects no longer suspect and why, signals added or "
                    "removed, certificates new to the selection, revocations new since the old scan with their "
                    "latency, and both scans' rates side by side.",
        epilog="Writes diff.csv (one row per change), diff.xlsx (a sheet per kind of change, then the rates) and "
               "diff.md (sentences to paste into an incident update). Exit status: 0 done, 1 failure, 2 usage "
               "error (e.g. a folder that is not a scan), 3 done but either scan was partial.",
    )
    p.add_argument("old", type=Path, metavar="OLD_DIR", help="the earlier scan's report folder")
    p.add_argument("new", type=Path, metavar="NEW_DIR", help="the later scan's report folder")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for diff.csv, diff.xlsx, diff.md")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and partial results on stderr")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")


def _diff(args: argparse.Namespace) -> int:
    from scanner.control.diff import NotAScan, diff_scans, write_diff

    try:
        diff = diff_scans(args.old, args.new)
        write_diff(diff, args.out)
    except NotAScan as exc:
        print(f"ctscan: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        logging.getLogger(__name__).debug("diff failed", exc_info=True)
        print(f"ctscan: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        what = ", ".join(f"{n} {kind}" for kind, n in diff.changes["kind"].value_counts().items())
        print(f"ctscan: {what or 'no change'}; diff in {args.out}", file=sys.stderr)
    if diff.partial_reasons:
        print("ctscan: partial: " + "; ".join(diff.partial_reasons), file=sys.stderr)
        return 3
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ctscan argument parser."""
    parser = _Parser(
        prog="ctscan",
        description="Audit what a Certificate Authority issued, using Certificate Transparency.",
    )
    parser.add_argument("--version", action="version", version=f"ctscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_scan_parser(sub)
    _add_test_websites_parser(sub)
    _add_watch_parser(sub)
    _add_diff_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """A Config from parsed `scan` flags (ConfigError on a bad value)."""
    kwargs = {}
    if args.cache is not None:
        kwargs["cache_dir"] = args.cache
    return Config(
        out_dir=args.out,
        source=args.source,
        paths=tuple(args.paths),
        crl_files=tuple(args.crl),
        dsn=args.dsn,
        ca_ids=tuple(args.ca_id),
        ca_names=tuple(args.ca_name),
        since=args.since,
        until=args.until,
        crtsh_url=args.crtsh_url,
        identities=tuple(args.identity),
        orgs=tuple(args.org),
        exclude_expired=args.exclude_expired,
        crtsh_rate=args.crtsh_rate,
        store_path=args.store,
        refresh_days=args.refresh_days,
        refresh_revocations=args.refresh_revocations,
        log_list=args.log_list,
        logs=tuple(args.log),
        log_states=tuple(x.strip() for x in args.logs.split(",") if x.strip()),
        for_not_after=_range(args.for_not_after),
        issuer_certs=tuple(args.issuer_cert),
        log_start=args.start,
        log_end=args.end,
        ct_verify=not args.no_verify,
        ct_resume=not args.restart,
        check_revocation=args.check_revocation,
        ocsp_sample=args.ocsp_sample,
        ocsp_rate=args.ocsp_rate,
        ccadb=args.ccadb,
        max_crl_bytes=args.max_crl_bytes,
        registration=args.registration,
        rdap_bootstrap=args.rdap_bootstrap,
        rdap_rate=args.rdap_rate,
        whois_rate=args.whois_rate,
        whois_server=args.whois_server,
        dns_server=args.dns_server,
        dns_root=args.dns_root,
        zone_files=tuple(args.zone_file),
        registration_dates=args.registration_dates,
        lookup_concurrency=args.lookup_concurrency,
        timeout=args.timeout,
        retries=args.retries,
        use_cache=not args.no_cache,
        offline=args.offline,
        registry_answers=tuple(args.registry_answers),
        revocation_window=parse_duration(args.window),
        reissue_window=parse_duration(args.reissue_window),
        lint=args.lint,
        engine=args.engine,
        scheduler=args.scheduler,
        workers=args.workers,
        plots=args.plots,
        quiet=args.quiet,
        verbose=args.verbose,
        progress=False if args.quiet else args.progress,
        **kwargs,
    )


def _setup_logging(quiet: bool, verbose: int) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="ctscan: %(message)s", stream=sys.stderr, force=True)


def _validate(config: Config, parser: argparse.ArgumentParser) -> None:
    if config.source == "files":
        if not config.paths:
            parser.error("--source files needs at least one PATH")
        missing = [str(p) for p in config.paths if not p.exists()]
        if missing:
            parser.error(f"no such file or directory: {', '.join(missing)}")
    if config.source == "ct" and not (config.logs or config.log_states):
        parser.error("--source ct needs --log NAME_OR_URL or --logs STATES (with --log-list)")
    if config.source == "ct" and not config.issuer_certs:
        parser.error("--source ct needs --issuer-cert PEM: the CA whose entries to keep")
    if config.source == "ct":
        from scanner.sources.ct import CtOptions, LogListError, choose_logs

        try:
            choose_logs(CtOptions.from_config(config))
        except LogListError as exc:
            parser.error(str(exc))
    if config.check_revocation and not config.issuer_certs:
        logging.getLogger(__name__).warning(
            "--check-revocation without --issuer-cert: CRL signatures and OCSP requests need the issuer; "
            "ctscan will try the certificates' caIssuers URLs")
    if config.source == "crtsh-sql" and not (config.ca_ids or config.ca_names):
        parser.error("--source crtsh-sql needs --ca-id or --ca-name")
    if config.source == "crtsh-json" and not (config.identities or config.orgs):
        parser.error("--source crtsh-json needs --identity or --org (crt.sh's JSON cannot list a CA by id)")
    files = {"--crl": config.crl_files, "--registry-answers": config.registry_answers, "--zone-file": config.zone_files,
             "--issuer-cert": config.issuer_certs,
             "--rdap-bootstrap": (config.rdap_bootstrap,) if config.rdap_bootstrap else (),
             "--log-list": (config.log_list,) if config.log_list else (),
             "--ccadb": (config.ccadb,) if config.ccadb else ()}
    for flag, paths in files.items():
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            parser.error(f"{flag}: no such file: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ctscan` command: returns the exit status (usage errors and --help included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        bad_environment = _environment_error(args)
        if bad_environment:
            parser.error(bad_environment)
        _setup_logging(args.quiet, args.verbose)
        if args.command == "test-websites":
            return _test_websites(args)
        if args.command == "diff":
            return _diff(args)
        try:
            config = config_from_args(args)
        except ConfigError as exc:
            parser.error(str(exc))
        _validate(config, parser)
        if args.command == "watch":
            try:
                options = _watch_options(args)
            except ConfigError as exc:
                parser.error(str(exc))
    except SystemExit as exc:  # argparse's way of saying "usage error" (2) or "--help done" (0)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "watch":
        return _watch(config, options, args.quiet)
    from scanner.pipeline import run

    try:
        result = run(config)
    except KeyboardInterrupt:
        print("ctscan: interrupted; cached lookups are kept, rerun to resume", file=sys.stderr)
        return 1
    except Exception as exc:  # one clear line for the user; details with -v
        logging.getLogger(__name__).debug("scan failed", exc_info=True)
        print(f"ctscan: error: {exc}", file=sys.stderr)
        return 1
    s = result.summary
    if not args.quiet:
        print(
            f"ctscan: {s['certificates']} certificates ({s['errors']} errors), {s['suspects']} suspects; "
            f"reports in {config.out_dir}",
            file=sys.stderr,
        )
    if s.get("partial_reasons"):
        # Said even with -q: automation must not take a partial audit for a complete one.
        reasons = s["partial_reasons"]
        print(f"ctscan: partial: the reports cover only part of the selection ({len(reasons)} reason(s), also in "
              f"summary.json): " + "; ".join(reasons[:5]) + ("; ..." if len(reasons) > 5 else ""), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
