"""What an auth frame may make the relay verify, and in which order (issue 12).

Why this module: a device's auth frame carries, besides its challenge signature, the
membership entries the relay lacks for every space its hello named, and the relay used to
verify all of them (decode, signature, replay) before it checked the signature at all. An
unauthenticated client naming 80 new spaces, each with one 96 KiB entry that is a CBOR list
of zeros, cost the relay seconds of CPU per frame (10.3 s on a loaded machine); a cap per
entry does not help, since the same bytes split into smaller entries across up to 1,000
spaces cost the same. So the work is ordered and budgeted:

1. Before anything is decoded: the frame's shape (entries in all its logs) against
   MAX_AUTH_ENTRIES, from list lengths alone (`frame_refusal`).
2. The cheapest key lookup (`known_key`, `search_key`): the device's signing key from a
   log the relay already verified; else from the uploaded entry that registers the device
   (its genesis when it created a new space, else its `add_device`). A device id is the hash
   of its signing key (`space.identity.device_id_for`, checked when an entry's device record
   is read), so that record names the one key the id stands for whatever else the upload
   holds: no log needs verifying to know it. Only entries that contain the device id's bytes
   are decoded (a byte search, linear and in C), at most MAX_KEY_SEARCH_ENTRIES of them.
3. One signature check over the challenge with that key (the server). Unauthenticated
   garbage is refused here, having cost a byte search, a few bounded decodes and one
   signature check.
4. Only then are logs verified: uploads to spaces the relay knows first, then new spaces
   (the one holding the device's key first), at most MAX_NEW_SPACES_PER_AUTH new spaces per
   frame and no more than the address's new-space rate allows (`NewSpaceRate`); the rest
   are deferred with a non-persistent refusal, so the client brings them on its next
   connection. Every entry is charged to one `ItemBudget` per frame before it is decoded:
   its CBOR items counted by the structural scan (`entry_items`; MAX_ENTRY_ITEMS per entry,
   MAX_AUTH_ITEMS per frame), so no frame, authenticated or not, makes the relay build more.

Honest maxima, which every limit is above (tests/test_attack_relay_frames.py): an auth frame
holds at most MAX_AUTH_FRAME_BYTES (8 MiB) of entries; the smallest honest entry is over
200 bytes (so under 42,000 entries), and honest entries hold one CBOR item per 8 bytes or more
(a genesis: 473 bytes, 48 items; a removal whose cut fills MAX_ENTRY_BYTES: about 5,800
items), so 8 MiB of honest entries is under 2^20 items.

Everything here is pure: no sockets, no clock (the rate takes `now`), no storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..changes import canonical
from ..errors import ChangeSetError
from ..space.errors import MembershipError
from ..space.membership import Entry, SpaceState
from .errors import AuthBudgetExceeded

#: CBOR items (outer map and signed body together) in one membership entry. The densest
#: honest entry, a removal whose cut fills MAX_ENTRY_BYTES, has about 5,800.
MAX_ENTRY_ITEMS = 8192
#: Membership entries across all logs of one auth frame (or one log upload), counted from
#: list lengths before anything is decoded: an honest 8 MiB frame holds under 42,000.
MAX_AUTH_ENTRIES = 1 << 16
#: CBOR items across all entries the relay decodes for one frame, each entry counted by the
#: structural scan before it is built (honest: one item per 8 bytes or more, so under 2^20).
MAX_AUTH_ITEMS = 1 << 20
#: Entries decoded to find the device's key before its challenge signature is checked (only
#: entries holding the device id's bytes are candidates; an honest upload's first one is it).
MAX_KEY_SEARCH_ENTRIES = 8
#: Spaces new to the relay that one auth frame may create; more wait for the next connection.
MAX_NEW_SPACES_PER_AUTH = 32
#: New spaces one address may create: a burst (a team's devices behind one NAT meeting a
#: fresh relay, each with its personal space), then a steady rate.
NEW_SPACE_BURST = 64
NEW_SPACES_PER_S = 0.1
#: Addresses whose new-space rate is remembered at once (full buckets are forgotten first).
MAX_RATE_ADDRESSES = 4096
#: Spaces one deferral sentence names.
MAX_NAMED_DEFERRED = 3

#: How a canonical membership entry starts: a map of two keys, "sig" (a 64-byte string) then
#: "body" (keys sort by their encoded bytes: 0x63 "sig" before 0x64 "body").
_ENTRY_PREFIX = b"\xa2\x63sig\x58\x40"
_SIG_END = len(_ENTRY_PREFIX) + 64
_BODY_KEY = b"\x64body"
_BODY_HEAD = _SIG_END + len(_BODY_KEY)
#: Items of the outer map: the map, two keys, two byte strings.
_OUTER_ITEMS = 5


def entry_items(wire: bytes, cap: int = MAX_ENTRY_ITEMS) -> int:
    """CBOR items of one membership entry, its signed body included, counted by the
    structural scan without building anything; refuses (AuthBudgetExceeded) past `cap`.

    Why not just decode with a cap: the body is a byte string inside the entry, decoded
    separately, so the entry's real cost is only known by scanning both, before either is
    built. Bytes that are not an entry's canonical layout raise MembershipError."""
    try:
        outer = canonical.scan(wire, what="membership entry", max_items=_OUTER_ITEMS)
    except canonical.DecodeLimit:
        raise MembershipError("membership entry: expected a map {sig, body}") from None
    except ChangeSetError as exc:
        raise MembershipError(str(exc)) from None
    if not wire.startswith(_ENTRY_PREFIX) or wire[_SIG_END:_BODY_HEAD] != _BODY_KEY:
        raise MembershipError("membership entry: expected a map {sig: 64 bytes, body: bytes}")
    head = wire[_BODY_HEAD]  # present: the scan found the map's fifth item there
    if head >> 5 != 2:
        raise MembershipError("membership entry: its body is not a byte string")
    info = head & 31  # < 28: the scan refuses reserved and indefinite heads
    start = _BODY_HEAD + 1 + (0 if info < 24 else 1 << (info - 24))
    try:
        if cap <= outer:
            raise canonical.DecodeLimit("no items left")
        body = canonical.scan(wire[start:], what="membership entry body",
                              max_items=cap - outer)
    except canonical.DecodeLimit:
        raise AuthBudgetExceeded(
            f"a membership entry holds more than {cap} CBOR items (no honest entry has "
            f"over 6,000; the limit is {MAX_ENTRY_ITEMS})") from None
    except ChangeSetError as exc:
        raise MembershipError(str(exc)) from None
    return outer + body


class ItemBudget:
    """What one frame may make the relay decode: entries and their CBOR items, charged for
    each entry before it is built. Once spent, every later charge is refused too."""

    def __init__(self, items: int = MAX_AUTH_ITEMS, entries: int = MAX_AUTH_ENTRIES) -> None:
        self.items_left = items
        self.entries_left = entries
        self.items_limit = items
        self.entries_limit = entries
        #: The sentence of the first refusal (None while within the budget).
        self.spent: str | None = None

    def charge(self, wire: bytes) -> int:
        """Count one entry against the budget before it is decoded; its item count.

        Raises AuthBudgetExceeded naming the limit, MembershipError for bytes that are not
        an entry's layout (those cost their scan, which the budget bounds too)."""
        if self.spent is not None:
            raise AuthBudgetExceeded(self.spent)
        if self.entries_left <= 0:
            self.spent = (f"the frame carries more than {self.entries_limit} membership "
                          "entries, the limit of what one frame may make the relay verify")
            raise AuthBudgetExceeded(self.spent)
        self.entries_left -= 1
        cap = min(MAX_ENTRY_ITEMS, self.items_left)
        try:
            n = entry_items(wire, cap)
        except AuthBudgetExceeded as exc:
            if cap == MAX_ENTRY_ITEMS:
                raise  # this entry alone is over the per-entry cap
            self.spent = (f"the frame's membership entries hold more than {self.items_limit} "
                          "CBOR items, the limit of what one frame may make the relay decode")
            raise AuthBudgetExceeded(self.spent) from exc
        self.items_left -= n
        return n


def frame_refusal(logs: Mapping[str, Sequence[bytes]], entries: int = MAX_AUTH_ENTRIES
                  ) -> str | None:
    """The sentence refusing an auth frame whose logs hold more than `entries` entries (from
    the lists' lengths: nothing is decoded), or None."""
    total = sum(len(w) for w in logs.values())
    if total > entries:
        return (f"the auth frame carries {total} membership entries, over the limit of "
                f"{entries} one frame may make the relay verify")
    return None


@dataclass(frozen=True)
class FoundKey:
    """Where the device's signing key was found: a space the relay knows (`known`), or the
    entry of an upload that registers the device (`space` is then the space it came in)."""

    space: str
    sign_key: bytes
    known: bool


def known_key(states: Mapping[str, SpaceState], device: str) -> FoundKey | None:
    """The device's key from a log the relay already verified (active or removed device:
    a removed one authenticates, to be told it was removed); no decoding at all."""
    for space, state in states.items():
        dev = state.devices.get(device)
        if dev is not None:
            return FoundKey(space, dev.sign_key, True)
        removed = state.removed_devices.get(device)
        if removed is not None and removed.sign_key:
            return FoundKey(space, removed.sign_key, True)
    return None


def search_key(device: str, logs: Mapping[str, Sequence[bytes]], spaces: Iterable[str],
               max_entries: int = MAX_KEY_SEARCH_ENTRIES) -> FoundKey | None:
    """The device's key from the first uploaded entry that registers it (a genesis the
    device signed, or an add_device naming it), looking in `spaces` in order.

    Only entries holding the device id's encoded bytes are decoded, at most `max_entries`,
    each within MAX_ENTRY_ITEMS: a frame of garbage costs a byte search and a few bounded
    decodes. The key is bound to the id by hash (checked when the record is read), so it is
    the device's key whatever else the upload holds; whether the device is a member is for
    the log's verification, after the challenge signature."""
    needle = canonical.encode(device)
    tried = 0
    for space in spaces:
        for wire in logs.get(space, ()):
            if needle not in wire:
                continue
            if tried >= max_entries:
                return None
            tried += 1
            try:
                entry_items(wire)
                entry = Entry.from_wire(wire)
            except (MembershipError, AuthBudgetExceeded):
                continue
            if entry.kind not in ("genesis", "add_device"):
                continue
            rec = entry.data["device"]
            if rec["id"] == device:
                return FoundKey(space, rec["sign"], False)
    return None


def verify_order(known: Iterable[str], new: Sequence[str], key_space: str | None,
                 allowed_new: int) -> tuple[list[str], list[str]]:
    """(spaces to verify in this order, new spaces deferred to a later connection).

    Spaces the relay knows come first (the device's own memberships), then new ones, the
    space that holds the device's key first, at most `allowed_new` of them."""
    first = [key_space] if key_space is not None and key_space in new else []
    ordered_new = first + [s for s in new if s != key_space]
    take = max(0, allowed_new)
    return list(known) + ordered_new[:take], ordered_new[take:]


def deferral(space: str, per_frame: int, by_rate: bool) -> str:
    """Why a new space was not verified in this connection (it is on the next one)."""
    why = (f"this address created its share of new spaces for now ({NEW_SPACE_BURST} at "
           f"once, then one every {1 / NEW_SPACES_PER_S:g} s)" if by_rate else
           f"one connection brings at most {per_frame} spaces new to the relay")
    return (f"space {space[:12]} is new to this relay and was not verified yet: {why}; "
            "it is verified when the device connects again (automatically)")


class NewSpaceRate:
    """New spaces each address may create: a token bucket per address; pure (`now` is
    passed in). Remembers at most MAX_RATE_ADDRESSES addresses, forgetting full buckets
    (nothing to remember) first and then the oldest."""

    def __init__(self, rate: float = NEW_SPACES_PER_S, burst: int = NEW_SPACE_BURST,
                 max_addresses: int = MAX_RATE_ADDRESSES) -> None:
        if rate <= 0 or burst < 1 or max_addresses < 1:
            raise ValueError("a new-space rate needs rate > 0, burst >= 1, max_addresses >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_addresses = max_addresses
        #: address -> (tokens, when counted); insertion order = least recently used first.
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def allowance(self, address: str, now: float) -> int:
        """How many new spaces `address` may create now."""
        return int(self._tokens(address, now))

    def spend(self, address: str, n: int, now: float) -> None:
        """Record that `address` created `n` new spaces (n <= allowance)."""
        if n <= 0:
            return
        tokens = self._tokens(address, now) - n
        self._buckets.pop(address, None)
        self._buckets[address] = (tokens, now)
        excess = len(self._buckets) - self.max_addresses
        if excess > 0:
            full = [a for a in self._buckets if self._tokens(a, now) >= self.burst]
            for a in (full + list(self._buckets))[:excess]:
                self._buckets.pop(a, None)

__all__ = [
    "MAX_AUTH_ENTRIES",
    "MAX_AUTH_ITEMS",
    "MAX_ENTRY_ITEMS",
    "MAX_KEY_SEARCH_ENTRIES",
    "MAX_NEW_SPACES_PER_AUTH",
    "MAX_RATE_ADDRESSES",
    "NEW_SPACES_PER_S",
    "NEW_SPACE_BURST",
    "AuthBudgetExceeded",
    "FoundKey",
    "ItemBudget",
    "NewSpaceRate",
    "deferral",
    "entry_items",
    "frame_refusal",
    "known_key",
    "search_key",
    "verify_order",
]
