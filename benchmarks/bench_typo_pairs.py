"""Time one_edit_pairs on 1,000,000 registrable names and check it against brute force on 20,000.

Run:  python benchmarks/bench_typo_pairs.py [--names 1000000] [--subset 20000] [--seed 7]

Prints the index time on all names, the index and brute-force (rapidfuzz cdist, OSA distance,
score_cutoff=1, all cores) times on the subset, their ratio, and whether both found the same pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rapidfuzz import process
from rapidfuzz.distance import OSA

from scanner.enrich.typo_index import one_edit_pairs

# Letter frequencies of English-ish names, so labels look like names rather than noise.
_LETTERS = "etaoinsrhldcumfpgwybvkxjqz"
_WEIGHTS = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.3, 6.1, 6.0, 6.1, 4.0, 4.3, 2.8, 2.8, 2.4, 2.2, 1.9,
                     2.0, 2.4, 2.0, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1])
_SUFFIXES = ["com", "net", "org", "es", "de", "fr", "it", "co.uk", "eu", "info", "cat", "com.es", "io", "nl"]
_SUFFIX_WEIGHTS = np.array([40, 10, 8, 12, 6, 5, 4, 4, 3, 2, 1, 2, 2, 1], dtype=float)


def make_names(count: int, seed: int, typo_share: float = 0.02) -> list[str]:
    """Random registrable names (labels of 5-15 chars) with a share of planted one-edit typos."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(_LETTERS + "0123456789-"))
    weights = np.concatenate([_WEIGHTS / _WEIGHTS.sum() * 0.95, np.full(10, 0.045 / 10), [0.005]])
    lengths = rng.integers(5, 16, size=count)
    chars = rng.choice(alphabet, size=lengths.sum(), p=weights)
    cuts = np.cumsum(lengths)[:-1]
    labels = ["".join(part).strip("-") or "x" for part in np.split(chars, cuts)]
    suffixes = rng.choice(_SUFFIXES, size=count, p=_SUFFIX_WEIGHTS / _SUFFIX_WEIGHTS.sum())
    names = [f"{label}.{suffix}" for label, suffix in zip(labels, suffixes)]
    letters = list(_LETTERS)
    for i in rng.choice(count, size=int(count * typo_share), replace=False):
        label, suffix = labels[i], suffixes[i]
        p = int(rng.integers(0, len(label)))
        kind = rng.integers(0, 4)
        if kind == 0 and len(label) > 5:
            label = label[:p] + label[p + 1 :]
        elif kind == 1:
            label = label[:p] + str(rng.choice(letters)) + label[p:]
        elif kind == 2:
            label = label[:p] + str(rng.choice(letters)) + label[p + 1 :]
        elif p + 1 < len(label):
            label = label[:p] + label[p + 1] + label[p] + label[p + 2 :]
        names[int(rng.integers(0, count))] = f"{label}.{suffix}"
    return names


def brute_force_pairs(names: list[str], workers: int = -1) -> set[tuple[str, str]]:
    """All pairs at OSA distance 1 by comparing every name with every other (chunked cdist)."""
    found: set[tuple[str, str]] = set()
    chunk = 2000
    for start in range(0, len(names), chunk):
        block = process.cdist(names[start : start + chunk], names, scorer=OSA.distance, score_cutoff=1,
                              dtype=np.uint8, workers=workers)
        rows, cols = np.nonzero(block == 1)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a, b = names[start + r], names[c]
            if a < b:
                found.add((a, b))
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs on all names (best is reported)")
    parser.add_argument("--index-repeat", type=int, default=20, help="timed index runs on the subset")
    args = parser.parse_args(argv)

    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.2f}")
    names = make_names(args.names, args.seed)
    one_edit_pairs(names[:1000])  # warm-up (imports, allocator)

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        pairs = one_edit_pairs(names)
        times.append(time.perf_counter() - start)
    print(f"one_edit_pairs on {len(names):,} names: {min(times):.2f} s (best of {len(times)}; all: "
          f"{', '.join(f'{t:.2f}' for t in times)}), {len(pairs):,} pairs "
          f"({ {k: int(v) for k, v in pairs['edit'].value_counts().items()} }) [target <= 10 s]")

    subset = list(dict.fromkeys(names[: args.subset]))
    index_times = []
    for _ in range(args.index_repeat):  # milliseconds each: keep the best of many runs, as timeit does
        start = time.perf_counter()
        small = one_edit_pairs(subset)
        index_times.append(time.perf_counter() - start)
    index_time = min(index_times)
    start = time.perf_counter()
    expected = brute_force_pairs(subset)
    brute_time = time.perf_counter() - start
    start = time.perf_counter()
    brute_force_pairs(subset, workers=1)
    brute_one_core = time.perf_counter() - start
    got = set(zip(small["a"].tolist(), small["b"].tolist()))
    print(f"load average before the brute force: {os.getloadavg()[0]:.2f}")
    print(f"subset of {len(subset):,} names: index {index_time * 1000:.1f} ms (best of {args.index_repeat}), "
          f"brute force {brute_time:.2f} s, "
          f"ratio {brute_time / index_time:.0f}x [target >= 500x]")
    print(f"brute force on one core (as the index runs): {brute_one_core:.2f} s, "
          f"ratio {brute_one_core / index_time:.0f}x")
    print(f"pairs: index {len(got):,}, brute force {len(expected):,}, identical: {got == expected}")
    return 0 if got == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
