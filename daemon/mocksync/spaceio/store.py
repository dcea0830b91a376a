"""Spaces on disk (thin I/O): each space's membership log, content keys and issued invites, in
the home's TinyDB documents.

Why verify on every load: the documents file is plain JSON that anything running as the user
can edit, and the log is the authority on who may write; so a space is only ever handed out as
the `SpaceState` that `verify_log` proves from its entries, never from cached fields. Log
entries are stored as base64 of their exact wire bytes (the bytes signatures cover). Content
keys and invite secrets sit in the same file, which `AtomicJSONStorage` keeps at mode 0600.

Writers take an advisory lock (`flock` on `docs.lock` in the home) around read-modify-write, so
two CLI commands, or the CLI and the daemon, cannot lose each other's updates.
"""

from __future__ import annotations

import base64
import fcntl
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tinydb import Query, TinyDB

from ..paths import Home
from ..space.errors import MembershipError, SpaceNotFoundError
from ..space.fields import MAX_SPACE_RELAYS, relay_url_problem, relays_problem
from ..space.invite import InviteBook, IssuedInvite
from ..space.membership import Entry, SpaceState, extend_log, verify_log
from ..space.names import names_key
from ..space.relayroutes import pin_for
from ..store.docs import open_docs

SPACES_TABLE = "spaces"
INVITES_TABLE = "invites"
#: Spaces one device may belong to.
MAX_SPACES = 1000
#: Shortest space-id prefix accepted in place of the full id.
MIN_ID_PREFIX = 6
#: The name `init` gives the personal space it makes.
PERSONAL_SPACE_NAME = "personal"
#: Field of a space's document holding the relays this device alone added for it
#: (`space relays --use`): a list of URLs.
LOCAL_RELAYS_FIELD = "local_relays"


@dataclass(frozen=True)
class StoredSpace:
    """A space as this device holds it: its verified state, log and content keys."""

    state: SpaceState
    entries: list[Entry]
    keys: dict[int, bytes] = field(repr=False)
    joined: float
    #: Relays this device alone added for the space (`space relays --use`): not signed, not
    #: the team's choice, only this device's way to reach a space that moved relay while it
    #: was away (docs/design/relay.md "When a space moves relay").
    local_relays: tuple[str, ...] = ()

    @property
    def space_id(self) -> str:
        return self.state.space_id

    @property
    def name(self) -> str:
        return self.state.name


@contextmanager
def locked(home: Home) -> Iterator[TinyDB]:
    """The documents database, held under an exclusive advisory lock."""
    home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(home.root / "docs.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open_docs(home.docs) as db:
            yield db
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def _names(entries: list[Entry], keys: Mapping[int, bytes]) -> bytes | None:
    """The key that opens the log's sealed names (`space.names`), when generation 1 is held."""
    return names_key(entries[0].space, keys) if entries else None


def _load(doc: Mapping[str, Any]) -> StoredSpace:
    entries = [Entry.from_wire(_unb64(w)) for w in doc["entries"]]
    keys = {int(g): _unb64(k) for g, k in doc.get("keys", {}).items()}
    state = verify_log(entries, _names(entries, keys))
    return StoredSpace(state, entries, keys, float(doc.get("joined", 0.0)),
                       _local_relays_of(doc))


def _local_relays_of(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """A space document's local relays; anything unreadable is skipped, never fatal (the
    file is the user's), and at most MAX_SPACE_RELAYS are kept."""
    raw = doc.get(LOCAL_RELAYS_FIELD)
    if not isinstance(raw, list):
        return ()
    urls = [u for u in raw if isinstance(u, str) and relay_url_problem(u) is None]
    return tuple(dict.fromkeys(urls))[:MAX_SPACE_RELAYS]


def _doc(entries: Iterable[Entry], keys: Mapping[int, bytes], state: SpaceState,
         joined: float) -> dict[str, Any]:
    return {
        "space_id": state.space_id,
        "name": state.name,  # for people reading the file; never trusted on load
        "entries": [_b64(e.wire) for e in entries],
        "keys": {str(g): _b64(k) for g, k in sorted(keys.items())},
        "joined": joined,
    }


def list_spaces(home: Home) -> list[StoredSpace]:
    if not home.docs.exists():
        return []
    with open_docs(home.docs) as db:
        docs = db.table(SPACES_TABLE).all()
    spaces = [_load(d) for d in docs]
    return sorted(spaces, key=lambda s: (s.state.kind != "personal", s.name.casefold(), s.space_id))


def get_space(home: Home, name_or_id: str) -> StoredSpace:
    """A space by full id, unique id prefix (>= 6 hex digits) or unique name (any case)."""
    spaces = list_spaces(home)
    text = name_or_id.strip()
    for s in spaces:
        if s.space_id == text.lower():
            return s
    low = text.casefold()
    if len(text) >= MIN_ID_PREFIX and all(c in "0123456789abcdef" for c in low):
        hits = [s for s in spaces if s.space_id.startswith(low)]
        if len(hits) == 1:
            return hits[0]
    hits = [s for s in spaces if s.name.casefold() == low]
    if len(hits) == 1:
        return hits[0]
    if low == PERSONAL_SPACE_NAME and all(s.state.kind == "personal" for s in hits):
        # A second device's own `init` space and the personal space it then joined: the word
        # means "mine", the one `share` uses by default (its id still reaches the other).
        chosen = personal_space(hits)
        if chosen is not None:
            return chosen
    if len(hits) > 1:
        ids = ", ".join(s.space_id[:12] for s in hits)
        raise SpaceNotFoundError(
            f"{len(hits)} spaces are named {text!r} ({ids}); name one by its id instead"
        )
    names = ", ".join(repr(s.name) for s in spaces) or "none"
    raise SpaceNotFoundError(f"this device belongs to no space {text!r} (its spaces: {names})")


def personal_space(spaces: Iterable[StoredSpace]) -> StoredSpace | None:
    """This device's personal space: of the personal spaces it holds, the one it joined last.

    Why the last: `init` makes every device a personal space of its own, and a second device
    of the same person then joins the first one's (`invite personal`); from then on that one
    is where the person's devices meet, and the space `init` made is left with this device
    alone. Choosing by ids (as listing order did) picked either, at random per device pair,
    so `share` without `--space` could land where none of the person's other devices are."""
    mine = [s for s in spaces if s.state.kind == "personal"]
    return max(mine, key=lambda s: (s.joined, s.space_id), default=None)


def add_space(home: Home, entries: list[Entry], keys: Mapping[int, bytes], *,
              now: float | None = None) -> StoredSpace:
    """Record a space this device created or joined (verifies the log first)."""
    state = verify_log(entries, _names(entries, keys))
    joined = time.time() if now is None else now
    with locked(home) as db:
        table = db.table(SPACES_TABLE)
        if table.get(Query().space_id == state.space_id) is not None:
            raise SpaceNotFoundError(f"this device already belongs to space {state.name!r}")
        if len(table) >= MAX_SPACES:
            raise SpaceNotFoundError(f"this device already belongs to {MAX_SPACES} spaces, the limit")
        table.insert(_doc(entries, keys, state, joined))
    return StoredSpace(state, list(entries), dict(keys), joined)


def rejoin_space(home: Home, entries: list[Entry], keys: Mapping[int, bytes], device_id: str,
                 *, now: float | None = None) -> StoredSpace:
    """Record a space this device already held and has just been admitted to again (it was
    removed, then re-invited). The welcome's log is the authority; entries only this device
    holds are kept when the union still admits it, and every key generation is kept (old data
    stays readable). Nothing is written unless the result admits `device_id`."""
    welcome = verify_log(entries, _names(entries, keys))
    if not welcome.is_member(device_id):
        raise MembershipError("the welcome's log does not admit this device; nothing was changed")
    joined = time.time() if now is None else now
    with locked(home) as db:
        table = db.table(SPACES_TABLE)
        doc = table.get(Query().space_id == welcome.space_id)
        if doc is None:
            raise SpaceNotFoundError(f"this device belongs to no space {welcome.space_id}")
        current = _load(doc)
        known = {e.hash for e in entries}
        merged = list(entries) + [e for e in current.entries if e.hash not in known]
        try:
            state = verify_log(merged, _names(merged, {**current.keys, **keys}))
        except MembershipError:
            state = None
        if state is None or not state.is_member(device_id):
            merged, state = list(entries), welcome
        all_keys = dict(current.keys)
        all_keys.update(keys)
        table.update(_doc(merged, all_keys, state, joined), Query().space_id == state.space_id)
    return StoredSpace(state, merged, all_keys, joined, current.local_relays)


def append_entries(home: Home, space_id: str, new: Iterable[Entry],
                   new_keys: Mapping[int, bytes] | None = None) -> StoredSpace:
    """Add verified entries (and content-key generations) to a stored space. The whole log is
    re-verified under the lock; if any new entry would be void, nothing is written."""
    new = list(new)
    with locked(home) as db:
        table = db.table(SPACES_TABLE)
        doc = table.get(Query().space_id == space_id)
        if doc is None:
            raise SpaceNotFoundError(f"this device belongs to no space {space_id}")
        current = _load(doc)
        known = {e.hash for e in current.entries}
        fresh = [e for e in new if e.hash not in known]
        keys = dict(current.keys)
        keys.update(new_keys or {})
        state = extend_log(current.entries, fresh, _names(current.entries, keys))
        entries = current.entries + fresh
        fields = _doc(entries, keys, state, current.joined)
        local = tuple(u for u in current.local_relays if u not in state.relays)
        if local != current.local_relays:
            # A local route the space itself now names has done its job: forget it, so it
            # never outlives the team's choice (a later move away from it takes it along).
            fields[LOCAL_RELAYS_FIELD] = list(local)
        table.update(fields, Query().space_id == space_id)
    return StoredSpace(state, entries, keys, current.joined, local)


def set_local_relays(home: Home, space_id: str, urls: Iterable[str]) -> StoredSpace:
    """Replace the relays this device alone uses for `space_id` (`space relays --use`; empty:
    none). Checked like a space's own list (1..MAX_SPACE_RELAYS http(s)://host:port, no
    repeats); addresses the space already names are left out (they need no local route).
    Bad input changes nothing."""
    urls = tuple(urls)
    problem = relays_problem(urls)
    if problem:
        raise MembershipError(f"the local relay list {problem}")
    with locked(home) as db:
        table = db.table(SPACES_TABLE)
        doc = table.get(Query().space_id == space_id)
        if doc is None:
            raise SpaceNotFoundError(f"this device belongs to no space {space_id}")
        current = _load(doc)
        local = tuple(u for u in urls if u not in current.state.relays)
        table.update({LOCAL_RELAYS_FIELD: list(local)}, Query().space_id == space_id)
    return StoredSpace(current.state, current.entries, current.keys, current.joined, local)


def load_invite_book(home: Home, space_id: str) -> InviteBook:
    if not home.docs.exists():
        return InviteBook(space_id)
    with open_docs(home.docs) as db:
        docs = db.table(INVITES_TABLE).search(Query().space_id == space_id)
    return InviteBook(space_id, [IssuedInvite.from_doc(d) for d in docs])


def save_invite_book(home: Home, book: InviteBook) -> None:
    """Write the book's records, merged with what is on disk: a record used on disk (by another
    process) stays used, so a stale book can never make a used invite usable again."""
    with locked(home) as db:
        table = db.table(INVITES_TABLE)
        on_disk = {d["invite_id"]: d for d in table.search(Query().space_id == book.space_id)}
        merged = dict(on_disk)
        for rec in book.records():
            old = on_disk.get(rec.invite_id)
            if old is not None and old.get("used_at") is not None and rec.used_at is None:
                continue
            merged[rec.invite_id] = rec.to_doc()
        table.remove(Query().space_id == book.space_id)
        table.insert_multiple(merged.values())


# ---------------------------------------------------------------------- relay key pins (TOFU)
#: Field of a space's document holding the relay key it pinned before pins were per address
#: (base64 of 32 raw bytes): still read (`space.relayroutes.pin_for`), no longer written.
RELAY_PIN_FIELD = "relay_key"
#: Field of a space's document holding its relay key pins per relay address (issue 17):
#: {url: base64 of the key}.
RELAY_PINS_FIELD = "relay_keys"
#: Addresses one space keeps pins for (its own relays and a cluster's instances); past it,
#: the oldest pin gives way, so a space's document never grows without bound.
MAX_PINS_PER_SPACE = 32


def _pins_of(doc: Mapping[str, Any] | None) -> tuple[dict[str, bytes], bytes | None]:
    """A space document's pins per address and its legacy (per space) pin; unreadable
    entries are skipped, never fatal (the file is the user's)."""
    if not doc:
        return {}, None
    per_url: dict[str, bytes] = {}
    raw = doc.get(RELAY_PINS_FIELD)
    if isinstance(raw, dict):
        for url, text in raw.items():
            if isinstance(url, str) and isinstance(text, str) and text:
                try:
                    per_url[url] = _unb64(text)
                except ValueError:
                    continue
    text = doc.get(RELAY_PIN_FIELD)
    legacy: bytes | None = None
    if isinstance(text, str) and text:
        try:
            legacy = _unb64(text)
        except ValueError:
            legacy = None
    return per_url, legacy


def _space_doc(home: Home, space_id: str) -> dict[str, Any] | None:
    if not home.docs.exists():
        return None
    with open_docs(home.docs) as db:
        doc = db.table(SPACES_TABLE).get(Query().space_id == space_id)
    return dict(doc) if doc else None


def relay_pins(home: Home, space_id: str) -> tuple[dict[str, bytes], bytes | None]:
    """Every relay key `space_id` pinned: per address, and the legacy per-space pin."""
    return _pins_of(_space_doc(home, space_id))


def relay_pin(home: Home, space_id: str, url: str | None = None) -> bytes | None:
    """The relay key the space expects at `url` (`space.relayroutes.pin_for`). Without `url`:
    the key it pinned first (the legacy pin, else its first address's), None if none."""
    per_url, legacy = relay_pins(home, space_id)
    if url is not None:
        return pin_for(per_url, legacy, url)
    return legacy if legacy is not None else next(iter(per_url.values()), None)


def set_relay_pin(home: Home, space_id: str, relay_key: bytes | None,
                  url: str | None = None) -> None:
    """Pin `relay_key` for the space at relay address `url`. `relay_key` None forgets: the
    pin of `url`, or (no `url`) every pin of the space, so the next relay is trusted on first
    use again (what a person does after reinstalling or moving the relay on purpose). A key
    without `url` sets the legacy per-space pin (tools and tests of old homes)."""
    with locked(home) as db:
        table = db.table(SPACES_TABLE)
        doc = table.get(Query().space_id == space_id)
        if doc is None:
            raise SpaceNotFoundError(f"this device belongs to no space {space_id}")
        per_url, legacy = _pins_of(doc)
        if url is None:
            per_url, legacy = ({}, None) if relay_key is None else (per_url, relay_key)
        elif relay_key is None:
            per_url.pop(url, None)
        else:
            per_url, legacy = _with_pin(per_url, legacy, url, relay_key)
        table.update(_pin_fields(per_url, legacy), Query().space_id == space_id)


def _with_pin(per_url: dict[str, bytes], legacy: bytes | None, url: str, key: bytes
              ) -> tuple[dict[str, bytes], bytes | None]:
    """The pins after pinning `key` at `url`: the first address pinned replaces the legacy
    per-space pin (it was checked against it), and the oldest gives way past the limit."""
    out = {u: k for u, k in per_url.items() if u != url}
    out[url] = key
    while len(out) > MAX_PINS_PER_SPACE:
        out.pop(next(iter(out)))
    return out, None


def _pin_fields(per_url: Mapping[str, bytes], legacy: bytes | None) -> dict[str, Any]:
    return {RELAY_PIN_FIELD: _b64(legacy) if legacy else "",
            RELAY_PINS_FIELD: {u: _b64(k) for u, k in per_url.items()}}


class SpacePins:
    """The relay client's pin book (net.relay_client.RelayPins) kept with this home's spaces:
    one pin per (space, relay address)."""

    def __init__(self, home: Home) -> None:
        self.home = home

    def pinned(self, space: str, url: str) -> bytes | None:
        return relay_pin(self.home, space, url)

    def pinned_many(self, spaces: Iterable[str], url: str) -> dict[str, bytes | None]:
        """Every space's pin at `url` from one read of the documents."""
        wanted = set(spaces)
        out: dict[str, bytes | None] = dict.fromkeys(wanted)
        if not wanted or not self.home.docs.exists():
            return out
        with open_docs(self.home.docs) as db:
            docs = db.table(SPACES_TABLE).all()
        for doc in docs:
            if doc.get("space_id") in wanted:
                out[doc["space_id"]] = pin_for(*_pins_of(doc), url)
        return out

    def admitted(self, spaces: Iterable[str], url: str, relay_key: bytes) -> None:
        """The relay at `url` presenting `relay_key` admitted this device to `spaces` (after
        `pinned_many` found no other key there): pin it where the space has no pin for `url`
        yet (trust on first use), moving a legacy per-space pin; one write, none if nothing
        changes."""
        wanted = set(spaces)
        if not wanted or not self.home.docs.exists():
            return
        with open_docs(self.home.docs) as db:  # the common case: every pin is there already
            docs = db.table(SPACES_TABLE).all()
        if all(_pins_of(d)[0].get(url) is not None for d in docs
               if d.get("space_id") in wanted):
            return
        with locked(self.home) as db:
            table = db.table(SPACES_TABLE)
            for doc in table.all():
                sid = doc.get("space_id")
                if sid not in wanted:
                    continue
                per_url, legacy = _pins_of(doc)
                if per_url.get(url) is not None:
                    continue  # already pinned here (checked equal before signing)
                new_pins, new_legacy = _with_pin(per_url, legacy, url, relay_key)
                table.update(_pin_fields(new_pins, new_legacy), Query().space_id == sid)

    def name(self, space: str) -> str | None:
        try:
            return get_space(self.home, space).name
        except SpaceNotFoundError:
            return None


__all__ = [
    "LOCAL_RELAYS_FIELD",
    "MAX_PINS_PER_SPACE",
    "RELAY_PINS_FIELD",
    "RELAY_PIN_FIELD",
    "SpacePins",
    "StoredSpace",
    "add_space",
    "append_entries",
    "get_space",
    "list_spaces",
    "load_invite_book",
    "locked",
    "rejoin_space",
    "relay_pin",
    "relay_pins",
    "save_invite_book",
    "set_local_relays",
    "set_relay_pin",
]
