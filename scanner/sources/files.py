"""Source: the CA's own files. Directories (recursively), PEM bundles, DER files, PKCS#7 bundles."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from scanner.core.config import Config
from scanner.core.der import element
from scanner.sources.base import RawCert, SourceError, SourceItem

SOURCE = "files"
#: A PEM block is this header, its body, then "-----END <label>-----" (the first one after it).
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_WHITESPACE = b" \t\n\r\x0b\x0c"  # what \s matches in a bytes pattern, deleted by bytes.translate
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {b"PKCS7", b"CMS"}
#: DER of the OID 1.2.840.113549.1.7.2 (PKCS#7 signedData): how a .p7b/.p7c file begins its content.
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")


@dataclass(frozen=True)
class FilesOptions:
    """What reading the CA's own files needs: the files and folders, and folders to leave out."""

    paths: tuple[Path, ...]
    exclude: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        object.__setattr__(self, "exclude", tuple(Path(p) for p in self.exclude))

    @classmethod
    def from_config(cls, config: Config) -> FilesOptions:
        """The scan's PATHs, leaving out its report folder: a rerun must not read its own reports."""
        return cls(config.paths, exclude=(config.out_dir,))


def shown_path(path: Path | str) -> str:
    """A path as text for the reports: bytes that are not UTF-8 (a Latin-1 file name) as \\xNN escapes."""
    if isinstance(path, str) and path.isascii():
        return path
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def iter_files(paths: Iterable[Path], exclude: Iterable[Path] = ()) -> Iterator[Path | SourceError]:
    """Every regular file under the given paths, in a stable order (directories walked recursively).

    Symbolic links to directories are followed, each directory read once (so a link loop ends); a
    directory that cannot be listed is a SourceError, never skipped silently. Folders in `exclude`
    (the report folder, when it lies inside the input) are not entered.
    """
    for path in _iter_paths(paths, exclude):
        yield path if isinstance(path, SourceError) else Path(path)


def _iter_paths(paths: Iterable[Path], exclude: Iterable[Path] = ()) -> Iterator[str | SourceError]:
    """iter_files with paths as text: a million Path objects cost more than reading the files."""
    seen: set[tuple[int, int]] = set()
    for folder in exclude:
        try:
            st = Path(folder).stat()
        except OSError:
            continue
        seen.add((st.st_dev, st.st_ino))
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from _walk(str(path), seen, top=True)
        else:
            yield str(path)


def _walk(folder: str, seen: set[tuple[int, int]], *, top: bool = False) -> Iterator[str | SourceError]:
    try:
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in seen and not top:
            return  # already read (a link loop, a second link to it) or the excluded report folder
        seen.add(key)
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield SourceError(SOURCE, shown_path(folder), f"cannot read folder: {exc.strerror or exc}")
        return
    subfolders = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows a symbolic link
            is_file = not is_dir and entry.is_file()  # the directory entry's type: no stat for a plain file
        except OSError:
            is_dir = is_file = False  # a broken entry: reading it as a file reports why
        if is_dir:
            subfolders.append(entry.path)
        elif entry.name.startswith("."):
            continue
        elif not is_file and _special(entry):  # reading a FIFO would wait forever, a device would never end
            yield SourceError(SOURCE, shown_path(entry.path), "not a regular file (a pipe, socket or device): skipped")
        else:
            yield entry.path
    for sub in subfolders:
        yield from _walk(sub, seen)


def _special(entry: os.DirEntry[str]) -> bool:
    """True for a FIFO, socket or device (behind symbolic links too); a broken link is not special."""
    try:
        return not stat.S_ISREG(os.stat(entry.path).st_mode)
    except OSError:
        return False  # reading it reports why it cannot be read


def split_certificates(data: bytes, provenance: str) -> Iterator[SourceItem]:
    """The certificates in one file's bytes: PEM blocks (certificates or PKCS#7), one DER blob or a DER PKCS#7."""
    if b"-----BEGIN" not in data:
        if not data.strip():
            yield SourceError(SOURCE, provenance, "empty file")
        elif _is_pkcs7(data):
            yield from _pkcs7_certificates(data, provenance)
        else:
            yield RawCert(_first_element(data, trailing_ok=False), SOURCE, provenance)
        return
    found, other = 0, set()
    for n, (label, body) in enumerate(_pem_blocks(data), start=1):
        if label not in _CERT_LABELS and label not in _PKCS7_LABELS:
            other.add(label.decode("ascii")[:40])  # a label is the file's: bounded
            continue
        found += 1
        where = f"{provenance}#{n}"
        try:
            der = base64.b64decode(body.translate(None, _WHITESPACE), validate=True)
        except (binascii.Error, ValueError) as exc:
            yield SourceError(SOURCE, where, f"PEM block is not valid base64: {exc}",
                              hashlib.sha256(body).hexdigest())
            continue
        if label in _PKCS7_LABELS:
            yield from _pkcs7_certificates(der, where)
        else:
            # OpenSSL's TRUSTED CERTIFICATE appends its trust settings after the certificate.
            yield RawCert(_first_element(der, trailing_ok=label == b"TRUSTED CERTIFICATE"), SOURCE, where)
    if found == 0:
        yield SourceError(SOURCE, provenance, "PEM file holds no CERTIFICATE or PKCS7 block" + _other_blocks(other))


def _other_blocks(labels: set[str]) -> str:
    """What a PEM file without certificates holds instead, as the end of its error."""
    if not labels:
        return ""
    held = ", ".join(sorted(labels)[:5]) + (", ..." if len(labels) > 5 else "")
    hint = ": pass CRLs with --crl" if labels & {"X509 CRL", "CRL"} else ""
    return f" (it holds {held}{hint})"


def _pem_blocks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(label, body without surrounding whitespace) of each PEM block, in order.

    As the regex BEGIN (label) ... END (same label) with a lazy body would find them, without its
    cost: a lazy body with a back-reference tried at every byte was most of the time of reading a file.
    """
    pos = 0
    while match := _PEM_BEGIN.search(data, pos):
        label = match.group(1)
        end = data.find(b"-----END " + label + b"-----", match.end())
        if end < 0:  # no end for this block: the next header may still start one
            pos = match.start() + 1
            continue
        yield label, data[match.end():end].strip()
        pos = end + len(label) + 14  # past "-----END " label "-----"


def _first_element(der: bytes, *, trailing_ok: bool) -> bytes:
    """The certificate's own bytes when a DER element is followed by whitespace (or, if allowed, anything).

    A stray newline after a DER file is common and harmless; other trailing bytes are left in place
    so that parsing reports them.
    """
    try:
        tag, _, end = element(der, 0)
    except IndexError:
        return der
    if tag != 0x30 or end >= len(der) or end < 2:
        return der
    return der[:end] if trailing_ok or not der[end:].strip() else der


def _is_pkcs7(data: bytes) -> bool:
    """True when DER bytes are a ContentInfo holding PKCS#7 signedData (a .p7b/.p7c bundle)."""
    try:
        tag, start, _ = element(data, 0)
    except IndexError:
        return False
    return tag == 0x30 and data[start : start + len(_SIGNED_DATA_OID)] == _SIGNED_DATA_OID


def _pkcs7_certificates(der: bytes, provenance: str) -> Iterator[SourceItem]:
    """The certificates of a DER PKCS#7 bundle, each with its position; an unreadable bundle is one error."""
    try:
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        yield SourceError(SOURCE, provenance, f"PKCS#7 bundle cannot be read: {exc}", hashlib.sha256(der).hexdigest())
        return
    if not certs:
        yield SourceError(SOURCE, provenance, "PKCS#7 bundle holds no certificate")
    for k, cert in enumerate(certs, start=1):
        yield RawCert(cert.public_bytes(Encoding.DER), SOURCE, f"{provenance}/p7#{k}")


def read_files(paths: Iterable[Path], exclude: Iterable[Path] = ()) -> Iterator[SourceItem]:
    """Yield every certificate (or read error) found in the given files and directories (not under exclude)."""
    return read_paths(_iter_paths(paths, exclude))


def read_paths(paths: Iterable[str | SourceError]) -> Iterator[SourceItem]:
    """The items of these files, in order; a SourceError among them (from the walk) is passed on in its place."""
    for path in paths:
        if isinstance(path, SourceError):
            yield path
            continue
        try:
            data = _read_whole(path)
        except OSError as exc:
            yield SourceError(SOURCE, shown_path(path), f"cannot read file: {exc.strerror or exc}")
            continue
        yield from split_certificates(data, shown_path(path))


_FIRST_READ = 1 << 16  # a certificate file is a few KB: one read() takes it whole


def _read_whole(path: str) -> bytes:
    """A file's bytes, read with os.open and os.read: without a file object, half the cost of open() per small file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        data = os.read(fd, _FIRST_READ)
        if not data:
            return data
        parts = [data]
        while part := os.read(fd, 1 << 20):  # until end of file: a read may return less than was left
            parts.append(part)
        return data if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


class FileItems(Iterator[SourceItem]):
    """The files source's items, read when iterated; or its walk, for parse workers to read the files themselves."""

    # A million small files cost the main process more to read and pickle than the workers to parse:
    # parse_in_chunks hands the workers lists of paths instead (read_paths gives the same items there).
    def __init__(self, paths: Iterable[Path], exclude: Iterable[Path] = ()) -> None:
        self._paths, self._exclude = tuple(paths), tuple(exclude)
        self._items: Iterator[SourceItem] | None = None

    def __next__(self) -> SourceItem:
        if self._items is None:
            self._items = read_files(self._paths, self._exclude)
        return next(self._items)

    def walk(self) -> Iterator[str | SourceError]:
        """The files to read, with the walk's errors in place, in the order read_paths gives their items.

        Either this or iterating, once: the walk stands for all the items.
        """
        if self._items is not None:
            raise RuntimeError("FileItems.walk() after its items were read")
        self._items = iter(())
        return _iter_paths(self._paths, self._exclude)


def read(options: FilesOptions) -> FileItems:
    """Every certificate (or read error) in options.paths, leaving out options.exclude."""
    return FileItems(options.paths, options.exclude)
