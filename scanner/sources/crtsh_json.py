"""Source: crt.sh's web JSON interface (Identity / O= searches), then each certificate's DER via `?d=ID`.

crt.sh tolerates a few requests a minute, caps a search at 10,000 rows, and under load answers 502s,
HTML pages and truncated bodies. Requests are rate-limited per host and retried with backoff
(Retry-After honoured); what still fails becomes an error that says to use --source crtsh-sql.
Certificates already in the local store are never downloaded again, and each search's answer is kept
there too: a rerun that cannot search (offline once the cached answer has expired, or crt.sh down)
still reports what the search found before, from the store.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

from scanner.core import net
from scanner.core.bounded import response_json
from scanner.core.cache import Cache
from scanner.core.config import Config
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.store import CertStore, opened_store

log = logging.getLogger(__name__)

SOURCE = "crtsh-json"
# crt.sh's c_resultLimit: its inner query stops at this many (certificate, identity) rows, which are then
# grouped one row per certificate with result_count = how many of them it took; so a cut-short search
# answers fewer rows than this, and its result_counts add up to it (fnc/web_apis.fnc).
RESULT_CAP = 10_000
TIMEOUT_HINT = "statement timeout"  # what crt.sh's error page says when its query ran out of time
CACHE_NAMESPACE = "crtsh-json"
CACHE_TTL = timedelta(hours=6)
ISSUER_NOT_FOUND = -1
_MAX_ID = 2**63 - 1  # crt.sh ids are PostgreSQL bigints; a larger one (a broken answer) fits no table or store
ADVICE = "retry later or use --source crtsh-sql"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class CrtshJsonOptions:
    """What a crt.sh JSON read needs: what to search for, which CAs to keep, and how gently to ask."""

    identities: tuple[str, ...] = ()  # crt.sh Identity (q=) searches
    orgs: tuple[str, ...] = ()  # crt.sh O= searches
    ca_ids: tuple[int, ...] = ()  # keep only these issuers; () = every issuer the searches return
    url: str = Config.crtsh_url
    exclude_expired: bool = False
    rate: float = Config.crtsh_rate  # requests per MINUTE (crt.sh tolerates a few); 0 = unlimited
    offline: bool = False  # the cache and the store only: nothing goes to crt.sh
    timeout: float = Config.timeout  # seconds per request
    retries: int = Config.retries  # attempts after the first for 429s, 5xx, HTML and truncated answers
    cache_dir: Path | None = None  # where search answers are kept for 6 hours; None = not kept

    def __post_init__(self) -> None:
        # A notebook passes lists; a search's key and the CA filter want fixed sequences.
        for name in ("identities", "orgs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "ca_ids", tuple(int(i) for i in self.ca_ids))

    @classmethod
    def from_config(cls, config: Config) -> CrtshJsonOptions:
        """The options a scan's Config gives (--identity, --org, --ca-id, --crtsh-url, --crtsh-rate, ...)."""
        return cls(identities=config.identities, orgs=config.orgs, ca_ids=config.ca_ids, url=config.crtsh_url,
                   exclude_expired=config.exclude_expired, rate=config.crtsh_rate, offline=config.offline,
                   timeout=config.timeout, retries=config.retries,
                   cache_dir=config.cache_dir if config.use_cache else None)


class _BadBody(Exception):
    """An answer that is neither retryable nor usable."""


def looks_like_html(content_type: str, body: bytes | str) -> bool:
    """True when an answer is an HTML page (crt.sh's error pages come with status 200 or 502)."""
    head = (body[:512].decode("latin-1") if isinstance(body, bytes) else body[:512]).lstrip().lower()
    return "text/html" in content_type.lower() or head.startswith(("<!doctype", "<html", "<head", "<body"))


def crtsh_time(value: Any) -> datetime | None:
    """crt.sh's '2024-03-10T20:13:50.549' (UTC, no zone) -> aware datetime; None for null or junk."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def decode_download(body: bytes) -> bytes:
    """The DER of a `?d=` answer: crt.sh sends PEM (application/pkix-cert); a DER body is accepted too."""
    if b"-----BEGIN" in body[:200]:
        match = _PEM_CERT.search(body)
        if match is None:
            raise _BadBody("PEM answer holds no CERTIFICATE block")
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", match.group(1)), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _BadBody(f"PEM answer is not valid base64: {exc}") from exc
    if body[:1] == b"\x30":
        return body
    raise _BadBody(f"answer is neither PEM nor DER (starts {body[:40]!r})")


def identity_rows(rows: list[Any]) -> int:
    """How many of crt.sh's capped (certificate, identity) rows an answer holds: its result_counts, 1 where none."""
    total = 0
    for row in rows:
        count = row.get("result_count") if isinstance(row, dict) else None
        usable = isinstance(count, int) and not isinstance(count, bool) and 0 < count <= RESULT_CAP
        total += count if usable else 1  # type: ignore[operator]
    return total


def _fetch_failure(kind: str, url: str, exc: net.FetchError) -> str:
    if TIMEOUT_HINT in exc.reason:
        return (f"crt.sh's database timed out on {url} ({exc.status}, statement timeout) after {exc.attempts} "
                f"attempt(s); narrow the search, add --exclude-expired, or use --source crtsh-sql")
    if exc.body and looks_like_html("", exc.body):
        return f"crt.sh answered HTML instead of {kind} ({exc.status}) for {url}; {ADVICE} (after {exc.attempts} attempt(s))"
    if "truncated" in exc.reason:
        return f"crt.sh answered truncated or invalid JSON for {url} ({exc.reason}); {ADVICE} (after {exc.attempts} attempt(s))"
    return f"{exc}; {ADVICE}"


class _Client:
    """The HTTP side of one crtsh-json run: session, per-host rate limit, retries, optional page cache."""

    def __init__(self, options: CrtshJsonOptions, base_delay: float, session: requests.Session | None):
        self.options = options
        self.base = options.url.rstrip("/") + "/"
        self.session = session or net.new_session()
        self.limiter = net.HostRateLimits(options.rate / 60.0).for_url(self.base)  # the rate is per MINUTE
        self.base_delay = base_delay
        self.cache = Cache(options.cache_dir) if options.cache_dir is not None else None

    def get(self, params: dict[str, str], validate: Any) -> requests.Response:
        return net.get_with_retries(
            self.session, self.base, params=params, limiter=self.limiter, retries=self.options.retries,
            timeout=self.options.timeout, validate=validate, base_delay=self.base_delay, bound="crtsh_json",
        )

    def search(self, params: dict[str, str]) -> list[Any]:
        """One JSON search; raises net.FetchError (with the reason) when crt.sh never answers usable JSON."""
        key = requests.Request("GET", self.base, params=params).prepare().url or self.base
        if self.cache is not None:
            cached = self.cache.get(CACHE_NAMESPACE, key)
            if isinstance(cached, list):
                return cached
        if self.options.offline:
            raise net.FetchError(key, "offline and no cached answer (run once without --offline)")
        parsed: list[Any] = []

        def validate(resp: requests.Response) -> None:
            # crt.sh's error page follows whatever it had written, so the message can be far from the start
            timed_out = TIMEOUT_HINT.encode() in resp.content
            if looks_like_html(resp.headers.get("Content-Type", ""), resp.content) or timed_out:
                raise net.RetryableError(f"HTML instead of JSON{f' ({TIMEOUT_HINT})' if timed_out else ''}",
                                         status=resp.status_code, body=resp.text[:200])
            try:
                data = response_json(resp, "crt.sh answer")
            except ValueError as exc:
                raise net.RetryableError(f"truncated or invalid JSON: {exc}", status=resp.status_code,
                                         body=resp.text[-120:]) from exc
            if not isinstance(data, list):
                raise net.RetryableError("JSON is not a list of certificates", status=resp.status_code,
                                         body=resp.text[:200])
            parsed[:] = data

        self.get(params, validate)
        if self.cache is not None:
            self.cache.put(CACHE_NAMESPACE, key, parsed, ttl=CACHE_TTL)
        return parsed

    def download(self, crtsh_id: int) -> bytes:
        """The DER of one crt.sh certificate (`?d=ID`)."""
        def validate(resp: requests.Response) -> None:
            if looks_like_html(resp.headers.get("Content-Type", ""), resp.content):
                raise net.RetryableError("HTML instead of a certificate", status=resp.status_code,
                                         body=resp.text[:200])

        return decode_download(self.get({"d": str(crtsh_id)}, validate).content)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _searches(options: CrtshJsonOptions) -> list[tuple[str, str]]:
    return [("q", v) for v in options.identities] + [("O", v) for v in options.orgs]


def _row_facts(row: Any) -> tuple[int, dict[str, Any]]:
    """(crt.sh id, extra facts) of one JSON row; ValueError when the row has no usable id."""
    if not isinstance(row, dict):
        raise ValueError(f"row is not an object: {str(row)[:80]!r}")  # noqa: TRY004  (one bad-row error type)
    raw_id = row.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or not str(raw_id).isdigit():
        raise ValueError(f"row has no numeric id: {str(row)[:120]!r}")
    crtsh_id = int(raw_id)
    if crtsh_id > _MAX_ID:
        raise ValueError(f"row id is out of range: {str(raw_id)[:40]}")
    ca_id = row.get("issuer_ca_id")
    extra: dict[str, Any] = {"crtsh_id": crtsh_id}
    # -1 is crt.sh's "Issuer Not Found", not a CA: the certificate is kept without an issuer id.
    if isinstance(ca_id, int) and not isinstance(ca_id, bool) and ca_id != ISSUER_NOT_FOUND and abs(ca_id) <= _MAX_ID:
        extra["issuer_ca_id"] = ca_id
    first_seen = crtsh_time(row.get("entry_timestamp"))
    if first_seen is not None:
        extra["first_seen"] = first_seen
    return crtsh_id, extra


def read(
    options: CrtshJsonOptions,
    *,
    store: CertStore | Path | str | None = None,
    base_delay: float = 2.0,
    session: requests.Session | None = None,
) -> Iterator[SourceItem]:
    """Yield the certificates crt.sh's JSON searches find for options.identities / options.orgs, of options.ca_ids.

    store keeps the downloaded certificates and each search's answer for later reads: an open
    CertStore (left open), a store file, or None for one in memory that lasts this read only.
    """
    searches = _searches(options)
    if not searches:
        yield SourceError(SOURCE, options.url, "--source crtsh-json needs --identity or --org to search for")
        yield SourceNotice("crt.sh JSON fetch did not run: nothing to search for", partial=True)
        return
    wanted_cas = set(options.ca_ids)
    if not wanted_cas:
        yield SourceNotice("no --ca-id given: keeping certificates of every issuer the crt.sh searches return")
    client = _Client(options, base_delay, session)
    try:
        with opened_store(store) as certs:
            found: dict[int, dict[str, Any]] = {}  # crt.sh id -> facts, deduplicated across searches
            for param, value in searches:
                yield from _run_search(client, certs, param, value, wanted_cas, found)
            yield from _certificates(client, certs, found)
    finally:
        client.close()


def search_key(param: str, value: str, exclude_expired: bool) -> str:
    """The store's name of one search: what was asked, not where or when."""
    return json.dumps({"source": SOURCE, "param": param, "value": value, "exclude_expired": exclude_expired},
                      sort_keys=True)


def _capped_key(key: str) -> str:
    """The store's mark that crt.sh once capped the answer to this search."""
    return json.dumps({"capped": json.loads(key)}, sort_keys=True)


def _run_search(client: _Client, store: CertStore, param: str, value: str, wanted_cas: set[int],
                found: dict[int, dict[str, Any]]) -> Iterator[SourceItem]:
    params = {param: value, "output": "json"}
    if client.options.exclude_expired:
        params["exclude"] = "expired"
    where = f"{client.base}?{param}={value}"
    key = search_key(param, value, bool(client.options.exclude_expired))
    try:
        rows = client.search(params)
    except net.FetchError as exc:
        earlier = _earlier_answer(store, key, wanted_cas, found)
        if client.options.offline and earlier:
            capped = bool(store.searched_ids(_capped_key(key)))
            yield SourceNotice(f"offline: crt.sh search {param}={value!r} answered from the store ({earlier} "
                               "certificate(s) an earlier run found)"
                               + (f"; crt.sh capped that answer at {RESULT_CAP} identity rows, so certificates "
                                  "are missing; use --source crtsh-sql --ca-id N for the complete list"
                                  if capped else ""), partial=capped)
            return
        message = _fetch_failure("JSON", where, exc)
        yield SourceError(SOURCE, where, message)
        yield SourceNotice(f"crt.sh search {param}={value!r} failed: {message}"
                           + (f"; {earlier} certificate(s) an earlier run found are reported from the store"
                              if earlier else ""), partial=True)
        return
    capped = identity_rows(rows) >= RESULT_CAP
    if capped:
        yield SourceNotice(
            f"crt.sh capped the search {param}={value!r} at {RESULT_CAP} identity rows ({len(rows)} "
            "certificate(s) answered), so certificates are missing; "
            "use --source crtsh-sql --ca-id N for the complete list (or a narrower --identity/--org)",
            partial=True,
        )
    kept = 0
    ids: list[int] = []
    for row in rows:
        try:
            crtsh_id, extra = _row_facts(row)
        except ValueError as exc:
            yield SourceError(SOURCE, where, f"unusable crt.sh JSON row: {exc}")
            continue
        ids.append(crtsh_id)
        ca_id = row.get("issuer_ca_id")
        if wanted_cas and ca_id not in wanted_cas:
            continue
        if crtsh_id not in found:
            found[crtsh_id] = extra
            kept += 1
    store.remember_search(key, ids)
    if capped:  # kept for good: an answer read back from the store must stay as partial as it was
        store.remember_search(_capped_key(key), [RESULT_CAP])
    log.info("crt.sh search %s=%r: %d row(s), %d new certificate(s) of the chosen CAs", param, value, len(rows), kept)


def _earlier_answer(store: CertStore, key: str, wanted_cas: set[int], found: dict[int, dict[str, Any]]) -> int:
    """Add to found the stored certificates an earlier run's answer to this search listed; returns how many."""
    ids = store.searched_ids(key)
    if not ids:
        return 0  # iter_raw without ids would read the whole store
    count = 0
    for raw in store.iter_raw(crtsh_ids=ids):
        crtsh_id = raw.extra["crtsh_id"]
        if wanted_cas and raw.extra.get("issuer_ca_id") not in wanted_cas:
            continue
        count += 1
        found.setdefault(crtsh_id, {k: raw.extra[k] for k in ("crtsh_id", "issuer_ca_id", "first_seen")
                                    if k in raw.extra})
    return count


def _certificates(client: _Client, store: CertStore, found: dict[int, dict[str, Any]]) -> Iterator[SourceItem]:
    known = store.known_crtsh_ids(found)
    for raw in store.iter_raw(crtsh_ids=sorted(known)):
        # the store's facts first, the fresh search's first_seen/issuer over them when it has them
        yield RawCert(raw.der, raw.source, raw.provenance, {**raw.extra, **found[raw.extra["crtsh_id"]]})
    missing = [i for i in found if i not in known]
    log.info("crt.sh: %d certificate(s) from the store, %d to download", len(known), len(missing))
    failed = 0
    for crtsh_id in missing:
        where = f"crtsh:{crtsh_id}"
        try:
            if client.options.offline:
                raise _BadBody("offline and not in the local store; run without --offline")
            der = client.download(crtsh_id)
        except net.FetchError as exc:
            failed += 1
            yield SourceError(SOURCE, where, _fetch_failure("a certificate", f"{client.base}?d={crtsh_id}", exc))
            continue
        except _BadBody as exc:
            failed += 1
            yield SourceError(SOURCE, where, f"crt.sh ?d={crtsh_id}: {exc}")
            continue
        raw = RawCert(der, SOURCE, where, dict(found[crtsh_id]))
        store.put_many([raw])  # stored before it is handed on: a killed run never downloads it again
        yield raw
    if failed:
        yield SourceNotice(f"{failed} of {len(found)} crt.sh certificate(s) could not be downloaded "
                           "(see errors.csv); rerun to fetch only those", partial=True)
