"""--zone-file over a generated CZDS-layout gzip zone against a scan's names: names/s read and peak RSS.

Generates (once, kept in --dir) a .com-like zone of --zone-names delegated names, two NS lines each
as CZDS publishes them, gzip-compressed; then, each in a fresh child process so its peak RSS is its own:
  (a) the baseline: gunzip and split the file into lines, nothing else (the least any reader does)
  (b) scanner.enrich.zonefile.read_zone_files with --scan-names wanted names (97% of them in the zone)
and prints names/s, lines/s, peak RSS and the ratio (b)/(a) of the speeds.

Run: python benchmarks/bench_zonefile.py [--zone-names 10000000] [--scan-names 60000]
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import os
import resource
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def name_of(i: int) -> str:
    return f"zone-name-{i:08d}.com"


def generate(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # --dir may name a folder not made yet
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=6) as out:
        out.write(b"com.\t900\tin\tsoa\ta.gtld-servers.net.\tnstld.verisign-grs.com.\t1764590400\t1800\t900\t"
                  b"604800\t86400\ncom.\t172800\tin\tns\ta.gtld-servers.net.\n")
        step = 100_000
        for start in range(0, count, step):
            lines = []
            for i in range(start, min(count, start + step)):
                owner = name_of(i).encode() + b"."
                host = b"ns%d.dns-host%d.net.\n" % (1, i % 5000)
                lines.append(owner + b"\t172800\tin\tns\t" + host)
                lines.append(owner + b"\t172800\tin\tns\t" + host.replace(b"ns1.", b"ns2.", 1))
            out.write(b"".join(lines))
    tmp.replace(path)


def _baseline(path: str, queue: mp.Queue) -> None:
    start = time.monotonic()
    lines = 0
    inflate = zlib.decompressobj(wbits=31)
    rest = b""
    with open(path, "rb") as raw:
        while chunk := raw.read(512 << 10):
            data = rest + inflate.decompress(chunk)
            parts = data.split(b"\n")
            rest = parts.pop()
            lines += len(parts)
    queue.put((time.monotonic() - start, lines, 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def _ours(path: str, wanted: list[str], queue: mp.Queue) -> None:
    from scanner.enrich.zonefile import read_zone_files

    names = set(wanted)
    del wanted
    start = time.monotonic()
    read = read_zone_files([Path(path)], names)
    queue.put((time.monotonic() - start, read.lines, len(read.hits), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def in_child(target, *args) -> tuple[float, int, int, int]:  # noqa: ANN001
    queue: mp.Queue = mp.Queue()
    proc = mp.get_context("fork").Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zone-names", type=int, default=10_000_000)
    parser.add_argument("--scan-names", type=int, default=60_000)
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    args = parser.parse_args()

    zone = args.dir / f"ctscan-bench-com-{args.zone_names}.zone.gz"
    if not zone.exists():
        started = time.monotonic()
        generate(zone, args.zone_names)
        print(f"generated {zone} ({zone.stat().st_size / 2**20:,.0f} MiB) in {time.monotonic() - started:.0f}s")
    in_zone = round(args.scan_names * 0.97)
    stride = max(1, args.zone_names // max(in_zone, 1))
    wanted = [name_of(i * stride) for i in range(in_zone)] + [f"not-in-zone-{i}.com" for i in range(args.scan_names - in_zone)]

    wall_a, lines_a, _, rss_a = in_child(_baseline, str(zone))
    print(f"(a) gunzip + split only: {lines_a:,} lines in {wall_a:.1f}s = {lines_a / wall_a:,.0f} lines/s, "
          f"{args.zone_names / wall_a:,.0f} zone names/s; peak RSS {rss_a / 1024:,.0f} MiB")
    wall_b, lines_b, found, rss_b = in_child(_ours, str(zone), wanted)
    print(f"(b) read_zone_files, {args.scan_names:,} scan names: {lines_b:,} lines in {wall_b:.1f}s = "
          f"{args.zone_names / wall_b:,.0f} zone names/s ({lines_b / wall_b:,.0f} lines/s); found {found:,} "
          f"of {in_zone:,} in the zone; peak RSS {rss_b / 1024:,.0f} MiB")
    print(f"ratio (b)/(a) speed: {wall_a / wall_b:.2f}")
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if found == in_zone else 1


if __name__ == "__main__":
    raise SystemExit(main())
