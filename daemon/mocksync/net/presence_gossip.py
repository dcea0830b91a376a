"""Presence of teammates this device has no link to, passed along the overlay (pure).

Why: with links on demand (issue 16, `net.overlay`) a device keeps links to a few anchors
only, and a session tells its peer what *this* device's user is looking at. `who` then
showed a teammate two hops away as online (mDNS saw it) but not what it edits, and a device
could not tell that someone far away on the overlay opened the environment it edits (the
reason to open a direct link, `overlay.co_editors`).

So each device also sends a small *note* of its presence (device, counter, space, env,
entity, editor) signed with its device key, with a hop budget; every device that receives
a note it has not seen (a larger counter for that device) keeps it and passes it on to its
other links with one hop less. Deduplicating by (device, counter) makes the flood end after
each link carried a note at most once each way; the hop budget bounds it on a graph that is
still converging; notes expire after NOTE_TTL_S unless refreshed, so a device that left
without a word stops being shown as editing. A relay cannot make up a note: only the
device's own key signs it, and a receiver checks it against the membership log.

Deduplicated per hop (issue 16b): flooding a note over a graph where every device has 4-5
links made each device receive it from nearly every link (measured in the 30-device bench:
4.5 `rpres` received per daemon for each new author's note, a quarter of all its messages
per edit, each costing DTLS, SCTP and an SCTP ack, and each a signature check). So a device
waits NOTE_FORWARD_DELAY_S before passing a new note on, remembers which peers are known to
hold it (it came from them, or we sent it), and passes it only to the others; an exact copy
of a note already held is recognised by its bytes, before any signature check. Presence is
not latency critical: a few hundred milliseconds per hop is invisible in `who`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..changes import canonical
from ..errors import MocksyncError, ValidationError
from ..space.identity import is_device_id, verify_signature
from ..sync.messages import (
    MAX_EDITOR_CHARS,
    MAX_ENTITY_CHARS,
    MAX_PRESENCE_HOPS,
    MAX_PRESENCE_NOTE_BYTES,
)

#: Domain separation: a note signature can never pass for any other signed thing.
NOTE_CONTEXT = b"mocksync/presence-note/v1\x00"
#: A note not refreshed for this long is forgotten (its device left without a word).
NOTE_TTL_S = 90.0
#: A device with an environment open re-sends its note this often (well inside NOTE_TTL_S).
NOTE_REFRESH_S = 30.0
#: Hops a fresh note may travel: more than the overlay's diameter up to a few hundred
#: devices (`overlay.stride_for`), within what `rpres` allows.
NOTE_HOPS = 12
#: Devices whose notes are kept at once; beyond, the note heard longest ago is dropped.
MAX_NOTES = 1024
#: A new note is passed on this long after it first arrived, so that the copies its other
#: neighbours send meanwhile mark them as holding it (they are not sent it again).
NOTE_FORWARD_DELAY_S = 0.25
#: Most peers remembered as holding one note (a device has a handful of links).
MAX_HOLDERS = 64

assert NOTE_HOPS <= MAX_PRESENCE_HOPS and NOTE_REFRESH_S < NOTE_TTL_S


@dataclass(frozen=True, slots=True)
class Note:
    """What `device`'s user is looking at (env None: elsewhere), as of its `counter`."""

    device: str
    counter: int
    space: str | None
    env: str | None
    entity: str | None
    editor: str


def make_note(sign: Callable[[bytes], bytes], note: Note) -> bytes:
    """The signed wire form of `note` (by its own device's key)."""
    body = canonical.encode([note.device, note.counter, note.space, note.env, note.entity,
                             note.editor[:MAX_EDITOR_CHARS]])
    wire = canonical.encode([body, sign(NOTE_CONTEXT + body)])
    if len(wire) > MAX_PRESENCE_NOTE_BYTES:
        raise ValidationError(f"presence note of {len(wire)} bytes is over the "
                              f"{MAX_PRESENCE_NOTE_BYTES} byte limit")
    return wire


def _text(value: object, what: str, limit: int, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if type(value) is not str or not 1 <= len(value) <= limit or not value.isprintable():
        raise ValidationError(f"presence note: {what} must be 1..{limit} printable characters")
    return value


def read_note(wire: bytes, key_of: Callable[[str], bytes | None]) -> Note:
    """Parse and check a note; `key_of(device)` is that device's signing key in our
    membership log (None: not a member we know). Raises ValidationError saying why not."""
    if len(wire) > MAX_PRESENCE_NOTE_BYTES:
        raise ValidationError(f"presence note of {len(wire)} bytes is over the "
                              f"{MAX_PRESENCE_NOTE_BYTES} byte limit")
    try:
        outer = canonical.decode(bytes(wire), what="presence note")
        body, sig = outer
        fields = canonical.decode(body, what="presence note body")
        device, counter, space, env, entity, editor = fields
    except (MocksyncError, ValueError, TypeError) as exc:  # not canonical, not 2 / 6 items
        raise ValidationError(f"presence note is malformed: {exc}") from None
    if type(body) is not bytes or type(sig) is not bytes:
        raise ValidationError("presence note is malformed: expected [body, signature] bytes")
    if type(device) is not str or not is_device_id(device):
        raise ValidationError("presence note names no valid device id")
    if type(counter) is not int or counter < 0:
        raise ValidationError("presence note counter must be a non-negative int")
    if (space is None) != (env is None):
        raise ValidationError("presence note: space and env must both be set or both be null")
    space = _text(space, "space", 64, optional=True)
    env = _text(env, "env", 64, optional=True)
    entity = _text(entity, "entity", MAX_ENTITY_CHARS, optional=True)
    if entity is not None and env is None:
        raise ValidationError("presence note: an entity needs an env")
    editor = _text(editor, "editor", MAX_EDITOR_CHARS, optional=False)
    key = key_of(device)
    if key is None:
        raise ValidationError(f"presence note from device {device}, which this device's "
                              "membership log does not list")
    if not verify_signature(key, NOTE_CONTEXT + body, sig):
        raise ValidationError(f"presence note claiming device {device} has a bad signature")
    return Note(device, counter, space, env, entity, str(editor))


def next_counter(last: int, now_ms: int) -> int:
    """A note counter larger than the last one sent (wall-clock based, so a restarted daemon
    still outranks the notes it sent before)."""
    return max(last + 1, now_ms)


def next_hops(hops: int) -> int | None:
    """Hops a note received with `hops` left still travels after this device (None: stop)."""
    return hops - 1 if hops > 0 else None


class PresenceBook:
    """The newest note per device, heard at `now` (seconds, monotonic)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._notes: dict[str, tuple[Note, float, bytes, int]] = {}
        #: Per note device: the peers known to hold its current note (per-hop dedupe).
        self._holders: dict[str, set[str]] = {}
        #: The wire bytes of each current note -> its device (exact copies need no check).
        self._by_wire: dict[bytes, str] = {}

    def offer(self, note: Note, now: float, wire: bytes = b"", hops: int = 0) -> bool:
        """Keep `note` if it is newer than what we hold for its device: True when it is new
        (pass it on), False for our own, a duplicate or an older one (drop it)."""
        if note.device == self.me:
            return False
        held = self._notes.get(note.device)
        if held is not None and held[0].counter >= note.counter:
            return False
        if held is not None:
            self._by_wire.pop(held[2], None)
        self._notes[note.device] = (note, now, bytes(wire), hops)
        self._holders[note.device] = set()
        if wire:
            self._by_wire[bytes(wire)] = note.device
        if len(self._notes) > MAX_NOTES:
            oldest = min(self._notes, key=lambda d: self._notes[d][1])
            self.forget(oldest)
        return True

    def copy_of(self, wire: bytes) -> str | None:
        """The device whose current note is exactly `wire` (a copy from another link: drop
        it without checking its signature again), else None."""
        return self._by_wire.get(bytes(wire))

    def held_by(self, device: str, peer: str) -> None:
        """`peer` holds `device`'s current note (it sent it to us, or we sent it to it)."""
        holders = self._holders.get(device)
        if holders is not None and len(holders) < MAX_HOLDERS:
            holders.add(peer)

    def to_send(self, device: str, peers: Iterable[str]) -> list[str]:
        """Of `peers`, those not known to hold `device`'s current note (never the note's own
        device); they are marked as holding it, as the caller sends it to them now."""
        holders = self._holders.get(device)
        if holders is None:
            return []
        out = sorted(p for p in set(peers) if p not in holders and p != device)
        for p in out:
            self.held_by(device, p)
        return out

    def note_of(self, device: str) -> tuple[Note, bytes, int] | None:
        """(note, wire, hops left after this device) of `device`'s current note, if it may
        still travel; else None."""
        held = self._notes.get(device)
        if held is None or not held[2] or held[3] <= 0:
            return None
        return held[0], held[2], held[3] - 1

    def current(self, now: float) -> dict[str, Note]:
        """Notes heard within NOTE_TTL_S (older ones are dropped)."""
        for d in [d for d, held in self._notes.items() if now - held[1] >= NOTE_TTL_S]:
            self.forget(d)
        return {d: held[0] for d, held in self._notes.items()}

    def to_pass_on(self, now: float, spaces: Iterable[str]) -> list[tuple[bytes, int]]:
        """(wire, hops left) of every current note that may still travel and names one of
        `spaces` (or no space): what a link that just opened is told, so a device that
        joins the overlay learns who edits what now rather than at the next refresh, and
        never an env id of a space it is not in."""
        self.current(now)
        spaces = set(spaces)
        return [(held[2], held[3] - 1) for held in self._notes.values()
                if held[2] and held[3] > 0
                and (held[0].space is None or held[0].space in spaces)]

    def forget(self, device: str) -> None:
        """A removed device: its notes are no longer shown."""
        held = self._notes.pop(device, None)
        if held is not None:
            self._by_wire.pop(held[2], None)
        self._holders.pop(device, None)


__all__ = ["MAX_HOLDERS", "MAX_NOTES", "NOTE_FORWARD_DELAY_S", "NOTE_HOPS", "NOTE_REFRESH_S", "NOTE_TTL_S", "Note", "PresenceBook",
           "make_note", "next_counter", "next_hops", "read_note"]
