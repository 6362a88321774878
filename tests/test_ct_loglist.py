"""Log list v3: RFC 6962 and tiled logs, chosen by name, URL, state and notAfter interval."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from scanner.sources.ct.loglist import RFC6962, STATIC, LogListError, load_log_list, select_logs

LIST = "google_ct_all_logs_list_v3_2025-05-05.json"


def utc(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=timezone.utc)


def test_the_real_log_list_has_rfc6962_and_tiled_logs(real_data):
    logs = load_log_list(real_data / LIST)
    assert len(logs) == 181
    tiled = [lg for lg in logs if lg.api == STATIC]
    assert len(tiled) == 6 and all(lg.url.startswith("https://") and lg.url.endswith("/") for lg in tiled)
    twig = next(lg for lg in tiled if "Twig2025h1b" in lg.name)
    assert twig.origin == "twig.ct.letsencrypt.org/2025h1b"


def test_logs_are_chosen_by_description_or_url(real_data):
    logs = load_log_list(real_data / LIST)
    chosen = select_logs(logs, ["Google 'Pilot' log", "https://sycamore.ct.letsencrypt.org/2025h2b"])
    assert [(lg.name, lg.api) for lg in chosen] == [("Google 'Pilot' log", RFC6962),
                                                     ("Let's Encrypt Sycamore2025h2b", STATIC)]


def test_an_unknown_log_name_fails_loudly(real_data):
    with pytest.raises(LogListError, match="not in the log list"):
        select_logs(load_log_list(real_data / LIST), ["Google 'Nope' log"])


def test_states_and_not_after_range_keep_logs_whose_interval_overlaps(real_data):
    logs = load_log_list(real_data / LIST)
    chosen = select_logs(logs, states=["usable", "readonly"], for_not_after=(utc(2026, 2, 1), utc(2026, 3, 1)))
    assert chosen and all(lg.state in ("usable", "readonly") for lg in chosen)
    for lg in chosen:
        start, end = lg.temporal_interval
        assert (start is None or start < utc(2026, 3, 1)) and (end is None or end > utc(2026, 2, 1))
    assert "Google 'Argon2026h1' log" in [lg.name for lg in chosen]
    assert "Google 'Argon2025h2' log" not in [lg.name for lg in chosen]


def test_a_single_log_object_is_accepted_as_a_list(real_data):
    (log,) = load_log_list(real_data / "static-ct-api_rome2026h1_checkpoint" / "log.v3.json")
    assert (log.api, log.state, log.origin) == (STATIC, "readonly", "rome2026h1.example.org")


def test_no_selection_and_unknown_states_are_refused(real_data):
    logs = load_log_list(real_data / LIST)
    with pytest.raises(LogListError, match="choose the logs"):
        select_logs(logs)
    with pytest.raises(LogListError, match="unknown log state"):
        select_logs(logs, states=["usabel"])


def test_a_log_listed_under_both_logs_and_tiled_logs_is_read_once_through_its_tiles(tmp_path):
    key = base64.b64encode(b"\x30" * 91).decode()
    both = {"description": "Dual 2026h1", "log_id": base64.b64encode(b"\x01" * 32).decode(), "key": key,
            "state": {"usable": {"timestamp": "2025-01-01T00:00:00Z"}}}
    other = {**both, "description": "Other 2026h1", "log_id": base64.b64encode(b"\x02" * 32).decode(),
             "url": "https://other.example/2026h1/"}
    doc = {"operators": [{"name": "op", "logs": [{**both, "url": "https://dual.example/ct/2026h1/"}, other],
                          "tiled_logs": [{**both, "submission_url": "https://dual.example/2026h1/",
                                          "monitoring_url": "https://mon.dual.example/2026h1/"}]}]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(doc))
    logs = load_log_list(path)
    assert len(logs) == 3
    for chosen in (select_logs(logs, states=["usable"]), select_logs(logs, ["Dual 2026h1", "Other 2026h1"])):
        assert sorted((lg.name, lg.api) for lg in chosen) == [("Dual 2026h1", STATIC), ("Other 2026h1", RFC6962)]
    # Named by its RFC 6962 URL, that is the API read.
    assert [lg.api for lg in select_logs(logs, ["https://dual.example/ct/2026h1/"])] == [RFC6962]


def test_a_readonly_logs_final_tree_head_is_read_from_the_list(real_data):
    sabre = next(lg for lg in load_log_list(real_data / LIST) if lg.name == "Sectigo 'Sabre' CT log")
    assert sabre.state == "readonly"
    assert sabre.final_tree_head == (546099878, base64.b64decode("rBTMeBSKemBB90yJ598PhN+iLHApXbJpHhlCuNcUfgg="))
    (rome,) = load_log_list(real_data / "static-ct-api_rome2026h1_checkpoint" / "log.v3.json")
    assert rome.final_tree_head and rome.final_tree_head[0] == 300
