"""Sync messages: every kind round-trips, every refusal is a specific ProtocolError, and no
input at all (fuzzed) makes the decoder raise anything else."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync import MOCKOON_MAX_MIGRATION, MODEL_VERSION, PROTOCOL_VERSION
from mocksync.changes import MAX_CHANGESET_BYTES, canonical, make_changeset
from mocksync.errors import LimitError, MocksyncError
from mocksync.sync import (
    Ack,
    Bye,
    Cs,
    Have,
    Hello,
    MHeads,
    MLog,
    Nack,
    Ping,
    Pong,
    Presence,
    RelayedPresence,
    Want,
    check_compatible,
    decode_message,
    encode_message,
    peek_changeset,
)
from mocksync.sync.errors import (
    IncompatiblePeer,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    UnknownMessageKind,
)
from mocksync.sync.membership import (
    MAX_HEADS,
    MAX_MEMBERSHIP_SPACES,
    MAX_MLOG_ENTRIES,
    MAX_MLOG_ENTRY_BYTES,
)
from mocksync.sync.messages import (
    KEYS,
    MAX_CONTROL_MESSAGE_BYTES,
    MAX_EDITOR_CHARS,
    MAX_ENVS,
    MAX_MESSAGE_BYTES,
    MAX_REASON_CHARS,
    MAX_VV_DEVICES,
    MAX_WANT_SPAN,
)

from helpers.syncsupport import SPACE, SPACE2, env_id, set_ops

ENV = env_id(1)
KEY = Ed25519PrivateKey.generate()
CS1 = make_changeset(KEY, space=SPACE, env=ENV, device="DEV-A", hlc=5, ops=set_ops(ENV, "x"))
WIRE = CS1.encode()

EXAMPLES = [
    Hello("DEV-A", ((SPACE, ENV), (SPACE2, env_id(2)))),
    Hello("DEV-A", (), protocol=PROTOCOL_VERSION, model=7, migration=0),
    Have(SPACE, ENV, {"DEV-A": 3, "DEV-B": 1}),
    Have(SPACE, ENV, {}),
    Want(SPACE, ENV, "DEV-B", 0, MAX_WANT_SPAN),
    Cs.of(WIRE),
    Ack(SPACE, ENV, "DEV-A", 1, {"DEV-A": 1}),
    Nack(SPACE, ENV, "DEV-A", 1, "signature does not verify"),
    Ping(0),
    Pong((1 << 64) - 1),
    Presence(SPACE, ENV, "route-uuid-1", "mockoon"),
    Presence(SPACE, ENV, None, "vscode"),
    Presence(None, None, None, ""),
    Bye("incompatible version"),
    Hello("DEV-A", ((SPACE, ENV),), mheads={SPACE: (b"\x01" * 32, b"\x02" * 32), SPACE2: ()}),
    MHeads(SPACE, (b"\x03" * 32,)),
    MHeads(SPACE, ()),
    MLog(SPACE, (b"entry-1", b"entry-2"), False),
    MLog(SPACE2, (b"e",), True),
    RelayedPresence(b"signed-note", 3),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips_in_canonical_form(msg):
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert canonical.encode(canonical.decode(data)) == data
    assert cbor2.loads(data)["t"] in KEYS


def test_every_kind_has_an_example():
    kinds = {cbor2.loads(encode_message(m))["t"] for m in EXAMPLES}
    assert kinds == set(KEYS)


def test_cs_fields_come_from_the_signed_bytes():
    msg = decode_message(encode_message(Cs.of(WIRE)))
    assert (msg.space, msg.env, msg.device, msg.seq) == (SPACE, ENV, "DEV-A", 1)
    assert msg.wire == WIRE
    assert peek_changeset(WIRE) == (SPACE, ENV, "DEV-A", 1)
    # An envelope cannot claim another env: there is nowhere to claim it.
    assert set(cbor2.loads(encode_message(msg))) == {"t", "w"}


def test_a_one_value_edit_is_small_on_the_wire():
    assert len(encode_message(Cs.of(WIRE))) < 400
    assert len(encode_message(Ack(SPACE, ENV, "DEV-A", 1, {"DEV-A": 1}))) < 200


def enc(m: dict) -> bytes:
    return canonical.encode(m)


VALID = {
    "hello": {"t": "hello", "p": PROTOCOL_VERSION, "m": MODEL_VERSION,
              "mig": MOCKOON_MAX_MIGRATION, "d": "DEV-A", "envs": [[SPACE, ENV]],
              "mh": {SPACE: [b"\x01" * 32]}},
    "mheads": {"t": "mheads", "s": SPACE, "h": [b"\x01" * 32]},
    "mlog": {"t": "mlog", "s": SPACE, "w": [b"entry"], "f": True},
    "have": {"t": "have", "s": SPACE, "e": ENV, "vv": {"DEV-A": 2}},
    "want": {"t": "want", "s": SPACE, "e": ENV, "d": "DEV-A", "a": 0, "u": 2},
    "cs": {"t": "cs", "w": WIRE},
    "ack": {"t": "ack", "s": SPACE, "e": ENV, "d": "DEV-A", "n": 1, "vv": {}},
    "nack": {"t": "nack", "s": SPACE, "e": ENV, "d": "DEV-A", "n": 1, "r": "no"},
    "ping": {"t": "ping", "n": 1},
    "pong": {"t": "pong", "n": 1},
    "presence": {"t": "presence", "s": SPACE, "e": ENV, "u": "x", "ed": "mockoon"},
    "bye": {"t": "bye", "r": "bye"},
}


def test_the_valid_maps_decode():
    for m in VALID.values():
        decode_message(enc(m))


def with_(kind: str, **changes) -> bytes:
    m = dict(VALID[kind])
    for k, v in changes.items():
        if v is KeyError:
            m.pop(k)
        else:
            m[k] = v
    return enc(m)


REFUSALS = {
    # kind / framing
    "not a map": (enc([1, 2]), MalformedMessage),
    "no kind": (enc({"s": SPACE}), MalformedMessage),
    "kind not a string": (enc({"t": 3}), MalformedMessage),
    "unknown kind": (enc({"t": "gossip", "x": 1}), UnknownMessageKind),
    "not CBOR": (b"\xff\x00garbage", MalformedMessage),
    "empty": (b"", MalformedMessage),
    # {"n": 1, "t": "ping"} with a two-byte integer where one byte would do
    "non-canonical": (b"\xa2\x61n\x19\x00\x01\x61t\x64ping", MalformedMessage),
    "extra key": (with_("ping", x=1), MalformedMessage),
    "missing key": (with_("have", vv=KeyError), MalformedMessage),
    # hello
    "hello device bad": (with_("hello", d="bad id!"), MalformedMessage),
    "hello envs not list": (with_("hello", envs={"a": 1}), MalformedMessage),
    "hello env pair short": (with_("hello", envs=[[SPACE]]), MalformedMessage),
    "hello env twice": (with_("hello", envs=[[SPACE, ENV], [SPACE, ENV]]), MalformedMessage),
    "hello too many envs": (with_("hello", envs=[[SPACE, env_id(i)] for i in range(MAX_ENVS + 1)]),
                            MessageTooLarge),
    "hello model str": (with_("hello", m="1"), MalformedMessage),
    "hello migration negative": (with_("hello", mig=-1), MalformedMessage),
    "hello protocol bool": (with_("hello", p=True), MalformedMessage),
    "hello protocol missing": (with_("hello", p=KeyError), MalformedMessage),
    "hello mh missing": (with_("hello", mh=KeyError), MalformedMessage),
    "hello mh not a map": (with_("hello", mh=[SPACE]), MalformedMessage),
    "hello mh bad space": (with_("hello", mh={"x": []}), MalformedMessage),
    "hello mh head short": (with_("hello", mh={SPACE: [b"\x01" * 31]}), MalformedMessage),
    "hello mh head twice": (with_("hello", mh={SPACE: [b"\x01" * 32] * 2}), MalformedMessage),
    "hello mh too many heads": (with_("hello", mh={SPACE: [bytes([i]) * 32
                                                             for i in range(MAX_HEADS + 1)]}),
                                MessageTooLarge),
    "hello mh too many spaces": (with_("hello", mh={f"{i:032x}": []
                                                    for i in range(MAX_MEMBERSHIP_SPACES + 1)}),
                                 MessageTooLarge),
    # membership gossip
    "mheads heads not a list": (with_("mheads", h=b"\x01" * 32), MalformedMessage),
    "mheads head text": (with_("mheads", h=["ab" * 32]), MalformedMessage),
    "mlog empty": (with_("mlog", w=[]), MalformedMessage),
    "mlog entry not bytes": (with_("mlog", w=["entry"]), MalformedMessage),
    "mlog entry empty": (with_("mlog", w=[b""]), MalformedMessage),
    "mlog entry too big": (with_("mlog", w=[b"x" * (MAX_MLOG_ENTRY_BYTES + 1)]), MessageTooLarge),
    "mlog too many entries": (with_("mlog", w=[b"x"] * (MAX_MLOG_ENTRIES + 1)), MessageTooLarge),
    "mlog final not bool": (with_("mlog", f=1), MalformedMessage),
    "mlog bad space": (with_("mlog", s="nope"), MalformedMessage),
    # space / env / device fields
    "space uppercase": (with_("have", s=SPACE.upper()), MalformedMessage),
    "space bytes": (with_("have", s=bytes.fromhex(SPACE)), MalformedMessage),
    "env empty": (with_("have", e=""), MalformedMessage),
    "env too long": (with_("have", e="e" * 65), MalformedMessage),
    "env unprintable": (with_("have", e="a\nb"), MalformedMessage),
    "vv not a map": (with_("have", vv=[1]), MalformedMessage),
    "vv zero seq": (with_("have", vv={"DEV-A": 0}), MalformedMessage),
    "vv float seq": (with_("have", vv={"DEV-A": 1.0}), MalformedMessage),
    "vv bad device": (with_("have", vv={"a b": 1}), MalformedMessage),
    "vv int key": (with_("have", vv={5: 1}), MalformedMessage),
    "vv seq too big": (with_("have", vv={"DEV-A": 1 << 63}), MalformedMessage),
    "vv too many": (with_("have", vv={f"D{i}": 1 for i in range(MAX_VV_DEVICES + 1)}),
                    MessageTooLarge),
    # want
    "want empty range": (with_("want", a=5, u=5), MalformedMessage),
    "want backwards": (with_("want", a=5, u=2), MalformedMessage),
    "want too wide": (with_("want", a=0, u=MAX_WANT_SPAN + 1), MessageTooLarge),
    "want negative": (with_("want", a=-1), MalformedMessage),
    # cs
    "cs wire not bytes": (with_("cs", w="text"), MalformedMessage),
    "cs wire garbage": (with_("cs", w=b"\x00\x01"), MalformedMessage),
    "cs wire truncated": (with_("cs", w=WIRE[:-3]), MalformedMessage),
    "cs wire not a change set": (with_("cs", w=canonical.encode([b"x", b"y"])), MalformedMessage),
    "cs body without env": (with_("cs", w=canonical.encode([canonical.encode(
        {"s": bytes(16), "d": "A", "n": 1}), b"s"])), MalformedMessage),
    "cs wire too big": (with_("cs", w=b"\x00" * (MAX_CHANGESET_BYTES + 1)), MessageTooLarge),
    # ack / nack
    "ack seq zero": (with_("ack", n=0), MalformedMessage),
    "nack reason too long": (with_("nack", r="r" * (MAX_REASON_CHARS + 1)), MessageTooLarge),
    "nack reason bytes": (with_("nack", r=b"r"), MalformedMessage),
    # ping
    "ping nonce too big": (with_("ping", n=1 << 64), MalformedMessage),
    "ping nonce str": (with_("pong", n="1"), MalformedMessage),
    # presence
    "presence env without space": (with_("presence", s=None), MalformedMessage),
    "presence entity without env": (with_("presence", s=None, e=None), MalformedMessage),
    "presence entity too long": (with_("presence", u="u" * 65), MalformedMessage),
    "presence editor too long": (with_("presence", ed="e" * (MAX_EDITOR_CHARS + 1)),
                                 MessageTooLarge),
    "presence editor missing": (with_("presence", ed=KeyError), MalformedMessage),
    # bye
    "bye reason int": (with_("bye", r=1), MalformedMessage),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_are_specific(name):
    data, error = REFUSALS[name]
    with pytest.raises(error) as info:
        decode_message(data)
    assert isinstance(info.value, ProtocolError)
    assert str(info.value)  # a sentence, not an empty error


def test_size_limits():
    with pytest.raises(MessageTooLarge) as info:
        decode_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    assert isinstance(info.value, LimitError)
    big_bye = enc({"t": "bye", "r": "x" * 10, "pad": b"\x00" * MAX_CONTROL_MESSAGE_BYTES})
    with pytest.raises(MessageTooLarge, match="other than cs"):
        decode_message(big_bye)
    with pytest.raises(MalformedMessage):
        decode_message("not bytes")  # type: ignore[arg-type]


def test_encoding_refuses_what_a_peer_would_refuse():
    for bad in (
        Have(SPACE, ENV, {"DEV-A": 0}),
        Want(SPACE, ENV, "DEV-A", 3, 3),
        Hello("no spaces allowed", ()),
        Presence(None, ENV, None, "x"),
        Bye("x" * (MAX_REASON_CHARS + 1)),
        Ping(-1),
    ):
        with pytest.raises(ProtocolError):
            encode_message(bad)


def test_a_hello_of_another_protocol_version_is_read_for_its_versions_only():
    future = enc({"t": "hello", "p": PROTOCOL_VERSION + 1, "m": 9, "mig": 40, "d": "NEW-1",
                  "envs": "a future layout", "caps": ["x"]})
    hello = decode_message(future)
    assert (hello.protocol, hello.model, hello.migration, hello.device) == (
        PROTOCOL_VERSION + 1, 9, 40, "NEW-1")
    assert hello.envs == ()
    with pytest.raises(IncompatiblePeer) as info:
        check_compatible(hello)
    assert str(info.value) == (
        f"incompatible version: peer NEW-1 speaks protocol {PROTOCOL_VERSION + 1}, this device "
        f"{PROTOCOL_VERSION}; update mocksync on this device"
    )
    old = decode_message(enc({"t": "hello", "p": 0, "d": "OLD-1"}))
    with pytest.raises(IncompatiblePeer, match="update mocksync on device OLD-1"):
        check_compatible(old)
    other_model = Hello("M-1", (), model=MODEL_VERSION + 1)
    with pytest.raises(IncompatiblePeer, match="uses register model"):
        check_compatible(decode_message(encode_message(other_model)))
    check_compatible(decode_message(encode_message(Hello("OK-1", ()))))


# ------------------------------------------------------------------------------- fuzzing

cbor_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 65), 1 << 65), st.floats(allow_nan=False),
    st.text(max_size=70), st.binary(max_size=40),
    st.sampled_from([SPACE, ENV, "DEV-A", "hello", "have", "cs", "ack", "want"]),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.one_of(st.sampled_from(
                                ["t", "s", "e", "d", "n", "vv", "a", "u", "w", "r", "p", "m",
                                 "mig", "envs", "ed"]), st.text(max_size=3), st.integers()),
                                inner, max_size=6)),
    max_leaves=20,
)


def _only_protocol_errors(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except ProtocolError:
        return
    except MocksyncError as exc:  # pragma: no cover - the assertion below says what went wrong
        raise AssertionError(f"non-protocol refusal {type(exc).__name__}: {exc}") from None
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    _only_protocol_errors(data)


_FUZZ_KEYS = st.sampled_from(["t", "s", "e", "d", "n", "vv", "a", "u", "w", "r", "p", "m",
                              "mig", "envs", "ed", "x"])


# The default run's count; `test_fuzz_fields_of_valid_messages_long` (make test-long) runs 4000.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.dictionaries(_FUZZ_KEYS, cbor_values, max_size=4))
def test_fuzz_fields_of_valid_messages(kind, changes):
    _fuzz_fields(kind, changes)


@pytest.mark.long
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.dictionaries(_FUZZ_KEYS, cbor_values, max_size=4))
def test_fuzz_fields_of_valid_messages_long(kind, changes):
    _fuzz_fields(kind, changes)


def _fuzz_fields(kind, changes):
    m = dict(VALID[kind])
    m.update(changes)
    try:
        data = canonical.encode(m)
    except Exception:  # values cbor2 cannot encode are not inputs a peer can send
        return
    _only_protocol_errors(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLES), st.data())
def test_fuzz_mutated_valid_messages(msg, data):
    raw = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[i:]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    _only_protocol_errors(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(cbor_values)
def test_fuzz_arbitrary_cbor_documents(value):
    try:
        data = canonical.encode(value)
    except Exception:
        return
    _only_protocol_errors(data)


def test_a_relayed_presence_note_is_bounded_in_size_and_hops():
    from mocksync.sync.messages import MAX_PRESENCE_HOPS, MAX_PRESENCE_NOTE_BYTES

    def raw(w, h):
        return canonical.encode({"t": "rpres", "w": w, "h": h})

    assert decode_message(raw(b"x" * MAX_PRESENCE_NOTE_BYTES, 0)).hops == 0
    with pytest.raises(MessageTooLarge, match=(
            rf"^sync message rpres\.w: {MAX_PRESENCE_NOTE_BYTES + 1} bytes is over the "
            rf"{MAX_PRESENCE_NOTE_BYTES} byte limit$")):
        decode_message(raw(b"x" * (MAX_PRESENCE_NOTE_BYTES + 1), 1))
    with pytest.raises(MalformedMessage, match=(
            rf"^sync message rpres\.h: {MAX_PRESENCE_HOPS + 1} is outside 0\.\.{MAX_PRESENCE_HOPS}$")):
        decode_message(raw(b"x", MAX_PRESENCE_HOPS + 1))
    with pytest.raises(MalformedMessage, match=r"^sync message rpres\.w: 0 bytes, expected at least 1$"):
        decode_message(raw(b"", 1))
