"""The relay's pure parts: message codec (with hypothesis fuzzing), envelopes and env tags,
signed challenge and signals, admission and quota policy, message rate, and the SQLite storage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync import PROTOCOL_VERSION
from mocksync.changes import canonical, make_changeset
from mocksync.errors import MocksyncError
from mocksync.relay import policy
from mocksync.relay.auth import open_signal, seal_signal, sign_challenge, verify_challenge
from mocksync.relay.envelope import (
    Envelope,
    Slot,
    Tagger,
    env_tag,
    envelope_aad,
    open_envelope,
    seal_envelope,
    tag_key,
)
from mocksync.relay.errors import EnvelopeMismatch, FrameTooLarge, RelayProtocolError, UnknownKind
from mocksync.relay.protocol import (
    CLIENT,
    CLIENT_KINDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
    MAX_FRAME_BYTES,
    RELAY,
    RELAY_KINDS,
    decode_message,
    encode_message,
    split_batches,
)
from mocksync.relay.storage import SQLiteStorage
from mocksync.space.errors import KeyMaterialError
from mocksync.space.identity import Identity
from mocksync.space.keys import new_content_key, seal_payload
from mocksync.space.membership import (
    add_device,
    add_member,
    migrate,
    new_genesis,
    remove_device,
    verify_log,
)
from mocksync.space.quotas import get_plan

SPACE = "ab" * 16
TAG = "cd" * 16


def ident(n: int) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32)


A, B, C = ident(1), ident(2), ident(3)
DA, DB = A.device_id, B.device_id
CT = seal_payload(new_content_key(), 1, b"sealed change set")

CLIENT_SAMPLES = [
    {"t": "joinrep", "s": SPACE, "j": b"j" * 16, "p": b"handshake"},
    {"t": "hello", "p": PROTOCOL_VERSION, "m": 1, "d": DA, "sp": [SPACE], "a": "mocksync 0.1.0"},
    {"t": "auth", "sig": b"s" * 64, "u": "http://127.0.0.1:8765", "logs": {SPACE: [b"entry"]}},
    {"t": "log", "i": 1, "s": SPACE, "w": [b"entry"]},
    {"t": "index", "i": 2, "s": SPACE},
    {"t": "fetch", "i": 3, "s": SPACE, "e": TAG, "vv": {DA: 4}},
    {"t": "put", "i": 4, "s": SPACE, "e": TAG, "z": 1234, "x": [Envelope(DA, 1, 1, CT)]},
    {"t": "presence", "s": SPACE, "e": TAG, "u": "route-uuid"},
    {"t": "presence", "s": SPACE, "e": None, "u": None},
    {"t": "signal", "i": 5, "s": SPACE, "to": DB, "p": b"payload"},
    {"t": "ping", "n": 7},
    # compaction (relay.snapshots)
    {"t": "snapput", "i": 6, "s": SPACE, "e": TAG, "v": {DA: 3}, "b": CT, "g": b"s" * 64},
    {"t": "snapget", "i": 7, "s": SPACE, "e": TAG},
    {"t": "hw", "s": SPACE, "e": TAG, "v": {DA: 3, DB: 1}},
]
RELAY_SAMPLES = [
    {"t": "joinreq", "s": SPACE, "j": b"j" * 16, "p": b"handshake"},
    {"t": "jp", "p": b"handshake"},
    {"t": "entries", "s": SPACE, "w": [b"entry"]},
    {"t": "challenge", "p": 1, "n": b"n" * 32, "k": b"k" * 32, "ks": b"s" * 64,
     "have": {SPACE: [b"h" * 32]}},
    {"t": "welcome", "ok": {SPACE: {"m": 1, "plan": "team", "envs": 10, "bytes": 10**7, "devs": 2}},
     "no": {"ef" * 16: ["revoked", "revoked: gone"]},
     "lim": {"frame": MAX_FRAME_BYTES, "items": MAX_BATCH_ITEMS, "rate": 200}},
    {"t": "refused", "c": "auth_refused", "r": "auth refused: who are you"},
    {"t": "ok", "i": 1},
    {"t": "nack", "i": 1, "c": "quota_envs", "r": "quota exceeded"},
    {"t": "index", "i": 2, "s": SPACE, "envs": {TAG: {DA: 3, DB: 1}}},
    {"t": "batch", "i": 3, "s": SPACE, "e": TAG, "x": [Envelope(DA, 1, 1, CT)], "more": False},
    {"t": "ack", "i": 4, "s": SPACE, "e": TAG, "n": 1},
    {"t": "env", "s": SPACE, "e": TAG, "x": [Envelope(DB, 9, 2, CT)]},
    {"t": "who", "s": SPACE, "ds": [[DA, TAG, "route-uuid"], [DB, None, None]], "off": [DA]},
    {"t": "signal", "s": SPACE, "from": DA, "p": b"payload"},
    {"t": "pong", "n": 7},
    {"t": "bye", "c": "shutting_down", "r": "bye"},
    # compaction (relay.snapshots)
    {"t": "snap", "i": 8, "s": SPACE, "e": TAG, "by": DA, "v": {DA: 3}, "b": CT, "g": b"s" * 64,
     "f": {DA: 2}},
    {"t": "snap", "i": 9, "s": SPACE, "e": TAG, "by": None, "v": {}, "b": None, "g": None,
     "f": {}},
]


def _as_decoded(msg: dict) -> dict:
    return {k: (tuple(v) if k == "x" else v) for k, v in msg.items()}


# ------------------------------------------------------------------------------ codec


@pytest.mark.parametrize("msg", CLIENT_SAMPLES, ids=lambda m: m["t"])
def test_client_messages_round_trip(msg: dict) -> None:
    data = encode_message(msg, sender=CLIENT)
    assert decode_message(data, sender=CLIENT) == _as_decoded(msg)
    assert canonical.decode(data) is not None  # canonical CBOR on the wire


@pytest.mark.parametrize("msg", RELAY_SAMPLES, ids=lambda m: m["t"])
def test_relay_messages_round_trip(msg: dict) -> None:
    data = encode_message(msg, sender=RELAY)
    decoded = decode_message(data, sender=RELAY)
    if msg["t"] == "welcome":
        msg = {**msg, "no": {k: tuple(v) for k, v in msg["no"].items()}}
    if msg["t"] == "who":
        msg = {**msg, "ds": [tuple(d) for d in msg["ds"]]}
    assert decoded == _as_decoded(msg)


def test_every_kind_has_a_sample() -> None:
    assert {m["t"] for m in CLIENT_SAMPLES} == set(CLIENT_KINDS)
    assert {m["t"] for m in RELAY_SAMPLES} == set(RELAY_KINDS)


def test_joiner_may_only_send_join() -> None:
    from mocksync.relay.protocol import JOINER, JOINER_KINDS

    assert set(JOINER_KINDS) == {"join"}
    msg = {"t": "join", "s": SPACE, "to": DA, "p": b"hello"}
    assert decode_message(encode_message(msg, sender=JOINER), sender=JOINER) == msg
    with pytest.raises(RelayProtocolError):
        decode_message(encode_message({"t": "ping", "n": 1}, sender=CLIENT), sender=JOINER)


@pytest.mark.parametrize("bad, err", [
    ({"t": "nope"}, UnknownKind),
    ({"t": "challenge", "p": 1, "n": b"n" * 32, "k": b"k" * 32, "ks": b"s" * 64, "have": {}},
     UnknownKind),  # relay kind
    ({"t": "ping", "n": 1, "extra": 1}, RelayProtocolError),
    ({"t": "ping"}, RelayProtocolError),
    ({"t": "ping", "n": True}, RelayProtocolError),  # a bool is not an int
    ({"t": "ping", "n": -1}, RelayProtocolError),
    ({"t": "index", "i": 1, "s": "AB" * 16}, RelayProtocolError),  # not lowercase hex
    ({"t": "fetch", "i": 1, "s": SPACE, "e": TAG, "vv": {"not-a-device": 1}}, RelayProtocolError),
    ({"t": "fetch", "i": 1, "s": SPACE, "e": TAG, "vv": {DA: 0}}, RelayProtocolError),
    ({"t": "put", "i": 1, "s": SPACE, "e": TAG, "z": 1, "x": [[DA, 1, 1]]}, RelayProtocolError),
    ({"t": "put", "i": 1, "s": SPACE, "e": TAG, "z": 1, "x": [[DA, 1, 0, b"c"]]},
     RelayProtocolError),
    ({"t": "hello", "p": PROTOCOL_VERSION, "m": 1, "d": DA, "sp": [], "a": ""},
     RelayProtocolError),
    ({"t": "presence", "s": SPACE, "e": TAG, "u": "x" * 65}, FrameTooLarge),
    ({"t": "signal", "i": 1, "s": SPACE, "to": DB, "p": b"x" * (64 * 1024 + 1)}, FrameTooLarge),
    ([1, 2, 3], RelayProtocolError),
    ({"t": 5}, RelayProtocolError),
])
def test_decoder_refuses(bad: object, err: type) -> None:
    with pytest.raises(err):
        decode_message(canonical.encode(bad), sender=CLIENT)


def test_decoder_refuses_non_canonical_and_oversized_frames() -> None:
    good = encode_message({"t": "ping", "n": 1}, sender=CLIENT)
    with pytest.raises(RelayProtocolError, match="canonical"):
        decode_message(good[:1] + b"\x78\x01" + good[2:], sender=CLIENT)  # padded length
    with pytest.raises(FrameTooLarge):
        decode_message(b"\xa0" * (MAX_FRAME_BYTES + 1), sender=CLIENT)
    with pytest.raises(RelayProtocolError):
        decode_message("text", sender=CLIENT)  # type: ignore[arg-type]


def test_batch_limits() -> None:
    many = [[DA, n, 1, b"c"] for n in range(1, MAX_BATCH_ITEMS + 2)]
    with pytest.raises(FrameTooLarge, match="envelopes"):
        decode_message(canonical.encode({"t": "put", "i": 1, "s": SPACE, "e": TAG, "z": 1,
                                         "x": many}), sender=CLIENT)
    big = b"c" * (MAX_BATCH_BYTES // 2 + 1)
    with pytest.raises(FrameTooLarge, match="batch of several"):
        decode_message(canonical.encode({"t": "put", "i": 1, "s": SPACE, "e": TAG, "z": 1,
                                         "x": [[DA, 1, 1, big], [DA, 2, 1, big]]}), sender=CLIENT)
    # one envelope alone may be larger than a batch
    alone = canonical.encode({"t": "put", "i": 1, "s": SPACE, "e": TAG, "z": 1,
                              "x": [[DA, 1, 1, b"c" * (MAX_BATCH_BYTES + 10)]]})
    assert len(decode_message(alone, sender=CLIENT)["x"]) == 1
    envs = [Envelope(DA, n, 1, b"c" * (MAX_BATCH_BYTES // 3)) for n in range(1, 8)]
    batches = split_batches(envs)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [e for b in batches for e in b] == envs
    assert len(split_batches([Envelope(DA, n, 1, b"c") for n in range(1, 2501)])) == 3


def test_hello_of_another_protocol_is_read_leniently() -> None:
    future = canonical.encode({"t": "hello", "p": PROTOCOL_VERSION + 1, "m": 9, "d": DA,
                               "new_field": [1, 2]})
    assert decode_message(future, sender=CLIENT) == {"t": "hello", "p": PROTOCOL_VERSION + 1,
                                                     "m": 9, "d": DA, "sp": [], "a": ""}
    refused = canonical.encode({"t": "refused", "c": "incompatible_version", "r": "update",
                                "extra": 1})
    assert decode_message(refused, sender=RELAY)["c"] == "incompatible_version"


def test_encoder_refuses_what_the_decoder_would() -> None:
    with pytest.raises(RelayProtocolError):
        encode_message({"t": "ping", "n": "one"}, sender=CLIENT)
    with pytest.raises(UnknownKind):
        encode_message({"t": "welcome", "ok": {}, "no": {}, "lim": {}}, sender=CLIENT)


_cbor_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64),
                       st.binary(max_size=40), st.text(max_size=40),
                       st.sampled_from([SPACE, TAG, DA, DB, "x" * 32]), st.floats(allow_nan=False))
_cbor = st.recursive(_cbor_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=5)),
    max_leaves=25)
_fields = sorted({k for table in (CLIENT_KINDS, RELAY_KINDS) for f, _ in table.values() for k in f})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from([CLIENT, RELAY]))
def test_fuzz_decoder_raw_bytes(data: bytes, sender: str) -> None:
    try:
        decode_message(data, sender=sender)
    except MocksyncError as exc:
        assert isinstance(exc, RelayProtocolError) and str(exc)


_KINDS = sorted(set(CLIENT_KINDS) | set(RELAY_KINDS) | {"zzz"})


# The default run's count; `test_fuzz_decoder_structured_long` (make test-long) runs 20,000.
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_KINDS), st.dictionaries(st.sampled_from(_fields), _cbor, max_size=8),
       st.sampled_from([CLIENT, RELAY]))
def test_fuzz_decoder_structured(kind: str, fields: dict, sender: str) -> None:
    _structured(kind, fields, sender)


@pytest.mark.long
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_KINDS), st.dictionaries(st.sampled_from(_fields), _cbor, max_size=8),
       st.sampled_from([CLIENT, RELAY]))
def test_fuzz_decoder_structured_long(kind: str, fields: dict, sender: str) -> None:
    _structured(kind, fields, sender)


def _structured(kind: str, fields: dict, sender: str) -> None:
    try:
        data = canonical.encode({"t": kind, **fields})
    except Exception:
        return  # not encodable at all (e.g. a lone surrogate): nothing to decode
    try:
        msg = decode_message(data, sender=sender)
    except MocksyncError as exc:
        assert isinstance(exc, RelayProtocolError) and str(exc)
        return
    # Whatever is accepted re-encodes to the very same bytes.
    assert encode_message(msg, sender=sender) == data or msg["t"] in ("hello", "refused")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CLIENT_SAMPLES + RELAY_SAMPLES), st.data())
def test_fuzz_mutated_valid_frames(msg: dict, data: st.DataObject) -> None:
    sender = CLIENT if msg in CLIENT_SAMPLES else RELAY
    frame = bytearray(encode_message(msg, sender=sender))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(frame) - 1)))
        if op == "flip" and frame:
            frame[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del frame[pos:]
        else:
            frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decode_message(bytes(frame), sender=sender)
    except MocksyncError as exc:
        assert isinstance(exc, RelayProtocolError)


# ------------------------------------------------------------------------------ envelopes


def test_env_tags_are_keyed_stable_and_distinct() -> None:
    k1, k2 = new_content_key(), new_content_key()
    t = Tagger(SPACE, {1: k1, 2: k2})
    assert t("env-1") == Tagger(SPACE, {1: k1})("env-1")  # rotation does not change tags
    assert t("env-1") != t("env-2")
    assert t("env-1") != Tagger("ef" * 16, {1: k1})("env-1")  # bound to the space
    assert t("env-1") != Tagger(SPACE, {1: k2})("env-1")  # needs the key
    assert len(t("env-1")) == 32 and "env-1" not in t("env-1")
    assert env_tag(tag_key(SPACE, {1: k1}), "env-1") == t("env-1")
    with pytest.raises(KeyMaterialError, match="generation 1"):
        Tagger(SPACE, {2: k2})


def _cs(env: str = "env-1"):
    return make_changeset(A.signing_key, space=SPACE, env=env, device=DA, hlc=1000,
                          ops=[["s", env, ["v", "name"], '"x"']])


def test_envelope_seal_open_and_every_way_to_break_it() -> None:
    keys = {1: new_content_key(), 2: new_content_key()}
    tagger = Tagger(SPACE, keys)
    cs = _cs()
    wire = cs.encode()
    tag = tagger("env-1")
    env = seal_envelope(SPACE, tag, keys, wire)
    assert (env.device, env.seq, env.gen) == (DA, 1, 2)  # newest generation
    assert wire not in env.ct and b"env-1" not in env.ct
    slot, got = open_envelope(SPACE, tag, keys, env, tagger)
    assert got == wire and slot == Slot(SPACE, "env-1", DA, 1)
    # moved to another slot, tag or space: AEAD fails
    for space, t, e in ((SPACE, tag, Envelope(DA, 2, 2, env.ct)),
                        (SPACE, tagger("env-2"), env),
                        ("ef" * 16, tag, env)):
        with pytest.raises(KeyMaterialError, match="failed authentication"):
            open_envelope(space, t, keys, e, tagger)
    # one flipped byte
    bad = bytearray(env.ct)
    bad[-1] ^= 1
    with pytest.raises(KeyMaterialError):
        open_envelope(SPACE, tag, keys, Envelope(DA, 1, 2, bytes(bad)), tagger)
    # claimed generation differs from the ciphertext's
    with pytest.raises(KeyMaterialError, match="claims key generation"):
        open_envelope(SPACE, tag, keys, Envelope(DA, 1, 1, env.ct), tagger)
    # a generation we lack
    with pytest.raises(KeyMaterialError, match="does not have"):
        open_envelope(SPACE, tag, {1: keys[1]}, env, tagger)
    # a member sealing env-1's change set under env-2's tag
    mislabelled = seal_envelope(SPACE, tagger("env-2"), keys, wire)
    with pytest.raises(EnvelopeMismatch):
        open_envelope(SPACE, tagger("env-2"), keys, mislabelled, tagger)
    # something that is not a change set at all, sealed correctly by a member
    for junk in (b"not cbor \xff", canonical.encode([b"x", b"y"]), canonical.encode({"a": 1})):
        ct = seal_payload(keys[2], 2, junk, envelope_aad(SPACE, tag, DA, 1))
        with pytest.raises(EnvelopeMismatch):
            open_envelope(SPACE, tag, keys, Envelope(DA, 1, 2, ct), tagger)
    with pytest.raises(EnvelopeMismatch, match="another space"):
        seal_envelope("ef" * 16, tag, keys, wire)


# ------------------------------------------------------------------------------ auth


def test_challenge_signature() -> None:
    nonce, rk, origin = os.urandom(32), os.urandom(32), "http://127.0.0.1:8765"
    sig = sign_challenge(A, nonce, rk, origin)
    assert verify_challenge(A.sign_public, nonce, DA, rk, origin, sig)
    assert not verify_challenge(A.sign_public, os.urandom(32), DA, rk, origin, sig)  # nonce
    assert not verify_challenge(A.sign_public, nonce, DB, rk, origin, sig)  # another id
    assert not verify_challenge(B.sign_public, nonce, DA, rk, origin, sig)
    # domain separation: a bare signature of the nonce is not an answer
    assert not verify_challenge(A.sign_public, nonce, DA, rk, origin, A.sign(nonce + DA.encode()))


def test_signals_verify_end_to_end() -> None:
    keys = {DA: A.sign_public, DB: B.sign_public}
    p = seal_signal(A, SPACE, DB, b"offer")
    assert open_signal(keys, SPACE, DA, DB, p) == b"offer"
    for args in ((keys, SPACE, DA, DA, p),  # redirected to another device
                 (keys, "ef" * 16, DA, DB, p),  # replayed in another space
                 (keys, SPACE, DB, DB, p),  # claimed by another sender
                 ({DB: B.sign_public}, SPACE, DA, DB, p),  # sender not in the space
                 (keys, SPACE, DA, DB, b"\x00junk")):
        with pytest.raises(MocksyncError):
            open_signal(*args)


# ------------------------------------------------------------------------------ policy


def _space_state():
    g = new_genesis(A, name="team", member_name="alice", now_ms=1)
    s = verify_log([g])
    e1 = add_member(A, s, member_id="b" * 16, name="bob", role="editor", now_ms=2)
    s = verify_log([g, e1])
    e2 = add_device(A, s, member_id="b" * 16, device=B.public, sealed_key=None, now_ms=3)
    s = verify_log([g, e1, e2])
    return [g, e1, e2], s


def test_admission_decisions() -> None:
    entries, st = _space_state()
    plan = get_plan("team")
    sid = st.space_id
    assert policy.admit(st, sid, DB, model=1, plan=plan, member_online=()) is None
    r = policy.admit(st, sid, C.device_id, model=1, plan=plan, member_online=())
    assert r.code == "auth_refused" and C.device_id in r.reason
    assert policy.admit(None, sid, DB, model=1, plan=plan, member_online=()).code == "auth_refused"
    r = policy.admit(st, sid, DB, model=1, plan=get_plan("team", max_devices_per_member=1),
                     member_online={"OTHER"})
    assert r.code == "too_many_devices" and r.reason.startswith("device limit reached")
    # reconnecting device already counted is fine
    assert policy.admit(st, sid, DB, model=1, plan=get_plan("team", max_devices_per_member=1),
                        member_online={DB}) is None
    m = migrate(A, st, model=3, now_ms=4)
    st3 = verify_log(entries + [m])
    r = policy.admit(st3, sid, DB, model=2, plan=plan, member_online=())
    assert (r.code, r.reason) == ("incompatible_version", "incompatible version: this space was "
                                  "migrated to model 3; update mocksync")
    assert policy.admit(st3, sid, DB, model=3, plan=plan, member_online=()) is None
    rm = remove_device(A, st, device_id=DB, covers={}, now_ms=5)
    st_rm = verify_log(entries + [rm])
    r = policy.admit(st_rm, sid, DB, model=1, plan=plan, member_online=())
    assert r.code == "revoked" and r.reason.startswith("revoked: this device was removed")
    both = {"a": policy.Refusal("auth_refused", "x"), "b": policy.Refusal("revoked", "y")}
    assert policy.session_refusal(both).code == "revoked"
    assert policy.protocol_refusal(1, 1) is None
    assert policy.protocol_refusal(1, 2).reason.endswith("ask its operator to update it")
    assert policy.protocol_refusal(2, 1).reason.endswith("update mocksync")


def test_put_quota_decisions() -> None:
    plan = get_plan("team", max_envs=2, max_env_bytes=1000)
    ok = dict(env_count=1, known_env=False, declared_bytes=900, stored_bytes=0, adding_bytes=10)
    assert policy.check_put(plan, **ok) is None
    r = policy.check_put(plan, **{**ok, "env_count": 2})
    assert r.code == "quota_envs" and "allows 2 environments" in r.reason
    assert policy.check_put(plan, **{**ok, "env_count": 2, "known_env": True}) is None
    r = policy.check_put(plan, **{**ok, "declared_bytes": 1001})
    assert r.code == "quota_bytes" and r.reason.startswith("quota exceeded: team plan allows")
    cap = policy.STORED_BYTES_FACTOR * 1000
    assert policy.check_put(plan, **{**ok, "stored_bytes": cap - 10}) is None
    r = policy.check_put(plan, **{**ok, "stored_bytes": cap - 9, "known_env": True})
    assert r.code == "quota_bytes" and "of history" in r.reason


def test_token_bucket() -> None:
    b = policy.TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.1)  # fourth message waits one token's time
    assert b.take(10.0) == 0.0  # refilled (capped at burst)
    assert [b.take(10.0) for _ in range(2)] == [0.0, 0.0]
    assert b.take(10.0) > 0
    with pytest.raises(ValueError):
        policy.TokenBucket(rate=0, burst=1, now=0)


# ------------------------------------------------------------------------------ storage


def test_storage_slots_prefix_vv_paging_and_persistence(tmp_path: Path) -> None:
    s = SQLiteStorage(tmp_path)
    env = lambda d, n: Envelope(d, n, 1, bytes([n % 256]) * 10)  # noqa: E731
    stored = s.put(SPACE, TAG, [env(DA, n) for n in (1, 2, 3, 5)], declared_bytes=100,
                   uploader=DA, now_ms=1)
    assert [e.seq for e in stored] == [1, 2, 3, 5]
    again = s.put(SPACE, TAG, [env(DA, 3), env(DA, 4)], declared_bytes=120, uploader=DB, now_ms=2)
    assert [e.seq for e in again] == [4]  # an occupied slot keeps its first envelope
    s.put(SPACE, TAG, [env(DB, 2)], declared_bytes=120, uploader=DB, now_ms=3)
    assert s.vv(SPACE, TAG) == {DA: 5}  # DB holds only #2: no contiguous prefix
    assert s.index(SPACE) == {TAG: {DA: 5}}
    assert s.env_count(SPACE) == 1 and s.env_usage(SPACE, TAG).stored_bytes == 60
    assert s.env_usage(SPACE, TAG).declared_bytes == 120
    page, more = s.fetch(SPACE, TAG, {DA: 1}, max_items=3, max_bytes=10**6)
    assert [(e.device, e.seq) for e in page] == [(DA, 2), (DA, 3), (DA, 4)] and more
    page, more = s.fetch(SPACE, TAG, {DA: 4}, max_items=3, max_bytes=10**6)
    assert [(e.device, e.seq) for e in page] == [(DA, 5), (DB, 2)] and not more
    page, more = s.fetch(SPACE, TAG, {}, max_items=100, max_bytes=25)
    assert len(page) == 2 and more  # bytes bound (always at least one)
    s.append_log(SPACE, [b"e1", b"e2"], [b"h1", b"h2"])
    s.append_log(SPACE, [b"e2", b"e3"], [b"h2", b"h3"])
    s.close()
    s = SQLiteStorage(tmp_path)
    assert s.log_entries(SPACE) == [b"e1", b"e2", b"e3"]
    assert s.spaces() == [SPACE] and s.vv(SPACE, TAG) == {DA: 5}
    s.close()
