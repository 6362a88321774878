"""Tree head signatures: RFC 6962 STHs and static-ct-api checkpoints (signed notes with RFC6962NoteSignature)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

HASH_SHA256 = 4
SIG_RSA = 1
SIG_ECDSA = 3
_NOTE_SIG_PREFIX = "\u2014 "  # an em dash and a space open every signature line of a signed note


class VerifyError(Exception):
    """A tree head that does not verify: the message names the log and the tree size."""


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head, from get-sth or a checkpoint."""

    tree_size: int
    timestamp: int  # milliseconds
    root_hash: bytes
    signature: bytes  # the DigitallySigned struct


def tree_head_input(timestamp: int, tree_size: int, root_hash: bytes) -> bytes:
    """The bytes a TreeHeadSignature signs: v1, tree_hash, timestamp, tree_size, root."""
    return struct.pack(">BBQQ", 0, 1, timestamp, tree_size) + root_hash


def log_id(spki_der: bytes) -> bytes:
    """A log's ID: SHA-256 of its public key's SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der).digest()


def verify_digitally_signed(spki_der: bytes, data: bytes, blob: bytes, what: str) -> None:
    """Check a TLS DigitallySigned struct (sha256 with ECDSA or RSA) over data; VerifyError if it fails."""
    if len(blob) < 4:
        raise VerifyError(f"{what}: signature of {len(blob)} bytes is not a DigitallySigned struct")
    hash_alg, sig_alg, length = blob[0], blob[1], int.from_bytes(blob[2:4], "big")
    sig = blob[4:]
    if len(sig) != length:
        raise VerifyError(f"{what}: signature length field says {length}, {len(sig)} bytes follow")
    if hash_alg != HASH_SHA256:
        raise VerifyError(f"{what}: hash algorithm {hash_alg} is not SHA-256 (4)")
    try:
        key = serialization.load_der_public_key(spki_der)
    except ValueError as exc:
        raise VerifyError(f"{what}: the log's key from the log list is unreadable: {exc}") from exc
    try:
        if sig_alg == SIG_ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        elif sig_alg == SIG_RSA and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise VerifyError(f"{what}: signature algorithm {sig_alg} does not match the log's "
                              f"{type(key).__name__.replace('PublicKey', '')} key")
    except InvalidSignature:
        raise VerifyError(f"{what}: the signature does not verify against the log's key") from None


def verify_tree_head(spki_der: bytes, head: TreeHead, log_name: str) -> None:
    """Check an RFC 6962 STH signature; VerifyError names the log and the tree size."""
    verify_digitally_signed(spki_der, tree_head_input(head.timestamp, head.tree_size, head.root_hash),
                            head.signature, f"{log_name}: tree head for size {head.tree_size}")


def sth_from_json(obj: dict, log_name: str) -> TreeHead:
    """A get-sth answer -> TreeHead; VerifyError if a field is missing or malformed."""
    try:
        root = base64.b64decode(obj["sha256_root_hash"], validate=True)
        sig = base64.b64decode(obj["tree_head_signature"], validate=True)
        head = TreeHead(int(obj["tree_size"]), int(obj["timestamp"]), root, sig)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise VerifyError(f"{log_name}: get-sth answer is malformed ({type(exc).__name__}: {exc})") from None
    if len(root) != 32 or head.tree_size < 0:
        raise VerifyError(f"{log_name}: get-sth root hash is {len(root)} bytes, tree_size {head.tree_size}")
    return head


def check_final_tree_head(final: tuple[int, bytes] | None, tree_size: int, root: bytes, what: str) -> None:
    """A readonly log signing another root for the size the log list froze it at is a split view: VerifyError."""
    if final is not None and tree_size == final[0] and root != final[1]:
        raise VerifyError(f"{what}: root {root.hex()} differs from the log list's final tree head "
                          f"{final[1].hex()} for that size; the log signed two trees of one size")


def note_key_id(origin: str, log_id_bytes: bytes) -> bytes:
    """Key ID of an RFC6962NoteSignature: SHA-256(origin || '\\n' || 0x05 || LogID)[:4]."""
    return hashlib.sha256(origin.encode() + b"\n\x05" + log_id_bytes).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint: origin, size, root and the signed note text."""

    origin: str
    tree_size: int
    root_hash: bytes
    body: bytes  # the signed text (every line up to the blank line, with its newline)
    signatures: tuple[tuple[str, bytes], ...]  # (key name, key ID + signature)


def parse_checkpoint(text: bytes, log_name: str) -> Checkpoint:
    """Split a signed note into its checkpoint body and signature lines; VerifyError if malformed."""
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError:
        raise VerifyError(f"{log_name}: checkpoint is not UTF-8") from None
    body, sep, sigs = s.partition("\n\n")
    if not sep:
        raise VerifyError(f"{log_name}: checkpoint has no blank line before its signatures")
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerifyError(f"{log_name}: checkpoint body has {len(lines)} lines, needs origin, size and root")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise VerifyError(f"{log_name}: checkpoint size {lines[1]!r} or root {lines[2]!r} is malformed") from None
    if len(root) != 32 or size < 0 or not lines[1].isdigit():
        raise VerifyError(f"{log_name}: checkpoint root is {len(root)} bytes, size {lines[1]!r}")
    signatures = []
    for line in sigs.split("\n"):
        if not line:
            continue
        if not line.startswith(_NOTE_SIG_PREFIX):
            raise VerifyError(f"{log_name}: checkpoint signature line {line[:60]!r} does not start with an em dash")
        name, _, b64 = line[len(_NOTE_SIG_PREFIX):].rpartition(" ")
        try:
            signatures.append((name, base64.b64decode(b64, validate=True)))
        except binascii.Error:
            raise VerifyError(f"{log_name}: checkpoint signature by {name!r} is not base64") from None
    return Checkpoint(lines[0], size, root, (body + "\n").encode(), tuple(signatures))


def verify_checkpoint(text: bytes, spki_der: bytes, origin: str, log_name: str) -> tuple[Checkpoint, TreeHead]:
    """Parse a checkpoint and check its RFC6962NoteSignature by the log's key; VerifyError otherwise."""
    cp = parse_checkpoint(text, log_name)
    what = f"{log_name}: checkpoint for size {cp.tree_size}"
    if cp.origin != origin:
        raise VerifyError(f"{what}: origin line is {cp.origin!r}, expected {origin!r}")
    key_id = note_key_id(origin, log_id(spki_der))
    mine = [sig for name, sig in cp.signatures if name == origin and sig[:4] == key_id]
    if not mine:
        raise VerifyError(f"{what}: no signature by {origin!r} with key ID {key_id.hex()} "
                          f"(found {[(n, s[:4].hex()) for n, s in cp.signatures]})")
    sig = mine[0]
    if len(sig) < 12:
        raise VerifyError(f"{what}: RFC6962NoteSignature of {len(sig)} bytes is too short")
    timestamp = int.from_bytes(sig[4:12], "big")
    head = TreeHead(cp.tree_size, timestamp, cp.root_hash, sig[12:])
    verify_digitally_signed(spki_der, tree_head_input(timestamp, cp.tree_size, cp.root_hash), sig[12:], what)
    return cp, head
