"""Merkle hashing, tile arithmetic and entry parsing, checked against real CT log data."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from scanner.sources.ct.leaf import (
    PRECERT_ENTRY,
    X509_ENTRY,
    LeafError,
    iter_tile_leaves,
    parse_rfc6962_entry,
)
from scanner.sources.ct.merkle import (
    CompactRange,
    aligned_pieces,
    perfect_root,
    root_of,
    tile_path,
    tile_width,
)
from tests.loopback.ct_server import mth

NAVIGLI = "static-ct-api_navigli2025h2/tile"


def level0(real_data, name: str) -> list[bytes]:
    body = (real_data / NAVIGLI / "0" / name).read_bytes()
    return [body[i:i + 32] for i in range(0, len(body), 32)]


def test_tile_paths_use_three_digit_groups_with_x_prefixes():
    assert tile_path(1234067) == "x001/x234/067"
    assert tile_path(3) == "003"
    assert tile_path(1000) == "x001/000"


def test_tile_width_is_partial_only_at_the_right_edge():
    assert tile_width(0, 3, 778) == 10
    assert tile_width(0, 2, 778) == 256
    assert tile_width(1, 0, 778) == 3
    assert tile_width(0, 4, 1024) == 0


@pytest.mark.parametrize("n", [1, 2, 3, 5, 255, 256, 257, 778, 1000])
def test_compact_range_root_equals_the_rfc_definition(n):
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    assert root_of(leaves) == mth(leaves)


def test_compact_range_survives_a_json_round_trip_and_keeps_growing():
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(300)]
    cr = CompactRange()
    cr.extend(leaves[:123])
    again = CompactRange.from_json(123, json.loads(json.dumps(cr.to_json())))
    again.extend(leaves[123:])
    assert again.root() == mth(leaves)


def test_aligned_pieces_rebuild_the_same_root_as_the_leaves():
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(778)]
    cr = CompactRange()
    for h, i in aligned_pieces(0, 778):
        cr.push(h, mth(leaves[i << h:(i + 1) << h]))
    assert cr.root() == mth(leaves)


def test_navigli_root_from_hash_tiles_matches_across_the_partial_tile(real_data):
    full = level0(real_data, "000") + level0(real_data, "001") + level0(real_data, "002")
    partial = level0(real_data, "003.p/10")
    last = level0(real_data, "003")
    assert partial == last[:10]  # the partial tile is a prefix of the later full tile
    from_partial = CompactRange()
    for tile in (full[:256], full[256:512], full[512:]):
        from_partial.push(8, perfect_root(tile))
    from_partial.extend(partial)
    assert from_partial.root() == mth(full + partial) != mth(full + last)
    assert root_of(full + last) == mth(full + last)


def test_every_navigli_data_tile_leaf_hashes_to_its_level0_entry(real_data):
    for name in ("000", "001", "002", "003", "003.p/10"):
        entries = list(iter_tile_leaves((real_data / NAVIGLI / "data" / name).read_bytes()))
        assert [e.leaf_hash for e in entries] == level0(real_data, name)
        assert all(e.entry_type == PRECERT_ENTRY and len(e.issuer_key_hash or b"") == 32 for e in entries)
        assert all(len(fp) == 32 for e in entries for fp in e.chain)


def test_a_truncated_data_tile_raises_a_leaf_error_naming_the_field(real_data):
    body = (real_data / NAVIGLI / "data" / "003.p/10").read_bytes()
    with pytest.raises(LeafError, match="needs"):
        list(iter_tile_leaves(body[:-7]))


def test_pilot_entries_parse_as_x509_entries_with_their_chains(real_data):
    body = json.loads((real_data / "ct_get-entries_pilot_2013_4entries.json").read_text())
    entries = [parse_rfc6962_entry(base64.b64decode(e["leaf_input"]), base64.b64decode(e["extra_data"]))
               for e in body["entries"]]
    assert [e.entry_type for e in entries] == [X509_ENTRY] * 4
    assert [len(e.chain) for e in entries] == [2, 3, 3, 2]
    assert entries[0].timestamp == 1364258252899


def test_precert_entry_carries_issuer_key_hash_and_the_full_precertificate(real_data):
    body = json.loads((real_data / "ct_get-entries_precert_and_cert_testca.json").read_text())
    e = body["entries"][0]
    entry = parse_rfc6962_entry(base64.b64decode(e["leaf_input"]), base64.b64decode(e["extra_data"]))
    assert entry.entry_type == PRECERT_ENTRY
    assert entry.issuer_key_hash.hex().startswith("3760e279")
    assert b"\x06\x0a\x2b\x06\x01\x04\x01\xd6\x79\x02\x04\x03" in entry.cert_der  # the poison extension OID


def test_a_leaf_with_trailing_bytes_is_refused():
    body = b"\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x00" + b"\x00\x00\x01\x30" + b"\x00\x00" + b"junk"
    with pytest.raises(LeafError, match="trailing"):
        parse_rfc6962_entry(body, b"\x00\x00\x00")
