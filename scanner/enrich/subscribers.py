"""Same subscriber: the one definition the detectors, the Dask engine and the plots share.

Two primitives say what ties certificates to one subscriber:

* the organisation key of a subject O (`organisation_keys`: the O normalised, "CUALTIS S.L.U" and
  "Cualtis SLU" -> "cualtis");
* the typo link between two registrable domains (`domain_typo`, vectorised as `typo_links`): their
  labels' comparison keys one edit apart under one public suffix (``cuatis.net``/``cualtis.net``),
  or one comparison key under suffixes one edit apart (``cualtis.ne``/``cualtis.net``). A
  comparison key is the label as a person reads it: U-label, case-folded, hyphens removed.

Each use derives what it needs from those two, so none can disagree with another:

* revoke-and-reissue pairing (detect.revocation) links two certificates holding names with a typo
  link, the same organisation key, or a registrable domain in common;
* the typo detector (detect.typo) takes witnesses of the same subscriber by organisation key or a
  shared registrable domain; the pairs it flags (`typo_pairs`) are wider than the typo link (a
  label edit under any suffix), because a flagged pair is evidence, not a link;
* the Dask engine's partitions (`link_subscribers`) are the connected components of the graph of
  all those links, so they hold every pair any detector can compare (a superset, by construction);
* a plot's row label (`subscriber_key`) is the organisation key, else the subject CN's
  registrable domain: both are nodes of that graph, so certificates with one label are in one
  component (bundles aside, below).

A certificate naming more registrable domains than MAX_REGISTRABLES (shared hosting, a CDN) is a
bundle of different subscribers: its names are neither compared with each other by the typo
detector nor used to link it into a component, which it would otherwise glue to every customer.
It is linked by its organisation only; its name links are returned apart
(`Subscribers.bundle_pairs`) for a caller that must still show it to the few certificates it can be
paired with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import idna
import numpy as np
import pandas as pd

from scanner.enrich.organisation import fold, keys_and_labels, normalise_organisation
from scanner.enrich.typo_index import Edit, edit_between, one_edit_pairs
from scanner.parse.domains import PUBLIC, DomainInfo, classify_name

if TYPE_CHECKING:
    import pyarrow as pa

#: A certificate naming more registrable domains than this is a bundle (see the module docstring).
MAX_REGISTRABLES = 20

#: Comparison keys shorter than this are never a label typo: a short label is one edit from too much.
MIN_LABEL = 4


@lru_cache(maxsize=262_144)  # pairwise comparisons ask for the same labels again and again
def comparison_key(label: str) -> str:
    """The form of a registrable label that is compared: U-label, folded, hyphens removed."""
    text = label
    if label.startswith("xn--"):
        try:
            text = idna.decode(label)
        except (idna.IDNAError, UnicodeError):
            text = label
    return fold(text).replace("-", "")


def comparison_keys(labels: "pa.Array") -> "pa.Array":
    """comparison_key of each label (an Arrow string array), the plain ASCII ones all at once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # An ASCII label that is no A-label folds to its lower case (casefold is lower on ASCII).
    plain = pc.and_(pc.string_is_ascii(labels), pc.invert(pc.starts_with(labels, "xn--"))).fill_null(False)
    keys = pc.replace_substring(pc.ascii_lower(labels), "-", "")
    odd = pc.invert(plain)
    if pc.any(odd).as_py():
        others = [comparison_key(v) for v in labels.filter(odd).to_pylist()]
        keys = pc.replace_with_mask(keys, odd, pa.array(others, type=pa.string()))
    return keys


def label_typo(a: str, b: str, *, min_label_len: int = MIN_LABEL) -> Edit | None:
    """The edit between two registrable labels when they count as a typo pair, else None.

    Compared as comparison keys, both at least min_label_len long; a digit-for-digit substitution
    ("web1" / "web2") is a sibling, not a typo.
    """
    ka, kb = comparison_key(a), comparison_key(b)
    if ka == kb or min(len(ka), len(kb)) < min_label_len:
        return None
    edit = edit_between(ka, kb)
    if edit is None or _digit_swap(ka, kb, edit.kind, edit.position):
        return None
    return edit


def suffix_typo(a: str, b: str) -> Edit | None:
    """The edit between two public suffixes one keystroke apart ("co"/"com", "es"/"ec"), else None."""
    return None if a == b else edit_between(a, b)


def domain_typo(a: DomainInfo, b: DomainInfo, *, min_label_len: int = MIN_LABEL) -> Edit | None:
    """The typo link between two registrable domains (see the module docstring), else None."""
    if not a.registrable or not b.registrable or a.registrable == b.registrable:
        return None
    if a.suffix == b.suffix:
        return label_typo(a.label, b.label, min_label_len=min_label_len)
    if comparison_key(a.label) == comparison_key(b.label):
        return suffix_typo(a.suffix, b.suffix)
    return None


def _digit_swap(a: str, b: str, kind: str, position: int) -> bool:
    return kind == "substitution" and a[position].isdigit() and b[position].isdigit()


def _symmetric(pairs: pd.DataFrame) -> pd.DataFrame:
    """Columns x, y holding each unordered pair in both orders."""
    return pd.concat(
        [pairs[["a", "b"]].set_axis(["x", "y"], axis=1), pairs[["b", "a"]].set_axis(["x", "y"], axis=1)],
        ignore_index=True,
    ).astype(object)


def label_pairs(keys: Iterable[str], min_label_len: int = MIN_LABEL, *, pairs: pd.DataFrame | None = None
                ) -> pd.DataFrame:
    """Comparison keys one label typo apart (label_typo, for many), each pair in both orders (x, y).

    pairs: one_edit_pairs(keys, min_len=min_label_len), when the caller has them (keys is then not read).
    """
    if pairs is None:
        pairs = one_edit_pairs(list(keys), min_len=min_label_len)
    if pairs.empty:
        return pd.DataFrame(columns=["x", "y"])
    swap = [_digit_swap(a, b, kind, p)
            for a, b, kind, p in zip(pairs["a"], pairs["b"], pairs["edit"], pairs["position"])]
    return _symmetric(pairs[~np.array(swap, dtype=bool)])


def suffix_pairs(suffixes: Iterable[str]) -> pd.DataFrame:
    """Public suffixes one edit apart (suffix_typo, for many), each pair in both orders (x, y)."""
    pairs = one_edit_pairs(list(suffixes), min_len=1)
    if pairs.empty:
        return pd.DataFrame(columns=["x", "y"])
    return _symmetric(pairs)


def typo_pairs(domains: pd.DataFrame, labels: pd.DataFrame, suffixes: pd.DataFrame) -> pd.DataFrame:
    """Distinct (registrable, registrable_n, scope, same_suffix) one edit apart, by key or by suffix.

    Scope "label": their comparison keys are a label pair, under any suffix; scope "suffix": one
    key under a suffix pair.

    `domains` has columns registrable, key (its comparison key) and suffix; `labels` and
    `suffixes` come from label_pairs and suffix_pairs. The rows with scope "suffix" or same_suffix
    are the typo links.
    """
    reg = domains[["registrable", "key", "suffix"]].drop_duplicates("registrable").astype(object)
    other = reg.add_suffix("_n")
    by_label = reg.merge(labels, left_on="key", right_on="x").merge(other, left_on="y", right_on="key_n")
    by_label["scope"] = "label"
    by_suffix = reg.merge(suffixes, left_on="suffix", right_on="x").merge(
        other, left_on=["key", "y"], right_on=["key_n", "suffix_n"]
    )
    by_suffix["scope"] = "suffix"
    cols = ["registrable", "registrable_n", "scope", "suffix", "suffix_n"]
    out = pd.concat([by_label[cols], by_suffix[cols]], ignore_index=True).drop_duplicates(
        ["registrable", "registrable_n"]
    )
    out["same_suffix"] = (out["suffix"] == out["suffix_n"]).to_numpy(dtype=bool)
    return out.drop(columns=["suffix", "suffix_n"]).reset_index(drop=True)


def typo_links(domains: pd.DataFrame, *, min_label_len: int = MIN_LABEL) -> pd.DataFrame:
    """(registrable, registrable_n) for every typo link (domain_typo, for many), in both orders.

    `domains` has columns registrable, label and suffix, one row per registrable domain.
    """
    keyed = domains[["registrable", "label", "suffix"]].drop_duplicates("registrable")
    keys = {label: comparison_key(label) for label in keyed["label"].unique().tolist()}
    keyed = keyed.assign(key=keyed["label"].map(keys))
    pairs = typo_pairs(keyed, label_pairs(set(keys.values()), min_label_len), suffix_pairs(set(keyed["suffix"])))
    pairs = pairs[(pairs["scope"] == "suffix").to_numpy() | pairs["same_suffix"].to_numpy()]
    return pairs[["registrable", "registrable_n"]].reset_index(drop=True)


def organisation_keys(subject_o: Iterable[object]) -> np.ndarray:
    """The organisation key of each subject O ('' for none), normalised once per distinct value."""
    if isinstance(subject_o, pd.Series):
        subject_o = subject_o.tolist()  # far faster than iterating an Arrow-backed column
    values = [o if isinstance(o, str) else "" for o in subject_o]
    # A large CA has more distinct O values than normalise_organisation's cache holds.
    per_o = {o: normalise_organisation(o) for o in set(values)}
    return np.array([per_o[o] for o in values], dtype=object)


def organisation_facts(subject_o: Iterable[object], memo: dict[str, tuple[str, tuple[str, ...]]] | None = None,
                       *, min_label_len: int = MIN_LABEL) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
    """(the distinct O of each value, as codes; organisation_labels of each distinct O; their organisation keys).

    Each distinct O is normalised once (key_and_labels); memo, a dict kept by the caller, carries the
    answers from one detector to the next (its min_label_len must stay the same).
    """
    if isinstance(subject_o, pd.Series):
        subject_o = subject_o.tolist()  # far faster than iterating an Arrow-backed column
    values = [o if isinstance(o, str) else "" for o in subject_o]
    codes, distinct = pd.factorize(pd.Series(values, dtype=object))
    memo = {} if memo is None else memo
    distinct = distinct.tolist()
    new = [o for o in distinct if o not in memo]
    memo.update(zip(new, keys_and_labels(new, min_len=min_label_len)))
    facts = [memo[o] for o in distinct]
    keys = np.array([key for key, _ in facts], dtype=object)
    return codes.astype(np.int64), [labels for _, labels in facts], keys


def subscriber_key(subject_o: object, subject_cn: object) -> str:
    """The subscriber a certificate is labelled with: its organisation key, else its CN's registrable domain ('')."""
    label = normalise_organisation(subject_o if isinstance(subject_o, str) else None)
    if not label and isinstance(subject_cn, str) and subject_cn:
        label = classify_name(subject_cn).registrable
    return label


def subscriber_keys(certs: pd.DataFrame) -> pd.Series:
    """subscriber_key of every certificate (index aligned with certs)."""
    if certs.empty:
        return pd.Series([], index=certs.index, dtype="object")
    # Subscribers repeat a lot across a CA's issuance: key each distinct (O, CN) once.
    pairs = list(zip(certs["subject_o"].astype("object"), certs["subject_cn"].astype("object")))
    keys = {p: subscriber_key(*p) for p in dict.fromkeys(pairs)}
    return pd.Series([keys[p] for p in pairs], index=certs.index, dtype="object")


@dataclass(frozen=True)
class Subscribers:
    """Component of each certificate (by row position) and the name links of bundle certificates."""

    component: np.ndarray  # int64 per row: the smallest row position of the row's component
    bundle: np.ndarray  # bool per row: too many registrable domains, linked by organisation only
    bundle_pairs: pd.DataFrame  # columns bundle, other (row positions): a name link of a bundle row


def connected_components(n_nodes: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The smallest node id of each node's component, for undirected edges left[i]-right[i]."""
    parent = np.arange(n_nodes, dtype=np.int64)
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    while True:
        while True:  # point every node at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        pl, pr = parent[left], parent[right]
        apart = pl != pr
        if not apart.any():
            return parent
        left, right = left[apart], right[apart]  # edges already inside one tree stay there
        lo, hi = np.minimum(pl[apart], pr[apart]), np.maximum(pl[apart], pr[apart])
        # Hooking a root only ever under a smaller id keeps parent[x] <= x, so no cycle can form.
        np.minimum.at(parent, hi, lo)


def _name_rows(certs: pd.DataFrame) -> pd.DataFrame:
    """One row per (certificate, public name) from the SANs and the subject CN."""
    cert_ids: list[int] = []
    names: list[str] = []
    from_san: list[bool] = []
    for pos, sans in enumerate(certs["san_dns"].tolist() if "san_dns" in certs.columns else []):
        if isinstance(sans, (list, tuple, np.ndarray)):
            kept = [s for s in sans if isinstance(s, str) and s]
            cert_ids.extend([pos] * len(kept))
            names.extend(kept)
            from_san.extend([True] * len(kept))
    if "subject_cn" in certs.columns:
        for pos, cn in enumerate(certs["subject_cn"].tolist()):
            if isinstance(cn, str) and cn:
                cert_ids.append(pos)
                names.append(cn)
                from_san.append(False)
    info = {n: classify_name(n) for n in set(names)}
    public = [info[n].kind == PUBLIC for n in names]
    rows = pd.DataFrame({
        "cert": np.asarray(cert_ids, dtype=np.int64),
        "registrable": [info[n].registrable for n in names],
        "san": np.asarray(from_san, dtype=bool),
    })
    return rows[np.asarray(public, dtype=bool)].drop_duplicates(["cert", "registrable", "san"])


def _bundles(rows: pd.DataFrame, n: int, labels: dict[str, str], max_registrables: int,
             min_label_len: int) -> np.ndarray:
    """Rows the typo detector treats as bundles: more SAN registrables (long enough keys) than the cap."""
    san = rows[rows["san"]].drop_duplicates(["cert", "registrable"])
    keys = {r: len(comparison_key(labels[r])) >= min_label_len for r in san["registrable"].unique()}
    san = san[san["registrable"].map(keys).to_numpy(dtype=bool)]
    counts = np.bincount(san["cert"].to_numpy(), minlength=n)
    return counts > max_registrables


def _typo_edges(regs: pd.DataFrame, min_label_len: int) -> pd.DataFrame:
    """Pairs (x, y) of registrable ids with a typo link (typo_links)."""
    links = typo_links(regs, min_label_len=min_label_len)
    ids = dict(zip(regs["registrable"], regs["id"]))
    return pd.DataFrame({"x": links["registrable"].map(ids).to_numpy(np.int64),
                         "y": links["registrable_n"].map(ids).to_numpy(np.int64)})


def link_subscribers(
    certs: pd.DataFrame, *, max_registrables: int = MAX_REGISTRABLES, min_label_len: int = MIN_LABEL
) -> Subscribers:
    """Group the certificates (by row position) into subscribers; see the module docstring."""
    n = len(certs)
    rows = _name_rows(certs)
    regs = pd.DataFrame({"registrable": rows["registrable"].unique()})
    regs["id"] = np.arange(len(regs), dtype=np.int64)
    info = [classify_name(r) for r in regs["registrable"].tolist()]
    regs["label"] = [i.label for i in info]
    regs["suffix"] = [i.suffix for i in info]
    labels = dict(zip(regs["registrable"].tolist(), regs["label"].tolist()))
    bundle = _bundles(rows, n, labels, max_registrables, min_label_len) if n else np.zeros(0, dtype=bool)

    held = rows.drop_duplicates(["cert", "registrable"])
    held = pd.DataFrame({
        "cert": held["cert"].to_numpy(),
        "reg": held["registrable"].map(dict(zip(regs["registrable"], regs["id"]))).to_numpy(np.int64),
    })
    typo = _typo_edges(regs, min_label_len)

    okey = pd.Series(organisation_keys(certs["subject_o"] if "subject_o" in certs.columns else [None] * n),
                     dtype=object)
    has_org = (okey != "").to_numpy()
    org_id = pd.factorize(okey[has_org])[0].astype(np.int64)

    # Nodes: certificates [0, n), registrable domains, then organisations.
    reg_base, org_base = n, n + len(regs)
    linked = held[~bundle[held["cert"].to_numpy()]] if len(held) else held
    left = np.concatenate([linked["cert"].to_numpy(np.int64), typo["x"].to_numpy() + reg_base,
                           np.flatnonzero(has_org)])
    right = np.concatenate([linked["reg"].to_numpy(np.int64) + reg_base, typo["y"].to_numpy() + reg_base,
                            org_id + org_base])
    roots = connected_components(org_base + (int(org_id.max()) + 1 if len(org_id) else 0), left, right)
    return Subscribers(roots[:n].copy(), bundle, _bundle_pairs(held, typo, bundle))


def _bundle_pairs(held: pd.DataFrame, typo: pd.DataFrame, bundle: np.ndarray) -> pd.DataFrame:
    """(bundle row, other row) sharing a registrable domain or holding one a typo away."""
    empty = pd.DataFrame({"bundle": np.zeros(0, np.int64), "other": np.zeros(0, np.int64)})
    if not bundle.any() or held.empty:
        return empty
    mine = held[bundle[held["cert"].to_numpy()]]
    # typo_links lists each link in both orders already.
    near = pd.concat([
        pd.DataFrame({"reg": mine["reg"].unique(), "near": mine["reg"].unique()}),
        typo.rename(columns={"x": "reg", "y": "near"}),
    ], ignore_index=True)
    pairs = mine.merge(near, on="reg").merge(held.rename(columns={"cert": "other", "reg": "near"}), on="near")
    pairs = pairs[pairs["cert"] != pairs["other"]].drop_duplicates(["cert", "other"])
    if pairs.empty:
        return empty
    return pd.DataFrame({"bundle": pairs["cert"].to_numpy(np.int64), "other": pairs["other"].to_numpy(np.int64)})
