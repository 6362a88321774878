"""crtsh-sql through what really stands at crt.sh:5432: PgBouncer in statement pooling mode.

crt.sh's maintainer: "crt.sh:5432 uses PgBouncer with Statement Pooling" (crtsh/certwatch_db#78), so
a transaction block ends the connection (psycopg2 users got "long transactions not allowed",
PaulSec/crt.sh#8) and a prepared statement is gone by the next statement (bbot#2325). PgBouncer
cannot be installed here, so `StatementPooler` plays those two rules on the wire: a loopback proxy
that speaks the PostgreSQL protocol to the client and forwards to the real PostgreSQL (pgserver).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from datetime import timedelta

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.loopback.pg import CertwatchDB, certwatch_pg  # noqa: F401  (the fixture)
from tests.test_crtsh_sql import DAY0, expected, issued, make_config, run, sha  # noqa: F401  (issued: fixture)

SSL_REQUEST, GSS_REQUEST = 80877103, 80877104


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("peer closed")
        data += part
    return data


def _message(sock: socket.socket) -> tuple[bytes, bytes]:
    kind = _recv(sock, 1)
    (length,) = struct.unpack("!i", _recv(sock, 4))
    return kind, _recv(sock, length - 4)


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _error(severity: str, code: str, text: str) -> bytes:
    fields = b"".join(k + v.encode() + b"\0" for k, v in ((b"S", severity), (b"V", severity), (b"C", code),
                                                          (b"M", text)))
    return _frame(b"E", fields + b"\0")


class StatementPooler:
    """PgBouncer's statement pooling rules in front of a PostgreSQL unix socket, on 127.0.0.1 (port 0)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused: Counter = Counter()  # "transaction" / "prepared" -> times a rule was enforced
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        server = socket.socket(socket.AF_UNIX)
        try:
            while True:  # SSL/GSS requests are declined, then the startup message goes through as it is
                (length,) = struct.unpack("!i", _recv(client, 4))
                body = _recv(client, length - 4)
                if struct.unpack("!i", body[:4])[0] in (SSL_REQUEST, GSS_REQUEST):
                    client.sendall(b"N")
                    continue
                break
            server.connect(self.upstream)
            server.sendall(struct.pack("!i", length) + body)
        except (OSError, ConnectionError):
            client.close()
            server.close()
            return
        named: set[bytes] = set()  # statements prepared since the last ReadyForQuery
        lock = threading.Lock()
        threading.Thread(target=self._to_client, args=(server, client, named, lock), daemon=True).start()
        self._to_server(client, server, named, lock)

    def _to_client(self, server: socket.socket, client: socket.socket, named: set[bytes],
                   lock: threading.Lock) -> None:
        try:
            while True:
                kind, body = _message(server)
                if kind == b"Z" and body in (b"T", b"E"):
                    # PgBouncer ends both connections rather than keep a server for one client's transaction
                    self.refused["transaction"] += 1
                    client.sendall(_error("FATAL", "08P01", "long transactions not allowed"))
                    break
                if kind == b"Z":
                    with lock:
                        named.clear()  # the next statement may run on another server connection
                client.sendall(_frame(kind, body))
        except (OSError, ConnectionError):
            pass
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _to_server(self, client: socket.socket, server: socket.socket, named: set[bytes],
                   lock: threading.Lock) -> None:
        swallowing: bytes | None = None  # a Bind to a statement this server never saw: drop up to Sync
        try:
            while True:
                kind, body = _message(client)
                if swallowing is not None:
                    if kind == b"S":
                        client.sendall(_error("ERROR", "26000",
                                              f'prepared statement "{swallowing.decode()}" does not exist')
                                       + _frame(b"Z", b"I"))
                        swallowing = None
                    continue
                if kind == b"P" and body.split(b"\0", 1)[0]:
                    with lock:
                        named.add(body.split(b"\0", 1)[0])
                if kind == b"B":
                    statement = body.split(b"\0", 2)[1]
                    with lock:
                        unknown = bool(statement) and statement not in named
                    if unknown:
                        self.refused["prepared"] += 1
                        swallowing = statement
                        continue
                server.sendall(_frame(kind, body))
        except (OSError, ConnectionError):
            pass
        for sock in (client, server):
            sock.close()


@pytest.fixture
def pooled(certwatch_pg: CertwatchDB, issued):  # noqa: F811  (fixtures)
    """The certwatch database (ours = CA 1, 3 a day for 10 days) behind a statement-pooling proxy."""
    certwatch_pg.reset()
    ours = certwatch_pg.add_ca("C=XX, O=ctscan Test PKI, CN=Ours Issuing CA")
    certwatch_pg.add_certs(ours, [d for _, d in issued["ours"]])
    certwatch_pg.revoke(ours, 1001, DAY0 + timedelta(hours=13), 1)
    parts = conninfo_to_dict(certwatch_pg.dsn)
    proxy = StatementPooler(f"{parts['host']}/.s.PGSQL.{parts.get('port', 5432)}")
    try:
        yield certwatch_pg, proxy, f"postgresql://{parts['user']}@127.0.0.1:{proxy.port}/certwatch"
    finally:
        proxy.close()


def test_a_crtsh_sql_fetch_through_statement_pooling_gets_every_window_without_a_transaction(tmp_path, pooled, issued):  # noqa: F811
    db, proxy, dsn = pooled
    raws, errors, notices = run(make_config(tmp_path, db, dsn=dsn, retries=0), itersize=2)
    assert errors == [] and not any(n.partial for n in notices)
    assert Counter(sha(r.der) for r in raws) == Counter(expected(issued))
    assert proxy.refused == Counter()


def test_ca_names_resolve_through_statement_pooling(tmp_path, pooled, issued):  # noqa: F811
    db, proxy, dsn = pooled
    raws, errors, notices = run(make_config(tmp_path, db, dsn=dsn, retries=0, ca_ids=(),
                                            ca_names=("No Such CA", "ours issuing")))
    assert [e.provenance for e in errors] == ["ca-name:No Such CA"]
    assert any("matched 1 crt.sh CA" in n.message for n in notices)
    assert {sha(r.der) for r in raws} == expected(issued) and proxy.refused == Counter()


def test_refresh_revocations_repeated_per_window_survive_statement_pooling(tmp_path, pooled, issued):  # noqa: F811
    db, proxy, dsn = pooled
    config = make_config(tmp_path, db, dsn=dsn, retries=0)
    run(config)
    db.revoke(1, 1090, DAY0 + timedelta(days=9, hours=5), 4)  # revoked after the first run
    # ten stored day windows: the same revocation query ten times on one connection
    raws, errors, notices = run(make_config(tmp_path, db, dsn=dsn, retries=0, refresh_revocations=True))
    assert errors == [] and not any(n.partial for n in notices) and proxy.refused == Counter()
    revoked = {r.extra["crtsh_id"]: r.extra["revocation_reason"] for r in raws if r.extra.get("revoked_at")}
    assert sorted(revoked.values()) == ["keyCompromise", "superseded"]
