"""Detectors over revocation dates: early revocations and revoke-and-reissue pairs."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scanner.core.records import Finding
from scanner.core.times import human_duration, iso
from scanner.detect.findings import as_json, findings_frame
from scanner.detect.namecodes import key_pairs, name_codes, positions, texts
from scanner.detect.rules import KEY_COMPROMISE, is_short_lived
from scanner.detect.subjects import organisations
from scanner.enrich.subscribers import (
    MIN_LABEL,
    comparison_key,
    domain_typo,
)
from scanner.parse.domains import (
    INFO_FIELDS,
    Classified,
    DomainInfo,
    arrow_strings,
    classifier,
    classify_name,
    explode_names,
)

#: Names of each certificate compared for a typo link: the comparison is pairwise, and a certificate
#: with thousands of SANs (attacker-controlled) must not make it quadratic; a typo correction is a
#: small certificate anyway.
MAX_TYPO_NAMES = 100


def early_revocations(certs: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """Certificates revoked within `window` of notBefore (or before it), with the latency."""
    latency = certs["revoked_at"] - certs["not_before"]
    early = (certs["revoked_at"].notna() & (latency <= pd.Timedelta(window))).to_numpy(dtype=bool)
    return certs[early].assign(latency=latency[early])  # the few rows taken once, every column kept


def _since_not_before(latency: pd.Timedelta) -> str:
    """'4.6 hours after notBefore', or '1.0 days before its notBefore' for a revocation dated earlier."""
    if latency < pd.Timedelta(0):
        return f"{human_duration(-latency)} before its notBefore"
    return f"{human_duration(latency)} after notBefore"


def detect_early_revocation(certs: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """A finding per certificate revoked within the window after notBefore: the list to audit.

    Short-lived Subscriber Certificates are left out: BR 4.9.1.1 does not require revoking them, and
    their whole life fits in the window, so a revocation says nothing about its speed. They still
    pair in revoke_reissue, where the replacement is the evidence.
    """
    early = early_revocations(certs, window)
    early = early[~is_short_lived(early)]
    found = []
    for r in early[["sha256", "revoked_at", "latency", "revocation_reason"]].itertuples(index=False):
        reason = f", reason {r.revocation_reason}" if r.revocation_reason else ", no reason given"
        found.append(Finding(
            r.sha256, "early_revocation",
            f"Revoked {iso(r.revoked_at)}, {_since_not_before(r.latency)}{reason}.",
            detail=as_json({"latency_seconds": r.latency.total_seconds(), "revoked_at": iso(r.revoked_at),
                            "reason": r.revocation_reason or ""}),
        ))
    return findings_frame(found)


def _typo_link(a_names: list[str], b_names: list[str]) -> tuple[str, str] | None:
    """A pair (name in A, name in B) whose registrable domains have a typo link (subscribers.domain_typo), if any."""
    a_info = [(n, classify_name(n)) for n in a_names[:MAX_TYPO_NAMES]]
    b_info = [(n, classify_name(n)) for n in b_names[:MAX_TYPO_NAMES]]
    for na, ia in a_info:
        for nb, ib in b_info:
            if domain_typo(ia, ib):
                return na, nb
    return None


def _few(names: list[str], limit: int = 5) -> str:
    """'a, b, c' or 'a, b, c and 12 more': evidence stays one readable sentence."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def classify_change(a: pd.Series, b: pd.Series) -> tuple[str, str]:
    """How the reissue B differs from the revoked A: (kind, readable detail)."""
    sans_a, sans_b = set(a["san_dns"] or []), set(b["san_dns"] or [])
    if sans_a != sans_b:
        link = _typo_link(sorted(sans_a - sans_b), sorted(sans_b - sans_a))
        if link:
            return "san_typo_fixed", f"SAN typo fixed ({link[0]} -> {link[1]})"
        gone, new = sorted(sans_a - sans_b), sorted(sans_b - sans_a)
        return "san_set_changed", f"SAN set changed (removed {_few(gone)}; added {_few(new)})"
    if a["subject_dn"] != b["subject_dn"]:
        return "subject_changed", f"subject changed ({a['subject_dn']} -> {b['subject_dn']})"
    if a["spki_sha256"] != b["spki_sha256"]:
        return "rekey_only", "same names and subject, new key (re-key only)"
    return "same_content", "same names, subject and key"


def _naive_utc(col: pd.Series) -> pd.Series:
    """A tz-aware UTC column as naive datetime64 (what numpy's searchsorted can compare)."""
    return col.dt.tz_convert("UTC").dt.tz_localize(None)


class _Subscribers:
    """Certificates sorted by notBefore with what links two of them to one subscriber.

    What links them is subscribers' definition (organisation key, shared registrable domain, typo
    link). Built once per scan, from whole columns. Only the keys the asking rows (the early
    revocations) hold are indexed: their registrable domains, their labels' comparison keys and
    the keys one edit from those (one symmetric-deletion search, typo_index), and their
    organisation keys; each indexes the rows holding it (one sorted array of (key, row) pairs).
    So the index grows with the early revocations, not with the issuance, and no window is
    compared key by key. Row i is the i-th certificate in notBefore order.
    """

    def __init__(self, certs: pd.DataFrame, windows: list[tuple[pd.Timestamp, pd.Timestamp]] | None = None,
                 classified: Classified | None = None, asking: pa.Array | None = None):
        self._fallback = classifier(classified)
        self._classified = classified
        self._infos: dict[str, DomainInfo] = {}
        self.classify = self._classify
        self.certs = certs
        n = len(certs)
        self.order = certs["not_before"].reset_index(drop=True).sort_values(kind="stable").index.to_numpy()
        rank = np.empty(n, dtype=np.int64)
        rank[self.order] = np.arange(n)
        self._not_before = certs["not_before"]
        self.nb = _naive_utc(certs["not_before"]).to_numpy()[self.order]
        # Arrow, not a Python string per row: a row's text is looked up when a question needs it.
        self._sha = arrow_strings(certs["sha256"]).take(pa.array(self.order))
        self._sans = certs["san_dns"].tolist()
        cn = arrow_strings(certs["subject_cn"]) if "subject_cn" in certs.columns else None
        self._cn = pa.nulls(n, pa.string()).fill_null("") if cn is None else cn.fill_null("")
        org = organisations(certs, classified, MIN_LABEL)
        self._org_code, self._okeys, self._no_org = org.key[org.row], org.keys, org.no_key
        self._org_labels = org.labels
        self._org_texts: dict[int, str] = {}
        self._comparison_keys: dict[str, str] = {}
        self._name_sets: dict[int, set[str]] = {}
        self._names: dict[int, list[str]] = {}
        # Only rows inside some window can ever be a candidate: index those alone.
        wanted = np.zeros(n, dtype=bool)
        if windows is None:
            wanted[:] = True
        elif windows:
            lo = np.searchsorted(self.nb, np.array([_naive(s) for s, _ in windows]), side="left")
            hi = np.searchsorted(self.nb, np.array([_naive(e) for _, e in windows]), side="right")
            lo, hi = lo[lo < hi], hi[lo < hi]
            edges = np.zeros(n + 1, dtype=np.int64)
            np.add.at(edges, lo, 1)
            np.add.at(edges, hi, -1)
            wanted = np.cumsum(edges[:n]) > 0
        # The rows whose candidates are asked for (by sha256; None: every row).
        asks = (np.ones(n, dtype=bool) if asking is None else
                pc.is_in(self._sha, value_set=asking).to_numpy(zero_copy_only=False))
        self._index_rows(certs, rank, wanted, asks, classified)

    def _index_rows(self, certs: pd.DataFrame, rank: np.ndarray, wanted: np.ndarray, asks: np.ndarray,
                    classified: Classified | None) -> None:
        """The (key, row) index of the wanted rows, for the keys of the asking rows and the keys one edit from theirs."""
        n = len(certs)
        sans = explode_names(certs, "san_dns", classified)
        cn = arrow_strings(certs["subject_cn"]) if "subject_cn" in certs.columns else pa.nulls(n, pa.string())
        has_cn = np.flatnonzero(cn.is_valid().to_numpy(zero_copy_only=False))
        classified, at = positions(classified, sans.values, cn.drop_null())
        codes = name_codes(classified)
        row = np.concatenate([rank[sans.cert], rank[has_cn]])
        keep = wanted[row]
        row, at = row[keep], at[keep]
        registrable = codes.registrable[at]
        named = pc.greater(pc.binary_length(codes.registrables), 0).to_numpy(zero_copy_only=False)[registrable]
        row, registrable, key = row[named], registrable[named], codes.key[at[named]]
        names_at = (row, registrable, key)
        asked = asks[row]
        asked_keys = np.unique(key[asked])
        # Typo neighbours: comparison keys of MIN_LABEL or more one edit from an asking row's (OSA distance 1).
        seen = np.zeros(len(codes.keys), dtype=bool)
        seen[key[codes.key_length[key] >= MIN_LABEL]] = True
        long = np.flatnonzero(seen)
        pairs = key_pairs(classified, codes.keys.take(pa.array(long, type=pa.int64())), MIN_LABEL,
                          also=self._org_labels)  # the typo detector's O labels too: its search is this one
        asked_keys_text = codes.keys.take(pa.array(asked_keys, type=pa.int64()))
        involved = pc.or_(pc.is_in(pa.array(pairs["a"], type=pa.string(), from_pandas=True), value_set=asked_keys_text),
                          pc.is_in(pa.array(pairs["b"], type=pa.string(), from_pandas=True), value_set=asked_keys_text))
        pairs = pairs[involved.to_numpy(zero_copy_only=False)]
        self._neighbours: dict[str, list[str]] = {}
        for a, b in zip(pairs["a"].tolist(), pairs["b"].tolist()):
            self._neighbours.setdefault(a, []).append(b)
            self._neighbours.setdefault(b, []).append(a)
        near = pc.index_in(pa.array(list(self._neighbours), type=pa.string()), value_set=codes.keys)
        key_set = np.union1d(asked_keys, near.to_numpy(zero_copy_only=False).astype(np.int64))
        # wanted and asks are by row (notBefore order), _org_code by certificate: reordered to rows first.
        org_code = self._org_code[self.order]
        org_rows = np.flatnonzero(wanted & (org_code != self._no_org))
        org_set = np.unique(org_code[np.flatnonzero(wanted & asks & (org_code != self._no_org))])
        parts = [("d:", np.unique(registrable[asked]), registrable, row, codes.registrables),
                 ("k:", key_set, key, row, codes.keys), ("o:", org_set, org_code[org_rows], org_rows, self._okeys)]
        names: list[str] = []
        index_codes, index_rows = [], []
        for prefix, value_set, column, where, values in parts:
            at_key = np.minimum(np.searchsorted(value_set, column), max(len(value_set) - 1, 0))
            held = value_set[at_key] == column if len(value_set) else np.zeros(len(column), dtype=bool)
            index_codes.append(at_key[held] + len(names))
            index_rows.append(where[held].astype(np.int64))
            names += [prefix + v for v in texts(values, value_set)]
        # Distinct (key, row) pairs as one int64 each: np.unique sorts them by key code, then row.
        pairs_kr = np.unique(np.concatenate(index_codes) * (n + 1) + np.concatenate(index_rows))
        self._key_codes = {name: code for code, name in enumerate(names)}
        self._key_sorted = pairs_kr // (n + 1)
        self._key_rows = pairs_kr % (n + 1)
        # What _names_of asks, as codes by row, for the rows it can be asked about (an asking row, a
        # candidate: a row indexed): no name classified or folded again.
        self._named = np.zeros(n, dtype=bool)
        self._named[self._key_rows] = True
        self._named |= asks & wanted
        row, registrable, key = names_at
        held = np.flatnonzero(self._named[row])
        held = held[np.argsort(row[held], kind="stable")]
        self._name_rows, self._name_registrable, self._name_key = row[held], registrable[held], key[held]
        self._registrables, self._keys_text = codes.registrables, codes.keys
        self._code_texts: dict[tuple[int, int], str] = {}

    def prepare(self, rows: np.ndarray) -> None:
        """Classify the SANs and CNs of these rows all at once, for the row-by-row questions that follow."""
        wanted = {n for i in rows.tolist() for n in [*self.names(i), self.cn(i)] if isinstance(n, str)}
        new = [n for n in wanted if n not in self._infos]
        if not new or self._classified is None:
            return
        # The few names hashed and the classified ones looked up in them, not the other way round: a
        # hash of every classified name would cost more than the whole lookup.
        which = pc.index_in(self._classified.raw, value_set=pa.array(new, type=pa.string()))
        held = np.flatnonzero(which.is_valid().to_numpy(zero_copy_only=False))
        picked = pa.array(held, type=pa.int64())
        fields = [self._classified.columns[f].take(picked).to_pylist() for f in INFO_FIELDS]
        names = [new[k] for k in which.take(picked).to_pylist()]
        self._infos.update(zip(names, (DomainInfo(*values) for values in zip(*fields))))

    def _classify(self, name: str) -> DomainInfo:
        info = self._infos.get(name)
        return info if info is not None else self._fallback(name)

    def names(self, i: int) -> list[str]:
        """Row i's SAN dNSNames, as listed."""
        got = self._names.get(i)
        if got is None:
            v = self._sans[self.order[i]]
            got = self._names[i] = v if isinstance(v, list) else list(v) if isinstance(v, (tuple, np.ndarray)) else []
        return got

    def cn(self, i: int) -> str:
        """Row i's subject CN ('' for none)."""
        return self._cn[int(self.order[i])].as_py()

    def org(self, i: int) -> str:
        """Row i's organisation key ('' for none)."""
        code = int(self._org_code[self.order[i]])
        text = self._org_texts.get(code)
        if text is None:
            text = self._org_texts[code] = self._okeys[code].as_py()
        return text

    def sha(self, i: int) -> str:
        """Row i's sha256."""
        return self._sha[i].as_py()

    def not_before(self, i: int) -> pd.Timestamp:
        """Row i's notBefore."""
        return self._not_before.iat[int(self.order[i])]

    def rows(self, rows: list[int]) -> pd.DataFrame:
        """These rows' certificates (in this order), the columns a revoke_reissue finding reads."""
        return self.certs[[c for c in _ROW_COLUMNS if c in self.certs.columns]].iloc[self.order[rows]]

    def _names_of(self, i: int) -> tuple[set[str], list[str]]:
        """Registrable domains and their labels' comparison keys (sorted) of row i's SANs and CN."""
        if self._named[i]:  # its codes are at hand
            a, b = np.searchsorted(self._name_rows, [i, i + 1])
            return ({self._code_text(0, c) for c in set(self._name_registrable[a:b].tolist())},
                    sorted({self._code_text(1, c) for c in set(self._name_key[a:b].tolist())}))
        infos = [x for x in map(self.classify, [*self.names(i), self.cn(i)]) if x.registrable]
        return {x.registrable for x in infos}, sorted({self._comparison_key(x.label) for x in infos})

    def _code_text(self, table: int, code: int) -> str:
        """The registrable domain (table 0) or comparison key (table 1) a code stands for."""
        text = self._code_texts.get((table, code))
        if text is None:
            text = self._code_texts[(table, code)] = (self._registrables if table == 0 else self._keys_text)[code].as_py()
        return text

    def _comparison_key(self, label: str) -> str:
        key = self._comparison_keys.get(label)
        if key is None:
            key = self._comparison_keys[label] = comparison_key(label)
        return key

    def domains(self, i: int) -> set[str]:
        """Registrable domains of row i's SANs and CN."""
        return self._names_of(i)[0]

    def _keys(self, i: int, domains: set[str], labels: list[str]) -> set[str]:
        # "k:": one comparison key under another suffix, the candidates of a suffix typo.
        keys = {"d:" + d for d in domains} | {"k:" + lab for lab in labels}
        if self.org(i):
            keys.add("o:" + self.org(i))
        return keys

    def _rows_with(self, key: str, lo: int, hi: int) -> np.ndarray:
        """The rows in [lo, hi) indexed under key."""
        code = self._key_codes.get(key)
        if code is None:
            return np.zeros(0, np.int64)
        a, b = np.searchsorted(self._key_sorted, [code, code + 1])
        rows = self._key_rows[a:b]
        return rows[np.searchsorted(rows, lo): np.searchsorted(rows, hi)]

    def candidates(self, i: int, lo: int, hi: int) -> set[int]:
        """Rows in [lo, hi) sharing a key with row i, or holding a comparison key one edit from one of its own."""
        out: set[int] = set()
        domains, mine = self._names_of(i)
        keys = self._keys(i, domains, mine)
        keys.update("k:" + near for lab in mine if len(lab) >= MIN_LABEL for near in self._neighbours.get(lab, ()))
        for k in keys:
            out.update(self._rows_with(k, lo, hi).tolist())
        out.discard(i)
        return out

    def shared_names(self, a: int, b: int) -> float:
        """Share of the two rows' DNS names (SANs, a host name CN) they have in common (Jaccard, 0 to 1)."""
        na, nb = self._name_set(a), self._name_set(b)
        return len(na & nb) / len(na | nb) if na and nb else 0.0

    def _name_set(self, i: int) -> set[str]:
        names = self._name_sets.get(i)
        if names is None:
            names = {n.lower().rstrip(".") for n in self.names(i)}
            if self.cn(i) and self.classify(self.cn(i)).registrable:
                names.add(self.cn(i).lower().rstrip("."))
            self._name_sets[i] = names
        return names

    def relation(self, a: int, b: int) -> str | None:
        """How row b is linked to row a: typo, organisation, domain, or None."""
        if _typo_link(self.names(a), self.names(b)):
            return "typo"
        if self.org(a) and self.org(a) == self.org(b):
            return "organisation"
        if self.domains(a) & self.domains(b):
            return "domain"
        return None


def _naive(stamp: pd.Timestamp) -> np.datetime64:
    return stamp.tz_convert(None).to_datetime64()


_RELATION_RANK = {"typo": 0, "organisation": 1, "domain": 2}
#: What classify_change and a finding read of A and B.
_ROW_COLUMNS = ["sha256", "subject_cn", "subject_dn", "spki_sha256", "san_dns", "not_before", "revocation_reason"]


def may_replace(a_not_before, a_revoked_at, b_not_before, reissue_window: timedelta):  # noqa: ANN001, ANN201
    """Whether B's notBefore falls where a replacement of A can: after A's notBefore, by A's revocation + window.

    Works on scalars and on numpy / pandas arrays alike (NaT compares False). The replacement may
    come any time while A is still valid (Sectigo issued it about 3.5 days before revoking A) or
    soon after the revocation (Camerfirma, 23 minutes); a certificate older than A never replaces it.
    """
    return (b_not_before > a_not_before) & (b_not_before <= a_revoked_at + pd.Timedelta(reissue_window))


def detect_revoke_reissue(
    certs: pd.DataFrame, window: timedelta, reissue_window: timedelta, *, classified: Classified | None = None
) -> pd.DataFrame:
    """Pair each early-revoked certificate A with its most plausible replacement B, if there is one.

    A counts when it was revoked within `window` of its notBefore, so a renewal whose predecessor
    was revoked late ("superseded") is no pair. B must be issued after A and no later than A's
    revocation plus `reissue_window` (may_replace), and be the same subscriber's: it holds a name
    one typo from one of A's, or shares at least one DNS name with A and the subject O
    (normalised) or a registrable domain. Sharing only the O or the domain is not enough: a large
    subscriber issues other names all the time. Of several, B is a typo correction first, then the
    one sharing most of A's names, then the closer relation, then the nearest to the revocation.
    """
    early = early_revocations(certs, window)
    if early.empty:
        return findings_frame([])
    rw = pd.Timedelta(reissue_window)
    spans = [(nb, t + rw) for nb, t in zip(early["not_before"], early["revoked_at"]) if t + rw > nb]
    subs = _Subscribers(certs, spans, classified, arrow_strings(early["sha256"]))
    # Each early certificate's row (the last one of that sha256, should two rows share it).
    wanted = pc.is_in(subs._sha,
                      value_set=arrow_strings(early["sha256"])).to_numpy(zero_copy_only=False)
    position = {subs.sha(i): i for i in np.flatnonzero(wanted).tolist()}
    rows = np.array([position[sha] for sha in early["sha256"]], dtype=np.int64)
    ends = _naive_utc(early["revoked_at"] + rw).to_numpy()
    # Dated so far before its notBefore that nothing can follow: no window.
    open_ = ends > subs.nb[rows]
    los = np.searchsorted(subs.nb, subs.nb[rows], side="left")
    his = np.searchsorted(subs.nb, ends, side="right")
    subs.prepare(rows[open_])
    asked = [(i, subs.candidates(i, lo, hi)) if is_open else (i, None)
             for i, lo, hi, is_open in zip(rows.tolist(), los.tolist(), his.tolist(), open_.tolist())]
    subs.prepare(np.array(sorted({j for _, cands in asked if cands for j in cands}), dtype=np.int64))
    chosen = []
    for (sha, revoked_at), (i, cands) in zip(zip(early["sha256"], early["revoked_at"]), asked):
        if cands is None:
            continue
        revoked64 = revoked_at.tz_convert(None).to_datetime64()
        best = None
        for j in cands:
            if subs.nb[j] <= subs.nb[i]:  # never a certificate as old as A or older
                continue
            relation = subs.relation(i, j)
            if relation is None:
                continue
            shared = subs.shared_names(i, j)
            if relation != "typo" and shared == 0.0:
                continue
            rank = (relation != "typo", -shared, _RELATION_RANK[relation], abs(subs.nb[j] - revoked64), subs.sha(j))
            if best is None or rank < best[0]:
                best = (rank, j, relation)
        if best is None:
            continue
        chosen.append((sha, revoked_at, i, best[1], best[2]))
    # The few rows of the pairs taken at once (a row lookup each cost milliseconds on a wide table).
    picked = subs.rows([i for _, _, i, _, _ in chosen] + [j for _, _, _, j, _ in chosen])
    found = []
    for k, (sha, revoked_at, _i, j, relation) in enumerate(chosen):
        a, b = picked.iloc[k], picked.iloc[len(chosen) + k]
        kind, change = classify_change(a, b)
        reason = a["revocation_reason"] if isinstance(a["revocation_reason"], str) else ""
        reason_text = f"; revocation reason {reason}" if reason else "; no revocation reason given"
        if kind == "san_typo_fixed" and reason == KEY_COMPROMISE:
            reason_text += " (a typo correction revoked as keyCompromise: was the key compromised?)"
        offset = b["not_before"] - revoked_at
        order = (f"reissued {human_duration(offset)} after the revocation" if offset >= pd.Timedelta(0)
                 else f"the replacement was issued {human_duration(-offset)} before the revocation, "
                      f"while it was still valid")
        found.append(Finding(
            sha, "revoke_reissue",
            f"Revoked {_since_not_before(revoked_at - a['not_before'])}; {order} as "
            f"{b['sha256'][:16]}… ({', '.join(subs.names(j)[:3]) or b['subject_cn']}): {change}{reason_text}.",
            related_sha256=b["sha256"],
            detail=as_json({"change": kind, "relation": relation, "reason": reason,
                            "latency_seconds": (revoked_at - a["not_before"]).total_seconds(),
                            "reissue_offset_seconds": offset.total_seconds(),
                            "reissue_not_before": iso(b["not_before"])}),
        ))
    return findings_frame(found)
