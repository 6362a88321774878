"""Parsing in chunks across processes: order kept, nothing lost, and a broken pool falls back in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scanner.parse.items import CHUNK, parse_in_chunks
from scanner.sources.base import RawCert, SourceError, SourceNotice
from tests.synth import der, utc

REPO = Path(__file__).resolve().parents[1]


def _items(test_ca, n):
    items = []
    for i in range(n):
        items.append(RawCert(der(test_ca.issue(serial=i + 1, not_before=utc("2024-01-01T00:00"),
                                                dns=[f"h{i}.example{i % 50}.com"])), "files", f"f{i}"))
        if i % 1000 == 0:
            items.append(RawCert(b"\x30\x03garbage", "files", f"bad{i}"))
            items.append(SourceNotice(f"note {i}"))
    return items


def test_parallel_parsing_keeps_every_certificate_error_and_notice_in_order(test_ca):
    items = _items(test_ca, 3 * CHUNK)
    serial = list(parse_in_chunks(items, workers=1))
    parallel = list(parse_in_chunks(items, workers=2))
    assert [len(c.certs) for c in parallel] == [len(c.certs) for c in serial]
    provenance = [p for c in parallel for p in c.certs["provenance"]]
    assert provenance == [f"f{i}" for i in range(3 * CHUNK)]
    errors = [e["provenance"] for c in parallel for e in c.errors]
    assert errors == ["bad0", "bad1000", "bad2000", "bad3000", "bad4000", "bad5000"]
    assert [n.message for c in parallel for n in c.notices] == [n.message for c in serial for n in c.notices]
    assert {d for c in parallel for d in c.domains} == {f"example{k}.com" for k in range(50)}
    assert not any(isinstance(i, SourceError) for c in parallel for i in c.notices)


def test_a_main_module_that_spawned_workers_cannot_import_falls_back_to_one_process():
    script = (
        "from scanner.parse.items import parse_in_chunks\n"
        "from scanner.sources.base import RawCert\n"
        "from tests.synth import TestCA, der, utc\n"
        "ca = TestCA()\n"
        "items = [RawCert(der(ca.issue(serial=i + 1, not_before=utc('2024-01-01T00:00'), dns=['a.example.com'])),"
        " 'files', str(i)) for i in range(5000)]\n"
        "print(sum(len(c.certs) for c in parse_in_chunks(items, workers=2)))\n"
    )
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "5000"
    assert "parsing in one process" in proc.stderr


def test_parsing_in_process_leaves_the_cyclic_collector_as_it_found_it(test_ca):
    import gc

    items = _items(test_ca, 10)
    assert gc.isenabled()
    assert sum(len(c.certs) for c in parse_in_chunks(items, workers=1)) == 10
    assert gc.isenabled()  # a long scan's later stages still get their cycles collected
    gc.disable()
    try:
        list(parse_in_chunks(items, workers=1))
        assert not gc.isenabled()
    finally:
        gc.enable()
