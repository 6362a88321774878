"""Registration of many registrable domains: delegation check first against RDAP for everything, same RDAP limit.

Starts, each in a child process, a loopback DNS server playing the root and .com (97% of the names
delegated, 3% not: half of those held by the registry on clientHold, half free) and a loopback RDAP
registry that allows --rdap-limit requests a second (429 + Retry-After past it). Then prints:
  (a) RDAP for everything (`--registration rdap`) at the table's default rate (5/s for a registry that
      publishes none): names/s, measured on --baseline-names names and extrapolated to all of them
      (the registry's limit makes it linear; a full run of 60,000 would take 3 hours 20 minutes)
  (b) `--registration auto` (delegation check, then RDAP for the rest) on every name: wall seconds,
      names per method, and how many names the registry holds were called unregistered (must be 0)
  and the ratio (a) / (b) (goal: at least 20).

Run: python benchmarks/bench_delegation.py [--names 60000] [--baseline-names 200]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scanner.core.config import Config
from scanner.enrich.registration import RegistrationService
from tests.loopback.registry_servers import write_bootstrap
from tests.loopback.registry_zones import serve_rdap_in_process, serve_zones_in_process


def lookup(config: Config, names: list[str]) -> tuple[float, object, dict]:
    start = time.monotonic()
    with RegistrationService(config, progress=sys.stderr.isatty()) as service:
        service.submit(names)
        df = service.results()
        summary = service.summary()
    return time.monotonic() - start, df, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=60_000)
    parser.add_argument("--delegated", type=float, default=0.97)
    parser.add_argument("--baseline-names", type=int, default=200)
    parser.add_argument("--rdap-limit", type=float, default=5.0, help="requests per second the registry allows")
    args = parser.parse_args()

    rng = random.Random(17)
    names = [f"subscriber{i:06d}-{rng.randrange(10**6):06d}.com" for i in range(args.names)]
    n_delegated = round(args.names * args.delegated)
    delegated = names[:n_delegated]
    undelegated = names[n_delegated:]
    held = undelegated[::2]  # registered, out of the zone (clientHold): RDAP 200
    rng.shuffle(names)

    dns_proc, dns_port = serve_zones_in_process(tlds=("com",), delegated={n: ["ns1.dns-host.net"] for n in delegated})
    rdap_proc, rdap_port = serve_rdap_in_process(held, rate=args.rdap_limit)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            boot = write_bootstrap(Path(tmp) / "dns.json", {"com": f"http://127.0.0.1:{rdap_port}/"})
            common = {"out_dir": Path(tmp), "rdap_bootstrap": boot, "dns_root": f"127.0.0.1:{dns_port}",
                      "use_cache": False, "timeout": 5.0, "retries": 6}

            sample = names[: args.baseline_names]
            wall_a, df_a, _ = lookup(Config(registration="rdap", **common), sample)
            rate_a = len(sample) / wall_a
            projected_a = args.names / rate_a
            print(f"(a) RDAP for everything: {len(sample):,} names in {wall_a:.1f}s = {rate_a:.2f} names/s; "
                  f"{args.names:,} names would take {projected_a:,.0f}s ({projected_a / 3600:.1f} h)")

            time.sleep(1.5)  # let the registry's bucket refill
            wall_b, df_b, summary = lookup(Config(registration="auto", **common), names)
            status = dict(zip(df_b["domain"], df_b["status"]))
            wrongly_free = sum(1 for n in held if status.get(n) == "unregistered")
            wrongly_held = sum(1 for n in delegated if status.get(n) != "registered")
            print(f"(b) delegation check, then RDAP for the rest: {args.names:,} names in {wall_b:.1f}s "
                  f"({args.names / wall_b:,.0f} names/s)")
            print(f"    by method {summary['by_method']}; by status {summary['by_status']}")
            print(f"    settled by {summary['settled_by']}")
            print(f"    names the registry holds called unregistered: {wrongly_free} (goal 0); "
                  f"delegated names not called registered: {wrongly_held}")
            print(f"ratio (a)/(b): {projected_a / wall_b:.1f}x faster (goal >= 20)")
            print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    finally:
        dns_proc.kill()
        rdap_proc.kill()
    return 0 if wrongly_free == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
