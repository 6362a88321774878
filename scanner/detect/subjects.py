"""What the detectors read of each certificate's subject O, derived once per distinct value and shared."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scanner.detect.namecodes import codes_of
from scanner.enrich.organisation import organisation_table
from scanner.parse.domains import Classified, arrow_strings


def subject_o_values(certs: pd.DataFrame) -> pa.Array:
    """The subject O of every certificate as one Arrow string array ('' where missing or not a str)."""
    if "subject_o" not in certs.columns:
        return pa.array([""] * len(certs), type=pa.string())
    return arrow_strings(certs["subject_o"]).fill_null("")


@dataclass(frozen=True)
class Organisations:
    """Each certificate's organisation key and labels (organisation.key_and_labels) as codes."""

    row: np.ndarray  # per certificate: its O among the distinct values
    key: np.ndarray  # per distinct O: its organisation key's code
    keys: pa.Array  # code -> organisation key
    no_key: int  # the code of '' (no key), -1 if every O has a key
    label_owner: np.ndarray  # per label: its distinct O (ascending; an O's labels in order)
    labels: pa.Array


def organisations(certs: pd.DataFrame, classified: Classified | None, min_label_len: int) -> Organisations:
    """The Organisations of these certificates; the distinct O's facts are kept in classified.memo for the next detector.

    A million O values are mostly repeats and often printable ASCII: they are encoded in Arrow and
    normalised all at once (organisation_table), with no Python string per value.
    """
    encoded = pc.dictionary_encode(subject_o_values(certs))
    distinct = encoded.dictionary
    memo = classified.memo if classified is not None else {}
    got = memo.get(("organisations", min_label_len))
    if got is None or not got[0].equals(distinct):
        keys, owner, labels = organisation_table(distinct, min_len=min_label_len)
        key, key_names = codes_of(keys)
        got = memo[("organisations", min_label_len)] = (distinct, (key, key_names, owner, labels))
    key, key_names, owner, labels = got[1]
    return Organisations(encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), key, key_names,
                         pc.index(key_names, "").as_py(), owner, labels)
