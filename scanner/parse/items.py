"""Source items -> certificate frames, chunk by chunk, parsed across processes with bounded read-ahead."""

from __future__ import annotations

import gc
import hashlib
import logging
import multiprocessing
import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

import pandas as pd
from cryptography.utils import CryptographyDeprecationWarning

from scanner.core.records import WARNED_NOTE, ErrorRecord
from scanner.parse.certs import IssuerNames, ParseError, record_from_raw, records_frame
from scanner.parse.domains import registrable_domains
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice, SourceState
from scanner.sources.files import FileItems, read_paths

log = logging.getLogger(__name__)
CHUNK = 2000  # certificates per unit of work: between two hand-overs of new domains to the lookups
PARALLEL_FROM = 2 * CHUNK  # smaller inputs are parsed in-process: starting workers costs more


@dataclass
class Chunk:
    """What one chunk of source items became."""

    certs: pd.DataFrame
    errors: list[dict[str, str]] = field(default_factory=list)
    notices: list[SourceNotice] = field(default_factory=list)
    read: int = 0  # items that were certificates or errors (notices are not counted)
    domains: set[str] = field(default_factory=set)  # registrable domains worth a lookup


def _explain_parse_failure(raw: RawCert, reason: str) -> str:
    from cryptography import x509

    try:
        x509.load_der_x509_crl(raw.der)
        return "this is a CRL, not a certificate: pass it with --crl"
    except ValueError:
        return f"not a parseable X.509 certificate: {reason}"


def parse_chunk(items: list[SourceItem], max_sans_per_cert: int, domains: bool = True) -> Chunk:
    """Parse one chunk: certificates to a frame, failures to error rows, notices kept. Runs in workers.

    domains: find the chunk's registrable domains (for lookups that start while parsing goes on).
    """
    # The records make no reference cycles, but their dicts and lists set off a collection every few
    # hundred: a tenth of the parse went to the cyclic collector. It runs again after the chunk.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            _watch_warnings()
            chunk = _parse_chunk(items, max_sans_per_cert, domains, caught)
        for other in caught:  # not a certificate's: as it would have been shown
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        return chunk
    finally:
        if collecting:
            gc.enable()


def _watch_warnings() -> None:
    # What cryptography reads today but says a later release will refuse (a serial that is not
    # positive, a NULL where the signature algorithm allows no parameters) is a defect of that
    # certificate: its parse_note, so malformed_certificate names it, instead of one line on stderr
    # that names no certificate. Its warnings on a name attribute's length are left out: they come
    # only from the Names it decodes itself (not every certificate's), and length is a lint's matter.
    warnings.simplefilter("always", CryptographyDeprecationWarning)
    warnings.filterwarnings("ignore", message="Attribute's length must be", category=UserWarning)


def _parse_chunk(items: list[SourceItem], max_sans_per_cert: int, domains: bool,
                 caught: list[warnings.WarningMessage]) -> Chunk:
    rows: list[dict[str, Any]] = []
    names = IssuerNames()
    chunk = Chunk(certs=pd.DataFrame())
    for item in items:
        if isinstance(item, SourceNotice):
            chunk.notices.append(item)
            continue
        if isinstance(item, SourceState):  # for a round built on an earlier one (pipeline's tally), not parsed
            continue
        chunk.read += 1
        if isinstance(item, SourceError):
            chunk.errors.append(item.as_row())
            continue
        row: dict[str, Any] | None
        try:
            row = record_from_raw(item, names)
        except ParseError as exc:
            refused = str(exc)
            try:
                # certspotter's rule: a certificate only a lenient reader can read is often the misissuance,
                # so it is checked like any other (and found malformed) as well as listed as an error
                row = record_from_raw(item, names, refused=refused)
                why = f"cryptography refuses this certificate ({refused}); read leniently, see malformed_certificate"
            except ParseError:
                row, why = None, _explain_parse_failure(item, refused)
            chunk.errors.append(ErrorRecord(item.source, item.provenance, why,
                                            hashlib.sha256(item.der).hexdigest(), "parse").as_row())
        notes = _take_deprecations(caught) if caught else []
        if row is not None:  # (bytes that are no certificate: the error row says what they are)
            if notes:
                warned = WARNED_NOTE + "; ".join(dict.fromkeys(notes))
                row["parse_note"] = f"{row['parse_note']}; {warned}" if row["parse_note"] else warned
            rows.append(row)
    chunk.certs = records_frame(rows)
    if domains:
        chunk.domains = registrable_domains(chunk.certs, max_sans_per_cert)
    return chunk


#: cryptography's warnings as a report says them (its texts run to several sentences); others verbatim
_WARNING_TEXTS = (
    ("serial number which wasn't positive", "the serial number is not positive (RFC 5280 4.1.2.2)"),
    ("NULL parameter value in its signature algorithm",
     "the signature algorithm carries NULL parameters where none are allowed (RFC 5758 3.2, RFC 8410 3)"),
)


def _warning_text(message: str) -> str:
    for marker, text in _WARNING_TEXTS:
        if marker in message:
            return text
    return message


def _take_deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    """Take cryptography's deprecation warnings out of caught, as texts; the others stay, to be shown."""
    texts, others = [], []
    for w in caught:
        if issubclass(w.category, CryptographyDeprecationWarning):
            texts.append(_warning_text(str(w.message)))
        else:
            others.append(w)
    caught[:] = others
    return texts


def parse_files(paths: list[str | SourceError], max_sans_per_cert: int, domains: bool = True) -> Chunk:
    """Read these files (the files source's walk, in part) and parse their items as parse_chunk does. Runs in workers."""
    return parse_chunk(list(read_paths(paths)), max_sans_per_cert, domains)


def _chunks(items: Iterable[SourceItem]) -> Iterator[list[SourceItem]]:
    it = iter(items)
    while chunk := list(islice(it, CHUNK)):
        yield chunk


def parse_in_chunks(items: Iterable[SourceItem], *, workers: int = 0, max_sans_per_cert: int = 5000,
                    domains: bool = True) -> Iterator[Chunk]:
    """Parse source items chunk by chunk, in order; with workers > 1 (0 = one per core) across processes.

    domains: give each chunk's registrable domains (Chunk.domains); without, they are left empty.

    At most 2 x workers chunks are in flight, so a huge source is never read far ahead of the parsers.
    The files source (a FileItems, not wrapped by a tap or a tally) is read by the workers themselves.
    """
    n_workers = workers or os.cpu_count() or 1
    if n_workers > 1 and isinstance(items, FileItems):
        yield from _parse_files_in_workers(items, n_workers, max_sans_per_cert, domains)
        return
    chunks = _chunks(items)
    first = list(islice(chunks, 2))
    if n_workers <= 1 or len(first) < 2 or sum(len(c) for c in first) < PARALLEL_FROM:
        for chunk in first:
            yield parse_chunk(chunk, max_sans_per_cert, domains)
        for chunk in chunks:
            yield parse_chunk(chunk, max_sans_per_cert, domains)
        return
    # spawn, not fork: the registration lookups run in a thread of this process
    context = multiprocessing.get_context("spawn")
    rest = _chain(first, chunks)
    pending: list[tuple[list[SourceItem], Future[Chunk]]] = []
    taken: list[SourceItem] = []  # a chunk not handed over yet (if submitting it fails, it is parsed here)
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            for taken in rest:
                pending.append((taken, pool.submit(parse_chunk, taken, max_sans_per_cert, domains)))
                taken = []
                if len(pending) >= 2 * n_workers:
                    yield pending[0][1].result()
                    pending.pop(0)
            while pending:
                yield pending[0][1].result()
                pending.pop(0)
    except BrokenProcessPool as exc:
        # Workers could not start (e.g. a __main__ that spawn cannot re-import): finish in-process.
        log.warning("parsing in one process: the worker processes failed (%s)", exc)
        for chunk in [*(c for c, _ in pending), taken]:
            if chunk:
                yield parse_chunk(chunk, max_sans_per_cert, domains)
        for chunk in rest:
            yield parse_chunk(chunk, max_sans_per_cert, domains)


def _chain(first: list[list[SourceItem]], rest: Iterator[list[SourceItem]]) -> Iterator[list[SourceItem]]:
    yield from first
    yield from rest


def _parse_files_in_workers(files: FileItems, n_workers: int, max_sans_per_cert: int,
                            domains: bool) -> Iterator[Chunk]:
    """parse_in_chunks of the files source, each worker reading a part of its walk; fewer files are read here."""
    walk = files.walk()
    first = list(islice(walk, PARALLEL_FROM))
    if len(first) < PARALLEL_FROM:  # a few files (or a few large bundles): read here, parsed by items
        yield from parse_in_chunks(read_paths(first), workers=n_workers, max_sans_per_cert=max_sans_per_cert,
                                   domains=domains)
        return
    paths = chain(first, walk)
    # Files per part: CHUNK, then as many as hold about CHUNK items, going by the items per file so far
    # (a folder of bundles is read a few files at a time).
    size, files_read, items_read = CHUNK, 0, 0
    context = multiprocessing.get_context("spawn")
    pending: deque[tuple[list[str | SourceError], Future[Chunk]]] = deque()
    taken: list[str | SourceError] = []  # a part not handed over yet (if submitting it fails, it is read here)
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            while True:
                while len(pending) < 2 * n_workers and (taken := list(islice(paths, size))):
                    pending.append((taken, pool.submit(parse_files, taken, max_sans_per_cert, domains)))
                    taken = []
                if not pending:
                    return
                chunk = pending[0][1].result()
                part, _ = pending.popleft()
                files_read, items_read = files_read + len(part), items_read + chunk.read
                size = max(1, min(CHUNK, CHUNK * files_read // max(items_read, 1)))
                yield chunk
    except BrokenProcessPool as exc:
        log.warning("parsing in one process: the worker processes failed (%s)", exc)
        for part in [*(p for p, _ in pending), taken]:
            if part:
                yield parse_files(part, max_sans_per_cert, domains)
        while part := list(islice(paths, CHUNK)):
            yield parse_files(part, max_sans_per_cert, domains)
