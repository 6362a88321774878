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
from scanner.enrich.subscribers import (
    MAX_REGISTRABLES,
    MIN_LABEL,
    comparison_keys,
    label_pairs,
    organisation_facts,
    suffix_pairs,
    typo_pairs,
)
from scanner.enrich.typo_index import Edit, edit_between
from scanner.parse.domains import PUBLIC, Classified, explode_names, ranks, with_names

CODE = "typo_neighbour"
SOURCES = ("subject_o", "same_cert", "other_cert")

#: A suspect name certified this many times is one the subscriber has had validated again and again
#: (a second country site, a sister brand), not a one-off slip: still reported, weighed less.
ESTABLISHED_CERTIFICATES = 3


def _clip(text: object, limit: int = 80) -> str:
    """Attacker-controlled text shortened for a one-line evidence sentence."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _registrables(
    certs: pd.DataFrame, min_label_len: int, max_registrables: int, counts: "IssuanceCounts | None" = None,
    classified: Classified | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per certificate and registrable domain, one row per SAN) for labels long enough to compare."""
    sans = explode_names(certs, "san_dns", classified)
    sans = sans.take(pc.greater(pc.binary_length(sans.values), 0).to_numpy(zero_copy_only=False))
    order = ranks(sans.cert)  # among the certificate's non-empty names
    classified, at = with_names(classified, sans.values)
    public = pc.equal(classified.take("kind", at), PUBLIC).to_numpy(zero_copy_only=False)
    at = at[public]
    labels = classified.take("label", at)
    distinct = pc.unique(labels)
    keys = comparison_keys(distinct).take(pc.index_in(labels, value_set=distinct))
    long_enough = pc.greater_equal(pc.utf8_length(keys), min_label_len).to_numpy(zero_copy_only=False)
    if not long_enough.any():
        return pd.DataFrame(), pd.DataFrame()
    rows = np.flatnonzero(public)[long_enough]
    at, keep = at[long_enough], pa.array(long_enough)

    def text(values: pa.Array) -> pd.Series:
        # object, as the merges below expect: a str column would make every merge and map slower
        return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)

    frame = pd.DataFrame({
        "cert": sans.cert[rows], "san": text(sans.values.take(pa.array(rows))), "order": order[rows],
        "registrable": text(classified.take("registrable", at)), "label": text(labels.filter(keep)),
        "suffix": text(classified.take("suffix", at)), "key": text(keys.filter(keep)),
    })
    regs = frame.drop_duplicates(["cert", "registrable"]).reset_index(drop=True)
    per_cert = regs.groupby("cert")["registrable"].transform("size")
    regs["bundle"] = (per_cert > max_registrables).to_numpy()
    by_registrable, by_key = counts if counts is not None else _counts(regs)
    regs["reg_count"] = regs["registrable"].map(by_registrable).to_numpy()
    regs["key_count"] = regs["key"].map(by_key).to_numpy()
    return regs, frame[["cert", "registrable", "san"]]


#: (certificates naming each registrable domain, certificates naming each comparison key).
IssuanceCounts = tuple[pd.Series, pd.Series]


def _counts(regs: pd.DataFrame) -> IssuanceCounts:
    return regs["registrable"].value_counts(), regs.drop_duplicates(["cert", "key"])["key"].value_counts()


def issuance_counts(certs: pd.DataFrame, *, min_label_len: int = MIN_LABEL) -> IssuanceCounts:
    """The CA-wide counts the ranking compares; they add up over disjoint sets of certificates."""
    empty = pd.Series(dtype="int64")
    if certs is None or certs.empty or "san_dns" not in certs.columns:
        return empty, empty
    regs, _ = _registrables(certs.reset_index(drop=True), min_label_len, MAX_REGISTRABLES)
    return _counts(regs) if not regs.empty else (empty, empty)


def _sans_of(sans: pd.DataFrame, wanted: set[tuple[int, str]]) -> dict[tuple[int, str], list[str]]:
    """All SANs of the wanted (certificate, registrable) pairs, in certificate order."""
    sans = sans[sans["cert"].isin({c for c, _ in wanted})]
    out: dict[tuple[int, str], list[str]] = {}
    for cert, reg, san in zip(sans["cert"].tolist(), sans["registrable"].tolist(), sans["san"].tolist()):
        if (cert, reg) in wanted:
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
    for col in by:  # merge_asof wants identical key dtypes on both sides
        left[col] = left[col].astype(object)
    for col in right_by:
        right[col] = right[col].astype(object)
    out = pd.merge_asof(
        left, right, left_on="nb", right_on="nb_n", left_by=by, right_by=right_by, direction="nearest"
    )
    out = out.dropna(subset=["cert_n"])
    out["cert_n"] = out["cert_n"].astype("int64")
    return out


@dataclass(frozen=True)
class _Subjects:
    """What the detector reads of each certificate besides its SANs, by row position."""

    raw_o: list[str]  # the subject O as written ('' for none)
    okey: np.ndarray  # its organisation key
    olabels: pd.DataFrame  # (cert, olabel): the labels the O could be registered as
    nb: np.ndarray  # notBefore as int64 nanoseconds (0 when missing)
    not_revoked: np.ndarray  # bool
    sha: np.ndarray  # sha256


def _subjects(certs: pd.DataFrame, min_label_len: int, classified: Classified | None = None) -> _Subjects:
    """The subject O, its key and labels, notBefore and revocation of every certificate."""
    n = len(certs)
    subject_o = certs["subject_o"] if "subject_o" in certs.columns else pd.Series([None] * n)
    raw_o = [o if isinstance(o, str) else "" for o in subject_o.tolist()]
    # Once per distinct O: a large CA has more of them than any cache holds.
    memo = classified.memo.setdefault(("organisation", min_label_len), {}) if classified is not None else None
    codes, per_o, keys = organisation_facts(raw_o, memo, min_label_len=min_label_len)
    okey = keys[codes] if n else np.array([], dtype=object)
    count = np.array([len(labels) for labels in per_o], dtype=np.int64)
    flat = np.array([label for labels in per_o for label in labels], dtype=object)
    starts = np.cumsum(count) - count
    repeats = count[codes] if n else np.zeros(0, np.int64)
    cert = np.repeat(np.arange(n, dtype=np.int64), repeats)
    olabels = pd.DataFrame({"cert": cert, "olabel": pd.Series(
        flat[np.repeat(starts[codes], repeats) + ranks(cert)] if len(cert) else [], dtype=object)})
    not_before = pd.to_datetime(certs.get("not_before", pd.Series([pd.NaT] * n)), utc=True, errors="coerce")
    revoked = pd.to_datetime(certs.get("revoked_at", pd.Series([pd.NaT] * n)), utc=True, errors="coerce")
    return _Subjects(
        raw_o=raw_o,
        okey=okey,
        olabels=olabels,
        nb=not_before.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy(),
        not_revoked=revoked.isna().to_numpy(),
        sha=certs["sha256"].astype(object).to_numpy(),
    )


def _with_subjects(regs: pd.DataFrame, subjects: _Subjects) -> pd.DataFrame:
    """regs with its certificate's okey, nb and not_revoked, and is_o: the label is one of the O's."""
    cert = regs["cert"].to_numpy()
    regs["okey"] = subjects.okey[cert]
    regs["nb"] = subjects.nb[cert]
    regs["not_revoked"] = subjects.not_revoked[cert]
    # (certificate, label) pairs as one int64 each, labels coded over both sides at once.
    codes, uniques = pd.factorize(np.concatenate([regs["key"].to_numpy(dtype=object),
                                                  subjects.olabels["olabel"].to_numpy(dtype=object)]))
    width = max(len(uniques), 1)
    mine = cert.astype(np.int64) * width + codes[: len(regs)]
    own = subjects.olabels["cert"].to_numpy(np.int64) * width + codes[len(regs):]
    regs["is_o"] = np.isin(mine, own)
    return regs


def _subject_o_candidates(regs: pd.DataFrame, olabels: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """(a) SAN labels one typo from a label of their own certificate's subject O."""
    from_o = regs[~regs["is_o"]][["cert", "registrable", "key"]].merge(olabels, on="cert")
    from_o = from_o.astype({"key": object, "olabel": object}).merge(
        labels, left_on=["key", "olabel"], right_on=["x", "y"]
    )
    return from_o.assign(source="subject_o", scope="label", neighbour=from_o["olabel"])


_SIDE_COLUMNS = ["cert", "registrable", "order", "nb", "okey", "bundle", *_RANK_COLUMNS]


def _suspect_sides(regs: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every held registrable with each of its typo pairs, every held registrable as a neighbour: columns _n)."""
    side = regs[_SIDE_COLUMNS].astype({"registrable": object})
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
    return regs[["cert", "registrable", "nb", "okey"]].astype({"registrable": object}).add_suffix("_n")


def _organisation_witnesses(mine: pd.DataFrame, holders: pd.DataFrame) -> pd.DataFrame:
    """For each suspect pair, the nearest certificate of the same organisation holding the neighbour."""
    by_org = _nearest_witness(
        mine[mine["okey"] != ""], holders[holders["okey_n"] != ""],
        ["registrable_n", "okey"], ["registrable_n", "okey_n"],
    )
    by_org["link"] = "organisation " + by_org["okey"].astype(str)
    return by_org


def _shared_domain_witnesses(mine: pd.DataFrame, holders: pd.DataFrame, regs: pd.DataFrame) -> pd.DataFrame:
    """For each suspect pair, the nearest certificate holding the neighbour and a third domain of the suspect's.

    Bundles take no part: a domain they share says nothing about one subscriber.
    """
    linkable = regs[~regs["bundle"]][["cert", "registrable"]].astype({"registrable": object})
    shared = mine[~mine["bundle"]].merge(linkable.rename(columns={"registrable": "shared"}), on="cert")
    shared = shared[(shared["shared"] != shared["registrable"]) & (shared["shared"] != shared["registrable_n"])]
    holders_shared = holders.merge(linkable.rename(columns={"cert": "cert_n", "registrable": "shared"}), on="cert_n")
    holders_shared = holders_shared[holders_shared["shared"] != holders_shared["registrable_n"]]
    by_domain = _nearest_witness(shared, holders_shared, ["registrable_n", "shared"], ["registrable_n", "shared"])
    by_domain["link"] = "shared domain " + by_domain["shared"].astype(str)
    return by_domain


def _other_cert_candidates(witnesses: pd.DataFrame, regs: pd.DataFrame) -> pd.DataFrame:
    """(c) Of the witnessed pairs, the nearest witness of each, kept where the suspect is not the more legitimate."""
    other = witnesses[witnesses["cert"] != witnesses["cert_n"]]
    if other.empty:
        return other
    other = other.assign(gap=(other["nb"] - other["nb_n"]).abs())
    other = other.sort_values(["gap", "link"]).drop_duplicates(["cert", "registrable", "registrable_n"])
    other = other.drop(columns=[c for c in other.columns if c.endswith("_n") and c != "registrable_n"
                                and c not in ("cert_n", "nb_n")])
    ranks = regs[["cert", "registrable", *_RANK_COLUMNS]].astype({"registrable": object}).add_suffix("_n")
    other = other.merge(ranks, on=["cert_n", "registrable_n"])
    less, tied = _less_legitimate(other)
    other = other[less | tied]  # across certificates a full tie is reported both ways
    return other.assign(source="other_cert", neighbour=other["registrable_n"])


def _candidates(regs: pd.DataFrame, subjects: _Subjects, min_label_len: int) -> list[pd.DataFrame]:
    """Every piece of evidence that a held registrable is a typo: (a), (b) and (c) of the module docstring."""
    labels = label_pairs(set(regs["key"]) | set(subjects.olabels["olabel"]), min_label_len)
    found = [_subject_o_candidates(regs, subjects.olabels, labels)]
    pairs = typo_pairs(regs, labels, suffix_pairs(set(regs["suffix"])))
    if not pairs.empty:
        mine, theirs = _suspect_sides(regs, pairs[["registrable", "registrable_n", "scope"]])
        holders = _holders(regs)
        witnesses = pd.concat(
            [_organisation_witnesses(mine, holders), _shared_domain_witnesses(mine, holders, regs)],
            ignore_index=True,
        )
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
    regs, sans = _registrables(certs, min_label_len, max_registrables, counts, classified)
    if regs.empty:
        return empty_frame(FINDING_COLUMNS)
    subjects = _subjects(certs, min_label_len, classified)
    candidates = _candidates(_with_subjects(regs, subjects), subjects, min_label_len)
    if not candidates:
        return empty_frame(FINDING_COLUMNS)
    return _findings(candidates, regs, sans, subjects.raw_o, subjects.sha)


#: Who shows that the suspect and its neighbour belong to one subscriber: (certificate, registrable, link).
Witness = tuple[int, str, str]


def _best_evidence(candidates: list[pd.DataFrame]) -> tuple[list[Any], dict[tuple[int, str], Witness]]:
    """(the best candidate per (certificate, suspect registrable), its nearest other-certificate witness)."""
    cols = ["cert", "registrable", "source", "scope", "neighbour", "cert_n", "link"]
    found = pd.concat([c.reindex(columns=cols) for c in candidates], ignore_index=True).astype(
        {"registrable": object, "source": object, "scope": object, "neighbour": object, "link": object}
    )
    found["priority"] = found["source"].map({s: i for i, s in enumerate(SOURCES)})
    found = found.sort_values(["cert", "registrable", "priority", "neighbour"], kind="stable")
    witnesses = {
        (int(r.cert), r.registrable): (int(r.cert_n), r.neighbour, str(r.link))
        for r in found[found["source"] == "other_cert"].drop_duplicates(["cert", "registrable"]).itertuples()
    }
    return list(found.drop_duplicates(["cert", "registrable"]).itertuples(index=False)), witnesses


def _names_needed(best: list[Any], witnesses: dict[tuple[int, str], Witness]) -> set[tuple[int, str]]:
    """The (certificate, registrable) pairs whose SANs the evidence quotes."""
    wanted = {(int(r.cert), r.registrable) for r in best}
    wanted |= {(int(r.cert), r.neighbour) for r in best if r.source == "same_cert"}
    return wanted | {(c, n) for c, n, _ in witnesses.values()}


@dataclass(frozen=True)
class _Domains:
    """Per registrable domain: its comparison key, public suffix and the CA's certificates naming it."""

    key: dict[str, str]
    suffix: dict[str, str]
    count: dict[str, int]

    @classmethod
    def of(cls, regs: pd.DataFrame) -> _Domains:
        """The facts of every registrable domain in regs."""
        first = regs.drop_duplicates("registrable")
        names = first["registrable"].tolist()
        return cls(dict(zip(names, first["key"].tolist())), dict(zip(names, first["suffix"].tolist())),
                   dict(zip(names, first["reg_count"].tolist())))


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


def _neighbour_clause(row: Any, cert: int, shown_n: str, raw_o: list[str],
                      names: dict[tuple[int, str], list[str]]) -> tuple[str, str]:
    """(the neighbour's name, the clause saying where it is) for a subject O or same-certificate neighbour."""
    if row.source == "subject_o":
        return raw_o[cert], f"'{shown_n}' is the subject O '{_clip(raw_o[cert])}'"
    if row.source == "same_cert":
        name = names[(cert, row.neighbour)][0]
        return name, f"'{row.neighbour}' is also on this certificate ({name})"
    return "", ""


def _witness_clause(witness: Witness, names: dict[tuple[int, str], list[str]], sha: np.ndarray) -> tuple[str, str]:
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
             witness: Witness | None, raw_o: list[str], sha: np.ndarray) -> Finding | None:
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


def _findings(
    candidates: list[pd.DataFrame], regs: pd.DataFrame, sans: pd.DataFrame, raw_o: list[str], sha: np.ndarray
) -> pd.DataFrame:
    """One finding per (certificate, suspect registrable), from its best evidence."""
    best, witnesses = _best_evidence(candidates)
    names = _sans_of(sans, _names_needed(best, witnesses))
    domains = _Domains.of(regs)
    out = [_finding(row, domains, names, witnesses.get((int(row.cert), row.registrable)), raw_o, sha) for row in best]
    return findings_frame([f for f in out if f is not None]).sort_values(["sha256", "name"], ignore_index=True)
