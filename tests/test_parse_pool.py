"""Parsing across processes: a pool that breaks part way (workers killed, or unable to start) loses no chunk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import timedelta

from scanner.parse import items as parse_items
from scanner.sources.base import RawCert
from tests.synth import TestCA, der, utc


class _BreaksOnThirdSubmit(ThreadPoolExecutor):
    """A pool whose third hand-over fails as a broken process pool's does (a worker died, the pool is gone)."""

    def __init__(self, max_workers: int, mp_context: object = None) -> None:
        super().__init__(max_workers=max_workers)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        self.submitted += 1
        if self.submitted == 3:
            raise BrokenProcessPool("a worker process terminated abruptly")
        return super().submit(fn, *args, **kwargs)


def test_a_pool_that_breaks_while_taking_a_chunk_loses_no_certificate(monkeypatch):
    ca = TestCA(name="ctscan Pool CA")
    t0 = utc("2026-06-01T00:00")
    raws = [RawCert(der(ca.issue(serial=10 + i, not_before=t0 + timedelta(minutes=i), cn=f"h{i}.example.org",
                                 dns=[f"h{i}.example.org"])), "files", f"c{i}.pem") for i in range(60)]
    monkeypatch.setattr(parse_items, "CHUNK", 10)
    monkeypatch.setattr(parse_items, "PARALLEL_FROM", 20)
    monkeypatch.setattr(parse_items, "ProcessPoolExecutor", _BreaksOnThirdSubmit)
    chunks = list(parse_items.parse_in_chunks(iter(raws), workers=2))
    parsed = [p for c in chunks for p in c.certs["provenance"].tolist()]
    assert sorted(parsed) == sorted(r.provenance for r in raws)  # every one, none twice
    assert sum(c.read for c in chunks) == 60
