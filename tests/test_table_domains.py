"""Registrable domains from the whole table, as the chunk-by-chunk parse finds them; the tables a scan writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scanner.core.config import Config
from scanner.parse.domains import registrable_domains
from scanner.parse.items import CHUNK, parse_in_chunks
from scanner.pipeline import run
from scanner.sources.base import RawCert
from tests.synth import TestCA, der, pem, utc

NAMES = [
    ["shop.example.com", "www.example.com"],
    ["a.b.example.co.uk"],
    ["10.0.0.1", "intranet.local", "mail.example.org"],
    ["*.wild.example.net"],
    [],  # the CN is the host name (a legacy certificate)
    ["xn--bcher-kva.example", "bad_label-.com", "EXAMPLE.DE."],
    [f"pad{i}.padding{i}.com" for i in range(8)],  # over the cap of 5: the last 3 are not checked
]

#: What NAMES are registered under: IPs, internal, invalid names and a person's CN have none, and only the
#: first 5 names of a certificate are checked; a CN stands in for missing SANs when it is a host name.
DOMAINS = {"example.com", "example.co.uk", "example.org", "example.net", "example.io", "example.de",
           *(f"padding{i}.com" for i in range(5))}


def _issue(ca: TestCA, folder: Path) -> list[RawCert]:
    raws = []
    for i, dns in enumerate(NAMES):
        cn = "legacy-host.example.io" if not dns else dns[0]
        cert = ca.issue(serial=i + 1, not_before=utc("2024-03-01T00:00"), cn=cn, dns=dns, org="Ejemplo S.L.")
        (folder / f"{i}.pem").write_bytes(pem(cert))
        raws.append(RawCert(der(cert), "files", f"{i}.pem"))
    person = ca.issue(serial=99, not_before=utc("2024-03-01T00:00"), cn="Maria Garcia")  # no SAN, CN not a host
    (folder / "person.pem").write_bytes(pem(person))
    raws.append(RawCert(der(person), "files", "person.pem"))
    return raws


def test_the_whole_table_gives_the_domains_each_chunk_gives(tmp_path: Path) -> None:
    ca = TestCA()
    raws = _issue(ca, tmp_path)
    chunks = list(parse_in_chunks(raws * (CHUNK // len(raws) + 1), workers=1, max_sans_per_cert=5))
    by_chunk = set().union(*(c.domains for c in chunks))
    certs = pd.concat([c.certs for c in chunks], ignore_index=True)
    assert registrable_domains(certs, 5) == by_chunk == DOMAINS
    assert "padding5.com" not in by_chunk and not any("local" in d for d in by_chunk)
    skipped = list(parse_in_chunks(raws, workers=1, max_sans_per_cert=5, domains=False))
    assert all(not c.domains for c in skipped) and len(skipped[0].certs) == len(raws)


def test_a_scan_without_lookups_counts_and_keeps_the_domains_a_scan_with_them_does(tmp_path: Path) -> None:
    ca = TestCA()
    issued = tmp_path / "issued"
    issued.mkdir()
    _issue(ca, issued)
    answers = {}
    for mode in ("off", "auto", "off"):  # twice without: the second run is the first's answer
        out = tmp_path / f"out-{mode}-{len(answers)}"
        config = Config(out_dir=out, source="files", paths=(issued,), registration=mode, offline=True,
                        max_sans_per_cert=5, cache_dir=tmp_path / "cache", progress=False, quiet=True)
        result = run(config, rounds=True)
        kept = set(pd.read_parquet(out / "domains.parquet")["domain"])
        answers[len(answers)] = (result.summary["registrable_domains"], kept)
    assert answers[0] == answers[1] == answers[2]
    count, kept = answers[0]
    assert count == len(kept)
    assert kept == DOMAINS


def test_a_scan_leaves_the_cyclic_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    issued = tmp_path / "issued"
    issued.mkdir()
    _issue(TestCA(), issued)
    config = Config(out_dir=tmp_path / "out", source="files", paths=(issued,), registration="off",
                    cache_dir=tmp_path / "cache", progress=False, quiet=True)
    assert gc.get_freeze_count() == 0
    assert len(run(config, write=False).certs) == len(NAMES) + 1
    assert gc.get_freeze_count() == 0  # a notebook's next scan, and its garbage, are collected as usual
    keep = [object() for _ in range(3)]
    gc.freeze()  # a caller's own freeze is neither undone nor added to
    try:
        frozen = gc.get_freeze_count()
        run(config, write=False)
        assert 0 < gc.get_freeze_count() <= frozen and keep  # (frozen objects freed on the way are gone)
    finally:
        gc.unfreeze()


def test_a_table_is_written_a_row_group_at_a_time_and_read_back_whole(tmp_path: Path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from scanner.core.records import CERT_COLUMNS, empty_frame
    from scanner.scale import columnar

    raws = _issue(TestCA(), tmp_path)
    certs = pd.concat([c.certs for c in parse_in_chunks(raws * 3, workers=1)], ignore_index=True)
    monkeypatch.setattr(columnar, "ROW_GROUP", 4)  # 24 rows: six groups, the last one short
    path = columnar.write_parquet(certs, tmp_path / "certs.parquet", CERT_COLUMNS)
    assert pq.ParquetFile(path).num_row_groups == 6
    pd.testing.assert_frame_equal(columnar.read_parquet(path, CERT_COLUMNS), certs)
    empty = columnar.write_parquet(empty_frame(CERT_COLUMNS), tmp_path / "empty.parquet", CERT_COLUMNS)
    assert columnar.read_parquet(empty, CERT_COLUMNS).dtypes.equals(empty_frame(CERT_COLUMNS).dtypes)
