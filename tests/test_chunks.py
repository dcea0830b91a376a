"""Chunk framing for data channels: split/reassemble in any order, every refusal."""

from __future__ import annotations

import contextlib
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.changes import chunks
from mocksync.changes.chunks import (
    CHUNK_SIZE,
    DATA_CHANNEL_MAX_MESSAGE,
    FRAME_MAGIC,
    HEADER_SIZE,
    MAX_CHUNK_DATA,
    MAX_MESSAGE_BYTES,
    MAX_PENDING_MESSAGES,
    Reassembler,
    split,
)
from mocksync.changes.errors import ChunkError, ChunkLimitError
from mocksync.errors import ChangeSetError, LimitError

HDR = struct.Struct(">BQIIQ")


def frame(msg_id, index, total, length, data, magic=FRAME_MAGIC):
    return HDR.pack(magic, msg_id, index, total, length) + data


def test_header_is_small_and_frames_fit_a_data_channel():
    assert HEADER_SIZE == 25
    payload = os.urandom(3 * CHUNK_SIZE + 17)
    frames = split(9, payload)
    assert len(frames) == 4
    assert all(len(f) <= CHUNK_SIZE + HEADER_SIZE for f in frames)
    assert all(len(f) <= DATA_CHANNEL_MAX_MESSAGE for f in frames)
    assert [HDR.unpack_from(f)[1:] for f in frames] == [(9, i, 4, len(payload)) for i in range(4)]
    assert b"".join(f[HEADER_SIZE:] for f in frames) == payload


def test_in_order_reassembly_returns_payload_only_at_the_end():
    payload = os.urandom(250_000)
    r = Reassembler()
    frames = split(1, payload, 100_000)
    assert [r.feed(f) for f in frames[:-1]] == [None, None]
    assert r.pending_count == 1 and r.buffered_bytes == 200_000
    assert r.feed(frames[-1]) == payload
    assert r.pending_count == 0 and r.buffered_bytes == 0


def test_empty_payload_is_one_frame():
    frames = split(5, b"")
    assert len(frames) == 1 and len(frames[0]) == HEADER_SIZE
    assert Reassembler().feed(frames[0]) == b""


def test_late_duplicates_after_completion_are_ignored():
    r = Reassembler()
    frames = split(3, b"x" * 10, 4)
    for f in frames:
        out = r.feed(f)
    assert out == b"x" * 10
    assert all(r.feed(f) is None for f in frames)
    assert r.pending_count == 0


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    chunk_size=st.integers(1, 64),
    seed=st.integers(0, 2**32),
    dup_rate=st.floats(0, 1),
)
def test_random_split_shuffle_duplicate_reassembly(payloads, chunk_size, seed, dup_rate):
    rng = random.Random(seed)
    frames = []
    for msg_id, payload in enumerate(payloads):
        frames += [(msg_id, f) for f in split(msg_id, payload, chunk_size)]
    frames += [item for item in frames if rng.random() < dup_rate]
    rng.shuffle(frames)
    r = Reassembler()
    got: dict[int, bytes] = {}
    for msg_id, f in frames:
        out = r.feed(f)
        if out is not None:
            assert msg_id not in got, "a message was delivered twice"
            got[msg_id] = out
    assert got == dict(enumerate(payloads))
    assert r.pending_count == 0 and r.buffered_bytes == 0


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2_000), magic=st.booleans())
def test_random_bytes_raise_only_chunk_errors(data, magic):
    if magic:
        data = bytes([FRAME_MAGIC]) + data[1:]
    r = Reassembler(max_message_bytes=10_000)
    with contextlib.suppress(ChunkError):
        r.feed(data)
    assert r.pending_count <= 1


random_frames = st.lists(
    st.tuples(
        st.integers(0, 3),  # msg_id
        st.integers(0, 4),  # index
        st.integers(0, 4),  # total
        st.integers(0, 12),  # length
        st.binary(max_size=8),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(frames=random_frames)
def test_hostile_frame_sequences_raise_only_chunk_errors_and_keep_books(frames):
    r = Reassembler(max_pending=2, max_pending_bytes=20)
    for msg_id, index, total, length, data in frames:
        try:
            out = r.feed(frame(msg_id, index, total, length, data))
        except ChunkError:
            continue
        if out is not None:
            assert len(out) == length
        assert r.pending_count <= 2
        assert 0 <= r.buffered_bytes <= 20
        assert r.buffered_bytes == sum(sum(map(len, p.parts.values())) for p in r._pending.values())


def _refused(r: Reassembler, f: bytes, exc=ChunkError):
    before = (r.pending_count, r.buffered_bytes)
    with pytest.raises(exc) as info:
        r.feed(f)
    assert isinstance(info.value, ChangeSetError)
    assert (r.pending_count, r.buffered_bytes) == before  # bad input changes nothing
    return str(info.value)


def test_refuses_short_frame_and_bad_magic():
    r = Reassembler()
    assert "header" in _refused(r, b"\xc1\x00\x01")
    assert "not a mocksync chunk frame" in _refused(r, frame(1, 0, 1, 3, b"abc", magic=0x00))
    with pytest.raises(ChunkError):
        r.feed("text")  # type: ignore[arg-type]


def test_refuses_index_out_of_range_and_zero_total():
    r = Reassembler()
    assert "out of range" in _refused(r, frame(1, 2, 2, 20, b"x" * 10))
    _refused(r, frame(1, 0, 0, 0, b""))


def test_refuses_more_frames_than_bytes():
    r = Reassembler()
    assert "inconsistent" in _refused(r, frame(1, 0, 5, 3, b"x"))
    _refused(r, frame(1, 0, 2, 0, b""))


def test_refuses_inconsistent_totals_between_frames():
    r = Reassembler()
    assert r.feed(frame(1, 0, 3, 25, b"a" * 10)) is None
    msg = _refused(r, frame(1, 1, 4, 25, b"b" * 10))
    assert "earlier frames said 3 / 25" in msg
    _refused(r, frame(1, 1, 3, 26, b"b" * 10))


def test_refuses_frames_of_the_wrong_size():
    r = Reassembler()
    # first frame fixes the stride at 10
    assert r.feed(frame(1, 0, 3, 25, b"a" * 10)) is None
    assert "expected 10" in _refused(r, frame(1, 1, 3, 25, b"b" * 9))
    assert "expected 5" in _refused(r, frame(1, 2, 3, 25, b"c" * 6))
    # a stride that cannot produce the announced length
    _refused(Reassembler(), frame(2, 0, 3, 100, b"a" * 10))
    # a last frame that implies non-integral or oversized strides
    _refused(Reassembler(), frame(3, 2, 3, 26, b"c" * 5))
    _refused(Reassembler(), frame(3, 2, 3, 21, b"c" * 11))
    _refused(Reassembler(), frame(3, 1, 2, MAX_CHUNK_DATA + 2, b"c"))
    # a single-frame message must carry everything
    _refused(Reassembler(), frame(4, 0, 1, 10, b"x" * 9))


def test_first_frame_seen_may_be_the_last_one():
    r = Reassembler()
    payload = bytes(range(25))
    frames = split(7, payload, 10)
    assert r.feed(frames[2]) is None
    assert "expected 10" in _refused(r, frame(7, 0, 3, 25, b"a" * 9))
    assert r.feed(frames[0]) is None
    assert r.feed(frames[1]) == payload


def test_refuses_duplicate_index_with_different_data():
    r = Reassembler()
    f0, f1 = split(1, b"abcdefgh", 4)
    assert r.feed(f0) is None
    assert r.feed(f0) is None  # identical duplicate: ignored
    assert "different data" in _refused(r, frame(1, 0, 2, 8, b"ABCD"))
    assert r.feed(f1) == b"abcdefgh"


def test_refuses_oversize_messages_and_frames():
    r = Reassembler()
    msg = _refused(r, frame(1, 0, 2000, MAX_MESSAGE_BYTES + 1, b"x" * 40_000), ChunkLimitError)
    assert str(MAX_MESSAGE_BYTES) in msg
    small = Reassembler(max_message_bytes=100)
    _refused(small, frame(1, 0, 2, 101, b"x" * 60), LimitError)
    _refused(
        r, frame(2, 0, 2, 2 * MAX_CHUNK_DATA + 2, b"x" * (MAX_CHUNK_DATA + 1)), ChunkLimitError
    )
    with pytest.raises(ChunkLimitError):
        split(1, bytes(MAX_MESSAGE_BYTES + 1))


def test_refuses_too_many_pending_messages():
    r = Reassembler()
    for msg_id in range(MAX_PENDING_MESSAGES):
        assert r.feed(split(msg_id, b"ab", 1)[0]) is None
    assert r.pending_count == MAX_PENDING_MESSAGES
    msg = _refused(r, split(999, b"ab", 1)[0], ChunkLimitError)
    assert str(MAX_PENDING_MESSAGES) in msg
    # frames of messages already in flight are still accepted, and finishing one frees a slot
    assert r.feed(split(0, b"ab", 1)[1]) == b"ab"
    assert r.feed(split(999, b"ab", 1)[0]) is None


def test_refuses_too_many_buffered_bytes_and_discard_frees_them():
    r = Reassembler(max_pending_bytes=25)
    assert r.feed(frame(1, 0, 3, 30, b"a" * 10)) is None
    assert r.feed(frame(2, 0, 3, 30, b"b" * 10)) is None
    _refused(r, frame(3, 0, 3, 30, b"c" * 10), ChunkLimitError)
    r.discard(1)
    assert r.buffered_bytes == 10 and r.pending_count == 1
    assert r.feed(frame(3, 0, 3, 30, b"c" * 10)) is None


def test_split_refuses_bad_arguments():
    with pytest.raises(ChunkError):
        split(-1, b"x")
    with pytest.raises(ChunkError):
        split(1 << 64, b"x")
    with pytest.raises(ChunkError):
        split(1, b"x", 0)
    with pytest.raises(ChunkError):
        split(1, b"x", MAX_CHUNK_DATA + 1)
    with pytest.raises(ChunkError):
        split(1, "text")  # type: ignore[arg-type]
    assert len(split(1, b"x" * MAX_CHUNK_DATA, MAX_CHUNK_DATA)[0]) == DATA_CHANNEL_MAX_MESSAGE


def test_errors_are_project_errors():
    assert issubclass(chunks.ChunkError, ChangeSetError)
    assert issubclass(chunks.ChunkLimitError, LimitError)
