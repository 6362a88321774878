"""CRLs as real CAs publish them: indirect entries, delta and reason-partitioned CRLs, fetched from loopback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scanner.core.records import frame_from_rows
from scanner.detect.revocation_status import detect_revocation_status
from scanner.enrich.revocation.crl import apply_revocations, crl_revocations
from scanner.enrich.revocation.crl_fetch import fetch_crls
from scanner.enrich.revocation.issuers import issuers_by_key_id
from scanner.enrich.revocation.tables import OCSP_RESULT_COLUMNS
from scanner.parse.certs import parse_der
from tests.loopback.ocsp_server import OcspServer
from tests.synth import TestCA, der

NOW = datetime.now(timezone.utc).replace(microsecond=0)
REVOKED_AT = NOW - timedelta(days=3)


def _entry(serial: int, when: datetime, *extensions: x509.ExtensionType) -> x509.RevokedCertificate:
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=isinstance(ext, x509.CertificateIssuer))
    return builder.build()


def signed_crl(ca: TestCA, entries: list[x509.RevokedCertificate], *extensions: tuple[x509.ExtensionType, bool],
               ) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(NOW - timedelta(hours=2)).next_update(NOW + timedelta(days=5))
               .add_extension(ca.aki, critical=False).add_extension(x509.CRLNumber(40), critical=False))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca.key, hashes.SHA256())


def _idp(**kw: object) -> tuple[x509.IssuingDistributionPoint, bool]:
    args = {"full_name": None, "relative_name": None, "only_contains_user_certs": False,
            "only_contains_ca_certs": False, "only_some_reasons": None, "indirect_crl": False,
            "only_contains_attribute_certs": False, **kw}
    return x509.IssuingDistributionPoint(**args), True  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pki():
    signer, other = TestCA(name="ctscan Indirect CRL Signer"), TestCA(name="ctscan Indirect Other CA")
    indirect = signed_crl(signer, [
        _entry(0x41, REVOKED_AT, x509.CRLReason(x509.ReasonFlags.superseded)),
        _entry(0x42, REVOKED_AT, x509.CertificateIssuer([x509.DirectoryName(other.subject)])),
        _entry(0x43, REVOKED_AT),  # still the other CA's: certificateIssuer carries on to the next entries
        _entry(0x44, REVOKED_AT, x509.CertificateIssuer([x509.DirectoryName(signer.subject)])),
    ], _idp(indirect_crl=True))
    files = {
        "/indirect.crl": der(indirect),
        "/complete.crl": der(signed_crl(signer, [])),
        "/delta.crl": der(signed_crl(signer, [], (x509.DeltaCRLIndicator(39), True))),
        "/superseded-only.crl": der(signed_crl(signer, [], _idp(
            only_some_reasons=frozenset({x509.ReasonFlags.superseded})))),
        "/users.crl": der(signed_crl(signer, [], _idp(only_contains_user_certs=True))),
    }
    with OcspServer(signer.cert, signer.key, files=files) as server:
        yield signer, other, server


def cert_row(ca: TestCA, serial: int, crl_url: str | None = None) -> dict:
    cert = ca.issue(serial=serial, not_before=NOW - timedelta(days=30), dns=[f"s{serial}.example"], crl_url=crl_url,
                    ocsp_url="http://ocsp.invalid/")
    return parse_der(der(cert), source="files", provenance=f"serial {serial}")


def test_indirect_crl_entries_belong_to_the_ca_their_certificate_issuer_names(pki):
    signer, other, _ = pki
    _, revs = crl_revocations(x509.load_der_x509_crl(der(signed_crl(signer, []))), "x")  # empty CRL: no rows
    assert revs.empty
    indirect = signed_crl(signer, [
        _entry(0x42, REVOKED_AT, x509.CertificateIssuer([x509.DirectoryName(other.subject)])),
        _entry(0x43, REVOKED_AT)])
    _, revs = crl_revocations(indirect, "indirect")
    assert set(revs["issuer_dn"]) == {other.subject.rfc4514_string()}
    assert set(revs["issuer_key_id"]) == {""}  # the entry names the CA, not its key


def test_an_indirect_crl_fetched_revokes_the_other_cas_certificates_and_not_the_signers_own_with_that_serial(pki):
    signer, other, server = pki
    got = fetch_crls([server.file_url("/indirect.crl")], issuers=issuers_by_key_id([signer.cert]), now=NOW,
                     retries=0, timeout=5, backoff_base=0.01)
    assert got.crls.iloc[0]["status"] == "ok"
    certs = pd.DataFrame([cert_row(signer, s) for s in (0x41, 0x42, 0x43, 0x44)]
                         + [cert_row(other, s) for s in (0x41, 0x42, 0x43)])
    certs["revoked_at"] = pd.Series(pd.NaT, index=certs.index, dtype="datetime64[us, UTC]")
    certs["revocation_reason"] = ""
    certs["revocation_source"] = ""
    out = apply_revocations(certs, got.revocations)
    revoked = {(dn.split(",")[0], s) for dn, s, t in zip(out["issuer_dn"], out["serial"], out["revoked_at"])
               if pd.notna(t)}
    assert revoked == {("CN=ctscan Indirect CRL Signer", "41"), ("CN=ctscan Indirect CRL Signer", "44"),
                       ("CN=ctscan Indirect Other CA", "42"), ("CN=ctscan Indirect Other CA", "43")}


def _revoked_per_ocsp(sha: str) -> pd.DataFrame:
    rows = [{"sha256": sha, "serial": "51", "responder": "http://ocsp.invalid/", "method": method, "hash": hash_name,
             "status": "revoked", "http_status": 200, "latency_ms": 5.0, "this_update": NOW - timedelta(hours=1),
             "next_update": NOW + timedelta(days=3), "revocation_time": REVOKED_AT, "revocation_reason": "",
             "signature": "ok", "signer": "issuer", "freshness": "ok", "error": "", "notes": ""}
            for hash_name, method in (("sha1", "GET"), ("sha256", "POST"))]
    return frame_from_rows(rows, OCSP_RESULT_COLUMNS)


@pytest.mark.parametrize(("path", "blamed", "scope"), [
    ("/complete.crl", True, ""),
    ("/users.crl", True, ""),  # onlyContainsUserCerts covers every subscriber certificate
    ("/delta.crl", False, "delta CRL (base CRL number 39)"),
    ("/superseded-only.crl", False, "onlySomeReasons superseded"),
])
def test_only_a_complete_crl_is_blamed_for_not_listing_what_ocsp_calls_revoked(pki, path, blamed, scope):
    signer, _, server = pki
    url = server.file_url(path)
    got = fetch_crls([url], issuers=issuers_by_key_id([signer.cert]), now=NOW, retries=0, timeout=5,
                     backoff_base=0.01)
    assert (got.crls.iloc[0]["status"], got.crls.iloc[0]["scope"]) == ("ok", scope)
    certs = pd.DataFrame([cert_row(signer, 0x51, crl_url=url)])
    found = detect_revocation_status(certs, _revoked_per_ocsp(certs["sha256"].iloc[0]), got.crls, got.revocations,
                                     NOW)
    assert ("crl_missing_revoked" in set(found["code"])) is blamed
