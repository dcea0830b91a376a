"""The signed membership log of a space, and the state it proves (pure).

Why a log of signed entries and not a member list: every daemon and the relay must agree on who
may write to a space without trusting whoever handed them the list. Each entry is signed by an
admin device and names the entries it builds on (its parents, by hash), so the log is a DAG
that anyone can re-verify from the genesis (Secure Scuttlebutt / Keyhive style). Concurrent
admin entries are replayed in one deterministic order: by `counter` (1 + the largest parent
counter, so parents always come first), ties by entry hash.

Entry wire format (canonical CBOR, `mocksync.changes.canonical`):
    {"body": bytes(canonical CBOR of BODY), "sig": Ed25519(author, DOMAIN | body)}
    BODY = {"v": 1, "space": 16 bytes, "kind": str, "author": device id, "parents": [32-byte
            hashes, ascending], "counter": int, "time": int ms (informational), "data": {...}}
The entry hash is SHA-256 of the wire bytes. The canonical decoder refuses any re-encoding, so
one entry has exactly one wire form and one hash.

`data` by kind:
    genesis        {name, space_kind: team|personal, relay: url|[url, ...]|None,
                    member: {id, name},
                    device: {id, name, sign, box}, model, device_limit}
                   (`relay`: one URL, the only form before issue 17, or a list of several,
                   the space's relays in order of preference; `space.fields.read_relays`)
    add_member     {member: {id, name}, role: admin|editor}
    add_device     {member: id, device: {id, name, sign, box}, key: {gen, sealed}|None}
    remove_device  {device: id, covers: {env tag: last seq}}
    remove_member  {member: id, covers: {device id: {env tag: last seq}}}
    set_role       {member: id, role}
    rotate_key     {gen, sealed: {device id: sealed content key}}
    migrate        {model}
    leave          {member: id, covers: {device id: {env tag: last seq}}}  (issue 11 follow-up)
                   a member leaves on its own: signed by one of the member's own devices (no
                   admin needed), it removes the member and all its devices exactly as
                   `remove_member` does, cut included; void when it would leave the space
                   without an admin device (another admin must be named first). An admin
                   device that learns one rotates the content key (`rotation_needed`).
    relays         {relays: url|[url, ...]}  (issue 17 follow-up: the space moves relay)
                   the space's relay list from now on, replacing the genesis `relay` (or an
                   earlier `relays` entry): 1..MAX_SPACE_RELAYS addresses, the same form and
                   checks as the genesis field. `SpaceState.relays` is the list in effect
                   after the replay; among concurrent ones the last in the order wins.

An entry of a kind this build does not know (a newer device signed it) is a structural
refusal of the whole log, said as "update mocksync" (`from_wire`): the kind is signed and a
device cannot tell what an unknown entry changes (who may write? which relays?), so it takes
none of the log rather than a part of it.

Rules of the replay (an entry that breaks one is *void*: kept in the DAG, without effect, with
its reason in `SpaceState.void`):
- the author must be an active device whose own addition is among the entry's ancestors, and
  its member must be an admin at that point of the order;
- removal wins: once device D is removed by entry R, every entry D signed that is not an
  ancestor of R is void, wherever it falls in the order (a removed device cannot act
  "concurrently" with its removal, e.g. to re-add itself). This is computed to a fixed point,
  since voiding an entry can change which removals take effect;
- a removed device may be added again (an admin re-invites it), but only by an entry that has
  its removal among its ancestors: an admin who re-admits a device must have seen it removed,
  so no entry concurrent with a removal can undo it. Once re-added it is an active device
  again (its change sets are accepted whole: the admin vouches for it). A removed *member* id
  is never added again; a re-invited device of a removed member joins as a new member;
- the space must always keep at least one admin device; the number of devices one member may
  have registered (`device_limit`) is enforced; a personal space has exactly one member.
  `device_limit` is not the plan's "simultaneous devices per member": that one counts devices
  connected to the relay at once and is the relay's decision (`space.quotas.check_device_online`).
Structural problems (bad signature, unknown signer, missing parent, two genesis entries, wrong
counter, malformed fields) are not "void": they make `verify_log` raise MembershipError, since
no honest device produces them.

Removal and change sets (docs/design/security.md §2): a removal records, per environment, the last
seq of the removed device the admin had seen (`covers`), keyed by the environment's relay tag
(`space.envtags.env_tag`), not its id: the relay, which sees only tags, applies the same cut
as every member (`space.writers.judge_change`, the one decision both use), and the log names
no environment. `accepts_change(device, tag, seq)` accepts that device's change sets with
`seq <= covers[tag]` and nothing else. A per-env cut (not one global number) because a
device's seqs run per environment chain. When a device is removed twice concurrently, the
first removal in the order supplies the cut.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from .. import MODEL_VERSION
from ..changes.canonical import decode, encode
from ..errors import ChangeSetError
from ..wire import Bytes, Check, FieldError, Ident, Int, ListOf, MapOf, Record, Text, wire
from .errors import MembershipError
from .fields import (
    MAX_INT,
    MAX_SPACE_RELAYS,
    OneOf,
    Satisfies,
    as_relays,
    exact_map,
    get_bytes,
    get_int,
    get_name,
    get_str,
    read,
    read_record,
    read_relays,
    relays_problem,
    relays_wire,
)
from .identity import ID_TEXT_CHARS, DevicePublic, is_device_id, verify_signature
from .names import open_name, placeholder, seal_name, sealed_name_problem

ENTRY_FORMAT = 1
#: Entries whose names (space, member, device) are sealed for members (`space.names`): the
#: relay verifies them without reading the names. Format 1 entries are still read.
SEALED_NAMES_FORMAT = 2
KINDS = ("genesis", "add_member", "add_device", "remove_device", "remove_member", "set_role",
         "rotate_key", "migrate", "relays", "leave")
#: Kinds that take devices out of a space (a removal cut, then a key rotation).
REMOVAL_KINDS = frozenset({"remove_device", "remove_member", "leave"})
ROLES = ("admin", "editor")
SPACE_KINDS = ("team", "personal")

SPACE_ID_BYTES = 16
HASH_BYTES = 32
MEMBER_ID_CHARS = 16
#: Bytes of one entry on the wire (a rotation sealed to MAX_DEVICES devices fits).
MAX_ENTRY_BYTES = 96 * 1024
#: Entries in one space's log.
MAX_LOG_ENTRIES = 10_000
#: Parents of one entry (heads of a DAG rarely exceed a handful).
MAX_PARENTS = 32
MAX_MEMBERS = 200
#: Active devices in one space.
MAX_DEVICES = 400
#: Highest number of devices one member may have registered in a space.
MAX_DEVICE_LIMIT = 16
#: Devices one member may have registered in a new space. Deliberately not the plan's
#: DEFAULT_DEVICES_PER_MEMBER (2 *simultaneous* devices): a member may own more devices than
#: may be online at once, and the relay enforces the simultaneous limit when they connect.
DEFAULT_DEVICE_LIMIT = MAX_DEVICE_LIMIT
#: Environments named in one removal cut, and the longest environment id.
MAX_CUT_ENVS = 1000
MAX_ENV_ID_CHARS = 128
#: Size of a sealed content key (version + ephemeral key + key + tag) with headroom.
MAX_SEALED_BYTES = 256
MAX_MODEL_VERSION = 1000
MAX_GENERATION = 2**32 - 1

_SIGN_DOMAIN = b"mocksync/membership-entry/v1\x00"
#: Replays spent looking for an exact removal-wins fixed point before growing a union instead.
_MAX_EXACT_ROUNDS = 16

# ---------------------------------------------------------------- fields (wire checkers)

#: A member id: MEMBER_ID_CHARS lowercase hex digits.
MEMBER_ID = Ident(MEMBER_ID_CHARS, MEMBER_ID_CHARS,
                  f"a member id ({MEMBER_ID_CHARS} hex digits)",
                  re.compile(rf"[0-9a-f]{{{MEMBER_ID_CHARS}}}"))
#: A device id as text, with a valid check character.
DEVICE_ID = Satisfies(Text(ID_TEXT_CHARS), is_device_id, "is not a valid device id")
#: A removal cut: environment id -> the last seq kept.
_CUT = MapOf(Ident(1, MAX_ENV_ID_CHARS, f"an environment id of 1..{MAX_ENV_ID_CHARS} "
                   "characters of text", re.compile(r".+", re.DOTALL)),
             Int(0, MAX_INT), MAX_CUT_ENVS)


class _AnyValue(Check):
    """A field whose shape depends on another (an entry's data on its kind): passed on as
    decoded, checked by the reader that knows the kind (`_validate_data`)."""

    def decode(self, v: Any, where: str) -> Any:
        return v


def _sorted_distinct(parents: Sequence[bytes], where: str) -> None:
    if any(a >= b for a, b in zip(parents, parents[1:], strict=False)):
        raise FieldError(where, "must be sorted and distinct")


@dataclass(frozen=True, slots=True)
class _Outer(Record):
    """A signed entry on the wire: its canonical body and the author's signature of it."""

    body: bytes = wire("body", Bytes(0, MAX_ENTRY_BYTES))
    sig: bytes = wire("sig", Bytes(64, 64))


@dataclass(frozen=True, slots=True)
class _Body(Record):
    """An entry's signed body (`_sign` writes it; tests/test_space_wire_golden.py pins it)."""

    v: int = wire("v", Int(ENTRY_FORMAT, SEALED_NAMES_FORMAT))
    space: bytes = wire("space", Bytes(SPACE_ID_BYTES, SPACE_ID_BYTES))
    kind: str = wire("kind", OneOf(KINDS))
    author: str = wire("author", DEVICE_ID)
    parents: list[bytes] = wire("parents", ListOf(
        Bytes(HASH_BYTES, HASH_BYTES), MAX_PARENTS, what="a list of entry hashes",
        whole=_sorted_distinct, unit="parents"))
    counter: int = wire("counter", Int(0, MAX_INT))
    time: int = wire("time", Int(0, MAX_INT))
    data: Any = wire("data", _AnyValue())


def new_space_id() -> bytes:
    return os.urandom(SPACE_ID_BYTES)


def new_member_id() -> str:
    return secrets.token_hex(MEMBER_ID_CHARS // 2)


#: (name field as in an entry, role "space"|"member"|"device", member or device id) -> text.
NameReader = Callable[[Any, str, str], str]


class Signer(Protocol):
    """What signs entries: an `Identity` does."""

    device_id: str

    @property
    def public(self) -> DevicePublic: ...

    def sign(self, data: bytes) -> bytes: ...


# ---------------------------------------------------------------- one entry


def _member_id(d: Mapping[str, Any], key: str, what: str) -> str:
    out: str = read(MEMBER_ID, d, key, what, MembershipError)
    return out


def _device_id(d: Mapping[str, Any], key: str, what: str) -> str:
    out: str = read(DEVICE_ID, d, key, what, MembershipError)
    return out


def _cut(d: Mapping[str, Any], key: str, what: str) -> dict[str, int]:
    out: dict[str, int] = read(_CUT, d, key, what, MembershipError)
    return out


def _name(d: Mapping[str, Any], key: str, what: str, v: int) -> None:
    """A name field: text in format 1, a sealed name (shape checked) in format 2."""
    if v < SEALED_NAMES_FORMAT:
        get_name(d, key, what, MembershipError)
        return
    problem = sealed_name_problem(d[key])
    if problem:
        raise MembershipError(f"{what}: field {key!r} {problem}")


def _member_rec(obj: Any, what: str, v: int = ENTRY_FORMAT) -> dict[str, Any]:
    m = exact_map(obj, {"id", "name"}, what, MembershipError)
    _member_id(m, "id", what)
    _name(m, "name", what, v)
    return m


def _device_pub(obj: Any, what: str, v: int = ENTRY_FORMAT) -> None:
    """A device record: its name sealed in format 2, the rest checked as `DevicePublic`."""
    if v < SEALED_NAMES_FORMAT:
        DevicePublic.from_cbor(obj, what, MembershipError)
        return
    d = exact_map(obj, {"id", "name", "sign", "box"}, what, MembershipError)
    _name(d, "name", what, v)
    DevicePublic.from_cbor({**d, "name": "sealed"}, what, MembershipError)


def _validate_data(kind: str, data: Any, what: str, v: int = ENTRY_FORMAT) -> None:
    E = MembershipError
    if kind == "genesis":
        d = exact_map(data, {"name", "space_kind", "relay", "member", "device", "model",
                             "device_limit"}, what, E)
        _name(d, "name", what, v)
        get_str(d, "space_kind", what, E, choices=SPACE_KINDS)
        read_relays(d, "relay", what, E)  # one URL (the old form), or a list (issue 17)
        _member_rec(d["member"], what + " member", v)
        _device_pub(d["device"], what + " device", v)
        get_int(d, "model", what, E, lo=1, hi=MAX_MODEL_VERSION)
        get_int(d, "device_limit", what, E, lo=1, hi=MAX_DEVICE_LIMIT)
    elif kind == "add_member":
        d = exact_map(data, {"member", "role"}, what, E)
        _member_rec(d["member"], what + " member", v)
        get_str(d, "role", what, E, choices=ROLES)
    elif kind == "add_device":
        d = exact_map(data, {"member", "device", "key"}, what, E)
        _member_id(d, "member", what)
        _device_pub(d["device"], what + " device", v)
        if d["key"] is not None:
            k = exact_map(d["key"], {"gen", "sealed"}, what + " key", E)
            get_int(k, "gen", what, E, lo=1, hi=MAX_GENERATION)
            get_bytes(k, "sealed", what, E, max_len=MAX_SEALED_BYTES)
    elif kind == "remove_device":
        d = exact_map(data, {"device", "covers"}, what, E)
        _device_id(d, "device", what)
        _cut(d, "covers", what)
    elif kind in ("remove_member", "leave"):
        d = exact_map(data, {"member", "covers"}, what, E)
        _member_id(d, "member", what)
        covers = d["covers"]
        if not isinstance(covers, dict) or len(covers) > MAX_DEVICE_LIMIT:
            raise E(f"{what}: covers must map at most {MAX_DEVICE_LIMIT} device ids to cuts")
        for dev in covers:
            if not is_device_id(dev):
                raise E(f"{what}: covers names something that is not a device id")
            _cut(covers, dev, what + " covers")
    elif kind == "set_role":
        d = exact_map(data, {"member", "role"}, what, E)
        _member_id(d, "member", what)
        get_str(d, "role", what, E, choices=ROLES)
    elif kind == "rotate_key":
        d = exact_map(data, {"gen", "sealed"}, what, E)
        get_int(d, "gen", what, E, lo=2, hi=MAX_GENERATION)
        sealed = d["sealed"]
        if not isinstance(sealed, dict) or not 1 <= len(sealed) <= MAX_DEVICES:
            raise E(f"{what}: sealed must map 1..{MAX_DEVICES} device ids to sealed keys")
        for dev, blob in sealed.items():
            if not is_device_id(dev):
                raise E(f"{what}: sealed names something that is not a device id")
            if not isinstance(blob, bytes) or not 1 <= len(blob) <= MAX_SEALED_BYTES:
                raise E(f"{what}: a sealed key must be 1..{MAX_SEALED_BYTES} bytes")
    elif kind == "migrate":
        d = exact_map(data, {"model"}, what, E)
        get_int(d, "model", what, E, lo=1, hi=MAX_MODEL_VERSION)
    elif kind == "relays":
        d = exact_map(data, {"relays"}, what, E)
        if not read_relays(d, "relays", what, E):
            raise E(f"{what}: field 'relays' must name 1..{MAX_SPACE_RELAYS} relays, got none")
    else:  # pragma: no cover - kind was checked against KINDS
        raise E(f"{what}: unknown kind")


@dataclass(frozen=True)
class Entry:
    """One verified-in-form (not yet in-context) membership entry."""

    wire: bytes
    hash: bytes
    body_bytes: bytes
    sig: bytes
    space: bytes
    kind: str
    author: str
    parents: tuple[bytes, ...]
    counter: int
    time_ms: int
    data: Any = field(repr=False)
    #: ENTRY_FORMAT (names in the clear) or SEALED_NAMES_FORMAT.
    version: int = ENTRY_FORMAT

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @property
    def short(self) -> str:
        return f"{self.kind} {self.hash.hex()[:12]}"

    def signed_bytes(self) -> bytes:
        return _SIGN_DOMAIN + self.body_bytes

    @classmethod
    def from_wire(cls, wire: bytes) -> Entry:
        """Decode and check the form of one entry (fields, types, limits). The signature and
        the entry's validity in its log are checked by `verify_log`."""
        if not isinstance(wire, bytes | bytearray | memoryview):
            raise MembershipError("membership entry: expected bytes")
        wire = bytes(wire)
        if len(wire) > MAX_ENTRY_BYTES:
            raise MembershipError(
                f"membership entry of {len(wire)} bytes is over the {MAX_ENTRY_BYTES} byte limit"
            )
        digest = hashlib.sha256(wire).digest()
        what = f"membership entry {digest.hex()[:12]}"
        try:
            outer = decode(wire, what=what)
        except ChangeSetError as exc:
            raise MembershipError(str(exc)) from None
        signed = read_record(_Outer, outer, what, MembershipError)
        body_bytes, sig = signed.body, signed.sig
        try:
            raw = decode(body_bytes, what=what + " body")
        except ChangeSetError as exc:
            raise MembershipError(str(exc)) from None
        if isinstance(raw, dict) and raw.get("kind") in KINDS:
            what = f"{raw['kind']} entry {digest.hex()[:12]}"
        elif isinstance(raw, dict) and isinstance(raw.get("kind"), str):
            raise MembershipError(
                f"{what} is of kind {raw['kind'][:40]!r}, which this version of mocksync does "
                "not know (a device running a newer one signed it); update mocksync to take in "
                "this space's membership log")
        body = read_record(_Body, raw, what, MembershipError)
        version, space, kind, author = body.v, body.space, body.kind, body.author
        parents, counter, time_ms = body.parents, body.counter, body.time
        if kind == "genesis":
            if parents or counter != 0:
                raise MembershipError(f"{what}: a genesis entry has no parents and counter 0")
        elif not parents or counter < 1:
            raise MembershipError(f"{what}: builds on no earlier entry")
        _validate_data(kind, body.data, what, version)
        if kind == "genesis" and body.data["device"]["id"] != author:
            raise MembershipError(f"{what}: the genesis must be signed by the device it names")
        return cls(wire, digest, body_bytes, sig, space, kind, author, tuple(parents), counter,
                   time_ms, body.data, version)


def _coerce(e: Entry | bytes) -> Entry:
    return e if isinstance(e, Entry) else Entry.from_wire(e)


# ---------------------------------------------------------------- the state a log proves


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    role: str
    devices: tuple[str, ...]


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    member: str
    sign_key: bytes
    box_key: bytes
    added_by: str


@dataclass(frozen=True)
class Removal:
    """A removed device: its cut (`covers`: env -> last accepted seq), who removed it in which
    entry, and its public signing key (still needed to verify its change sets up to the cut)."""

    device: str
    member: str
    name: str
    covers: Mapping[str, int]
    by: str
    entry: str
    sign_key: bytes = b""
    #: When the removing entry was signed (ms, its author's clock: informational).
    at_ms: int = 0
    #: The kind of the entry that removed it: remove_device, remove_member or leave.
    kind: str = "remove_device"


@dataclass(frozen=True)
class SpaceState:
    """Who belongs to a space, as proven by a verified membership log."""

    space_id: str
    name: str
    kind: str
    relay: str | None
    model: int
    device_limit: int
    created_ms: int
    creator: str
    members: Mapping[str, Member]
    devices: Mapping[str, Device]
    removed_devices: Mapping[str, Removal]
    removed_members: frozenset[str]
    key_generation: int
    key_creator: str
    sealed_keys: Mapping[tuple[str, int], bytes]
    rotation_needed: bool
    heads: tuple[bytes, ...]
    next_counter: int
    order: tuple[str, ...]
    void: Mapping[str, str]
    #: Further relays the space names after `relay`, in order (issue 17): the genesis list,
    #: or the last `relays` entry's (the space moved relay).
    relay_more: tuple[str, ...] = ()

    @property
    def relays(self) -> tuple[str, ...]:
        """Every relay the space names, the preferred one first."""
        return ((self.relay,) if self.relay is not None else ()) + self.relay_more

    @property
    def space_id_bytes(self) -> bytes:
        return bytes.fromhex(self.space_id)

    def is_member(self, device_id: str) -> bool:
        """True iff `device_id` is an active (added, not removed) device of the space."""
        return device_id in self.devices

    def member_of(self, device_id: str) -> Member | None:
        dev = self.devices.get(device_id)
        return self.members.get(dev.member) if dev else None

    def role_of(self, device_id: str) -> str | None:
        m = self.member_of(device_id)
        return m.role if m else None

    def is_admin(self, device_id: str) -> bool:
        return self.role_of(device_id) == "admin"

    def admin_devices(self) -> list[str]:
        return sorted(d for d in self.devices if self.is_admin(d))

    def accepts_change(self, device_id: str, tag: str, seq: int) -> bool:
        """May a change set `(device_id, env tag, seq)` enter this space's log? (docs/design/security.md §2)

        Active devices: yes. Removed devices: only up to the seq their removal covers for
        that environment's tag. Anyone else: no. `space.writers.judge_change` is the same
        decision with its reason and the key to verify with."""
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return False
        if device_id in self.devices:
            return True
        removal = self.removed_devices.get(device_id)
        if removal is None:
            return False
        return seq <= removal.covers.get(tag, 0)

    def find_members(self, text: str) -> list[Member]:
        """Active members whose id or name is `text` (names compared case-insensitively)."""
        if text in self.members:
            return [self.members[text]]
        low = text.casefold()
        return [m for m in self.members.values() if m.name.casefold() == low]

    def sealed_key_for(self, device_id: str, gen: int) -> bytes | None:
        return self.sealed_keys.get((device_id, gen))

    def devices_missing_key(self) -> list[str]:
        """Active devices with no sealed copy of the current key generation in the log (e.g.
        added concurrently with a rotation); an admin should seal it to them."""
        gen = self.key_generation
        return sorted(d for d in self.devices
                      if d != self.key_creator and (d, gen) not in self.sealed_keys)


# ---------------------------------------------------------------- replay


class _Replay:
    """One pass over the ordered entries with a given set of entries forced void."""

    def __init__(self, order: list[Entry], anc: list[int], forced: set[int],
                 name_of: NameReader | None = None) -> None:
        self.order = order
        #: Turns a name field (text, or a sealed name) into display text.
        self.name_of: NameReader = name_of or (lambda raw, role, ident: str(raw))
        self.anc = anc
        self.forced = forced
        self.members: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.added_at: dict[str, int] = {}
        self.removed_devices: dict[str, Removal] = {}
        self.removed_members: set[str] = set()
        self.removal_index: dict[str, int] = {}
        #: Where a removed device was last added back (see `_add_device`).
        self.readd_index: dict[str, int] = {}
        self.sealed: dict[tuple[str, int], bytes] = {}
        self.void: dict[int, str] = {}
        self.gen = 1
        self.gen_index = 0
        self.gen_creator = ""
        self.last_removal_index = -1
        self.model = 1
        #: The space's relay list in effect (genesis `relay`, then `relays` entries).
        self.relays: tuple[str, ...] = ()
        self.g: dict[str, Any] = {}

    def is_ancestor(self, j: int, i: int) -> bool:
        return bool((self.anc[i] >> j) & 1)

    def admin_devices_after(self, drop_devices: frozenset[str] | set[str] = frozenset(),
                            demote: str | None = None) -> int:
        n = 0
        for did, dev in self.devices.items():
            if did in drop_devices:
                continue
            m = self.members[dev["member"]]
            if m["role"] == "admin" and m["id"] != demote:
                n += 1
        return n

    def run(self) -> None:
        for i, e in enumerate(self.order):
            reason = self.apply(i, e)
            if reason:
                self.void[i] = reason

    def apply(self, i: int, e: Entry) -> str | None:
        d = e.data
        if e.kind == "genesis":
            self.g = d
            self.model = d["model"]
            self.relays = as_relays(d["relay"])
            mid = d["member"]["id"]
            self.members[mid] = {"id": mid, "name": self.name_of(d["member"]["name"], "member", mid),
                                 "role": "admin", "devices": []}
            self._add_device_rec(i, mid, d["device"], e.author)
            self.gen_creator = e.author
            return None
        if i in self.forced:
            return f"its author {e.author} was removed concurrently (removal wins)"
        dev = self.devices.get(e.author)
        if dev is None:
            if e.author in self.removed_devices:
                return f"its author {e.author} had been removed from the space"
            return f"its author {e.author} is not a device of this space"
        if not self.is_ancestor(self.added_at[e.author], i):
            return f"its author {e.author} signed it without having seen its own addition"
        if e.kind == "leave":  # a member's own word: no admin needed
            return self._leave(i, e, d)
        if self.members[dev["member"]]["role"] != "admin":
            return f"its author {e.author} is not an admin of the space"
        handler = {
            "add_member": self._add_member,
            "add_device": self._add_device,
            "remove_device": self._remove_device,
            "remove_member": self._remove_member,
            "set_role": self._set_role,
            "rotate_key": self._rotate_key,
            "migrate": self._migrate,
            "relays": self._relays,
        }[e.kind]
        return handler(i, e, d)

    def _add_member(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        mid = d["member"]["id"]
        if self.g["space_kind"] == "personal":
            return "a personal space has exactly one member; invite another device of its owner"
        if mid in self.members:
            return f"member {mid} is already in the space"
        if mid in self.removed_members:
            return f"member {mid} was removed and can never be added back"
        if len(self.members) >= MAX_MEMBERS:
            return f"the space already has {MAX_MEMBERS} members, the limit"
        self.members[mid] = {"id": mid, "name": self.name_of(d["member"]["name"], "member", mid),
                             "role": d["role"], "devices": []}
        return None

    def _add_device(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        rec = d["device"]
        did, mid = rec["id"], d["member"]
        readd = did in self.removed_devices
        if readd and not self.is_ancestor(self.removal_index[did], i):
            return (f"device {did} is being removed concurrently; an admin can re-add it only "
                    "after seeing its removal")
        if did in self.devices:
            return f"device {did} is already in the space"
        m = self.members.get(mid)
        if m is None:
            return f"member {mid} is not in the space"
        if len(m["devices"]) >= self.g["device_limit"]:
            return (f"member {m['name']} already has {len(m['devices'])} devices registered, the "
                    f"most this space allows per member ({self.g['device_limit']})")
        if len(self.devices) >= MAX_DEVICES:
            return f"the space already has {MAX_DEVICES} devices, the limit"
        key = d["key"]
        if key is not None and key["gen"] > self.gen:
            return f"it seals key generation {key['gen']}, which does not exist yet"
        if readd:
            # Active again; `removal_index` stays, so removal-wins still voids whatever the
            # device signed unseen by its removal.
            del self.removed_devices[did]
            self.readd_index[did] = i
        self._add_device_rec(i, mid, rec, e.author)
        if key is not None:
            self.sealed[(did, key["gen"])] = key["sealed"]
        return None

    def _add_device_rec(self, i: int, mid: str, rec: dict[str, Any], by: str) -> None:
        self.devices[rec["id"]] = {"id": rec["id"],
                                   "name": self.name_of(rec["name"], "device", rec["id"]),
                                   "member": mid,
                                   "sign": rec["sign"], "box": rec["box"], "by": by}
        self.members[mid]["devices"].append(rec["id"])
        self.added_at[rec["id"]] = i

    def _remove(self, i: int, e: Entry, dids: list[str], covers: Mapping[str, Mapping[str, int]]) -> None:
        for did in dids:
            dev = self.devices.pop(did)
            self.members[dev["member"]]["devices"].remove(did)
            self.removed_devices[did] = Removal(did, dev["member"], dev["name"],
                                                MappingProxyType(dict(covers.get(did, {}))),
                                                e.author, e.hash_hex, dev["sign"], e.time_ms,
                                                e.kind)
            self.removal_index[did] = i
        self.last_removal_index = i

    def _remove_device(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        did = d["device"]
        if did in self.removed_devices:
            return f"device {did} was already removed"
        if did not in self.devices:
            return f"device {did} is not in the space"
        if self.admin_devices_after({did}) == 0:
            return "it would leave the space without an admin device"
        self._remove(i, e, [did], {did: d["covers"]})
        return None

    def _remove_member(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        mid = d["member"]
        if mid in self.removed_members:
            return f"member {mid} was already removed"
        m = self.members.get(mid)
        if m is None:
            return f"member {mid} is not in the space"
        dids = list(m["devices"])
        if self.admin_devices_after(set(dids), demote=mid) == 0:
            return "it would leave the space without an admin device"
        self._remove(i, e, dids, d["covers"])
        del self.members[mid]
        self.removed_members.add(mid)
        self.last_removal_index = i
        return None

    def _leave(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        mid = d["member"]
        if self.devices[e.author]["member"] != mid:
            return f"its author {e.author} is not a device of member {mid}; a member leaves only on its own"
        if self.g["space_kind"] == "personal":
            return "a personal space cannot be left; it is its owner's own"
        m = self.members[mid]
        dids = list(m["devices"])
        if self.admin_devices_after(set(dids), demote=mid) == 0:
            return ("the last admin cannot leave; make another member an admin first "
                    "(or remove the space's other members)")
        self._remove(i, e, dids, d["covers"])
        del self.members[mid]
        self.removed_members.add(mid)
        return None

    def _set_role(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        m = self.members.get(d["member"])
        if m is None:
            return f"member {d['member']} is not in the space"
        if d["role"] != "admin" and self.admin_devices_after(demote=m["id"]) == 0:
            return "it would leave the space without an admin device"
        m["role"] = d["role"]
        return None

    def _rotate_key(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        if d["gen"] != self.gen + 1:
            return f"it makes key generation {d['gen']}, but the next one is {self.gen + 1}"
        for did in d["sealed"]:
            if did not in self.devices:
                return f"it seals the new key to {did}, which is not an active device"
        self.gen = d["gen"]
        self.gen_index = i
        self.gen_creator = e.author
        for did, blob in d["sealed"].items():
            self.sealed[(did, self.gen)] = blob
        return None

    def _migrate(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        if d["model"] <= self.model:
            return f"the space is already at model {self.model}"
        self.model = d["model"]
        return None

    def _relays(self, i: int, e: Entry, d: dict[str, Any]) -> str | None:
        relays = as_relays(d["relays"])
        if relays == self.relays:
            return "the space already names exactly these relays"
        self.relays = relays
        return None


def _name_reader(space: bytes, names_key: bytes | None) -> NameReader:
    """Names as members see them: text (format 1) kept, sealed names (format 2) opened with
    the space's names key; a name that cannot be opened (no key: the relay) shows ids only."""
    def read(raw: Any, role: str, ident: str) -> str:
        if isinstance(raw, str):
            return raw
        name = open_name(names_key, space, role, ident, raw)
        return name if name is not None else placeholder(role, ident, space)
    return read


def verify_log(entries: Iterable[Entry | bytes], names_key: bytes | None = None) -> SpaceState:
    """Verify a whole membership log and return the state it proves.

    `names_key` (`space.names.names_key`) opens sealed names; without it (the relay) the
    state names people and the space by id only. Nothing else depends on it.

    Raises MembershipError for anything no honest device produces (malformed or oversized
    entries, bad or unknown signatures, a missing parent, zero or several genesis entries,
    entries of another space, wrong counters). Entries that are well formed and signed but not
    allowed at their point in the order are void (see the module docstring)."""
    by_hash: dict[bytes, Entry] = {}
    for n, raw in enumerate(entries, 1):
        if n > MAX_LOG_ENTRIES:
            raise MembershipError(f"membership log is over the {MAX_LOG_ENTRIES} entry limit")
        e = _coerce(raw)
        by_hash.setdefault(e.hash, e)
    geneses = [e for e in by_hash.values() if e.kind == "genesis"]
    if not geneses:
        raise MembershipError("membership log has no genesis entry")
    if len(geneses) > 1:
        raise MembershipError(
            f"membership log has {len(geneses)} genesis entries; a space has exactly one"
        )
    genesis = geneses[0]
    # Public keys: every device any entry adds. The id is the hash of the key (checked when the
    # entry was decoded), so one id cannot carry two keys.
    keys: dict[str, bytes] = {genesis.author: genesis.data["device"]["sign"]}
    for e in by_hash.values():
        if e.kind == "add_device":
            keys.setdefault(e.data["device"]["id"], e.data["device"]["sign"])
    for e in by_hash.values():
        key = keys.get(e.author)
        if key is None:
            raise MembershipError(
                f"{e.short} is signed by device {e.author}, which no entry of this log adds"
            )
        if not verify_signature(key, e.signed_bytes(), e.sig):
            raise MembershipError(f"{e.short} has an invalid signature (forged or altered)")

    for e in by_hash.values():
        if e.space != genesis.space:
            raise MembershipError(f"{e.short} belongs to another space ({e.space.hex()})")
        if e.kind == "genesis":
            continue
        counters = []
        for p in e.parents:
            parent = by_hash.get(p)
            if parent is None:
                raise MembershipError(f"{e.short} builds on entry {p.hex()[:12]}, which is missing")
            counters.append(parent.counter)
        if e.counter != 1 + max(counters):
            raise MembershipError(f"{e.short} has counter {e.counter}, expected {1 + max(counters)}")

    names = _name_reader(genesis.space, names_key)
    order = sorted(by_hash.values(), key=lambda x: (x.counter, x.hash))
    index = {e.hash: i for i, e in enumerate(order)}
    anc: list[int] = []
    children: set[bytes] = set()
    for e in order:
        a = 0
        for p in e.parents:
            j = index[p]
            a |= anc[j] | (1 << j)
            children.add(p)
        anc.append(a)
    by_author: dict[str, list[int]] = {}
    for i, e in enumerate(order):
        by_author.setdefault(e.author, []).append(i)

    def unseen_by_removals(rp: _Replay) -> frozenset[int]:
        out = set()
        for did, ri in rp.removal_index.items():
            back = rp.readd_index.get(did)
            if back is not None and not (anc[back] >> ri) & 1:
                back = None  # an older re-add, itself undone by this later removal
            for j in by_author.get(did, ()):
                if j == ri or (anc[ri] >> j) & 1:
                    continue  # seen by its removal
                if back is not None and (j == back or (anc[j] >> back) & 1):
                    continue  # signed after the device was re-added
                out.add(j)
        return frozenset(out)

    # Removal wins, to a fixed point: void what removed devices did unseen by their removal,
    # replay, repeat. Voiding can undo a removal (its author was itself removed), so first look
    # for an exact fixed point; should the sets cycle, fall back to growing their union until
    # no removal in effect has an unseen entry of its device left valid.
    forced: frozenset[int] = frozenset()
    seen_sets: list[frozenset[int]] = []
    rp = _Replay(order, anc, set(forced), names)
    rp.run()
    for _ in range(_MAX_EXACT_ROUNDS):
        nxt = unseen_by_removals(rp)
        if nxt == forced:
            break
        seen_sets.append(forced)
        if nxt in seen_sets:
            forced = frozenset().union(*seen_sets, nxt)
            seen_sets = []
            break
        forced = nxt
        rp = _Replay(order, anc, set(forced), names)
        rp.run()
    while True:
        rp = _Replay(order, anc, set(forced), names)
        rp.run()
        grown = forced | unseen_by_removals(rp)
        if grown == forced:
            break
        forced = grown

    g = genesis.data
    relays = rp.relays
    members = {
        mid: Member(mid, m["name"], m["role"], tuple(m["devices"])) for mid, m in rp.members.items()
    }
    devices = {
        did: Device(did, d["name"], d["member"], d["sign"], d["box"], d["by"])
        for did, d in rp.devices.items()
    }
    return SpaceState(
        space_id=genesis.space.hex(),
        name=names(g["name"], "space", ""),
        kind=g["space_kind"],
        relay=(relays[0] if relays else None),
        relay_more=relays[1:],
        model=rp.model,
        device_limit=g["device_limit"],
        created_ms=genesis.time_ms,
        creator=genesis.author,
        members=MappingProxyType(members),
        devices=MappingProxyType(devices),
        removed_devices=MappingProxyType(dict(rp.removed_devices)),
        removed_members=frozenset(rp.removed_members),
        key_generation=rp.gen,
        key_creator=rp.gen_creator,
        sealed_keys=MappingProxyType(dict(rp.sealed)),
        rotation_needed=rp.last_removal_index > rp.gen_index,
        heads=tuple(sorted(h for h in by_hash if h not in children)),
        next_counter=1 + max(e.counter for e in order),
        order=tuple(e.hash_hex for e in order),
        void=MappingProxyType({order[i].hash_hex: r for i, r in sorted(rp.void.items())}),
    )


def extend_log(entries: Iterable[Entry | bytes], new: Iterable[Entry | bytes],
               names_key: bytes | None = None) -> SpaceState:
    """Verify `entries + new` and refuse (MembershipError, nothing changed) if any new entry
    would be void: what a device or the relay runs before storing entries it was sent."""
    base = [_coerce(e) for e in entries]
    added = [_coerce(e) for e in new]
    state = verify_log(base + added, names_key)
    for e in added:
        reason = state.void.get(e.hash_hex)
        if reason:
            raise MembershipError(f"{e.short} refused: {reason}")
    return state


# ---------------------------------------------------------------- making entries


def _sign(signer: Signer, space: bytes, kind: str, data: dict[str, Any], parents: list[bytes],
          counter: int, now_ms: int, version: int = ENTRY_FORMAT) -> Entry:
    body = {"v": version, "space": space, "kind": kind, "author": signer.device_id,
            "parents": sorted(parents), "counter": counter, "time": int(now_ms), "data": data}
    body_bytes = encode(body)
    sig = signer.sign(_SIGN_DOMAIN + body_bytes)
    return Entry.from_wire(encode({"body": body_bytes, "sig": sig}))


def new_genesis(signer: Signer, *, name: str, member_name: str, now_ms: int,
                kind: str = "team", relay: str | Sequence[str] | None = None,
                member_id: str | None = None,
                space_id: bytes | None = None, device_limit: int = DEFAULT_DEVICE_LIMIT,
                model: int = MODEL_VERSION, names_key: bytes | None = None) -> Entry:
    """The first entry of a new space: `signer`'s device is its first admin device.

    With `names_key` (derived from the space's generation-1 content key: pass `space_id`
    too) the names are sealed (format 2), so the relay that stores the log cannot read them;
    without, they are text (format 1: tools and tests)."""
    space = space_id or new_space_id()
    mid = member_id or new_member_id()
    device = signer.public.to_cbor()
    version = ENTRY_FORMAT
    if names_key is not None:
        version = SEALED_NAMES_FORMAT
        name = seal_name(names_key, space, "space", "", name)  # type: ignore[assignment]
        member_name = seal_name(names_key, space, "member", mid, member_name)  # type: ignore[assignment]
        device["name"] = seal_name(names_key, space, "device", device["id"], device["name"])
    relays = as_relays(relay)
    problem = relays_problem(relays)
    if problem:
        raise MembershipError(f"the space {problem}")
    data = {"name": name, "space_kind": kind, "relay": relays_wire(relays),
            "member": {"id": mid, "name": member_name},
            "device": device, "model": model, "device_limit": device_limit}
    return _sign(signer, space, "genesis", data, [], 0, now_ms, version)


def sign_entry(signer: Signer, state: SpaceState, kind: str, data: dict[str, Any], *,
               now_ms: int, version: int = ENTRY_FORMAT) -> Entry:
    """A new entry of `kind` building on every current head of `state`."""
    if kind == "genesis" or kind not in KINDS:
        raise MembershipError(f"cannot append an entry of kind {kind!r}")
    return _sign(signer, state.space_id_bytes, kind, data, list(state.heads), state.next_counter,
                 now_ms, version)


def add_member(signer: Signer, state: SpaceState, *, member_id: str, name: str, role: str,
               now_ms: int, names_key: bytes | None = None) -> Entry:
    """Add a member; with `names_key` its name is sealed (format 2, see `new_genesis`)."""
    version, sealed = ENTRY_FORMAT, name
    if names_key is not None:
        version = SEALED_NAMES_FORMAT
        sealed = seal_name(names_key, state.space_id_bytes, "member", member_id, name)  # type: ignore[assignment]
    return sign_entry(signer, state, "add_member",
                      {"member": {"id": member_id, "name": sealed}, "role": role}, now_ms=now_ms,
                      version=version)


def add_device(signer: Signer, state: SpaceState, *, member_id: str, device: DevicePublic,
               sealed_key: tuple[int, bytes] | None, now_ms: int,
               names_key: bytes | None = None) -> Entry:
    """Add a device; with `names_key` its name is sealed (format 2, see `new_genesis`)."""
    key = None if sealed_key is None else {"gen": sealed_key[0], "sealed": sealed_key[1]}
    rec = device.to_cbor()
    version = ENTRY_FORMAT
    if names_key is not None:
        version = SEALED_NAMES_FORMAT
        rec["name"] = seal_name(names_key, state.space_id_bytes, "device", device.device_id,
                                device.name)
    return sign_entry(signer, state, "add_device",
                      {"member": member_id, "device": rec, "key": key}, now_ms=now_ms,
                      version=version)


def remove_device(signer: Signer, state: SpaceState, *, device_id: str,
                  covers: Mapping[str, int], now_ms: int) -> Entry:
    return sign_entry(signer, state, "remove_device",
                      {"device": device_id, "covers": dict(covers)}, now_ms=now_ms)


def remove_member(signer: Signer, state: SpaceState, *, member_id: str,
                  covers: Mapping[str, Mapping[str, int]], now_ms: int) -> Entry:
    return sign_entry(signer, state, "remove_member",
                      {"member": member_id, "covers": {k: dict(v) for k, v in covers.items()}},
                      now_ms=now_ms)


def leave(signer: Signer, state: SpaceState, *, covers: Mapping[str, Mapping[str, int]],
          now_ms: int) -> Entry:
    """`signer`'s member leaves the space (all its devices), recording per device the last
    seq kept (`covers`, as `remove_member`). Refused here, before signing, when the signer is
    not an active device of the space."""
    member = state.member_of(signer.device_id)
    if member is None:
        raise MembershipError(f"this device is not a member of {state.name!r}; nothing to leave")
    return sign_entry(signer, state, "leave",
                      {"member": member.id, "covers": {k: dict(v) for k, v in covers.items()}},
                      now_ms=now_ms)


def set_role(signer: Signer, state: SpaceState, *, member_id: str, role: str, now_ms: int) -> Entry:
    return sign_entry(signer, state, "set_role", {"member": member_id, "role": role}, now_ms=now_ms)


def rotate_key(signer: Signer, state: SpaceState, *, generation: int,
               sealed: Mapping[str, bytes], now_ms: int) -> Entry:
    return sign_entry(signer, state, "rotate_key", {"gen": generation, "sealed": dict(sealed)},
                      now_ms=now_ms)


def migrate(signer: Signer, state: SpaceState, *, model: int, now_ms: int) -> Entry:
    return sign_entry(signer, state, "migrate", {"model": model}, now_ms=now_ms)


def set_relays(signer: Signer, state: SpaceState, *, relays: Sequence[str],
               now_ms: int) -> Entry:
    """The space's relay list from now on (1..MAX_SPACE_RELAYS addresses, preferred first);
    refused here, before signing, when the list is not one a genesis could name."""
    urls = as_relays(relays)
    problem = relays_problem(urls) if urls else f"must name 1..{MAX_SPACE_RELAYS} relays"
    if problem:
        raise MembershipError(f"the space's new relay list {problem}")
    return sign_entry(signer, state, "relays", {"relays": relays_wire(urls)}, now_ms=now_ms)


__all__ = [
    "DEFAULT_DEVICE_LIMIT",
    "Device",
    "Entry",
    "KINDS",
    "MAX_ENTRY_BYTES",
    "MAX_LOG_ENTRIES",
    "Member",
    "REMOVAL_KINDS",
    "ROLES",
    "Removal",
    "SPACE_KINDS",
    "Signer",
    "SpaceState",
    "add_device",
    "add_member",
    "extend_log",
    "leave",
    "migrate",
    "new_genesis",
    "new_member_id",
    "new_space_id",
    "remove_device",
    "remove_member",
    "rotate_key",
    "set_relays",
    "set_role",
    "sign_entry",
    "verify_log",
]
