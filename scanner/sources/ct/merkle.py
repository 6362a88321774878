"""RFC 6962 Merkle tree hashing: a streaming root over aligned subtrees, and tile arithmetic."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

TILE_WIDTH = 256  # hashes (or entries) in a full tile
TILE_HEIGHT = 8  # Merkle levels one tile spans


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree whose leaves (or nodes) are the given 2^k hashes, in order."""
    if not hashes or len(hashes) & (len(hashes) - 1):
        raise ValueError(f"a perfect subtree needs a power of two hashes, not {len(hashes)}")
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class CompactRange:
    """The hashes of [0, size) as a stack of perfect subtrees: O(log n) memory, however long the log."""

    def __init__(self, size: int = 0, stack: Iterable[tuple[int, bytes]] = ()):
        self.size = size
        self.stack: list[tuple[int, bytes]] = list(stack)
        if sum(1 << h for h, _ in self.stack) != size:
            raise ValueError("compact range stack does not add up to its size")

    def push(self, height: int, digest: bytes) -> None:
        """Append the perfect subtree of 2^height leaves that starts at self.size."""
        if self.size & ((1 << height) - 1):
            raise ValueError(f"a subtree of height {height} cannot start at leaf {self.size}")
        self.size += 1 << height
        stack = self.stack
        while stack and stack[-1][0] == height:
            digest = node_hash(stack.pop()[1], digest)
            height += 1
        stack.append((height, digest))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaves."""
        for h in leaf_hashes:
            self.push(0, h)

    def root(self) -> bytes:
        """The RFC 6962 Merkle Tree Hash of [0, size)."""
        if not self.stack:
            return hashlib.sha256(b"").digest()
        digest = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            digest = node_hash(left, digest)
        return digest

    def copy(self) -> CompactRange:
        """An independent copy."""
        return CompactRange(self.size, self.stack)

    def to_json(self) -> list[list[int | str]]:
        """A JSON-able form for the resume state."""
        return [[h, d.hex()] for h, d in self.stack]

    @classmethod
    def from_json(cls, size: int, data: list[list[int | str]]) -> CompactRange:
        """The inverse of to_json."""
        return cls(size, [(int(h), bytes.fromhex(str(d))) for h, d in data])


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """Merkle Tree Hash of a whole list of leaf hashes."""
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


def aligned_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as (height, index) perfect subtrees, left to right, each as large as alignment allows."""
    out = []
    while start < end:
        h = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << h) > end:
            h -= 1
        out.append((h, start >> h))
        start += 1 << h
    return out


def tile_path(n: int) -> str:
    """A tile index in static-ct-api form: 1234067 -> 'x001/x234/067'."""
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def tile_width(level: int, n: int, tree_size: int) -> int:
    """How many hashes tile (level, n) holds in a tree of tree_size leaves (256 = full)."""
    return max(0, min(TILE_WIDTH, (tree_size >> (TILE_HEIGHT * level)) - TILE_WIDTH * n))
