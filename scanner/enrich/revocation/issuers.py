"""Issuer certificates for the revocation checks: by subject key id, from files or from AIA caIssuers URLs."""

from __future__ import annotations

import pandas as pd
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtensionOID

from scanner.core.net import FetchError, get_with_retries
from scanner.core.records import ErrorRecord


def key_id_of(cert: x509.Certificate) -> str:
    """The certificate's subjectKeyIdentifier as hex (computed from the key when absent)."""
    try:
        return cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest.hex()
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest.hex()  # type: ignore[arg-type]


def issuers_by_key_id(certs: list[x509.Certificate]) -> dict[str, x509.Certificate]:
    """CA certificates keyed by their subject key id (hex): the `issuers` argument of the revocation checks."""
    return {key_id_of(c): c for c in certs}


def load_issuer_bytes(data: bytes) -> list[x509.Certificate]:
    """Certificates from DER, PEM or a PKCS#7 certs-only bundle (what AIA caIssuers URLs serve)."""
    if b"-----BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificates(data)
    for loader in (lambda d: [x509.load_der_x509_certificate(d)], pkcs7.load_der_pkcs7_certificates,
                   pkcs7.load_pem_pkcs7_certificates):
        try:
            return list(loader(data))
        except Exception:  # try the next container format
            continue
    raise ValueError("neither a DER/PEM certificate nor a PKCS#7 bundle")


def fetch_issuer(session: requests.Session, url: str, timeout: float, retries: int) -> list[x509.Certificate]:
    """The certificates an AIA caIssuers URL serves (FetchError or ValueError when it cannot)."""
    resp = get_with_retries(session, url, retries=retries, timeout=timeout, bound="ca_issuers")
    return load_issuer_bytes(resp.content)


def resolve_issuers(
    certs: pd.DataFrame, issuers: dict[str, x509.Certificate], session: requests.Session, timeout: float,
    retries: int,
) -> tuple[dict[str, x509.Certificate], list[dict[str, str]]]:
    """issuers, plus any the certificates' caIssuers URLs (a `ca_issuers` list column, when present) supply.

    Each caIssuers URL is fetched at most once; one that fails is an error row and the next URL is tried.
    """
    found = dict(issuers)
    errors: list[dict[str, str]] = []
    if "ca_issuers" not in certs.columns:
        return found, errors
    tried: set[str] = set()
    for kid, urls in zip(certs["issuer_key_id"].fillna(""), certs["ca_issuers"]):
        if not kid or kid in found or not isinstance(urls, (list, tuple)):
            continue
        for url in urls:
            if url in tried or not str(url).lower().startswith("http"):
                continue
            tried.add(url)
            try:
                for cert in fetch_issuer(session, url, timeout, retries):
                    found.setdefault(key_id_of(cert), cert)
            except (FetchError, ValueError) as exc:
                errors.append(ErrorRecord("revocation-check", url, f"caIssuers {url}: {exc}", stage="ocsp").as_row())
            if kid in found:
                break
    return found, errors


def issuer_for(kid: str, dn: str, issuers: dict[str, x509.Certificate],
               by_dn: dict[str, x509.Certificate]) -> x509.Certificate | None:
    """The issuer of a certificate: by its authority key id when it has one, else by the issuer DN."""
    if kid:
        return issuers.get(kid)
    return by_dn.get(dn)
