"""Presence passed along the overlay (issue 16): signed by the device it describes, kept
newest-first per device, passed on a bounded number of hops, forgotten when not refreshed;
and the decision to link directly to a teammate editing the same environment."""

from __future__ import annotations

import pytest

from mocksync.changes import canonical
from mocksync.errors import ValidationError
from mocksync.net.overlay import MAX_CO_EDITOR_LINKS, co_editors
from mocksync.net.presence_gossip import (
    MAX_HOLDERS,
    MAX_NOTES,
    NOTE_HOPS,
    NOTE_TTL_S,
    Note,
    PresenceBook,
    make_note,
    next_counter,
    next_hops,
    read_note,
)
from mocksync.space.identity import Identity

SPACE = "ab" * 16
ENV = "0f" * 16

ALICE = Identity.generate("alice", now=0.0)
BOB = Identity.generate("bob", now=0.0)
KEYS = {ALICE.device_id: ALICE.sign_public, BOB.device_id: BOB.sign_public}


def note(who: Identity = ALICE, counter: int = 1, env: str | None = ENV) -> Note:
    return Note(who.device_id, counter, SPACE if env else None, env,
                "route-1" if env else None, "mockoon")


def test_a_note_reads_back_as_signed() -> None:
    n = note()
    assert read_note(make_note(ALICE.sign, n), KEYS.get) == n
    away = note(env=None)
    assert read_note(make_note(ALICE.sign, away), KEYS.get) == away


def test_a_note_signed_by_another_device_is_refused() -> None:
    forged = make_note(BOB.sign, note(ALICE))  # Bob claims Alice edits ENV
    with pytest.raises(ValidationError, match="bad signature"):
        read_note(forged, KEYS.get)


def test_a_note_from_a_device_not_in_the_log_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not list"):
        read_note(make_note(ALICE.sign, note()), {BOB.device_id: BOB.sign_public}.get)


@pytest.mark.parametrize("wire, why", [
    (b"\x00", "malformed"),
    (canonical.encode([b"x"]), "malformed"),
    (b"x" * 600, "byte limit"),
])
def test_malformed_notes_are_refused_with_the_reason(wire: bytes, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        read_note(wire, KEYS.get)


def test_a_note_with_an_env_but_no_space_is_refused() -> None:
    bad = Note(ALICE.device_id, 1, None, ENV, None, "mockoon")
    with pytest.raises(ValidationError, match="both be set"):
        read_note(make_note(ALICE.sign, bad), KEYS.get)


def test_the_book_keeps_the_newest_note_once_and_never_our_own() -> None:
    book = PresenceBook(BOB.device_id)
    assert book.offer(note(counter=5), 0.0)
    assert not book.offer(note(counter=5), 0.1)  # the same note again: not passed on twice
    assert not book.offer(note(counter=4), 0.2)  # an older one
    assert book.current(0.3)[ALICE.device_id].counter == 5
    assert book.offer(note(counter=6, env=None), 0.4)
    assert book.current(0.5)[ALICE.device_id].env is None
    assert not book.offer(note(BOB), 0.6)
    assert BOB.device_id not in book.current(0.7)
    book.forget(ALICE.device_id)  # removed from the space: no longer shown
    assert book.current(0.8) == {}


def test_notes_expire_unless_refreshed() -> None:
    book = PresenceBook(BOB.device_id)
    book.offer(note(counter=1), 0.0)
    assert ALICE.device_id in book.current(NOTE_TTL_S - 1)
    assert book.current(NOTE_TTL_S) == {}
    assert book.offer(note(counter=1), NOTE_TTL_S + 1)  # heard again after expiry: kept


def test_the_book_is_bounded() -> None:
    book = PresenceBook("ME")
    for i in range(MAX_NOTES + 5):
        book.offer(Note(f"D{i}", 1, None, None, None, "m"), i * 0.01)
    held = book.current(MAX_NOTES * 0.01 + 1)
    assert len(held) == MAX_NOTES and "D0" not in held and f"D{MAX_NOTES + 4}" in held


def test_hops_run_out_and_new_links_get_only_notes_of_their_spaces() -> None:
    assert next_hops(NOTE_HOPS) == NOTE_HOPS - 1
    assert next_hops(1) == 0
    assert next_hops(0) is None
    book = PresenceBook("ME")
    book.offer(note(counter=1), 0.0, b"wire-a", 3)
    book.offer(Note(BOB.device_id, 1, None, None, None, "m"), 0.0, b"wire-b", 0)
    assert book.to_pass_on(1.0, {SPACE}) == [(b"wire-a", 2)]  # b has no hops left
    assert book.to_pass_on(1.0, {"cd" * 16}) == []  # a link not in that space


def test_counters_only_grow() -> None:
    assert next_counter(0, 1000) == 1000
    assert next_counter(1000, 1000) == 1001
    assert next_counter(5000, 1000) == 5001  # the clock went back: still newer


def test_a_teammate_editing_the_same_env_is_linked_to() -> None:
    mine = (SPACE, ENV)
    editing = {"B": (SPACE, ENV), "C": (SPACE, "1e" * 16), "D": None, "E": (SPACE, ENV)}
    assert co_editors(mine, editing, online={"B", "C", "D"}) == {"B"}  # E is offline
    assert co_editors(None, editing, online={"B"}) == frozenset()
    many = {f"P{i}": (SPACE, ENV) for i in range(MAX_CO_EDITOR_LINKS + 3)}
    got = co_editors(mine, many, online=set(many))
    assert len(got) == MAX_CO_EDITOR_LINKS
    assert got == co_editors(mine, many, online=set(many))  # the same ones every time


def test_a_note_is_passed_only_to_peers_not_known_to_hold_it() -> None:
    """Per-hop dedupe (issue 16b): the peers a note came from, and those it was sent to,
    are not sent it again; an exact copy is recognised by its bytes (no signature check)."""
    book = PresenceBook("ME")
    wire = make_note(ALICE.sign, note(counter=3))
    assert book.offer(read_note(wire, KEYS.get), 0.0, wire, NOTE_HOPS)
    book.held_by(ALICE.device_id, "P1")  # it came from P1...
    assert book.copy_of(wire) == ALICE.device_id  # ...and again from P2, byte for byte
    book.held_by(ALICE.device_id, "P2")
    assert book.copy_of(b"other bytes") is None
    assert book.to_send(ALICE.device_id, ["P1", "P2", "P3", ALICE.device_id]) == ["P3"]
    assert book.to_send(ALICE.device_id, ["P1", "P2", "P3"]) == []  # P3 has it now
    held = book.note_of(ALICE.device_id)
    assert held is not None and held[1] == wire and held[2] == NOTE_HOPS - 1
    # A newer note from the same device starts over: nobody is known to hold that one.
    newer = make_note(ALICE.sign, note(counter=4))
    assert book.offer(read_note(newer, KEYS.get), 1.0, newer, NOTE_HOPS)
    assert book.copy_of(wire) is None and book.copy_of(newer) == ALICE.device_id
    assert book.to_send(ALICE.device_id, ["P1", "P2"]) == ["P1", "P2"]
    book.forget(ALICE.device_id)
    assert book.copy_of(newer) is None and book.to_send(ALICE.device_id, ["P9"]) == []


def test_holders_of_one_note_are_bounded() -> None:
    book = PresenceBook("ME")
    wire = make_note(ALICE.sign, note())
    book.offer(read_note(wire, KEYS.get), 0.0, wire, NOTE_HOPS)
    for i in range(MAX_HOLDERS + 10):
        book.held_by(ALICE.device_id, f"P{i}")
    # Past the bound a peer is not remembered: it may get the note once more, never lost.
    assert book.to_send(ALICE.device_id, [f"P{MAX_HOLDERS + 5}"]) == [f"P{MAX_HOLDERS + 5}"]
    assert book.to_send(ALICE.device_id, ["P0"]) == []
