"""The record schemas every stage shares: certificates, registrations, findings and errors.

Every stage reads and writes pandas DataFrames whose columns are exactly these; the helpers
here build empty frames with the right dtypes so that an empty scan still writes valid reports.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

# --- certificates -------------------------------------------------------------------------

#: Column -> pandas dtype of the certificate table. One row per certificate; a precertificate
#: and its final certificate (same issuer and serial) share one row that keeps both hashes.
CERT_COLUMNS: dict[str, str] = {
    "sha256": "string",  # the final certificate's SHA-256 if seen, else the precertificate's
    "cert_sha256": "string",  # final certificate (empty when only the precertificate was seen)
    "precert_sha256": "string",  # precertificate (empty when only the final certificate was seen)
    "is_precert": "bool",  # True when only the precertificate is known
    # what the certificate is for (CERT_KINDS): only a TLS subscriber certificate has BR 6.3.2's
    # validity limits; empty for a table from before the column existed (taken as "tls")
    "cert_kind": "string",
    "serial": "string",  # lowercase hex of the serial number, even length, no sign byte
    "issuer_dn": "string",  # RFC 4514
    "issuer_key_id": "string",  # authorityKeyIdentifier, hex (empty when absent)
    "issuer_ca_id": "Int64",  # crt.sh ca.id when known
    "subject_dn": "string",
    "subject_cn": "string",
    "subject_o": "string",
    "subject_ou": "string",
    "subject_l": "string",
    "subject_c": "string",
    "san_dns": "object",  # list[str], lower-cased as in the certificate (A-labels)
    "san_ip": "object",  # list[str]
    "san_email": "object",  # list[str]
    "spki_sha256": "string",  # SHA-256 of the SubjectPublicKeyInfo: tells a re-key from a reissue
    "not_before": "datetime64[us, UTC]",
    "not_after": "datetime64[us, UTC]",
    "revoked_at": "datetime64[us, UTC]",
    "revocation_reason": "string",  # CRL reasonCode name, e.g. "keyCompromise"; empty if none given
    "revocation_source": "string",  # crl / crtsh / ocsp
    "crl_distribution_points": "object",  # list[str]
    "ocsp_urls": "object",  # list[str]
    "ca_issuers": "object",  # list[str]: AIA caIssuers URLs, where the issuer certificate can be fetched
    "source": "string",  # files / crtsh-sql / crtsh-json / ct
    "provenance": "string",  # file path, "crtsh:ID", "log URL#index"
    "crtsh_id": "Int64",
    "first_seen": "datetime64[us, UTC]",  # earliest CT entry timestamp when known
    # why cryptography refused it, when it was read leniently (asn1crypto); or WARNED_NOTE and the
    # warnings it read it with (a defect a later release will refuse); else empty
    "parse_note": "string",
}

#: cert_kind's values: a CA certificate (basicConstraints cA), an OCSP responder's, a TLS server
#: certificate (serverAuth or anyExtendedKeyUsage in its EKU, or no EKU), an S/MIME one (emailProtection
#: without serverAuth), anything else (clientAuth, codeSigning, timeStamping only).
CERT_KINDS = ("ca", "ocsp", "tls", "smime", "other")
#: How a parse_note begins for a certificate cryptography read, but only with a warning.
WARNED_NOTE = "cryptography warns: "
LIST_COLUMNS = ("san_dns", "san_ip", "san_email", "crl_distribution_points", "ocsp_urls", "ca_issuers")

# --- suspects -------------------------------------------------------------------------------

#: The suspects table (detect.score builds it; every report puts these columns first, in this order).
SUSPECT_COLUMNS: tuple[str, ...] = (
    "sha256", "crtsh_url", "serial", "subject_o", "subject_cn", "sans", "not_before", "not_after",
    "revoked_at", "signals", "score", "evidence",
    "cert_sha256", "precert_sha256", "issuer_dn", "subject_dn", "revocation_reason", "provenance",
    "revocation_latency_hours",  # revoked_at - not_before (the BR deadlines count from issuance), hours
)

# --- errors -------------------------------------------------------------------------------

#: Anything that could not be read, parsed or checked: one row each, never dropped.
ERROR_COLUMNS: dict[str, str] = {
    "stage": "string",  # source / parse / crl / registration / report ...
    "source": "string",
    "provenance": "string",  # where the item came from (file path, crt.sh id, log#index, URL)
    "sha256": "string",  # of the raw bytes, when there were bytes
    "error": "string",  # one readable line
}



@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One thing that could not be read, parsed or checked (a row of ERROR_COLUMNS); sources yield it as SourceError."""

    source: str
    provenance: str
    error: str
    sha256: str = ""
    stage: str = "source"  # source / parse / crl / ocsp / registration / check ...

    def as_row(self) -> dict[str, str]:
        """A dict with ERROR_COLUMNS keys."""
        return {"stage": self.stage, "source": self.source, "provenance": self.provenance,
                "sha256": self.sha256, "error": self.error}


# --- registration ---------------------------------------------------------------------------


class RegistrationStatus(str, Enum):
    """Tri-state registration answer: unknown is never unregistered."""

    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    UNKNOWN = "unknown"


class Registration(NamedTuple):
    """What the registries said about one registrable domain, with the evidence."""

    # A NamedTuple rather than a frozen dataclass: one is made per lookup of a large scan, and it
    # is built several times faster. Fields are in REGISTRATION_COLUMNS order.
    domain: str
    status: RegistrationStatus
    method: str  # rdap / whois / dns / none
    server: str = ""  # URL or host:port asked
    detail: str = ""  # HTTP status and title, WHOIS reply line, DNS rcode, or the error
    checked_at: datetime | None = None
    registered_at: datetime | None = None  # RDAP "registration" event / WHOIS creation date
    attempts: int = 0

    def as_row(self) -> dict[str, Any]:
        """A dict with REGISTRATION_COLUMNS keys."""
        row = self._asdict()
        row["status"] = self.status.value
        return row


REGISTRATION_COLUMNS: dict[str, str] = {
    "domain": "string",
    "status": "string",
    "method": "string",
    "server": "string",
    "detail": "string",
    "checked_at": "datetime64[us, UTC]",
    "registered_at": "datetime64[us, UTC]",
    "attempts": "Int64",
}

# --- findings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FindingCode:
    """A stable finding code with its severity, score weight, title and meaning."""

    code: str
    severity: str  # high / medium / low / info
    weight: float
    title: str  # the sheet / list title
    description: str  # one sentence: what the finding means for the auditor


class UnknownFindingCode(LookupError):
    """A finding code that is not in FINDING_CODES (e.g. a findings table from another ctscan version)."""

    def __init__(self, code: str) -> None:
        super().__init__(
            f"finding code {code!r} is not one this version of ctscan knows (scanner.core.records.FINDING_CODES), "
            "so it has no weight or severity; the findings table may come from another version: rescan, "
            "or drop those rows before scoring"
        )
        self.code = code


_CODE_TABLE = (
    FindingCode("unregistered_domain", "high", 40.0, "SANs on unregistered domains",
                "A SAN whose registrable domain the registry says does not exist; asked after the "
                "certificate expired, the name may have lapsed since, so it weighs a quarter."),
    FindingCode("typo_neighbour", "medium", 25.0, "SANs one typo away from a legitimate name",
                "A SAN one edit (omission, insertion, substitution, transposition) from the subject O, "
                "another SAN or the subscriber's other names, or the same name under a public suffix one "
                "edit away; a name in 3 or more of the CA's certificates is established and weighs 0.4."),
    FindingCode("revoke_reissue", "medium", 20.0, "Revoked and reissued within the window",
                "Revoked within --window of issuance and paired with a replacement of the same subscriber "
                "(a name one typo away, or a shared DNS name) issued after it and no later than "
                "--reissue-window after its revocation, with the change classified."),
    FindingCode("registered_after_issuance", "high", 35.0, "Domain registered after notBefore",
                "The domain's current registration began after the certificate's notBefore: it was not "
                "registered when validated, or that registration has lapsed since."),
    FindingCode("early_revocation", "low", 10.0, "Revoked soon after issuance",
                "Revoked within --window (default 7 days) of notBefore, with the latency."),
    FindingCode("malformed_certificate", "high", 30.0, "Malformed certificates",
                "A certificate the strict X.509 parser (cryptography) refuses, read leniently so that its "
                "names are still checked; a malformed certificate is often the misissuance itself."),
    FindingCode("ip_san", "info", 2.0, "IP address SANs",
                "An IP address SAN: it cannot be registered or looked up in a domain registry."),
    FindingCode("internal_name", "medium", 15.0, "Internal names (no public suffix)",
                "A SAN with no public suffix (an internal name): it cannot be registered at all."),
    FindingCode("invalid_dns_name", "medium", 15.0, "SANs that are not valid DNS names",
                "A SAN that is not a valid DNS name: it cannot be registered at all."),
    # The Baseline Requirements' dated rules (detect/rules.py: BR 6.3.2, 4.9.1.1, 7.2.2).
    FindingCode("validity_exceeds_limit", "high", 30.0, "Validity Period over the BR maximum of its day",
                "The Validity Period (notBefore through notAfter inclusive) exceeds the BR 6.3.2 maximum in "
                "force on its notBefore: 825 days from 2018-03-01, 398 from 2020-09-01, 200 from 2026-03-15, "
                "100 from 2027-03-15, 47 from 2029-03-15 (ballot SC-081)."),
    FindingCode("crl_reason_forbidden", "medium", 15.0, "CRL entries with a forbidden reasonCode",
                "The certificate's CRL entry (a --crl file, a fetched CRL or crt.sh's) carries certificateHold, "
                "or unspecified (0) as a reasonCode for a revocation on or after 2023-07-15 (BR 7.2.2)."),
    FindingCode("crl_reason_missing", "low", 5.0, "Typo corrections revoked without a reasonCode",
                "Revoked on or after 2023-07-15 with no reasonCode and replaced by a certificate correcting a "
                "typo in its names, where BR 4.9.1.1 and 7.2.2 call for privilegeWithdrawn or superseded "
                "unless the subscriber asked without a reason; other causes cannot be told from the data."),
    # With --check-revocation: revocation answers that disagree with each other or are missing.
    FindingCode("ocsp_good_but_revoked", "high", 30.0, "OCSP says good, CRL or crt.sh says revoked",
                "The OCSP responder calls a certificate good that the CRL or crt.sh lists as revoked."),
    FindingCode("ocsp_unauthorized", "high", 20.0, "OCSP 'unauthorized' for an unexpired certificate",
                "The OCSP responder answers 'unauthorized' for an unexpired certificate it should know."),
    FindingCode("ocsp_unknown", "medium", 15.0, "OCSP 'unknown' for an unexpired certificate",
                "The OCSP responder answers 'unknown' for an unexpired certificate the CA issued."),
    FindingCode("ocsp_malformed", "medium", 15.0, "OCSP answers that are not OCSP responses",
                "The OCSP responder's answer cannot be read as an OCSP response."),
    FindingCode("ocsp_try_later", "medium", 10.0, "OCSP 'tryLater' for an unexpired certificate",
                "The OCSP responder answers 'tryLater' for an unexpired certificate."),
    FindingCode("ocsp_internal_error", "medium", 10.0, "OCSP 'internalError' for an unexpired certificate",
                "The OCSP responder answers 'internalError' for an unexpired certificate."),
    FindingCode("ocsp_error_status", "medium", 10.0, "OCSP malformedRequest / sigRequired for a valid request",
                "The OCSP responder answers 'malformedRequest' or 'sigRequired' to a well-formed request."),
    FindingCode("ocsp_unreachable", "medium", 10.0, "OCSP responder unreachable",
                "The certificate's OCSP responder could not be reached, so relying parties cannot learn its status."),
    FindingCode("ocsp_stale", "medium", 10.0, "Stale OCSP responses",
                "The OCSP response is past its nextUpdate."),
    FindingCode("ocsp_future", "medium", 10.0, "Future-dated OCSP responses",
                "The OCSP response's thisUpdate is in the future."),
    FindingCode("ocsp_bad_signature", "high", 25.0, "OCSP responses with a bad or unauthorised signature",
                "The OCSP response's signature does not verify, or its signer is not authorised by the issuer."),
    FindingCode("ocsp_variant_disagrees", "medium", 10.0, "OCSP GET/SHA-1 and POST/SHA-256 answers disagree",
                "The same responder gives different definitive answers to a GET/SHA-1 and a POST/SHA-256 request."),
    FindingCode("revocation_time_mismatch", "low", 5.0, "OCSP and CRL revocation times differ",
                "OCSP and the CRL (or crt.sh) give different revocation times for the same certificate."),
    FindingCode("revocation_reason_mismatch", "low", 5.0, "OCSP and CRL revocation reasons differ",
                "OCSP and the CRL (or crt.sh) give different reasons for revoking the same certificate."),
    FindingCode("crl_missing_revoked", "high", 25.0, "Revoked per OCSP but absent from the CRL",
                "OCSP says the certificate is revoked but its CRL does not list it."),
    FindingCode("crl_stale", "medium", 10.0, "CRL past its nextUpdate",
                "The CRL the certificate points at is past its nextUpdate."),
    FindingCode("crl_unreachable", "medium", 10.0, "CRL unreachable",
                "The CRL the certificate points at could not be fetched."),
    FindingCode("crl_unparseable", "medium", 10.0, "CRL unparseable",
                "The CRL the certificate points at cannot be parsed."),
    FindingCode("crl_bad_signature", "high", 20.0, "CRL signature does not verify",
                "The signature of the CRL the certificate points at does not verify with the issuer's key."),
    # With --ccadb: CCADB Policy 2.1 section 6.2 (detect/crl_disclosure.py).
    FindingCode("crldp_not_disclosed", "medium", 10.0, "CRL distribution points not disclosed in CCADB",
                "A crlDistributionPoints URL of the unexpired certificate that its issuing CA's CCADB record "
                "does not list exactly, past the policy's deadline (7 days after issuance, 4 hours after a "
                "revocation)."),
    FindingCode("crl_idp_mismatch", "medium", 15.0, "Partitioned CRLs without a matching critical IDP",
                "The partitioned CRL the certificate points at (disclosed in CCADB) has no Issuing Distribution "
                "Point, a non-critical one, or one not naming the URL it was fetched from."),
)

#: Every finding code, its severity, its weight in the suspect score and its meaning, in one place
#: and read-only: scores must not depend on which modules happen to be imported.
#: Combined evidence ranks first because weights add up per certificate.
FINDING_CODES: Mapping[str, FindingCode] = MappingProxyType({c.code: c for c in _CODE_TABLE})


#: The one family of codes not in FINDING_CODES (--lint): ``lint:<pkilint code>``, one per pkilint check,
#: each finding with its own severity, from pkilint's: ERROR (a MUST of the BRs or RFC 5280 broken) counts
#: in the score; FATAL (a part pkilint could not decode) counts less; WARNING and below are listed but weigh
#: little. score.py caps what a certificate's lint codes add up to (LINT_MAX_POINTS).
LINT_PREFIX = "lint:"
#: pkilint severity -> the finding's severity here (DEBUG findings are not kept).
LINT_SEVERITIES: Mapping[str, str] = MappingProxyType(
    {"FATAL": "medium", "ERROR": "high", "WARNING": "low", "NOTICE": "info", "INFO": "info"})
#: A lint finding's weight by its severity here.
LINT_WEIGHTS: Mapping[str, float] = MappingProxyType({"high": 20.0, "medium": 10.0, "low": 1.0, "info": 0.2})


def is_lint_code(code: object) -> bool:
    """True for a ``lint:<pkilint code>`` finding code."""
    return isinstance(code, str) and code.startswith(LINT_PREFIX) and len(code) > len(LINT_PREFIX)


def lint_finding_code(code: str, severity: str = "high") -> FindingCode:
    """The FindingCode of a lint:<pkilint code> finding of this severity (high/medium/low/info)."""
    check = code[len(LINT_PREFIX):]
    return FindingCode(code, severity, LINT_WEIGHTS.get(severity, LINT_WEIGHTS["info"]), f"pkilint: {check}",
                       f"pkilint's CA/Browser Forum TLS linter reports {check} for the certificate.")


def finding_code(code: str, severity: str | None = None) -> FindingCode:
    """The FindingCode of code; UnknownFindingCode if this version of ctscan does not know it.

    severity: for a lint:<pkilint code> finding, the finding's own severity (its weight follows it).
    """
    # Looked up through the module attribute so that a test can swap the whole table.
    try:
        return FINDING_CODES[code]
    except KeyError:
        if is_lint_code(code):
            return lint_finding_code(code, severity or "high")
        raise UnknownFindingCode(code) from None


FINDING_COLUMNS: dict[str, str] = {
    "sha256": "string",  # the certificate the finding is about
    "code": "string",
    "severity": "string",
    "name": "string",  # the SAN / domain concerned, when one is
    "related_sha256": "string",  # the paired certificate, when one is
    "evidence": "string",  # one readable sentence
    "detail": "string",  # machine-readable extras as JSON (neighbour, edit, latency ...)
}


@dataclass(frozen=True)
class Finding:
    """One piece of evidence against one certificate."""

    sha256: str
    code: str
    evidence: str
    name: str = ""
    related_sha256: str = ""
    detail: str = ""
    severity: str = field(default="")

    def as_row(self) -> dict[str, Any]:
        """A dict with FINDING_COLUMNS keys (severity filled from the code table)."""
        row = asdict(self)
        if not row["severity"]:
            row["severity"] = finding_code(self.code).severity
        return row


def crtsh_url(sha256: str) -> str:
    """The crt.sh page of a certificate by SHA-256 (upper-case hex, as crt.sh writes it).

    Empty unless sha256 is 64 hex digits, so no value from a certificate can become a link.
    """
    value = (sha256 or "").strip().upper()
    if len(value) != 64 or any(c not in "0123456789ABCDEF" for c in value):
        return ""
    return f"https://crt.sh/?sha256={value}"


# --- frame helpers --------------------------------------------------------------------------


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty DataFrame with these columns and dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def frame_from_rows(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    """A DataFrame with exactly these columns and dtypes from a list of dicts (missing keys empty)."""
    if not rows:
        return empty_frame(columns)
    # Column by column, strings and times straight into Arrow: from_records builds a 2-D object
    # block and infers a type for every column first, a tenth of the parse workers' time.
    names = list(columns)
    try:
        cells = list(zip(*map(operator.itemgetter(*names), rows))) if len(names) > 1 else [[r[names[0]] for r in rows]]
    except KeyError:  # a row without some columns: those cells are empty
        cells = [[r.get(name) for r in rows] for name in names]
    index = pd.RangeIndex(len(rows))
    return pd.DataFrame({name: _column(values, columns[name], index) for name, values in zip(names, cells)},
                        index=index, copy=False)


def _column(values: Sequence[Any], dtype: str, index: pd.Index) -> pd.Series:
    """One column of frame_from_rows: values cast as coerce casts them."""
    arrow = _ARROW_TYPES.get(dtype)
    if arrow is not None:
        try:
            got = pa.array(values, type=arrow, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass  # not plain str / datetime values (numbers, text to parse): coerce's way
        else:
            if dtype == "string":
                return pd.Series(pd.arrays.ArrowStringArray(got), index=index, copy=False)
            return pd.Series(got.to_pandas(), index=index, copy=False).astype(dtype)
    kinds = set(map(type, values))
    if dtype == "bool" and kinds == {bool}:
        return pd.Series(np.fromiter(values, dtype=bool, count=len(values)), index=index, copy=False)
    if dtype == "Int64" and kinds == {type(None)}:  # crt.sh ids of certificates read elsewhere
        n = len(values)
        return pd.Series(pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool)), index=index, copy=False)
    column = pd.Series(np.fromiter(values, dtype=object, count=len(values)), index=index, dtype=object, copy=False)
    return _cast(column, dtype)


_ARROW_TYPES = {"string": pa.large_string(), "datetime64[us, UTC]": pa.timestamp("us", tz="UTC")}


def coerce(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Cast the columns of df to the schema's dtypes, adding missing ones empty."""
    out = {}
    n = len(df)
    for name, dtype in columns.items():
        col = df[name] if name in df.columns else pd.Series([None] * n, index=df.index, dtype="object")
        out[name] = _cast(col, dtype)
    return pd.DataFrame(out, index=df.index, copy=False)


def _cast(col: pd.Series, dtype: str) -> pd.Series:
    if col.dtype == _dtype(dtype):
        return col  # already right: shared, not copied (copy-on-write keeps df and the result apart)
    if dtype.startswith("datetime64"):
        return pd.to_datetime(col, utc=True, errors="coerce").astype(dtype)
    if dtype == "object":
        return col.astype("object")
    if dtype == "bool":
        return col.astype("object").where(col.notna(), False).astype("bool")
    return col.astype(dtype)


@functools.cache
def _dtype(name: str) -> Any:
    return pd.api.types.pandas_dtype(name)
