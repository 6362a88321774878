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
_FORM_AT_END = re.compile(
    r"(?<=[\s,&(/])(?:"
    + "|".join(r"[.\s]*".join(map(re.escape, form)) for form in sorted(set(LEGAL_FORMS), key=len, reverse=True))
    + r")\.?$"
)
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


def strip_legal_forms(text: str) -> str:
    """Drop trailing legal forms, repeatedly ("foo gmbh & co. kg" -> "foo"); never to nothing."""
    current = text.strip(_TRIM)
    while True:
        match = _FORM_AT_END.search(current)
        if not match:
            return current
        shorter = current[: match.start()].strip(_TRIM)
        if not _NOT_ALNUM.sub("", shorter):
            return current
        current = shorter


@lru_cache(maxsize=262_144)
def normalise_organisation(organisation: str | None) -> str:
    """The comparable label of a subject O: "Banco Santander, S.A." -> "bancosantander" ('' if none)."""
    if not organisation or not isinstance(organisation, str):
        return ""
    core = strip_legal_forms(fold(organisation))
    return _NOT_ALNUM.sub("", _ARTICLE.sub("", core) or core)


@lru_cache(maxsize=262_144)
def organisation_labels(organisation: str | None, *, min_len: int = 4, max_words: int = 8) -> tuple[str, ...]:
    """Labels a subscriber with this O might register: the whole name, then its distinctive words.

    Subscribers often register only the distinctive word ("santander.es" for "Banco Santander,
    S.A."), so a typo of that word must be caught too; generic words ("banco", "group") and short
    ones are left out because they would pair with unrelated names.
    """
    whole = normalise_organisation(organisation)
    if not whole:
        return ()
    labels = [whole] if len(whole) >= min_len else []
    words = [_NOT_ALNUM.sub("", w) for w in _WORD_BREAK.split(strip_legal_forms(fold(organisation or "")))]
    for word in words[:max_words]:
        if len(word) >= min_len and word not in GENERIC_WORDS and word not in labels:
            labels.append(word)
    return tuple(labels)
