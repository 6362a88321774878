"""What the detectors read of each certificate's subject O, derived once per distinct value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scanner.enrich.subscribers import organisation_facts
from scanner.parse.domains import Classified, arrow_strings


def subject_o_values(certs: pd.DataFrame) -> pa.Array:
    """The subject O of every certificate as one Arrow string array ('' where missing or not a str)."""
    if "subject_o" not in certs.columns:
        return pa.array([""] * len(certs), type=pa.string())
    return arrow_strings(certs["subject_o"]).fill_null("")


def organisation_codes(values: pa.Array, classified: Classified | None, min_label_len: int
                       ) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
    """organisation_facts of a column of O values (subject_o_values), the distinct ones found by Arrow.

    A million O values are mostly repeats: encoding them in Arrow and asking organisation_facts
    about the distinct ones alone spares it a Python list and an object factorize of the whole column.
    """
    memo = classified.memo.setdefault(("organisation", min_label_len), {}) if classified is not None else None
    encoded = pc.dictionary_encode(values)
    _, per_o, keys = organisation_facts(encoded.dictionary.to_pylist(), memo, min_label_len=min_label_len)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), per_o, keys
