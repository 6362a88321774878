"""A crt.sh stand-in on 127.0.0.1: `?q=` / `?O=` with output=json, and `?d=ID` downloads, plus its failure modes.

Rows carry crt.sh's JSON fields (issuer_ca_id, issuer_name, common_name, name_value, id,
entry_timestamp, not_before, not_after, serial_number, result_count); `?d=` answers PEM as
application/pkix-cert like crt.sh's download_cert. Scripted faults per kind ("json" or "d"):
"502" (HTML Bad Gateway page), "html" (HTML page with status 200), "truncated" (half a JSON body),
"slow" (answers after `slow_seconds`), "429" (Retry-After: 1). `capped` searches answer 10,000 rows.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from . import ServedInThread

BAD_GATEWAY = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
               b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
BUSY_PAGE = (b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\">\n<html><head><title>crt.sh | ERROR!</title>"
             b"</head><body>Sorry, something went wrong... statement timeout</body></html>")


@dataclass
class Entry:
    """One certificate crt.sh knows."""

    crtsh_id: int
    der: bytes
    issuer_ca_id: int
    entry_timestamp: datetime | None

    def row(self) -> dict[str, object]:
        cert = x509.load_der_x509_certificate(self.der)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = sans.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        issuer = ", ".join(f"{a.rfc4514_attribute_name}={a.value}" for a in cert.issuer)
        stamp = self.entry_timestamp
        return {
            "issuer_ca_id": self.issuer_ca_id,
            "issuer_name": "Issuer Not Found" if self.issuer_ca_id == -1 else issuer,
            "common_name": str(cns[0].value) if cns else "",
            "name_value": "\n".join(names or [str(c.value) for c in cns]),
            "id": self.crtsh_id,
            "entry_timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] if stamp else None,
            "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%S"),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S"),
            "serial_number": format(cert.serial_number, "x"),
        }


@dataclass
class CrtshState:
    """What the server knows and how it misbehaves; tests edit it between requests."""

    entries: dict[int, Entry] = field(default_factory=dict)
    searches: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # ("q"|"o", value) -> ids
    faults: dict[str, list[str]] = field(default_factory=lambda: {"json": [], "d": []})
    capped: set[tuple[str, str]] = field(default_factory=set)
    slow_seconds: float = 2.0
    der_bodies: bool = False  # answer ?d= with raw DER instead of crt.sh's PEM
    gone: set[int] = field(default_factory=set)  # ids listed by searches whose ?d= answers 404
    hits: Counter = field(default_factory=Counter)  # "json", "d", "d:ID" -> requests served
    queries: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, crtsh_id: int, der: bytes, issuer_ca_id: int, entry_timestamp: datetime | None,
            *searches: tuple[str, str]) -> None:
        """Register a certificate and the searches that find it."""
        self.entries[crtsh_id] = Entry(crtsh_id, der, issuer_ca_id, entry_timestamp)
        for param, value in searches:
            self.searches.setdefault((param.lower(), value.lower()), []).append(crtsh_id)

    def next_fault(self, kind: str) -> str | None:
        with self.lock:
            queue = self.faults.setdefault(kind, [])
            return queue.pop(0) if queue else None


def _handler(state: CrtshState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def fault(self, kind: str) -> bool:
            """Play the next scripted fault; True when it answered the request."""
            fault = state.next_fault(kind)
            if fault == "slow":
                time.sleep(state.slow_seconds)
                return False
            if fault == "502":
                self.send(502, BAD_GATEWAY, "text/html")
            elif fault == "html":
                self.send(200, BUSY_PAGE, "text/html; charset=UTF-8")
            elif fault == "429":
                self.send(429, b"Too Many Requests", "text/plain", {"Retry-After": "1"})
            elif fault == "truncated":
                body = json.dumps([e.row() for e in state.entries.values()] or [{"id": 1}]).encode()
                self.send(200, body[: len(body) // 2], "application/json")
            else:
                return False
            return True

        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            with state.lock:
                state.queries.append(query)
            if "d" in query:
                with state.lock:
                    state.hits["d"] += 1
                    state.hits[f"d:{query['d']}"] += 1
                if self.fault("d"):
                    return
                entry = state.entries.get(int(query["d"])) if query["d"].isdigit() else None
                if entry is None or entry.crtsh_id in state.gone:
                    self.send(404, b"<html><body>Certificate not found</body></html>", "text/html")
                    return
                cert = x509.load_der_x509_certificate(entry.der)
                body = entry.der if state.der_bodies else cert.public_bytes(serialization.Encoding.PEM)
                self.send(200, body, "application/pkix-cert",
                          {"Content-Disposition": f'attachment; filename="{entry.crtsh_id}.crt"'})
                return
            if query.get("output") != "json":
                self.send(200, BUSY_PAGE, "text/html")
                return
            with state.lock:
                state.hits["json"] += 1
            if self.fault("json"):
                return
            search = next(((p, query[k]) for k in query for p in ("q", "o") if k.lower() == p), None)
            if search is None:
                self.send(200, b"[]", "application/json")
                return
            key = (search[0], search[1].lower())
            ids = state.searches.get(key, [])
            rows = [state.entries[i].row() for i in ids]
            if query.get("exclude") == "expired":
                now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
                rows = [r for r in rows if str(r["not_after"]) >= now]
            if key in state.capped:
                filler = {"issuer_ca_id": 999999, "issuer_name": "C=XX, CN=Someone Else", "common_name": "x",
                          "name_value": "x", "entry_timestamp": None, "not_before": "2020-01-01T00:00:00",
                          "not_after": "2021-01-01T00:00:00", "serial_number": "01"}
                rows += [dict(filler, id=10**9 + n) for n in range(10_000 - len(rows))]
            for r in rows:
                r["result_count"] = 1
            self.send(200, json.dumps(rows).encode(), "application/json")

    return Handler


class CrtshServer(ServedInThread):
    """The loopback crt.sh: start(), .url, .state, stop()."""

    def __init__(self, state: CrtshState | None = None):
        self.state = state or CrtshState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._served = self.httpd


if __name__ == "__main__":  # a manual crt.sh stand-in: python -m tests.loopback.crtsh_server
    with CrtshServer() as server:
        print(server.url, flush=True)
        threading.Event().wait()
