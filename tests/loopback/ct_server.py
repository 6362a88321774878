"""Real CT log HTTP servers on loopback: RFC 6962 (get-sth, get-entries) and static-ct-api (checkpoint, tiles,
issuers), with a test log key that signs tree heads, and optional faults (429, 503, short reads, short answers)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .hostile import serve_fault

TILE = 256


# --- Merkle tree, written straight from RFC 6962 section 2.1 (independent of the code under test) ---

def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash over leaf hashes, by the recursive definition."""
    n = len(leaf_hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaf_hashes[:k]) + mth(leaf_hashes[k:])).digest()


# --- TLS encodings of log entries ---

def _u24(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


def timestamped_entry(timestamp: int, cert_der: bytes | None = None, *, tbs: bytes | None = None,
                      issuer_key_hash: bytes | None = None, extensions: bytes = b"") -> bytes:
    """A TimestampedEntry: x509_entry (cert_der) or precert_entry (issuer_key_hash + tbs)."""
    if tbs is None:
        body = struct.pack(">QH", timestamp, 0) + _u24(cert_der or b"")
    else:
        body = struct.pack(">QH", timestamp, 1) + (issuer_key_hash or b"\0" * 32) + _u24(tbs)
    return body + len(extensions).to_bytes(2, "big") + extensions


def rfc6962_entry(te: bytes, chain: Sequence[bytes], precert_der: bytes | None = None) -> tuple[bytes, bytes]:
    """(leaf_input, extra_data) of a get-entries entry."""
    chain_bytes = _u24(b"".join(_u24(c) for c in chain))
    extra = _u24(precert_der) + chain_bytes if precert_der is not None else chain_bytes
    return b"\x00\x00" + te, extra


def tile_leaf(te: bytes, fingerprints: Sequence[bytes], precert_der: bytes | None = None) -> bytes:
    """A static-ct-api TileLeaf."""
    fps = b"".join(fingerprints)
    return te + (_u24(precert_der) if precert_der is not None else b"") + len(fps).to_bytes(2, "big") + fps


def leaf_index_extension(index: int) -> bytes:
    """The static-ct-api leaf_index SCT extension (type 0, 40-bit index)."""
    return b"\x00\x00\x05" + index.to_bytes(5, "big")


def leaf_hash_of(te: bytes) -> bytes:
    """Leaf hash of the MerkleTreeLeaf wrapping a TimestampedEntry."""
    return hashlib.sha256(b"\x00\x00\x00" + te).digest()


# --- the test log key ---

@dataclass
class LogKey:
    """A test log's P-256 key: signs STHs and checkpoints, and describes itself for a log list."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(self.spki).digest()

    def tree_head_signature(self, timestamp: int, size: int, root: bytes) -> bytes:
        """DigitallySigned(sha256, ecdsa) over a TreeHeadSignature."""
        sig = self.key.sign(struct.pack(">BBQQ", 0, 1, timestamp, size) + root, ec.ECDSA(hashes.SHA256()))
        return b"\x04\x03" + len(sig).to_bytes(2, "big") + sig

    def sth(self, size: int, root: bytes, timestamp: int = 1_700_000_000_000) -> dict:
        """A get-sth answer."""
        return {"tree_size": size, "timestamp": timestamp, "sha256_root_hash": base64.b64encode(root).decode(),
                "tree_head_signature": base64.b64encode(self.tree_head_signature(timestamp, size, root)).decode()}

    def checkpoint(self, origin: str, size: int, root: bytes, timestamp: int = 1_700_000_000_000) -> bytes:
        """A signed note checkpoint with one RFC6962NoteSignature."""
        body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
        key_id = hashlib.sha256(origin.encode() + b"\n\x05" + self.log_id).digest()[:4]
        sig = key_id + timestamp.to_bytes(8, "big") + self.tree_head_signature(timestamp, size, root)
        return f"{body}\n\u2014 {origin} {base64.b64encode(sig).decode()}\n".encode()

    def log_json(self, description: str, *, url: str | None = None, monitoring_url: str | None = None,
                 submission_url: str | None = None, state: str = "usable",
                 interval: tuple[str, str] | None = None) -> dict:
        """This log as a log list v3 entry."""
        obj: dict = {"description": description, "log_id": base64.b64encode(self.log_id).decode(),
                     "key": base64.b64encode(self.spki).decode(), "mmd": 86400,
                     "state": {state: {"timestamp": "2025-01-01T00:00:00Z"}}}
        if url:
            obj["url"] = url
        else:
            obj["monitoring_url"] = monitoring_url
            obj["submission_url"] = submission_url or monitoring_url
        if interval:
            obj["temporal_interval"] = {"start_inclusive": interval[0], "end_exclusive": interval[1]}
        return obj


def log_list(rfc6962: Sequence[dict] = (), tiled: Sequence[dict] = ()) -> dict:
    """A log list v3 document with one operator."""
    return {"version": "test", "log_list_timestamp": "2025-01-01T00:00:00Z",
            "operators": [{"name": "ctscan tests", "email": [], "logs": list(rfc6962), "tiled_logs": list(tiled)}]}


# --- log models: what a path answers ---

Answer = tuple[int, bytes, dict[str, str]]


class RFC6962Log:
    """An RFC 6962 log of fixed entries and one STH; answers at most max_batch entries per get-entries."""

    def __init__(self, entries: Sequence[tuple[bytes, bytes]] | Callable[[int], tuple[bytes, bytes]],
                 sth: dict, max_batch: int = 1000, size: int | None = None):
        self.entries, self.sth, self.max_batch = entries, sth, max_batch
        self.size = size if size is not None else len(entries)  # type: ignore[arg-type]

    def _entry(self, i: int) -> tuple[bytes, bytes]:
        return self.entries(i) if callable(self.entries) else self.entries[i]

    def answer(self, path: str, query: dict[str, list[str]]) -> Answer:
        if path == "ct/v1/get-sth":
            return 200, json.dumps(self.sth).encode(), {"Content-Type": "application/json"}
        if path == "ct/v1/get-entries":
            try:
                start, end = int(query["start"][0]), int(query["end"][0])
            except (KeyError, ValueError):
                return 400, b"start and end are required", {}
            if start < 0 or end < start or start >= self.size:
                return 400, b"bad range", {}
            end = min(end, self.size - 1, start + self.max_batch - 1)
            out = []
            for i in range(start, end + 1):
                li, ed = self._entry(i)
                out.append({"leaf_input": base64.b64encode(li).decode(), "extra_data": base64.b64encode(ed).decode()})
            return 200, json.dumps({"entries": out}).encode(), {"Content-Type": "application/json"}
        return 404, b"not found", {}


_TILE_PATH = re.compile(r"^tile/(data|[0-5])/((?:x\d{3}/)*\d{3})(?:\.p/(\d{1,3}))?$")


class TiledLog:
    """A static-ct-api log: data tiles from tile_leaf(i) (or files), hash tiles of every level from the leaves."""

    def __init__(self, leaf_hashes: bytes, checkpoint: bytes, *, tile_leaf: Callable[[int], bytes] | None = None,
                 files: dict[str, bytes] | None = None, issuers: dict[bytes, bytes] | None = None,
                 gzip_stored: bool = False):
        self.n = len(leaf_hashes) // 32
        self.levels = [leaf_hashes]  # level L: concatenated hashes of Merkle level 8L
        while len(self.levels[-1]) >= TILE * 32:
            below = self.levels[-1]
            self.levels.append(b"".join(mth([below[j:j + 32] for j in range(i, i + TILE * 32, 32)])
                                        for i in range(0, len(below) - TILE * 32 + 1, TILE * 32)))
        self.checkpoint, self.tile_leaf, self.files = checkpoint, tile_leaf, dict(files or {})
        self.issuers = {hashlib.sha256(d).hexdigest(): d for d in (issuers or {}).values()}
        self.gzip_stored = gzip_stored

    def answer(self, path: str, query: dict[str, list[str]]) -> Answer:
        if path in self.files:
            return 200, self.files[path], {}
        if path == "checkpoint":
            return 200, self.checkpoint, {"Content-Type": "text/plain; charset=utf-8"}
        if path.startswith("issuer/"):
            der = self.issuers.get(path[7:])
            return (200, der, {"Content-Type": "application/pkix-cert"}) if der else (404, b"no such issuer", {})
        m = _TILE_PATH.match(path)
        if not m:
            return 404, b"not found", {}
        n = int(m.group(2).replace("x", "").replace("/", ""))
        width = int(m.group(3)) if m.group(3) else TILE
        if not 1 <= width <= TILE:
            return 404, b"bad width", {}
        if m.group(1) == "data":
            if self.tile_leaf is None or n * TILE + width > self.n:
                return 404, b"no such data tile", {}
            body = b"".join(self.tile_leaf(i) for i in range(n * TILE, n * TILE + width))
            return 200, (gzip.compress(body, 1) if self.gzip_stored else body), {}
        level = int(m.group(1))
        hashes = self.levels[level] if level < len(self.levels) else b""
        lo, hi = n * TILE * 32, (n * TILE + width) * 32
        if hi > len(hashes):
            return 404, b"no such hash tile", {}
        return 200, hashes[lo:hi], {}


# --- faults ---

@dataclass
class Faults:
    """Fail the first request of some URLs (chosen by a hash of the URL), then answer properly."""

    every: int = 3  # about one URL in `every` fails once
    kinds: tuple[str, ...] = ("429", "503", "short", "slow")
    down: bool = False  # every request answers 503
    seen: set[str] = field(default_factory=set)
    injected: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, url: str) -> str | None:
        if self.down:
            return "503"
        h = zlib.crc32(url.encode())
        with self.lock:
            if h % self.every or url in self.seen:
                return None
            self.seen.add(url)
            kind = self.kinds[(h // self.every) % len(self.kinds)]
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; do not wait for ACKs
    server: CTServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        parts = urlsplit(self.path)
        path = parts.path[len(srv.prefix):] if parts.path.startswith(srv.prefix) else None
        with srv.lock:
            srv.requests.append(self.path)
        fault = srv.faults.pick(self.path) if srv.faults else None
        if fault in ("429", "503"):
            self._send(int(fault), b"try again", {"Retry-After": "0"} if fault == "429" else {})
            return
        if path is None:
            self._send(404, b"not found", {})
            return
        fault = next((f for p, f in srv.hostile.items() if path.startswith(p)), None)
        if fault:  # answers of the log replaced by a hostile one (tests/loopback/hostile.py)
            try:
                serve_fault(srv, self, fault, path)
            except OSError:
                pass
            self.close_connection = True
            return
        status, body, headers = srv.log.answer(path, parse_qs(parts.query))
        if fault == "short" and status == 200:
            # Promise more than is sent, then hang up: the client sees a body cut short.
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "slow" and status == 200 and path == "ct/v1/get-entries":
            body = self._fewer(body)
        if srv.gzip_encoding and status == 200 and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, 1)
            headers = {**headers, "Content-Encoding": "gzip"}
        self._send(status, body, headers)

    @staticmethod
    def _fewer(body: bytes) -> bytes:
        entries = json.loads(body)["entries"]
        return json.dumps({"entries": entries[: max(1, len(entries) // 3)]}).encode()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class CTServer(ThreadingHTTPServer):
    """A CT log on 127.0.0.1 at an ephemeral port; use as a context manager; `url` is the log's prefix."""

    daemon_threads = True

    def __init__(self, log: RFC6962Log | TiledLog, *, prefix: str = "/log/", faults: Faults | None = None,
                 gzip_encoding: bool = False, hostile: dict[str, str] | None = None, drip_gap: float = 1.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        # log-relative path prefix (e.g. "tile/data/") -> a fault of tests/loopback/hostile.py served instead
        self.hostile = dict(hostile or {})
        self.stopping, self.drip_gap, self.content_type = threading.Event(), drip_gap, "application/octet-stream"
        self.log, self.prefix, self.faults, self.gzip_encoding = log, prefix.lstrip("/"), faults, gzip_encoding
        self.prefix = "/" + self.prefix
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.prefix}"

    def __enter__(self) -> CTServer:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


# --- building a log of real certificates ---

@dataclass
class LogEntrySpec:
    """One entry to log: a certificate (or precertificate) and its chain, issuer first."""

    cert_der: bytes
    chain: tuple[bytes, ...]
    precert: bool = False
    issuer_key_hash: bytes = b""
    timestamp: int = 1_700_000_000_000


def rfc6962_log_entries(specs: Sequence[LogEntrySpec]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """get-entries entries and leaf hashes for the given specs."""
    entries, hashes = [], []
    for s in specs:
        if s.precert:
            te = timestamped_entry(s.timestamp, tbs=_tbs(s.cert_der), issuer_key_hash=s.issuer_key_hash)
            li, ed = rfc6962_entry(te, s.chain, s.cert_der)
        else:
            li, ed = rfc6962_entry(timestamped_entry(s.timestamp, s.cert_der), s.chain)
        entries.append((li, ed))
        hashes.append(hashlib.sha256(b"\x00" + li).digest())
    return entries, hashes


def tiled_log_leaves(specs: Sequence[LogEntrySpec], first_index: int = 0) -> tuple[list[bytes], list[bytes]]:
    """TileLeaf bytes and leaf hashes for the given specs (with leaf_index extensions)."""
    leaves, hashes = [], []
    for i, s in enumerate(specs, start=first_index):
        ext = leaf_index_extension(i)
        if s.precert:
            te = timestamped_entry(s.timestamp, tbs=_tbs(s.cert_der), issuer_key_hash=s.issuer_key_hash,
                                   extensions=ext)
        else:
            te = timestamped_entry(s.timestamp, s.cert_der, extensions=ext)
        fps = [hashlib.sha256(c).digest() for c in s.chain]
        leaves.append(tile_leaf(te, fps, s.cert_der if s.precert else None))
        hashes.append(leaf_hash_of(te))
    return leaves, hashes


def _tbs(der: bytes) -> bytes:
    # The logged TBSCertificate would have the poison removed; no reader under test looks at it.
    from cryptography import x509
    return x509.load_der_x509_certificate(der).tbs_certificate_bytes
