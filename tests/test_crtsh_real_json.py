"""crtsh-json against answers shaped as the real crt.sh writes them (crtsh/certwatch_db fnc/web_apis.fnc).

A search's inner query stops at 10,000 (certificate, identity) rows, then groups them one row per
certificate with result_count = how many it took; its error page (a statement timeout) is written
after whatever the answer had begun, with status 200.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.sources.base import RawCert, SourceError, SourceNotice
from scanner.sources.crtsh_json import RESULT_CAP, CrtshJsonOptions, identity_rows, read
from tests.synth import TestCA, der, utc

T0 = utc("2025-02-01T00:00")

# What crt.sh sends when its query runs out of time: the JSON answer's own header block and its "[",
# then the error (SQLERRM, the PL/pgSQL context, the query) after "<BR><BR>".
TIMEOUT_BODY = ("[BEGIN_HEADERS]\nContent-Type: application/json\nAccess-Control-Allow-Origin: *\n[END_HEADERS]\n["
                "<BR><BR>canceling statement due to statement timeout<BR><BR>PL/pgSQL function "
                "web_apis(text,text[],text[]) line 4216 at FOR over EXECUTE statement<BR><BR>WITH ci AS (\n"
                "    SELECT min(sub.CERTIFICATE_ID) ID,\n" + " " * 400 + "...")


def row(crtsh_id: int, cert_der: bytes, ca_id: int, identities: int) -> dict[str, object]:
    """One answer row as crt.sh's group=none JSON writes it."""
    cert = x509.load_der_x509_certificate(cert_der)
    return {"issuer_ca_id": ca_id, "issuer_name": "C=XX, O=ctscan Test PKI, CN=Example Issuing CA",
            "common_name": "example.com", "name_value": "\n".join(["example.com", "www.example.com",
                                                                    "api.example.com"][:identities]),
            "id": crtsh_id, "entry_timestamp": "2025-02-01T00:05:07",  # no fraction: a whole second
            "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%S"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S"),
            "serial_number": format(cert.serial_number, "x"), "result_count": identities}


class RealShapedCrtsh:
    """A loopback crt.sh answering one fixed search body and `?d=` PEM downloads."""

    def __init__(self, body: bytes, ctype: str, certs: dict[int, bytes]):
        state = self
        self.body, self.ctype, self.certs, self.hits = body, ctype, certs, Counter()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if "d" in query:
                    state.hits["d"] += 1
                    cert = x509.load_der_x509_certificate(state.certs[int(query["d"])])
                    body, ctype = cert.public_bytes(serialization.Encoding.PEM), "application/pkix-cert"
                else:
                    state.hits["json"] += 1
                    body, ctype = state.body, state.ctype
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def certs() -> list[bytes]:
    ca = TestCA(name="Example Issuing CA")
    return [der(ca.issue(serial=9100 + n, not_before=T0 + timedelta(hours=n), cn="example.com",
                         dns=["example.com", "www.example.com"], days=90)) for n in range(3)]


def scan(server: RealShapedCrtsh) -> tuple[list[RawCert], list[SourceError], list[SourceNotice]]:
    options = CrtshJsonOptions(identities=("example.com",), ca_ids=(7,), url=server.url, rate=0, retries=1, timeout=5)
    items = list(read(options, base_delay=0.01))
    return ([i for i in items if isinstance(i, RawCert)], [i for i in items if isinstance(i, SourceError)],
            [i for i in items if isinstance(i, SourceNotice)])


def test_a_search_cut_at_10000_identity_rows_is_partial_though_it_answers_fewer_certificates(certs):
    # ours: 3 certificates of CA 7; then 4,997 others of 2 identities each: 3*2 + 4,997*2 = 10,000 identity rows
    rows = [row(100 + n, c, 7, 2) for n, c in enumerate(certs)]
    rows += [dict(row(10**9 + n, certs[0], 999, 2), issuer_name="C=XX, CN=Someone Else") for n in range(4997)]
    assert len(rows) < RESULT_CAP and identity_rows(rows) == RESULT_CAP
    server = RealShapedCrtsh(json.dumps(rows).encode(), "application/json", dict(zip((100, 101, 102), certs)))
    try:
        raws, errors, notices = scan(server)
    finally:
        server.close()
    assert errors == [] and len(raws) == 3 and server.hits["d"] == 3
    capped = [n for n in notices if n.partial]
    assert len(capped) == 1 and "10000 identity rows (5000 certificate(s)" in capped[0].message
    assert all(r.extra["first_seen"].isoformat() == "2025-02-01T00:05:07+00:00" for r in raws)


def test_a_complete_answer_of_multi_identity_rows_is_not_called_capped(certs):
    rows = [row(100 + n, c, 7, 3) for n, c in enumerate(certs)]
    server = RealShapedCrtsh(json.dumps(rows).encode(), "application/json", dict(zip((100, 101, 102), certs)))
    try:
        raws, errors, notices = scan(server)
    finally:
        server.close()
    assert errors == [] and len(raws) == 3 and not any(n.partial for n in notices)


@pytest.mark.parametrize("ctype", ["text/html; charset=UTF-8", "application/json"])
def test_crtsh_statement_timeout_page_is_retried_then_named_with_what_to_do(certs, ctype):
    server = RealShapedCrtsh(TIMEOUT_BODY.encode(), ctype, {})
    try:
        raws, errors, notices = scan(server)
    finally:
        server.close()
    assert raws == [] and server.hits["json"] == 2  # once plus one retry
    assert len(errors) == 1 and "statement timeout" in errors[0].error
    assert "--exclude-expired" in errors[0].error and "--source crtsh-sql" in errors[0].error
    assert any(n.partial for n in notices)


def test_an_offline_rerun_of_a_capped_search_answered_from_the_store_is_still_partial(tmp_path, certs):
    rows = [row(100 + n, c, 7, 2) for n, c in enumerate(certs)]
    rows += [dict(row(10**9 + n, certs[0], 999, 2), issuer_name="C=XX, CN=Someone Else") for n in range(4997)]
    server = RealShapedCrtsh(json.dumps(rows).encode(), "application/json", dict(zip((100, 101, 102), certs)))
    store = tmp_path / "store.sqlite3"
    base = dict(identities=("example.com",), ca_ids=(7,), url=server.url, rate=0, retries=1, timeout=5)
    try:
        first = list(read(CrtshJsonOptions(**base), store=store, base_delay=0.01))
    finally:
        server.close()
    # no cached answer (it expired): the offline run has only the store's record of the search
    again = list(read(CrtshJsonOptions(**base, offline=True), store=store, base_delay=0.01))
    assert sorted(sha_of(first)) == sorted(sha_of(again)) and len(sha_of(again)) == 3
    assert not any(isinstance(i, SourceError) for i in again)
    notices = [i for i in again if isinstance(i, SourceNotice) and i.partial]
    assert len(notices) == 1 and "capped" in notices[0].message and "--source crtsh-sql" in notices[0].message


def sha_of(items: list[object]) -> list[str]:
    return [hashlib.sha256(i.der).hexdigest() for i in items if isinstance(i, RawCert)]
