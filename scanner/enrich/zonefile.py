"""TLD zone files (master-file format, plain or gzip, as ICANN CZDS publishes them): names delegated in them.

A name with NS records in its TLD's zone is registered. The file is read as a stream, a few MB at a
time, and only the owner names the scan asked about are kept, so memory grows with the scan's
names, not with the zone's (a .com zone holds over 150 million names). A name missing from a zone
file says nothing (the file may be a day old, or the name held out of the zone): it goes on to the
delegation check and the registry.

Read: `$ORIGIN`, `$TTL` (ignored), comments, blank owners (the previous owner), `@`, relative and
absolute owner names, any case. Multi-line records in parentheses are skipped past, never misread.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

BLOCK = 4 << 20  # bytes read at a time from a plain file
GZIP_BLOCK = 512 << 10  # compressed bytes read at a time (about 4 MB once inflated)
_CLASSES = frozenset({b"in", b"ch", b"hs", b"cs"})
_DELEGATION_TYPES = frozenset({b"ns"})
_SOA_WITHIN = 64  # owners read before giving up on finding the zone's SOA (its serial dates the file)


@dataclass(frozen=True)
class ZoneHit:
    """One scanned name found delegated in a zone file: the file, its SOA serial and the NS hosts."""

    path: str
    serial: str
    nameservers: tuple[str, ...]
    file_time: datetime

    def detail(self) -> str:
        """The evidence sentence for the registrations table."""
        shown = ", ".join(self.nameservers[:8]) + (
            f" and {len(self.nameservers) - 8} more" if len(self.nameservers) > 8 else "")
        serial = f", SOA serial {self.serial}" if self.serial else ""
        return f"delegated: NS {shown} (zone file {Path(self.path).name}{serial})"


@dataclass
class ZoneRead:
    """What reading the zone files found, and how much was read."""

    hits: dict[str, ZoneHit] = field(default_factory=dict)
    lines: int = 0
    owners: int = 0  # lines that named an owner (not comments, directives or continuations)
    seconds: float = 0.0
    unreadable: list[str] = field(default_factory=list)  # a sentence per file that could not be read


class CutShort(ValueError):
    """A gzip zone file that ends before its end-of-stream marker (a download cut short)."""


def _blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes a block at a time, gunzipped when it is gzip (every member; a cut end raises CutShort)."""
    with path.open("rb") as raw:
        first = raw.read(GZIP_BLOCK)
        if first[:2] != b"\x1f\x8b":
            while first:
                yield first
                first = raw.read(BLOCK)
            return
        inflate = zlib.decompressobj(wbits=31)
        chunk = first
        while chunk:
            while chunk:
                # at most BLOCK inflated bytes at a time, however well the zone compresses
                out = inflate.decompress(chunk, BLOCK)
                chunk = inflate.unconsumed_tail
                if inflate.eof and inflate.unused_data:  # a multi-member gzip: the next member
                    chunk = inflate.unused_data
                    inflate = zlib.decompressobj(wbits=31)
                if out:
                    yield out
            chunk = raw.read(GZIP_BLOCK)
        if not inflate.eof:
            raise CutShort("the gzip stream ends before its end-of-stream marker")


def _lines(path: Path) -> Iterator[tuple[list[bytes], bool]]:
    """Blocks of whole lines, lower-cased (the last partial line carried on), and whether a block is plain.

    A plain block has one record per line, each with its owner, tab-separated (as CZDS writes them):
    no parentheses, spaces, directives or blank owners. Its lines need no parser, only a look at
    the owner; that is what makes a 150-million-name zone readable at the speed of gunzip.
    """
    rest = b""
    for block in _blocks(path):
        data = rest + block
        if not data.islower():
            data = data.lower()  # DNS names are case-insensitive; one pass in C
        lines = data.split(b"\n")
        rest = lines.pop()
        yield lines, _plain(data)
    if rest:
        yield [rest], _plain(rest)


def _plain(data: bytes) -> bool:
    return not (40 in data or 32 in data or b"\n\t" in data or b"\n$" in data or data[:1] in (b"\t", b"$"))


def _record_type(tokens: list[bytes]) -> tuple[bytes, int]:
    """(type, index of its first rdata token) of a record's tokens after the owner ('' when unreadable)."""
    for i, token in enumerate(tokens):
        if token.isdigit() or token in _CLASSES:
            continue  # TTL and class come in either order (lines are lower-cased already)
        return token, i + 1
    return b"", len(tokens)


def _soa_serial(rest: bytes) -> str:
    """The serial of a one-line SOA record's rdata ('' when this is not one)."""
    tokens = rest.split(b";", 1)[0].split()
    rtype, at = _record_type(tokens)
    if rtype == b"soa" and len(tokens) > at + 2:
        return tokens[at + 2].decode("ascii", "replace")
    return ""


def read_zone_files(paths: Iterable[Path], wanted: Collection[str]) -> ZoneRead:
    """The wanted registrable domains delegated (with NS records) in these zone files; streamed, bounded by wanted."""
    started = time.monotonic()
    result = ZoneRead()
    targets = {}
    for name in wanted:
        key = _owner_key(name)
        if key is not None:
            targets.setdefault(key, name)
    for path in paths:
        path = Path(path)
        try:
            _read_one(path, targets, result)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            result.unreadable.append(f"zone file {path} could not be read to its end ({type(exc).__name__}: "
                                     f"{exc}); names found before the fault are kept, the rest go to DNS and RDAP")
    result.seconds = time.monotonic() - started
    return result


def _owner_key(name: str) -> bytes | None:
    """The zone's spelling of a name: lower-case A-labels with the root dot (None when it has none)."""
    text = name.lower().strip(".")
    if not text.isascii():
        # a zone spells IDNs as A-labels; dropping the non-ASCII letters instead ("bücher" -> "bcher")
        # would find another name's delegation
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return text.encode("ascii") + b"."


def _read_one(path: Path, targets: dict[bytes, str], result: ZoneRead) -> None:
    parser = _Parser(targets)
    lines_read = 0
    try:
        for block, plain in _lines(path):
            lines_read += len(block)
            if plain and not parser.origin and parser.owners < _SOA_WITHIN:
                # the zone's first records, where its SOA (and serial) is, through the parser
                head, block = block[: _SOA_WITHIN * 4], block[_SOA_WITHIN * 4 :]
                parser.parse(head, False)
            if plain and not parser.origin:
                # Only the lines of wanted owners go through the parser (which counts them).
                every = len(block)
                block = [line for line in block if line.partition(b"\t")[0] in targets]
                parser.owners += every - len(block)
                parser.owner = b""
            parser.parse(block, not plain)
    finally:  # what was found before a fault (a cut download) is kept
        result.lines += lines_read
        result.owners += parser.owners
        file_time = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        for name, hosts in parser.found.items():
            if name not in result.hits:
                result.hits[name] = ZoneHit(str(path), parser.serial, tuple(sorted(set(hosts))), file_time)


class _Parser:
    """Master-file lines -> NS hosts of the wanted owners; keeps $ORIGIN, the last owner and the SOA serial."""

    def __init__(self, targets: dict[bytes, str]) -> None:
        self.targets = targets
        self.origin = b""
        self.owner = b""
        self.serial = ""
        self.in_parens = False
        self.owners = 0
        self.found: dict[str, list[str]] = {}

    def parse(self, lines: list[bytes], parens: bool) -> None:
        """Read these lines (lower-cased); parens: some line may hold a '(' (else none is looked for)."""
        targets, found = self.targets, self.found
        for line in lines:
            if not line:
                continue
            first = line[0]
            if self.in_parens:
                if 41 in line.split(b";", 1)[0]:  # ')'
                    self.in_parens = False
                continue
            if first == 0x3B:  # ';' comment
                continue
            if first == 0x24:  # '$' directive
                parts = line.split()
                if parts[0] == b"$origin" and len(parts) > 1:
                    origin = parts[1]
                    if not origin.endswith(b"."):  # RFC 1035 5.1: a relative $ORIGIN is under the current one
                        origin = origin + b"." + self.origin if self.origin else origin + b"."
                    self.origin = origin
                continue
            if first == 0x20 or first == 0x09:  # blank owner: the previous one
                rest = line
                if not self.owner:
                    continue
            else:
                head, sep, rest = line.partition(b"\t")
                if not sep or 32 in head:
                    head, _, rest = line.partition(b" ")
                self.owners += 1
                if head.endswith(b"."):
                    self.owner = head
                elif head == b"@":
                    self.owner = self.origin
                elif self.origin and head.strip():
                    self.owner = head.strip() + b"." + self.origin
                else:
                    self.owner = b""  # a relative name with no $ORIGIN: cannot be placed
                    continue
            if parens and 40 in rest:
                before_comment = rest.split(b";", 1)[0]
                if 40 in before_comment:
                    if 41 not in before_comment:
                        self.in_parens = True
                    if not self.serial and self.owners < _SOA_WITHIN:
                        # "@ IN SOA ns. host. ( 2024010101 ; serial": the serial opens the parentheses
                        self.serial = _soa_serial(before_comment.replace(b"(", b" ").replace(b")", b" "))
                    continue
            name = targets.get(self.owner)
            if name is None:
                if not self.serial and self.owners < _SOA_WITHIN:
                    self.serial = _soa_serial(rest)
                continue
            tokens = rest.split(b";", 1)[0].split()
            rtype, at = _record_type(tokens)
            if rtype in _DELEGATION_TYPES and at < len(tokens):
                host = tokens[at].decode("ascii", "replace")
                if not host.endswith(".") and self.origin:
                    host = host + "." + self.origin.decode("ascii", "replace")
                found.setdefault(name, []).append(host.rstrip("."))
