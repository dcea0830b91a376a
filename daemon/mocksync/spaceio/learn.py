"""Taking in membership entries a peer or the relay sent: one path for every source.

Why one function: entries arrive from the relay (its fan-out and welcome) and from every LAN
sync session (issue 16: a device learns of a new member, a removal with its rotated key, or a
migration from any member it meets). Whatever the source, they are untrusted bytes: each goes
through `Entry.from_wire` (the canonical decoding gate, size-limited), the whole log with the
new entries is verified before anything is stored, and the content keys the new entries seal
to this device are opened first so that entries and keys are written together (a reader never
sees a rotation without its key). A bad entry refuses the whole batch and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ChangeSetError, MocksyncError
from ..space.errors import MembershipError
from ..space.keys import open_content_key
from ..space.membership import MAX_LOG_ENTRIES, REMOVAL_KINDS, Entry, extend_log
from .store import StoredSpace, append_entries


@dataclass(frozen=True)
class Learned:
    """What a batch added: the new entries (none: nothing changed) and the key generations
    they sealed to this device."""

    fresh: list[Entry]
    new_keys: dict[int, bytes] = field(repr=False)
    #: Entries this device signed in answer (a key rotation after a member left, when it is
    #: the space's rotator): to be passed on like any of its own.
    signed: list[Entry] = field(default_factory=list)

    @property
    def removals(self) -> bool:
        return any(e.kind in REMOVAL_KINDS for e in self.fresh)


def new_entries(stored: StoredSpace, wires: Iterable[bytes]) -> list[Entry]:
    """Decode `wires` (untrusted) and keep those `stored` lacks, in the order given (pure)."""
    wires = list(wires)
    if len(wires) > MAX_LOG_ENTRIES:
        raise MembershipError(f"{len(wires)} membership entries at once is over the limit of "
                              f"{MAX_LOG_ENTRIES}; nothing was taken in")
    known = {e.hash for e in stored.entries}
    fresh: list[Entry] = []
    for w in wires:
        try:
            e = Entry.from_wire(w)  # the decoding gate, MAX_ENTRY_BYTES each
        except ChangeSetError as exc:
            raise MembershipError(f"a membership entry does not decode: {exc}") from None
        if e.hash not in known:
            known.add(e.hash)
            fresh.append(e)
    return fresh


def learn_entries(home: Any, identity: Any, space: str, stored: StoredSpace,
                  wires: Iterable[bytes]) -> Learned:
    """Verify `wires` with `stored`'s log and store the new entries with the keys they seal to
    `identity`. Raises a MocksyncError (MembershipError, ...) and stores nothing when the log
    with them does not verify."""
    fresh = new_entries(stored, wires)
    if not fresh:
        return Learned([], {})
    state = extend_log(stored.entries, fresh)
    me = identity.device_id
    new_keys: dict[int, bytes] = {}
    for gen in range(1, state.key_generation + 1):
        if gen in stored.keys:
            continue
        sealed = state.sealed_key_for(me, gen)
        if sealed is not None:
            new_keys[gen] = open_content_key(identity.box_key, bytes.fromhex(space), gen, sealed)
    stored = append_entries(home, space, fresh, new_keys)
    signed: list[Entry] = []
    if any(e.kind == "leave" for e in fresh):
        from .actions import rotate_if_needed

        try:  # a member left on its own: no admin rotated the key yet
            signed = rotate_if_needed(home, identity, stored)
        except MocksyncError:  # the entries are stored; the next batch tries again
            signed = []
    return Learned(fresh, new_keys, signed)


__all__ = ["Learned", "learn_entries", "new_entries"]
