"""Network plumbing shared by every client: per-host rate limits, Retry-After, retries with backoff."""

from __future__ import annotations

import asyncio
import collections
import email.utils
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import tenacity

from scanner.core.bounded import BoundedAdapter, BoundExceeded, Limit, bounded_request, limit

T = TypeVar("T")

USER_AGENT = "ctscan/0.1 (+certificate transparency audit tool)"
#: HTTP statuses worth asking again: rate limited, or the server (or its gateway) failing.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
MAX_RETRY_AFTER = 300.0  # a server asking for more than this is treated as down


class FetchError(Exception):
    """A request that failed for good: names the URL, the status, a short body and the attempts."""

    def __init__(self, url: str, reason: str, status: int | None = None, body: str = "", attempts: int = 1):
        self.url, self.reason, self.status, self.body, self.attempts = url, reason, status, body, attempts
        where = f"{url} answered {status}" if status is not None else f"{url}: {reason}"
        extra = f" ({reason})" if status is not None and reason else ""
        snippet = f"; body starts {body[:120]!r}" if body else ""
        super().__init__(f"{where}{extra}{snippet}; after {attempts} attempt(s)")


class RetryableError(Exception):
    """A failure worth retrying; retry_after (seconds) is the server's own wish when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.retry_after, self.status, self.body = retry_after, status, body


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date -> seconds to wait (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """'HOST[:PORT]' or '[v6]:PORT' -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter for the given attempt (1-based)."""
    return random.uniform(0, min(cap, base * (2 ** (attempt - 1))))


class RateLimiter:
    """At most `rate` acquisitions per second, spaced evenly; rate 0 means no limit. Thread- and task-safe."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def acquire(self) -> None:
        """Block until this caller may send."""
        if self.interval:
            wait = self._reserve()
            if wait > 0:
                time.sleep(wait)

    async def acquire_async(self) -> None:
        """Await until this task may send."""
        if self.interval:
            wait = self._reserve()
            if wait > 0:
                await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Push every later acquisition back (a 429 with Retry-After slows the whole host)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


class Gate:
    """At most `limit` holders at once, shared by coroutines on one event loop.

    asyncio.Semaphore costs a coroutine per acquire even when there is room; a lookup of a large
    scan passes through here once per name, so try_enter() takes a free slot synchronously and only
    a full gate makes the caller wait (in FIFO order). Also usable as `async with gate:`.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a gate needs at least one slot, not {limit}")
        self._free = limit
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody is queued for it; never waits."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def enter(self) -> None:
        """Take a slot, waiting for one to be left if the gate is full."""
        if self.try_enter():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # a slot was handed over just as we were cancelled: pass it on
            raise

    def leave(self) -> None:
        """Give a slot back: to the first caller still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> Gate:
        if not self.try_enter():
            await self.enter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.leave()


class HostRateLimits:
    """One RateLimiter per host (scheme://host:port), created on first use."""

    def __init__(self, rate: float):
        self.rate = rate
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> RateLimiter:
        """The limiter of the host this URL points at."""
        parts = urlsplit(url)
        return self.for_host(f"{parts.scheme}://{parts.netloc}")

    def for_host(self, host: str) -> RateLimiter:
        """The limiter for a host key."""
        with self._lock:
            if host not in self._limiters:
                self._limiters[host] = RateLimiter(self.rate)
            return self._limiters[host]


def _wait_for(retry_state: tenacity.RetryCallState, base: float, cap: float) -> float:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER)
    return backoff_delay(retry_state.attempt_number, base, cap)


def _policy(retries: int, base: float, cap: float) -> dict[str, Any]:
    return {"stop": tenacity.stop_after_attempt(retries + 1), "wait": lambda rs: _wait_for(rs, base, cap),
            "retry": tenacity.retry_if_exception_type(RetryableError), "reraise": True}


def retrying(retries: int, base: float = 0.5, cap: float = 30.0) -> tenacity.Retrying:
    """A tenacity policy: retry RetryableError up to `retries` more times, Retry-After honoured."""
    return tenacity.Retrying(**_policy(retries, base, cap))


def async_retrying(retries: int, base: float = 0.5, cap: float = 30.0) -> tenacity.AsyncRetrying:
    """The asyncio twin of `retrying`."""
    return tenacity.AsyncRetrying(**_policy(retries, base, cap))


class GaveUp(RetryableError):
    """Every attempt failed: the last failure's message, then how many attempts were made."""

    def __init__(self, last: RetryableError, attempts: int):
        super().__init__(f"{last} (after {attempts} attempt(s))", last.retry_after, last.status, last.body)
        self.attempts = attempts


# The first attempt of both entry points runs outside tenacity: building a (Async)Retrying costs about
# 80 us (tenacity 9.2, measured) and most calls succeed at once; without it bench_registration's (b)/(a)
# fell from 0.67 to 0.26. A first failure becomes the policy's attempt 1, so tenacity counts the attempts
# and chooses every wait (Retry-After or backoff) exactly as if it had made them all.


def call_with_retries(call: Callable[[int], T], retries: int, base: float = 0.5) -> tuple[T, int]:
    """call(attempt number) until it returns, under the policy -> (result, attempts); GaveUp at the end."""
    try:
        return call(1), 1
    except RetryableError as exc:
        first: RetryableError | None = exc
    attempts = 1
    try:
        for attempt in retrying(retries, base=base):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                attempts += 1
                return call(attempts), attempts
    except RetryableError as exc:
        raise GaveUp(exc, attempts) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def with_retries(ask: Callable[[int], Awaitable[T]], retries: int, base: float) -> tuple[T, int]:
    """The asyncio twin of call_with_retries: await ask(attempt number) until it answers -> (answer, attempts)."""
    try:
        return await ask(1), 1
    except RetryableError as exc:
        first: RetryableError | None = exc
    attempts = 1
    try:
        async for attempt in async_retrying(retries, base=base):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                attempts += 1
                return await ask(attempts), attempts
    except RetryableError as exc:
        raise GaveUp(exc, attempts) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def new_session() -> requests.Session:
    """The requests Session every synchronous client uses (keep-alive, our User-Agent)."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # BoundedAdapter: a request's deadline can cut its connection (bounded.bounded_request)
    adapter = BoundedAdapter(pool_connections=16, pool_maxsize=64, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def request_with_retries(
    session: requests.Session,
    method: str,
    url: str,
    *,
    limiter: RateLimiter | None = None,
    retries: int = 4,
    timeout: float = 10.0,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    ok_statuses: frozenset[int] | None = frozenset({200}),
    validate: Callable[[requests.Response], None] | None = None,
    base_delay: float = 0.5,
    bound: Limit | str = "default",
) -> requests.Response:
    """One HTTP request under the rate limit and the retry policy (429/5xx/timeouts/`validate` raising RetryableError).

    The answer is read within bound (a Limit, or a kind of bounded.LIMITS): past its bytes, its
    decompressed bytes or its deadline, or redirected off http/https, it is a FetchError at once,
    never retried (the same server would send the same thing). A status outside ok_statuses is a
    FetchError at once; ok_statuses None hands every status that is not retried back to the caller
    (an OCSP responder's 404 is itself evidence).
    """
    limits = bound if isinstance(bound, Limit) else limit(bound)
    def once(attempts: int) -> requests.Response:
        if limiter is not None:
            limiter.acquire()
        try:
            resp = bounded_request(session, method, url, bound=limits, timeout=timeout, params=params,
                                   headers=headers, data=data)
        except BoundExceeded as exc:
            raise FetchError(url, str(exc), None, "", attempts) from exc
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:  # a body cut short is worth another try
            raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code in RETRYABLE_STATUSES:
            wait = parse_retry_after(resp.headers.get("Retry-After"))
            if wait is not None and limiter is not None:
                limiter.pause(min(wait, MAX_RETRY_AFTER))
            raise RetryableError(f"HTTP {resp.status_code}", wait, resp.status_code, resp.text[:200])
        if ok_statuses is not None and resp.status_code not in ok_statuses:
            raise FetchError(url, resp.reason or "", resp.status_code, resp.text[:200], attempts)
        if validate is not None:
            validate(resp)
        return resp

    try:
        return call_with_retries(once, retries, base_delay)[0]
    except GaveUp as exc:
        last = exc.__cause__
        raise FetchError(url, str(last), exc.status, exc.body, exc.attempts) from last


def get_with_retries(session: requests.Session, url: str, **options: Any) -> requests.Response:
    """GET under the rate limit and the retry policy: request_with_retries(session, "GET", url, **options)."""
    return request_with_retries(session, "GET", url, **options)
