"""crtsh-json against a crt.sh stand-in on 127.0.0.1 (JSON searches, ?d= downloads, and crt.sh's bad days)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.parse.certs import record_from_raw
from scanner.sources.base import RawCert, SourceError, SourceNotice
from scanner.sources.crtsh_json import CrtshJsonOptions, _row_facts, read
from scanner.sources.store import CertStore
from tests.loopback.crtsh_server import CrtshServer
from tests.synth import TestCA, der, utc

REPO = Path(__file__).resolve().parents[1]
T0 = utc("2024-05-01T00:00")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def certs() -> list[bytes]:
    """20 real certificates of one CA (the first 3 carry example.com names)."""
    ca = TestCA(name="Example Issuing CA")
    return [der(ca.issue(serial=7000 + n, not_before=T0 + timedelta(hours=n), cn=f"h{n}.example.com",
                         dns=[f"h{n}.example.com"], org="Example Org", days=3650)) for n in range(20)]


@pytest.fixture
def crtsh(certs):
    with CrtshServer() as server:
        st = server.state
        for n in range(3):  # found by both searches: must be downloaded once
            st.add(100 + n, certs[n], 7, T0 + timedelta(hours=n, minutes=5), ("q", "example.com"), ("o", "Example Org"))
        st.add(200, certs[3], 8, T0, ("q", "example.com"))  # another CA's
        yield server


def make_config(tmp_path: Path, server: CrtshServer, **kw) -> Config:
    base = dict(out_dir=tmp_path / "out", source="crtsh-json", crtsh_url=server.url, ca_ids=(7,),
                identities=("example.com",), orgs=("Example Org",), crtsh_rate=0, retries=2, timeout=2,
                store_path=tmp_path / "store.sqlite3", cache_dir=tmp_path / "cache")
    base.update(kw)
    return Config(**base)


def run(config: Config) -> tuple[list[RawCert], list[SourceError], list[SourceNotice]]:
    items = list(read(CrtshJsonOptions.from_config(config), store=config.store_file, base_delay=0.01))
    return ([i for i in items if isinstance(i, RawCert)], [i for i in items if isinstance(i, SourceError)],
            [i for i in items if isinstance(i, SourceNotice)])


def test_searches_keep_only_the_chosen_ca_and_download_each_certificate_once(tmp_path, crtsh, certs):
    raws, errors, notices = run(make_config(tmp_path, crtsh, exclude_expired=True))
    assert errors == [] and not any(n.partial for n in notices)
    assert Counter(sha(r.der) for r in raws) == Counter(sha(c) for c in certs[:3])
    assert crtsh.state.hits["d"] == 3 and crtsh.state.hits["d:200"] == 0
    searches = [q for q in crtsh.state.queries if q.get("output") == "json"]
    assert {("q" in q, "O" in q, q.get("exclude")) for q in searches} == {(True, False, "expired"), (False, True, "expired")}
    for raw in raws:
        record = record_from_raw(raw)
        assert record["provenance"] == f"crtsh:{record['crtsh_id']}" and record["source"] == "crtsh-json"
        assert record["issuer_ca_id"] == 7
        assert record["first_seen"] == record["not_before"] + timedelta(minutes=5)


def test_real_crtsh_rows_with_issuer_not_found_and_null_timestamp_are_read_without_crashing(real_data):
    rows = json.loads((real_data / "crtsh" / "crtsh_json_example.com_ronin-recon.json").read_text())
    facts = dict(_row_facts(r) for r in rows)
    assert facts[12337892544]["issuer_ca_id"] == 185752
    assert facts[12337892544]["first_seen"].isoformat() == "2024-03-10T20:13:50.549000+00:00"
    assert facts[8506962125] == {"crtsh_id": 8506962125}  # -1 is no CA, null is no first sighting
    with pytest.raises(ValueError, match="no numeric id"):
        _row_facts({"id": "1; DROP", "issuer_ca_id": 7})


def test_issuer_not_found_certificates_are_kept_when_ca_id_minus_one_is_asked_for(tmp_path, crtsh, certs):
    crtsh.state.add(300, certs[4], -1, None, ("q", "orphan.example.com"))
    raws, errors, _ = run(make_config(tmp_path, crtsh, ca_ids=(-1,), identities=("orphan.example.com",), orgs=()))
    assert errors == [] and [sha(r.der) for r in raws] == [sha(certs[4])]
    record = record_from_raw(raws[0])
    assert record["issuer_ca_id"] is None and record["first_seen"] is None and record["crtsh_id"] == 300


def test_a_502_an_html_page_and_truncated_json_are_retried_until_json_arrives(tmp_path, crtsh, certs):
    crtsh.state.faults["json"] = ["502", "html", "truncated"]
    raws, errors, notices = run(make_config(tmp_path, crtsh, retries=3, orgs=()))
    assert errors == [] and not any(n.partial for n in notices)
    assert crtsh.state.hits["json"] == 4
    assert {sha(r.der) for r in raws} == {sha(c) for c in certs[:3]}


def test_html_answers_that_never_stop_name_the_status_and_the_sql_way_out(tmp_path, crtsh):
    crtsh.state.faults["json"] = ["502"] * 3
    raws, errors, notices = run(make_config(tmp_path, crtsh, retries=2, orgs=()))
    assert raws == [] and crtsh.state.hits["json"] == 3
    assert errors[0].error.startswith("crt.sh answered HTML instead of JSON (502)")
    assert "retry later or use --source crtsh-sql" in errors[0].error
    assert "q=example.com" in errors[0].provenance
    assert any(n.partial and "example.com" in n.message for n in notices)


def test_truncated_json_that_never_heals_is_an_error_not_an_empty_result(tmp_path, crtsh):
    crtsh.state.faults["json"] = ["truncated"] * 3
    raws, errors, notices = run(make_config(tmp_path, crtsh, retries=2, orgs=()))
    assert raws == [] and "truncated or invalid JSON" in errors[0].error
    assert any(n.partial for n in notices)


def test_a_slow_answer_times_out_and_is_asked_again(tmp_path, crtsh, certs):
    crtsh.state.slow_seconds = 1.5
    crtsh.state.faults["json"] = ["slow"]
    raws, errors, _ = run(make_config(tmp_path, crtsh, retries=1, timeout=0.5, orgs=()))
    assert errors == [] and crtsh.state.hits["json"] == 2 and len(raws) == 3


def test_a_429_with_retry_after_is_waited_out(tmp_path, crtsh):
    crtsh.state.faults["d"] = ["429"]
    start = time.monotonic()
    raws, errors, _ = run(make_config(tmp_path, crtsh, orgs=()))
    assert errors == [] and len(raws) == 3
    assert time.monotonic() - start >= 0.9  # the server asked for 1 second


def test_a_capped_search_is_a_partial_notice_naming_crtsh_sql(tmp_path, crtsh, certs):
    crtsh.state.capped.add(("q", "example.com"))
    raws, errors, notices = run(make_config(tmp_path, crtsh, orgs=()))
    capped = [n for n in notices if "10000" in n.message]
    assert len(capped) == 1 and capped[0].partial and "--source crtsh-sql" in capped[0].message
    # the filler rows belong to another CA: only ours are downloaded
    assert errors == [] and len(raws) == 3 and crtsh.state.hits["d"] == 3


def test_certificates_already_in_the_store_are_not_downloaded_again(tmp_path, crtsh, certs):
    config = make_config(tmp_path, crtsh, use_cache=False)
    first, _, _ = run(config)
    assert crtsh.state.hits["d"] == 3
    second, errors, _ = run(config)
    assert errors == [] and crtsh.state.hits["d"] == 3 and crtsh.state.hits["json"] == 4
    assert Counter(sha(r.der) for r in second) == Counter(sha(r.der) for r in first)
    assert {r.extra["crtsh_id"] for r in second} == {100, 101, 102}


def test_der_download_bodies_are_accepted_as_well_as_pem(tmp_path, crtsh, certs):
    crtsh.state.der_bodies = True
    raws, errors, _ = run(make_config(tmp_path, crtsh, orgs=()))
    assert errors == [] and {sha(r.der) for r in raws} == {sha(c) for c in certs[:3]}


def test_a_certificate_crtsh_does_not_have_is_an_error_naming_its_id(tmp_path, crtsh, certs):
    crtsh.state.add(999, certs[5], 7, None, ("q", "example.com"))
    crtsh.state.gone.add(999)
    raws, errors, notices = run(make_config(tmp_path, crtsh, orgs=()))
    assert len(raws) == 3
    assert [e.provenance for e in errors] == ["crtsh:999"] and "404" in errors[0].error
    assert any(n.partial and "1 of 4" in n.message for n in notices)


def test_the_rate_limit_is_per_minute(tmp_path, crtsh):
    start = time.monotonic()
    raws, _, _ = run(make_config(tmp_path, crtsh, orgs=(), crtsh_rate=120))  # one request per 0.5 s
    assert len(raws) == 3
    assert time.monotonic() - start >= 1.4  # 4 requests: 3 gaps of 0.5 s


CHILD = """
import json, sys
from scanner.sources.crtsh_json import CrtshJsonOptions, read
a = json.loads(sys.argv[1])
options = CrtshJsonOptions(url=a["url"], ca_ids=(7,), orgs=("Example Org",), rate=300, cache_dir=a["cache"])
for item in read(options, store=a["store"]):
    pass
"""


def stored_ids(store: Path) -> set[int]:
    if not store.exists():
        return set()
    try:
        with sqlite3.connect(store) as conn:
            return {i for i, in conn.execute("SELECT crtsh_id FROM certs")}
    except sqlite3.OperationalError:
        return set()


def test_kill_9_in_the_middle_of_the_downloads_then_rerun_fetches_only_the_rest(tmp_path, crtsh, certs):
    st = crtsh.state
    for n in range(3, 20):
        st.add(100 + n, certs[n], 7, T0, ("o", "Example Org"))
    store = tmp_path / "store.sqlite3"
    args = json.dumps({"url": crtsh.url, "store": str(store), "cache": str(tmp_path / "cache")})
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + 20
    while len(stored_ids(store)) < 5 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = stored_ids(store)
    assert 5 <= len(before) < 20, "the child was meant to die half way"
    hits_before = Counter({k: v for k, v in st.hits.items() if k.startswith("d:")})
    raws, errors, _ = run(make_config(tmp_path, crtsh, identities=(), orgs=("Example Org",)))
    assert errors == []
    assert Counter(sha(r.der) for r in raws) == Counter(sha(c) for c in certs)
    # what the killed run had stored was not downloaded again
    assert all(st.hits[f"d:{i}"] == hits_before[f"d:{i}"] for i in before)
    with CertStore(store) as cs:
        assert cs.count() == 20 and cs.known_crtsh_ids(range(100, 120)) == set(range(100, 120))


def test_an_offline_rerun_after_the_cached_search_expired_reports_what_the_first_run_found(tmp_path, crtsh, certs):
    first, errors, _ = run(make_config(tmp_path, crtsh))
    assert errors == [] and len(first) == 3
    before = sum(crtsh.state.hits.values())
    # a cache folder without the answers stands for one whose 6-hour search entries have expired
    again, errors, notices = run(make_config(tmp_path, crtsh, offline=True, cache_dir=tmp_path / "fresh-cache"))
    assert errors == [] and not any(n.partial for n in notices)
    assert Counter(sha(r.der) for r in again) == Counter(sha(r.der) for r in first)
    assert {r.extra["first_seen"] for r in again} == {r.extra["first_seen"] for r in first}
    assert sum(crtsh.state.hits.values()) == before
    assert any("answered from the store" in n.message for n in notices)


def test_a_rerun_while_crtsh_search_fails_reports_the_earlier_answer_and_is_partial(tmp_path, crtsh, certs):
    first, _, _ = run(make_config(tmp_path, crtsh, use_cache=False))
    crtsh.state.faults["json"] = ["502"] * 20
    again, errors, notices = run(make_config(tmp_path, crtsh, use_cache=False, retries=1))
    assert Counter(sha(r.der) for r in again) == Counter(sha(r.der) for r in first)
    assert len(errors) == 2 and all("502" in e.error for e in errors)
    assert any(n.partial and "an earlier run found are reported from the store" in n.message for n in notices)
    assert crtsh.state.hits["d"] == 3  # nothing downloaded twice
