"""Each network client against peers that misbehave on purpose: a clear error, bounded time, the run goes on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from scanner.core.config import Config
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.rdap import RdapClient
from scanner.enrich.revocation.issuers import issuers_by_key_id
from scanner.parse.certs import parse_der, records_frame
from scanner.pipeline import check_revocation
from scanner.sources import ct
from scanner.sources.base import SourceError
from scanner.sources.ct.options import CtOptions
from scanner.testsites.checks import served_chain
from tests.loopback.ct_server import (
    CTServer,
    LogEntrySpec,
    LogKey,
    RFC6962Log,
    TiledLog,
    log_list,
    mth,
    rfc6962_log_entries,
    tiled_log_leaves,
)
from tests.loopback.hostile import HostileServer
from tests.loopback.registry_servers import write_bootstrap
from tests.synth import TestCA, der, pem, utc


class DrippingTcp:
    """A TCP server on 127.0.0.1 that reads what comes and answers `reply`, one byte every `gap` seconds."""

    def __init__(self, reply: bytes, gap: float) -> None:
        self.reply, self.gap = reply, gap
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                for byte in self.reply:
                    if self.stop.wait(self.gap):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture()
def dripping_handshake():
    # A TLS record header promising a 16 KB ServerHello, then its body a byte every 0.3 s: every
    # read completes inside the 1 s timeout and the handshake would take over an hour.
    server = DrippingTcp(b"\x16\x03\x03\x40\x00" + b"\x02" * 16384, gap=0.3)
    yield server
    server.close()


def test_a_tls_server_that_never_finishes_its_handshake_is_cut_off_at_the_timeout(dripping_handshake):
    # The timeout bounds the whole handshake, not each read (CPython keeps one deadline for it).
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="handshake"):
        served_chain("127.0.0.1", dripping_handshake.port, "slow.example", timeout=1.0)
    assert time.monotonic() - start < 6


def test_a_tls_server_that_answers_garbage_is_a_tls_error_at_once():
    server = DrippingTcp(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4, gap=0.0)
    try:
        start = time.monotonic()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            served_chain("127.0.0.1", server.port, "garbage.example", timeout=1.0)
        assert time.monotonic() - start < 3
    finally:
        server.close()


# --- revocation: OCSP responders, CRLs and caIssuers named in certificates ---------------------------

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def hostile():
    with HostileServer({"/bomb": "gzip_bomb", "/endless": "endless", "/drip": "drip",
                        "/huge": "length_huge", "/loop": "redirect_loop", "/file": "redirect_file"},
                       drip_gap=0.2) as srv:  # each byte inside the 0.5 s read timeout: only the deadline ends it
        yield srv


def _certs(ca: TestCA, specs: list[dict]) -> pd.DataFrame:
    rows = []
    for serial, spec in enumerate(specs, start=1):
        cert = ca.issue(serial=serial, not_before=NOW - timedelta(days=10), dns=[f"h{serial}.example"], **spec)
        rows.append(parse_der(der(cert), source="files", provenance=f"serial {serial}"))
    return records_frame(rows)


def _errors(check) -> dict[str, str]:
    return {row["provenance"]: row["error"] for row in check.errors}


def test_hostile_revocation_servers_each_cost_one_error_row_naming_the_limit_and_the_run_goes_on(hostile):
    ca = TestCA(name="ctscan Hostile Revocation CA")
    certs = _certs(ca, [
        {"ocsp_url": hostile.url("/bomb"), "crl_url": hostile.url("/endless")},
        {"ocsp_url": hostile.url("/drip"), "crl_url": hostile.url("/huge")},
        {"ocsp_url": hostile.url("/loop"), "crl_url": hostile.url("/file")},
        {"ocsp_url": "ldap://ldap.example/ocsp", "crl_url": "ldap://ldap.example/cn=CA?certificateRevocationList"},
    ])
    config = Config(out_dir=Path("/tmp/unused"), check_revocation=True, timeout=0.5, retries=1, ocsp_rate=0,
                    max_crl_bytes=8 << 20)
    start = time.monotonic()
    check = check_revocation(certs, config, issuers=issuers_by_key_id([ca.cert]), now=NOW, backoff_base=0.01)
    took = time.monotonic() - start
    errors = _errors(check)
    crls = {row["url"]: row for row in check.crls.to_dict("records")}
    assert "larger than the 8.0 MiB limit" in crls[hostile.url("/endless")]["error"]
    assert "raise --max-crl-bytes" in errors[hostile.url("/endless")]
    assert "declared 10.0 GiB (Content-Length)" in crls[hostile.url("/huge")]["error"]
    assert "not fetched: file scheme" in crls[hostile.url("/file")]["error"]
    assert "LDAP and others are not fetched" in crls["ldap://ldap.example/cn=CA?certificateRevocationList"]["error"]
    ocsp = " | ".join(e for p, e in errors.items() if "OCSP" in e)
    assert "OCSP response larger than the 1.0 MiB limit" in ocsp  # the bomb
    assert "OCSP response not complete within the 3 s deadline" in ocsp  # the drip
    assert "more than 5 redirects" in ocsp
    assert "OCSP not asked: 'ldap://ldap.example/ocsp' is not an http or https URL" in errors["ldap://ldap.example/ocsp"]
    # every certificate asked is still there, each with what could not be learned about it
    assert set(check.ocsp_results["sha256"]) == set(certs["sha256"][:3])
    assert took < 30, f"{took:.0f} s"


def test_a_caissuers_url_that_drips_is_an_error_row_and_the_certificate_is_kept(hostile):
    ca = TestCA(name="ctscan Hostile caIssuers CA")
    certs = _certs(ca, [{"ocsp_url": hostile.url("/drip"), "ca_issuers_url": hostile.url("/drip")}])
    certs["ca_issuers"] = [[hostile.url("/drip")]]
    config = Config(out_dir=Path("/tmp/unused"), check_revocation=True, timeout=0.5, retries=0, ocsp_rate=0,
                    fetch_crls=False)
    start = time.monotonic()
    check = check_revocation(certs, config, issuers={}, now=NOW, backoff_base=0.01)
    assert time.monotonic() - start < 15
    assert any("caIssuers certificate bundle not complete within the 3 s deadline" in e
               for e in _errors(check).values()), check.errors


# --- CT logs: a data tile or a get-entries answer replaced by a hostile one ---------------------------


@pytest.fixture(scope="module")
def ct_world():
    ca = TestCA(name="ctscan Hostile CT CA")
    when = utc("2024-03-01T00:00")
    specs = [LogEntrySpec(der(ca.issue(serial=100 + i, not_before=when, dns=[f"t{i}.example.com"])),
                          (der(ca.cert),), False, b"", 1_700_000_000_000 + i) for i in range(20)]
    return ca, specs


def _ct_read(tmp_path, srv, key, ca, kind, timeout=0.5):
    lists = log_list([key.log_json("Hostile RFC6962", url=srv.url)]) if kind == "rfc6962" else \
        log_list(tiled=[key.log_json("Hostile tiled", monitoring_url=srv.url, submission_url="https://hostile.test/log/")])
    (tmp_path / "log_list.json").write_text(json.dumps(lists))
    (tmp_path / "issuer.pem").write_bytes(pem(ca.cert))
    names = [lg["description"] for op in lists["operators"] for lg in op["logs"] + op["tiled_logs"]]
    # each byte of a drip inside the read timeout: only the deadline (30 read timeouts) ends it
    options = CtOptions(log_list=tmp_path / "log_list.json", logs=tuple(names),
                        issuer_certs=(tmp_path / "issuer.pem",), timeout=timeout, retries=1, progress=False)
    start = time.monotonic()
    items = list(ct.read(options, store=tmp_path / "store.sqlite"))
    return items, time.monotonic() - start


@pytest.mark.parametrize("fault, message", [
    ("gzip_bomb", "larger than the 64.0 MiB limit"),
    ("endless", "larger than the 64.0 MiB limit"),
    ("drip", "not complete within the 6 s deadline"),  # 30 x the 0.2 s timeout (the default, 30 x 10 s: 5 min)
    ("length_huge", "declared 10.0 GiB"),
])
def test_a_hostile_data_tile_is_an_error_naming_its_url_and_the_limit_not_a_hang(tmp_path, ct_world, fault, message):
    ca, specs = ct_world
    key = LogKey()
    leaves, hashes = tiled_log_leaves(specs)
    log = TiledLog(b"".join(hashes), key.checkpoint("hostile.test/log", len(hashes), mth(hashes)),
                   tile_leaf=leaves.__getitem__, issuers={hashlib.sha256(der(ca.cert)).digest(): der(ca.cert)})
    # the drip: a byte every 0.08 s, inside the 0.2 s read timeout; the other faults keep the 0.5 s timeout
    timeout = 0.2 if fault == "drip" else 0.5
    with CTServer(log, hostile={"tile/data/": fault}, drip_gap=0.08) as srv:
        items, took = _ct_read(tmp_path, srv, key, ca, "tiled", timeout=timeout)
    errors = [i for i in items if isinstance(i, SourceError)]
    assert errors and any(message in e.error and "tile/data/" in (e.provenance + e.error) for e in errors), errors
    assert took < 60


@pytest.mark.parametrize("fault, message", [("gzip_bomb", "larger than the 64.0 MiB limit"),
                                            ("deep_json", "nested deeper than")])
def test_a_hostile_get_entries_answer_is_an_error_not_a_crash(tmp_path, ct_world, fault, message):
    ca, specs = ct_world
    key = LogKey()
    entries, hashes = rfc6962_log_entries(specs)
    with CTServer(RFC6962Log(entries, key.sth(len(entries), mth(hashes))), hostile={"ct/v1/get-entries": fault}) as srv:
        items, took = _ct_read(tmp_path, srv, key, ca, "rfc6962")
    errors = [i for i in items if isinstance(i, SourceError)]
    assert errors and any(message in e.error for e in errors), errors
    assert took < 60


# --- RDAP: a registry that misbehaves ------------------------------------------------------------


def test_a_hostile_rdap_server_leaves_its_domains_unknown_never_unregistered(tmp_path):
    with HostileServer({"/bomb/": "gzip_bomb", "/endless/": "endless", "/deep/": "deep_json",
                        "/huge/": "length_huge", "/drip/": "drip"}, drip_gap=0.2) as srv:
        boot = write_bootstrap(tmp_path / "dns.json", {tld: f"{srv.base_url}/{tld}/"
                                                       for tld in ("bomb", "endless", "deep", "huge", "drip")})
        config = Config(out_dir=tmp_path, rdap_bootstrap=boot, cache_dir=tmp_path / "cache", timeout=1.0,
                        retries=0, rdap_rate=0)

        async def run() -> list[Registration]:
            client = RdapClient(config, backoff_base=0.01)
            try:
                names = ("a.bomb", "a.endless", "a.deep", "a.huge", "a.drip")
                return list(await asyncio.gather(*(client.lookup(n) for n in names)))
            finally:
                await client.close()

        start = time.monotonic()
        got = {r.domain: r for r in asyncio.run(run())}
        took = time.monotonic() - start
    assert {r.status for r in got.values()} == {RegistrationStatus.UNKNOWN}
    assert "RDAP answer larger than the 4.0 MiB limit" in got["a.bomb"].detail
    assert "RDAP answer larger than the 4.0 MiB limit" in got["a.endless"].detail
    assert "declared 10.0 GiB" in got["a.huge"].detail
    assert "non-JSON body" in got["a.deep"].detail  # a ValueError, not a RecursionError that ends the run
    assert took < 20


def test_a_scan_whose_data_tile_is_a_gzip_bomb_finishes_partial_exit_3_and_says_why(tmp_path, ct_world, capsys):
    from scanner.cli import main

    ca, specs = ct_world
    key = LogKey()
    leaves, hashes = tiled_log_leaves(specs)
    log = TiledLog(b"".join(hashes), key.checkpoint("hostile.test/log", len(hashes), mth(hashes)),
                   tile_leaf=leaves.__getitem__, issuers={hashlib.sha256(der(ca.cert)).digest(): der(ca.cert)})
    (tmp_path / "issuer.pem").write_bytes(pem(ca.cert))
    with CTServer(log, hostile={"tile/data/": "gzip_bomb"}) as srv:
        lists = tmp_path / "log_list.json"
        lists.write_text(json.dumps(log_list(tiled=[key.log_json("Hostile tiled", monitoring_url=srv.url,
                                                                 submission_url="https://hostile.test/log/")])))
        args = ["scan", "--source", "ct", "--log-list", str(lists), "--log", "Hostile tiled",
                "--issuer-cert", str(tmp_path / "issuer.pem"), "--registration", "off", "--timeout", "2",
                "--retries", "0", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q"]
        codes = [main(args), main(args)]  # the rerun meets the same bomb and says the same
    assert codes == [3, 3]
    err = capsys.readouterr().err
    assert "partial" in err and "Traceback" not in err
    errors = (tmp_path / "out" / "errors.csv").read_text()
    assert "CT data tile larger than the 64.0 MiB limit" in errors and "tile/data/" in errors


@pytest.mark.parametrize("value", ["lots", "0", "5T", "-1M"])
def test_a_max_crl_bytes_that_is_no_size_is_a_usage_error(tmp_path, value, capsys):
    from scanner.cli import main

    assert main(["scan", str(tmp_path), "--max-crl-bytes", value, "--out", str(tmp_path / "o")]) == 2
    assert "--max-crl-bytes" in capsys.readouterr().err


# --- crt.sh JSON: an answer that is no answer ---------------------------------------------------------


@pytest.mark.parametrize("fault, message", [
    ("length_huge", "crt.sh answer declared 10.0 GiB (Content-Length)"),
    ("deep_json", "nested deeper than"),
    ("drip", "crt.sh answer not complete within the 9 s deadline"),
    ("redirect_file", "not fetched: file scheme"),
])
def test_a_hostile_crtsh_answer_is_an_error_row_naming_the_limit_and_the_search(tmp_path, fault, message):
    from scanner.sources import crtsh_json

    with HostileServer(default=fault, drip_gap=0.05) as srv:  # each byte inside the 0.1 s read timeout
        options = crtsh_json.CrtshJsonOptions(identities=("cualtis.net",), url=srv.url("/"), rate=0,
                                              timeout=0.1, retries=1)
        start = time.monotonic()
        items = list(crtsh_json.read(options, store=tmp_path / "store.sqlite"))
        took = time.monotonic() - start
    errors = [i for i in items if isinstance(i, SourceError)]
    assert errors and any(message in e.error for e in errors), errors
    assert took < 40


def test_a_tile_stored_gzipped_is_inflated_within_the_tile_cap_and_a_bomb_of_one_is_refused():
    # Served without Content-Encoding, so only maybe_gunzip stands between the tile and memory.
    import gzip

    from scanner.core.net import FetchError
    from scanner.sources.ct.context import maybe_gunzip

    tile = b"leaf" * 1000
    assert maybe_gunzip(gzip.compress(tile[:2000]) + gzip.compress(tile[2000:])) == tile  # two members
    cut = gzip.compress(tile)[:-12]
    assert maybe_gunzip(cut) == cut  # cut short: the bytes as they came, for the leaf parser to refuse
    with pytest.raises(FetchError, match="stored gzip tile inflates past the 1.0 MiB limit"):
        maybe_gunzip(gzip.compress(b"\0" * (4 << 20)), url="http://log.test/tile/data/000", max_bytes=1 << 20)
