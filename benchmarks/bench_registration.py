"""Registration lookups: RegistrationService against a bare aiohttp client, and cached throughput.

Starts a loopback RDAP server (aiohttp web, separate process) replaying the real Verisign
google.com answer for names starting with "r" and Verisign's empty 404 otherwise, then prints:
  (a) bare aiohttp client, keep-alive, 64 in flight: names/s (the baseline)
  (a') the same client also parsing the JSON of 200 answers (the least any correct RDAP client does)
  (b) RegistrationService, no cache, rdap_rate 0, concurrency 64: names/s and ratio to (a) (target >= 0.8)
  (c) RegistrationService answering from the cache: names/s (target >= 100k/s)

Run: python benchmarks/bench_registration.py [--names 20000] [--cached 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp

from scanner.core.cache import Cache
from scanner.core.config import Config
from scanner.enrich.registration import CACHE_NAMESPACE, CACHE_TTL, RegistrationService

BODY_FILE = REPO / "tests" / "fixtures" / "rdap" / "verisign_google.com_2021-12-17.json"
IN_FLIGHT = 64


def serve(port_queue: mp.Queue) -> None:
    """The loopback RDAP registry (runs in a child process)."""
    from aiohttp import web

    body = BODY_FILE.read_bytes()

    async def handle(request: web.Request) -> web.Response:
        if request.match_info["name"].startswith("r"):
            return web.Response(body=body, content_type="application/rdap+json")
        return web.Response(status=404, content_type="application/rdap+json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{prefix:.*}domain/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


def serve_threading(port_queue: mp.Queue) -> None:
    """The same registry on http.server's ThreadingHTTPServer: the plain Python test server the issue means."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = BODY_FILE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as registries do

        def setup(self) -> None:
            super().setup()
            # headers and body go out in two writes: without this, Nagle + delayed ACK stall 40 ms each
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802
            registered = self.path.rsplit("/", 1)[-1].startswith("r")
            self.send_response(200 if registered else 404)
            self.send_header("Content-Type", "application/rdap+json")
            self.send_header("Content-Length", str(len(body) if registered else 0))
            self.end_headers()
            if registered:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default backlog of 5 drops the client's 64 parallel connects
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def names_for(n: int, tag: str) -> list[str]:
    """Half registered ("r..."), half not, all distinct."""
    return [f"{'r' if i % 2 else 'u'}{tag}{i}.com" for i in range(n)]


async def bare_client(base: str, names: list[str], parse: bool = False) -> float:
    """Baseline: one aiohttp session, keep-alive, IN_FLIGHT requests at a time, bodies read (and parsed)."""
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    headers = {"Accept": "application/rdap+json, application/json"}
    queue = iter(names)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for name in queue:
                async with session.get(f"{base}domain/{name}") as resp:
                    body = await resp.read()
                    if parse and resp.status == 200:
                        json.loads(body)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - start


def service_run(config: Config, names: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    with RegistrationService(config, progress=False) as service:
        service.submit(names)
        df = service.results()
        elapsed = time.perf_counter() - start
        summary = service.summary()
    assert len(df) == len(names), "every submitted name must have a row"
    return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=20000, help="names per uncached run")
    parser.add_argument("--cached", type=int, default=100000, help="names in the cached run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of (a) and (b); best of each"
    )
    parser.add_argument("--server", choices=("aiohttp", "threading"), default="aiohttp",
                        help="the loopback registry: aiohttp web (fast: the client is the bottleneck) or "
                             "http.server's ThreadingHTTPServer (the plain Python test server)")
    args = parser.parse_args()
    print(f"registry server: {args.server}")

    ctx = mp.get_context("spawn")
    port_queue: mp.Queue = ctx.Queue()
    target = serve if args.server == "aiohttp" else serve_threading
    server = ctx.Process(target=target, args=(port_queue,), daemon=True)
    server.start()
    try:
        port = port_queue.get(timeout=30)
        base = f"http://127.0.0.1:{port}/com/v1/"
        tmp = Path(tempfile.mkdtemp(prefix="ctscan-bench-"))
        boot = tmp / "dns.json"
        boot.write_text(f'{{"version":"1.0","publication":"bench","services":[[["com"],["{base}"]]]}}')

        asyncio.run(bare_client(base, names_for(2000, "warm")))  # warm up both sides
        config = Config(
            out_dir=tmp,
            rdap_bootstrap=boot,
            rdap_rate=0,
            lookup_concurrency=IN_FLIGHT,
            use_cache=False,
            cache_dir=tmp / "cache",
            registration="rdap",
        )
        service_run(config, names_for(2000, "warmsvc"))

        bare_times, parse_times, svc_times = [], [], []
        for round_ in range(args.rounds):  # interleaved so drift hits both alike; best of each
            bare_times.append(asyncio.run(bare_client(base, names_for(args.names, f"b{round_}x"))))
            parse_times.append(
                asyncio.run(bare_client(base, names_for(args.names, f"p{round_}x"), parse=True))
            )
            elapsed, summary = service_run(config, names_for(args.names, f"s{round_}x"))
            svc_times.append(elapsed)
        bare_rate = args.names / min(bare_times)
        parse_rate = args.names / min(parse_times)
        svc_rate = args.names / min(svc_times)
        print(f"(a) bare aiohttp client, {IN_FLIGHT} in flight:      {bare_rate:10,.0f} names/s")
        print(f"(a') same, also json.loads of 200 bodies:  {parse_rate:10,.0f} names/s")
        print(
            f"(b) RegistrationService uncached, rate 0: {svc_rate:10,.0f} names/s  "
            f"ratio to (a) = {svc_rate / bare_rate:.2f} (target >= 0.8), to (a') = {svc_rate / parse_rate:.2f}"
        )
        print(f"    last run: {summary['by_status']}")

        cached_config = Config(
            out_dir=tmp, rdap_bootstrap=boot, cache_dir=tmp / "cache", registration="rdap", use_cache=True
        )
        names = names_for(args.cached, "c")
        # One real lookup writes the entry in the service's own layout; every name then reuses it.
        service_run(cached_config, ["rseed.com"])
        with Cache(tmp / "cache") as cache:
            value = cache.get(CACHE_NAMESPACE, "rseed.com")
            assert value is not None, "the seeding lookup was not cached"
            cache.put_many(CACHE_NAMESPACE, {n: value for n in names}, CACHE_TTL["registered"])
            start = time.perf_counter()
            got = cache.get_many(CACHE_NAMESPACE, names)
            raw = time.perf_counter() - start
        assert len(got) == len(names)
        elapsed, summary = service_run(cached_config, names)
        assert summary["cache_hits"] == len(names), summary
        print(
            f"(c) RegistrationService cached:            {len(names) / elapsed:10,.0f} names/s (target >= 100,000)"
        )
        print(f"    Cache.get_many alone:                  {len(names) / raw:10,.0f} names/s")
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
