"""The detectors on Dask: the same functions as the pandas engine, run over partitions.

Per-certificate detectors run on any split of the rows. The cross-certificate ones need whole
subscribers in a partition: certificates are grouped into components (enrich.subscribers), the
components packed into balanced bins, one bin per partition. Two things cross component borders and
are handled explicitly:

* the typo detector ranks a name by how many of the CA's certificates carry it: those counts are
  computed over every partition and passed in (detect_typo_neighbours(counts=...));
* a bundle certificate (too many domains to link subscribers by) can still be the reissue of an
  early-revoked certificate, or be one: it is copied, as context, into the partition of each such
  certificate in the reissue window; findings about context rows are dropped there.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from .config import Config
from .detect.revocation import early_revocations
from .detect.run import (
    concat_findings,
    cross_certificate_findings,
    per_certificate_findings,
    run_detectors,
    sort_findings,
)
from .detect.typo import IssuanceCounts, issuance_counts
from .enrich.subscribers import Subscribers, link_subscribers
from .records import FINDING_COLUMNS, empty_frame

N_WORKERS = 2  # the LocalCluster's worker processes
PARTITION_ROWS = 50_000  # certificates per partition, at most (a bigger component stays whole)
_POS, _BIN, _OWNED = "_ctscan_pos", "_ctscan_bin", "_ctscan_owned"


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
    # distributed logs its cluster's start and stop at INFO on its own loggers: keep stderr for our news.
    logging.getLogger("distributed").setLevel(logging.INFO if config.verbose else logging.WARNING)
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
    window = np.timedelta64(pd.Timedelta(config.reissue_window))
    out = []
    for anchor, partner in (("bundle", "other"), ("other", "bundle")):
        a, p = pairs[anchor].to_numpy(), pairs[partner].to_numpy()
        # The anchor was revoked early and the partner issued within the reissue window of it.
        near = np.abs(nb[p] - revoked[a]) <= window  # NaT (not revoked early) compares False
        out.append(pd.DataFrame({"row": p[near], "bin": bins[a[near]]}))
    ctx = pd.concat(out, ignore_index=True)
    ctx = ctx[ctx["bin"].to_numpy() != bins[ctx["row"].to_numpy()]]
    return ctx.drop_duplicates().reset_index(drop=True)


def _cross_partition(part: pd.DataFrame, config: Config, counts: pd.Series) -> pd.DataFrame:
    """Cross-certificate findings of one partition of whole subscribers (plus context rows)."""
    if part.empty:
        return empty_frame(FINDING_COLUMNS)
    part = part.sort_values(_POS, kind="stable")
    owned = set(part.loc[part[_OWNED].to_numpy(dtype=bool), "sha256"].tolist())
    certs = part.drop(columns=[_POS, _OWNED]).reset_index(drop=True)
    found = cross_certificate_findings(certs, config, counts=_split_counts(counts))
    return found[found["sha256"].isin(owned)].reset_index(drop=True)


def _count_rows(part: pd.DataFrame) -> pd.DataFrame:
    """issuance_counts of one partition as rows (what, value, n), so partitions add up."""
    by_registrable, by_key = issuance_counts(part)
    return pd.concat([
        pd.DataFrame({"what": "registrable", "value": by_registrable.index.astype(object),
                      "n": by_registrable.to_numpy(np.int64)}),
        pd.DataFrame({"what": "key", "value": by_key.index.astype(object), "n": by_key.to_numpy(np.int64)}),
    ], ignore_index=True).astype({"what": object, "value": object, "n": "int64"})


def _split_counts(totals: pd.Series) -> IssuanceCounts:
    """The (registrable, key) counts from the summed (what, value) -> n series."""
    frame = totals.reset_index()
    parts = []
    for what in ("registrable", "key"):
        rows = frame[frame["what"] == what]
        parts.append(pd.Series(rows["n"].to_numpy(np.int64), index=rows["value"].to_numpy(object)))
    return parts[0], parts[1]


def run_detectors_dask(
    certs: pd.DataFrame, registrations: pd.DataFrame, config: Config, *,
    client: Any = None, npartitions: int | None = None,
) -> pd.DataFrame:
    """run_detectors on Dask: the same findings (FINDING_COLUMNS, sort_findings order) from partitions."""
    if certs.empty:
        return sort_findings(run_detectors(certs, registrations, config))
    if client is None:
        with dask_client(config) as own:
            return run_detectors_dask(certs, registrations, config, client=own, npartitions=npartitions)
    import dask

    # Dask would turn object columns into strings, lists of SANs included.
    with dask.config.set({"dataframe.convert-string": False}):
        return _run(certs.reset_index(drop=True), registrations, config, client,
                    npartitions or _partitions(len(certs), client))


def _run(certs: pd.DataFrame, registrations: pd.DataFrame, config: Config, client: Any,
         n_parts: int) -> pd.DataFrame:
    import dask
    import dask.dataframe as dd

    meta = empty_frame(FINDING_COLUMNS)

    rows = dd.from_pandas(certs, npartitions=n_parts, sort=False)
    per_cert = rows.map_partitions(per_certificate_findings, dask.delayed(registrations), config,
                                   meta=meta, align_dataframes=False)
    counts = rows.map_partitions(_count_rows, meta={"what": object, "value": object, "n": "int64"})
    totals = counts.groupby(["what", "value"])["n"].sum(split_out=1)

    subs = link_subscribers(certs)
    bins = assign_bins(subs.component, n_parts)
    ctx = context_rows(certs, subs, bins, config)
    grouped = pd.concat([
        certs.assign(**{_POS: np.arange(len(certs)), _BIN: bins, _OWNED: True}),
        certs.iloc[ctx["row"].to_numpy()].assign(
            **{_POS: ctx["row"].to_numpy(), _BIN: ctx["bin"].to_numpy(), _OWNED: False}),
    ], ignore_index=True).sort_values([_BIN, _POS], kind="stable").set_index(_BIN)
    # One bin never straddles two partitions: from_pandas keeps equal index values together.
    by_subscriber = dd.from_pandas(grouped, npartitions=int(bins.max()) + 1, sort=True)
    cross = by_subscriber.map_partitions(_cross_partition, config, totals.to_delayed()[0],
                                         meta=meta, align_dataframes=False)

    per_found, cross_found = client.compute([per_cert, cross], sync=True)
    return sort_findings(concat_findings([per_found, cross_found]).astype(FINDING_COLUMNS))
