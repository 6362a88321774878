"""Subscribers: certificates linked by what the cross-certificate detectors compare, as components.

Two certificates are linked when they share the normalised subject O, a registrable domain (a SAN
or the subject CN), or hold registrable domains one typo apart: labels one edit apart under the
same public suffix, or one label under suffixes one edit apart. A connected component of that
graph holds every certificate the typo and revoke-and-reissue detectors could compare with any of
its members, so detectors run on whole components give the findings of the whole table.

A certificate naming more registrable domains than the typo detector's cap (shared hosting, a CDN)
would glue unrelated subscribers into one component. Like the typo detector, the components link
it by organisation only; its name links are returned apart (`Subscribers.bundle_pairs`) for a
caller that must still show it to the few certificates it can be paired with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scanner.detect.typo import MAX_REGISTRABLES, comparison_key
from scanner.enrich.organisation import normalise_organisation
from scanner.enrich.typo_index import one_edit_pairs
from scanner.parse.domains import PUBLIC, classify_name

#: Labels shorter than this are never typo-linked (the detectors' minimum).
MIN_LABEL = 4


@dataclass(frozen=True)
class Subscribers:
    """Component of each certificate (by row position) and the name links of bundle certificates."""

    component: np.ndarray  # int64 per row: the smallest row position of the row's component
    bundle: np.ndarray  # bool per row: too many registrable domains, linked by organisation only
    bundle_pairs: pd.DataFrame  # columns bundle, other (row positions): a name link of a bundle row

    def sizes(self) -> pd.Series:
        """Certificates per component, largest first."""
        return pd.Series(self.component).value_counts()


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
    """Rows the typo detector treats as bundles: more SAN registrables (long enough labels) than the cap."""
    san = rows[rows["san"]].drop_duplicates(["cert", "registrable"])
    keys = {r: len(comparison_key(labels[r])) >= min_label_len for r in san["registrable"].unique()}
    san = san[san["registrable"].map(keys).to_numpy(dtype=bool)]
    counts = np.bincount(san["cert"].to_numpy(), minlength=n)
    return counts > max_registrables


def _typo_edges(regs: pd.DataFrame, min_label_len: int) -> pd.DataFrame:
    """Pairs (x, y) of registrable ids one typo apart: label edit under one suffix, or suffix edit."""
    frames = []
    labels = one_edit_pairs(regs["label"].unique().tolist(), min_len=min_label_len)
    if not labels.empty:
        pairs = labels[["a", "b"]].astype(object)
        x = regs.merge(pairs, left_on="label", right_on="a")
        xy = x.merge(regs, left_on=["b", "suffix"], right_on=["label", "suffix"], suffixes=("", "_n"))
        frames.append(xy[["id", "id_n"]])
    suffixes = one_edit_pairs(regs["suffix"].unique().tolist(), min_len=1)
    if not suffixes.empty:
        pairs = suffixes[["a", "b"]].astype(object)
        x = regs.merge(pairs, left_on="suffix", right_on="a")
        xy = x.merge(regs, left_on=["label", "b"], right_on=["label", "suffix"], suffixes=("", "_n"))
        frames.append(xy[["id", "id_n"]])
    if not frames:
        return pd.DataFrame({"x": np.zeros(0, np.int64), "y": np.zeros(0, np.int64)})
    edges = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({"x": edges["id"].to_numpy(np.int64), "y": edges["id_n"].to_numpy(np.int64)})


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

    orgs = [o if isinstance(o, str) else "" for o in
            (certs["subject_o"].tolist() if "subject_o" in certs.columns else [None] * n)]
    per_o = {o: normalise_organisation(o) for o in set(orgs)}  # once per distinct O
    okey = pd.Series([per_o[o] for o in orgs], dtype=object)
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
    near = pd.concat([
        pd.DataFrame({"reg": mine["reg"].unique(), "near": mine["reg"].unique()}),
        typo.rename(columns={"x": "reg", "y": "near"}),
        typo.rename(columns={"y": "reg", "x": "near"}),
    ], ignore_index=True)
    pairs = mine.merge(near, on="reg").merge(held.rename(columns={"cert": "other", "reg": "near"}), on="near")
    pairs = pairs[pairs["cert"] != pairs["other"]].drop_duplicates(["cert", "other"])
    if pairs.empty:
        return empty
    return pd.DataFrame({"bundle": pairs["cert"].to_numpy(np.int64), "other": pairs["other"].to_numpy(np.int64)})
