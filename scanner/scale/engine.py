"""The detectors on Dask: the same functions as the pandas engine, run over bins of whole subscribers.

The cross-certificate detectors need whole subscribers in a partition: certificates are grouped into
components (enrich.subscribers), the components packed into balanced bins, and one task per bin runs
every detector on it. Two things cross component borders and are handled explicitly:

* the typo detector ranks a name by how many of the CA's certificates carry it: a first task per
  bin counts its own certificates, and the sums are passed to every bin
  (detect_typo_neighbours(counts=...));
* a bundle certificate (too many domains to link subscribers by) can still be the reissue of an
  early-revoked certificate, or be one: it is copied, as context, into the bin of each such
  certificate in the reissue window; findings about context rows are dropped there.

The certificate table never enters the task graph: the driver would hold it there, pickled, beside
its own copy. With the local cluster each bin is written once as a Parquet file into a temporary
directory (in $TMPDIR, removed afterwards, even on error) and its tasks read that file, which only
works because the workers share this machine's disk. The workers of a --scheduler may not, so there
each bin is scattered (sent once, straight to one worker) instead: no shared disk needed, but every
bin then stays in the workers' memory until the run ends, and a worker lost takes its bins with it.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scanner.core.config import Config
from scanner.core.records import CERT_COLUMNS, FINDING_COLUMNS
from scanner.detect.revocation import early_revocations, may_replace
from scanner.detect.run import (
    concat_findings,
    cross_certificate_findings,
    per_certificate_findings,
    run_detectors,
    sort_findings,
)
from scanner.detect.typo import IssuanceCounts, issuance_counts
from scanner.enrich.subscribers import Subscribers, link_subscribers
from scanner.parse.domains import classify_all
from scanner.scale.columnar import read_parquet, write_parquet

N_WORKERS = 2  # the LocalCluster's worker processes
PARTITION_ROWS = 50_000  # certificates per bin, at most (a bigger component stays whole)
_OWNED = "_ctscan_owned"  # False on a context row: its findings belong to another bin
_BIN_COLUMNS = {**CERT_COLUMNS, _OWNED: "bool"}  # all a bin file keeps: the detectors read nothing else


class DaskEngineError(RuntimeError):
    """The Dask engine could not start or reach its cluster; the message says what to do."""


@contextmanager
def dask_client(config: Config) -> Iterator[Any]:
    """A distributed Client: to config.scheduler, else to a private LocalCluster on 127.0.0.1."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DaskEngineError(
            f"--engine dask needs dask[dataframe] and distributed ({exc}); install them with "
            "pip install 'ctscan[dask]' or use --engine pandas"
        ) from None
    # distributed logs its cluster's start and stop at INFO on its own loggers: keep stderr for our news,
    # for the life of this client only (a notebook's own Dask logging is its business).
    with _logger_level("distributed", logging.INFO if config.verbose else logging.WARNING):
        yield from _client(config, Client, LocalCluster)


@contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _client(config: Config, Client: Any, LocalCluster: Any) -> Iterator[Any]:  # noqa: N803 (the classes)
    if config.scheduler:
        try:
            client = Client(config.scheduler, timeout=max(config.timeout, 1.0))
        except (OSError, TimeoutError) as exc:
            raise DaskEngineError(
                f"could not reach the Dask scheduler at {config.scheduler} ({exc}); start one "
                "(dask scheduler) and pass its address, or omit --scheduler for a local cluster"
            ) from None
        with client:
            yield client
        return
    with warnings.catch_warnings():
        # With the dashboard off the scheduler still serves health checks, on 127.0.0.1:8787 or,
        # when another cluster holds that port, on a free one: that is not worth a warning.
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None,
                               silence_logs=logging.INFO if config.verbose else logging.ERROR)
    with cluster, Client(cluster) as client:
        yield client


def _partitions(n_rows: int, client: Any) -> int:
    workers = max(len(client.scheduler_info().get("workers", {})), 1)
    return max(2 * workers, math.ceil(n_rows / PARTITION_ROWS))


def assign_bins(component: np.ndarray, n_bins: int) -> np.ndarray:
    """A bin per row, whole components in one bin, bins of about equal size (in component order)."""
    ids, inverse, sizes = np.unique(component, return_inverse=True, return_counts=True)
    target = max(math.ceil(len(component) / max(n_bins, 1)), 1)
    start = np.cumsum(sizes) - sizes
    return (start // target).astype(np.int64)[inverse]


def context_rows(certs: pd.DataFrame, subs: Subscribers, bins: np.ndarray, config: Config) -> pd.DataFrame:
    """(row, bin) copies a bin needs beyond its own rows: bundle certificates and their reissue partners."""
    pairs = subs.bundle_pairs
    if pairs.empty:
        return pd.DataFrame({"row": np.zeros(0, np.int64), "bin": np.zeros(0, np.int64)})
    early = early_revocations(certs.reset_index(drop=True), config.revocation_window)
    revoked_at = pd.Series(pd.NaT, index=range(len(certs)), dtype="datetime64[us, UTC]")
    revoked_at[early.index] = early["revoked_at"]
    revoked = revoked_at.dt.tz_localize(None).to_numpy("datetime64[us]")
    nb = pd.to_datetime(certs["not_before"], utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
    out = []
    for anchor, partner in (("bundle", "other"), ("other", "bundle")):
        a, p = pairs[anchor].to_numpy(), pairs[partner].to_numpy()
        # The anchor was revoked early and the partner issued within the reissue window of it.
        near = may_replace(nb[a], revoked[a], nb[p], config.reissue_window)  # NaT compares False
        out.append(pd.DataFrame({"row": p[near], "bin": bins[a[near]]}))
    ctx = pd.concat(out, ignore_index=True)
    ctx = ctx[ctx["bin"].to_numpy() != bins[ctx["row"].to_numpy()]]
    return ctx.drop_duplicates().reset_index(drop=True)


def bin_rows(certs: pd.DataFrame, config: Config, n_bins: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per non-empty bin: the row positions it holds, in table order, and which of them it owns."""
    subs = link_subscribers(certs)
    bins = assign_bins(subs.component, n_bins)
    ctx = context_rows(certs, subs, bins, config)
    rows = np.concatenate([np.arange(len(certs)), ctx["row"].to_numpy(np.int64)])
    where = np.concatenate([bins, ctx["bin"].to_numpy(np.int64)])
    owned = np.arange(len(rows)) < len(certs)
    order = np.lexsort((rows, where))
    rows, where, owned = rows[order], where[order], owned[order]
    cuts = np.flatnonzero(np.diff(where)) + 1
    return list(zip(np.split(rows, cuts), np.split(owned, cuts)))


@contextmanager
def _bin_store(client: Any, config: Config) -> Iterator[Callable[[int, pd.DataFrame], Any]]:
    """A function handing one bin to the workers (a Parquet path or a Future): see the module docstring."""
    if config.scheduler:
        yield lambda _, frame: client.scatter(frame, hash=False)
        return
    with tempfile.TemporaryDirectory(prefix="ctscan-dask-") as tmp:
        yield lambda b, frame: write_parquet(frame, Path(tmp) / f"bin-{b:05d}.parquet", _BIN_COLUMNS)


def _load(source: Path | pd.DataFrame) -> pd.DataFrame:
    return read_parquet(source, _BIN_COLUMNS) if isinstance(source, Path) else source


def _bin_counts(source: Path | pd.DataFrame) -> IssuanceCounts:
    """issuance_counts of the certificates a bin owns: bins share no owned row, so they add up."""
    frame = _load(source)
    return issuance_counts(frame[frame[_OWNED].to_numpy(bool)])


def _add_counts(parts: list[IssuanceCounts]) -> IssuanceCounts:
    """The CA-wide issuance counts: every bin's, summed."""
    by_registrable = pd.concat([r for r, _ in parts]).groupby(level=0).sum()
    by_key = pd.concat([k for _, k in parts]).groupby(level=0).sum()
    return by_registrable, by_key


def _bin_findings(source: Path | pd.DataFrame, registrations: pd.DataFrame, config: Config,
                  counts: IssuanceCounts) -> pd.DataFrame:
    """Every finding about the certificates one bin owns (its context rows only inform the others)."""
    frame = _load(source)
    owned = frame[_OWNED].to_numpy(bool)
    certs = frame.drop(columns=_OWNED)
    classified = classify_all(certs)  # once for both kinds of detector, as run_detectors does
    cross = cross_certificate_findings(certs, config, counts=counts, classified=classified)
    return concat_findings([
        per_certificate_findings(certs[owned], registrations, config, classified=classified),
        cross[cross["sha256"].isin(set(certs.loc[owned, "sha256"]))],
    ])


def run_detectors_dask(
    certs: pd.DataFrame, registrations: pd.DataFrame, config: Config, *,
    client: Any = None, npartitions: int | None = None,
) -> pd.DataFrame:
    """run_detectors on Dask: the same findings (FINDING_COLUMNS, sort_findings order) from bins."""
    if certs.empty:
        return sort_findings(run_detectors(certs, registrations, config))
    if client is None:
        with dask_client(config) as own:
            return run_detectors_dask(certs, registrations, config, client=own, npartitions=npartitions)
    n_bins = npartitions or _partitions(len(certs), client)
    with _bin_store(client, config) as place:
        sources, counts = [], []
        for b, (rows, owned) in enumerate(bin_rows(certs, config, n_bins)):
            # One bin's copy at a time: it is dropped as soon as it is written (or sent).
            sources.append(place(b, certs.iloc[rows].reset_index(drop=True).assign(**{_OWNED: owned})))
            counts.append(client.submit(_bin_counts, sources[-1], pure=False))  # workers count while we write
        totals = client.submit(_add_counts, counts, pure=False)
        shared = client.scatter(registrations, broadcast=True, hash=False)
        found = client.map(_bin_findings, sources, registrations=shared, config=config, counts=totals,
                           pure=False)
        parts = client.gather(found)  # before the bin files go
    return sort_findings(concat_findings(parts).astype(FINDING_COLUMNS))
