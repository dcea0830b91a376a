"""A file base stored as a patch against an anchor text, so a save does not store 15 MB.

Why (issue 15): the log keeps, per environment, the version of its file the editor last saw
(`Store.set_base`), durably, so that after a crash a save is diffed against what the file was.
Every save and every write of an environment records a new base. Storing the whole text each
time meant compressing it (zlib: ~40 ms for 5 MB, more under load) for an edit of one value,
and reading it back meant decompressing it. A one-property edit changes one region of the
text, so the base is kept as an *anchor* (a whole text, compressed, written rarely) and a
*delta*: how many bytes of the anchor's start and end the base shares, and the bytes between.
Making a delta is two C comparisons of the texts; the anchor is rewritten only when the
delta grows past a share of the text (`MAX_DELTA_SHARE`).

Pure: bytes in, bytes out. `Store` does the storing (`bases` holds the delta, `base_anchor`
the anchor), and keeps the anchor's bytes in memory so a delta never needs a decompress.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..model.reparse import common_prefix, common_suffix
from .errors import BaseDeltaError

#: Bases this size or smaller are stored whole and raw (a delta would not save anything).
MIN_DELTA_TEXT = 4096
#: A delta whose changed bytes exceed this share of the text (1/8) makes the text the new
#: anchor: a base is never rebuilt from an anchor that little of it resembles.
MAX_DELTA_SHARE = 8
#: The delta's changed bytes are stored whole when at most this many; above, compressed.
COMPRESS_DELTA_OVER = 64 * 1024
#: Marks a stored base that is a delta (never the start of JSON text nor of zlib data).
MAGIC = b"\x00mocksync-base-delta-1\x00"
_HEADER = struct.Struct(">64sQQB")  # anchor sha256 (hex), head, tail, compressed flag


@dataclass(frozen=True)
class Delta:
    """A text as `anchor[:head] + mid + anchor[len(anchor) - tail:]`."""

    anchor_sha: str
    head: int
    tail: int
    mid: bytes

    def apply(self, anchor: bytes) -> bytes:
        if self.head + self.tail > len(anchor):
            raise BaseDeltaError("the stored base does not fit its anchor")
        return anchor[:self.head] + self.mid + anchor[len(anchor) - self.tail:]


def common_head(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of `a` and `b`."""
    return common_prefix(a, b)


def common_tail(a: bytes, b: bytes, limit: int) -> int:
    """Length of the longest common suffix of `a` and `b`, at most `limit`."""
    return common_suffix(a, b, limit)


def make_delta(anchor: bytes, anchor_sha: str, text: bytes) -> Delta | None:
    """`text` as a delta against `anchor`, or None when too much of it differs (the caller
    then makes `text` the new anchor)."""
    head = common_head(anchor, text)
    tail = common_tail(anchor, text, min(len(anchor), len(text)) - head)
    mid = text[head:len(text) - tail]
    if len(mid) * MAX_DELTA_SHARE > len(text):
        return None
    return Delta(anchor_sha, head, tail, mid)


def encode_delta(d: Delta) -> bytes:
    packed = len(d.mid) > COMPRESS_DELTA_OVER
    mid = zlib.compress(d.mid, 1) if packed else d.mid
    sha = d.anchor_sha.encode("ascii")
    if len(sha) != 64:
        raise BaseDeltaError("an anchor is named by its sha256 in hex")
    return MAGIC + _HEADER.pack(sha, d.head, d.tail, int(packed)) + mid


def is_delta(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def decode_delta(blob: bytes) -> Delta:
    body = blob[len(MAGIC):]
    if not blob.startswith(MAGIC) or len(body) < _HEADER.size:
        raise BaseDeltaError("the stored base is not a delta")
    sha, head, tail, packed = _HEADER.unpack_from(body)
    mid = body[_HEADER.size:]
    if packed:
        try:
            mid = zlib.decompress(mid)
        except zlib.error as exc:
            raise BaseDeltaError(f"the stored base's delta is damaged: {exc}") from None
    return Delta(sha.decode("ascii"), head, tail, mid)


def pack_text(text: bytes) -> bytes:
    """A whole text as stored (compressed when big; zlib data starts with 0x78)."""
    return zlib.compress(text, 1) if len(text) > MIN_DELTA_TEXT else text


def unpack_text(blob: bytes) -> bytes:
    return zlib.decompress(blob) if blob[:1] == b"\x78" else blob


__all__ = ["COMPRESS_DELTA_OVER", "MAGIC", "MAX_DELTA_SHARE", "MIN_DELTA_TEXT", "BaseDeltaError",
           "Delta", "common_head", "common_tail", "decode_delta", "encode_delta", "is_delta",
           "make_delta", "pack_text", "unpack_text"]
