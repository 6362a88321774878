"""Registrable domains of SAN names: tldextract's bundled suffix list (no network), IDNs as A-labels."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import idna
import tldextract

if TYPE_CHECKING:
    import pandas as pd

# The bundled Public Suffix List snapshot only: a scan never fetches the list over the network.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False)

_MAYBE_IP = re.compile(r"^\[?[0-9a-f:.]+\]?$")  # only such names are worth asking ipaddress about
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

#: Kinds of SAN name, each handled differently downstream.
PUBLIC, IP, INTERNAL, INVALID = "public", "ip", "internal", "invalid"


@dataclass(frozen=True, slots=True)  # slots: a scan caches a million of these
class DomainInfo:
    """A SAN name split for lookups: kind, registrable domain, its label and suffix."""

    name: str  # the normalised name (A-labels, lower case, wildcard stripped)
    kind: str  # PUBLIC / IP / INTERNAL / INVALID
    registrable: str = ""  # e.g. cualtis.net (empty unless PUBLIC)
    label: str = ""  # the registrable label, e.g. cualtis
    suffix: str = ""  # the public suffix, e.g. net or co.uk
    subdomain: str = ""  # e.g. mail
    reason: str = ""  # why INVALID / INTERNAL


def to_a_label(name: str) -> str:
    """Lower-case, strip one trailing dot and a leading wildcard, convert U-labels to A-labels."""
    n = name.strip().lower().rstrip(".")
    if n.startswith("*."):
        n = n[2:]
    if n.isascii():
        return n
    try:
        return idna.encode(n, uts46=True).decode("ascii")
    except idna.IDNAError:
        return n


def _classify(raw: str) -> DomainInfo:
    name = to_a_label(raw)
    if not name:
        return DomainInfo(name, INVALID, reason="empty name")
    if not raw.isascii():
        # dNSName is an IA5String: the BRs require A-labels, so a U-label in a certificate is a defect.
        return DomainInfo(name, INVALID, reason="non-ASCII characters (a U-label; certificates must carry A-labels)")
    if _MAYBE_IP.match(name):
        try:
            ipaddress.ip_address(name.strip("[]"))
            return DomainInfo(name, IP, reason="IP address in a dNSName")
        except ValueError:
            pass
    if not name.isascii():
        return DomainInfo(name, INVALID, reason="not convertible to an A-label")
    labels = name.split(".")
    if len(name) > 253 or any(not _LABEL.match(label) for label in labels):
        return DomainInfo(name, INVALID, reason="not a valid DNS name")
    # A host name, not a URL: extract_urllib skips the URL clean-up, half the cost of a lookup.
    ext = _EXTRACT.extract_urllib(SplitResult("", name, "", "", ""))
    if not ext.suffix:
        return DomainInfo(name, INTERNAL, reason="no public suffix")
    if not ext.domain:
        return DomainInfo(name, INVALID, suffix=ext.suffix, reason="a bare public suffix")
    return DomainInfo(
        name,
        PUBLIC,
        registrable=f"{ext.domain}.{ext.suffix}",
        label=ext.domain,
        suffix=ext.suffix,
        subdomain=ext.subdomain,
    )


# For names classified one at a time; a scan classifies all its names once with classify_all.
classify_name = lru_cache(maxsize=65_536)(_classify)
classify_name.__doc__ = "Classify one SAN dNSName: its registrable domain, or why it has none (cached)."

#: Each distinct name of a scan, classified once and handed to every detector.
Classified = dict[str, DomainInfo]


def classify_all(certs: "pd.DataFrame") -> Classified:
    """Every distinct SAN (dNSName and IP) and subject CN of these certificates, classified once."""
    names: set[str] = set()
    for column in ("san_dns", "san_ip"):
        for values in certs[column]:
            if isinstance(values, (list, tuple)):
                names.update(v for v in values if isinstance(v, str))
    names.update(cn for cn in certs["subject_cn"].dropna() if isinstance(cn, str))
    return {n: _classify(n) for n in names}


def classifier(classified: Classified | None):  # noqa: ANN201  (a callable str -> DomainInfo)
    """A function classifying one name: from `classified` when it has the name, else classify_name."""
    if classified is None:
        return classify_name
    get = classified.get
    return lambda name: get(name) or classify_name(name)


def registrable_domain(raw: str) -> str:
    """The registrable domain of a name ('' for IPs, internal and invalid names)."""
    return classify_name(raw).registrable


NAME_COLUMNS = ("sha256", "raw", "name", "kind", "registrable", "label", "suffix", "reason")


def checked_names(san_dns: Any, subject_cn: Any) -> list[str]:
    """The DNS names of a certificate worth checking: its SAN dNSNames, or a legacy host name in the CN.

    Certificates from before SANs were required name their host only in the CN; a CN that is not a
    public DNS name (a person, a company) is left alone, so S/MIME and client certificates stay quiet.
    """
    dns = list(san_dns) if isinstance(san_dns, (list, tuple)) else []
    if dns or not isinstance(subject_cn, str) or not subject_cn:
        return dns
    return [subject_cn] if classify_name(subject_cn).kind == PUBLIC else []


def name_table(
    certs: "pd.DataFrame", max_per_cert: int | None = None, classified: Classified | None = None
) -> "pd.DataFrame":
    """One row per (certificate, checked name) with its classification; IP SANs included as kind 'ip'."""
    import pandas as pd

    sha: list[str] = []
    names: list[str] = []
    for cert_sha, dns, ips, cn in zip(certs["sha256"], certs["san_dns"], certs["san_ip"], certs["subject_cn"]):
        dns = checked_names(dns, cn)
        ips = list(ips) if isinstance(ips, (list, tuple)) else []
        all_names = dns + ips
        if max_per_cert is not None:
            all_names = all_names[:max_per_cert]
        sha.extend([cert_sha] * len(all_names))
        names.extend(all_names)
    infos = list(map(classifier(classified), names))
    return pd.DataFrame(
        {
            "sha256": pd.Series(sha, dtype="string"),
            "raw": pd.Series(names, dtype="string"),  # as the certificate wrote it
            "name": pd.Series([i.name for i in infos], dtype="string"),
            "kind": pd.Series([i.kind for i in infos], dtype="string"),
            "registrable": pd.Series([i.registrable for i in infos], dtype="string"),
            "label": pd.Series([i.label for i in infos], dtype="string"),
            "suffix": pd.Series([i.suffix for i in infos], dtype="string"),
            "reason": pd.Series([i.reason for i in infos], dtype="string"),
        },
        columns=list(NAME_COLUMNS),
    )
