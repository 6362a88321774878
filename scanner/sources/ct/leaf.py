"""CT log entries from their TLS encodings: RFC 6962 MerkleTreeLeaf + extra_data, and static-ct-api TileLeaf."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

X509_ENTRY = 0
PRECERT_ENTRY = 1


class LeafError(ValueError):
    """The bytes are not a well-formed log entry; the message says which field broke."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log entry, whichever API it came from."""

    timestamp: int  # milliseconds since the epoch (the SCT timestamp)
    entry_type: int  # X509_ENTRY or PRECERT_ENTRY
    cert_der: bytes  # the certificate, or the full pre_certificate for precert entries
    issuer_key_hash: bytes | None  # precert entries: SHA-256 of the final issuer's SubjectPublicKeyInfo
    chain: tuple[bytes, ...]  # RFC 6962: chain DERs; static-ct-api: SHA-256 fingerprints
    leaf_hash: bytes  # RFC 6962 leaf hash of the MerkleTreeLeaf


class _Reader:
    """A cursor over TLS-encoded bytes that names the field it failed on."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None):
        self.buf, self.pos, self.end = buf, pos, len(buf) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise LeafError(f"{what}: needs {n} bytes at offset {self.pos}, only {self.end - self.pos} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, length_bytes: int, what: str) -> bytes:
        return self.take(self.uint(length_bytes, what + " length"), what)


def merkle_leaf_hash(timestamped_entry: bytes) -> bytes:
    """RFC 6962 leaf hash of the MerkleTreeLeaf (v1, timestamped_entry) that wraps a TimestampedEntry."""
    return hashlib.sha256(b"\x00\x00\x00" + timestamped_entry).digest()


def _timestamped_entry(r: _Reader) -> tuple[int, int, bytes, bytes | None, int]:
    """Read a TimestampedEntry: (timestamp, entry_type, cert or TBS, issuer_key_hash, start offset)."""
    start = r.pos
    timestamp = r.uint(8, "timestamp")
    entry_type = r.uint(2, "entry_type")
    if entry_type == X509_ENTRY:
        body, ikh = r.vector(3, "ASN.1Cert"), None
    elif entry_type == PRECERT_ENTRY:
        ikh = r.take(32, "issuer_key_hash")
        body = r.vector(3, "TBSCertificate")
    else:
        raise LeafError(f"unknown entry_type {entry_type}")
    r.vector(2, "extensions")
    return timestamp, entry_type, body, ikh, start


def _chain(data: bytes, what: str) -> tuple[bytes, ...]:
    r = _Reader(data)
    certs = []
    while r.pos < r.end:
        certs.append(r.vector(3, what))
    return tuple(certs)


def parse_rfc6962_entry(leaf_input: bytes, extra_data: bytes) -> LogEntry:
    """One get-entries entry; precert entries carry the full pre_certificate from the PrecertChainEntry."""
    r = _Reader(leaf_input)
    version, leaf_type = r.uint(1, "version"), r.uint(1, "leaf_type")
    if version != 0 or leaf_type != 0:
        raise LeafError(f"MerkleTreeLeaf version {version} / leaf_type {leaf_type} is not v1 timestamped_entry")
    timestamp, entry_type, body, ikh, _ = _timestamped_entry(r)
    if r.pos != r.end:
        raise LeafError(f"{r.end - r.pos} trailing bytes after the MerkleTreeLeaf")
    x = _Reader(extra_data)
    if entry_type == PRECERT_ENTRY:
        cert = x.vector(3, "pre_certificate")
        chain = _chain(x.vector(3, "precertificate_chain"), "precertificate_chain certificate")
    else:
        cert = body
        chain = _chain(x.vector(3, "certificate_chain"), "certificate_chain certificate")
    if x.pos != x.end:
        raise LeafError(f"{x.end - x.pos} trailing bytes after extra_data")
    return LogEntry(timestamp, entry_type, cert, ikh, chain, hashlib.sha256(b"\x00" + leaf_input).digest())


def iter_tile_leaves(data: bytes) -> Iterator[LogEntry]:
    """The TileLeaf records of one static-ct-api data tile, in order; LeafError where the encoding breaks."""
    r = _Reader(data)
    while r.pos < r.end:
        timestamp, entry_type, body, ikh, start = _timestamped_entry(r)
        leaf_hash = merkle_leaf_hash(data[start:r.pos])
        cert = r.vector(3, "pre_certificate") if entry_type == PRECERT_ENTRY else body
        fps = r.vector(2, "certificate_chain")
        if len(fps) % 32:
            raise LeafError(f"certificate_chain of {len(fps)} bytes is not a list of SHA-256 fingerprints")
        yield LogEntry(timestamp, entry_type, cert, ikh,
                       tuple(fps[i:i + 32] for i in range(0, len(fps), 32)), leaf_hash)
