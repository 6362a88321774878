"""CCADB certificate records (AllCertificateRecords v4/v5 and Mozilla's reports): the CRL URLs each CA disclosed.

CCADB Policy 2.1 section 6.2: every CA certificate record that is neither expired nor revoked must
list, in a JSON array ("JSON Array of All Full CRL URLs", or "JSON Array of Partitioned CRLs"), every
distinct HTTP URL in the crlDistributionPoints of the unexpired certificates the CA issued, exactly
as written there. The v4 export shows only the first full CRL URL ("Full CRL Issued By This CA");
when the file has no "JSON Array of All Full CRL URLs" column, `CcadbFile.all_full_urls` is False
and the evidence says so.

A whole AllCertificateRecords file holds every CA in the CCADB; `scope_ccadb` keeps the records of
the issuing CAs of the scanned certificates only (by Subject Key Identifier, by SHA-256 of an
--issuer-cert, or by name when neither side has a key id), so that only their CRLs are fetched.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from scanner.core.records import ErrorRecord
from scanner.enrich.revocation.issuers import key_id_of

FULL_CRL = "Full CRL Issued By This CA"  # v4: the first URL of the full-CRL JSON array only
ALL_FULL_CRLS = "JSON Array of All Full CRL URLs"  # v5 and the CCADB's own field name
PARTITIONED_CRLS = "JSON Array of Partitioned CRLs"
_OWNER = ("CA Owner", "Owner")
_NAME = ("Certificate Name", "Common Name or Certificate Name", "CA Owner/Certificate Name")
_VALID_TO = ("Valid To (GMT)", "Valid to (GMT)", "Valid To [GMT]")
_SHA256 = ("SHA-256 Fingerprint", "SHA256")
_PEM = ("PEM", "PEM Info", "X.509 Certificate PEM")
_SOURCE = "ccadb"


@dataclass(frozen=True)
class CcadbRecord:
    """One CA certificate record of a CCADB file: who it is and the CRL URLs it discloses."""

    line: int  # the CSV line the record starts on (the header is line 1)
    ca_owner: str
    name: str
    sha256: str  # lower-case hex of the CA certificate, "" when the file has none
    subject_key_id: str  # lower-case hex ("Subject Key Identifier" is base64 in CCADB exports)
    revocation_status: str
    valid_to: pd.Timestamp | None
    full_crls: tuple[str, ...] = ()
    partitioned_crls: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """'<certificate name>' (or its SHA-256 when unnamed), as the reports name the record."""
        return self.name or self.sha256 or f"line {self.line}"

    @property
    def urls(self) -> tuple[str, ...]:
        """Every CRL URL the record discloses, full ones first."""
        return self.full_crls + tuple(u for u in self.partitioned_crls if u not in self.full_crls)

    def requires_disclosure(self, now: datetime) -> bool:
        """True unless the CA certificate is revoked or expired (policy 6.2 asks nothing of those records)."""
        if self.revocation_status.strip().casefold() == "revoked":
            return False
        return self.valid_to is None or self.valid_to >= pd.Timestamp(now)


@dataclass(frozen=True)
class CcadbFile:
    """The records of one CCADB CSV, and what its format can tell."""

    name: str  # the file name, for evidence
    records: tuple[CcadbRecord, ...]
    all_full_urls: bool  # the file lists every full CRL URL (False: v4 shows only the first)
    errors: tuple[dict[str, str], ...] = ()  # ERROR_COLUMNS rows: cells that are not a JSON array of URLs


@dataclass(frozen=True)
class IssuingCa:
    """An issuing CA of the scanned certificates, as the certificates name it."""

    key_id: str  # the certificates' authorityKeyIdentifier, hex ("" when absent)
    dn: str  # the certificates' issuer DN (RFC 4514)

    @property
    def label(self) -> str:
        """The issuer DN, with the key id when there is one."""
        return f"{self.dn} (key id {self.key_id})" if self.key_id else self.dn


@dataclass(frozen=True)
class CcadbScope:
    """The CCADB records of the CA under audit: per issuing CA of the certificates, its matching records."""

    file: CcadbFile
    by_issuer: dict[IssuingCa, tuple[CcadbRecord, ...]] = field(default_factory=dict)
    how: dict[IssuingCa, str] = field(default_factory=dict)  # "subject key identifier" / "SHA-256" / "name"

    @property
    def rows_in_scope(self) -> int:
        """How many of the file's records belong to an issuing CA of the certificates."""
        return len({r.line for recs in self.by_issuer.values() for r in recs})

    def crl_urls(self) -> list[tuple[str, str]]:
        """(URL, "ccadb:<record>") for every URL the in-scope records disclose, each URL once."""
        seen: dict[str, str] = {}
        for recs in self.by_issuer.values():
            for rec in recs:
                for url in rec.urls:
                    seen.setdefault(url, f"ccadb:{rec.label}")
        return list(seen.items())

    def notice(self, fetched: bool = True) -> str:
        """How many records were in scope, and which issuers have none (fetched: their CRLs were fetched)."""
        missing = [ca.label for ca, recs in self.by_issuer.items() if not recs]
        text = (f"CCADB file {self.file.name}: {self.rows_in_scope} of {len(self.file.records)} records are of the "
                "scanned certificates' issuing CAs; only their CRL disclosures are checked"
                + (" and their CRLs fetched." if fetched else " (their CRLs were not fetched: that takes --check-revocation, online)."))
        if missing:
            shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
            text += f" No record for {len(missing)} issuing CA(s), whose CRL disclosure is not checked: {shown}."
        return text


def _norm(column: str) -> str:
    """A column name as compared: Mozilla's Salesforce export writes "Full_CRL_Issued_By_This_CA",
    "Revocation_Status__c", "SHA_256_Fingerprint" for the CCADB report's "Full CRL Issued By This CA", ..."""
    return " ".join(column.removesuffix("__c").replace("_", " ").replace("-", " ").casefold().split())


def _cell(rec: dict[str, Any], names: Sequence[str]) -> str:
    for name in names:
        value = rec.get(_norm(name))
        if value:
            return str(value).strip()
    return ""


def _hex_or_base64(value: str) -> str:
    """A key identifier as lower-case hex, from the base64 CCADB writes or from hex (colons allowed)."""
    text = value.strip().replace(":", "").replace(" ", "")
    if not text:
        return ""
    if len(text) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text.lower()


def _url_array(text: str) -> tuple[tuple[str, ...], str]:
    """(URLs, problem) from a JSON array cell; `[""]` (a CA that has issued nothing yet) is no URL."""
    if not text:
        return (), ""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        # Mozilla's intermediate report has written the array unquoted, over lines, with a trailing comma:
        # [http://a, http://b,] (mozilla/crlite reads it so)
        items = [v.strip().strip('"').strip() for v in text.strip().strip("[]").split(",")]
        items = [v for v in items if v]
        bracketed = text.strip().startswith("[") and text.strip().endswith("]")
        if bracketed and items and all("://" in v and " " not in v for v in items):
            return tuple(items), ""
        return (), f"not a JSON array ({exc.msg})"
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return (), "not a JSON array"
    urls = tuple(v.strip() for v in values if isinstance(v, str) and v.strip())
    return urls, ""


def _pem_cert(text: str) -> x509.Certificate | None:
    """The certificate of a PEM cell (Mozilla's reports quote it with "'"), None when there is none to read."""
    text = text.strip().strip("'").strip()
    if "-----BEGIN CERTIFICATE-----" not in text:
        return None
    try:
        return x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        return None


def _subject_cn(text: str) -> str:
    """The CN of a Mozilla-report Subject cell ("CN=Name; O=Org; C=XX")."""
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().upper() == "CN":
            return value.strip()
    return ""


def _valid_to(text: str) -> pd.Timestamp | None:
    if not text:
        return None
    for fmt in ("%Y.%m.%d", "%Y-%m-%d", "%Y/%m/%d", "%Y %b %d"):
        try:
            return pd.Timestamp(datetime.strptime(text[:11].strip(), fmt)).tz_localize("UTC") + pd.Timedelta(days=1)
        except ValueError:
            continue
    stamp = pd.to_datetime(text, utc=True, errors="coerce")
    return None if pd.isna(stamp) else stamp


class CcadbError(ValueError):
    """A --ccadb file that cannot be checked against: unreadable, not CSV, or without the CRL columns."""


def read_ccadb(path: Path) -> CcadbFile:
    """The CA certificate records of a CCADB CSV (AllCertificateRecords v4/v5, Mozilla's reports).

    A CRL cell that is not a JSON array of URLs is an error row naming the line, and discloses nothing.
    CcadbError when the file is unreadable or has none of the CRL columns (e.g. the included-roots
    report `test-websites` reads): every URL would look undisclosed.
    """
    path = Path(path)
    try:
        return _read_ccadb(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CcadbError(f"--ccadb {path.name} is not a readable CSV ({exc})") from None


def _read_ccadb(path: Path) -> CcadbFile:
    records: list[CcadbRecord] = []
    errors: list[dict[str, str]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = {_norm(c) for c in reader.fieldnames or ()}
        if not columns & {_norm(c) for c in (FULL_CRL, ALL_FULL_CRLS, PARTITIONED_CRLS)}:
            raise CcadbError(f'--ccadb {path.name} has none of the columns "{FULL_CRL}", "{ALL_FULL_CRLS}", '
                             f'"{PARTITIONED_CRLS}": use CCADB\'s AllCertificateRecords report '
                             "(https://www.ccadb.org/resources) to check CRL disclosure")
        for raw in reader:
            line = reader.line_num
            rec = {_norm(k): v for k, v in raw.items() if k is not None}
            full, problem = _url_array(_cell(rec, (ALL_FULL_CRLS,)))
            if not full and not problem:
                one = _cell(rec, (FULL_CRL,))
                full = (one,) if one else ()
            partitioned, part_problem = _url_array(_cell(rec, (PARTITIONED_CRLS,)))
            name, sha256, key_id = _cell(rec, _NAME), _cell(rec, _SHA256).replace(":", "").lower(), \
                _hex_or_base64(_cell(rec, ("Subject Key Identifier",)))
            cert = _pem_cert(_cell(rec, _PEM))
            if cert is not None:  # Mozilla's reports: the certificate itself says who it is
                sha256 = sha256 or hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
                key_id = key_id or key_id_of(cert)
                name = name or _common_name(cert.subject.rfc4514_string())
            name = name or _subject_cn(_cell(rec, ("Subject",)))
            for column, why in ((ALL_FULL_CRLS, problem), (PARTITIONED_CRLS, part_problem)):
                if why:
                    errors.append(ErrorRecord(_SOURCE, f"{path.name}:{line}",
                                              f'CCADB record "{name}": "{column}" is {why}, so it discloses no URL',
                                              stage="ccadb").as_row())
            records.append(CcadbRecord(
                line=line, ca_owner=_cell(rec, _OWNER), name=name,
                sha256=sha256, subject_key_id=key_id,
                revocation_status=_cell(rec, ("Revocation Status",)),
                valid_to=_valid_to(_cell(rec, _VALID_TO)), full_crls=full, partitioned_crls=partitioned))
    return CcadbFile(path.name, tuple(records), _norm(ALL_FULL_CRLS) in columns, tuple(errors))


def issuing_cas(certs: pd.DataFrame) -> list[IssuingCa]:
    """The distinct (authority key id, issuer DN) of the certificates, in a stable order."""
    if certs.empty:
        return []
    pairs = certs[["issuer_key_id", "issuer_dn"]].astype("object").fillna("").drop_duplicates()
    return sorted({IssuingCa(str(k), str(d)) for k, d in pairs.itertuples(index=False)},
                  key=lambda ca: (ca.dn, ca.key_id))


def _common_name(dn: str) -> str:
    try:
        values = x509.Name.from_rfc4514_string(dn).get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    return str(values[-1].value) if values else ""


def scope_ccadb(file: CcadbFile, certs: pd.DataFrame,
                issuer_certs: Iterable[x509.Certificate] = (), ca_owner: str | None = None) -> CcadbScope:
    """The records of file that are of an issuing CA of certs; every issuing CA is a key, with () when none matched.

    A record matches an issuing CA by Subject Key Identifier (the certificates' authority key id), else
    by SHA-256 of an --issuer-cert whose subject and key are that CA's, else (when the record or the
    certificates carry no key id) by "Certificate Name" equal to the issuer's common name.
    ca_owner, when given, keeps that owner's records only (case-insensitive).
    """
    records = [r for r in file.records if not ca_owner or r.ca_owner.casefold() == ca_owner.casefold()]
    known = list(issuer_certs)
    by_issuer: dict[IssuingCa, tuple[CcadbRecord, ...]] = {}
    how: dict[IssuingCa, str] = {}
    for ca in issuing_cas(certs):
        matched = [r for r in records if ca.key_id and r.subject_key_id == ca.key_id]
        way = "subject key identifier"
        if not matched:
            prints = {hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in known
                      if c.subject.rfc4514_string() == ca.dn and (not ca.key_id or key_id_of(c) == ca.key_id)}
            matched = [r for r in records if r.sha256 and r.sha256 in prints]
            way = "SHA-256"
        if not matched:
            cn = _common_name(ca.dn)
            matched = [r for r in records if cn and r.name == cn and (not ca.key_id or not r.subject_key_id)]
            way = "name"
        by_issuer[ca] = tuple(matched)
        if matched:
            how[ca] = way
    return CcadbScope(file, by_issuer, how)

