"""CRLs -> revocation rows (issuer, serial, date, reason) and their join onto certificate records."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from scanner.core.records import ErrorRecord
from scanner.enrich.revocation.tables import REVOCATION_COLUMNS
from scanner.parse.certs import serial_hex
from scanner.sources.files import shown_path


class CRLError(ValueError):
    """A CRL that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class CRLInfo:
    """What a CRL says about itself: issuer, validity and size."""

    source: str
    issuer_dn: str
    issuer_key_id: str
    this_update: pd.Timestamp
    next_update: pd.Timestamp | None
    entries: int


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.*?-----END X509 CRL-----", re.DOTALL)


def load_crl(data: bytes, source: str = "") -> x509.CertificateRevocationList:
    """Parse a DER or PEM CRL; CRLError names the source when it is neither."""
    return load_crls(data, source)[0]


def load_crls(data: bytes, source: str = "") -> list[x509.CertificateRevocationList]:
    """Every CRL in a file: one DER CRL, or each X509 CRL block of a PEM file; CRLError names the source."""
    try:
        if not data.startswith(b"\x30"):  # a DER CRL is a SEQUENCE; anything else is PEM, maybe after text
            blocks = _PEM_CRL.findall(data)
            if not blocks:
                raise ValueError("a PEM file without an X509 CRL block")
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except Exception as exc:
        raise CRLError(f"{source or 'CRL'}: not a readable CRL ({type(exc).__name__}: {exc})") from exc


def _issuer_key_id(crl: x509.CertificateRevocationList) -> str:
    try:
        aki = crl.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
        return aki.key_identifier.hex() if aki.key_identifier else ""
    except x509.ExtensionNotFound:
        return ""


def issuing_distribution_point(crl: x509.CertificateRevocationList) -> tuple[tuple[str, ...], bool] | None:
    """(the URIs of the Issuing Distribution Point's distributionPoint fullName, critical?), None when absent.

    CCADB Policy 6.2 wants a partitioned CRL's IDP critical and naming the URL it was fetched from.
    ValueError when the CRL's extensions cannot be read (crl_revocations has raised it already).
    """
    try:
        ext = crl.extensions.get_extension_for_oid(ExtensionOID.ISSUING_DISTRIBUTION_POINT)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    names = getattr(value, "full_name", None) or []
    return tuple(n.value for n in names if isinstance(n, x509.UniformResourceIdentifier)), ext.critical


def crl_scope(crl: x509.CertificateRevocationList) -> str:
    """Why this CRL need not list every revoked certificate of its issuer ('' for a complete CRL).

    A delta CRL (deltaCRLIndicator) lists only what changed since its base; an Issuing Distribution
    Point with onlySomeReasons, onlyContainsCACerts or onlyContainsAttributeCerts leaves the rest to
    other CRLs (RFC 5280 5.2.4, 5.2.5). onlyContainsUserCerts still covers every subscriber certificate.
    ValueError when the CRL's extensions cannot be read (crl_revocations has raised it already).
    """
    parts = []
    try:
        base = crl.extensions.get_extension_for_oid(ExtensionOID.DELTA_CRL_INDICATOR).value
        parts.append(f"delta CRL (base CRL number {base.crl_number})")
    except x509.ExtensionNotFound:
        pass
    try:
        idp = crl.extensions.get_extension_for_oid(ExtensionOID.ISSUING_DISTRIBUTION_POINT).value
    except x509.ExtensionNotFound:
        return "; ".join(parts)
    if idp.only_some_reasons:
        parts.append("onlySomeReasons " + ",".join(sorted(r.value for r in idp.only_some_reasons)))
    if idp.only_contains_ca_certs:
        parts.append("onlyContainsCACerts")
    if idp.only_contains_attribute_certs:
        parts.append("onlyContainsAttributeCerts")
    return "; ".join(parts)


def _entry_facts(entry: x509.RevokedCertificate) -> tuple[str, x509.Name | None]:
    """(reasonCode name, certificateIssuer name or None) of one entry, its extensions read once.

    The reason is "" when absent; a code cryptography cannot read (e.g. 7) keeps the revocation.
    unspecified (0) present stays "unspecified", apart from "" (absent): BR 7.2.2 forbids the first
    since 2023-07-15 and makes the second the way to say unspecified (detect.rules).
    """
    try:
        extensions = entry.extensions
    except ValueError as exc:
        return f"invalid ({exc})", None
    reason, issuer = "", None
    for ext in extensions:
        if ext.oid == CRLEntryExtensionOID.CRL_REASON:
            reason = ext.value.reason.value
        elif ext.oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER:
            names = [n.value for n in ext.value if isinstance(n, x509.DirectoryName)]
            issuer = names[0] if names else x509.Name([])
    return reason, issuer


def crl_revocations(crl: x509.CertificateRevocationList, source: str) -> tuple[CRLInfo, pd.DataFrame]:
    """The CRL's header facts and one row per revoked serial (REVOCATION_COLUMNS).

    In an indirect CRL an entry's certificateIssuer names the CA whose certificate it revokes, for
    it and the entries after it (RFC 5280 5.3.3): those rows carry that DN and no key id, so the
    CRL signer's own certificate with the same serial is not taken for revoked.
    """
    issuer_dn = crl.issuer.rfc4514_string()
    key_id = _issuer_key_id(crl)
    serials, dates, reasons, dns, kids = [], [], [], [], []
    entry_dn, entry_kid = issuer_dn, key_id
    for entry in crl:
        reason, named = _entry_facts(entry)
        if named is not None:
            entry_dn = named.rfc4514_string()
            entry_kid = key_id if named == crl.issuer else ""
        if reason == x509.ReasonFlags.remove_from_crl.value:
            continue  # a delta CRL lifting a certificateHold: the certificate is not revoked
        serials.append(serial_hex(entry.serial_number))
        dates.append(entry.revocation_date_utc)
        reasons.append(reason)
        dns.append(entry_dn)
        kids.append(entry_kid)
    n = len(serials)
    df = pd.DataFrame(
        {
            "issuer_dn": pd.Series(dns, dtype="string"),
            "issuer_key_id": pd.Series(kids, dtype="string"),
            "serial": pd.Series(serials, dtype="string"),
            "revoked_at": pd.to_datetime(pd.Series(dates, dtype="object"), utc=True),
            "revocation_reason": pd.Series(reasons, dtype="string"),
            "crl": pd.Series([source] * n, dtype="string"),
        }
    )
    info = CRLInfo(
        source,
        issuer_dn,
        key_id,
        pd.Timestamp(crl.last_update_utc),
        pd.Timestamp(crl.next_update_utc) if crl.next_update_utc else None,
        n,
    )
    return info, df.astype(REVOCATION_COLUMNS)


def read_crl_files(paths: Iterable[Path]) -> tuple[list[CRLInfo], pd.DataFrame, list[dict[str, str]]]:
    """Read CRL files: their infos, all revocation rows, and one error row per unreadable file (or CRL in it)."""
    infos: list[CRLInfo] = []
    frames: list[pd.DataFrame] = []
    errors: list[dict[str, str]] = []
    for path in paths:
        name = shown_path(path)  # a file name that is not UTF-8 must not break the reports
        try:
            crls = load_crls(Path(path).read_bytes(), name)
        except (OSError, CRLError) as exc:
            message = f"{name}: {exc}" if isinstance(exc, OSError) else str(exc)
            errors.append(ErrorRecord("crl", name, message, stage="crl").as_row())
            continue
        for n, crl in enumerate(crls, start=1):
            where = name if len(crls) == 1 else f"{name}#{n}"
            try:
                info, df = crl_revocations(crl, where)
            except ValueError as exc:  # parsed lazily: a bad issuer name or extension shows up only here
                message = f"{where}: not a readable CRL ({type(exc).__name__}: {exc})"
                errors.append(ErrorRecord("crl", where, message, stage="crl").as_row())
                continue
            infos.append(info)
            frames.append(df)
    if frames:
        revs = pd.concat(frames, ignore_index=True)
    else:
        revs = pd.DataFrame({c: pd.Series(dtype=t) for c, t in REVOCATION_COLUMNS.items()})
    return infos, revs, errors


def apply_revocations(certs: pd.DataFrame, revocations: pd.DataFrame, source: str = "crl") -> pd.DataFrame:
    """Set revoked_at / revocation_reason on certificates a CRL lists (same issuer and serial).

    The issuer is matched by key identifier when both sides carry one, else by DN, so two CAs with
    one name but different keys never share revocations. A date the certificate already carries
    (e.g. from crt.sh) is kept; the earliest CRL date wins among several CRLs.
    """
    if certs.empty or revocations.empty:
        return certs
    revs = revocations.sort_values("revoked_at").drop_duplicates(["issuer_dn", "issuer_key_id", "serial"])
    by_kid = revs[revs["issuer_key_id"] != ""].drop_duplicates(["issuer_key_id", "serial"])
    by_dn = revs.drop_duplicates(["issuer_dn", "serial"])
    out = certs.copy()
    kid_match = out[["issuer_key_id", "serial"]].merge(
        by_kid[["issuer_key_id", "serial", "revoked_at", "revocation_reason"]],
        on=["issuer_key_id", "serial"], how="left",
    )
    dn_match = out[["issuer_dn", "serial"]].merge(
        by_dn[["issuer_dn", "issuer_key_id", "serial", "revoked_at", "revocation_reason"]].rename(
            columns={"issuer_key_id": "crl_kid"}),
        on=["issuer_dn", "serial"], how="left",
    )
    # A DN match only counts when the key ids cannot contradict it.
    dn_ok = (dn_match["crl_kid"].fillna("") == "") | (out["issuer_key_id"].fillna("").values == "")
    dn_ok = dn_ok.values | (dn_match["crl_kid"].fillna("").values == out["issuer_key_id"].fillna("").values)
    when = kid_match["revoked_at"].where(kid_match["revoked_at"].notna(), dn_match["revoked_at"].where(dn_ok))
    reason = kid_match["revocation_reason"].where(
        kid_match["revoked_at"].notna(), dn_match["revocation_reason"].where(dn_ok))
    when.index = out.index
    reason.index = out.index
    take = out["revoked_at"].isna() & when.notna()
    out.loc[take, "revoked_at"] = when[take]
    out.loc[take, "revocation_reason"] = reason[take].fillna("")
    out.loc[take, "revocation_source"] = source
    return out
