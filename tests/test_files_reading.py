"""The files source's fast paths (PEM blocks found without a regex body, folders walked as text) read what the slow ones read."""

from __future__ import annotations

import os
import re

import pytest

from scanner.sources.base import RawCert, SourceError
from scanner.sources.files import _pem_blocks, iter_files, read_files
from tests.synth import der, pem, utc

#: The PEM block pattern the source used before: _pem_blocks must find exactly what it found.
_REGEX = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


@pytest.mark.parametrize("data", [
    b"",
    b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
    b"-----BEGIN X-----\nno end here\n-----BEGIN CERTIFICATE-----\r\nQU\tJD \r\n-----END CERTIFICATE-----",
    b"-----BEGIN CERTIFICATE----------END CERTIFICATE-----",
    b"-----BEGIN A-----x-----END B----------END A----- -----BEGIN A-----y-----END A-----",
    b"-----BEGIN  LEADING SPACE-----z-----END  LEADING SPACE-----",
    b"-----BEGIN lower-----q-----END lower-----",
])
def test_pem_blocks_are_those_the_regex_finds(data):
    assert list(_pem_blocks(data)) == [(m.group(1), m.group(2)) for m in _REGEX.finditer(data)]


def test_a_certificate_after_an_unterminated_block_is_still_read(tmp_path, test_ca):
    cert = test_ca.issue(serial=7, not_before=utc("2024-01-01T00:00"), dns=["a.example"])
    path = tmp_path / "mixed.pem"
    path.write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\ncut off\n" + pem(cert).replace(b"\n", b"\r\n"))
    items = list(read_files([tmp_path]))
    assert [type(i) for i in items] == [RawCert] and items[0].der == der(cert)


def test_a_pipe_among_the_files_is_an_error_and_a_link_to_a_file_is_read(tmp_path, test_ca):
    cert = test_ca.issue(serial=8, not_before=utc("2024-01-01T00:00"), dns=["b.example"])
    (tmp_path / "a.pem").write_bytes(pem(cert))
    (tmp_path / "b.pem").symlink_to(tmp_path / "a.pem")
    os.mkfifo(tmp_path / "c.pem")
    (tmp_path / "d.pem").symlink_to(tmp_path / "missing.pem")
    items = list(read_files([tmp_path]))
    assert [type(i) for i in items] == [RawCert, RawCert, SourceError, SourceError]
    assert "not a regular file" in items[2].error and "cannot read file" in items[3].error
    assert [p.name for p in iter_files([tmp_path]) if not isinstance(p, SourceError)] == ["a.pem", "b.pem", "d.pem"]


# --- files read by the parse workers: the same items, errors and order as read in the main process ---------

def _odd_folder(root, test_ca):
    """A folder of what a CA's export holds: certificates, a bundle, and each kind of file that is an error."""
    import base64

    certs = [test_ca.issue(serial=s, not_before=utc("2024-01-01T00:00"), cn=f"h{s}.example{s % 3}.com",
                           dns=[f"h{s}.example{s % 3}.com"]) for s in range(1, 7)]
    (root / "a").mkdir(parents=True)
    (root / "b" / "deeper").mkdir(parents=True)
    for k, cert in enumerate(certs[:3]):
        (root / "a" / f"{k}.pem").write_bytes(pem(cert))
    (root / "a" / "bundle.pem").write_bytes(pem(certs[3]) + pem(certs[4]) + b"-----BEGIN CERTIFICATE-----\n!!\n"
                                            b"-----END CERTIFICATE-----\n")
    (root / "a" / "empty.pem").write_bytes(b"")
    (root / "a" / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n")
    (root / "b" / "trailing.der").write_bytes(der(certs[5]) + b"garbage")
    (root / "b" / "crl.der").write_bytes(der(test_ca.crl([], this_update=utc("2024-02-01T00:00"))))
    (root / "b" / "deeper" / "cut.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n"
                                                    + base64.b64encode(der(certs[0])[:40]) + b"\n-----END CERTIFICATE-----\n")
    (root / "b" / "link.pem").symlink_to(root / "missing.pem")
    os.mkfifo(root / "b" / "pipe.pem")
    (root / "c.der").write_bytes(der(certs[1]))


def _parsed(chunks):
    import pandas as pd

    chunks = list(chunks)
    certs = pd.concat([c.certs for c in chunks], ignore_index=True)
    return (certs, [e for c in chunks for e in c.errors], sum(c.read for c in chunks),
            set().union(*(c.domains for c in chunks)))


def test_files_read_by_the_workers_give_the_items_errors_and_order_read_here_gives(tmp_path, test_ca, monkeypatch):
    import pandas as pd

    from scanner.parse import items as parse_items
    from scanner.sources import files

    _odd_folder(tmp_path / "in", test_ca)
    here = _parsed(parse_items.parse_in_chunks(read_files([tmp_path / "in"]), workers=1))
    read_here = []
    monkeypatch.setattr(parse_items, "read_paths", lambda paths: read_here.append(paths) or files.read_paths(paths))
    monkeypatch.setattr(parse_items, "PARALLEL_FROM", 4)
    monkeypatch.setattr(parse_items, "CHUNK", 3)  # several parts, and bundles making the parts smaller
    there = _parsed(parse_items.parse_in_chunks(files.read(files.FilesOptions([tmp_path / "in"])), workers=2))
    assert read_here == []  # every file was read by a worker
    pd.testing.assert_frame_equal(there[0], here[0])
    assert there[1:] == here[1:]
    errors = {e["provenance"].removeprefix(str(tmp_path / "in") + "/"): e["error"] for e in there[1]}
    assert set(errors) == {"a/bundle.pem#3", "a/empty.pem", "a/key.pem", "b/crl.der", "b/deeper/cut.pem#1",
                           "b/link.pem", "b/pipe.pem", "b/trailing.der"}
    assert errors["b/crl.der"] == "this is a CRL, not a certificate: pass it with --crl"
    assert errors["b/pipe.pem"] == "not a regular file (a pipe, socket or device): skipped"


def test_a_few_files_are_read_here_and_a_wrapped_source_is_read_here_as_before(tmp_path, test_ca, monkeypatch):
    from scanner.parse import items as parse_items
    from scanner.sources import files

    _odd_folder(tmp_path / "in", test_ca)
    calls = []
    monkeypatch.setattr(parse_items, "_parse_files_in_workers",
                        lambda *a: calls.append(a) or iter(()))
    tapped = (item for item in files.read(files.FilesOptions([tmp_path / "in"])))  # as a tally or the lint tap
    assert _parsed(parse_items.parse_in_chunks(tapped, workers=2))[2] == 14
    assert calls == []
    monkeypatch.undo()
    few = _parsed(parse_items.parse_in_chunks(files.read(files.FilesOptions([tmp_path / "in"])), workers=2))
    assert few[1:] == _parsed(parse_items.parse_in_chunks(read_files([tmp_path / "in"]), workers=1))[1:]


def test_the_files_source_is_read_once_either_as_items_or_by_its_walk(tmp_path, test_ca):
    from scanner.sources import files

    _odd_folder(tmp_path / "in", test_ca)
    source = files.read(files.FilesOptions([tmp_path / "in"]))
    assert [(type(i), i.provenance) for i in source] == [(type(i), i.provenance) for i in read_files([tmp_path / "in"])]
    with pytest.raises(RuntimeError):
        source.walk()
    walked = files.read(files.FilesOptions([tmp_path / "in"]))
    assert list(files.read_paths(walked.walk())) == list(read_files([tmp_path / "in"]))
    assert list(walked) == []


def test_a_scan_of_files_has_its_workers_read_them_and_reports_what_one_process_reports(tmp_path, test_ca, monkeypatch):
    import csv

    from scanner.cli import main
    from scanner.parse import items as parse_items
    from scanner.pipeline import load_scan
    from scanner.sources import files

    _odd_folder(tmp_path / "in", test_ca)
    (tmp_path / "in" / "b" / "pipe.pem").unlink()  # a pipe would be an error row in both; keep the scan simple

    def scan(out, workers):
        argv = ["scan", str(tmp_path / "in"), "--registration", "off", "--no-cache", "--workers", workers,
                "--out", str(out), "-q"]
        assert main(argv) == 0
        with open(out / "errors.csv", newline="", encoding="utf-8") as fh:
            return load_scan(out).certs, list(csv.DictReader(fh))

    one_certs, one_errors = scan(tmp_path / "one", "1")
    read_here = []
    monkeypatch.setattr(parse_items, "read_paths", lambda paths: read_here.append(paths) or files.read_paths(paths))
    monkeypatch.setattr(parse_items, "PARALLEL_FROM", 4)
    monkeypatch.setattr(parse_items, "CHUNK", 3)
    two_certs, two_errors = scan(tmp_path / "two", "2")
    assert read_here == []
    assert two_certs.to_dict("records") == one_certs.to_dict("records") and len(two_certs) == 5
    assert two_errors == one_errors and len(one_errors) == 7
