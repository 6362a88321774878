"""DER certificates -> certificate records (records.CERT_COLUMNS); a bad certificate becomes an error, never a crash."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

import pandas as pd
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from scanner.core.der import element
from scanner.core.records import CERT_COLUMNS, frame_from_rows
from scanner.sources.base import RawCert

#: One shared empty value for the list columns a certificate leaves empty: at a million rows, four
#: empty lists per row would cost 200 MB. Readers treat any list or tuple alike.
_NONE: tuple[str, ...] = ()
CT_POISON_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")
OCSP_METHOD = x509.oid.AuthorityInformationAccessOID.OCSP
CA_ISSUERS_METHOD = x509.oid.AuthorityInformationAccessOID.CA_ISSUERS


class ParseError(ValueError):
    """The bytes are not a certificate we can read; the message says what failed."""


def serial_hex(serial: int) -> str:
    """Lowercase hex of a serial number, even length (negative serials, a real defect, keep a '-')."""
    if serial < 0:
        return "-" + serial_hex(-serial)
    h = format(serial, "x")
    return h if len(h) % 2 == 0 else "0" + h


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class IssuerNames:
    """What repeats across one run of parsing: issuer DNs by their Name's DER, and URL lists."""

    # A CA signs with few names and few CRL/OCSP/caIssuers URLs: one shared list per distinct URL list
    # is pickled once per chunk and kept once by the main process (a million rows held 3 lists each).

    def __init__(self, limit: int = 10_000) -> None:
        self._by_der: dict[bytes, str] = {}
        self._lists: dict[tuple[str, ...], list[str]] = {}
        #: an attribute type's OID (DER contents) -> (its rfc4514 name, its subject column or ""), as
        #: cryptography named it in a Name it decoded: a type not seen before takes cryptography's path once
        self.types: dict[bytes, tuple[str, str]] = {}
        self._limit = limit

    def dn(self, cert: x509.Certificate, raw: bytes) -> str:
        """The issuer DN of cert, whose issuer Name DER is raw."""
        dn = self._by_der.get(raw)
        if dn is None:
            dn = _name(cert, "issuer", raw).rfc4514_string()
            if len(self._by_der) < self._limit:
                self._by_der[raw] = dn
        return dn

    def shared(self, values: list[str]) -> list[str]:
        """values, or an equal list met before in this run (never to be changed: rows share it)."""
        key = tuple(values)
        got = self._lists.get(key)
        if got is None:
            got = values
            if len(self._lists) < self._limit:
                self._lists[key] = values
        return got


def parse_der(der: bytes, *, source: str = "", provenance: str = "",
              names: IssuerNames | None = None) -> dict[str, Any]:
    """Parse one DER certificate into a CERT_COLUMNS dict; raises ParseError with a readable reason.

    names: a cache of issuer DNs to share across many calls (parse_chunk keeps one per chunk).
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        return _record(cert, der, source, provenance, names or IssuerNames())
    except ParseError:
        raise
    except Exception as exc:  # cryptography raises ValueError and friends from deep inside
        raise ParseError(f"{type(exc).__name__}: {exc}") from exc


def _tbs_parts(tbs: bytes, *, in_certificate: bool = False) -> tuple[bytes, bytes, bytes]:
    """The raw issuer Name, subject Name and SubjectPublicKeyInfo of a TBSCertificate (DER).

    in_certificate: tbs is the whole Certificate (whose first element is the TBSCertificate).
    """
    _, pos, _ = element(tbs, 0)  # into the TBSCertificate SEQUENCE (or the Certificate's)
    if in_certificate:
        _, pos, _ = element(tbs, pos)
    tag, _, end = element(tbs, pos)
    if tag == 0xA0:  # [0] version
        pos = end
    _, _, pos = element(tbs, pos)  # serialNumber
    _, _, pos = element(tbs, pos)  # signature AlgorithmIdentifier
    _, _, issuer_end = element(tbs, pos)
    issuer = tbs[pos:issuer_end]
    _, _, pos = element(tbs, issuer_end)  # validity
    _, _, subject_end = element(tbs, pos)
    subject = tbs[pos:subject_end]
    _, _, spki_end = element(tbs, subject_end)
    return issuer, subject, tbs[subject_end:spki_end]


#: How a Name's string types are read when cryptography refuses them (e.g. Latin-1 bytes in a
#: T61String, common in older certificates, or invalid UTF-8): tag -> codecs tried in order, the last
#: one with U+FFFD for what it cannot read.
_LENIENT_CODECS = {0x0C: ("utf-8",), 0x1E: ("utf-16-be",), 0x1C: ("utf-32-be",)}


def _oid_of(body: bytes) -> x509.ObjectIdentifier:
    arcs, n = [], 0
    for b in body:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
    first = min(arcs[0] // 40, 2)
    return x509.ObjectIdentifier(".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]])))


def _lenient_text(tag: int, body: bytes) -> str:
    codecs = _LENIENT_CODECS.get(tag, ("utf-8", "latin-1"))
    for codec in codecs[:-1]:
        try:
            return body.decode(codec)
        except UnicodeDecodeError:
            pass
    return body.decode(codecs[-1], errors="replace")


def _rdns(raw: bytes) -> list[list[tuple[bytes, int, bytes]]]:
    """The RelativeDistinguishedNames of a DER Name, each as its (type OID bytes, string tag, value bytes)."""
    # element() inlined for the short lengths nearly every name has: a tenth of a certificate's parse was here
    rdns = []
    _, pos, end = element(raw, 0)
    while pos < end:  # each RelativeDistinguishedName (a SET)
        n = raw[pos + 1]
        if n < 0x80:
            apos, rdn_end = pos + 2, pos + 2 + n
        else:
            _, apos, rdn_end = element(raw, pos)
        attrs = []
        while apos < rdn_end:  # each AttributeTypeAndValue (a SEQUENCE)
            n = raw[apos + 1]
            if n < 0x80:
                opos, attr_end = apos + 2, apos + 2 + n
            else:
                _, opos, attr_end = element(raw, apos)
            _, ostart, oend = element(raw, opos)
            tag, n = raw[oend], raw[oend + 1]
            if n < 0x80:
                vstart, vend = oend + 2, oend + 2 + n
            else:
                tag, vstart, vend = element(raw, oend)
            attrs.append((raw[ostart:oend], tag, raw[vstart:vend]))
            apos = attr_end
        rdns.append(attrs)
        pos = rdn_end
    return rdns


def _lenient_name(raw: bytes) -> x509.Name:
    """A DER Name cryptography refuses to decode, its strings read leniently (UTF-8, else Latin-1)."""
    rdns = []
    for rdn in _rdns(raw):
        attrs = [x509.NameAttribute(_oid_of(oid), _lenient_text(tag, value), _validate=False)
                 for oid, tag, value in rdn]
        if attrs:
            rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def _name(cert: x509.Certificate, which: str, raw: bytes) -> x509.Name:
    """cert.subject or cert.issuer; when its strings are not valid for their type, read leniently."""
    try:
        return getattr(cert, which)
    except ValueError:
        return _lenient_name(raw)


_SUBJECT_OIDS = {
    NameOID.COMMON_NAME: "subject_cn",
    NameOID.ORGANIZATION_NAME: "subject_o",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "subject_ou",
    NameOID.LOCALITY_NAME: "subject_l",
    NameOID.COUNTRY_NAME: "subject_c",
}


def _subject_fields(subject: x509.Name) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for attr in subject:
        key = _SUBJECT_OIDS.get(attr.oid)
        if key:
            values.setdefault(key, []).append(str(attr.value))
    out = {key: "" for key in _SUBJECT_OIDS.values()}
    for key, vals in values.items():
        out[key] = "; ".join(vals) if key == "subject_ou" else vals[0]
    return out


#: The string types cryptography decodes as UTF-8, refusing what is not (UTF8String, NumericString,
#: PrintableString, T61String, IA5String, VisibleString). Other types take cryptography's own path.
_UTF8_TAGS = frozenset((0x0C, 0x12, 0x13, 0x14, 0x16, 0x1A))


def _name_parts(raw: bytes, types: dict[bytes, tuple[str, str]]) -> list[list[tuple[str, str, str]]] | None:
    """The RDNs of a DER Name cryptography has loaded, as (rfc4514 name, subject column, value), read as it reads them.

    None when some part is not the plain case, for cryptography's own path: an attribute type not in
    types, a string type it reads otherwise, bytes that are not UTF-8, an empty RDN or one that repeats
    an attribute (which it refuses).
    """
    rdns = []
    for rdn in _rdns(raw):
        attrs = []
        for oid, tag, body in rdn:
            kind = types.get(oid)
            if kind is None or tag not in _UTF8_TAGS:
                return None
            try:
                value = body.decode("utf-8")
            except UnicodeDecodeError:
                return None
            attrs.append((kind[0], kind[1], value))
        if not attrs or (len(attrs) > 1 and len({(a[0], a[2]) for a in attrs}) < len(attrs)):
            return None
        rdns.append(attrs)
    return rdns


def _learn_types(raw: bytes, name: x509.Name, types: dict[bytes, tuple[str, str]], limit: int = 1000) -> None:
    """Note how cryptography named the attribute types of a Name it decoded from raw."""
    oids = [oid for rdn in _rdns(raw) for oid, _, _ in rdn]
    attrs = list(name)
    if len(oids) == len(attrs):
        for oid, attr in zip(oids, attrs):
            if oid not in types and len(types) < limit:
                types[oid] = (attr.rfc4514_attribute_name, _SUBJECT_OIDS.get(attr.oid, ""))


def _escape_dn_value(val: str) -> str:
    """A value escaped as cryptography's Name.rfc4514_string escapes it (cryptography.x509.name)."""
    if not val:
        return ""
    if _SPECIAL.search(val) is not None:  # most values have none: skip the eight replaces
        val = _escape_specials(val)
    if val[0] == "#" or (val[0] == " " and len(val) > 1):
        val = "\\" + val
    if val[-1] == " ":
        val = val[:-1] + "\\ "
    return val


#: What _escape_specials changes; a value without these is left as it is.
_SPECIAL = re.compile(r'[\\"+,;<>\x00]')


def _escape_specials(val: str) -> str:
    val = val.replace("\\", "\\\\")
    val = val.replace('"', '\\"')
    val = val.replace("+", "\\+")
    val = val.replace(",", "\\,")
    val = val.replace(";", "\\;")
    val = val.replace("<", "\\<")
    val = val.replace(">", "\\>")
    return val.replace("\0", "\\00")


def _subject(cert: x509.Certificate, raw: bytes, names: IssuerNames) -> tuple[str, dict[str, str]]:
    """The subject DN (rfc4514) and the subject columns of cert, whose subject Name DER is raw."""
    rdns = _name_parts(raw, names.types)
    if rdns is None:  # as _name(cert, "subject", raw) reads it, learning its attribute types
        try:
            subject = cert.subject
        except ValueError:
            subject = _lenient_name(raw)
        else:
            _learn_types(raw, subject, names.types)
        return subject.rfc4514_string(), _subject_fields(subject)
    out = dict(_NO_FIELDS)
    seen, units = set(), []
    for rdn in rdns:
        for _, key, value in rdn:
            if key == "subject_ou":
                units.append(value)
            elif key and key not in seen:  # the first one, as cryptography's get_attributes_for_oid()[0]
                seen.add(key)
                out[key] = value
    if units:
        out["subject_ou"] = "; ".join(units)
    parts = []
    for rdn in reversed(rdns):
        if len(rdn) == 1:
            name, _, value = rdn[0]
            parts.append(f"{name}={value if _plain_dn_value(value) else _escape_dn_value(value)}")
        else:
            parts.append("+".join(f"{n}={_escape_dn_value(v)}" for n, _, v in rdn))
    return ",".join(parts), out


_NO_FIELDS = dict.fromkeys(_SUBJECT_OIDS.values(), "")


def _plain_dn_value(val: str) -> bool:
    """True when _escape_dn_value leaves val as it is (most values): no special, no leading # or space, no trailing space."""
    return bool(val) and val[0] not in "# " and val[-1] != " " and _SPECIAL.search(val) is None


_SERVER_AUTH = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
_ANY_PURPOSE = x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
_OCSP_SIGNING = x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING
_EMAIL = x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION


def cert_kind(is_ca: bool, purposes: Any) -> str:
    """records.CERT_KINDS of a certificate: is_ca from basicConstraints, purposes its EKU OIDs (None: no EKU)."""
    if is_ca:
        return "ca"
    if purposes is None:
        return "tls"  # no EKU: every purpose, a TLS server's included
    purposes = set(purposes)
    if _SERVER_AUTH in purposes or _ANY_PURPOSE in purposes:
        return "tls"
    if _OCSP_SIGNING in purposes:
        return "ocsp"
    return "smime" if _EMAIL in purposes else "other"


def _aia_urls(aia: Any, method: x509.ObjectIdentifier) -> list[str]:
    return [d.access_location.value for d in (aia or [])
            if d.access_method == method and isinstance(d.access_location, x509.UniformResourceIdentifier)]


def _record(cert: x509.Certificate, der: bytes, source: str, provenance: str, names: IssuerNames) -> dict[str, Any]:
    sha = hashlib.sha256(der).hexdigest()
    by_oid = {e.oid: e.value for e in cert.extensions}  # parses every extension: a bad one fails here
    is_precert = CT_POISON_OID in by_oid
    san = by_oid.get(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if san is not None:
        # one pass over the names, in order, as get_values_for_type for each type would give them
        dns, ips, emails = [], [], []
        for gn in san:
            if isinstance(gn, x509.DNSName):
                dns.append(str(gn.value).lower())
            elif isinstance(gn, x509.IPAddress):
                ips.append(str(gn.value))
            elif isinstance(gn, x509.RFC822Name):
                emails.append(str(gn.value))
    else:
        dns, ips, emails = _NONE, _NONE, _NONE
    aki = by_oid.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    basic = by_oid.get(ExtensionOID.BASIC_CONSTRAINTS)
    kind = cert_kind(basic is not None and basic.ca, by_oid.get(ExtensionOID.EXTENDED_KEY_USAGE))
    cdp = by_oid.get(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    aia = by_oid.get(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
    crl_urls = []
    if cdp is not None:
        for dp in cdp:
            for gn in dp.full_name or []:
                if isinstance(gn, x509.UniformResourceIdentifier):
                    crl_urls.append(gn.value)
    ocsp_urls = _aia_urls(aia, OCSP_METHOD) if aia is not None else _NONE
    ca_issuers = _aia_urls(aia, CA_ISSUERS_METHOD) if aia is not None else _NONE
    # The certificate's own bytes, not tbs_certificate_bytes (which encodes the TBSCertificate again):
    # cryptography reads DER only, so both are the same bytes.
    issuer_raw, subject_raw, spki = _tbs_parts(der, in_certificate=True)
    subject_dn, subject_fields = _subject(cert, subject_raw, names)
    row = {
        "sha256": sha,
        "cert_sha256": "" if is_precert else sha,
        "precert_sha256": sha if is_precert else "",
        "is_precert": is_precert,
        "cert_kind": kind,
        "serial": serial_hex(cert.serial_number),
        "issuer_dn": names.dn(cert, issuer_raw),
        "issuer_key_id": aki.key_identifier.hex() if aki is not None and aki.key_identifier else "",
        "issuer_ca_id": None,
        "subject_dn": subject_dn,
        "san_dns": dns,
        "san_ip": ips or _NONE,
        "san_email": emails or _NONE,
        "spki_sha256": hashlib.sha256(spki).hexdigest(),
        "not_before": _utc(cert.not_valid_before_utc),
        "not_after": _utc(cert.not_valid_after_utc),
        "revoked_at": None,
        "revocation_reason": "",
        "revocation_source": "",
        "crl_distribution_points": names.shared(crl_urls) if crl_urls else _NONE,
        "ocsp_urls": names.shared(ocsp_urls) if ocsp_urls else _NONE,
        "ca_issuers": names.shared(ca_issuers) if ca_issuers else _NONE,
        "source": source,
        "provenance": provenance,
        "crtsh_id": None,
        "first_seen": None,
        "parse_note": "",
    }
    row.update(subject_fields)
    return row


def _lenient_extensions(tbs: asn1_x509.TbsCertificate) -> dict[str, Any]:
    """The extensions asn1crypto can open, by its name for them (their contents are read by _readable)."""
    out: dict[str, Any] = {}
    for ext in tbs["extensions"] or []:
        try:
            out[ext["extn_id"].native] = ext["extn_value"].parsed
        except (ValueError, TypeError, KeyError):
            continue
    return out


def _readable(read: Any, *args: Any) -> list[str]:
    """read(*args), or nothing when that part of a certificate cannot be read: the rest still can."""
    try:
        return read(*args)
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def _general_names(names: Any, kind: str) -> list[str]:
    # The bytes as written, not asn1crypto's .native: that turns A-labels into Unicode and refuses UTF-8
    # in an IA5String (a real defect, kept as the strict parser keeps it).
    return [str(gn.native) if kind == "ip_address" else _lenient_text(0x16, gn.chosen.contents)
            for gn in names or [] if gn.name == kind]


def _crl_urls(cdp: Any) -> list[str]:
    return [url for dp in cdp or [] if dp["distribution_point"].name == "full_name"
            for url in _general_names(dp["distribution_point"].chosen, "uniform_resource_identifier")]


def _access_urls(aia: Any, method: str) -> list[str]:
    return [str(ad["access_location"].native) for ad in aia or []
            if ad["access_method"].native == method and ad["access_location"].name == "uniform_resource_identifier"]


def _key_id(aki: Any) -> list[str]:
    return [aki["key_identifier"].native.hex()] if aki is not None and aki["key_identifier"].native else []


def _lenient_kind(extensions: dict[str, Any]) -> str:
    """cert_kind from the extensions asn1crypto could open (one it could not is taken as absent)."""
    basic, eku = extensions.get("basic_constraints"), extensions.get("extended_key_usage")
    is_ca = _readable(lambda b: [b["ca"].native] if b is not None else [], basic) == [True]
    purposes = _readable(lambda e: [x509.ObjectIdentifier(p.dotted) for p in e], eku) if eku is not None else None
    return cert_kind(is_ca, purposes)


def parse_lenient(der: bytes, refused: str, *, source: str = "", provenance: str = "") -> dict[str, Any]:
    """A CERT_COLUMNS dict of a certificate cryptography refused (refused: its reason), read with asn1crypto.

    What cannot be read is left empty; bytes that are no certificate at all raise ParseError.
    """
    try:
        cert = asn1_x509.Certificate.load(der, strict=True)
        tbs = cert["tbs_certificate"]
        serial = tbs["serial_number"].native
        not_before, not_after = tbs["validity"]["not_before"].native, tbs["validity"]["not_after"].native
        issuer_raw, subject_raw, spki = _tbs_parts(tbs.dump())
        issuer, subject = _lenient_name(issuer_raw), _lenient_name(subject_raw)
        extensions = _lenient_extensions(tbs)
        is_precert = CT_POISON_OID.dotted_string in {e["extn_id"].dotted for e in tbs["extensions"] or []}
    except Exception as exc:  # asn1crypto raises ValueError, TypeError and friends on what is no certificate
        raise ParseError(f"{type(exc).__name__}: {exc}") from exc
    sha = hashlib.sha256(der).hexdigest()
    san, aia = extensions.get("subject_alt_name"), extensions.get("authority_information_access")
    key_id = _readable(_key_id, extensions.get("authority_key_identifier"))
    row = {
        "sha256": sha,
        "cert_sha256": "" if is_precert else sha,
        "precert_sha256": sha if is_precert else "",
        "is_precert": is_precert,
        "cert_kind": _lenient_kind(extensions),
        "serial": serial_hex(serial),
        "issuer_dn": issuer.rfc4514_string(),
        "issuer_key_id": key_id[0] if key_id else "",
        "issuer_ca_id": None,
        "subject_dn": subject.rfc4514_string(),
        "san_dns": [name.lower() for name in _readable(_general_names, san, "dns_name")] or _NONE,
        "san_ip": _readable(_general_names, san, "ip_address") or _NONE,
        "san_email": _readable(_general_names, san, "rfc822_name") or _NONE,
        "spki_sha256": hashlib.sha256(spki).hexdigest(),
        "not_before": _utc(not_before),
        "not_after": _utc(not_after),
        "revoked_at": None,
        "revocation_reason": "",
        "revocation_source": "",
        "crl_distribution_points": _readable(_crl_urls, extensions.get("crl_distribution_points")) or _NONE,
        "ocsp_urls": _readable(_access_urls, aia, "ocsp") or _NONE,
        "ca_issuers": _readable(_access_urls, aia, "ca_issuers") or _NONE,
        "source": source,
        "provenance": provenance,
        "crtsh_id": None,
        "first_seen": None,
        "parse_note": refused,
    }
    row.update(_subject_fields(subject))
    return row


def record_from_raw(raw: RawCert, names: IssuerNames | None = None, *, refused: str = "") -> dict[str, Any]:
    """Parse a RawCert and lay the source's extra facts (crt.sh id, revocation ...) over the record.

    refused: the reason parse_der gave for these bytes, to read them with parse_lenient instead.
    """
    if refused:
        row = parse_lenient(raw.der, refused, source=raw.source, provenance=raw.provenance)
    else:
        row = parse_der(raw.der, source=raw.source, provenance=raw.provenance, names=names)
    for key, value in raw.extra.items():
        if key in CERT_COLUMNS and value is not None and value != "":
            row[key] = value
    return row


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The certificate table from record dicts."""
    return frame_from_rows(rows, CERT_COLUMNS)
