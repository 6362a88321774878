"""Typo SANs: a registrable domain one edit away from the subscriber's own name or other names.

The Camerfirma case: a certificate for ``mail.cuatis.net`` (subject O "CUALTIS S.L.U") was revoked
and reissued for ``mail.cualtis.net``. Each SAN's registrable label is compared with

* the subject O, normalised (``subject_o``),
* the other SANs of the same certificate (``same_cert``),
* the names in the CA's other certificates for the same subscriber, as enrich.subscribers defines
  it: the same organisation key, or a registrable domain in common (``other_cert``);

and, for suffix typos, the same label under a public suffix one edit away: any two suffixes of the
Public Suffix List, generic or country code (``cualtis.ne`` for ``cualtis.net``, ``cualtis.ec`` for
``cualtis.es``, ``.pt``/``.pl``, ``.at``/``.it``). Pairs come from the symmetric-deletion index, so the
cross-certificate search scales.

Of a pair, the name flagged is the one that looks like the typo: not the O's label, then the rarer
across the CA's issuance (``cuatis.net`` once, ``cualtis.net`` in several certificates), then the
revoked one; on the same certificate a full tie goes against the later SAN (the first is usually
the intended name), across certificates both are reported.

Nothing depends on the kind of suffix: a country-code swap ranks like any other typo, by the other
evidence (the registry's answer, the subscriber's certificates). A flagged name that is itself named
in ESTABLISHED_CERTIFICATES or more of the CA's certificates is marked ``established`` (a company's
``acme.de`` and ``acme.dk`` look like this) and the score weighs it less; it is still listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scanner.core.records import FINDING_COLUMNS, Finding, empty_frame
from scanner.detect.findings import as_json, findings_frame
from scanner.detect.namecodes import codes_of, key_pairs, name_codes, positions, text_order, texts
from scanner.detect.subjects import organisations, subject_o_column
from scanner.enrich.subscribers import (
    MAX_REGISTRABLES,
    MIN_LABEL,
    label_pairs,
    suffix_pairs,
    typo_pairs,
)
from scanner.enrich.typo_index import Edit, edit_between
from scanner.parse.domains import Classified, arrow_strings, explode_names, ranks

CODE = "typo_neighbour"
SOURCES = ("subject_o", "same_cert", "other_cert")

#: A suspect name certified this many times is one the subscriber has had validated again and again
#: (a second country site, a sister brand), not a one-off slip: still reported, weighed less.
ESTABLISHED_CERTIFICATES = 3


def _clip(text: object, limit: int = 80) -> str:
    """Attacker-controlled text shortened for a one-line evidence sentence."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


@dataclass
class _Table:
    """The registrable domains the detector compares, as integer codes (see namecodes) with what they stand for.

    Every string column is a code, so the joins below compare integers and hold no Python string;
    the strings are looked up only for the findings.
    """

    regs: pd.DataFrame  # one row per (cert, registrable), first SAN order: cert, registrable, order, key, suffix...
    san_cert: np.ndarray  # per SAN: its certificate (row position)
    san_registrable: np.ndarray  # per SAN: its registrable's code
    san: pa.Array  # per SAN: the name as written
    registrables: pa.Array  # code -> registrable domain
    keys: pa.Array  # code -> comparison key (and, after _with_subjects, the O labels too)
    suffixes: pa.Array  # code -> public suffix
    olabels: pd.DataFrame | None = None  # (cert, olabel): the codes of the labels each certificate's O could be


def _registrables(
    certs: pd.DataFrame, min_label_len: int, max_registrables: int, counts: "IssuanceCounts | None" = None,
    classified: Classified | None = None,
) -> _Table | None:
    """The certificates' registrable domains with labels long enough to compare (None if there is none)."""
    sans = explode_names(certs, "san_dns", classified)
    classified, at = positions(classified, sans.values)
    nonempty = np.flatnonzero(pc.greater(pc.binary_length(sans.values), 0).to_numpy(zero_copy_only=False))
    at = at[nonempty]
    order = ranks(sans.cert[nonempty])  # among the certificate's non-empty names
    codes = name_codes(classified)
    key = codes.key[at]
    long_enough = codes.public[at] & (codes.key_length[key] >= min_label_len)
    if not long_enough.any():
        return None
    rows = np.flatnonzero(long_enough)
    at, key = at[rows], key[rows]
    cert = sans.cert[nonempty[rows]]
    registrable, suffix = codes.registrable[at], codes.suffix[at]
    # The first SAN of each (certificate, registrable): certificates ascending, names in their order.
    first = np.flatnonzero(~pd.Series(cert * len(codes.registrables) + registrable).duplicated().to_numpy())
    regs = pd.DataFrame({"cert": cert[first], "registrable": registrable[first], "order": order[rows][first],
                         "key": key[first], "suffix": suffix[first]})
    per_cert = np.bincount(regs["cert"].to_numpy(), minlength=len(certs))
    regs["bundle"] = per_cert[regs["cert"].to_numpy()] > max_registrables
    table = _Table(regs, cert, registrable, sans.values.take(pa.array(nonempty[rows], type=pa.int64())),
                   codes.registrables, codes.keys, codes.suffixes)
    if counts is not None:
        reg_count = _counted(counts[0], regs["registrable"].to_numpy(), codes.registrables)
        key_count = _counted(counts[1], regs["key"].to_numpy(), codes.keys)
    else:
        by_registrable, by_key = _code_counts(table)
        reg_count, key_count = by_registrable[regs["registrable"].to_numpy()], by_key[regs["key"].to_numpy()]
    regs["reg_count"] = reg_count
    regs["key_count"] = key_count
    return table


def _used(codes: np.ndarray, size: int) -> np.ndarray:
    """The distinct codes, ascending (np.unique without its sort)."""
    seen = np.zeros(size, dtype=bool)
    seen[codes] = True
    return np.flatnonzero(seen)


def _counted(counts: pd.Series, codes: np.ndarray, values: pa.Array) -> np.ndarray:
    """counts (indexed by the strings) of each code, as Series.map gives them (NaN where missing)."""
    used = np.unique(codes)
    return counts.reindex(texts(values, used)).to_numpy()[np.searchsorted(used, codes)]


#: (certificates naming each registrable domain, certificates naming each comparison key).
IssuanceCounts = tuple[pd.Series, pd.Series]


def _code_counts(table: _Table) -> tuple[np.ndarray, np.ndarray]:
    """(certificates naming each registrable code, certificates naming each key code)."""
    regs = table.regs
    by_registrable = np.bincount(regs["registrable"].to_numpy(), minlength=len(table.registrables))
    width = max(len(table.keys), 1)
    pairs = pd.unique(regs["cert"].to_numpy() * width + regs["key"].to_numpy())
    return by_registrable, np.bincount(pairs % width, minlength=len(table.keys))


def issuance_counts(certs: pd.DataFrame, *, min_label_len: int = MIN_LABEL) -> IssuanceCounts:
    """The CA-wide counts the ranking compares; they add up over disjoint sets of certificates."""
    empty = pd.Series(dtype="int64")
    if certs is None or certs.empty or "san_dns" not in certs.columns:
        return empty, empty
    table = _registrables(certs.reset_index(drop=True), min_label_len, MAX_REGISTRABLES)
    if table is None:
        return empty, empty
    out = []
    for counts, names, label in zip(_code_counts(table), (table.registrables, table.keys), ("registrable", "key")):
        held = counts > 0
        index = pd.Index(np.asarray(names.to_pylist(), dtype=object)[held], dtype=object, name=label)
        out.append(pd.Series(counts[held], index=index, name="count"))
    return out[0], out[1]


def _sans_of(table: _Table, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
    """All SANs of the wanted (certificate, registrable code) pairs, in certificate order."""
    width = np.int64(max(len(table.registrables), 1))
    packed = table.san_cert * width + table.san_registrable
    at = np.flatnonzero(np.isin(packed, np.array([c * int(width) + r for c, r in wanted], dtype=np.int64)))
    out: dict[tuple[int, int], list[str]] = {}
    for cert, reg, san in zip(table.san_cert[at].tolist(), table.san_registrable[at].tolist(),
                              table.san.take(pa.array(at, type=pa.int64())).to_pylist()):
        out.setdefault((cert, reg), []).append(san)
    return out


_RANK_COLUMNS = ("is_o", "reg_count", "key_count", "not_revoked")


def _less_legitimate(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(strictly less legitimate than the neighbour, tied) comparing _RANK_COLUMNS in order."""
    less = np.zeros(len(rows), dtype=bool)
    tied = np.ones(len(rows), dtype=bool)
    for col in _RANK_COLUMNS:
        mine = rows[col].to_numpy(dtype=np.int64)
        theirs = rows[col + "_n"].to_numpy(dtype=np.int64)
        less |= tied & (mine < theirs)
        tied &= mine == theirs
    return less, tied


def _nearest_witness(left: pd.DataFrame, right: pd.DataFrame, by: list[str], right_by: list[str]) -> pd.DataFrame:
    """For each left row, the right row with the same `by` values nearest in notBefore."""
    if left.empty or right.empty:
        return left.iloc[0:0].assign(cert_n=pd.Series(dtype="int64"), nb_n=pd.Series(dtype="int64"))
    left = left.sort_values("nb", kind="stable")
    right = right.sort_values("nb_n", kind="stable")
    out = pd.merge_asof(
        left, right, left_on="nb", right_on="nb_n", left_by=by, right_by=right_by, direction="nearest"
    )
    out = out.dropna(subset=["cert_n"])
    out["cert_n"] = out["cert_n"].astype("int64")
    return out


@dataclass(frozen=True)
class _Subjects:
    """What the detector reads of each certificate besides its SANs, by row position."""

    raw_o: pa.Array  # the subject O as written ('' for none)
    okey: np.ndarray  # its organisation key's code (okeys)
    okeys: pa.Array  # code -> organisation key, in code point order
    no_okey: int  # the code of '' (no key), -1 if every certificate has one
    olabel_cert: np.ndarray  # with olabels: (cert, label) for the labels the O could be registered as
    olabels: pa.Array
    nb: np.ndarray  # notBefore as int64 nanoseconds (0 when missing)
    not_revoked: np.ndarray  # bool
    sha: pa.Array  # sha256


def _subjects(certs: pd.DataFrame, min_label_len: int, classified: Classified | None = None) -> _Subjects:
    """The subject O, its key and labels, notBefore and revocation of every certificate."""
    n = len(certs)
    # Once per distinct O: a large CA has more of them than any cache holds.
    org = organisations(certs, classified, min_label_len)
    count = np.bincount(org.label_owner, minlength=len(org.key))
    starts = np.cumsum(count) - count
    repeats = count[org.row]
    cert = np.repeat(np.arange(n, dtype=np.int64), repeats)
    olabels = org.labels.take(pa.array(np.repeat(starts[org.row], repeats) + ranks(cert), type=pa.int64()))
    not_before = pd.to_datetime(certs.get("not_before", pd.Series([pd.NaT] * n)), utc=True, errors="coerce")
    revoked = pd.to_datetime(certs.get("revoked_at", pd.Series([pd.NaT] * n)), utc=True, errors="coerce")
    return _Subjects(
        raw_o=subject_o_column(certs, classified.memo if classified is not None else {})[0],
        okey=org.key[org.row],
        okeys=org.keys,
        no_okey=org.no_key,
        olabel_cert=cert,
        olabels=olabels,
        nb=not_before.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy(),
        not_revoked=revoked.isna().to_numpy(),
        sha=arrow_strings(certs["sha256"]),
    )


def _with_subjects(table: _Table, subjects: _Subjects) -> _Table:
    """The table with its certificates' okey, nb and not_revoked, and is_o: the label is one of the O's.

    Keys and O labels are coded together from here on (table.keys), so a key and a label compare as codes.
    """
    regs = table.regs
    cert = regs["cert"].to_numpy()
    regs["okey"] = subjects.okey[cert]
    regs["nb"] = subjects.nb[cert]
    regs["not_revoked"] = subjects.not_revoked[cert]
    used = _used(regs["key"].to_numpy(), len(table.keys))
    codes, labels = codes_of(pa.concat_arrays([table.keys.take(pa.array(used)), subjects.olabels]))
    key = codes[: len(used)][np.searchsorted(used, regs["key"].to_numpy())]
    olabel = codes[len(used):]
    regs["key"] = key
    width = max(len(labels), 1)
    # A hash lookup: np.isin would sort both sides.
    regs["is_o"] = pd.Series(cert.astype(np.int64) * width + key).isin(subjects.olabel_cert * width + olabel).to_numpy()
    table.keys = labels
    table.olabels = pd.DataFrame({"cert": subjects.olabel_cert, "olabel": olabel})
    return table


def _coded_pairs(pairs: pd.DataFrame, values: pa.Array) -> pd.DataFrame:
    """label_pairs' or suffix_pairs' (x, y) as the codes of values."""
    def code(column: str) -> np.ndarray:
        at = pc.index_in(pa.array(pairs[column].tolist(), type=pa.string()), value_set=values)
        return at.to_numpy(zero_copy_only=False).astype(np.int64)

    return pd.DataFrame({"x": code("x"), "y": code("y")})


def _subject_o_candidates(regs: pd.DataFrame, olabels: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """(a) SAN labels one typo from a label of their own certificate's subject O."""
    from_o = regs[~regs["is_o"]][["cert", "registrable", "key"]].merge(olabels, on="cert")
    from_o = from_o.merge(labels, left_on=["key", "olabel"], right_on=["x", "y"])
    return from_o.assign(source="subject_o", scope="label", neighbour=from_o["olabel"])


_SIDE_COLUMNS = ["cert", "registrable", "order", "nb", "okey", "bundle", *_RANK_COLUMNS]


def _suspect_sides(regs: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every held registrable with each of its typo pairs, every held registrable as a neighbour: columns _n)."""
    side = regs[_SIDE_COLUMNS]
    return side.merge(pairs, on="registrable"), side.add_suffix("_n")


def _same_cert_candidates(mine: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """(b) SANs one typo from another SAN of the same certificate, the less legitimate of the two."""
    same = mine[~mine["bundle"]].merge(
        theirs, left_on=["cert", "registrable_n"], right_on=["cert_n", "registrable_n"]
    )
    less, tied = _less_legitimate(same)
    # On a full tie the later SAN is the suspect: the first is usually the intended name.
    same = same[less | (tied & (same["order"].to_numpy() > same["order_n"].to_numpy()))]
    return same.assign(source="same_cert", neighbour=same["registrable_n"])


def _holders(regs: pd.DataFrame) -> pd.DataFrame:
    """Every (certificate, registrable) as a possible witness: columns cert_n, registrable_n, nb_n, okey_n."""
    return regs[["cert", "registrable", "nb", "okey"]].add_suffix("_n")


#: How a witness is the same subscriber's, in the order of the sentences that say so ("organisation ..." first).
_BY_ORGANISATION, _BY_SHARED_DOMAIN = 0, 1


def _organisation_witnesses(mine: pd.DataFrame, holders: pd.DataFrame, no_okey: int) -> pd.DataFrame:
    """For each suspect pair, the nearest certificate of the same organisation holding the neighbour."""
    by_org = _nearest_witness(
        mine[mine["okey"] != no_okey], holders[holders["okey_n"] != no_okey],
        ["registrable_n", "okey"], ["registrable_n", "okey_n"],
    )
    return by_org.assign(link_kind=_BY_ORGANISATION, link_value=by_org["okey"])


def _shared_domain_witnesses(mine: pd.DataFrame, holders: pd.DataFrame, regs: pd.DataFrame) -> pd.DataFrame:
    """For each suspect pair, the nearest certificate holding the neighbour and a third domain of the suspect's.

    Bundles take no part: a domain they share says nothing about one subscriber.
    """
    linkable = regs[~regs["bundle"]][["cert", "registrable"]]
    shared = mine[~mine["bundle"]].merge(linkable.rename(columns={"registrable": "shared"}), on="cert")
    shared = shared[(shared["shared"] != shared["registrable"]) & (shared["shared"] != shared["registrable_n"])]
    holders_shared = holders.merge(linkable.rename(columns={"cert": "cert_n", "registrable": "shared"}), on="cert_n")
    holders_shared = holders_shared[holders_shared["shared"] != holders_shared["registrable_n"]]
    by_domain = _nearest_witness(shared, holders_shared, ["registrable_n", "shared"], ["registrable_n", "shared"])
    return by_domain.assign(link_kind=_BY_SHARED_DOMAIN, link_value=by_domain["shared"])


def _other_cert_candidates(witnesses: pd.DataFrame, regs: pd.DataFrame) -> pd.DataFrame:
    """(c) Of the witnessed pairs, the nearest witness of each, kept where the suspect is not the more legitimate."""
    other = witnesses[witnesses["cert"] != witnesses["cert_n"]]
    if other.empty:
        return other
    other = other.assign(gap=(other["nb"] - other["nb_n"]).abs())
    # (link_kind, link_rank) sorts as the link's sentence does ("organisation ..." before "shared domain ...").
    other = other.sort_values(["gap", "link_kind", "link_rank"]).drop_duplicates(
        ["cert", "registrable", "registrable_n"])
    other = other.drop(columns=[c for c in other.columns if c.endswith("_n") and c != "registrable_n"
                                and c not in ("cert_n", "nb_n")])
    ranks = regs[["cert", "registrable", *_RANK_COLUMNS]].add_suffix("_n")
    other = other.merge(ranks, on=["cert_n", "registrable_n"])
    less, tied = _less_legitimate(other)
    other = other[less | tied]  # across certificates a full tie is reported both ways
    return other.assign(source="other_cert", neighbour=other["registrable_n"])


def _link_ranks(witnesses: pd.DataFrame, table: _Table, subjects: _Subjects) -> np.ndarray:
    """Each witness's link_value ranked by its text among the witnesses of its link_kind."""
    kind, value = witnesses["link_kind"].to_numpy(), witnesses["link_value"].to_numpy()
    rank = np.zeros(len(witnesses), dtype=np.int64)
    for link, strings in ((_BY_ORGANISATION, subjects.okeys), (_BY_SHARED_DOMAIN, table.registrables)):
        at = np.flatnonzero(kind == link)
        if len(at):
            rank[at] = text_order(value[at], strings)
    return rank


def _candidates(table: _Table, subjects: _Subjects, min_label_len: int, classified: Classified | None = None
                ) -> list[pd.DataFrame]:
    """Every piece of evidence that a held registrable is a typo: (a), (b) and (c) of the module docstring."""
    regs = table.regs
    labels = _coded_pairs(label_pairs((), min_label_len, pairs=key_pairs(classified, table.keys, min_label_len)),
                          table.keys)
    found = [_subject_o_candidates(regs, table.olabels, labels)]
    held = texts(table.suffixes, _used(regs["suffix"].to_numpy(), len(table.suffixes)))
    suffixes = _coded_pairs(suffix_pairs(held), table.suffixes)
    pairs = typo_pairs(regs, labels.astype(object), suffixes.astype(object))
    if not pairs.empty:
        pairs = pairs.astype({"registrable": np.int64, "registrable_n": np.int64})
        mine, theirs = _suspect_sides(regs, pairs[["registrable", "registrable_n", "scope"]])
        holders = _holders(regs)
        witnesses = pd.concat(
            [_organisation_witnesses(mine, holders, subjects.no_okey), _shared_domain_witnesses(mine, holders, regs)],
            ignore_index=True,
        )
        witnesses["link_rank"] = _link_ranks(witnesses, table, subjects)
        found += [_same_cert_candidates(mine, theirs), _other_cert_candidates(witnesses, regs)]
    return [c for c in found if not c.empty]


def detect_typo_neighbours(
    certs: pd.DataFrame, *, min_label_len: int = MIN_LABEL, max_registrables: int = MAX_REGISTRABLES,
    counts: IssuanceCounts | None = None, classified: Classified | None = None,
) -> pd.DataFrame:
    """Findings "typo_neighbour" for SANs one edit away from the subject O, another SAN or the subscriber's names.

    `counts` (issuance_counts of every certificate of the CA) replaces the counts over `certs` when
    `certs` is only a part of the issuance, e.g. one partition of whole subscribers. `classified`
    (domains.classify_all) saves classifying each name again.
    """
    if certs is None or certs.empty or "san_dns" not in certs.columns:
        return empty_frame(FINDING_COLUMNS)
    certs = certs.reset_index(drop=True)
    table = _registrables(certs, min_label_len, max_registrables, counts, classified)
    if table is None:
        return empty_frame(FINDING_COLUMNS)
    subjects = _subjects(certs, min_label_len, classified)
    candidates = _candidates(_with_subjects(table, subjects), subjects, min_label_len, classified)
    if not candidates:
        return empty_frame(FINDING_COLUMNS)
    return _findings(candidates, table, subjects)


#: Who shows that the suspect and its neighbour belong to one subscriber: (certificate, registrable, link).
Witness = tuple[int, str, str]


def _best_evidence(candidates: list[pd.DataFrame], table: _Table
                   ) -> tuple[list[Any], dict[tuple[int, int], tuple[int, int, tuple]]]:
    """(the best candidate per (certificate, suspect registrable), its nearest other-certificate witness), as codes.

    Of equal priority the neighbour first in code point order wins.
    """
    cols = ["cert", "registrable", "source", "scope", "neighbour", "cert_n", "link_kind", "link_value"]
    found = pd.concat([c.reindex(columns=cols) for c in candidates], ignore_index=True).astype(
        {"source": object, "scope": object})
    found["priority"] = found["source"].map({s: i for i, s in enumerate(SOURCES)})
    # An O label's code and a registrable's are of two tables: each source's neighbours ranked in their own.
    neighbour = found["neighbour"].to_numpy(dtype=np.int64)
    rank = np.zeros(len(found), dtype=np.int64)
    from_o = (found["source"] == "subject_o").to_numpy()
    for rows, strings in ((np.flatnonzero(from_o), table.keys), (np.flatnonzero(~from_o), table.registrables)):
        if len(rows):
            rank[rows] = text_order(neighbour[rows], strings)
    found["neighbour_rank"] = rank
    found = found.sort_values(["cert", "registrable", "priority", "neighbour_rank"], kind="stable")
    witnesses = {
        (int(r.cert), int(r.registrable)): (int(r.cert_n), int(r.neighbour), (int(r.link_kind), int(r.link_value)))
        for r in found[found["source"] == "other_cert"].drop_duplicates(["cert", "registrable"]).itertuples()
    }
    return list(found.drop_duplicates(["cert", "registrable"]).itertuples(index=False)), witnesses


def _names_needed(best: list[Any], witnesses: dict[tuple[int, int], tuple[int, int, tuple]]) -> set[tuple[int, int]]:
    """The (certificate, registrable code) pairs whose SANs the evidence quotes."""
    wanted = {(int(r.cert), int(r.registrable)) for r in best}
    wanted |= {(int(r.cert), int(r.neighbour)) for r in best if r.source == "same_cert"}
    return wanted | {(c, n) for c, n, _ in witnesses.values()}


@dataclass(frozen=True)
class _Best:
    """The best evidence on one (certificate, suspect registrable), its names as text."""

    cert: int
    registrable: str
    source: str
    scope: str
    neighbour: str  # an O label (source subject_o) or a registrable domain


@dataclass(frozen=True)
class _Domains:
    """Per registrable domain: its comparison key, public suffix and the CA's certificates naming it."""

    key: dict[str, str]
    suffix: dict[str, str]
    count: dict[str, int]

    @classmethod
    def of(cls, table: _Table, codes: list[int]) -> _Domains:
        """The facts of these registrable domains (codes) of the table."""
        regs = table.regs
        registrable = regs["registrable"].to_numpy()
        wanted = np.flatnonzero(np.isin(registrable, np.asarray(codes, dtype=np.int64)))
        first = wanted[~pd.Series(registrable[wanted]).duplicated().to_numpy()]  # each code's first row
        row_of = dict(zip(registrable[first].tolist(), first.tolist()))
        rows = np.array([row_of[c] for c in codes], dtype=np.int64)
        names = texts(table.registrables, codes)
        key = texts(table.keys, regs["key"].to_numpy()[rows])
        suffix = texts(table.suffixes, regs["suffix"].to_numpy()[rows])
        count = regs["reg_count"].to_numpy()[rows].tolist()
        return cls(dict(zip(names, key)), dict(zip(names, suffix)), dict(zip(names, count)))


def _pair_edit(row: Any, domains: _Domains) -> tuple[str, str, Edit, str] | None:
    """(suspect as shown, neighbour as shown, the edit, where it is) for a candidate; None if unexplained."""
    if row.scope == "suffix":
        suffix, suffix_n = domains.suffix[row.registrable], domains.suffix[row.neighbour]
        edit = edit_between(suffix, suffix_n)
        shown, shown_n = row.registrable, row.neighbour
        where = f" in the public suffix (.{suffix} instead of .{suffix_n})"
    else:
        shown = domains.key[row.registrable]
        shown_n = row.neighbour if row.source == "subject_o" else domains.key[row.neighbour]
        edit = edit_between(shown, shown_n)
        where = ""
    return None if edit is None else (shown, shown_n, edit, where)


def _neighbour_clause(row: Any, cert: int, shown_n: str, raw_o: dict[int, str],
                      names: dict[tuple[int, str], list[str]]) -> tuple[str, str]:
    """(the neighbour's name, the clause saying where it is) for a subject O or same-certificate neighbour."""
    if row.source == "subject_o":
        return raw_o[cert], f"'{shown_n}' is the subject O '{_clip(raw_o[cert])}'"
    if row.source == "same_cert":
        name = names[(cert, row.neighbour)][0]
        return name, f"'{row.neighbour}' is also on this certificate ({name})"
    return "", ""


def _witness_clause(witness: Witness, names: dict[tuple[int, str], list[str]], sha: dict[int, str]) -> tuple[str, str]:
    """(the witness's name, the clause naming its certificate and how it is the same subscriber's)."""
    w_cert, w_reg, link = witness
    w_name = names[(w_cert, w_reg)][0]
    related = str(sha[w_cert])
    return w_name, f"'{w_reg}' ({w_name}) is on certificate {related[:16]}… of the same subscriber ({_clip(link)})"


def _count_clauses(row: Any, count: int, count_n: int | None) -> tuple[list[str], str]:
    """(clauses on how often the CA certified the two names, the tail saying an established name weighs less)."""
    clauses = []
    if count_n is not None:
        clauses.append(f"{row.neighbour} is named in {count_n} of the CA's certificates, {row.registrable} in {count}")
    if count < ESTABLISHED_CERTIFICATES:
        return clauses, ""
    if count_n is None:
        clauses.append(f"{row.registrable} is named in {count} of the CA's certificates")
    return clauses, (": a name certified this often is likely one the subscriber really uses "
                     "(a second site of one company), so it weighs less")


def _finding(row: Any, domains: _Domains, names: dict[tuple[int, str], list[str]],
             witness: Witness | None, raw_o: dict[int, str], sha: dict[int, str]) -> Finding | None:
    """The finding for one (certificate, suspect registrable) from its best evidence; None if unexplained."""
    pair = _pair_edit(row, domains)
    if pair is None:  # cannot happen for verified pairs; never report an unexplained pair
        return None
    shown, shown_n, edit, where = pair
    cert = int(row.cert)
    mine = names[(cert, row.registrable)]
    neighbour_name, clause = _neighbour_clause(row, cert, shown_n, raw_o, names)
    clauses = [f"{mine[0]}: '{shown}' is '{shown_n}' with {edit.detail}{where}"] + ([clause] if clause else [])
    related, link = "", ""
    if witness is not None:
        w_name, clause = _witness_clause(witness, names, sha)
        related, link = str(sha[witness[0]]), witness[2]
        clauses.append(clause)
        if row.source == "other_cert":
            neighbour_name = w_name
    count = int(domains.count[row.registrable])
    count_n = None if row.source == "subject_o" else int(domains.count[row.neighbour])
    more, tail = _count_clauses(row, count, count_n)
    detail = {
        "neighbour": row.neighbour,
        "neighbour_name": neighbour_name,
        "neighbour_source": row.source,
        "edit": edit.kind,
        "edit_detail": edit.detail,
        "position": edit.position,
        "scope": row.scope,
        "suffix": domains.suffix[row.registrable],
        "neighbour_suffix": domains.suffix.get(row.neighbour, "") if row.source != "subject_o" else "",
        "established": bool(tail),
        "suspect_label": shown,
        "neighbour_label": shown_n,
        "sans": mine,
        "suspect_certificates": count,
        "neighbour_certificates": count_n,
        "related_link": link,
    }
    return Finding(sha256=str(sha[cert]), code=CODE, evidence="; ".join(clauses + more) + tail + ".",
                   name=mine[0], related_sha256=related, detail=as_json(detail))


def _findings(candidates: list[pd.DataFrame], table: _Table, subjects: _Subjects) -> pd.DataFrame:
    """One finding per (certificate, suspect registrable), from its best evidence."""
    best, coded_witnesses = _best_evidence(candidates, table)
    coded_names = _sans_of(table, _names_needed(best, coded_witnesses))
    codes = sorted({int(r.registrable) for r in best} | {int(r.neighbour) for r in best if r.source != "subject_o"}
                   | {n for _, n, _ in coded_witnesses.values()} | {r for _, r in coded_names}
                   | {v for _, _, (kind, v) in coded_witnesses.values() if kind == _BY_SHARED_DOMAIN})
    text = dict(zip(codes, texts(table.registrables, codes)))
    olabels = sorted({int(r.neighbour) for r in best if r.source == "subject_o"})
    olabel = dict(zip(olabels, texts(table.keys, olabels)))
    okeys = sorted({v for _, _, (kind, v) in coded_witnesses.values() if kind == _BY_ORGANISATION})
    okey = dict(zip(okeys, texts(subjects.okeys, okeys)))
    rows = [_Best(int(r.cert), text[int(r.registrable)], r.source, r.scope,
                  olabel[int(r.neighbour)] if r.source == "subject_o" else text[int(r.neighbour)]) for r in best]
    witnesses = {
        (c, text[r]): (c_n, text[n], f"organisation {okey[v]}" if kind == _BY_ORGANISATION else f"shared domain {text[v]}")
        for (c, r), (c_n, n, (kind, v)) in coded_witnesses.items()
    }
    names = {(c, text[r]): sans for (c, r), sans in coded_names.items()}
    certs = sorted({r.cert for r in rows} | {w[0] for w in witnesses.values()})
    sha = dict(zip(certs, texts(subjects.sha, certs)))
    domains = _Domains.of(table, sorted({int(r.registrable) for r in best}
                                        | {int(r.neighbour) for r in best if r.source != "subject_o"}))
    raw_o = dict(zip(certs, texts(subjects.raw_o, certs)))
    out = [_finding(row, domains, names, witnesses.get((row.cert, row.registrable)), raw_o, sha)
           for row in rows]
    return findings_frame([f for f in out if f is not None]).sort_values(["sha256", "name"], ignore_index=True)
