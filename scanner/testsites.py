"""CCADB test websites: every address of every valid / expired / revoked test URL, checked over TLS.

A load-balanced test site can serve a fresh certificate from one node and an expired one from
another (FNMT, 2025), so each A/AAAA address is connected to separately, with SNI and without
verification (we want to see what is served, not whether it verifies). The served leaf is
dated, checked against OCSP and its CRL (scanner.revocation.checks), and its chain walked up to
the root the report names (by SHA-256, with the root's PEM when the report carries it).
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.resolver
import pandas as pd
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from .config import Config
from .net import parse_host_port
from .parse import parse_der
from .records import CERT_COLUMNS, empty_frame, frame_from_rows
from .revocation.checks import check_revocation, issuers_by_key_id
from .revocation.crl import apply_revocations

#: Report column name variants: Mozilla's Included CA Certificate Report, then CCADB's AllCertificateRecords.
KIND_COLUMNS = {
    "valid": ("Test Website - Valid", "Test Website URL - Valid"),
    "expired": ("Test Website - Expired", "Test Website URL - Expired"),
    "revoked": ("Test Website - Revoked", "Test Website URL - Revoked"),
}
OWNER_COLUMNS = ("CA Owner", "Owner")
NAME_COLUMNS = ("Common Name or Certificate Name", "Certificate Name", "Root Certificate Name")
MAX_CHAIN = 10

TEST_SITE_COLUMNS: dict[str, str] = {
    "ca_owner": "string",
    "ca_name": "string",
    "root_sha256": "string",
    "url": "string",
    "expected": "string",  # valid / expired / revoked
    "host": "string",
    "port": "Int64",
    "address": "string",
    "served_sha256": "string",
    "served_subject": "string",
    "served_issuer": "string",
    "served_not_before": "datetime64[us, UTC]",
    "served_not_after": "datetime64[us, UTC]",
    "served_status": "string",  # what OCSP and the CRL say, e.g. "ocsp=good; crl=not listed"
    "chain": "string",  # ok / wrong_root / unverified (no root certificate to check against)
    "finding": "string",  # ';'-joined codes; empty when the site is right
    "evidence": "string",
    "checked_at": "datetime64[us, UTC]",
}


@dataclass(frozen=True)
class TestSite:
    """One test URL of one root, as the report lists it."""

    __test__ = False  # not a pytest class

    ca_owner: str
    ca_name: str
    root_sha256: str
    root: x509.Certificate | None
    url: str
    expected: str


def _first(rec: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        value = rec.get(name)
        if value and value.strip():
            return value.strip()
    return ""


def _root_from_pem(text: str) -> x509.Certificate | None:
    text = text.strip().strip("'").strip()
    if "BEGIN CERTIFICATE" not in text:
        return None
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii", "ignore"))
    except ValueError:
        return None


def read_test_sites(ccadb: Path, ca_owner: str | None = None) -> list[TestSite]:
    """Every (root, kind, URL) of a Mozilla or CCADB report, optionally for one CA owner (case-insensitive)."""
    sites: list[TestSite] = []
    with open(ccadb, encoding="utf-8-sig", newline="") as fh:
        for rec in csv.DictReader(fh):
            owner = _first(rec, OWNER_COLUMNS)
            if ca_owner and owner.casefold() != ca_owner.casefold():
                continue
            root = _root_from_pem(rec.get("PEM Info") or "")
            fingerprint = _first(rec, ("SHA-256 Fingerprint",)).replace(":", "").lower()
            for kind, names in KIND_COLUMNS.items():
                cell = _first(rec, names)
                for url in cell.replace(",", " ").split():
                    if "://" not in url:
                        url = "https://" + url
                    sites.append(TestSite(owner, _first(rec, NAME_COLUMNS), fingerprint, root, url, kind))
    return sites


# --- network --------------------------------------------------------------------------------


def parse_server(value: str, default_port: int = 53) -> tuple[str, int]:
    """'HOST[:PORT]' or '[v6]:PORT' -> (host, port)."""
    return parse_host_port(value, default_port)


def resolve_all(host: str, dns_server: str | None, timeout: float) -> list[str]:
    """Every A and AAAA address of host (an IP literal is its own answer); ValueError says why there are none."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    if dns_server:
        resolver = dns.resolver.Resolver(configure=False)
        addr, port = parse_server(dns_server)
        resolver.nameservers, resolver.port = [addr], port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout
    addresses: list[str] = []
    problems: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            addresses += [r.to_text() for r in resolver.resolve(host, rdtype)]
        except dns.resolver.NXDOMAIN:
            raise ValueError(f"DNS: {host} does not exist (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            problems.append(f"{rdtype}: {type(exc).__name__}")
    if not addresses:
        raise ValueError(f"DNS: no A/AAAA address for {host}" + (f" ({'; '.join(problems)})" if problems else ""))
    return addresses


def served_chain(address: str, port: int, server_name: str, timeout: float) -> list[bytes]:
    """DER certificates the server at address:port presents for this SNI name, leaf first (no verification)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            leaf = tls.getpeercert(binary_form=True)
            chain: list[bytes] = []
            getter = getattr(tls, "get_unverified_chain", None)  # public from Python 3.13
            if getter is None and getattr(tls, "_sslobj", None) is not None:
                getter = getattr(tls._sslobj, "get_unverified_chain", None)  # 3.10-3.12: same call, private
            if getter is not None:
                try:
                    for c in getter() or []:
                        chain.append(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
                except (ssl.SSLError, AttributeError, TypeError):
                    chain = []
    if not leaf:
        raise ssl.SSLError("the server sent no certificate")
    if not chain or chain[0] != leaf:
        chain = [leaf] + [c for c in chain if c != leaf]
    return chain


# --- judging --------------------------------------------------------------------------------


def chain_to_root(
    leaf: x509.Certificate, chain: list[x509.Certificate], root_sha256: str, root: x509.Certificate | None
) -> tuple[str, str]:
    """('ok' | 'wrong_root' | 'unverified', why): does the served chain lead from the leaf to this root?"""

    def sha(c: x509.Certificate) -> str:
        return hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest()

    def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
        try:
            child.verify_directly_issued_by(parent)
            return True
        except (ValueError, TypeError, InvalidSignature):
            return False

    current, path = leaf, [leaf.subject.rfc4514_string()]
    for _ in range(MAX_CHAIN):
        if root_sha256 and sha(current) == root_sha256:
            return "ok", " -> ".join(path)
        if root is not None and issued_by(current, root):
            return "ok", " -> ".join(path + [root.subject.rfc4514_string()])
        parent = next((c for c in chain if c is not current and c.subject == current.issuer and issued_by(current, c)),
                      None)
        if parent is None or parent.subject == current.subject:
            break
        current = parent
        path.append(current.subject.rfc4514_string())
    if root is None:
        return "unverified", f"the report has no root certificate to check {current.issuer.rfc4514_string()} against"
    return "wrong_root", (f"the served chain ends at {current.issuer.rfc4514_string()}, "
                          f"not at the root {root.subject.rfc4514_string()} ({root_sha256[:16]}…)")


def _revocation_status(leaves: dict[str, tuple[bytes, list[bytes]]], timeout: float, now: datetime,
                       dns_server: str | None) -> dict[str, tuple[str, bool | None]]:
    """sha256 -> (served_status text, revoked? True/False/None when nothing answered)."""
    if not leaves:
        return {}
    rows, chain_certs = [], []
    for sha, (leaf, chain) in leaves.items():
        try:
            rows.append(parse_der(leaf, source="test-website", provenance=sha))
        except ValueError:
            continue
        for der in chain[1:]:
            try:
                chain_certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
    certs = frame_from_rows(rows, CERT_COLUMNS)
    config = Config(out_dir=Path("."), check_revocation=True, timeout=timeout, retries=1, dns_server=dns_server)
    check = check_revocation(certs, config, issuers=issuers_by_key_id(chain_certs), now=now, backoff_base=0.2)
    ocsp = {}
    for r in check.ocsp_results.itertuples():
        if r.hash == "sha1" or r.sha256 not in ocsp:
            ocsp[r.sha256] = str(r.status)
    listed = apply_revocations(certs, check.revocations) if not certs.empty else certs
    crl_status = dict(zip(check.crls["url"], check.crls["status"])) if len(check.crls) else {}
    out = {}
    for row in listed.itertuples():
        o = ocsp.get(row.sha256, "not asked" if not row.ocsp_urls else "not asked (no issuer certificate)")
        if pd.notna(row.revoked_at):
            c = f"revoked at {pd.Timestamp(row.revoked_at):%Y-%m-%d %H:%M:%SZ}"
        elif row.crl_distribution_points:
            states = {crl_status.get(u, "not fetched") for u in row.crl_distribution_points}
            readable = states & {"ok", "unverified", "stale"}
            c = "not listed" if readable else "/".join(sorted(states))
        else:
            c = "no CRL"
        revoked: bool | None
        if o == "revoked" or pd.notna(row.revoked_at):
            revoked = True
        elif o == "good" or c == "not listed":
            revoked = False
        else:
            revoked = None
        out[row.sha256] = (f"ocsp={o}; crl={c}", revoked)
    return out


def _judge(site: TestSite, leaf: x509.Certificate, chain_verdict: str, revoked: bool | None,
           now: datetime) -> list[str]:
    expired = leaf.not_valid_after_utc < now
    codes = []
    if site.expected == "valid":
        if expired:
            codes.append("valid_site_expired_cert")
        if leaf.not_valid_before_utc > now:
            codes.append("valid_site_not_yet_valid_cert")
        if revoked:
            codes.append("valid_site_revoked_cert")
    elif site.expected == "expired":
        if not expired:
            codes.append("expired_site_unexpired_cert")
    elif site.expected == "revoked":
        if revoked is False:
            codes.append("revoked_site_not_revoked")
        elif revoked is None:
            codes.append("revoked_site_status_unknown")
    if chain_verdict == "wrong_root":
        codes.append("wrong_root")
    return codes


def run_test_websites(
    ccadb: Path,
    out_dir: Path,
    *,
    ca_owner: str | None,
    dns_server: str | None,
    timeout: float,
    now: datetime | None = None,
    port_override: dict | None = None,
    workers: int = 16,
) -> pd.DataFrame:
    """Check every test website of the report (one row per URL and address) and write test-websites.csv/.xlsx.

    port_override maps a host name (or a whole URL) to the port to connect to instead of the URL's.
    """
    from .testsites_report import write_test_websites

    now = now or datetime.now(timezone.utc)
    sites = read_test_sites(Path(ccadb), ca_owner)
    port_override = port_override or {}
    targets: list[tuple[TestSite, str, int, str, str]] = []  # site, host, port, address, error
    for site in sites:
        parts = urlsplit(site.url)
        host = (parts.hostname or "").lower()
        port = port_override.get(site.url) or port_override.get(host) or parts.port or 443
        try:
            addresses = resolve_all(host, dns_server, timeout)
        except ValueError as exc:
            targets.append((site, host, port, "", str(exc)))
            continue
        targets += [(site, host, port, a, "") for a in addresses]

    def connect(t: tuple[TestSite, str, int, str, str]) -> tuple[list[bytes], str]:
        _, host, port, address, error = t
        if error:
            return [], error
        try:
            return served_chain(address, port, host, timeout), ""
        except (OSError, ssl.SSLError) as exc:
            return [], f"TLS to {address}:{port} (SNI {host}): {type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        served = list(pool.map(connect, targets))
    leaves = {hashlib.sha256(chain[0]).hexdigest(): (chain[0], chain) for chain, _ in served if chain}
    status = _revocation_status(leaves, timeout, now, dns_server)

    rows = []
    for (site, host, port, address, _), (chain_der, error) in zip(targets, served):
        row: dict[str, Any] = {"ca_owner": site.ca_owner, "ca_name": site.ca_name, "root_sha256": site.root_sha256,
                               "url": site.url, "expected": site.expected, "host": host, "port": port,
                               "address": address, "checked_at": now}
        if not chain_der:
            row.update(finding="unreachable", evidence=error)
            rows.append(row)
            continue
        try:
            chain = [x509.load_der_x509_certificate(d) for d in chain_der]
        except ValueError as exc:
            row.update(finding="unreadable_cert", evidence=f"served certificate is not readable: {exc}")
            rows.append(row)
            continue
        leaf, sha = chain[0], hashlib.sha256(chain_der[0]).hexdigest()
        verdict, why = chain_to_root(leaf, chain, site.root_sha256, site.root)
        text, revoked = status.get(sha, ("not checked", None))
        codes = _judge(site, leaf, verdict, revoked, now)
        row.update(served_sha256=sha, served_subject=leaf.subject.rfc4514_string(),
                   served_issuer=leaf.issuer.rfc4514_string(), served_not_before=leaf.not_valid_before_utc,
                   served_not_after=leaf.not_valid_after_utc, served_status=text, chain=verdict,
                   finding=";".join(codes), evidence=why if verdict != "ok" else "")
        rows.append(row)
    frame = frame_from_rows(rows, TEST_SITE_COLUMNS) if rows else empty_frame(TEST_SITE_COLUMNS)
    write_test_websites(frame, Path(out_dir))
    return frame
