"""What catch-up ingest no longer repeats per change set, and that it still checks the same.

Issue: the store-ingest and relay catch-up benchmarks missed their targets. Per change set, a
device parsed its author's public key again, matched the same device and space ids against
their patterns again, and read the membership (a stat of the documents file, twice) again for
every one of a catch-up page's 1,000 change sets. These tests pin the memos and the one
membership reading per page, and that every refusal those checks made is still made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.agent.spacedir import SpaceDirectory
from mocksync.changes import ChangeSet, canonical
from mocksync.changes import changeset as csm
from mocksync.changes.errors import MalformedChangeSet, SignatureError
from mocksync.errors import ChangeSetError
from mocksync.paths import Home
from mocksync.space.writers import NOT_A_DEVICE
from mocksync.spaceio.actions import create_space, init_device
from mocksync.spaceio.store import get_space

SPACE = "ab" * 16
ENV = "e" * 32


def _raw(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signed(key: Ed25519PrivateKey, device: str = "DEV-A", seq: int = 1) -> ChangeSet:
    cs = ChangeSet(space=SPACE, env=ENV, device=device, seq=seq, hlc=1 << 16, deps={},
                   prev_hash=b"" if seq == 1 else b"\x01" * 32,
                   ops=(["s", "u1", ["v", "label"], '"x"'],))
    return ChangeSet.decode(cs.sign(key).encode())


# ------------------------------------------------------------------ public key memo


def test_a_device_key_is_parsed_once_and_still_checks_every_signature() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    cs = _signed(key)
    raw = _raw(key)
    csm._PUBLIC_KEYS.clear()
    cs.verify(raw)
    parsed = csm._PUBLIC_KEYS[raw]
    cs.verify(raw)
    assert csm._PUBLIC_KEYS[raw] is parsed  # the same object: not parsed again
    with pytest.raises(SignatureError, match="does not verify"):
        cs.verify(_raw(other))  # a memoised key does not make another key's check pass
    forged = ChangeSet.from_outer(cs.encode(), [cs.body_bytes(), b"\x00" * 64])
    with pytest.raises(SignatureError, match="does not verify"):
        forged.verify(raw)  # nor a bad signature under a remembered key


def test_an_invalid_key_is_refused_every_time_and_not_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cs = _signed(Ed25519PrivateKey.generate())
    bad = b"\x02" * 32
    calls = 0

    def refuse(raw: bytes) -> None:  # what cryptography does with bytes it cannot use
        nonlocal calls
        calls += 1
        raise ValueError("An Ed25519 public key is 32 bytes long")

    monkeypatch.setattr(csm.Ed25519PublicKey, "from_public_bytes", refuse)
    csm._PUBLIC_KEYS.clear()
    for _ in range(2):
        with pytest.raises(SignatureError, match="not a valid Ed25519 key"):
            cs.verify(bad)
    assert calls == 2 and bad not in csm._PUBLIC_KEYS
    with pytest.raises(SignatureError, match="32 bytes"):
        cs.verify(b"\x01" * 31)
    with pytest.raises(SignatureError, match="bytes or Ed25519PublicKey"):
        cs.verify("not a key")  # type: ignore[arg-type]


def test_the_key_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csm, "MAX_PUBLIC_KEYS_KEPT", 3)
    csm._PUBLIC_KEYS.clear()
    keys = [Ed25519PrivateKey.generate() for _ in range(7)]
    for k in keys:
        _signed(k).verify(_raw(k))
        assert len(csm._PUBLIC_KEYS) <= 3
    assert _raw(keys[-1]) in csm._PUBLIC_KEYS


# ------------------------------------------------------------------ id pattern memo


def test_ids_are_matched_by_their_own_pattern_even_when_another_was_remembered() -> None:
    csm._DEVICES_OK.clear()
    csm._SPACES_OK.clear()
    key = Ed25519PrivateKey.generate()
    _signed(key, device="DEV-A")
    assert "DEV-A" in csm._DEVICES_OK and SPACE in csm._SPACES_OK
    # A remembered device id is no space id (not 32 lowercase hex characters) ...
    with pytest.raises(MalformedChangeSet, match="field space"):
        ChangeSet(space="DEV-A", env=ENV, device="DEV-A", seq=1, hlc=0, deps={}, prev_hash=b"",
                  ops=())
    # ... and a remembered space id stays refused as a device id where it does not fit.
    with pytest.raises(MalformedChangeSet, match="field device"):
        ChangeSet(space=SPACE, env=ENV, device="x" * 65, seq=1, hlc=0, deps={}, prev_hash=b"",
                  ops=())
    with pytest.raises(MalformedChangeSet, match="field deps"):
        ChangeSet(space=SPACE, env=ENV, device="DEV-A", seq=2, hlc=0, deps={"bad id!": 1},
                  prev_hash=b"\x01" * 32, ops=())


def test_the_id_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csm, "MAX_IDS_KEPT", 4)
    csm._DEVICES_OK.clear()
    for n in range(20):
        ChangeSet(space=SPACE, env=ENV, device=f"D{n}", seq=1, hlc=0, deps={}, prev_hash=b"",
                  ops=())
        assert len(csm._DEVICES_OK) <= 4


def test_header_checks_take_the_same_values_through_the_fast_paths() -> None:
    """Exact types take the quick test; the other accepted types are still accepted."""
    base: dict[str, Any] = dict(space=SPACE, env=ENV, device="DEV-A", seq=2, hlc=0)
    a = ChangeSet(**base, deps={"DEV-B": 1}, prev_hash=b"\x01" * 32, ops=[["d", "u1"]])
    b = ChangeSet(**base, deps=a.deps, prev_hash=bytearray(b"\x01" * 32),
                  ops=iter([("d", "u1")]))
    assert (a.deps, a.prev_hash, a.ops) == (b.deps, b.prev_hash, b.ops)
    with pytest.raises(MalformedChangeSet, match="expected a list of ops"):
        ChangeSet(**base, deps={}, prev_hash=b"\x01" * 32, ops="dd")
    with pytest.raises(MalformedChangeSet, match="expected a map"):
        ChangeSet(**base, deps=[("DEV-B", 1)], prev_hash=b"\x01" * 32, ops=())  # type: ignore[arg-type]
    with pytest.raises(MalformedChangeSet, match="prev_hash"):
        ChangeSet(**base, deps={}, prev_hash="01" * 32, ops=())  # type: ignore[arg-type]


# ------------------------------------------------------------------ one membership reading per page


def test_a_page_is_judged_against_one_reading_of_the_membership(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path / "alice")
    ident, _ = init_device(home, name="alice-laptop", member_name="alice")
    space = create_space(home, ident, "team").space_id
    directory = SpaceDirectory(home)
    stats = 0
    real = SpaceDirectory._refresh

    def counted(self: SpaceDirectory) -> object:
        nonlocal stats
        stats += 1
        return real(self)

    monkeypatch.setattr(SpaceDirectory, "_refresh", counted)
    slots = [(ident.device_id, ENV, n) for n in range(1, 501)] + [("STRANGER", ENV, 1)]
    verdicts = directory.judge_all(space, slots)
    assert stats == 1
    # Each verdict is the one `judge` gives on its own.
    assert verdicts == [directory.judge(space, *slot) for slot in slots]
    assert all(v.accept and v.sign_key == get_space(home, space).state.devices[
        ident.device_id].sign_key for v in verdicts[:-1])
    assert not verdicts[-1].accept and verdicts[-1].code == NOT_A_DEVICE
    unknown = directory.judge_all("cd" * 16, slots[:3])
    assert [v.code for v in unknown] == [NOT_A_DEVICE] * 3


# ------------------------------------------------------------------ the outer layer's quick split


def _gate_outer(wire: bytes) -> object:
    try:
        return canonical.decode(wire, what="change set", max_items=csm.WIRE_ITEMS)
    except ChangeSetError:
        return None


def _near_wires() -> st.SearchStrategy[bytes]:
    """Wires built around the one shape, with every head form and length, sometimes wrong."""
    def build(body_len: int, form: int, sig_len: int, sig_head: bytes, first: int,
              extra: bytes, cut: int) -> bytes:
        if form == 0:  # the length in the head byte (a wrong one past 23)
            head = bytes((0x40 | min(body_len, 23),))
        elif form == 1 and body_len < 256:
            head = b"\x58" + body_len.to_bytes(1, "big")
        elif form in (1, 2):
            head = b"\x59" + body_len.to_bytes(2, "big")
        else:
            head = b"\x5a" + body_len.to_bytes(4, "big")
        wire = bytes((first,)) + head + b"\xa0" * body_len + sig_head + b"\x07" * sig_len + extra
        return wire[:len(wire) - cut] if cut else wire
    return st.builds(build, st.integers(0, 300), st.sampled_from([0, 1, 2, 4]),
                     st.sampled_from([64, 63, 65, 0]),
                     st.sampled_from([b"\x58\x40", b"\x58\x3f", b"\x59\x00\x40", b"\x40"]),
                     st.sampled_from([0x82, 0x83, 0x81, 0x9f]),
                     st.sampled_from([b"", b"\x00"]), st.integers(0, 2))


@settings(max_examples=400, deadline=None)
@given(st.one_of(_near_wires(), st.binary(max_size=200)))
def test_the_quick_split_gives_what_the_gate_gives_or_leaves_it_to_the_gate(
        wire: bytes) -> None:
    split = csm._split_wire(wire)
    if split is not None:
        assert split == _gate_outer(wire)
        assert [len(split[1])] == [csm.SIG_BYTES]


def test_every_head_form_of_a_real_wire_is_split_or_refused_as_the_gate_does() -> None:
    key = Ed25519PrivateKey.generate()
    wire = _signed(key).encode()
    assert csm._split_wire(wire) == _gate_outer(wire) is not None
    body = _signed(key).body_bytes()
    # The same body behind a longer (non-shortest) length head: not split, and the gate
    # refuses it, so decode does too.
    long_head = b"\x82\x59" + len(body).to_bytes(2, "big") + body + b"\x58\x40" + b"\x00" * 64
    assert csm._split_wire(long_head) is None and _gate_outer(long_head) is None
    with pytest.raises(MalformedChangeSet, match="not canonical"):
        ChangeSet.decode(long_head)
