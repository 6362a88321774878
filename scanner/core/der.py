"""The few DER walks ctscan needs where cryptography gives no raw accessor."""

from __future__ import annotations


def element(buf: bytes, off: int) -> tuple[int, int, int]:
    """One DER element at off: (tag, start of its value, end of the element)."""
    tag = buf[off]
    length = buf[off + 1]
    pos = off + 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    return tag, pos, pos + length


def spki_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING contents (without the unused-bits byte) of a DER SPKI."""
    _, pos, _ = element(spki, 0)
    _, _, pos = element(spki, pos)  # AlgorithmIdentifier
    _, start, end = element(spki, pos)  # BIT STRING
    return spki[start + 1:end]
