"""Make the bundled sample in data/sample/: a small CA corpus recreating the incidents behind ctscan.

Real DER certificates signed by a throwaway test CA (its key is thrown away), the CA's CRL, and the
registry answers recorded for the sample's domains, so `ctscan scan` shows real findings offline.
Run: python scripts/make_sample.py [OUT_DIR]   (default data/sample; it replaces the folder's contents)
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from cryptography import x509

# the throwaway CA lives with the tests (it is no part of the scanner's API); the checkout's root on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synth import TestCA, der, new_key, pem, utc  # noqa: E402

R = x509.ReasonFlags


def main(out: Path) -> None:
    ca = TestCA()
    if out.exists():
        shutil.rmtree(out)
    (out / "certs").mkdir(parents=True)
    (out / "crl").mkdir()
    keys = {name: new_key() for name in ("cualtis", "widgets", "northwind", "acme", "fabrikam", "contoso", "newbrand")}
    issued: list[tuple[str, x509.Certificate]] = []
    revoked: list[tuple[int, object, object]] = []

    def issue(fname: str, **kw) -> x509.Certificate:
        cert = ca.issue(**kw)
        issued.append((fname, cert))
        return cert

    # 1. Camerfirma, Bugzilla "certificate for unregistered domain cuatis.net": typo, revoked 4.6 h later,
    #    reissued 23 min after the revocation. An older certificate for the right name came before.
    org = "CUALTIS S.L.U"
    issue("cualtis-2018.pem", serial=0x1001, not_before=utc("2018-11-05T09:12"), cn="mail.cualtis.net", org=org,
          dns=["mail.cualtis.net"], key=keys["cualtis"])
    issue("cuatis-precert.der", serial=0x1002, not_before=utc("2019-11-12T12:17"), cn="mail.cuatis.net", org=org,
          dns=["mail.cuatis.net"], key=keys["cualtis"], precert=True)
    issue("cuatis.der", serial=0x1002, not_before=utc("2019-11-12T12:17"), cn="mail.cuatis.net", org=org,
          dns=["mail.cuatis.net"], key=keys["cualtis"])
    revoked.append((0x1002, utc("2019-11-12T16:55"), None))
    issue("cualtis-precert.der", serial=0x1003, not_before=utc("2019-11-12T17:18"), cn="mail.cualtis.net", org=org,
          dns=["mail.cualtis.net"], key=keys["cualtis"], precert=True)
    issue("cualtis-2019.der", serial=0x1003, not_before=utc("2019-11-12T17:18"), cn="mail.cualtis.net", org=org,
          dns=["mail.cualtis.net"], key=keys["cualtis"])

    # 2. Sectigo-style: wrong subject information; the corrected certificate is issued first and the
    #    wrong one revoked two hours later.
    issue("widgets-wrong-subject.pem", serial=0x2001, not_before=utc("2020-03-02T09:00"), cn="www.widgets-example.com",
          org="Exmaple Widgets Ltd", dns=["www.widgets-example.com", "widgets-example.com"], key=keys["widgets"],
          country="GB")
    issue("widgets-fixed.pem", serial=0x2002, not_before=utc("2020-03-02T11:05"), cn="www.widgets-example.com",
          org="Example Widgets Ltd", dns=["www.widgets-example.com", "widgets-example.com"], key=keys["widgets"],
          country="GB")
    revoked.append((0x2001, utc("2020-03-02T13:10"), R.superseded))

    # 3. IdenTrust-style: revoked within 24 h (renewal approved before revalidation), no reissue.
    issue("northwind.pem", serial=0x3001, not_before=utc("2020-06-15T08:30"), cn="portal.northwind-bank.com",
          org="Northwind Bank", dns=["portal.northwind-bank.com"], key=keys["northwind"], country="US")
    revoked.append((0x3001, utc("2020-06-16T04:45"), R.affiliation_changed))

    # 4. Ordinary renewals: the old certificate revoked as superseded a year on is not a pair.
    issue("acme-2019.pem", serial=0x4001, not_before=utc("2019-01-15T10:00"), cn="shop.acme-tools.com",
          org="Acme Tools GmbH", dns=["shop.acme-tools.com", "www.acme-tools.com"], key=keys["acme"], country="DE")
    issue("acme-2020.pem", serial=0x4002, not_before=utc("2020-01-10T10:00"), cn="shop.acme-tools.com",
          org="Acme Tools GmbH", dns=["shop.acme-tools.com", "www.acme-tools.com"], key=new_key(), country="DE")
    revoked.append((0x4001, utc("2020-01-11T09:00"), R.superseded))

    # 5. A transposed sibling SAN on an unregistered domain.
    issue("fabrikam.pem", serial=0x5001, not_before=utc("2020-02-20T14:00"), cn="www.fabrikam.com",
          org="Fabrikam, Inc.", dns=["www.fabrikam.com", "www.fabrikma.com"], key=keys["fabrikam"], country="US")

    # 6. Names that cannot be registered: an IP address in a dNSName and an internal name.
    issue("contoso-vpn.pem", serial=0x6001, not_before=utc("2020-04-01T12:00"), cn="vpn.contoso-corp.com",
          org="Contoso Corp", dns=["vpn.contoso-corp.com", "10.20.30.40", "vpn.contoso.internal"],
          ips=["192.0.2.10"], key=keys["contoso"], country="US")

    # 7. A domain registered after the certificate was issued (the name did not exist at validation).
    issue("newbrand.pem", serial=0x7001, not_before=utc("2020-05-04T09:00"), cn="www.new-brand-shop.com",
          org="New Brand Shop SL", dns=["www.new-brand-shop.com"], key=keys["newbrand"])

    # 8. Attacker-controlled values: an O that is a spreadsheet formula must stay text in the reports.
    issue("formula-org.pem", serial=0x8001, not_before=utc("2020-07-07T07:07"), cn="www.formula-test.com",
          org='=HYPERLINK("http://attacker.invalid","click")', dns=["www.formula-test.com"])

    for fname, cert in issued:
        data = der(cert) if fname.endswith(".der") else pem(cert)
        (out / "certs" / fname).write_bytes(data)
    # 9. A file that is not a certificate: recorded in errors.csv, never dropped silently.
    (out / "certs" / "truncated.der").write_bytes(der(issued[0][1])[:200])

    crl = ca.crl(revoked, this_update=utc("2020-07-08T00:00"))
    (out / "crl" / "sample-ca.crl").write_bytes(der(crl))
    (out / "sample-ca.pem").write_bytes(ca.cert_pem())

    answers = [
        ("cualtis.net", "registered", "2005-03-14T10:00:00Z"),
        ("cuatis.net", "unregistered", ""),
        ("widgets-example.com", "registered", "2011-06-01T00:00:00Z"),
        ("northwind-bank.com", "registered", "2002-09-09T00:00:00Z"),
        ("acme-tools.com", "registered", "2008-01-01T00:00:00Z"),
        ("fabrikam.com", "registered", "1999-05-05T00:00:00Z"),
        ("fabrikma.com", "unregistered", ""),
        ("contoso-corp.com", "registered", "2003-03-03T00:00:00Z"),
        ("new-brand-shop.com", "registered", "2020-05-20T16:41:00Z"),
        ("formula-test.com", "registered", "2015-02-02T00:00:00Z"),
    ]
    with open(out / "registrations.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["domain", "status", "method", "server", "detail", "checked_at", "registered_at", "attempts"])
        for domain, status, reg_at in answers:
            server = "https://rdap.verisign.com/" + domain.rsplit(".", 1)[1] + "/v1/"
            detail = "HTTP 200 domain object" if status == "registered" else "HTTP 404 Not Found"
            w.writerow([domain, status, "rdap", server, detail, "2020-07-08T12:00:00Z", reg_at, 1])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data/sample"))
