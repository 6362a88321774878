"""What every source yields: raw certificates with provenance, or errors saying what could not be read."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

from scanner.core.records import ErrorRecord

#: The facts of a certificate a source knows nothing more about (shared, so never to be changed).
_NO_FACTS: Mapping[str, Any] = {}


class RawCert(NamedTuple):
    """A certificate's DER bytes as a source found them, with where they came from.

    A named tuple, not a dataclass: a store of a million certificates yields a million of these per
    round, and a tuple is built three times faster than a frozen dataclass.
    """

    der: bytes
    source: str  # files / crtsh-sql / crtsh-json / ct
    provenance: str  # file path (#n for the n-th PEM block), crtsh:ID, log URL#index
    #: facts the source knows beyond the DER: crtsh_id, issuer_ca_id, first_seen,
    #: revoked_at, revocation_reason, revocation_source
    extra: Mapping[str, Any] = _NO_FACTS
    #: the DER's SHA-256 (hex) when the source already knows it (the store keys by it); "" = not given
    sha256: str = ""

    def digest(self) -> str:
        """The SHA-256 of the DER (hex): the given one, else computed."""
        return self.sha256 or hashlib.sha256(self.der).hexdigest()


#: Something a source could not read: the one error record (a row of errors.csv), under the name sources use.
SourceError = ErrorRecord


@dataclass(frozen=True)
class SourceNotice:
    """A sentence the run summary must carry (e.g. a capped crt.sh result); partial=True marks the run partial."""

    message: str
    partial: bool = False


@dataclass(frozen=True)
class SourceState:
    """A token naming everything the source yields after it (a store's revision): the same token, the same items.

    A round that meets the token its previous round met need not read those items again.
    """

    token: str


SourceItem = Union[RawCert, SourceError, SourceNotice, SourceState]
