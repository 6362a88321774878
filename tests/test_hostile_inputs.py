"""The documented CLI against hostile inputs: odd certificates, CRLs, files and flags, run in-process.

Every certificate given must end up as a row of the reports or of errors.csv, the reports must stay
well-formed and inert whatever the certificates say, and a bad item must never fail the whole scan.
Certificates the `cryptography` builder refuses to make are re-encoded by hand and re-signed.
"""

from __future__ import annotations

import csv
import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.cli import main
from scanner.pipeline import load_scan
from tests.synth import TestCA, der, der_children, new_key, pem, tlv, utc

NB = utc("2024-01-10T00:00")


# --- DER by hand: what the builder refuses (bad strings, reason codes, validity order) ------------

def _int(value: int) -> bytes:
    return tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def _name(*attrs: tuple[str, int, bytes]) -> bytes:
    """A DER Name from (OID hex, string tag, raw value bytes), one attribute per RDN."""
    return tlv(0x30, b"".join(tlv(0x31, tlv(0x30, tlv(0x06, bytes.fromhex(oid)) + tlv(tag, raw)))
                               for oid, tag, raw in attrs))


def _resign(signed_bytes: bytes, tbs: bytes, ca: TestCA, edit) -> bytes:
    """The certificate or CRL with its TBS children edited by `edit`, signed again by `ca`."""
    new_tbs = tlv(0x30, b"".join(edit(der_children(tbs))))
    signature = ca.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, new_tbs + der_children(signed_bytes)[1] + tlv(0x03, b"\x00" + signature))


def _scan(tmp_path: Path, files: dict[str, bytes], crls: list[bytes] = (), *extra: str):
    """Write the files, run `ctscan scan` on them; (exit code, report folder)."""
    src = tmp_path / "in"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    src.mkdir(exist_ok=True)
    argv = ["scan", str(src)]
    for n, crl in enumerate(crls):
        (tmp_path / f"ca{n}.crl").write_bytes(crl)
        argv += ["--crl", str(tmp_path / f"ca{n}.crl")]
    out = tmp_path / "out"
    code = main([*argv, "--registration", "off", "--no-cache", "--workers", "1", "--out", str(out), "-q", *extra])
    return code, out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _signals(out: Path) -> dict[str, str]:
    return {r["sha256"]: r["signals"] for r in _rows(out / "suspects.csv")}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- what already behaves: one corpus of odd certificates, every one accounted for ---------------

def test_a_corpus_of_odd_certificates_and_non_certificates_is_fully_accounted_for(tmp_path, test_ca):
    key = new_key()
    base = test_ca.issue(serial=77, not_before=NB, dns=["ok.example.com"])
    odd_certs = {
        "formula.pem": test_ca.issue(serial=1, not_before=NB, org='=HYPERLINK("http://evil","x")', cn="-2+3",
                                     dns=["@sum.internal"]),
        "control.pem": test_ca.issue(serial=2, not_before=NB, org="Evil\nCorp\x00\x07\x1b[31m", dns=["a.local"]),
        "empty-subject.pem": test_ca.issue(serial=3, not_before=NB, country=None, dns=["host.local"]),
        "cn-only.pem": test_ca.issue(serial=4, not_before=NB, cn="www.example.org"),
        "dup-sans.pem": test_ca.issue(serial=5, not_before=NB, dns=["dup.local"] * 5),
        "huge-serial.pem": test_ca.issue(serial=2**159 - 1, not_before=NB, dns=["huge.local"]),
        "before-1970.pem": test_ca.issue(serial=6, not_before=datetime(1950, 1, 1, tzinfo=timezone.utc), dns=["old.local"]),
    }
    files = {name: pem(c) for name, c in odd_certs.items()}
    hand_made = {
        "negative-serial.der": lambda t: [t[0], _int(-5), *t[2:]],
        "zero-serial.der": lambda t: [t[0], _int(0), *t[2:]],
        "inverted-validity.der": lambda t: [*t[:4], tlv(0x30, tlv(0x17, b"240601000000Z") + tlv(0x17, b"240101000000Z")), *t[5:]],
        "year-1-to-9999.der": lambda t: [*t[:4], tlv(0x30, tlv(0x18, b"00010101000000Z") + tlv(0x18, b"99991231235959Z")), *t[5:]],
    }
    for name, edit in hand_made.items():
        files[name] = _resign(der(base), base.tbs_certificate_bytes, test_ca, edit)
    files["twice/formula.der"] = der(odd_certs["formula.pem"])  # the same certificate again
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    not_certs = {
        "key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
        "key.der": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
        "csr.pem": csr.public_bytes(serialization.Encoding.PEM),
        "csr.der": csr.public_bytes(serialization.Encoding.DER),
        "empty.pem": b"",
        "truncated.der": der(base)[:100],
        "crl.der": der(test_ca.crl([], this_update=NB)),
    }
    files.update(not_certs)
    (tmp_path / "in" / "empty-folder").mkdir(parents=True)

    code, out = _scan(tmp_path, files)

    assert code == 0
    certs = load_scan(out).certs
    errors = _rows(out / "errors.csv")
    assert len(certs) == len(odd_certs) + len(hand_made)  # the second copy is the same row
    assert sorted(Path(e["provenance"].split("#")[0]).name for e in errors) == sorted(not_certs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == len(files) and summary["duplicates_merged"] == 1
    assert summary["read"] == (summary["certificates"] + summary["duplicates_merged"]
                               + summary["precertificate_pairs_merged"] + summary["errors"])
    assert set(certs["serial"]) >= {"-05", "00", "7f" + "f" * 38}
    suspects = _rows(out / "suspects.csv")
    by_serial = {r["serial"]: r for r in suspects}
    assert by_serial["01"]["subject_o"].startswith("'=") and by_serial["01"]["subject_cn"] == "'-2+3"
    assert "\x00" not in by_serial["02"]["subject_o"] and "\x1b" not in by_serial["02"]["subject_o"]
    book = openpyxl.load_workbook(out / "suspects.xlsx")
    cells = [c for row in book["All suspects"].iter_rows(values_only=True) for c in row if isinstance(c, str)]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@")) and c != "-"]


# --- CRLs ------------------------------------------------------------------------------------

def _crl_entry(serial: int, when: bytes, reason: bytes | None = None) -> bytes:
    exts = b""
    if reason is not None:  # reasonCode extension with a raw ENUMERATED value
        exts = tlv(0x30, tlv(0x30, tlv(0x06, bytes.fromhex("551d15")) + tlv(0x04, tlv(0x0A, reason))))
    return tlv(0x30, _int(serial) + tlv(0x17, when) + exts)


def test_a_crl_entry_with_an_unknown_reason_code_keeps_the_scan_and_every_revocation(tmp_path, test_ca):
    """reasonCode 7 is unassigned in RFC 5280; cryptography refuses to decode it."""
    a = test_ca.issue(serial=0x70, not_before=NB, dns=["a.local"])
    b = test_ca.issue(serial=0x71, not_before=NB, dns=["b.local"])
    crl = test_ca.crl([(0x70, NB + timedelta(hours=1), None)], this_update=NB + timedelta(days=1))
    entries = tlv(0x30, _crl_entry(0x70, b"240110010000Z", reason=b"\x07") + _crl_entry(0x71, b"240110020000Z"))
    bad = _resign(der(crl), crl.tbs_certlist_bytes, test_ca, lambda t: [*t[:5], entries, *t[6:]])

    code, out = _scan(tmp_path, {"a.pem": pem(a), "b.pem": pem(b)}, [bad])

    assert code == 0
    signals = _signals(out)
    assert "early_revocation" in signals[_sha(der(a))] and "early_revocation" in signals[_sha(der(b))]
    reasons = {r["serial"]: r["revocation_reason"] for r in _rows(out / "suspects.csv")}
    assert "invalid" in reasons["70"] and "7" in reasons["70"]


def test_a_crl_whose_issuer_name_cannot_be_decoded_is_an_error_row_not_a_failed_scan(tmp_path, test_ca):
    cert = test_ca.issue(serial=0x72, not_before=NB, dns=["c.local"])
    crl = test_ca.crl([(0x72, NB + timedelta(hours=1), None)], this_update=NB + timedelta(days=1))
    t61_issuer = _name(("550403", 0x14, "Cámara".encode("latin-1")))
    bad = _resign(der(crl), crl.tbs_certlist_bytes, test_ca, lambda t: [t[0], t[1], t61_issuer, *t[3:]])

    code, out = _scan(tmp_path, {"c.pem": pem(cert)}, [bad])

    assert code == 0
    [error] = _rows(out / "errors.csv")
    assert error["stage"] == "crl" and error["provenance"].endswith("ca0.crl")


def test_a_revocation_dated_before_notbefore_reads_as_before_in_every_sentence(tmp_path, test_ca):
    a = test_ca.issue(serial=0x80, not_before=NB, org="Acme SL", dns=["mail.acmme.com"])
    b = test_ca.issue(serial=0x81, not_before=NB + timedelta(hours=5), org="Acme SL", dns=["mail.acme.com"])
    crl = test_ca.crl([(0x80, NB - timedelta(hours=24), None)], this_update=NB + timedelta(days=1))

    code, out = _scan(tmp_path, {"a.pem": pem(a), "b.pem": pem(b)}, [der(crl)])

    assert code == 0
    [row] = [r for r in _rows(out / "suspects.csv") if r["serial"] == "80"]
    assert "revoke_reissue" in row["signals"] and "early_revocation" in row["signals"]
    assert "Revoked 24.0 hours before its notBefore;" in row["evidence"]
    assert "Revoked -" not in row["evidence"] and "-24" not in row["evidence"]


def test_a_crl_of_another_ca_says_it_revoked_nothing(tmp_path, test_ca):
    cert = test_ca.issue(serial=0x90, not_before=NB, dns=["d.local"])
    other = TestCA(name=test_ca.name)  # the same name, another key: its CRL is not ours
    crl = other.crl([(0x90, NB + timedelta(hours=1), None)], this_update=NB + timedelta(days=1))

    code, out = _scan(tmp_path, {"d.pem": pem(cert)}, [der(crl)])

    assert code == 0
    assert load_scan(out).certs["revoked_at"].isna().all()
    notices = json.loads((out / "summary.json").read_text())["notices"]
    assert any("ca0.crl" in n and "not from the issuer of any scanned certificate" in n for n in notices)


# --- what the reports let certificate values do -----------------------------------------------

def test_a_carriage_return_in_a_subject_cannot_split_a_csv_row_or_smuggle_a_formula(tmp_path, test_ca):
    org = "Evil\r=cmd|' /C calc'!A0"
    cert = test_ca.issue(serial=0xA0, not_before=NB, org=org, dns=["e.local"])

    code, out = _scan(tmp_path, {"e.pem": pem(cert)})

    assert code == 0
    for report in ("suspects.csv", "appendix/internal_name.csv"):
        with open(out / report, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert len(rows) == 2, report  # the header and the one certificate
        assert not [cell for row in rows for cell in row if cell.startswith("=")], report
    assert _rows(out / "suspects.csv")[0]["subject_o"] == org


# --- files and folders ---------------------------------------------------------------------------

def test_certificates_in_a_symlinked_folder_are_read(tmp_path, test_ca):
    archive = tmp_path / "archive"
    archive.mkdir()
    cert = test_ca.issue(serial=0xB0, not_before=NB, dns=["f.local"])
    (archive / "f.pem").write_bytes(pem(cert))
    (tmp_path / "in").mkdir()
    os.symlink(archive, tmp_path / "in" / "2019")
    os.symlink(tmp_path / "in", tmp_path / "in" / "loop")  # a link loop ends

    code, out = _scan(tmp_path, {})

    assert code == 0
    assert list(load_scan(out).certs["sha256"]) == [_sha(der(cert))]


def test_a_folder_that_cannot_be_listed_is_an_error_row(tmp_path, test_ca, monkeypatch):
    locked = tmp_path / "in" / "locked"
    locked.mkdir(parents=True)
    (locked / "g.pem").write_bytes(pem(test_ca.issue(serial=0xB1, not_before=NB, dns=["g.local"])))
    real_scandir = os.scandir

    def scandir(path="."):  # root can list anything, so chmod 000 cannot show this
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    code, out = _scan(tmp_path, {})

    assert code == 0
    [error] = _rows(out / "errors.csv")
    assert error["provenance"] == str(locked) and "Permission denied" in error["error"]


def test_a_named_pipe_in_the_input_folder_is_an_error_row_not_a_hang(tmp_path, test_ca):
    (tmp_path / "in").mkdir()
    fifo = tmp_path / "in" / "pipe.pem"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(run=_scan(tmp_path, {})), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader, then fail
        with open(fifo, "wb"):
            pass
        worker.join(timeout=10)
        pytest.fail("ctscan waited on a named pipe in the input folder")
    code, out = result["run"]
    assert code == 0
    [error] = _rows(out / "errors.csv")
    assert error["provenance"] == str(fifo) and "not a regular file" in error["error"]


def test_a_rerun_with_the_report_folder_inside_the_input_does_not_read_its_own_reports(tmp_path, test_ca):
    src = tmp_path / "certs"
    src.mkdir()
    (src / "h.pem").write_bytes(pem(test_ca.issue(serial=0xB2, not_before=NB, dns=["h.local"])))
    argv = ["scan", str(src), "--registration", "off", "--no-cache", "--out", str(src / "report"), "-q"]
    assert main(argv) == 0
    assert main(argv) == 0
    assert _rows(src / "report" / "errors.csv") == []
    assert json.loads((src / "report" / "summary.json").read_text())["read"] == 1


def test_file_names_that_are_not_utf8_do_not_fail_the_scan(tmp_path, test_ca):
    src = tmp_path / "in"
    folder = os.fsencode(src / "Cámara".encode("latin-1").decode("utf-8", "surrogateescape"))
    os.makedirs(folder)
    cert = test_ca.issue(serial=0xB3, not_before=NB, dns=["i.local"])
    with open(folder + b"/cert\xe9.pem", "wb") as fh:
        fh.write(pem(cert))
    with open(os.fsencode(src) + b"/junk\xff.der", "wb") as fh:
        fh.write(b"junk")
    crl = os.fsencode(tmp_path) + b"/ca\xff.crl"
    with open(crl, "wb") as fh:
        fh.write(der(test_ca.crl([(0xB3, NB + timedelta(hours=1), None)], this_update=NB + timedelta(days=1))))
    out = os.fsdecode(os.fsencode(tmp_path) + b"/out\xff")

    code = main(["scan", str(src), "--crl", os.fsdecode(crl), "--registration", "off", "--no-cache", "--out", out, "-q"])

    assert code == 0
    scan = load_scan(Path(out))
    assert scan.certs["provenance"].tolist() == [str(src / "C\\xe1mara" / "cert\\xe9.pem") + "#1"]
    assert scan.certs["revoked_at"].notna().all()
    [error] = _rows(Path(out) / "errors.csv")
    assert error["provenance"].endswith("junk\\xff.der")


# --- certificate contents ------------------------------------------------------------------------

def test_sans_beyond_the_per_certificate_cap_are_reported_as_unchecked(tmp_path, test_ca):
    """Padding a certificate with 5,000 harmless names must not hide the one that matters."""
    cert = test_ca.issue(serial=0xC0, not_before=NB, dns=[f"h{i}.example.com" for i in range(5001)],
                         ips=["10.0.0.1"])

    code, out = _scan(tmp_path, {"big.pem": pem(cert)})

    assert code == 0
    [error] = _rows(out / "errors.csv")
    assert error["sha256"] == _sha(der(cert)) and "first 5,000 of its 5,002 SAN names" in error["error"]


def test_a_precertificate_naming_more_than_its_certificate_is_kept_and_checked(tmp_path, test_ca):
    pre = test_ca.issue(serial=0xC1, not_before=NB, dns=["www.example.com", "intranet.corp"], precert=True)
    final = test_ca.issue(serial=0xC1, not_before=NB, dns=["www.example.com"])

    code, out = _scan(tmp_path, {"pre.pem": pem(pre), "final.pem": pem(final)})

    assert code == 0
    assert sorted(load_scan(out).certs["sha256"]) == sorted([_sha(der(pre)), _sha(der(final))])
    assert _signals(out) == {_sha(der(pre)): "internal_name"}


def test_a_precertificate_and_its_certificate_are_still_one_row(tmp_path, test_ca):
    pre = test_ca.issue(serial=0xC2, not_before=NB, dns=["a.example.com", "10.1.1.1"], precert=True)
    final = test_ca.issue(serial=0xC2, not_before=NB, dns=["10.1.1.1", "a.example.com"])

    code, out = _scan(tmp_path, {"pre.pem": pem(pre), "final.pem": pem(final)})

    assert code == 0
    [row] = load_scan(out).certs.to_dict("records")
    assert row["cert_sha256"] == _sha(der(final)) and row["precert_sha256"] == _sha(der(pre))


@pytest.mark.parametrize("field", ["subject", "issuer"])
def test_latin1_bytes_in_a_t61string_still_give_a_checked_row(tmp_path, test_ca, field):
    """Older certificates put Latin-1 in T61Strings; cryptography refuses the name, not the certificate."""
    cert = test_ca.issue(serial=0xD0, not_before=NB, dns=["j.local"], ips=["10.2.2.2"])
    odd = _name(("550406", 0x13, b"ES"), ("55040a", 0x14, "Cámara Cía".encode("latin-1")),
                ("550403", 0x0C, b"Bad \xff UTF-8"))
    at = 5 if field == "subject" else 3
    bad = _resign(der(cert), cert.tbs_certificate_bytes, test_ca, lambda t: [*t[:at], odd, *t[at + 1:]])

    code, out = _scan(tmp_path, {"t61.der": bad})

    assert code == 0 and _rows(out / "errors.csv") == []
    [row] = _rows(out / "suspects.csv")
    assert {"internal_name", "ip_san"} <= set(row["signals"].split(";"))
    dn = row["subject_dn"] if field == "subject" else row["issuer_dn"]
    assert "O=Cámara Cía" in dn and "CN=Bad \ufffd UTF-8" in dn
    if field == "subject":
        assert row["subject_o"] == "Cámara Cía"


# --- other sources and flags ---------------------------------------------------------------------

def test_a_crtsh_id_beyond_64_bits_is_one_error_row_not_a_failed_scan(tmp_path, test_ca):
    from tests.loopback.crtsh_server import CrtshServer

    good = der(test_ca.issue(serial=0xE0, not_before=NB, dns=["k.example.com"]))
    bad = der(test_ca.issue(serial=0xE1, not_before=NB, dns=["l.example.com"]))
    with CrtshServer() as server:
        server.state.add(5, good, 7, None, ("q", "example.com"))
        server.state.add(2**64, bad, 7, None, ("q", "example.com"))
        code = main(["scan", "--source", "crtsh-json", "--identity", "example.com", "--crtsh-url", server.url,
                     "--crtsh-rate", "0", "--retries", "0", "--registration", "off", "--cache", str(tmp_path / "c"),
                     "--out", str(tmp_path / "out"), "-q"])
    assert code == 0
    assert load_scan(tmp_path / "out").certs["crtsh_id"].tolist() == [5]
    [error] = _rows(tmp_path / "out" / "errors.csv")
    assert str(2**64) in error["error"]


@pytest.mark.parametrize("flag, value", [
    ("--window", "99999999999d"), ("--window", "1e9d"), ("--reissue-window", "40000d"),
    ("--timeout", "nan"), ("--crtsh-rate", "nan"),
])
def test_absurd_durations_and_nan_rates_are_usage_errors(tmp_path, capsys, flag, value):
    (tmp_path / "in").mkdir()
    code = main(["scan", str(tmp_path / "in"), "--registration", "off", "--no-cache", flag, value,
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "out").exists()

