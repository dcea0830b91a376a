"""Splitting large messages into frames that fit a WebRTC data channel, and joining them again.

aiortc refuses to send a data-channel message over 262,144 bytes, while a change set (a whole
imported environment, a catch-up batch) can be megabytes. So every message is cut into frames
of at most `CHUNK_SIZE` data bytes, each with a small fixed header, and the receiver puts them
back together. Small frames also let flow control (`bufferedAmountLowThreshold`) interleave
live edits with a long catch-up instead of stalling behind it.

Frame layout (big-endian): magic/version byte, msg_id u64, index u32, total u32, payload length
u64, then the data. All frames of one message but the last carry the same number of data bytes,
so from the first frame that arrives the receiver knows exactly how long every other frame must
be: an inconsistent or hostile sender is refused at its first bad frame, and memory grows only
with data actually received, never with what a header claims.

The reassembler is the receiving side's defence: it bounds the message size, the number of
messages in flight and the bytes buffered, refuses frames that contradict each other, and
ignores exact duplicates (including late copies of messages it already delivered, as long as
the sender never reuses a msg_id). A refused frame changes nothing.

Pure: no sockets, no clocks. Abandoning a stalled message is the session's call (`discard`).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from .errors import ChunkError, ChunkLimitError

#: Largest message a WebRTC data channel (aiortc) will send.
DATA_CHANNEL_MAX_MESSAGE = 262_144
#: First byte of every frame: identifies the chunk framing and its version (1).
FRAME_MAGIC = 0xC1
_HEADER = struct.Struct(">BQIIQ")
#: Bytes of header in front of each frame's data.
HEADER_SIZE = _HEADER.size
#: Default data bytes per frame (leaves ample room under the data-channel limit).
CHUNK_SIZE = 60 * 1024
#: Most data bytes one frame may carry so that the frame still fits a data-channel message.
MAX_CHUNK_DATA = DATA_CHANNEL_MAX_MESSAGE - HEADER_SIZE
#: Largest payload that may be split or reassembled.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Most partially received messages held at once per reassembler (per peer connection).
MAX_PENDING_MESSAGES = 64
#: Most data bytes buffered across all partially received messages.
MAX_PENDING_BYTES = 2 * MAX_MESSAGE_BYTES
#: How many delivered msg_ids are remembered so late duplicate frames are ignored.
REMEMBER_COMPLETED = 1024
_MAX_U64 = (1 << 64) - 1


def split(msg_id: int, payload: bytes, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """Frames carrying `payload`, each at most `chunk_size + HEADER_SIZE` bytes.

    `msg_id` must be unique per sender and connection (a counter is ideal).
    """
    if type(msg_id) is not int or not 0 <= msg_id <= _MAX_U64:
        raise ChunkError(f"msg_id must be an int in 0..{_MAX_U64}, got {msg_id!r:.40}")
    if type(chunk_size) is not int or not 1 <= chunk_size <= MAX_CHUNK_DATA:
        raise ChunkError(
            f"chunk size must be 1..{MAX_CHUNK_DATA} bytes to fit a data channel, got {chunk_size!r:.40}"
        )
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ChunkError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    length = len(payload)
    if length > MAX_MESSAGE_BYTES:
        raise ChunkLimitError(
            f"message of {length} bytes is over the {MAX_MESSAGE_BYTES} byte limit"
        )
    total = max(1, -(-length // chunk_size))
    return [
        _HEADER.pack(FRAME_MAGIC, msg_id, index, total, length)
        + payload[index * chunk_size : (index + 1) * chunk_size]
        for index in range(total)
    ]


@dataclass
class _Partial:
    total: int
    length: int
    stride: int  # data bytes in every frame but the last
    parts: dict[int, bytes] = field(default_factory=dict)
    buffered: int = 0

    def expected_size(self, index: int) -> int:
        return (
            self.stride if index < self.total - 1 else self.length - self.stride * (self.total - 1)
        )


def _stride_from_first(msg_id: int, index: int, total: int, length: int, size: int) -> int:
    """The per-frame data size implied by the first frame seen of a message, if consistent."""
    if total == 1:
        if size != length:
            raise ChunkError(f"message {msg_id}: single frame carries {size} of {length} bytes")
        return length
    if index < total - 1:
        stride = size
        if stride == 0 or not (total - 1) * stride < length <= total * stride:
            raise ChunkError(
                f"message {msg_id}: {total} frames of {size} bytes cannot hold {length} bytes"
            )
        return stride
    rest = length - size
    if size == 0 or rest <= 0 or rest % (total - 1):
        raise ChunkError(
            f"message {msg_id}: last frame of {size} bytes is inconsistent with {total} frames "
            f"for {length} bytes"
        )
    stride = rest // (total - 1)
    if size > stride or stride > MAX_CHUNK_DATA:
        raise ChunkError(
            f"message {msg_id}: frames implied to be {stride} bytes, which does not fit "
            f"{total} frames of at most {MAX_CHUNK_DATA} bytes"
        )
    return stride


class Reassembler:
    """Joins frames from one sender back into messages. Feed frames in any order."""

    def __init__(
        self,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_pending: int = MAX_PENDING_MESSAGES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        remember_completed: int = REMEMBER_COMPLETED,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.remember_completed = remember_completed
        self._pending: dict[int, _Partial] = {}
        self._completed: OrderedDict[int, None] = OrderedDict()
        self._buffered = 0

    @property
    def pending_count(self) -> int:
        """Messages started but not yet complete."""
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """Data bytes held for incomplete messages."""
        return self._buffered

    def discard(self, msg_id: int) -> None:
        """Forget a partially received message (e.g. the session gave up waiting for it)."""
        partial = self._pending.pop(msg_id, None)
        if partial is not None:
            self._buffered -= partial.buffered

    def feed(self, frame: bytes) -> bytes | None:
        """Take one frame; return the whole payload when this frame completes its message."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise ChunkError(f"frame must be bytes, got {type(frame).__name__}")
        frame = bytes(frame)
        if len(frame) < HEADER_SIZE:
            raise ChunkError(
                f"frame of {len(frame)} bytes is shorter than the {HEADER_SIZE} byte header"
            )
        magic, msg_id, index, total, length = _HEADER.unpack_from(frame)
        if magic != FRAME_MAGIC:
            raise ChunkError(
                f"frame starts with 0x{magic:02x}, not 0x{FRAME_MAGIC:02x}: not a mocksync chunk "
                "frame or an unsupported version"
            )
        data = frame[HEADER_SIZE:]
        if total == 0 or index >= total:
            raise ChunkError(
                f"message {msg_id}: frame index {index} is out of range for {total} frames"
            )
        if length > self.max_message_bytes:
            raise ChunkLimitError(
                f"message {msg_id} announces {length} bytes, over the {self.max_message_bytes} "
                "byte limit"
            )
        if len(data) > MAX_CHUNK_DATA:
            raise ChunkLimitError(
                f"message {msg_id}: frame carries {len(data)} bytes, over the {MAX_CHUNK_DATA} "
                "byte frame limit"
            )
        if total > max(1, length):
            raise ChunkError(f"message {msg_id}: {total} frames for {length} bytes is inconsistent")
        if msg_id in self._completed:
            return None  # a late duplicate of a message already delivered

        partial = self._pending.get(msg_id)
        if partial is None:
            if len(self._pending) >= self.max_pending:
                raise ChunkLimitError(
                    f"{len(self._pending)} messages are already partly received, the limit is "
                    f"{self.max_pending}; message {msg_id} refused"
                )
            stride = _stride_from_first(msg_id, index, total, length, len(data))
            partial = _Partial(total=total, length=length, stride=stride)
            is_new = True
        else:
            if (partial.total, partial.length) != (total, length):
                raise ChunkError(
                    f"message {msg_id}: frame says {total} frames / {length} bytes, earlier "
                    f"frames said {partial.total} / {partial.length}"
                )
            is_new = False
        expected = partial.expected_size(index)
        if len(data) != expected:
            raise ChunkError(
                f"message {msg_id}: frame {index} carries {len(data)} bytes, expected {expected}"
            )
        seen = partial.parts.get(index)
        if seen is not None:
            if seen != data:
                raise ChunkError(
                    f"message {msg_id}: frame {index} arrived twice with different data"
                )
            return None
        if self._buffered + len(data) > self.max_pending_bytes:
            raise ChunkLimitError(
                f"buffering frame {index} of message {msg_id} would hold more than "
                f"{self.max_pending_bytes} bytes of incomplete messages"
            )

        if is_new:
            self._pending[msg_id] = partial
        partial.parts[index] = data
        partial.buffered += len(data)
        self._buffered += len(data)
        if len(partial.parts) < partial.total:
            return None
        del self._pending[msg_id]
        self._buffered -= partial.buffered
        self._completed[msg_id] = None
        while len(self._completed) > self.remember_completed:
            self._completed.popitem(last=False)
        return b"".join(partial.parts[i] for i in range(partial.total))
