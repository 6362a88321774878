"""Registrable domains of SAN names: tldextract's bundled suffix list (no network), IDNs as A-labels."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import idna
import tldextract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

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

#: DomainInfo's fields, in order: the columns of a Classified.
INFO_FIELDS = ("name", "kind", "registrable", "label", "suffix", "subdomain", "reason")


class Classified(Mapping[str, DomainInfo]):
    """Each distinct name of a scan classified once: a mapping name -> DomainInfo, held as Arrow columns.

    The columns let a detector classify a whole exploded name column with one lookup (`positions`,
    `take`) instead of a dict lookup per row.
    """

    def __init__(self, raw: "pa.Array", columns: dict[str, "pa.Array"]):
        self.raw = raw  # the distinct names as written
        self.columns = columns  # INFO_FIELDS -> one value per raw name
        self._infos: dict[str, DomainInfo] = {}
        self._where: dict[str, int] | None = None
        self._exploded: dict[tuple[Any, ...], tuple[Any, Exploded]] = {}  # see explode_names
        self.memo: dict[str, Any] = {}  # what detectors derive once per scan and share (organisation keys...)

    def __len__(self) -> int:
        return len(self.raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw.to_pylist())

    def __getitem__(self, raw: str) -> DomainInfo:
        info = self._infos.get(raw)
        if info is None:
            if self._where is None:  # a detector asking name by name asks about few: no column is converted
                self._where = {n: i for i, n in enumerate(self.raw.to_pylist())}
            i = self._where[raw]
            info = self._infos[raw] = DomainInfo(*(self.columns[f][i].as_py() for f in INFO_FIELDS))
        return info

    def forget_name_tables(self) -> None:
        """Let go of the name tables kept in memo (name_table's), once no detector will read them."""
        for key in [k for k in self.memo if isinstance(k, tuple) and k[:1] == (_NAME_TABLE,)]:
            del self.memo[key]

    def positions(self, values: "pa.Array") -> "np.ndarray":
        """The row of each value among the classified names (-1 for a value not classified)."""
        import numpy as np
        import pyarrow.compute as pc

        at = pc.index_in(values, value_set=self.raw)
        return at.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def take(self, field: str, positions: "np.ndarray") -> "pa.Array":
        """The field (one of INFO_FIELDS) of the classified names at these rows (positions >= 0)."""
        return self.columns[field].take(positions)


# A valid label without lookarounds (Arrow's RE2 has none): what _LABEL accepts, upper case too.
_RE2_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_FAST = r"^(?:\*\.)?" + _RE2_LABEL + r"(?:\." + _RE2_LABEL + r")+$"
_MAYBE_IP_RE2 = r"^\[?[0-9a-f:.]+\]?$"


@lru_cache(maxsize=1)
def _suffix_trie() -> tuple["pa.Array", "pa.Array", "pa.Array"]:
    """The bundled suffix list as sets: every trie node (a rule's tails), the rules, the wildcard parents."""
    import pyarrow as pa

    rules = set(_EXTRACT.tlds)
    nodes = {".".join(r.split(".")[i:]) for r in rules for i in range(r.count(".") + 1)}
    wild = {r[2:] for r in rules if r.startswith("*.")}
    return tuple(pa.array(sorted(x), type=pa.string()) for x in (nodes, rules, wild))  # type: ignore[return-value]


# A valid label without lookarounds (Arrow's RE2 has none): what _LABEL accepts, upper case too.
_RE2_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_FAST = r"^(?:\*\.)?" + _RE2_LABEL + r"(?:\." + _RE2_LABEL + r")+$"
_MAYBE_IP_RE2 = r"^\[?[0-9a-f:.]+\]?$"
# Matched on the reversed name: anchored at its start, RE2 splits it many times faster.
_LAST_TWO = r"^(?P<suffix>[^.]+)\.(?P<label>[^.]+)(?:\.(?P<subdomain>.*))?$"
_LAST_THREE = r"^(?P<suffix>[^.]+\.[^.]+)\.(?P<label>[^.]+)(?:\.(?P<subdomain>.*))?$"


def classify_names(names: "pa.Array") -> Classified:
    """Classify distinct names (an Arrow string array without nulls) exactly as _classify does, most at once.

    tldextract walks the suffix list's trie from the right, one label at a time, while the labels
    so far are a node of the trie (the tail of a rule); the public suffix is the deepest rule on
    that path, unless the node it stops at has a wildcard child. So a plain host name (ASCII
    labels, no IDN label where the walk looks) whose walk stops one or two labels from the right
    at a rule without a wildcard under it is classified by set lookups on its last labels, all
    names at once; a top-level label that is no node means no public suffix. Every other name
    (upper case, trailing dots, IP-like, too long, IDN, wildcard rules, deeper rules) takes _classify.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    names = names.cast(pa.string()) if names.type != pa.string() else names
    nodes, rules, wild = _suffix_trie()

    def has(values: "pa.Array", members: "pa.Array") -> "pa.Array":
        return pc.is_in(values, value_set=members).fill_null(False)

    def idn(values: "pa.Array") -> "pa.Array":
        return pc.starts_with(values, "xn--").fill_null(True)

    fast = pc.match_substring_regex(names, _FAST).fill_null(False)
    name = pc.replace_substring_regex(pc.ascii_lower(names), r"^\*\.", "")
    fast = pc.and_(fast, pc.invert(pc.match_substring_regex(name, _MAYBE_IP_RE2)))
    fast = pc.and_(fast, pc.less_equal(pc.binary_length(name), 253))
    backwards = pc.utf8_reverse(name)
    two, three = pc.extract_regex(backwards, _LAST_TWO), pc.extract_regex(backwards, _LAST_THREE)
    tld, label2, sub2 = (pc.utf8_reverse(two.field(f)) for f in ("suffix", "label", "subdomain"))
    suffix3, label3, sub3 = (pc.utf8_reverse(three.field(f)) for f in ("suffix", "label", "subdomain"))
    fast = pc.and_(fast, pc.invert(idn(tld)))
    tail2 = pc.binary_join_element_wise(label2, tld, ".")
    tail3 = pc.if_else(three.is_valid(), pc.binary_join_element_wise(label3, suffix3, "."), None)
    # Stops at the second label (not a node), under a top-level rule without a wildcard.
    at_two = pc.and_(pc.and_(fast, has(tld, rules)), pc.and_(pc.invert(has(tld, wild)), pc.invert(has(tail2, nodes))))
    at_two = pc.and_(at_two, pc.invert(idn(label2)))
    # Stops at the third label (not a node), under a two-label rule without a wildcard.
    at_three = pc.and_(pc.and_(fast, pc.invert(at_two)), pc.and_(has(suffix3, rules), pc.invert(has(suffix3, wild))))
    at_three = pc.and_(at_three, pc.and_(pc.invert(has(tail3, nodes)), pc.invert(idn(label3))))
    at_three = pc.and_(at_three, three.is_valid())
    no_suffix = pc.and_(fast, pc.invert(has(tld, nodes)))
    public = pc.or_(at_two, at_three)
    empty = pa.scalar("", pa.string())
    columns = {
        "name": name,
        "kind": pc.if_else(public, PUBLIC, INTERNAL),
        "registrable": pc.if_else(at_two, tail2, pc.if_else(at_three, tail3, empty)),
        "label": pc.if_else(at_two, label2, pc.if_else(at_three, label3, empty)),
        "suffix": pc.if_else(at_two, tld, pc.if_else(at_three, suffix3, empty)),
        "subdomain": pc.if_else(at_two, sub2, pc.if_else(at_three, sub3, empty)),
        "reason": pc.if_else(public, empty, "no public suffix"),
    }
    rest = pc.invert(pc.or_(public, no_suffix))
    slow = np.flatnonzero(rest.to_numpy(zero_copy_only=False))
    if len(slow):
        infos = [_classify(n) for n in names.take(pa.array(slow)).to_pylist()]
        for field in INFO_FIELDS:
            replaced = pa.array([getattr(i, field) for i in infos], type=pa.string())
            columns[field] = pc.replace_with_mask(columns[field].cast(pa.string()), rest, replaced)
    return Classified(names, {f: c.cast(pa.string()) for f, c in columns.items()})


@dataclass(frozen=True)
class Exploded:
    """A column of name lists, one row per str element: certificate (row position), place in its list, name."""

    cert: "np.ndarray"  # int64, ascending
    order: "np.ndarray"  # int64: the element's place among its list's str elements
    values: "pa.Array"  # string

    def take(self, keep: "np.ndarray") -> "Exploded":
        """The rows where keep (a boolean mask) is true."""
        import pyarrow as pa

        return Exploded(self.cert[keep], self.order[keep], self.values.filter(pa.array(keep)))


def list_column(column: "pd.Series") -> "pa.ListArray":
    """A column of name lists as an Arrow list<string> array (a row that is no list, list, tuple or array: null)."""
    import numpy as np
    import pyarrow as pa

    values = column.tolist()
    if not {type(v) for v in values} <= {list, tuple, np.ndarray, type(None)}:
        values = [v if isinstance(v, (list, tuple, np.ndarray)) else None for v in values]
    try:
        return pa.array(values, type=pa.list_(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a non-str element: such elements are dropped
        return pa.array([None if v is None else [x for x in v if isinstance(x, str)] for v in values],
                        type=pa.list_(pa.string()))


def explode_names(certs: "pd.DataFrame", column: str, classified: Classified | None = None) -> Exploded:
    """certs[column] (lists of names) exploded; kept with `classified` so that detectors sharing it explode once."""
    import numpy as np
    import pyarrow.compute as pc

    if column not in certs.columns:
        empty = np.zeros(0, np.int64)
        import pyarrow as pa

        return Exploded(empty, empty, pa.array([], pa.string()))
    data = certs[column].to_numpy()
    key = (column, data.__array_interface__["data"][0], data.shape, data.strides)
    memo = classified._exploded if classified is not None else {}
    if key in memo:
        return memo[key][1]
    lists = list_column(certs[column])
    values = lists.flatten()
    cert = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    keep = values.is_valid().to_numpy(zero_copy_only=False)
    if not keep.all():
        values, cert = values.filter(keep), cert[keep]
    out = Exploded(cert, ranks(cert), values)
    if classified is not None:
        memo[key] = (data, out)  # the array is kept, so its address cannot be reused while the entry lives
    return out


def ranks(groups: "np.ndarray") -> "np.ndarray":
    """0, 1, 2... within each run of equal values of a sorted array."""
    import numpy as np

    if not len(groups):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def arrow_strings(column: "pd.Series") -> "pa.Array":
    """A text column as one Arrow string array (null where missing or not a str)."""
    import pyarrow as pa

    try:
        values = pa.array(column, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = pa.array([v if isinstance(v, str) else None for v in column.tolist()], type=pa.string())
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _cn_values(certs: "pd.DataFrame") -> "pa.Array":
    """The subject CN of every certificate (null when missing or not a str)."""
    import pyarrow as pa

    if "subject_cn" not in certs.columns:
        return pa.nulls(len(certs), pa.string())
    return arrow_strings(certs["subject_cn"])


def classify_all(certs: "pd.DataFrame") -> Classified:
    """Every distinct SAN (dNSName and IP) and subject CN of these certificates, classified once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [list_column(certs[c]).flatten().drop_null() for c in ("san_dns", "san_ip") if c in certs.columns]
    parts.append(_cn_values(certs).drop_null())
    values = pa.concat_arrays([p.cast(pa.string()) for p in parts])
    return classify_names(pc.unique(values))


def with_names(classified: Classified | None, values: "pa.Array") -> tuple[Classified, "np.ndarray"]:
    """(a Classified holding every one of values, the row of each value in it): names not yet held are classified."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if classified is None:
        classified = classify_names(pc.unique(values))
    at = classified.positions(values)
    missing = at < 0
    if missing.any():
        extra = classify_names(pc.unique(values.filter(pa.array(missing))))
        classified = Classified(pa.concat_arrays([classified.raw, extra.raw]),
                                {f: pa.concat_arrays([classified.columns[f], extra.columns[f]]) for f in INFO_FIELDS})
        at = classified.positions(values)
    return classified, at


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


_NAME_TABLE = "name_table"  # the memo key's first part (Classified.forget_name_tables)


def name_table(
    certs: "pd.DataFrame", max_per_cert: int | None = None, classified: Classified | None = None
) -> "pd.DataFrame":
    """One row per (certificate, checked name) with its classification; IP SANs included as kind 'ip'.

    The checked names are the SAN dNSNames, else a CN that is a public DNS name (certificates from
    before SANs were required name their host only there; a person's or a company's CN is left alone,
    so S/MIME and client certificates stay quiet), then the IP SANs, at most max_per_cert of them per
    certificate.
    """
    key = (_NAME_TABLE, max_per_cert, id(certs))
    if classified is not None and key in classified.memo and classified.memo[key][0] is certs:
        return classified.memo[key][1]  # the pipeline's domains and the detectors read one table
    table = _name_table(certs, max_per_cert, classified)
    if classified is not None:
        classified.memo[key] = (certs, table)  # certs kept, so that its id is not reused while the entry lives
    return table


def _name_table(certs: "pd.DataFrame", max_per_cert: int | None, classified: Classified | None) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(certs)
    dns = explode_names(certs, "san_dns", classified)
    ips = explode_names(certs, "san_ip", classified)
    dns_count = np.bincount(dns.cert, minlength=n)
    cn = _cn_values(certs)
    # A CN stands in for the SANs of a certificate with none when it is a public DNS name.
    maybe = np.flatnonzero((dns_count == 0) & pc.greater(pc.binary_length(cn), 0).fill_null(False).to_numpy(
        zero_copy_only=False))
    cn_values = cn.take(pa.array(maybe, pa.int64()))
    values = pa.concat_arrays([dns.values, cn_values, ips.values])
    classified, at = with_names(classified, values)
    kind = classified.take("kind", at)
    cn_kind = kind.slice(len(dns.values), len(maybe))
    cn_public = pc.equal(cn_kind, PUBLIC).to_numpy(zero_copy_only=False)
    dns_count[maybe[cn_public]] = 1
    cert = np.concatenate([dns.cert, maybe, ips.cert])
    order = np.concatenate([dns.order, np.zeros(len(maybe), np.int64), ips.order + dns_count[ips.cert]])
    keep = np.ones(len(cert), dtype=bool)
    keep[len(dns.cert): len(dns.cert) + len(maybe)] = cn_public
    if max_per_cert is not None:
        keep &= order < max_per_cert
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((order[rows], cert[rows]))]
    picked = pa.array(at[rows])
    sha = arrow_strings(certs["sha256"])

    def column(values: "pa.Array") -> pd.Series:
        return pd.Series(pd.array(values, dtype="string"))

    frame = {"sha256": column(sha.take(pa.array(cert[rows]))), "raw": column(values.take(pa.array(rows)))}
    for field in ("name", "kind", "registrable", "label", "suffix", "reason"):
        frame[field] = column(classified.columns[field].take(picked))
    return pd.DataFrame(frame, columns=list(NAME_COLUMNS))


def registrable_domains(certs: "pd.DataFrame", max_per_cert: int | None = None,
                        classified: Classified | None = None) -> set[str]:
    """The registrable domains of these certificates' checked names (name_table's), worth a registration lookup."""
    names = name_table(certs, max_per_cert, classified)
    return set(names.loc[names["kind"] == PUBLIC, "registrable"].tolist())
