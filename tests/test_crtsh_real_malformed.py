"""crtsh-sql and a certificate crt.sh holds but cryptography refuses (here: a serial INTEGER with padding zeros).

crt.sh's libx509pq (OpenSSL) dates and serves such certificates, and the parse stage reads them
leniently as malformed findings; a rerun that serves the window from the store must still hand it on.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.sources.crtsh_sql import der_serial_octets
from tests.loopback.pg import CertwatchDB, certwatch_pg  # noqa: F401  (the fixture)
from tests.synth import TestCA, der, der_children, tlv
from tests.test_crtsh_sql import DAY0, make_config, run, sha


def padded_serial_certificate(ca: TestCA) -> bytes:
    """A certificate signed by ca whose serial 0x1234 is written 00 00 12 34 (not DER, as some CAs did)."""
    good = der(ca.issue(serial=0x1234, not_before=DAY0 + timedelta(days=1, hours=5), cn="pad.example.com",
                        dns=["pad.example.com"]))
    _, algorithm, _ = der_children(good)
    tbs = der_children(der_children(good)[0])
    tbs[1] = tlv(0x02, b"\x00\x00\x12\x34")
    body = tlv(0x30, b"".join(tbs))
    signature = ca.key.sign(body, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, body + algorithm + tlv(0x03, b"\x00" + signature))


@pytest.fixture
def db(certwatch_pg: CertwatchDB) -> tuple[CertwatchDB, list[bytes]]:  # noqa: F811
    certwatch_pg.reset()
    ca = TestCA(name="Ours Issuing CA")
    ours = certwatch_pg.add_ca("C=XX, O=ctscan Test PKI, CN=Ours Issuing CA")
    good = [der(ca.issue(serial=2000 + n, not_before=DAY0 + timedelta(days=n, hours=3), cn=f"g{n}.example.com",
                         dns=[f"g{n}.example.com"])) for n in range(3)]
    certwatch_pg.add_certs(ours, good)
    bad = padded_serial_certificate(ca)
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(bad)
    # crt.sh's own functions read it: its facts go in by hand, as libx509pq would give them
    certwatch_pg.conn.execute("INSERT INTO x509_facts VALUES (sha256(%s), %s, %s)",
                              (bad, (DAY0 + timedelta(days=1, hours=5)).replace(tzinfo=None), b"\x00\x00\x12\x34"))
    certwatch_pg.conn.execute("INSERT INTO certificate (issuer_ca_id, certificate) VALUES (%s, %s)", (ours, bad))
    return certwatch_pg, [*good, bad]


def test_a_certificate_cryptography_refuses_is_served_again_from_the_store_on_a_rerun(tmp_path, db):
    pg, issued = db
    config = make_config(tmp_path, pg, until=DAY0 + timedelta(days=3))
    first, errors, _ = run(config)
    assert errors == [] and Counter(sha(r.der) for r in first) == Counter(sha(d) for d in issued)
    # the windows are done: this run reads only the store
    again, errors, notices = run(make_config(tmp_path, pg, until=DAY0 + timedelta(days=3), offline=True))
    assert errors == [] and not any(n.partial for n in notices)
    assert Counter(sha(r.der) for r in again) == Counter(sha(r.der) for r in first)


def test_refresh_revocations_finds_a_padded_serial_by_the_octets_crtsh_and_the_crl_keep(tmp_path, db):
    pg, issued = db
    config = make_config(tmp_path, pg, until=DAY0 + timedelta(days=3))
    run(config)
    # revoked after the first run, listed on the CRL with the serial as the certificate writes it
    pg.conn.execute("INSERT INTO crl_revoked VALUES (1, %s, 1, %s, %s)",
                    (b"\x00\x00\x12\x34", (DAY0 + timedelta(days=2)).replace(tzinfo=None),
                     (DAY0 + timedelta(days=2)).replace(tzinfo=None)))
    raws, errors, notices = run(make_config(tmp_path, pg, until=DAY0 + timedelta(days=3), refresh_revocations=True))
    assert errors == [] and not any(n.partial for n in notices)
    revoked = {sha(r.der): r.extra.get("revocation_reason") for r in raws if r.extra.get("revoked_at")}
    assert revoked == {sha(issued[-1]): "keyCompromise"}


def test_der_serial_octets_are_the_integer_as_written():
    ca = TestCA(name="Ours Issuing CA")
    assert der_serial_octets(padded_serial_certificate(ca)) == b"\x00\x00\x12\x34"
    assert der_serial_octets(der(ca.issue(serial=0x80, not_before=DAY0, cn="x.example.com"))) == b"\x00\x80"
    assert der_serial_octets(b"\x30\x03\x30\x01") is None and der_serial_octets(b"") is None
