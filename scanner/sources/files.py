"""Source: the CA's own files. Directories (recursively), PEM bundles, DER files."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from .base import RawCert, SourceError, SourceItem

SOURCE = "files"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL
)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given paths, in a stable order (directories walked recursively)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def split_certificates(data: bytes, provenance: str) -> Iterator[SourceItem]:
    """The certificates in one file's bytes: every CERTIFICATE block of a PEM bundle, or one DER blob."""
    if b"-----BEGIN" not in data:
        if not data.strip():
            yield SourceError(SOURCE, provenance, "empty file")
            return
        yield RawCert(data, SOURCE, provenance)
        return
    found = 0
    for n, match in enumerate(_PEM_BLOCK.finditer(data), start=1):
        label, body = match.group(1), match.group(2)
        if label not in _CERT_LABELS:
            continue
        found += 1
        where = f"{provenance}#{n}"
        try:
            der = base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
        except (binascii.Error, ValueError) as exc:
            yield SourceError(SOURCE, where, f"PEM block is not valid base64: {exc}",
                              hashlib.sha256(body).hexdigest())
            continue
        yield RawCert(der, SOURCE, where)
    if found == 0:
        yield SourceError(SOURCE, provenance, "PEM file holds no CERTIFICATE block")


def read_files(paths: Iterable[Path]) -> Iterator[SourceItem]:
    """Yield every certificate (or read error) found in the given files and directories."""
    for path in iter_files(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield SourceError(SOURCE, str(path), f"cannot read file: {exc.strerror or exc}")
            continue
        yield from split_certificates(data, str(path))
