"""Typo SANs: a registrable domain one edit away from the subscriber's own name or other names.

The Camerfirma case: a certificate for ``mail.cuatis.net`` (subject O "CUALTIS S.L.U") was revoked
and reissued for ``mail.cualtis.net``. Each SAN's registrable label is compared with

* the subject O, normalised (``subject_o``),
* the other SANs of the same certificate (``same_cert``),
* the names in the CA's other certificates for the same subscriber: same normalised O, or sharing
  a registrable domain (``other_cert``);

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

from collections.abc import Iterable

import idna
import numpy as np
import pandas as pd

from scanner.core.records import FINDING_COLUMNS, Finding, empty_frame
from scanner.detect.findings import as_json, findings_frame
from scanner.enrich.organisation import fold, normalise_organisation, organisation_labels
from scanner.enrich.typo_index import Edit, edit_between, one_edit_pairs
from scanner.parse.domains import PUBLIC, Classified, classifier

CODE = "typo_neighbour"
SOURCES = ("subject_o", "same_cert", "other_cert")

#: A certificate naming more registrable domains than this is treated as a bundle of different
#: subscribers (shared hosting, CDN): its names are neither compared with each other nor used to
#: link certificates to one subscriber.
MAX_REGISTRABLES = 20

#: A suspect name certified this many times is one the subscriber has had validated again and again
#: (a second country site, a sister brand), not a one-off slip: still reported, weighed less.
ESTABLISHED_CERTIFICATES = 3


def comparison_key(label: str) -> str:
    """The form of a registrable label that is compared: U-label, folded, hyphens removed."""
    text = label
    if label.startswith("xn--"):
        try:
            text = idna.decode(label)
        except (idna.IDNAError, UnicodeError):
            text = label
    return fold(text).replace("-", "")


def label_typo(a: str, b: str, *, min_label_len: int = 4) -> Edit | None:
    """The edit between two registrable labels when they count as a typo pair, else None.

    The same rules as the CA-wide search: compared as comparison keys, both at least min_label_len
    long, and a digit-for-digit substitution ("web1" / "web2") is a sibling, not a typo.
    """
    ka, kb = comparison_key(a), comparison_key(b)
    if ka == kb or min(len(ka), len(kb)) < min_label_len:
        return None
    edit = edit_between(ka, kb)
    if edit is None or (edit.kind == "substitution" and ka[edit.position].isdigit()
                        and kb[edit.position].isdigit()):
        return None
    return edit


def suffix_typo(a: str, b: str) -> Edit | None:
    """The edit between two public suffixes one keystroke apart ("co"/"com", "es"/"ec"), else None."""
    return None if a == b else edit_between(a, b)


def _clip(text: object, limit: int = 80) -> str:
    """Attacker-controlled text shortened for a one-line evidence sentence."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _registrables(
    certs: pd.DataFrame, min_label_len: int, max_registrables: int, counts: "IssuanceCounts | None" = None,
    classified: Classified | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per certificate and registrable domain, one row per SAN) for labels long enough to compare."""
    lists = certs["san_dns"].tolist()
    cert_ids, names, order = [], [], []
    for cert, sans in enumerate(lists):
        if isinstance(sans, (list, tuple, np.ndarray)):
            kept = [s for s in sans if isinstance(s, str) and s]
            cert_ids.extend([cert] * len(kept))
            names.extend(kept)
            order.extend(range(len(kept)))
    classify = classifier(classified)
    info = {s: classify(s) for s in set(names)}
    keys = {}
    rows = []
    for cert, name, position in zip(cert_ids, names, order):
        d = info[name]
        if d.kind != PUBLIC:
            continue
        key = keys.get(d.label)
        if key is None:
            key = keys[d.label] = comparison_key(d.label)
        if len(key) >= min_label_len:
            rows.append((cert, name, position, d.registrable, d.label, d.suffix, key))
    if not rows:
        return pd.DataFrame(), pd.DataFrame()
    sans = pd.DataFrame(rows, columns=["cert", "san", "order", "registrable", "label", "suffix", "key"], dtype=object)
    sans = sans.astype({"cert": "int64", "order": "int64"})
    regs = sans.drop_duplicates(["cert", "registrable"]).reset_index(drop=True)
    per_cert = regs.groupby("cert")["registrable"].transform("size")
    regs["bundle"] = (per_cert > max_registrables).to_numpy()
    by_registrable, by_key = counts if counts is not None else _counts(regs)
    regs["reg_count"] = regs["registrable"].map(by_registrable).to_numpy()
    regs["key_count"] = regs["key"].map(by_key).to_numpy()
    return regs, sans[["cert", "registrable", "san"]]


#: (certificates naming each registrable domain, certificates naming each comparison key).
IssuanceCounts = tuple[pd.Series, pd.Series]


def _counts(regs: pd.DataFrame) -> IssuanceCounts:
    return regs["registrable"].value_counts(), regs.drop_duplicates(["cert", "key"])["key"].value_counts()


def issuance_counts(certs: pd.DataFrame, *, min_label_len: int = 4) -> IssuanceCounts:
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


def _symmetric(pairs: pd.DataFrame) -> pd.DataFrame:
    """Columns x, y holding each unordered pair in both orders."""
    return pd.concat(
        [pairs[["a", "b"]].set_axis(["x", "y"], axis=1), pairs[["b", "a"]].set_axis(["x", "y"], axis=1)],
        ignore_index=True,
    ).astype(object)


def _label_pairs(keys: Iterable[str], min_label_len: int) -> pd.DataFrame:
    """Keys one edit apart, without digit-for-digit substitutions ("web1" / "web2" are siblings)."""
    pairs = one_edit_pairs(list(keys), min_len=min_label_len)
    if pairs.empty:
        return pd.DataFrame(columns=["x", "y"])
    digit_swap = [
        kind == "substitution" and a[p].isdigit() and b[p].isdigit()
        for a, b, kind, p in zip(pairs["a"], pairs["b"], pairs["edit"], pairs["position"])
    ]
    return _symmetric(pairs[~np.array(digit_swap, dtype=bool)])


def _suffix_pairs(suffixes: Iterable[str]) -> pd.DataFrame:
    """Public suffixes one edit apart, of any kind: "co"/"com", "ne"/"net", "es"/"ec", "de"/"dk"."""
    pairs = one_edit_pairs(list(suffixes), min_len=1)
    if pairs.empty:
        return pd.DataFrame(columns=["x", "y"])
    return _symmetric(pairs)


def _registrable_pairs(regs: pd.DataFrame, labels: pd.DataFrame, suffixes: pd.DataFrame) -> pd.DataFrame:
    """Distinct (registrable, registrable_n, scope): label one edit apart, or same label and suffix one edit."""
    reg = regs[["registrable", "key", "suffix"]].drop_duplicates("registrable").astype(object)
    other = reg.add_suffix("_n")
    by_label = reg.merge(labels, left_on="key", right_on="x").merge(other, left_on="y", right_on="key_n")
    by_label["scope"] = "label"
    by_suffix = reg.merge(suffixes, left_on="suffix", right_on="x").merge(
        other, left_on=["key", "y"], right_on=["key_n", "suffix_n"]
    )
    by_suffix["scope"] = "suffix"
    cols = ["registrable", "registrable_n", "scope"]
    return pd.concat([by_label[cols], by_suffix[cols]], ignore_index=True).drop_duplicates(["registrable", "registrable_n"])


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


def detect_typo_neighbours(
    certs: pd.DataFrame, *, min_label_len: int = 4, max_registrables: int = MAX_REGISTRABLES,
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

    n = len(certs)
    subject_o = certs["subject_o"] if "subject_o" in certs.columns else pd.Series([None] * n)
    raw_o = [o if isinstance(o, str) else "" for o in subject_o.tolist()]
    # Once per distinct O: a large CA has more of them than any cache holds.
    per_o = {o: (normalise_organisation(o), organisation_labels(o, min_len=min_label_len)) for o in set(raw_o)}
    okey = np.array([per_o[o][0] for o in raw_o], dtype=object)
    olabels = [per_o[o][1] for o in raw_o]
    not_before = pd.to_datetime(certs.get("not_before", pd.Series([pd.NaT] * n)), utc=True, errors="coerce")
    nb = not_before.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy()
    revoked = pd.to_datetime(certs.get("revoked_at", pd.Series([pd.NaT] * n)), utc=True, errors="coerce")
    sha = certs["sha256"].astype(object).to_numpy()

    ol = pd.DataFrame(
        [(cert, label) for cert, labels in enumerate(olabels) for label in labels], columns=["cert", "olabel"]
    )
    regs["okey"] = okey[regs["cert"].to_numpy()]
    regs["nb"] = nb[regs["cert"].to_numpy()]
    regs["not_revoked"] = revoked.isna().to_numpy()[regs["cert"].to_numpy()]
    own = set(zip(ol["cert"].tolist(), ol["olabel"].tolist()))
    regs["is_o"] = [(c, k) in own for c, k in zip(regs["cert"].tolist(), regs["key"].tolist())]

    labels = _label_pairs(set(regs["key"]) | set(ol["olabel"]), min_label_len)
    suffixes = _suffix_pairs(set(regs["suffix"]))
    candidates: list[pd.DataFrame] = []

    # (a) the subject O
    from_o = regs[~regs["is_o"]][["cert", "registrable", "key"]].merge(ol, on="cert")
    from_o = from_o.astype({"key": object, "olabel": object}).merge(labels, left_on=["key", "olabel"], right_on=["x", "y"])
    if not from_o.empty:
        candidates.append(from_o.assign(source="subject_o", scope="label", neighbour=from_o["olabel"]))

    pairs = _registrable_pairs(regs, labels, suffixes)
    if not pairs.empty:
        keep = ["cert", "registrable", "order", "nb", "okey", "bundle", *_RANK_COLUMNS]
        side = regs[keep].astype({"registrable": object})
        mine = side.merge(pairs, on="registrable")
        theirs = side.add_suffix("_n")

        # (b) another SAN of the same certificate
        same = mine[~mine["bundle"]].merge(
            theirs, left_on=["cert", "registrable_n"], right_on=["cert_n", "registrable_n"]
        )
        less, tied = _less_legitimate(same)
        same = same[less | (tied & (same["order"].to_numpy() > same["order_n"].to_numpy()))]
        if not same.empty:
            candidates.append(same.assign(source="same_cert", neighbour=same["registrable_n"]))

        # (c) the subscriber's other certificates: same organisation, or a shared registrable domain
        holders = regs[["cert", "registrable", "nb", "okey"]].astype({"registrable": object}).add_suffix("_n")
        by_org = _nearest_witness(
            mine[mine["okey"] != ""], holders[holders["okey_n"] != ""],
            ["registrable_n", "okey"], ["registrable_n", "okey_n"],
        )
        by_org["link"] = "organisation " + by_org["okey"].astype(str)
        linkable = regs[~regs["bundle"]][["cert", "registrable"]].astype({"registrable": object})
        shared = mine[~mine["bundle"]].merge(linkable.rename(columns={"registrable": "shared"}), on="cert")
        shared = shared[(shared["shared"] != shared["registrable"]) & (shared["shared"] != shared["registrable_n"])]
        holders_shared = holders.merge(
            linkable.rename(columns={"cert": "cert_n", "registrable": "shared"}), on="cert_n"
        )
        holders_shared = holders_shared[holders_shared["shared"] != holders_shared["registrable_n"]]
        by_domain = _nearest_witness(shared, holders_shared, ["registrable_n", "shared"], ["registrable_n", "shared"])
        by_domain["link"] = "shared domain " + by_domain["shared"].astype(str)
        other = pd.concat([by_org, by_domain], ignore_index=True)
        other = other[other["cert"] != other["cert_n"]]
        if not other.empty:
            other["gap"] = (other["nb"] - other["nb_n"]).abs()
            other = other.sort_values(["gap", "link"]).drop_duplicates(["cert", "registrable", "registrable_n"])
            other = other.drop(columns=[c for c in other.columns if c.endswith("_n") and c != "registrable_n"
                                        and c not in ("cert_n", "nb_n")])
            ranks = regs[["cert", "registrable", *_RANK_COLUMNS]].astype({"registrable": object}).add_suffix("_n")
            other = other.merge(ranks, on=["cert_n", "registrable_n"])
            less, tied = _less_legitimate(other)
            other = other[less | tied]
            if not other.empty:
                candidates.append(other.assign(source="other_cert", neighbour=other["registrable_n"]))

    if not candidates:
        return empty_frame(FINDING_COLUMNS)
    return _findings(candidates, regs, sans, raw_o, sha)


def _findings(
    candidates: list[pd.DataFrame], regs: pd.DataFrame, sans: pd.DataFrame, raw_o: list[str], sha: np.ndarray
) -> pd.DataFrame:
    """One finding per (certificate, suspect registrable), from its best evidence."""
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
    best = list(found.drop_duplicates(["cert", "registrable"]).itertuples(index=False))
    wanted = {(int(r.cert), r.registrable) for r in best}
    wanted |= {(int(r.cert), r.neighbour) for r in best if r.source == "same_cert"}
    wanted |= {(c, n) for c, n, _ in witnesses.values()}
    names = _sans_of(sans, wanted)
    first = regs.drop_duplicates("registrable")
    key_of = dict(zip(first["registrable"].tolist(), first["key"].tolist()))
    suffix_of = dict(zip(first["registrable"].tolist(), first["suffix"].tolist()))
    count_of = dict(zip(first["registrable"].tolist(), first["reg_count"].tolist()))

    out = []
    for row in best:
        cert = int(row.cert)
        mine = names[(cert, row.registrable)]
        san = mine[0]
        if row.scope == "suffix":
            edit = edit_between(suffix_of[row.registrable], suffix_of[row.neighbour])
            shown, shown_n = row.registrable, row.neighbour
            where = f" in the public suffix (.{suffix_of[row.registrable]} instead of .{suffix_of[row.neighbour]})"
        else:
            shown = key_of[row.registrable]
            shown_n = row.neighbour if row.source == "subject_o" else key_of[row.neighbour]
            edit = edit_between(shown, shown_n)
            where = ""
        if edit is None:  # cannot happen for verified pairs; never report an unexplained pair
            continue
        sentence = f"{san}: '{shown}' is '{shown_n}' with {edit.detail}{where}; "
        neighbour_name = ""
        if row.source == "subject_o":
            neighbour_name = raw_o[cert]
            sentence += f"'{shown_n}' is the subject O '{_clip(neighbour_name)}'"
        elif row.source == "same_cert":
            neighbour_name = names[(cert, row.neighbour)][0]
            sentence += f"'{row.neighbour}' is also on this certificate ({neighbour_name})"
        related, link = "", ""
        if (cert, row.registrable) in witnesses:
            w_cert, w_reg, link = witnesses[(cert, row.registrable)]
            related = str(sha[w_cert])
            w_name = names[(w_cert, w_reg)][0]
            if row.source == "other_cert":
                neighbour_name = w_name
            else:
                sentence += "; "
            sentence += (
                f"'{w_reg}' ({w_name}) is on certificate {related[:16]}… of the same subscriber ({_clip(link)})"
            )
        count = int(count_of[row.registrable])
        count_n = None if row.source == "subject_o" else int(count_of[row.neighbour])
        if count_n is not None:
            sentence += f"; {row.neighbour} is named in {count_n} of the CA's certificates, {row.registrable} in {count}"
        established = count >= ESTABLISHED_CERTIFICATES
        if established:
            if count_n is None:
                sentence += f"; {row.registrable} is named in {count} of the CA's certificates"
            sentence += (": a name certified this often is likely one the subscriber really uses "
                         "(a second site of one company), so it weighs less")
        detail = {
            "neighbour": row.neighbour,
            "neighbour_name": neighbour_name,
            "neighbour_source": row.source,
            "edit": edit.kind,
            "edit_detail": edit.detail,
            "position": edit.position,
            "scope": row.scope,
            "suffix": suffix_of[row.registrable],
            "neighbour_suffix": suffix_of.get(row.neighbour, "") if row.source != "subject_o" else "",
            "established": established,
            "suspect_label": shown,
            "neighbour_label": shown_n,
            "sans": mine,
            "suspect_certificates": count,
            "neighbour_certificates": count_n,
            "related_link": link,
        }
        out.append(
            Finding(
                sha256=str(sha[cert]),
                code=CODE,
                evidence=sentence + ".",
                name=san,
                related_sha256=related,
                detail=as_json(detail),
            )
        )
    return findings_frame(out).sort_values(["sha256", "name"], ignore_index=True)
