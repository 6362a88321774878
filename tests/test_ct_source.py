"""The ct source against real CT log servers on loopback: RFC 6962 and static-ct-api, verified, filtered, resumable."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scanner.core.config import Config
from scanner.sources import ct
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.ct.issuers import PRECERT_SIGNING_EKU, spki_sha256
from tests.loopback.ct_server import (
    CTServer,
    Faults,
    LogEntrySpec,
    LogKey,
    RFC6962Log,
    TiledLog,
    log_list,
    mth,
    rfc6962_log_entries,
    tiled_log_leaves,
)
from tests.synth import TestCA, der, pem, utc

REPO = Path(__file__).resolve().parents[1]
NAVIGLI = "static-ct-api_navigli2025h2"


def precert_signer(ca: TestCA) -> TestCA:
    """A precertificate-signing CA certified by `ca` (RFC 6962 section 3.1)."""
    signer = TestCA(name=f"{ca.name} Precertificate Signing")
    signer.cert = (
        x509.CertificateBuilder().subject_name(signer.subject).issuer_name(ca.subject)
        .public_key(signer.key.public_key()).serial_number(77)
        .not_valid_before(utc("2015-01-01T00:00")).not_valid_after(utc("2040-01-01T00:00"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([PRECERT_SIGNING_EKU]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return signer


@pytest.fixture(scope="module")
def world() -> dict:
    """The audited CA, another CA, and log entries of both (certs, precerts, precerts via a signing CA)."""
    ca, other = TestCA(name="Audited CA"), TestCA(name="Someone Else CA")
    signer = precert_signer(ca)
    ca_key_hash, other_key_hash = spki_sha256(ca.cert), spki_sha256(other.cert)
    specs, mine = [], set()
    when = utc("2024-03-01T00:00")
    for i in range(40):
        owner = ca if i % 4 == 0 else other
        kind = i % 3
        if owner is ca and i % 8 == 0:
            # Signed by the precertificate-signing CA: the chain starts with the signer, then the CA.
            c = signer.issue(serial=1000 + i, not_before=when, dns=[f"s{i}.example.com"], precert=True)
            spec = LogEntrySpec(der(c), (der(signer.cert), der(ca.cert)), True,
                                ca_key_hash if i % 16 else b"\0" * 32, 1_700_000_000_000 + i)
        elif kind == 0:
            c = owner.issue(serial=1000 + i, not_before=when, dns=[f"p{i}.example.com"], precert=True)
            spec = LogEntrySpec(der(c), (der(owner.cert),), True,
                                ca_key_hash if owner is ca else other_key_hash, 1_700_000_000_000 + i)
        else:
            c = owner.issue(serial=1000 + i, not_before=when, dns=[f"c{i}.example.com"])
            spec = LogEntrySpec(der(c), (der(owner.cert),), False, b"", 1_700_000_000_000 + i)
        specs.append(spec)
        if owner is ca:
            mine.add(hashlib.sha256(spec.cert_der).hexdigest())
    return {"ca": ca, "other": other, "signer": signer, "specs": specs, "mine": mine}


def config(tmp_path: Path, lists: dict, issuers: tuple[TestCA, ...] = (), **kw) -> Config:
    """A Config reading every log of the given log list."""
    path = tmp_path / "log_list.json"
    path.write_text(json.dumps(lists))
    certs = []
    for n, ca in enumerate(issuers):
        p = tmp_path / f"issuer{n}.pem"
        p.write_bytes(pem(ca.cert))
        certs.append(p)
    names = [lg["description"] for op in lists["operators"] for lg in op["logs"] + op["tiled_logs"]]
    kw.setdefault("retries", 3)
    kw.setdefault("timeout", 5.0)
    return Config(out_dir=tmp_path / "out", source="ct", log_list=path, logs=tuple(names),
                  issuer_certs=tuple(certs), cache_dir=tmp_path / "cache", **kw)


def read_ct(cfg: Config, **options) -> Iterator[SourceItem]:
    """The ct source's items for a scan's Config, with some options changed (progress, verify, resume)."""
    return ct.read(replace(ct.CtOptions.from_config(cfg), **options), store=cfg.store_file)


def split(items: list) -> tuple[list[RawCert], list[SourceError], list[SourceNotice]]:
    return ([i for i in items if isinstance(i, RawCert)], [i for i in items if isinstance(i, SourceError)],
            [i for i in items if isinstance(i, SourceNotice)])


def shas(certs: list[RawCert]) -> set[str]:
    return {hashlib.sha256(c.der).hexdigest() for c in certs}


def rfc6962_server(key: LogKey, specs: list[LogEntrySpec], **kw) -> CTServer:
    entries, hashes = rfc6962_log_entries(specs)
    return CTServer(RFC6962Log(entries, key.sth(len(entries), mth(hashes)), max_batch=kw.pop("max_batch", 1000)),
                    **kw)


def tiled_server(key: LogKey, specs: list[LogEntrySpec], origin: str, issuers: list[bytes], *,
                 gzip_stored: bool = False, **kw) -> CTServer:
    leaves, hashes = tiled_log_leaves(specs)
    log = TiledLog(b"".join(hashes), key.checkpoint(origin, len(hashes), mth(hashes)),
                   tile_leaf=leaves.__getitem__, issuers={hashlib.sha256(d).digest(): d for d in issuers},
                   gzip_stored=gzip_stored)
    return CTServer(log, **kw)


def test_rfc6962_log_yields_only_the_audited_cas_certificates_and_precertificates(tmp_path, world):
    key = LogKey()
    with rfc6962_server(key, world["specs"]) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Test RFC6962", url=srv.url)]), (world["ca"],), ct_batch=7)
        certs, errors, _ = split(list(read_ct(cfg, progress=False)))
    assert errors == []
    assert shas(certs) == world["mine"]
    assert len(certs) == len(world["mine"])
    precert = next(c for c in certs if c.provenance == f"{srv.url}#0")
    assert x509.load_der_x509_certificate(precert.der).extensions.get_extension_for_class(x509.PrecertPoison)
    assert precert.extra["first_seen"].isoformat().startswith("2023-11-14T22:13:20")


def test_tiled_log_yields_the_same_certificates_with_issuers_fetched_once(tmp_path, world):
    key = LogKey()
    specs = world["specs"] * 20  # 800 entries: three full tiles and a partial one
    chain = [der(world["ca"].cert), der(world["other"].cert), der(world["signer"].cert)]
    with tiled_server(key, specs, "tiled.test/log", chain) as srv:
        lg = key.log_json("Test tiled", monitoring_url=srv.url, submission_url="https://tiled.test/log/")
        cfg = config(tmp_path, log_list(tiled=[lg]), (world["ca"],), ct_parallel=3)
        certs, errors, _ = split(list(read_ct(cfg, progress=False)))
        issuer_requests = [r for r in srv.requests if "/issuer/" in r]
    assert errors == []
    assert shas(certs) == world["mine"]
    assert len(certs) == 20 * len(world["mine"])
    assert len(issuer_requests) == len(set(issuer_requests))
    assert any(r.endswith("tile/data/003.p/32") for r in srv.requests)


def test_fault_injecting_servers_give_the_same_certificates_as_clean_ones(tmp_path, world):
    key = LogKey()
    specs = world["specs"] * 8
    chain = [der(world["ca"].cert), der(world["other"].cert), der(world["signer"].cert)]
    faults_a, faults_b = Faults(every=2), Faults(every=2)
    with rfc6962_server(key, specs, max_batch=5, faults=faults_a) as a, \
            tiled_server(key, specs, "faulty.test", chain, faults=faults_b, gzip_encoding=True) as b:
        lists = log_list([key.log_json("Faulty RFC6962", url=a.url)],
                         [key.log_json("Faulty tiled", monitoring_url=b.url, submission_url="https://faulty.test")])
        cfg = config(tmp_path, lists, (world["ca"],), ct_batch=16, ct_parallel=3, retries=6)
        certs, errors, notices = split(list(read_ct(cfg, progress=False)))
    assert errors == [] and not any(n.partial for n in notices)
    assert sorted(c.provenance.split("#")[1] for c in certs if c.provenance.startswith(a.url)) == \
        sorted(c.provenance.split("#")[1] for c in certs if c.provenance.startswith(b.url))
    assert len(certs) == 2 * 8 * len(world["mine"])
    assert {"429", "503", "short"} <= set(faults_a.injected) | set(faults_b.injected)
    assert faults_a.injected.get("slow")  # some get-entries answered fewer entries than asked


def test_a_log_that_stays_down_is_reported_and_the_other_logs_are_still_read(tmp_path, world):
    key = LogKey()
    with rfc6962_server(key, world["specs"], faults=Faults(down=True)) as down, \
            rfc6962_server(key, world["specs"]) as up:
        lists = log_list([key.log_json("Down log", url=down.url), key.log_json("Up log", url=up.url)])
        cfg = config(tmp_path, lists, (world["ca"],), retries=1)
        certs, errors, notices = split(list(read_ct(cfg, progress=False)))
    assert shas(certs) == world["mine"]
    assert len(errors) == 1 and "Down log" in errors[0].error and "503" in errors[0].error
    assert any(n.partial and "Down log" in n.message for n in notices)


def test_a_tree_head_signed_by_another_key_is_refused_loudly(tmp_path, world):
    key, impostor = LogKey(), LogKey()
    with rfc6962_server(impostor, world["specs"]) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Impostor", url=srv.url)]), (world["ca"],))
        certs, errors, notices = split(list(read_ct(cfg, progress=False)))
    assert certs == []
    assert errors[0].stage == "verify" and "Impostor" in errors[0].error and "size 40" in errors[0].error
    assert any(n.partial for n in notices)


def test_entries_that_do_not_hash_to_the_signed_root_are_an_error(tmp_path, world):
    key = LogKey()
    entries, hashes = rfc6962_log_entries(world["specs"])
    wrong_root = mth(hashes[:-1] + [hashlib.sha256(b"forged").digest()])
    with CTServer(RFC6962Log(entries, key.sth(len(entries), wrong_root))) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Forked", url=srv.url)]), (world["ca"],))
        _, errors, _ = split(list(read_ct(cfg, progress=False)))
    assert [e.stage for e in errors] == ["verify"]
    assert "Forked" in errors[0].error and "tree size 40" in errors[0].error


def test_malformed_entries_are_reported_as_parse_errors_whatever_the_filter(tmp_path, world):
    key = LogKey()
    entries, _ = rfc6962_log_entries(world["specs"][:4])
    entries.insert(2, (b"\x00\x00" + b"\x01" * 9, b""))
    hashes = [hashlib.sha256(b"\x00" + li).digest() for li, _ in entries]
    with CTServer(RFC6962Log(entries, key.sth(len(entries), mth(hashes)))) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Broken entry", url=srv.url)]), (world["ca"],))
        certs, errors, _ = split(list(read_ct(cfg, progress=False)))
    assert [(e.provenance, e.stage) for e in errors] == [(f"{srv.url}#2", "parse")]
    assert len(certs) == 1


def test_pilot_2013_entries_with_a_placeholder_signature_fail_verification_unless_skipped(tmp_path, real_data):
    body = json.loads((real_data / "ct_get-entries_pilot_2013_4entries.json").read_text())
    entries = [(base64.b64decode(e["leaf_input"]), base64.b64decode(e["extra_data"])) for e in body["entries"]]
    sth = json.loads((real_data / "ct_get-sth_pilot_4entries_syntheticsig.json").read_text())
    key = LogKey()
    with CTServer(RFC6962Log(entries, sth, max_batch=3)) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Pilot replay", url=srv.url)]))
        certs, errors, notices = split(list(read_ct(cfg, progress=False)))
        assert certs == [] and errors[0].stage == "verify" and "size 4" in errors[0].error
        certs, errors, notices = split(list(read_ct(cfg, progress=False, verify=False)))
    assert errors == []
    assert len(certs) == 4
    names = [x509.load_der_x509_certificate(c.der).subject.rfc4514_string() for c in certs]
    assert "CN=mail.google.com" in names[0]
    assert any("NOT checked" in n.message and n.partial for n in notices)


def test_a_real_precert_entry_yields_the_full_precertificate_from_extra_data(tmp_path, real_data):
    body = json.loads((real_data / "ct_get-entries_precert_and_cert_testca.json").read_text())
    entries = [(base64.b64decode(e["leaf_input"]), base64.b64decode(e["extra_data"])) for e in body["entries"]]
    key = LogKey()
    hashes = [hashlib.sha256(b"\x00" + li).digest() for li, _ in entries]
    with CTServer(RFC6962Log(entries, key.sth(2, mth(hashes)))) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Test CA entries", url=srv.url)]))
        certs, errors, _ = split(list(read_ct(cfg, progress=False)))
    assert errors == [] and len(certs) == 2
    pre = x509.load_der_x509_certificate(certs[0].der)
    assert pre.extensions.get_extension_for_class(x509.PrecertPoison).critical
    assert "GeoTrust EV SSL TEST CA" in pre.issuer.rfc4514_string()


def navigli_files(real_data: Path, size: int, gz: bool) -> tuple[dict[str, bytes], bytes]:
    """The real navigli tiles a tree of `size` (778 or 1024) serves, and its leaf hashes."""
    tiles = real_data / NAVIGLI / "tile"
    names = ["000", "001", "002"] + (["003"] if size == 1024 else ["003.p/10"])
    files = {}
    for name in names:
        for kind in ("0", "data"):
            body = (tiles / kind / name).read_bytes()
            files[f"tile/{kind}/{name}"] = gzip.compress(body) if gz and kind == "data" else body
    hashes = b"".join((tiles / "0" / n).read_bytes() for n in names)
    return files, hashes


@pytest.mark.parametrize("size,gz,encoding", [(778, False, False), (778, True, False), (1024, False, True)])
def test_navigli_tiles_are_read_and_verified_across_the_partial_tile(tmp_path, real_data, size, gz, encoding):
    key = LogKey()
    files, hashes = navigli_files(real_data, size, gz)
    leaf_hashes = [hashes[i:i + 32] for i in range(0, len(hashes), 32)]
    log = TiledLog(hashes, key.checkpoint("navigli.test", size, mth(leaf_hashes)), files=files)
    with CTServer(log, gzip_encoding=encoding) as srv:
        lg = key.log_json("navigli replay", monitoring_url=srv.url, submission_url="https://navigli.test/")
        cfg = config(tmp_path, log_list(tiled=[lg]))
        certs, errors, _ = split(list(read_ct(cfg, progress=False)))
    assert errors == []
    assert len(certs) == size
    assert certs[-1].provenance == f"{srv.url}#{size - 1}"
    assert all(x509.load_der_x509_certificate(c.der).extensions.get_extension_for_class(x509.PrecertPoison)
               for c in certs[::97])


def test_navigli_read_from_the_middle_verifies_the_prefix_from_higher_tiles(tmp_path, real_data):
    key = LogKey()
    files, hashes = navigli_files(real_data, 778, False)
    leaf_hashes = [hashes[i:i + 32] for i in range(0, len(hashes), 32)]
    with CTServer(TiledLog(hashes, key.checkpoint("navigli.test", 778, mth(leaf_hashes)), files=files)) as srv:
        lg = key.log_json("navigli replay", monitoring_url=srv.url, submission_url="https://navigli.test/")
        cfg = config(tmp_path, log_list(tiled=[lg]), log_start=600, log_end=700)
        certs, errors, _ = split(list(read_ct(cfg, progress=False)))
        assert any("tile/1/000.p/3" in r for r in srv.requests)
    assert errors == []
    assert [c.provenance.split("#")[1] for c in certs] == [str(i) for i in range(600, 700)]


@pytest.mark.parametrize("tamper", ["level0", "data"])
def test_a_tampered_navigli_tile_is_an_error_naming_the_log_and_size(tmp_path, real_data, tamper):
    key = LogKey()
    files, hashes = navigli_files(real_data, 778, False)
    leaf_hashes = [hashes[i:i + 32] for i in range(0, len(hashes), 32)]
    cp = key.checkpoint("navigli.test", 778, mth(leaf_hashes))
    if tamper == "level0":
        body = bytearray(files["tile/0/001"])
        body[40] ^= 1
        files["tile/0/001"] = bytes(body)
    else:
        body = bytearray(files["tile/data/001"])
        body[100] ^= 1  # inside the first TimestampedEntry, which the leaf hash covers
        files["tile/data/001"] = bytes(body)
    with CTServer(TiledLog(hashes, cp, files=files)) as srv:
        lg = key.log_json("navigli replay", monitoring_url=srv.url, submission_url="https://navigli.test/")
        cfg = config(tmp_path, log_list(tiled=[lg]), ct_parallel=1)
        certs, errors, notices = split(list(read_ct(cfg, progress=False)))
    assert len(certs) == 256  # the first tile verified; nothing from the tampered tile on
    assert errors[0].stage == "verify" and "navigli replay" in errors[0].error and "778" in errors[0].error
    assert any(n.partial for n in notices)


def test_kill_9_mid_run_then_rerun_reports_every_certificate_once(tmp_path, world):
    key = LogKey()
    specs = world["specs"] * 10
    chain = [der(world["ca"].cert), der(world["other"].cert), der(world["signer"].cert)]
    with rfc6962_server(key, specs) as a, tiled_server(key, specs, "kill.test", chain) as b:
        lists = log_list([key.log_json("Kill RFC6962", url=a.url)],
                         [key.log_json("Kill tiled", monitoring_url=b.url, submission_url="https://kill.test")])
        cfg_path = tmp_path / "args.json"
        config(tmp_path, lists, (world["ca"],))  # writes the log list and issuer PEM
        cfg_path.write_text(json.dumps({"tmp": str(tmp_path)}))
        out = tmp_path / "seen.txt"
        script = textwrap.dedent(f"""
            import os, signal, sys
            from pathlib import Path
            from scanner.sources.base import RawCert
            from scanner.sources.ct import CtOptions, read
            tmp = Path({str(tmp_path)!r})
            options = CtOptions(log_list=tmp / "log_list.json", logs=("Kill RFC6962", "Kill tiled"),
                                issuer_certs=(tmp / "issuer0.pem",), batch=9, parallel=3, progress=False)
            kill_at = int(sys.argv[1])
            n = 0
            with open({str(out)!r}, "w") as f:  # what this run handed over
                for item in read(options, store=tmp / "cache" / "store.sqlite3"):
                    if isinstance(item, RawCert):
                        n += 1
                        if n == kill_at:
                            os.kill(os.getpid(), signal.SIGKILL)  # handed over, not yet recorded
                        f.write(item.provenance + "\\n")
                    elif getattr(item, "partial", False) or hasattr(item, "stage"):
                        f.write("PROBLEM " + repr(item).replace(" ", "_") + "\\n")
                    f.flush()
        """)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # Killed in the RFC 6962 log, then in the tiled log, then left to finish.
        # A rerun hands over what earlier runs stored as well as what it fetches, each entry once.
        for kill_at, code in (("37", -signal.SIGKILL), ("70", -signal.SIGKILL), ("0", 0), ("0", 0)):
            run = subprocess.run([sys.executable, "-c", script, kill_at], env=env, cwd=REPO, check=False)
            assert run.returncode == code
            seen = out.read_text().split()
            assert len(seen) == len(set(seen))
            assert len(seen) >= int(kill_at) - 1
    assert not [s for s in seen if s.startswith("PROBLEM")]
    assert len(seen) == 2 * 10 * len(world["mine"])
    assert {s.split("#")[0] for s in seen} == {a.url, b.url}


def test_progress_bar_shows_the_log_name_rate_and_eta_only_when_asked(tmp_path, world, capsys):
    key = LogKey()
    with rfc6962_server(key, world["specs"]) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Progress log", url=srv.url)]), (world["ca"],),
                     ct_batch=10)
        list(read_ct(cfg, progress=False))
        assert "Progress log" not in capsys.readouterr().err
        list(read_ct(cfg, progress=True, resume=False))
    err = capsys.readouterr().err
    assert "Progress log" in err and "entries/s" in err and "100%" in err and "<00:00" in err


def test_a_rerun_after_a_finished_run_fetches_nothing_and_reports_everything(tmp_path, world):
    key = LogKey()
    with rfc6962_server(key, world["specs"]) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Resume log", url=srv.url)]), (world["ca"],))
        first, _, _ = split(list(read_ct(cfg, progress=False)))
        asked = len(srv.requests)
        again, errors, notices = split(list(read_ct(cfg, progress=False)))
        rerun_asked = srv.requests[asked:]
        fresh, _, _ = split(list(read_ct(cfg, progress=False, resume=False)))
    assert not [r for r in rerun_asked if "get-entries" in r]  # only the tree head was asked again
    assert len(first) == len(fresh) == len(world["mine"]) and errors == []
    assert [(c.der, c.provenance) for c in again] == [(c.der, c.provenance) for c in first]
    assert any("resumed at entry 40" in n.message for n in notices)


def theirs(world: dict) -> set[str]:
    """The certificates of the other CA in the world's log."""
    return {hashlib.sha256(s.cert_der).hexdigest() for s in world["specs"]} - world["mine"]


@pytest.mark.parametrize("kind", ["rfc6962", "tiled"])
def test_a_scan_of_another_issuer_over_the_same_log_and_cache_reads_it_for_that_issuer(tmp_path, world, kind):
    key = LogKey()
    chain = [der(world["ca"].cert), der(world["other"].cert), der(world["signer"].cert)]
    server = rfc6962_server(key, world["specs"]) if kind == "rfc6962" else \
        tiled_server(key, world["specs"], "issuers.test", chain)
    with server as srv:
        lg = key.log_json("Shared log", url=srv.url) if kind == "rfc6962" else \
            key.log_json("Shared log", monitoring_url=srv.url, submission_url="https://issuers.test/")
        lists = log_list([lg]) if kind == "rfc6962" else log_list(tiled=[lg])
        mine = split(list(read_ct(config(tmp_path, lists, (world["ca"],)), progress=False)))[0]
        other_cfg = config(tmp_path, lists, (world["other"],))
        other, errors, _ = split(list(read_ct(other_cfg, progress=False)))
        other_again = split(list(read_ct(other_cfg, progress=False)))[0]
        mine_again = split(list(read_ct(config(tmp_path, lists, (world["ca"],)), progress=False)))[0]
    assert errors == []
    assert shas(mine) == shas(mine_again) == world["mine"]
    assert shas(other) == shas(other_again) == theirs(world)
    assert len(other_again) == len(other)


def test_entries_that_do_not_hash_to_the_signed_root_contribute_no_certificate_on_any_run(tmp_path, world):
    key = LogKey()
    entries, hashes = rfc6962_log_entries(world["specs"])
    wrong_root = mth(hashes[:-1] + [hashlib.sha256(b"forged").digest()])
    with CTServer(RFC6962Log(entries, key.sth(len(entries), wrong_root), max_batch=7)) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Forked", url=srv.url)]), (world["ca"],), ct_batch=7)
        runs = [split(list(read_ct(cfg, progress=False))) for _ in range(2)]
    for certs, errors, notices in runs:
        assert certs == []
        assert [e.stage for e in errors] == ["verify"]
        assert mth(hashes).hex() in errors[0].error and wrong_root.hex() in errors[0].error
        assert any(n.partial and "Forked" in n.message for n in notices)


def test_a_verified_run_does_not_trust_what_an_unverified_run_read(tmp_path, world):
    key = LogKey()
    entries, hashes = rfc6962_log_entries(world["specs"])
    wrong_root = mth(hashes[:-1] + [hashlib.sha256(b"forged").digest()])
    with CTServer(RFC6962Log(entries, key.sth(len(entries), wrong_root))) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Forked", url=srv.url)]), (world["ca"],))
        unverified, _, _ = split(list(read_ct(cfg, progress=False, verify=False)))
        verified, errors, _ = split(list(read_ct(cfg, progress=False)))
    assert shas(unverified) == world["mine"]
    assert verified == [] and [e.stage for e in errors] == ["verify"]


def test_a_log_that_grew_is_read_from_where_the_last_run_stopped_and_its_new_root_checked(tmp_path, world):
    key = LogKey()
    specs = world["specs"] * 3
    grown, hashes = rfc6962_log_entries(specs)
    small = len(world["specs"])
    with CTServer(RFC6962Log(grown[:small], key.sth(small, mth(hashes[:small])))) as srv:
        cfg = config(tmp_path, log_list([key.log_json("Growing", url=srv.url)]), (world["ca"],), ct_batch=10)
        before, _, _ = split(list(read_ct(cfg, progress=False)))
        srv.log = RFC6962Log(grown, key.sth(len(grown), mth(hashes)))  # the log gained entries since
        asked = len(srv.requests)
        after, errors, notices = split(list(read_ct(cfg, progress=False)))
        starts = [int(r.split("start=")[1].split("&")[0]) for r in srv.requests[asked:] if "get-entries" in r]
    assert shas(before) == world["mine"] and len(before) == len(world["mine"])
    assert errors == [] and len(after) == 3 * len(world["mine"])
    assert min(starts) == small  # entries of the first run came from the store
    assert any(f"resumed at entry {small}" in n.message for n in notices)


def test_a_checkpoint_that_answers_404_is_missing_not_unreachable(tmp_path, world):
    key = LogKey()
    chain = [der(world["ca"].cert)]
    with tiled_server(key, world["specs"], "gone.test", chain) as srv:
        lg = key.log_json("Gone log", monitoring_url=srv.url + "elsewhere/", submission_url="https://gone.test/")
        cfg = config(tmp_path, log_list(tiled=[lg]), (world["ca"],), retries=1)
        certs, errors, notices = split(list(read_ct(cfg, progress=False)))
    assert certs == []
    assert len(errors) == 1 and "missing (404" in errors[0].error and "Gone log" in errors[0].error
    assert any(n.partial and "missing (404)" in n.message for n in notices)


def test_offline_asks_no_log_and_reports_what_earlier_checked_reads_kept(tmp_path, world):
    key, never = LogKey(), LogKey()
    with rfc6962_server(key, world["specs"]) as srv, rfc6962_server(never, world["specs"]) as other:
        lists = log_list([key.log_json("Read log", url=srv.url), never.log_json("Never read log", url=other.url)])
        cfg = config(tmp_path, lists, (world["ca"],))
        online, _, _ = split(list(read_ct(cfg, progress=False, logs=("Read log",))))
        asked, asked_other = len(srv.requests), len(other.requests)
        both = config(tmp_path, lists, (world["ca"],), offline=True)
        offline, errors, notices = split(list(read_ct(both, progress=False)))
        assert len(srv.requests) == asked and len(other.requests) == asked_other  # no log was asked
    assert errors == [] and [(c.der, c.provenance) for c in offline] == [(c.der, c.provenance) for c in online]
    said = {n.message: n.partial for n in notices}
    read_note = next(m for m in said if m.startswith("offline: CT log Read log was not asked"))
    assert "entries 0..39" in read_note and not said[read_note]
    never_note = next(m for m in said if m.startswith("offline: CT log Never read log"))
    assert said[never_note]  # a log never read leaves part of the selection unread: partial
