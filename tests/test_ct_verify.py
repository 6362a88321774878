"""Tree head signatures: real Sunlight checkpoint and real Pilot STH verify; tampered ones do not."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scanner.sources.ct.loglist import load_log_list
from scanner.sources.ct.verify import (
    TreeHead,
    VerifyError,
    sth_from_json,
    tree_head_input,
    verify_checkpoint,
    verify_tree_head,
)
from tests.loopback.ct_server import LogKey

ROME = "static-ct-api_rome2026h1_checkpoint"


def rome(real_data):
    log = json.loads((real_data / ROME / "log.v3.json").read_text())
    return (real_data / ROME / "checkpoint").read_bytes(), base64.b64decode(log["key"])


def test_the_real_sunlight_checkpoint_verifies_against_its_log_key(real_data):
    text, key = rome(real_data)
    cp, head = verify_checkpoint(text, key, "rome2026h1.example.org", "rome2026h1")
    assert (cp.tree_size, head.timestamp) == (300, 1767139200000)
    assert base64.b64encode(cp.root_hash).decode() == "lCkHUpkmVBEms2r2T1K6Og69+wUuuN3MIEW1/ezu2v0="


@pytest.mark.parametrize("old,new", [(b"\n300\n", b"\n301\n"), (b"lCkH", b"lCkI"),
                                     (b"rome2026h1.example.org\n", b"rome2026h2.example.org\n")])
def test_a_tampered_sunlight_checkpoint_fails_naming_the_log_and_size(real_data, old, new):
    text, key = rome(real_data)
    with pytest.raises(VerifyError, match="rome2026h1"):
        verify_checkpoint(text.replace(old, new, 1), key, "rome2026h1.example.org", "rome2026h1")


def test_a_checkpoint_signature_by_another_key_is_refused(real_data):
    text, _ = rome(real_data)
    with pytest.raises(VerifyError, match="no signature .* key ID"):
        verify_checkpoint(text, LogKey().spki, "rome2026h1.example.org", "rome2026h1")


def test_the_real_pilot_2014_tree_head_verifies_with_the_key_from_the_log_list(real_data):
    logs = load_log_list(real_data / "google_ct_all_logs_list_v3_2025-05-05.json")
    pilot = next(lg for lg in logs if lg.name == "Google 'Pilot' log")
    head = sth_from_json(json.loads((real_data / "ct_get-sth_pilot_2014.json").read_text()), pilot.name)
    verify_tree_head(pilot.key, head, pilot.name)
    forged = TreeHead(head.tree_size + 1, head.timestamp, head.root_hash, head.signature)
    with pytest.raises(VerifyError, match="Pilot.*size 3721783"):
        verify_tree_head(pilot.key, forged, pilot.name)


def test_the_placeholder_pilot_signature_fails(real_data):
    logs = load_log_list(real_data / "google_ct_all_logs_list_v3_2025-05-05.json")
    pilot = next(lg for lg in logs if lg.name == "Google 'Pilot' log")
    head = sth_from_json(json.loads((real_data / "ct_get-sth_pilot_4entries_syntheticsig.json").read_text()),
                         pilot.name)
    with pytest.raises(VerifyError, match="size 4"):
        verify_tree_head(pilot.key, head, pilot.name)


def test_an_rsa_log_tree_head_verifies_and_a_wrong_algorithm_byte_does_not():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    root = b"\x07" * 32
    sig = key.sign(tree_head_input(5, 10, root), padding.PKCS1v15(), hashes.SHA256())
    verify_tree_head(spki, TreeHead(10, 5, root, b"\x04\x01" + len(sig).to_bytes(2, "big") + sig), "rsa log")
    with pytest.raises(VerifyError, match="algorithm 3"):
        verify_tree_head(spki, TreeHead(10, 5, root, b"\x04\x03" + len(sig).to_bytes(2, "big") + sig), "rsa log")
