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
