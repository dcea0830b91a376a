"""Content keys, payload AEAD, sealed boxes, rotation and the mDNS space tag (docs/design/security.md §2, §3, §5)."""

from __future__ import annotations

import os

import pytest

from mocksync.space.errors import KeyMaterialError
from mocksync.space.identity import Identity
from mocksync.space.keys import (
    new_content_key,
    open_content_key,
    open_payload,
    open_sealed,
    payload_generation,
    rotate,
    seal_content_key,
    seal_payload,
    seal_to,
    space_tag,
    tag_matches,
)

SPACE = bytes(range(16))


def test_payload_roundtrip_and_ciphertext_hides_plaintext():
    key = new_content_key()
    secret = b'{"name": "payments-api", "route": "/secret-endpoint"}'
    blob = seal_payload(key, 3, secret, b"header")
    assert b"secret-endpoint" not in blob
    assert payload_generation(blob) == 3
    assert open_payload({3: key}, blob, b"header") == secret
    assert seal_payload(key, 3, secret, b"header") != blob  # fresh nonce


def test_payload_tamper_wrong_aad_wrong_key_and_unknown_generation_are_refused():
    key = new_content_key()
    blob = seal_payload(key, 1, b"data", b"aad")
    with pytest.raises(KeyMaterialError, match="failed authentication"):
        open_payload({1: key}, blob[:-1] + bytes([blob[-1] ^ 1]), b"aad")
    with pytest.raises(KeyMaterialError, match="failed authentication"):
        open_payload({1: key}, blob, b"other aad")
    with pytest.raises(KeyMaterialError, match="failed authentication"):
        open_payload({1: new_content_key()}, blob, b"aad")
    with pytest.raises(KeyMaterialError, match="generation 1"):
        open_payload({2: key}, blob, b"aad")
    # re-labelling the generation in the header breaks authentication too
    relabelled = blob[:1] + (2).to_bytes(4, "big") + blob[5:]
    with pytest.raises(KeyMaterialError, match="failed authentication"):
        open_payload({2: key}, relabelled, b"aad")
    with pytest.raises(KeyMaterialError, match="truncated"):
        open_payload({1: key}, blob[:10], b"aad")


def test_sealed_box_opens_only_for_its_device_and_context():
    alice, bob = Identity.generate("a", now=0), Identity.generate("b", now=0)
    box = seal_to(alice.box_public, b"s3cret", b"ctx")
    assert b"s3cret" not in box
    assert open_sealed(alice.box_key, box, b"ctx") == b"s3cret"
    with pytest.raises(KeyMaterialError, match="could not be opened"):
        open_sealed(bob.box_key, box, b"ctx")
    with pytest.raises(KeyMaterialError, match="could not be opened"):
        open_sealed(alice.box_key, box, b"other")
    with pytest.raises(KeyMaterialError, match="could not be opened"):
        open_sealed(alice.box_key, box[:-1] + bytes([box[-1] ^ 1]), b"ctx")


def test_sealed_content_key_is_bound_to_space_and_generation():
    dev = Identity.generate("d", now=0)
    key = new_content_key()
    blob = seal_content_key(dev.box_public, SPACE, 2, key)
    assert open_content_key(dev.box_key, SPACE, 2, blob) == key
    with pytest.raises(KeyMaterialError):
        open_content_key(dev.box_key, SPACE, 3, blob)
    with pytest.raises(KeyMaterialError):
        open_content_key(dev.box_key, bytes(16), 2, blob)


def test_rotation_seals_new_key_to_remaining_devices_only_and_keeps_old_keys_readable():
    a, b, removed = (Identity.generate(n, now=0) for n in "abr")
    keys = {1: new_content_key()}
    old = seal_payload(keys[1], 1, b"before removal")
    rot = rotate(keys, SPACE, {a.device_id: a.box_public, b.device_id: b.box_public})
    assert rot.generation == 2 and rot.key != keys[1]
    assert set(rot.sealed) == {a.device_id, b.device_id}
    for dev in (a, b):
        assert open_content_key(dev.box_key, SPACE, 2, rot.sealed[dev.device_id]) == rot.key
    for blob in rot.sealed.values():
        with pytest.raises(KeyMaterialError):
            open_content_key(removed.box_key, SPACE, 2, blob)
    ring = {**keys, 2: rot.key}
    assert open_payload(ring, old) == b"before removal"
    new = seal_payload(rot.key, 2, b"after removal")
    with pytest.raises(KeyMaterialError, match="generation 2"):
        open_payload(keys, new)  # what the removed device holds
    with pytest.raises(KeyMaterialError):
        rotate(keys, SPACE, {})


def test_space_tag_is_recognised_only_with_the_secret():
    key = new_content_key()
    nonce = os.urandom(16)
    tag = space_tag(key, nonce)
    assert len(tag) == 16 and int(tag, 16) >= 0
    assert tag_matches(key, nonce, tag)
    assert tag_matches(key, nonce, tag.upper())
    assert not tag_matches(new_content_key(), nonce, tag)  # a non-member cannot recognise it
    assert not tag_matches(key, os.urandom(16), tag)  # bound to the announcement's nonce
    assert space_tag(key, os.urandom(16)) != tag  # unlinkable across announcements
    assert not tag_matches(key, nonce, "zz" * 8)
    assert not tag_matches(key, nonce, "é" * 16)
    with pytest.raises(KeyMaterialError):
        space_tag(key, b"short")
    with pytest.raises(KeyMaterialError):
        space_tag(b"tiny", nonce)
