"""Signed change sets: encoding, strict decoding, signatures, chains, limits."""

from __future__ import annotations

import datetime
import hashlib
import random
import uuid
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.changes import canonical, changeset
from mocksync.changes.changeset import (
    COMPRESS_THRESHOLD,
    MAX_CHANGESET_BYTES,
    MAX_OPS,
    MAX_OPS_BYTES,
    SIGNING_CONTEXT,
    ChangeSet,
    make_changeset,
    verify_chain,
)
from mocksync.changes.errors import (
    ChainError,
    ChangeSetTooLarge,
    MalformedChangeSet,
    SignatureError,
    UnknownFormatVersion,
)
from mocksync.changes.hlc import pack
from mocksync.errors import ChangeSetError, LimitError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
SPACE = "3f9c2a7e5b1d4c8f9a0b6e2d7c4f1a85"
ENV = "b6a1f2c4-93de-4f5a-8b2e-1c7d9e0f3a42"
DEV_A = "K7QF2-MXC9T-LDR4W-B8NXA"  # the space module's 23-char device id form
DEV_B = "P3ZN8-HVE6Y-JAQ1S-UC4TD"
DEV_C = "W5GT0-RKB4N-PCX7E-MH2VK"
T0 = 1_767_225_600_000


def one_edit(**over) -> ChangeSet:
    """A typical one-property edit: set a response body, third set of device A's chain."""
    fields = dict(
        space=SPACE,
        env=ENV,
        device=DEV_A,
        seq=3,
        hlc=pack(T0, 2),
        deps={DEV_A: 2, DEV_B: 1_284, DEV_C: 77},
        prev_hash=hashlib.sha256(b"seq 2").digest(),
        ops=(["s", "e0a1b2c3-d4e5-4f60-8172-839405a6b7c8", ["v", "body"], '{"a": 1}'],),
    )
    fields.update(over)
    return ChangeSet(**fields)


def big_ops(n: int = 200) -> list[list]:
    return [
        ["s", str(uuid.UUID(int=i)), ["v", "body"], f'{{"n": {i}, "text": "hello world"}}']
        for i in range(n)
    ]


def raw_wire(body: dict, sig: bytes = b"\x00" * 64) -> bytes:
    return canonical.encode([canonical.encode(body), sig])


def body_map(cs: ChangeSet) -> dict:
    return canonical.decode(cs.body_bytes())


# -- round trips and format --------------------------------------------------------------


def test_round_trip_is_exact_and_verifies():
    cs = one_edit().sign(KEY)
    wire = cs.encode()
    back = ChangeSet.decode(wire)
    assert back == cs
    assert back.encode() == wire
    assert back.hash == cs.hash == hashlib.sha256(cs.body_bytes()).digest()
    assert back.key == (DEV_A, 3)
    back.verify(KEY.public_key())
    back.verify(KEY.public_key().public_bytes_raw())
    assert dict(back.deps) == {DEV_A: 2, DEV_B: 1_284, DEV_C: 77}
    assert back.ops == (["s", "e0a1b2c3-d4e5-4f60-8172-839405a6b7c8", ["v", "body"], '{"a": 1}'],)


def test_body_uses_short_keys_and_inline_ops_when_small():
    m = body_map(one_edit())
    assert set(m) == {"v", "s", "e", "d", "n", "h", "deps", "p", "m", "o"}
    assert m["v"] == 1 and m["n"] == 3 and m["m"] == 1
    assert m["s"] == bytes.fromhex(SPACE)


def test_body_is_deterministic_and_pinned():
    a = one_edit(deps={DEV_C: 77, DEV_B: 1_284, DEV_A: 2})
    b = one_edit(deps={DEV_A: 2, DEV_B: 1_284, DEV_C: 77})
    assert a.body_bytes() == b.body_bytes()
    # Pinned so an accidental format change (which would break every stored chain) fails here.
    assert a.hash.hex() == GOLDEN_BODY_SHA256
    # Ed25519 is deterministic too, so the whole wire form is pinned by the body.
    assert a.sign(KEY).encode() == b.sign(KEY).encode()


GOLDEN_BODY_SHA256 = "ff5aa6942fb90736febc5a23973b188934a7c14d863c9274565cb87b45300de8"


def test_typical_one_property_edit_is_small_on_the_wire():
    wire = one_edit().sign(KEY).encode()
    print(f"\none-property edit, 3-device deps: {len(wire)} bytes on the wire")
    assert len(wire) < 400


def test_compression_kicks_in_above_threshold_and_round_trips():
    ops = big_ops()
    assert len(canonical.encode(ops)) > COMPRESS_THRESHOLD
    cs = one_edit(ops=ops).sign(KEY)
    m = body_map(cs)
    assert "z" in m and "o" not in m
    assert zlib.decompress(m["z"]) == canonical.encode(ops)
    wire = cs.encode()
    assert len(wire) < len(canonical.encode(ops)) / 2  # it actually compresses
    back = ChangeSet.decode(wire)
    assert back == cs and list(back.ops) == ops
    assert back.encode() == wire
    back.verify(KEY.public_key())


def test_threshold_boundary():
    def ops_of_size(n: int) -> list:
        base = [["s", ""]]
        pad = n - len(canonical.encode(base))
        for _ in range(3):  # string header length varies with the string length
            ops = [["s", "x" * pad]]
            pad += n - len(canonical.encode(ops))
        assert len(canonical.encode(ops)) == n
        return ops

    at = one_edit(ops=ops_of_size(COMPRESS_THRESHOLD))
    over = one_edit(ops=ops_of_size(COMPRESS_THRESHOLD + 1))
    assert "o" in body_map(at)
    assert "z" in body_map(over)
    for cs in (at, over):
        wire = cs.sign(KEY).encode()
        assert ChangeSet.decode(wire).encode() == wire


def test_decoded_set_keeps_its_exact_body_even_if_zlib_differs():
    # Another zlib build may compress differently: the received bytes are what count.
    cs = one_edit(ops=big_ops())
    m = body_map(cs)
    m["z"] = zlib.compress(canonical.encode(big_ops()), 1)
    assert m["z"] != body_map(cs)["z"]
    body = canonical.encode(m)
    sig = KEY.sign(SIGNING_CONTEXT + body)
    wire = canonical.encode([body, sig])
    back = ChangeSet.decode(wire)
    assert back.body_bytes() == body
    assert back.hash == hashlib.sha256(body).digest()
    assert back.encode() == wire
    back.verify(KEY.public_key())


# -- signatures --------------------------------------------------------------------------


def test_wrong_key_is_a_signature_error():
    cs = ChangeSet.decode(one_edit().sign(KEY).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        cs.verify(OTHER_KEY.public_key())


def test_signature_is_domain_separated():
    cs = one_edit()
    bare = KEY.sign(cs.body_bytes())  # a signature over the body alone is not accepted
    forged = ChangeSet.decode(canonical.encode([cs.body_bytes(), bare]))
    with pytest.raises(SignatureError):
        forged.verify(KEY.public_key())


def test_unsigned_and_bad_keys_are_signature_errors():
    cs = one_edit()
    with pytest.raises(SignatureError, match="unsigned"):
        cs.encode()
    with pytest.raises(SignatureError, match="unsigned"):
        cs.verify(KEY.public_key())
    signed = cs.sign(KEY)
    for bad in (b"\x01" * 31, b"", "key", None):
        with pytest.raises(SignatureError):
            signed.verify(bad)  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        cs.sign(b"\x00" * 32)  # type: ignore[arg-type]


def test_sign_returns_a_copy():
    cs = one_edit()
    signed = cs.sign(KEY)
    assert cs.sig == b"" and len(signed.sig) == 64
    assert signed.body_bytes() == cs.body_bytes()
    assert signed != cs


# -- tampering, truncation, random input -------------------------------------------------


def _decode_and_verify(wire: bytes) -> None:
    ChangeSet.decode(wire).verify(KEY.public_key())


def _assert_every_flip_refused(wire: bytes, positions) -> None:
    for pos in positions:
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(wire)
            bad[pos] ^= mask
            with pytest.raises(ChangeSetError):
                _decode_and_verify(bytes(bad))


def test_tampering_any_byte_is_refused():
    wire = one_edit().sign(KEY).encode()
    _decode_and_verify(wire)
    _assert_every_flip_refused(wire, range(len(wire)))


def test_tampering_a_compressed_set_is_refused():
    wire = one_edit(ops=big_ops()).sign(KEY).encode()
    rng = random.Random(1)
    _assert_every_flip_refused(wire, rng.sample(range(len(wire)), 150))


def test_truncation_at_every_length_is_refused():
    wire = one_edit().sign(KEY).encode()
    for n in range(len(wire)):
        with pytest.raises(MalformedChangeSet):
            ChangeSet.decode(wire[:n])
    with pytest.raises(MalformedChangeSet):
        ChangeSet.decode(wire + b"\x00")


def test_truncated_compressed_set_is_refused():
    wire = one_edit(ops=big_ops()).sign(KEY).encode()
    for n in range(0, len(wire), 7):
        with pytest.raises(MalformedChangeSet):
            ChangeSet.decode(wire[:n])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_changeset_errors(data):
    with pytest.raises(ChangeSetError):
        ChangeSet.decode(data)


SAMPLE_WIRE = one_edit().sign(KEY).encode()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(SAMPLE_WIRE) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )
)
def test_random_mutations_raise_only_changeset_errors(edits):
    bad = bytearray(SAMPLE_WIRE)
    for pos, value in edits:
        bad[pos] = value
    if bytes(bad) == SAMPLE_WIRE:
        return
    with pytest.raises(ChangeSetError):
        _decode_and_verify(bytes(bad))


# -- strict decoding of each field ---------------------------------------------------------


def _good_body() -> dict:
    return body_map(one_edit())


MUTATIONS = {
    "space too short": ("s", b"\x01" * 15),
    "space as text": ("s", SPACE),
    "env empty": ("e", ""),
    "env too long": ("e", "x" * 65),
    "env control char": ("e", "a\nb"),
    "device bad chars": ("d", "dev ice"),
    "device too long": ("d", "A" * 65),
    "seq zero": ("n", 0),
    "seq negative": ("n", -3),
    "seq bool": ("n", True),
    "seq float": ("n", 3.0),
    "hlc negative": ("h", -1),
    "hlc too big": ("h", 1 << 64),
    "deps not a map": ("deps", [1, 2]),
    "deps zero": ("deps", {DEV_B: 0}),
    "deps bad device": ("deps", {"no spaces": 1}),
    "deps int key": ("deps", {5: 1}),
    "deps self ahead": ("deps", {DEV_A: 3}),
    "prev short": ("p", b"\x00" * 31),
    "prev empty at seq 3": ("p", b""),
    "prev text": ("p", "00" * 32),
    "model zero": ("m", 0),
    "model text": ("m", "1"),
    "ops not a list": ("o", {"a": 1}),
    "op not a list": ("o", ["s"]),
    "op holds a tag": ("o", [[datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)]]),
}


@pytest.mark.parametrize("key,value", MUTATIONS.values(), ids=list(MUTATIONS))
def test_each_field_is_checked(key, value):
    body = _good_body()
    body[key] = value
    with pytest.raises(MalformedChangeSet) as info:
        ChangeSet.decode(raw_wire(body))
    assert "change set" in str(info.value)


def test_field_errors_name_the_field():
    body = _good_body()
    body["n"] = "three"
    with pytest.raises(MalformedChangeSet, match="field seq"):
        ChangeSet.decode(raw_wire(body))
    body = _good_body()
    body["deps"] = {DEV_B: -1}
    with pytest.raises(MalformedChangeSet, match="deps"):
        ChangeSet.decode(raw_wire(body))


def test_first_set_of_a_chain_has_empty_prev_hash():
    body = _good_body()
    body["n"] = 1
    body["deps"] = {}
    with pytest.raises(MalformedChangeSet, match="prev_hash"):
        ChangeSet.decode(raw_wire(body))
    body["p"] = b""
    assert ChangeSet.decode(raw_wire(body)).seq == 1


def test_unknown_and_missing_keys_are_refused():
    body = _good_body()
    body["x"] = 1
    with pytest.raises(MalformedChangeSet, match="unexpected keys"):
        ChangeSet.decode(raw_wire(body))
    body = _good_body()
    del body["h"]
    with pytest.raises(MalformedChangeSet, match="missing keys"):
        ChangeSet.decode(raw_wire(body))
    body = _good_body()
    body["z"] = zlib.compress(canonical.encode(body["o"]))
    with pytest.raises(MalformedChangeSet, match="exactly one"):
        ChangeSet.decode(raw_wire(body))


def test_unknown_format_version_is_refused():
    body = _good_body()
    body["v"] = 2
    with pytest.raises(UnknownFormatVersion, match="version 2"):
        ChangeSet.decode(raw_wire(body))
    body["v"] = "1"
    with pytest.raises(MalformedChangeSet):
        ChangeSet.decode(raw_wire(body))


def test_outer_structure_is_checked():
    body = canonical.encode(_good_body())
    for outer in (
        [body],
        [body, b"\x00" * 64, b""],
        {"b": body},
        [body, b"\x00" * 63],
        [body.hex(), b"\x00" * 64],
        5,
    ):
        with pytest.raises(MalformedChangeSet):
            ChangeSet.decode(canonical.encode(outer))
    with pytest.raises(MalformedChangeSet):
        ChangeSet.decode("not bytes")  # type: ignore[arg-type]


def test_non_canonical_encodings_are_refused():
    cs = one_edit().sign(KEY)
    # the same array with a non-shortest length header for the signature bytes
    body = cs.body_bytes()
    padded = canonical.encode([body, cs.sig])
    assert padded == cs.encode()
    sig_at = padded.rindex(b"\x58\x40" + cs.sig)
    long_form = padded[:sig_at] + b"\x59\x00\x40" + cs.sig
    with pytest.raises(MalformedChangeSet, match="canonical"):
        ChangeSet.decode(long_form)


def test_ops_must_use_the_canonical_representation():
    small = _good_body()
    small["z"] = zlib.compress(canonical.encode(small.pop("o")))
    with pytest.raises(MalformedChangeSet, match="inline"):
        ChangeSet.decode(raw_wire(small))
    big = body_map(one_edit(ops=big_ops()))
    big["o"] = canonical.decode(zlib.decompress(big.pop("z")))
    with pytest.raises(MalformedChangeSet, match="compressed"):
        ChangeSet.decode(raw_wire(big))


def test_corrupt_truncated_or_padded_zlib_is_refused():
    good = body_map(one_edit(ops=big_ops()))
    z = good["z"]
    for bad_z, what in (
        (b"junk" + z, "corrupt"),
        (z[:-10], "truncated"),
        (z + b"tail", "trailing"),
    ):
        body = dict(good, z=bad_z)
        with pytest.raises(MalformedChangeSet, match=what):
            ChangeSet.decode(raw_wire(body))
    body = dict(good, z=zlib.compress(canonical.encode({"not": "a list"}) + b"x" * 2000))
    with pytest.raises(MalformedChangeSet):
        ChangeSet.decode(raw_wire(body))


def test_zip_bomb_is_refused():
    bomb = zlib.compress(b"\x00" * (MAX_OPS_BYTES + 4096), 9)
    assert len(bomb) < 100_000
    body = _good_body()
    del body["o"]
    body["z"] = bomb
    with pytest.raises(ChangeSetTooLarge) as info:
        ChangeSet.decode(raw_wire(body))
    assert isinstance(info.value, LimitError) and isinstance(info.value, ChangeSetError)


def test_ops_byte_limit_boundary(monkeypatch):
    ops = big_ops(100)
    size = len(canonical.encode(ops))
    wire = one_edit(ops=ops).sign(KEY).encode()
    monkeypatch.setattr(changeset, "MAX_OPS_BYTES", size)
    assert ChangeSet.decode(wire).ops == tuple(ops)
    monkeypatch.setattr(changeset, "MAX_OPS_BYTES", size - 1)
    with pytest.raises(ChangeSetTooLarge):
        ChangeSet.decode(wire)
    with pytest.raises(ChangeSetTooLarge):
        one_edit(ops=ops).body_bytes()


def test_oversize_wire_is_refused_before_parsing():
    with pytest.raises(ChangeSetTooLarge, match=str(MAX_CHANGESET_BYTES)):
        ChangeSet.decode(bytes(MAX_CHANGESET_BYTES + 1))


def test_count_limits():
    with pytest.raises(ChangeSetTooLarge, match="ops"):
        one_edit(ops=[["d", "x"]] * (MAX_OPS + 1))
    many = {f"D{i}": 1 for i in range(changeset.MAX_DEPS + 1)}
    with pytest.raises(ChangeSetTooLarge, match="deps"):
        one_edit(deps=many)


def test_ops_values_are_restricted_to_plain_data():
    with pytest.raises(MalformedChangeSet, match=r"ops\[0\]"):
        one_edit(ops=[["s", object()]])
    with pytest.raises(MalformedChangeSet, match="nested deeper"):
        deep: list = ["x"]
        for _ in range(changeset.MAX_OP_DEPTH + 1):
            deep = [deep]
        one_edit(ops=[deep])
    with pytest.raises(MalformedChangeSet, match="map key"):
        one_edit(ops=[["s", {(1, 2): 3}]])
    with pytest.raises(MalformedChangeSet, match="encoded"):
        one_edit(ops=[["s", "\ud800"]]).body_bytes()
    with pytest.raises(MalformedChangeSet):
        one_edit(ops="not ops")


# -- constructor checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "over",
    [
        {"space": SPACE.upper()},
        {"space": SPACE[:-1]},
        {"env": ""},
        {"device": "bad/device"},
        {"seq": 0},
        {"hlc": -1},
        {"model": 0},
        {"deps": {DEV_A: 3}},
        {"prev_hash": b""},
        {"seq": 1},  # prev_hash given for a first set
        {"sig": b"\x00" * 10},
        {"deps": "nope"},
    ],
)
def test_constructor_refuses_bad_fields(over):
    with pytest.raises(MalformedChangeSet):
        one_edit(**over)


def test_change_sets_are_hashable_and_immutable():
    cs = one_edit().sign(KEY)
    assert len({cs, ChangeSet.decode(cs.encode())}) == 1
    with pytest.raises(AttributeError):
        cs.seq = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        cs.deps[DEV_A] = 9  # type: ignore[index]


# -- chains --------------------------------------------------------------------------------


def _chain(n: int) -> list[ChangeSet]:
    out: list[ChangeSet] = []
    for i in range(n):
        out.append(
            make_changeset(
                KEY,
                space=SPACE,
                env=ENV,
                device=DEV_A,
                hlc=pack(T0 + i, 0),
                ops=[["s", "r1", ["v", "status"], 200 + i]],
                deps={DEV_B: 4},
                prev=out[-1] if out else None,
            )
        )
    return out


def test_make_changeset_builds_a_valid_signed_chain():
    a, b, c = _chain(3)
    assert (a.seq, b.seq, c.seq) == (1, 2, 3)
    assert a.prev_hash == b"" and b.prev_hash == a.hash and c.prev_hash == b.hash
    verify_chain(None, a)
    verify_chain(a, b)
    verify_chain(b, c)
    for cs in (a, b, c):
        ChangeSet.decode(cs.encode()).verify(KEY.public_key())


def test_verify_chain_refusals():
    a, b, c = _chain(3)
    with pytest.raises(ChainError, match="predecessor"):
        verify_chain(None, b)
    with pytest.raises(ChainError, match="expected seq 2"):
        verify_chain(a, c)
    forked = make_changeset(
        KEY, space=SPACE, env=ENV, device=DEV_A, hlc=pack(T0, 9), ops=[["d", "r1"]], prev=a
    )
    with pytest.raises(ChainError, match="forked or altered"):
        verify_chain(forked, c)
    other_env = one_edit(env="another-env", seq=2, prev_hash=a.hash, deps={})
    with pytest.raises(ChainError, match="same chain"):
        verify_chain(a, other_env)
    other_dev = one_edit(device=DEV_B, seq=2, prev_hash=a.hash, deps={})
    with pytest.raises(ChainError):
        verify_chain(a, other_dev)


def test_make_changeset_refuses_a_prev_from_another_chain():
    (a,) = _chain(1)
    with pytest.raises(ChainError):
        make_changeset(KEY, space=SPACE, env=ENV, device=DEV_B, hlc=1, ops=[], prev=a)


def test_equivocation_is_visible_as_different_hash_same_key():
    a, b = _chain(2)
    twin = make_changeset(
        KEY, space=SPACE, env=ENV, device=DEV_A, hlc=pack(T0, 5), ops=[["d", "x"]], prev=a
    )
    assert twin.key == b.key and twin.hash != b.hash


# -- property: random valid change sets round-trip exactly --------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),  # the format's integer range (no bignum tags)
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
device_ids = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-abc", min_size=1, max_size=64)


@st.composite
def changesets(draw):
    seq = draw(st.integers(1, 2**63 - 1))
    device = draw(device_ids)
    deps = draw(st.dictionaries(device_ids, st.integers(1, 2**63 - 1), max_size=5))
    if deps.get(device, 0) >= seq:
        deps.pop(device)
    big = draw(st.booleans())
    ops = draw(st.lists(st.lists(values, max_size=5), max_size=5))
    if big:
        ops = ops + big_ops(draw(st.integers(30, 60)))
    return ChangeSet(
        space=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        env=draw(
            st.text(
                st.characters(
                    codec="utf-8", categories=["L", "N", "P", "S"], include_characters=" "
                ),
                min_size=1,
                max_size=64,
            )
        ),
        device=device,
        seq=seq,
        hlc=draw(st.integers(0, 2**64 - 1)),
        deps=deps,
        prev_hash=b"" if seq == 1 else draw(st.binary(min_size=32, max_size=32)),
        ops=tuple(ops),
        model=draw(st.integers(1, 0xFFFF)),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changesets())
def test_random_valid_change_sets_round_trip(cs):
    signed = cs.sign(KEY)
    wire = signed.encode()
    back = ChangeSet.decode(wire)
    assert back.encode() == wire
    assert back == signed
    assert back.hash == signed.hash
    back.verify(KEY.public_key())


def test_sets_too_large_to_send_are_refused_when_built(monkeypatch):
    incompressible = [["s", "r1", ["v", "body"], random.Random(7).randbytes(3_000)]]
    monkeypatch.setattr(changeset, "MAX_CHANGESET_BYTES", 2_000)
    with pytest.raises(ChangeSetTooLarge, match="2000 byte limit"):
        one_edit(ops=incompressible).body_bytes()
    # a body that fits but whose wire form (body + signature) does not
    cs = one_edit(ops=[["s", "r1", ["v", "body"], random.Random(7).randbytes(1_500)]])
    monkeypatch.setattr(changeset, "MAX_CHANGESET_BYTES", len(cs.body_bytes()) + 10)
    signed = cs.sign(KEY)
    with pytest.raises(ChangeSetTooLarge):
        signed.encode()
