"""The same corpus through --source files, crtsh-sql and crtsh-json gives the same suspects (links aside),
and so does every rerun of a crt.sh source with the same cache and store, later and offline."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from scanner.cli import main
from scanner.sources.base import RawCert
from scanner.sources.files import read_files
from tests.conftest import SAMPLE
from tests.loopback.crtsh_server import CrtshServer
from tests.loopback.pg import CertwatchDB, certwatch_pg  # noqa: F401  (the fixture)

# Columns that must agree; crtsh_url and provenance differ by design (crt.sh ids, file paths).
COMPARED = ["sha256", "serial", "subject_o", "subject_cn", "sans", "not_before", "not_after", "revoked_at",
            "signals", "score", "evidence"]
CRL = SAMPLE / "crl" / "sample-ca.crl"


def _sample_ders() -> list[bytes]:
    return [i.der for i in read_files([SAMPLE / "certs"]) if isinstance(i, RawCert)
            and not i.provenance.endswith("truncated.der")]


def _suspects(out: Path) -> list[dict[str, str]]:
    with open(out / "suspects.csv", newline="", encoding="utf-8") as fh:
        return [{c: r[c] for c in COMPARED} for r in csv.DictReader(fh)]


def _scan(tmp: Path, name: str, *args: str, store: str | None = None, cache: str | None = None,
          codes: tuple[int, ...] = (0,)) -> list[dict[str, str]]:
    out = tmp / name
    code = main(["scan", *args, "--registry-answers", str(SAMPLE / "registrations.csv"),
                 "--cache", str(tmp / f"cache-{cache or name}"), "--store", str(tmp / f"store-{store or name}.sqlite3"),
                 "--out", str(out), "-q", "--no-progress"])
    assert code in codes
    return _suspects(out)


def _clock_moved(monkeypatch, module: str, by: timedelta) -> None:
    """Make `module` see the time `by` later than it is."""
    class Later(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + by

    monkeypatch.setattr(f"{module}.datetime", Later)


@pytest.mark.slow
def test_files_crtsh_sql_and_crtsh_json_give_the_same_suspects_on_every_rerun(tmp_path, monkeypatch,
                                                                             certwatch_pg: CertwatchDB):  # noqa: F811
    ders = _sample_ders()
    from_files = _scan(tmp_path, "files", "--source", "files", str(SAMPLE / "certs"), "--crl", str(CRL))
    assert len(from_files) >= 5

    # crt.sh's PostgreSQL: the certificates, and the CRL's entries as crl_revoked rows
    certwatch_pg.reset()
    ca_id = certwatch_pg.add_ca("C=XX, O=ctscan Test PKI, CN=ctscan Sample Issuing CA")
    ids = certwatch_pg.add_certs(ca_id, ders)
    crl = x509.load_der_x509_crl(CRL.read_bytes())
    for entry in crl:
        reasons = [e.value.reason for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
        certwatch_pg.revoke(ca_id, entry.serial_number, entry.revocation_date_utc, _rfc5280_code(reasons))
    sql = ["--source", "crtsh-sql", "--dsn", certwatch_pg.dsn, "--ca-id", str(ca_id), "--since", "2018-01-01"]
    from_sql = _scan(tmp_path, "sql", *sql, "--until", "2021-01-01")
    assert from_sql == from_files
    assert _scan(tmp_path, "sql-again", *sql, "--until", "2021-01-01", store="sql", cache="sql") == from_files
    # up to now (no --until), then again two hours later without the network: the store serves every window
    # (only the last two hours, never fetched, make that run partial)
    assert _scan(tmp_path, "sql-now", *sql, store="sql", cache="sql") == from_files
    _clock_moved(monkeypatch, "scanner.sources.crtsh_sql", timedelta(hours=2))
    assert _scan(tmp_path, "sql-later", *sql, "--offline", store="sql", cache="sql", codes=(0, 3)) == from_files

    # crt.sh's JSON API: an identity search that finds them all, revocations from the CRL file
    with CrtshServer() as crtsh:
        for crtsh_id, der in zip(ids, ders):
            crtsh.state.add(crtsh_id, der, ca_id, None, ("q", "ctscan-sample"))
        json_args = ["--source", "crtsh-json", "--identity", "ctscan-sample", "--ca-id", str(ca_id),
                     "--crtsh-url", crtsh.url, "--crtsh-rate", "0", "--crl", str(CRL)]
        from_json = _scan(tmp_path, "json", *json_args)
        assert from_json == from_files
        downloads = crtsh.state.hits["d"]
        assert _scan(tmp_path, "json-again", *json_args, store="json", cache="json") == from_files
        assert crtsh.state.hits["d"] == downloads  # nothing fetched twice
    # offline, once the cached search answer is gone (expired): the store still knows what the search found
    assert _scan(tmp_path, "json-offline", *json_args, "--offline", store="json", cache="json-expired") == from_files

    # the local store the crt.sh run filled, scanned again with no network at all
    for name in ("store", "store-again"):
        assert _scan(tmp_path, name, "--source", "store", "--ca-id", str(ca_id), "--offline", "--crl", str(CRL),
                     store="json", cache="store") == from_files


def _rfc5280_code(reasons: list[x509.ReasonFlags]) -> int | None:
    """The CRLReason code crt.sh stores for a reason (RFC 5280 5.3.1; 7 is unused)."""
    if not reasons:
        return None
    order = ["unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
             "cessationOfOperation", "certificateHold", None, "removeFromCRL", "privilegeWithdrawn", "aACompromise"]
    return order.index(reasons[0].value)
