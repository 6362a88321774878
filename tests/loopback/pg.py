"""A local PostgreSQL (the `pgserver` wheel) holding the crt.sh (certwatch) tables the crtsh-sql query reads.

crt.sh computes x509_notBefore / x509_serialNumber with its libx509pq C extension, which cannot be
installed here: this database defines them as SQL functions over a side table (x509_facts, keyed by
the SHA-256 of the DER) that `CertwatchDB.add_certs` fills from the real certificates it loads.
x509_serialNumber can also be told to fail like a hot-standby replica (see `CertwatchDB.fault`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE ca (
    id serial PRIMARY KEY,
    name text NOT NULL,
    public_key bytea NOT NULL DEFAULT ''::bytea
);
CREATE TABLE x509_facts (
    sha256 bytea PRIMARY KEY,
    not_before timestamp NOT NULL,
    serial bytea NOT NULL
);
CREATE TABLE test_faults (
    kind text NOT NULL,           -- a SQLSTATE to raise, or 'drop' to kill the connection
    message text NOT NULL,
    nb_from timestamp NOT NULL,   -- only certificates with notBefore in [nb_from, nb_to) trip it
    nb_to timestamp NOT NULL,
    fail_first integer NOT NULL   -- how many tripping calls fail before it heals
);
CREATE SEQUENCE test_fault_calls;
CREATE FUNCTION x509_notBefore(bytea) RETURNS timestamp LANGUAGE sql IMMUTABLE
    AS $$ SELECT not_before FROM x509_facts WHERE sha256 = sha256($1) $$;
CREATE TABLE certificate (
    id bigserial PRIMARY KEY,
    issuer_ca_id integer NOT NULL REFERENCES ca(id),
    certificate bytea NOT NULL
);
CREATE TABLE crl_revoked (
    ca_id integer REFERENCES ca(id),
    serial_number bytea,
    reason_code smallint,
    revocation_date timestamp,
    last_seen_check_date timestamp,
    PRIMARY KEY (ca_id, serial_number)
);
CREATE TABLE ct_log_entry (
    certificate_id bigint NOT NULL,
    entry_id bigint NOT NULL,
    entry_timestamp timestamp NOT NULL,
    ct_log_id integer NOT NULL
);
CREATE INDEX ctle_certificate_id ON ct_log_entry (certificate_id);
"""

SERIAL_PLAIN = """
CREATE OR REPLACE FUNCTION x509_serialNumber(bytea) RETURNS bytea LANGUAGE sql IMMUTABLE
    AS $$ SELECT serial FROM x509_facts WHERE sha256 = sha256($1) $$;
"""

# Faults are counted with a sequence because a sequence survives the rollback of the failing query.
SERIAL_WITH_FAULTS = """
CREATE OR REPLACE FUNCTION x509_serialNumber(cert bytea) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    f record;
    t_serial bytea;
    t_nb timestamp;
BEGIN
    SELECT serial, not_before INTO t_serial, t_nb FROM x509_facts WHERE sha256 = sha256(cert);
    FOR f IN SELECT * FROM test_faults WHERE t_nb >= nb_from AND t_nb < nb_to LOOP
        IF nextval('test_fault_calls') <= f.fail_first THEN
            IF f.kind = 'drop' THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
                PERFORM pg_sleep(5);
            END IF;
            RAISE EXCEPTION USING ERRCODE = f.kind, MESSAGE = f.message;
        END IF;
    END LOOP;
    RETURN t_serial;
END $$;
"""

INDEX = "CREATE INDEX c_ica_notbefore ON certificate (issuer_ca_id, x509_notBefore(certificate))"


def serial_bytes(serial: int) -> bytes:
    """A serial number as the content octets of its DER INTEGER (crt.sh's bytea serial format)."""
    length = max(1, (serial.bit_length() + 8) // 8)
    return serial.to_bytes(length, "big", signed=True)


def _naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


class CertwatchDB:
    """The certwatch database of a running local PostgreSQL: load CAs, certificates, revocations, faults."""

    def __init__(self, dsn: str, *, faults: bool = True):
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(SERIAL_WITH_FAULTS if faults else SERIAL_PLAIN)

    def reset(self) -> None:
        """Empty every table (the schema stays)."""
        self.conn.execute("TRUNCATE ct_log_entry, crl_revoked, certificate, x509_facts, test_faults, ca "
                          "RESTART IDENTITY CASCADE")
        self.conn.execute("ALTER SEQUENCE test_fault_calls RESTART")

    def add_ca(self, name: str) -> int:
        """Insert a CA row; returns its id."""
        return int(self.conn.execute("INSERT INTO ca (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0])

    def add_certs(self, ca_id: int, ders: Sequence[bytes], *, first_seen: Sequence[datetime | None] | None = None,
                  logs_per_cert: int = 2) -> list[int]:
        """Insert real DER certificates (their facts parsed here) with CT log entries; returns their crt.sh ids."""
        ids: list[int] = []
        with self.conn.transaction(), self.conn.cursor() as cur:
            for n, der in enumerate(ders):
                cert = x509.load_der_x509_certificate(der)
                cur.execute(
                    "INSERT INTO x509_facts VALUES (sha256(%s), %s, %s) ON CONFLICT DO NOTHING",
                    (der, _naive(cert.not_valid_before_utc), serial_bytes(cert.serial_number)),
                )
                cur.execute("INSERT INTO certificate (issuer_ca_id, certificate) VALUES (%s, %s) RETURNING id",
                            (ca_id, der))
                cid = int(cur.fetchone()[0])
                ids.append(cid)
                seen = first_seen[n] if first_seen is not None else cert.not_valid_before_utc
                if seen is not None:
                    for k in range(logs_per_cert):
                        # the later entries are other logs' copies: min() must pick the first
                        cur.execute("INSERT INTO ct_log_entry VALUES (%s, %s, %s + %s * interval '1 hour', %s)",
                                    (cid, cid * 10 + k, _naive(seen), k, k + 1))
        return ids

    def revoke(self, ca_id: int, serial: int, when: datetime, reason_code: int | None) -> None:
        """Add a crl_revoked row."""
        self.conn.execute("INSERT INTO crl_revoked VALUES (%s, %s, %s, %s, %s)",
                          (ca_id, serial_bytes(serial), reason_code, _naive(when), _naive(when)))

    def fault(self, kind: str, nb_from: datetime, nb_to: datetime, fail_first: int,
              message: str = "canceling statement due to conflict with recovery") -> None:
        """Make the next `fail_first` reads of certificates with notBefore in [nb_from, nb_to) fail."""
        self.conn.execute("INSERT INTO test_faults VALUES (%s, %s, %s, %s, %s)",
                          (kind, message, _naive(nb_from), _naive(nb_to), fail_first))

    def clear_faults(self) -> None:
        """Heal every fault."""
        self.conn.execute("DELETE FROM test_faults")
        self.conn.execute("ALTER SEQUENCE test_fault_calls RESTART")

    def close(self) -> None:
        """Close the loader's connection."""
        self.conn.close()


def start_postgres(pgdata: Path) -> tuple[object, str]:
    """Start PostgreSQL from the pgserver wheel in pgdata and create the certwatch schema; returns (server, dsn)."""
    import pgserver  # imported here so a missing wheel skips the tests instead of breaking collection

    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    admin = conninfo_to_dict(server.get_uri())
    host = admin.get("host", "")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS certwatch")
        conn.execute("CREATE DATABASE certwatch")
    dsn = f"postgresql://{admin.get('user', 'postgres')}@/certwatch?host={host}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(SERIAL_PLAIN)
        conn.execute(INDEX)
    return server, dsn


@pytest.fixture(scope="session")
def certwatch_pg() -> Iterator[CertwatchDB]:
    """A running local PostgreSQL with the certwatch tables (session-wide; tests call reset())."""
    pgdata = Path(tempfile.mkdtemp(prefix="ctscan-pg-"))
    try:
        server, dsn = start_postgres(pgdata)
    except Exception as exc:  # noqa: BLE001  pgserver refuses to run in some sandboxes: say why instead of erroring
        shutil.rmtree(pgdata, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL with pgserver: {type(exc).__name__}: {exc}")
    db = CertwatchDB(dsn)
    try:
        yield db
    finally:
        db.close()
        server.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(pgdata, ignore_errors=True)
