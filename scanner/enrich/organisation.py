"""Subject organisation (O) names as comparable labels: "CUALTIS S.L.U" -> "cualtis".

The label is what a subscriber would register as a domain: case-folded, accents stripped, the
legal form dropped ("S.L.U", "GmbH & Co. KG", "Pty Ltd"...), punctuation and spaces removed, ASCII
letters and digits only. Values come from certificates and are attacker-controlled, so input is
capped in length and never interpreted beyond this.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

#: Legal forms, letters only (dots and spaces between the letters are allowed when matching).
LEGAL_FORMS: tuple[str, ...] = (
    # Spain, Portugal, Latin America
    "slu", "sl", "sa", "sau", "sal", "sll", "slne", "sad", "scoop", "sccl", "aie", "lda", "ltda",
    "sadecv", "sabdecv", "sapidecv", "sderl", "sderldecv", "srl", "sas", "eirl", "eireli", "me",
    # France, Belgium, Luxembourg, Switzerland, Italy
    "sarl", "sasu", "eurl", "sca", "scs", "snc", "sci", "scp", "sprl", "scrl", "bvba", "cvba",
    "spa", "srls", "sapa", "sc",
    # German-speaking countries, Netherlands, Nordics, Baltics
    "gmbh", "mbh", "ag", "kg", "kgaa", "ohg", "ug", "ev", "gbr", "bv", "nv", "vof", "cv",
    "oy", "oyj", "ab", "publ", "as", "asa", "aps", "ou", "se", "hf", "ehf",
    # Central and Eastern Europe
    "sro", "spzoo", "spj", "kft", "zrt", "nyrt", "bt", "doo", "dd", "ad", "ood", "eood", "srl",
    # English-speaking countries and Asia
    "ltd", "limited", "inc", "incorporated", "llc", "llp", "lp", "lllp", "pllc", "pc", "corp",
    "corporation", "co", "company", "plc", "pty", "pvt", "private", "ulc", "ltee", "bhd", "sdnbhd",
    "kk", "gk", "tbk", "pt", "jsc", "pjsc", "ojsc", "cjsc", "ooo", "zao", "oao",
)

#: Words too common in organisation names to identify a subscriber on their own.
GENERIC_WORDS: frozenset[str] = frozenset(
    (
        "bank", "banco", "banca", "banque", "bancaria", "caja", "credit", "credito", "trust",
        "capital", "finance", "financial", "insurance", "seguros", "group", "grupo", "groupe",
        "gruppe", "gruppo", "holding", "holdings", "services", "servicios", "service", "servicio",
        "solutions", "soluciones", "systems", "sistemas", "international", "internacional",
        "global", "company", "compania", "consulting", "consultores", "technologies", "technology",
        "tecnologia", "tecnologias", "digital", "networks", "network", "software", "media",
        "energy", "energia", "partners", "management", "gestion", "investments", "inversiones",
        "comercial", "sociedad", "association", "asociacion", "foundation", "fundacion",
        "university", "universidad", "universitat", "universite", "instituto", "institute",
        "institut", "center", "centre", "centro", "hospital", "health", "salud", "public",
        "publica", "publico", "national", "nacional", "government", "gobierno", "ministerio",
        "ministry", "department", "ayuntamiento", "council", "consejo", "general", "colegio",
        "europe", "europa", "espana", "iberia", "america", "americas", "deutschland", "france",
        "italia", "the", "and", "los", "las", "del"
    )
)

_MAX_INPUT = 256  # longer O values are truncated: real names are far shorter


def _trie_pattern(forms: tuple[str, ...]) -> str:
    """The alternation of the forms (letters, dots and spaces allowed between them) as a trie of letters.

    It matches what the plain alternation matches, and only where the alternation starts is used,
    so the order of alternatives does not matter; a trie tries one letter per step instead of every
    form at every word start, many times faster on a million subject O values.
    """
    trie: dict[str, dict] = {}
    for form in set(forms):
        node = trie
        for ch in form:
            node = node.setdefault(ch, {})
        node[""] = {}

    def rest(node: dict) -> str:
        children = [re.escape(ch) + rest(child) for ch, child in sorted(node.items()) if ch]
        if not children:
            return ""
        more = r"[.\s]*(?:" + "|".join(children) + ")"
        return f"(?:{more})?" if "" in node else more

    return "(?:" + "|".join(re.escape(ch) + rest(child) for ch, child in sorted(trie.items())) + ")"


_FORM_AT_END = re.compile(r"(?<=[\s,&(/])" + _trie_pattern(LEGAL_FORMS) + r"\.?$")
_SEPARATOR = re.compile(r"[\s,&(/]")
_TRIM = " \t,.;:-&/()'\"+"
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_WORD_BREAK = re.compile(r"[\s,;:/()&+]+")  # hyphens and dots stay inside a word: "coca-cola"
_ARTICLE = re.compile(r"^(?:the|la|el|le|les|los|las|die|der|das|il|lo)\s+")


def fold(text: str) -> str:
    """Case-fold and strip accents ("Telefónica" -> "telefonica")."""
    if text.isascii():  # nothing to decompose: the common case, and 10x cheaper
        return text[:_MAX_INPUT].casefold()
    decomposed = unicodedata.normalize("NFKD", text[:_MAX_INPUT].casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _form_at_end(text: str) -> re.Match[str] | None:
    """_FORM_AT_END.search(text), tried only just after each separator: where its lookbehind lets it start."""
    for sep in _SEPARATOR.finditer(text):
        match = _FORM_AT_END.match(text, sep.end())
        if match:
            return match
    return None


def strip_legal_forms(text: str) -> str:
    """Drop trailing legal forms, repeatedly ("foo gmbh & co. kg" -> "foo"); never to nothing."""
    current = text.strip(_TRIM)
    while True:
        match = _form_at_end(current)
        if not match:
            return current
        shorter = current[: match.start()].strip(_TRIM)
        if not _NOT_ALNUM.sub("", shorter):
            return current
        current = shorter


def _key_of(core: str) -> str:
    return _NOT_ALNUM.sub("", _ARTICLE.sub("", core) or core)


@lru_cache(maxsize=262_144)
def normalise_organisation(organisation: str | None) -> str:
    """The comparable label of a subject O: "Banco Santander, S.A." -> "bancosantander" ('' if none)."""
    if not organisation or not isinstance(organisation, str):
        return ""
    return _key_of(strip_legal_forms(fold(organisation)))


def key_and_labels(organisation: str | None, *, min_len: int = 4, max_words: int = 8) -> tuple[str, tuple[str, ...]]:
    """(normalise_organisation, organisation_labels) of one O, its legal forms stripped once (not cached)."""
    if not organisation or not isinstance(organisation, str):
        return "", ()
    core = strip_legal_forms(fold(organisation))
    whole = _key_of(core)
    if not whole:
        return "", ()
    labels = [whole] if len(whole) >= min_len else []
    for word in [_NOT_ALNUM.sub("", w) for w in _WORD_BREAK.split(core)][:max_words]:
        if len(word) >= min_len and word not in GENERIC_WORDS and word not in labels:
            labels.append(word)
    return whole, tuple(labels)


# Printable ASCII only: there Python's and Arrow's (RE2's) \\s both mean the space alone, casefold
# is lower case, and $ is the end (a final newline is no printable character).
_PLAIN = r"^[\x20-\x7e]*$"
# Searched for and cut off, no capture (RE2 finds its leftmost start, where the lazy head of the
# Python pattern ends); the separator it also cuts is one _TRIM would strip anyway.
_FORM_AT_END_RE2 = r"[\s,&(/]" + _trie_pattern(LEGAL_FORMS) + r"\.?$"


def _plain_keys_and_words(values: "pa.Array") -> tuple["np.ndarray", "pa.Array", "pa.ListArray"]:
    """(the printable ASCII values' positions, their keys, their words): key_and_labels' steps, all at once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    plain = pc.match_substring_regex(values, _PLAIN).fill_null(False)
    plain = pc.and_(plain, pc.greater(pc.binary_length(values), 0))
    at = np.flatnonzero(plain.to_numpy(zero_copy_only=False))
    text = pc.utf8_slice_codeunits(pc.ascii_lower(values.take(pa.array(at, type=pa.int64()))), 0, _MAX_INPUT)
    core = pc.utf8_trim(text, _TRIM)
    active = np.arange(len(core))  # strip_legal_forms, one round for every value still shortening
    while len(active):
        current = core.take(pa.array(active))
        head = pc.replace_substring_regex(current, _FORM_AT_END_RE2, "", max_replacements=1)
        shorter = pc.utf8_trim(head, _TRIM)
        matched = pc.less(pc.binary_length(head), pc.binary_length(current))
        strip = pc.and_(matched, pc.match_substring_regex(shorter, "[a-z0-9]")).fill_null(False)
        keep = strip.to_numpy(zero_copy_only=False)
        if not keep.any():
            break
        mask = np.zeros(len(core), dtype=bool)
        mask[active[keep]] = True
        core = pc.replace_with_mask(core, pa.array(mask), shorter.filter(strip))
        active = active[keep]
    without_article = pc.replace_substring_regex(core, _ARTICLE.pattern, "", max_replacements=1)
    whole = pc.if_else(pc.equal(without_article, ""), core, without_article)
    whole = pc.replace_substring_regex(whole, _NOT_ALNUM.pattern, "")
    words = pc.split_pattern_regex(core, _WORD_BREAK.pattern)
    cleaned = pc.replace_substring_regex(words.flatten(), _NOT_ALNUM.pattern, "")
    return at, whole, pa.ListArray.from_arrays(words.offsets, cleaned)


def keys_and_labels(organisations: list[str], *, min_len: int = 4, max_words: int = 8) -> list[tuple[str, tuple[str, ...]]]:
    """key_and_labels of each O, the printable ASCII ones all at once with Arrow (the same answers)."""
    import pyarrow as pa

    out: list[tuple[str, tuple[str, ...]] | None] = [None] * len(organisations)
    at, whole, words = _plain_keys_and_words(pa.array(organisations, type=pa.string()))
    for i, key, parts in zip(at.tolist(), whole.to_pylist(), words.to_pylist()):
        if not key:
            out[i] = ("", ())
            continue
        labels = [key] if len(key) >= min_len else []
        for word in parts[:max_words]:
            if len(word) >= min_len and word not in GENERIC_WORDS and word not in labels:
                labels.append(word)
        out[i] = (key, tuple(labels))
    return [got if got is not None else key_and_labels(o, min_len=min_len, max_words=max_words)
            for got, o in zip(out, organisations)]


def organisation_table(organisations: "pa.Array", *, min_len: int = 4, max_words: int = 8
                       ) -> tuple["pa.Array", "np.ndarray", "pa.Array"]:
    """key_and_labels of each value of a string array without nulls, as columns and never a Python string each.

    (the key of each value, the value each label belongs to, the labels): a value's labels are
    consecutive and in key_and_labels' order.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(organisations)
    at, whole, words = _plain_keys_and_words(organisations)
    # The whole key first (position -1), then the words: the first of equal labels of a value is kept.
    offsets = words.offsets.to_numpy()
    flat = words.values
    parent = np.repeat(np.arange(len(words), dtype=np.int64), np.diff(offsets))
    position = np.arange(len(flat), dtype=np.int64) - offsets[:-1][parent]
    whole_length = pc.utf8_length(whole).to_numpy(zero_copy_only=False)
    word_ok = (position < max_words) & (pc.utf8_length(flat).to_numpy(zero_copy_only=False) >= min_len)
    word_ok &= ~pc.is_in(flat, value_set=pa.array(sorted(GENERIC_WORDS))).to_numpy(zero_copy_only=False)
    word_ok &= whole_length[parent] > 0
    whole_ok = (whole_length >= min_len) & (whole_length > 0)
    labels = pa.concat_arrays([whole.filter(pa.array(whole_ok)), flat.filter(pa.array(word_ok))])
    owner = np.concatenate([np.flatnonzero(whole_ok), parent[word_ok]])
    rank = np.concatenate([np.full(int(whole_ok.sum()), -1, np.int64), position[word_ok]])
    codes = pc.dictionary_encode(labels).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ordered = np.lexsort((rank, owner))
    packed = owner[ordered] * (int(codes.max(initial=0)) + 1) + codes[ordered]
    kept = ordered[~pd.Series(packed).duplicated().to_numpy()]  # the first of each, in (owner, rank) order
    owner, labels = at[owner[kept]], labels.take(pa.array(kept, type=pa.int64()))
    # The other values one at a time (a control character, non-ASCII...).
    rest = np.ones(n, dtype=bool)
    rest[at] = False
    others = np.flatnonzero(rest)
    slow = [key_and_labels(o, min_len=min_len, max_words=max_words)
            for o in organisations.take(pa.array(others, type=pa.int64())).to_pylist()]
    where = np.empty(n, dtype=np.int64)
    where[at] = np.arange(len(at))
    where[others] = len(at) + np.arange(len(others))
    keys = pa.concat_arrays([whole, pa.array([k for k, _ in slow], type=pa.string())]).take(pa.array(where))
    owner = np.concatenate([owner, np.repeat(others, [len(lab) for _, lab in slow]).astype(np.int64)])
    labels = pa.concat_arrays([labels, pa.array([x for _, lab in slow for x in lab], type=pa.string())])
    order = np.argsort(owner, kind="stable")
    return keys, owner[order], labels.take(pa.array(order, type=pa.int64()))


@lru_cache(maxsize=262_144)
def organisation_labels(organisation: str | None, *, min_len: int = 4, max_words: int = 8) -> tuple[str, ...]:
    """Labels a subscriber with this O might register: the whole name, then its distinctive words.

    Subscribers often register only the distinctive word ("santander.es" for "Banco Santander,
    S.A."), so a typo of that word must be caught too; generic words ("banco", "group") and short
    ones are left out because they would pair with unrelated names.
    """
    return key_and_labels(organisation, min_len=min_len, max_words=max_words)[1]
