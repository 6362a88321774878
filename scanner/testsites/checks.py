"""CCADB test websites: every address of every valid / expired / revoked test URL, checked over TLS.

A load-balanced test site can serve a fresh certificate from one node and an expired one from
another (FNMT, 2025), so each A/AAAA address is connected to separately, with SNI and without
verification (we want to see what is served, not whether it verifies). The served leaf is
dated, checked against OCSP and its CRL (scanner.enrich.revocation.fetch), and its chain walked up to
the root the report names (by SHA-256, with the root's PEM when the report carries it).

Names are resolved and addresses connected to concurrently (bounded). Every row has a status:
`ok`, `finding` (the CA's site is wrong, or a DNS server said the name does not exist) or
`unknown` (a lookup timed out or failed, a connection timed out or had no route): unknown is never
a finding. When no address at all could be connected to, the network is taken to be unavailable
and every row is unknown, whatever the resolver said (an offline resolver may answer NXDOMAIN to
every name).
"""

from __future__ import annotations

import csv
import difflib
import errno
import hashlib
import ipaddress
import socket
import ssl
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
from tqdm import tqdm

from scanner.core.config import Config
from scanner.core.net import parse_host_port
from scanner.core.records import CERT_COLUMNS, empty_frame, frame_from_rows
from scanner.core.times import iso
from scanner.enrich.revocation.crl import apply_revocations
from scanner.enrich.revocation.fetch import fetch_revocation
from scanner.enrich.revocation.issuers import issuers_by_key_id
from scanner.parse.certs import parse_der

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
    "status": "string",  # ok / finding / unknown (not checked: see evidence)
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


class UnknownOwner(ValueError):
    """--ca-owner names no CA owner of the report; the message names the closest ones."""


def closest_owners(name: str, owners: set[str], n: int = 3) -> list[str]:
    """The owners of the report that look most like name (case-insensitive), best first."""
    by_key = {o.casefold(): o for o in sorted(owners)}
    key = name.casefold().strip()
    keys = difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.6)
    # A short name ("camerfirma") is far from the full legal name by ratio, but contained in it.
    keys += [k for k in by_key if key and key in k and k not in keys]
    keys = keys or difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.3)
    return [by_key[k] for k in keys[:n]]


def read_test_sites(ccadb: Path, ca_owner: str | None = None) -> list[TestSite]:
    """Every (root, kind, URL) of a Mozilla or CCADB report, optionally for one CA owner (case-insensitive).

    UnknownOwner when ca_owner is given and no row of the report has that owner.
    """
    sites: list[TestSite] = []
    owners: set[str] = set()
    with open(ccadb, encoding="utf-8-sig", newline="") as fh:
        for rec in csv.DictReader(fh):
            owner = _first(rec, OWNER_COLUMNS)
            owners.add(owner)
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
    if ca_owner and ca_owner.casefold() not in {o.casefold() for o in owners}:
        close = closest_owners(ca_owner, owners - {""})
        hint = ("closest: " + ", ".join(f'"{o}"' for o in close)) if close else f"it lists {len(owners)} owners"
        raise UnknownOwner(f'--ca-owner "{ca_owner}" is no CA owner of {Path(ccadb).name}; {hint}')
    return sites


# --- network --------------------------------------------------------------------------------


#: Connection errors that say our side has no route, not that the site is down.
NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


@dataclass(frozen=True)
class Lookup:
    """What DNS said about one name: its addresses, a finding when a server said there are none, or why unknown."""

    addresses: tuple[str, ...] = ()
    finding: str = ""  # the evidence of a finding: NXDOMAIN, or no A/AAAA record, from a server that answered
    unknown: str = ""  # why (some of) the addresses are not known: timeouts, SERVFAIL, no resolver


def make_resolver(dns_server: str | None, timeout: float) -> dns.resolver.Resolver:
    """A resolver asking dns_server (or the system's), each name given at most `timeout` seconds per type."""
    if dns_server:
        resolver = dns.resolver.Resolver(configure=False)
        addr, port = parse_host_port(dns_server, 53)
        resolver.nameservers, resolver.port = [addr], port
    else:
        resolver = dns.resolver.Resolver()  # NoResolverConfiguration when the machine has no DNS at all
    resolver.lifetime = timeout
    return resolver


def ask(resolver: dns.resolver.Resolver | None, host: str, rdtype: str) -> tuple[str, list[str], str]:
    """One DNS question -> (answer, addresses, why): answer is 'ok', 'nxdomain', 'nodata' or 'unknown'."""
    if resolver is None:
        return "unknown", [], "no DNS resolver is configured on this machine"
    try:
        return "ok", [r.to_text() for r in resolver.resolve(host, rdtype)], ""
    except dns.resolver.NXDOMAIN:
        return "nxdomain", [], f"DNS: {host} does not exist (NXDOMAIN)"
    except dns.resolver.NoAnswer:
        return "nodata", [], ""
    except dns.exception.Timeout:
        return "unknown", [], f"DNS {rdtype}: no answer within {resolver.lifetime:g} s"
    except dns.resolver.NoNameservers:
        return "unknown", [], f"DNS {rdtype}: no server gave an answer (SERVFAIL, REFUSED or unreachable)"
    except (dns.exception.DNSException, OSError) as exc:
        return "unknown", [], f"DNS {rdtype}: {type(exc).__name__}: {exc}"


def combine(host: str, answers: list[tuple[str, list[str], str]]) -> Lookup:
    """The A and AAAA answers for host as one Lookup (addresses sorted, so reruns list them alike)."""
    for answer, _, why in answers:
        if answer == "nxdomain":
            return Lookup(finding=why)
    addresses = tuple(sorted({a for _, addrs, _ in answers for a in addrs}, key=ipaddress.ip_address))
    unknown = "; ".join(why for answer, _, why in answers if answer == "unknown")
    if not addresses and not unknown:
        return Lookup(finding=f"DNS: no A/AAAA address for {host}")
    return Lookup(addresses, unknown=unknown)


def resolve_hosts(hosts: list[str], dns_server: str | None, timeout: float, concurrency: int,
                  bar: tqdm | None = None) -> dict[str, Lookup]:
    """host -> Lookup for every host, A and AAAA asked at once for 2 x `concurrency` names at a time."""
    out: dict[str, Lookup] = {}
    names = []
    for host in hosts:
        try:
            out[host] = Lookup((str(ipaddress.ip_address(host)),))  # an IP literal is its own answer
        except ValueError:
            names.append(host)
    if bar is not None:
        bar.update(len(out))
    if not names:
        return out
    try:
        resolver: dns.resolver.Resolver | None = make_resolver(dns_server, timeout)
    except dns.resolver.NoResolverConfiguration:
        resolver = None
    # A question in flight is a UDP socket and a waiting thread, far cheaper than a TLS handshake: let
    # twice as many names wait on DNS as addresses on TLS, so a silent server costs about one timeout.
    with ThreadPoolExecutor(max_workers=4 * max(1, concurrency), thread_name_prefix="dns") as pool:
        futures = {h: [pool.submit(ask, resolver, h, t) for t in ("A", "AAAA")] for h in names}
        for host, pair in futures.items():
            out[host] = combine(host, [f.result() for f in pair])
            if bar is not None:
                bar.update(1)
    return out


class ConnectError(OSError):
    """The TCP connection itself failed (before any TLS); `unanswered` when nothing answered (timeout, no route)."""

    def __init__(self, address: str, port: int, exc: OSError):
        super().__init__(f"TCP to {address}:{port}: {type(exc).__name__}: {exc}")
        self.unanswered = isinstance(exc, TimeoutError) or exc.errno in NO_ROUTE


def served_chain(address: str, port: int, server_name: str, timeout: float) -> list[bytes]:
    """DER certificates the server at address:port presents for this SNI name, leaf first (no verification).

    ConnectError when no TCP connection could be made; other OSError / ssl.SSLError after it was.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise ConnectError(address, port, exc) from exc
    # CPython bounds the whole handshake by the socket timeout (one deadline), not each read.
    with sock:
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
    check = fetch_revocation(certs, config, issuers=issuers_by_key_id(chain_certs), now=now, backoff_base=0.2)
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
            c = f"revoked at {iso(row.revoked_at)}"
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


OFFLINE = "no test website could be resolved or reached: the network looks unavailable; every row is unknown"


@dataclass(frozen=True)
class TestWebsitesRun:
    """What a test-websites run found: the rows written, whether it was offline, why rows are unknown."""

    __test__ = False  # not a pytest class

    frame: pd.DataFrame
    offline: bool = False
    unknown: Counter = field(default_factory=Counter)  # short reason -> rows with that reason

    @property
    def complete(self) -> bool:
        """Every address was checked (no row is unknown)."""
        return not self.offline and not self.unknown


def _unknown_reason(evidence: str) -> str:
    """A short label for why a row is unknown, for the one-line summary on stderr."""
    if evidence.startswith("DNS"):
        return "DNS timeout" if "no answer within" in evidence else "DNS failure"
    if "TimeoutError" in evidence or "timed out" in evidence:
        return "connection timeout"
    return "no route to the address"


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
    progress: bool | None = None,
) -> TestWebsitesRun:
    """Check every test website of the report (one row per URL and address) and write test-websites.csv/.xlsx.

    workers bounds the names resolved and the addresses connected to at once; progress shows bars on
    stderr (None: only when stderr is a terminal). port_override maps a host name (or a whole URL)
    to the port to connect to instead of the URL's. UnknownOwner when ca_owner matches no owner.
    """
    from scanner.testsites.report import write_test_websites

    now = now or datetime.now(timezone.utc)
    sites = read_test_sites(Path(ccadb), ca_owner)
    port_override = port_override or {}
    show = sys.stderr.isatty() if progress is None else progress
    hosts = list(dict.fromkeys((urlsplit(site.url).hostname or "").lower() for site in sites))
    with tqdm(total=len(hosts), desc="DNS", unit=" name", file=sys.stderr, disable=not show) as dns_bar:
        lookups = resolve_hosts(hosts, dns_server, timeout, workers, dns_bar)

    targets: list[tuple[TestSite, str, int, str, Lookup]] = []  # site, host, port, address ('' = none), lookup
    for site in sites:
        parts = urlsplit(site.url)
        host = (parts.hostname or "").lower()
        port = port_override.get(site.url) or port_override.get(host) or parts.port or 443
        found = lookups[host]
        targets += [(site, host, port, a, found) for a in found.addresses]
        if not found.addresses or found.unknown:  # one row says why (the rest of) the name is not checked
            targets.append((site, host, port, "", found))

    def connect(t: tuple[TestSite, str, int, str, Lookup]) -> tuple[list[bytes], str, str, bool]:
        """-> (chain, status if not served, evidence, did a host answer? (a refused connection is an answer))."""
        _, host, port, address, found = t
        if not address:
            return [], "finding" if found.finding else "unknown", found.finding or found.unknown, False
        try:
            return served_chain(address, port, host, timeout), "", "", True
        except ConnectError as exc:
            return [], "unknown" if exc.unanswered else "finding", str(exc), not exc.unanswered
        except (OSError, ssl.SSLError) as exc:
            return [], "finding", f"TLS to {address}:{port} (SNI {host}): {type(exc).__name__}: {exc}", True
        finally:
            tls_bar.update(1)

    with tqdm(total=len(targets), desc="TLS", unit=" address", file=sys.stderr, disable=not show) as tls_bar, \
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tls") as pool:
        served = list(pool.map(connect, targets))
    # No host answered anywhere: the resolver's NXDOMAINs and the timeouts say more about us than the CA.
    offline = bool(targets) and not any(connected for *_, connected in served)
    leaves = {hashlib.sha256(chain[0]).hexdigest(): (chain[0], chain) for chain, *_ in served if chain}
    status = _revocation_status(leaves, timeout, now, dns_server)

    rows = []
    for (site, host, port, address, _), (chain_der, failed, error, _) in zip(targets, served):
        row: dict[str, Any] = {"ca_owner": site.ca_owner, "ca_name": site.ca_name, "root_sha256": site.root_sha256,
                               "url": site.url, "expected": site.expected, "host": host, "port": port,
                               "address": address, "checked_at": now}
        if not chain_der:
            failed = "unknown" if offline else failed
            row.update(status=failed, finding="unreachable" if failed == "finding" else "", evidence=error)
            rows.append(row)
            continue
        try:
            chain = [x509.load_der_x509_certificate(d) for d in chain_der]
        except ValueError as exc:
            row.update(status="finding", finding="unreadable_cert", evidence=f"served certificate is not readable: {exc}")
            rows.append(row)
            continue
        leaf, sha = chain[0], hashlib.sha256(chain_der[0]).hexdigest()
        verdict, why = chain_to_root(leaf, chain, site.root_sha256, site.root)
        text, revoked = status.get(sha, ("not checked", None))
        codes = _judge(site, leaf, verdict, revoked, now)
        row.update(served_sha256=sha, served_subject=leaf.subject.rfc4514_string(),
                   served_issuer=leaf.issuer.rfc4514_string(), served_not_before=leaf.not_valid_before_utc,
                   served_not_after=leaf.not_valid_after_utc, served_status=text, chain=verdict,
                   status="finding" if codes else "ok", finding=";".join(codes),
                   evidence=why if verdict != "ok" else "")
        rows.append(row)
    frame = frame_from_rows(rows, TEST_SITE_COLUMNS) if rows else empty_frame(TEST_SITE_COLUMNS)
    write_test_websites(frame, Path(out_dir))
    unknown = Counter(_unknown_reason(r["evidence"]) for r in rows if r["status"] == "unknown")
    return TestWebsitesRun(frame, offline, unknown)
