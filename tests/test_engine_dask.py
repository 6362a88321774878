"""The Dask engine gives the pandas engine's findings, row for row, on the sample and a generated CA."""

from __future__ import annotations

import dataclasses
import socket
import sys
import tempfile
from datetime import timedelta

import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")

from scanner.core.config import Config  # noqa: E402
from scanner.core.records import REGISTRATION_COLUMNS, empty_frame  # noqa: E402
from scanner.detect.run import run_detectors, sort_findings  # noqa: E402
from scanner.detect.score import build_suspects  # noqa: E402
from scanner.enrich.revocation.crl import apply_revocations, crl_revocations, read_crl_files  # noqa: E402
from scanner.enrich.subscribers import link_subscribers  # noqa: E402
from scanner.parse.certs import ParseError, record_from_raw, records_frame  # noqa: E402
from scanner.parse.domains import registrable_domain  # noqa: E402
from scanner.parse.link import collapse_precerts  # noqa: E402
from scanner.report.csv_report import read_frame  # noqa: E402
from scanner.scale import engine as engine_dask  # noqa: E402
from scanner.scale.engine import DaskEngineError, assign_bins, dask_client, run_detectors_dask  # noqa: E402
from scanner.sources.base import RawCert  # noqa: E402
from scanner.sources.files import read_files  # noqa: E402
from tests.conftest import REPO, SAMPLE  # noqa: E402
from tests.synth import der, utc  # noqa: E402

sys.path.insert(0, str(REPO))
from benchmarks.corpus import make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Config:
    return Config(out_dir=tmp_path_factory.mktemp("dask"), engine="dask")


@pytest.fixture(scope="module")
def client(config):
    """One LocalCluster (2 worker processes on 127.0.0.1) for the whole module: it takes seconds to start."""
    with dask_client(config) as c:
        yield c


def _frame(items) -> pd.DataFrame:
    rows = []
    for item in items:
        if isinstance(item, RawCert):
            try:
                rows.append(record_from_raw(item))
            except ParseError:
                pass
    return collapse_precerts(records_frame(rows))


@pytest.fixture(scope="module")
def sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    certs = _frame(read_files([SAMPLE / "certs"]))
    certs = apply_revocations(certs, read_crl_files([SAMPLE / "crl" / "sample-ca.crl"])[1])
    return certs, read_frame(SAMPLE / "registrations.csv", REGISTRATION_COLUMNS)


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    """3,000 generated certificates plus planted typos, early revocations, reissues and bundle certificates."""
    ca, ders, crl = make_corpus(3000, 600, seed=7)
    revoked = [(e.serial_number, e.revocation_date_utc, None) for e in crl]
    start = utc("2023-01-01T00:00")  # make_corpus's first notBefore
    serial = 0x900000
    planted = []

    def issue(when, names, org, revoke_after=None):
        nonlocal serial
        serial += 1
        planted.append(der(ca.issue(serial=serial, not_before=when, cn=names[0], org=org, dns=names)))
        if revoke_after is not None:
            revoked.append((serial, when + revoke_after, None))

    for k in range(40):
        when = start + timedelta(hours=13 * k)
        label = f"planted{k:02d}shop"
        typo = label[:3] + label[4:]  # one letter omitted
        # a subscriber's normal certificates, then a typo certificate, revoked and reissued
        issue(when, [f"{label}.com", f"www.{label}.com"], f"{label.upper()} S.L.")
        issue(when + timedelta(days=3), [f"{label}.com", f"mail.{label}.com"], f"{label.upper()} S.L.")
        issue(when + timedelta(days=5), [f"mail.{typo}.com"], f"{label.upper()} S.L.", timedelta(hours=5))
        issue(when + timedelta(days=5, hours=6), [f"mail.{label}.com"], f"{label.upper()} S.L.")
        # the same label under a public suffix one edit away, linked only by a shared domain
        issue(when + timedelta(days=9), [f"{label}.co", f"{label}.com"], None, timedelta(hours=2))
    for k in range(6):
        when = start + timedelta(days=20 + 7 * k)
        many = [f"bundle{k}customer{j:02d}.net" for j in range(24)]
        # a hosting certificate revoked early and reissued for one of its customers, and the reverse
        issue(when, many + [f"planted{k:02d}shop.com"], "Hosting Example Ltd", timedelta(hours=3))
        issue(when + timedelta(hours=20), [f"bundle{k}customer03.net"], f"Customer {k} GmbH")
        issue(when + timedelta(days=3), [f"solo{k}site.org"], f"Solo {k} SARL", timedelta(hours=1))
        issue(when + timedelta(days=3, hours=4), [f"solo{k}site.org", *many[:22]], "Other Hosting Ltd")
    new_crl = ca.crl(revoked, this_update=start + timedelta(days=400))
    certs = _frame(RawCert(d, "files", f"corpus#{i}") for i, d in enumerate(ders + planted))
    _, revocations = crl_revocations(new_crl, "corpus.crl")
    return apply_revocations(certs, revocations)


def _registrations_for(certs: pd.DataFrame) -> pd.DataFrame:
    """No registry answers: the registration detectors find nothing, the others all run."""
    return empty_frame(REGISTRATION_COLUMNS)


def test_dask_engine_finds_exactly_what_pandas_finds_on_the_sample(sample, config, client):
    certs, registrations = sample
    expected = sort_findings(run_detectors(certs, registrations, config))
    got = run_detectors_dask(certs, registrations, config, client=client, npartitions=5)
    assert set(expected["code"]) >= {"typo_neighbour", "revoke_reissue", "unregistered_domain"}
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(build_suspects(certs, got), build_suspects(certs, expected))


def test_dask_engine_finds_exactly_what_pandas_finds_on_a_generated_ca(corpus, config, client):
    registrations = _registrations_for(corpus)
    expected = sort_findings(run_detectors(corpus, registrations, config))
    got = run_detectors_dask(corpus, registrations, config, client=client, npartitions=7)
    counts = expected["code"].value_counts()
    assert counts["typo_neighbour"] >= 40 and counts["revoke_reissue"] >= 40, counts
    # the bundle certificates' reissues cross component borders and still match
    assert expected["evidence"].str.contains("bundle").any()
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(build_suspects(corpus, got), build_suspects(corpus, expected))


def test_the_typo_ranking_counts_certificates_across_the_whole_ca_not_one_partition(corpus, config, client):
    certs = corpus.reset_index(drop=True)
    bins = assign_bins(link_subscribers(certs).component, 40)
    holders = certs["san_dns"].map(lambda sans: "planted00shop.com" in map(registrable_domain, sans)).to_numpy()
    # one of the five certificates naming planted00shop.com (the hosting bundle) is in another partition
    assert holders.sum() == 5 and len(set(bins[holders])) == 2
    got = run_detectors_dask(certs, _registrations_for(certs), config, client=client, npartitions=40)
    typo = got[(got["code"] == "typo_neighbour") & (got["name"] == "planted00shop.co")]
    assert "planted00shop.com is named in 5 of the CA's certificates, planted00shop.co in 1" in typo["evidence"].iloc[0]


@pytest.fixture
def bin_files(tmp_path, monkeypatch) -> list:
    """The Parquet bin files the engine writes, all made under tmp_path (the temporary directory's parent)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written: list = []
    write = engine_dask.write_parquet

    def recording(frame, path, columns):
        written.append(path)
        return write(frame, path, columns)

    monkeypatch.setattr(engine_dask, "write_parquet", recording)
    return written


def test_the_bins_go_to_the_workers_as_files_that_are_removed_after_the_run(corpus, config, client, bin_files,
                                                                           tmp_path):
    got = run_detectors_dask(corpus, _registrations_for(corpus), config, client=client, npartitions=7)
    assert not got.empty and len(bin_files) >= 7 and all(tmp_path in path.parents for path in bin_files)
    assert list(tmp_path.iterdir()) == []


def test_the_bin_files_are_removed_when_the_run_fails_half_way(corpus, config, client, bin_files, tmp_path,
                                                              monkeypatch):
    write = engine_dask.write_parquet  # bin_files' recorder: it still counts the bins written

    def disk_full_after_two(frame, path, columns):
        if len(bin_files) == 2:
            raise OSError(28, "No space left on device")
        return write(frame, path, columns)

    monkeypatch.setattr(engine_dask, "write_parquet", disk_full_after_two)
    with pytest.raises(OSError, match="No space left"):
        run_detectors_dask(corpus, _registrations_for(corpus), config, client=client, npartitions=7)
    assert len(bin_files) == 2 and list(tmp_path.iterdir()) == []


def test_with_a_scheduler_the_bins_are_scattered_not_written_and_the_findings_are_the_same(
    corpus, config, client, bin_files, tmp_path,
):
    # The workers of a remote scheduler may not share our disk; the local cluster stands in for one.
    remote = dataclasses.replace(config, scheduler="tcp://scheduler.invalid:8786")
    registrations = _registrations_for(corpus)
    got = run_detectors_dask(corpus, registrations, remote, client=client, npartitions=7)
    pd.testing.assert_frame_equal(got, sort_findings(run_detectors(corpus, registrations, config)))
    assert bin_files == [] and list(tmp_path.iterdir()) == []


def test_an_empty_table_needs_no_cluster(config):
    from scanner.core.records import CERT_COLUMNS

    got = run_detectors_dask(empty_frame(CERT_COLUMNS), empty_frame(REGISTRATION_COLUMNS), config)
    assert got.empty


def test_an_unreachable_scheduler_is_named_with_what_to_do(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = Config(out_dir=tmp_path, engine="dask", scheduler=f"tcp://127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(DaskEngineError, match=f"127.0.0.1:{port}.*omit --scheduler"):
        with dask_client(config):
            pass


def test_the_engine_leaves_the_callers_dask_logging_as_it_found_it(tmp_path):
    # A notebook that turned distributed's logging up to debug a cluster keeps it after a scan.
    import logging

    logger = logging.getLogger("distributed")
    before = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = Config(out_dir=tmp_path, engine="dask", scheduler=f"tcp://127.0.0.1:{port}", timeout=1.0)
        with pytest.raises(DaskEngineError):
            with dask_client(config):
                pass
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)
