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


def column_data(column: pd.Series) -> tuple[object, tuple] | None:
    """(the column's Arrow data, what identifies it: each chunk's offset, length and buffer addresses), None if not Arrow.

    Equal for a column and its copies that share the data (a reset_index), so what is derived from
    one can be kept for the other; the data is returned so that a memo can hold it (its buffers'
    addresses are then not reused).
    """
    arrow = getattr(column.array, "__arrow_array__", None)
    if arrow is None:
        return None
    data = arrow()
    chunks = data.chunks if isinstance(data, pa.ChunkedArray) else [data]
    return data, tuple((c.offset, len(c), *(b.address if b is not None else 0 for b in c.buffers())) for c in chunks)


def subject_o_column(certs: pd.DataFrame, memo: dict) -> tuple[pa.Array, pa.DictionaryArray]:
    """(subject_o_values, the same dictionary-encoded), kept in memo for the same column data.

    The two detectors reading them get equal columns (one a reset_index of the other, sharing its
    Arrow data): hashing a million values twice cost almost half a second.
    """
    if "subject_o" not in certs.columns:
        values = subject_o_values(certs)
        return values, pc.dictionary_encode(values)
    data = column_data(certs["subject_o"])
    got = memo.get("subject_o")
    if data is not None and got is not None and got[0] == data[1]:
        return got[2], got[3]
    values = subject_o_values(certs)
    encoded = pc.dictionary_encode(values)
    if data is not None:
        memo["subject_o"] = (data[1], data[0], values, encoded)
    return values, encoded


def organisations(certs: pd.DataFrame, classified: Classified | None, min_label_len: int) -> Organisations:
    """The Organisations of these certificates; the distinct O's facts are kept in classified.memo for the next detector.

    A million O values are mostly repeats and often printable ASCII: they are encoded in Arrow and
    normalised all at once (organisation_table), with no Python string per value.
    """
    memo = classified.memo if classified is not None else {}
    encoded = subject_o_column(certs, memo)[1]
    distinct = encoded.dictionary
    got = memo.get(("organisations", min_label_len))
    if got is None or not got[0].equals(distinct):
        keys, owner, labels = organisation_table(distinct, min_len=min_label_len)
        key, key_names = codes_of(keys)
        got = memo[("organisations", min_label_len)] = (distinct, (key, key_names, owner, labels))
    key, key_names, owner, labels = got[1]
    return Organisations(encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), key, key_names,
                         pc.index(key_names, "").as_py(), owner, labels)
