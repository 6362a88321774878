"""Run `ctscan` in a fresh process and measure it: what the end-to-end benchmarks share."""

from __future__ import annotations

import subprocess
import sys
import time

# Runs one command and prints its exit status and peak RSS (the largest of it and its waited-for children, KiB).
_MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
            "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def measured(args: list[str]) -> tuple[float, float]:
    """Run `ctscan ARGS` in a fresh process: (wall seconds, peak RSS MiB of its largest process).

    Exit 0 (done) and 3 (done but partial) count as finished; anything else stops the benchmark.
    """
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "scanner.cli", *args],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    rc, rss = proc.stdout.split()[-2:]
    if int(rc) not in (0, 3):
        raise SystemExit(f"ctscan {args[0]} failed ({rc}): {proc.stderr[-2000:]}")
    return wall, int(rss) / 1024
