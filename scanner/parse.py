"""DER certificates -> certificate records (records.CERT_COLUMNS); a bad certificate becomes an error, never a crash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from .records import CERT_COLUMNS, frame_from_rows
from .sources.base import RawCert

CT_POISON_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")
OCSP_METHOD = x509.oid.AuthorityInformationAccessOID.OCSP


class ParseError(ValueError):
    """The bytes are not a certificate we can read; the message says what failed."""


def serial_hex(serial: int) -> str:
    """Lowercase hex of a serial number, even length (negative serials, a real defect, keep a '-')."""
    if serial < 0:
        return "-" + serial_hex(-serial)
    h = format(serial, "x")
    return h if len(h) % 2 == 0 else "0" + h


def _attr(name: x509.Name, oid: x509.ObjectIdentifier, joiner: str | None = None) -> str:
    values = [str(a.value) for a in name.get_attributes_for_oid(oid)]
    if not values:
        return ""
    return joiner.join(values) if joiner else values[0]


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> Any:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_der(der: bytes, *, source: str = "", provenance: str = "") -> dict[str, Any]:
    """Parse one DER certificate into a CERT_COLUMNS dict; raises ParseError with a readable reason."""
    try:
        cert = x509.load_der_x509_certificate(der)
        return _record(cert, der, source, provenance)
    except ParseError:
        raise
    except Exception as exc:  # cryptography raises ValueError and friends from deep inside
        raise ParseError(f"{type(exc).__name__}: {exc}") from exc


def _record(cert: x509.Certificate, der: bytes, source: str, provenance: str) -> dict[str, Any]:
    sha = hashlib.sha256(der).hexdigest()
    exts = cert.extensions  # forces parsing of every extension: a malformed one fails here
    is_precert = any(e.oid == CT_POISON_OID for e in exts)
    san = _ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if san is not None:
        dns = [str(v).lower() for v in san.get_values_for_type(x509.DNSName)]
        ips = [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        emails = [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    else:
        dns, ips, emails = [], [], []
    aki = _ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    cdp = _ext(cert, ExtensionOID.CRL_DISTRIBUTION_POINTS)
    aia = _ext(cert, ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
    crl_urls = []
    if cdp is not None:
        for dp in cdp:
            for gn in dp.full_name or []:
                if isinstance(gn, x509.UniformResourceIdentifier):
                    crl_urls.append(gn.value)
    ocsp_urls = [
        d.access_location.value
        for d in (aia or [])
        if d.access_method == OCSP_METHOD and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    try:
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        spki_sha = hashlib.sha256(spki).hexdigest()
    except Exception:  # an unsupported key algorithm must not lose the certificate
        spki_sha = ""
    subject = cert.subject
    return {
        "sha256": sha,
        "cert_sha256": "" if is_precert else sha,
        "precert_sha256": sha if is_precert else "",
        "is_precert": is_precert,
        "serial": serial_hex(cert.serial_number),
        "issuer_dn": cert.issuer.rfc4514_string(),
        "issuer_key_id": aki.key_identifier.hex() if aki is not None and aki.key_identifier else "",
        "issuer_ca_id": None,
        "subject_dn": subject.rfc4514_string(),
        "subject_cn": _attr(subject, NameOID.COMMON_NAME),
        "subject_o": _attr(subject, NameOID.ORGANIZATION_NAME),
        "subject_ou": _attr(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "; "),
        "subject_l": _attr(subject, NameOID.LOCALITY_NAME),
        "subject_c": _attr(subject, NameOID.COUNTRY_NAME),
        "san_dns": dns,
        "san_ip": ips,
        "san_email": emails,
        "spki_sha256": spki_sha,
        "not_before": _utc(cert.not_valid_before_utc),
        "not_after": _utc(cert.not_valid_after_utc),
        "revoked_at": None,
        "revocation_reason": "",
        "revocation_source": "",
        "crl_distribution_points": crl_urls,
        "ocsp_urls": ocsp_urls,
        "source": source,
        "provenance": provenance,
        "crtsh_id": None,
        "first_seen": None,
    }


def record_from_raw(raw: RawCert) -> dict[str, Any]:
    """Parse a RawCert and lay the source's extra facts (crt.sh id, revocation ...) over the record."""
    row = parse_der(raw.der, source=raw.source, provenance=raw.provenance)
    for key, value in raw.extra.items():
        if key in CERT_COLUMNS and value is not None and value != "":
            row[key] = value
    return row


def _merge_pair(final: dict[str, Any], pre: dict[str, Any]) -> dict[str, Any]:
    """One row for a final certificate and its precertificate, keeping both hashes."""
    merged = dict(final)
    merged["precert_sha256"] = pre["precert_sha256"]
    for key in ("revoked_at", "revocation_reason", "revocation_source", "crtsh_id", "issuer_ca_id"):
        if merged.get(key) in (None, "") and pre.get(key) not in (None, ""):
            merged[key] = pre[key]
    seen = [t for t in (final.get("first_seen"), pre.get("first_seen")) if t is not None and not pd.isna(t)]
    merged["first_seen"] = min(seen) if seen else None
    if pre["provenance"] and pre["provenance"] != final["provenance"]:
        merged["provenance"] = f"{final['provenance']} + precert {pre['provenance']}"
    return merged


def pair_key(row: dict[str, Any]) -> tuple[str, str]:
    """The unit a precertificate and its certificate share: issuer and serial."""
    return (row["issuer_key_id"] or row["issuer_dn"], row["serial"])


def collapse_precerts(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collapse precertificate/certificate twins and exact duplicates (same SHA-256) into one row each.

    Two different final certificates (or two precertificates) with one issuer and serial are both
    kept: that is a defect worth seeing, not a twin.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seen_sha: set[str] = set()
    for row in rows:
        if row["sha256"] in seen_sha:
            continue
        seen_sha.add(row["sha256"])
        groups.setdefault(pair_key(row), []).append(row)
    out: list[dict[str, Any]] = []
    for group in groups.values():
        if len(group) == 1:
            out.extend(group)
            continue
        finals = [r for r in group if not r["is_precert"]]
        precerts = [r for r in group if r["is_precert"]]
        if len(finals) == 1 and len(precerts) == 1:
            out.append(_merge_pair(finals[0], precerts[0]))
        else:
            out.extend(group)
    return out


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The certificate table from record dicts."""
    return frame_from_rows(rows, CERT_COLUMNS)
