"""pkilint's CA/Browser Forum TLS linter on every certificate (--lint), across processes, cached in the store.

Each certificate is linted as ``lint_cabf_serverauth_cert lint -d`` lints it: its type detected
(root, intermediate, subscriber DV/OV/IV/EV, precertificate, OCSP responder), then the validators of
that type with pkilint's CA/Browser Forum finding filters, keeping findings of severity INFO and above.
Building one type's validators costs about 0.4 s, so every process builds each type once and reuses it.
Results are kept in the certificate store keyed by SHA-256 and linter (pkilint's version and this
profile), so a rerun lints only certificates it has not seen, and a new pkilint lints everything again.

pkilint is imported only when a certificate is actually linted: a scan without --lint never loads
it, and a rerun whose every certificate is cached does not either.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from scanner.core.records import coerce, empty_frame
from scanner.enrich.lint_worker import json_loads, lint_batch, lint_revocation_der
from scanner.sources.base import RawCert, SourceItem
from scanner.sources.store import CertStore

log = logging.getLogger(__name__)

#: The lint table: one row per pkilint finding of a linted DER (a certificate or a precertificate).
LINT_COLUMNS: dict[str, str] = {
    "sha256": "string",  # of the DER linted (a final certificate's or a precertificate's)
    "certificate_type": "string",  # pkilint's detected type, e.g. DV_FINAL_CERTIFICATE
    "severity": "string",  # pkilint's: FATAL / ERROR / WARNING / NOTICE / INFO
    "code": "string",  # pkilint's finding code, e.g. cabf.serverauth.subscriber.revocation_information_absent
    "node_path": "string",  # where in the certificate, e.g. certificate.tbsCertificate.extensions.2
    "message": "string",  # pkilint's message, when it gives one
    "linter": "string",  # "pkilint 0.13.3 (BR 2.2.5)"
}

#: Certificates pkilint could not lint at all (its DER decoder refused them): one row each.
LINT_FAILURE_COLUMNS: dict[str, str] = {"sha256": "string", "error": "string", "linter": "string"}

#: The profile: bump it when what is linted or kept changes, so the cached results are not reused.
PROFILE = "cabf-serverauth -d, finding filters, severity >= INFO, v1"
_LOOKUP_BATCH = 500  # certificates per store lookup
_BATCH = 64  # certificates per unit of work in a worker
PARALLEL_FROM = 256  # fewer uncached certificates than this are linted in-process: workers cost more to start


def pkilint_version() -> str:
    """The installed pkilint's version (read from its metadata: pkilint itself is not imported)."""
    try:
        return metadata.version("pkilint")
    except metadata.PackageNotFoundError:
        return ""


def linter_id() -> str:
    """The cache key of this linter: pkilint's version and ctscan's profile."""
    return f"pkilint {pkilint_version()}; {PROFILE}"


# --- in the scan's process -------------------------------------------------------------------

#: pkilint's findings on the CRLs and OCSP responses a --check-revocation fetched: one row per finding.
REVOCATION_LINT_COLUMNS: dict[str, str] = {
    "url": "string",  # where it was fetched from
    "kind": "string",  # crl / ocsp
    "sha256": "string",  # of the DER linted
    "severity": "string",
    "code": "string",
    "node_path": "string",
    "message": "string",  # pkilint's message; or why pkilint could not read the document (code empty)
    "linter": "string",
}


def lint_revocation_documents(documents: Iterable[tuple[str, str, bytes]]) -> pd.DataFrame:
    """pkilint's CRL and OCSP response linters on (url, kind, der) documents: REVOCATION_LINT_COLUMNS.

    A document pkilint cannot read is one row with an empty code and the reason as its message.
    """
    rows = []
    name = f"pkilint {pkilint_version()}"
    for url, kind, der in documents:
        result = lint_revocation_der(der, kind)
        sha = hashlib.sha256(der).hexdigest()
        if result["error"]:
            rows.append({"url": url, "kind": kind, "sha256": sha, "severity": "", "code": "", "node_path": "",
                         "message": result["error"], "linter": name})
        for severity, code, node_path, message in result["findings"]:
            rows.append({"url": url, "kind": kind, "sha256": sha, "severity": severity, "code": code,
                         "node_path": node_path, "message": message, "linter": name})
    if not rows:
        return empty_frame(REVOCATION_LINT_COLUMNS)
    return coerce(pd.DataFrame(rows, columns=list(REVOCATION_LINT_COLUMNS)), REVOCATION_LINT_COLUMNS)




@dataclass
class LintTables:
    """What linting a scan's certificates gave: the findings, the failures, and the counts for summary.json."""

    findings: pd.DataFrame
    failures: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


class LintService:
    """Lints certificates as a source yields them (``tap``): cached results from the store, the rest in workers.

    At most 4 batches per worker are in flight, so a source is never read far ahead of the linters;
    a scan's parse and the lint run side by side.
    """

    def __init__(self, store_path: Path | str, *, workers: int = 0) -> None:
        self.linter = linter_id()
        self.workers = workers or os.cpu_count() or 1
        self._store = CertStore(store_path)
        self._lookup: list[tuple[str, bytes]] = []  # seen, not yet looked up in the store
        self._todo: list[tuple[str, bytes]] = []  # not in the store, not yet handed to a worker
        self._pending: deque[tuple[list[tuple[str, bytes]], Future[list[str]]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        self._results = LintResults()
        self._seen: set[str] = set()
        self.counts = {"certificates": 0, "from_cache": 0, "linted": 0}

    # feeding

    def tap(self, items: Iterable[SourceItem]) -> Iterator[SourceItem]:
        """The items unchanged; each certificate among them is linted (once, however often it appears)."""
        for item in items:
            if isinstance(item, RawCert):
                sha = item.digest()
                self.add(item.der, sha)
                item = item._replace(sha256=sha)  # hashed once: the parse cache's tally reads it too
            yield item

    def add(self, der: bytes, sha256: str = "") -> None:
        """Lint one DER certificate (unless the store has its result, or it was added before); sha256: its hash, if known."""
        sha = sha256 or hashlib.sha256(der).hexdigest()
        if sha in self._seen:
            return
        self._seen.add(sha)
        self._lookup.append((sha, der))
        if len(self._lookup) >= _LOOKUP_BATCH:
            self._look_up()

    def _look_up(self) -> None:
        batch, self._lookup = self._lookup, []
        cached = self._store.lint_cached(self.linter, [sha for sha, _ in batch])
        for sha, text in cached.items():
            self._results.add(sha, text)
        self.counts["from_cache"] += len(cached)
        self._todo.extend((sha, der) for sha, der in batch if sha not in cached)
        if self.workers > 1 and (self._pool is not None or len(self._todo) >= PARALLEL_FROM):
            self._submit()

    def _submit(self) -> None:
        if self._pool is None:
            # spawn, not fork: the registration lookups run in a thread of this process
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            while self._todo:
                batch, self._todo = self._todo[:_BATCH], self._todo[_BATCH:]
                self._pending.append((batch, self._pool.submit(lint_batch, [d for _, d in batch])))
                while len(self._pending) > 4 * self.workers:
                    self._collect_one()
        except BrokenProcessPool as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        # Workers could not start (e.g. a __main__ that spawn cannot re-import): the rest is linted in-process.
        log.warning("linting in one process: the worker processes failed (%s)", exc)
        self._todo = [pair for batch, _ in self._pending for pair in batch] + self._todo
        self._pending.clear()
        self._shutdown()
        self.workers = 1

    def _collect_one(self) -> None:
        batch, future = self._pending[0]
        results = future.result()  # a broken pool raises here, and the batch stays pending for _fall_back
        self._pending.popleft()
        self._keep([sha for sha, _ in batch], results)

    def _keep(self, shas: Sequence[str], results: Sequence[str]) -> None:
        pairs = list(zip(shas, results))
        for sha, text in pairs:
            self._results.add(sha, text)
        self._store.lint_put(self.linter, pairs)
        self.counts["linted"] += len(pairs)

    # results

    def finish(self) -> LintTables:
        """Wait for every certificate added, and return the lint tables of all of them."""
        self._look_up()
        try:
            if self._pool is not None:
                self._submit()
                while self._pending:
                    self._collect_one()
        except BrokenProcessPool as exc:
            self._fall_back(exc)
        finally:
            self._shutdown()
        for start in range(0, len(self._todo), _BATCH):
            batch = self._todo[start:start + _BATCH]
            self._keep([sha for sha, _ in batch], lint_batch([d for _, d in batch]))
        self._todo = []
        self.counts["certificates"] = len(self._seen)
        return self._results.tables(self.counts)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the workers and close the store (results not yet collected are dropped)."""
        self._shutdown()
        self._store.close()

    def __enter__(self) -> LintService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LintResults:
    """Lint results gathered as they arrive, kept as columns of shared strings (a million certificates' findings
    repeat a few hundred codes, places and messages), not as one JSON text per certificate."""

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}
        self.columns: dict[str, list[str]] = {name: [] for name in LINT_COLUMNS if name != "linter"}
        self.failures: list[tuple[str, str]] = []
        self.br = ""

    def add(self, sha: str, text: str) -> None:
        """One certificate's result (the JSON text lint_batch returns and the store keeps)."""
        result = json_loads(text)
        self.br = self.br or result.get("br", "")
        if result.get("error"):
            self.failures.append((sha, result["error"]))
            return
        shared = self._strings.setdefault
        cert_type = shared(result["type"], result["type"])
        c = self.columns
        for severity, code, node_path, message in result["findings"]:
            c["sha256"].append(sha)
            c["certificate_type"].append(cert_type)
            c["severity"].append(shared(severity, severity))
            c["code"].append(shared(code, code))
            c["node_path"].append(shared(node_path, node_path))
            c["message"].append(shared(message, message))

    def tables(self, counts: dict[str, int]) -> LintTables:
        """The lint tables (LINT_COLUMNS, LINT_FAILURE_COLUMNS) and the summary for summary.json."""
        name = f"pkilint {pkilint_version()} (BR {self.br})" if self.br else f"pkilint {pkilint_version()}"
        if self.columns["sha256"]:
            findings = coerce(pd.DataFrame({**self.columns, "linter": name}), LINT_COLUMNS)
        else:
            findings = empty_frame(LINT_COLUMNS)
        failed = coerce(pd.DataFrame([(sha, error, name) for sha, error in self.failures],
                                     columns=list(LINT_FAILURE_COLUMNS)), LINT_FAILURE_COLUMNS)
        summary = {
            "linter": name,
            "pkilint_version": pkilint_version(),
            "br_version": self.br,
            **counts,
            "failed": len(failed),
            "findings_by_severity": {str(k): int(v) for k, v in findings["severity"].value_counts().items()},
            "findings_per_code": {str(k): int(v) for k, v in findings["code"].value_counts().sort_index().items()},
        }
        return LintTables(findings, failed, summary)


def lint_ders(ders: Iterable[bytes], store_path: Path | str, *, workers: int = 1) -> LintTables:
    """Lint these DER certificates (a notebook's entry point): the lint tables, cached in the store at store_path."""
    with LintService(store_path, workers=workers) as service:
        for der in ders:
            service.add(der)
        return service.finish()
