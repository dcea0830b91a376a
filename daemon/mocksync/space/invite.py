"""One-time, expiring invites and the join handshake (pure state machines).

Why tokens carry a secret and the handshake never sends it: a token travels over chat or email,
so anyone who sees it later must not be able to use it (docs/design/security.md §6). The joiner proves it
knows the 128-bit secret with an HMAC over a transcript that binds both sides' fresh nonces and
its own public keys; the inviting admin device checks the proof, that the invite is unused and
unexpired, then admits the device with signed `add_member`/`add_device` entries and seals the
space's content keys to the joiner's X25519 key. The admin's welcome is MACed with the same
secret, so a middleman who never saw the token can neither join nor impersonate the admin.

Only the inviting device knows the secret (it keeps the book of issued invites), so it is the
admin device that must be reachable when the joiner runs `mocksync join`.

Token text: `mocksync1-` + lowercase RFC 4648 base32 (no padding) of
`canonical CBOR {v, space, name, relay, inviter, secret, expires, role, member} | checksum:4`,
where `relay` is None, one URL (the only form before issue 17) or a list of the space's
relays, which the joiner tries all at once (`space.fields.read_relays`).
Base32 survives double-click selection, case changes and most chat clients; the checksum turns
a mangled paste into a clear "damaged" message instead of a confusing refusal. The fields other
than the secret are hints for the joiner: the admin only trusts its own record of the invite
(an edited role or expiry changes nothing).

Handshake messages (canonical CBOR maps, field "t" names the kind):
    joiner -> admin  join-hello     {invite: id, space, nonce}
    admin  -> joiner join-challenge {nonce}
    joiner -> admin  join-proof     {device: {id,name,sign,box}, member_name, proof, sig}
    admin  -> joiner join-welcome   {log: [entries], keys: {gen: sealed key}, member, mac}
    admin  -> joiner join-refused   {reason}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..changes.canonical import decode, encode
from ..errors import ChangeSetError, MocksyncError
from ..wire import Bytes, Int, Nullable, Record, Text, wire
from .errors import (
    InviteError,
    InviteExpiredError,
    InviteUsedError,
    JoinRefusedError,
)
from .fields import (
    MAX_INT,
    MAX_SPACE_RELAYS,
    MAX_URL_CHARS,
    NAME,
    RELAYS,
    OneOf,
    Satisfies,
    as_relays,
    exact_map,
    get_bytes,
    get_name,
    get_str,
    read_record,
    relays_problem,
    relays_wire,
)
from .identity import ID_TEXT_CHARS, DevicePublic, Identity, is_device_id, verify_signature
from .keys import open_content_key, seal_content_key
from .membership import (
    MAX_LOG_ENTRIES,
    MEMBER_ID,
    ROLES,
    Entry,
    SpaceState,
    add_device,
    add_member,
    extend_log,
    new_member_id,
    verify_log,
)
from .names import names_key
from .standing import name_taken

TOKEN_PREFIX = "mocksync1-"
TOKEN_FORMAT = 1
SECRET_BYTES = 16
INVITE_ID_BYTES = 8
CHECKSUM_BYTES = 4
#: Longest token text accepted. The longest real token (every field at its longest and
#: MAX_SPACE_RELAYS relay URLs of MAX_URL_CHARS each) is about 2,320 characters
#: (tests/test_space_relays.py); base32 costs 8/5 of each relay's bytes.
MAX_TOKEN_CHARS = 1024 + MAX_SPACE_RELAYS * MAX_URL_CHARS * 8 // 5
MIN_INVITE_LIFETIME_S = 60
DEFAULT_INVITE_LIFETIME_S = 24 * 3600
MAX_INVITE_LIFETIME_S = 30 * 24 * 3600
#: Unused, unexpired invites one space may have at once.
MAX_OUTSTANDING_INVITES = 100
#: Invite records kept per space (used ones are kept so a replay gets a clear "already used").
MAX_INVITE_RECORDS = 1000
NONCE_BYTES = 16
MAC_BYTES = 32
#: Largest handshake message other than the welcome.
MAX_MESSAGE_BYTES = 16 * 1024
#: Largest welcome (it carries the whole membership log).
MAX_WELCOME_BYTES = 8 * 1024 * 1024
#: Content-key generations a welcome may carry.
MAX_WELCOME_KEYS = 10_000

_ID_DOMAIN = b"mocksync/invite-id/v1\x00"
_CHECK_DOMAIN = b"mocksync/invite-checksum/v1\x00"
_PROOF_INFO = b"mocksync/join-proof/v1\x00"
_WELCOME_INFO = b"mocksync/join-welcome/v1\x00"
_DEVICE_SIG_DOMAIN = b"mocksync/join-device/v1\x00"


@dataclass(frozen=True, slots=True)
class _TokenFields(Record):
    """An invite token's payload as the wire schema checks it (`InviteToken.to_cbor` writes
    it; tests/test_space_wire_golden.py pins the bytes)."""

    v: int = wire("v", Int(TOKEN_FORMAT, TOKEN_FORMAT))
    space: bytes = wire("space", Bytes(16, 16))
    name: str = wire("name", NAME)
    relays: tuple[str, ...] = wire("relay", RELAYS)
    inviter: str = wire("inviter", Satisfies(Text(ID_TEXT_CHARS), is_device_id,
                                             "is not a valid device id"))
    secret: bytes = wire("secret", Bytes(SECRET_BYTES, SECRET_BYTES))
    expires: int = wire("expires", Int(0, MAX_INT))
    role: str = wire("role", OneOf(ROLES))
    member: str | None = wire("member", Nullable(MEMBER_ID))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def invite_id_of(secret: bytes) -> str:
    """The public name of an invite: a hash of its secret (so it reveals nothing of it)."""
    return hashlib.sha256(_ID_DOMAIN + secret).digest()[:INVITE_ID_BYTES].hex()


def _subkey(secret: bytes, info: bytes) -> bytes:
    return hmac.new(secret, info, hashlib.sha256).digest()


# ---------------------------------------------------------------- the token


@dataclass(frozen=True)
class InviteToken:
    space: bytes
    name: str
    relay: str | None
    inviter: str
    secret: bytes = field(repr=False)
    expires: int
    role: str
    member: str | None
    #: Further relays after `relay`, in order (issue 17); the joiner tries every one.
    relay_more: tuple[str, ...] = ()

    @property
    def relays(self) -> tuple[str, ...]:
        """Every relay the joiner may reach the inviting device through, preferred first."""
        return ((self.relay,) if self.relay is not None else ()) + self.relay_more

    @property
    def invite_id(self) -> str:
        return invite_id_of(self.secret)

    @property
    def space_id(self) -> str:
        return self.space.hex()

    def to_cbor(self) -> dict[str, Any]:
        return {"v": TOKEN_FORMAT, "space": self.space, "name": self.name,
                "relay": relays_wire(self.relays),
                "inviter": self.inviter, "secret": self.secret, "expires": self.expires,
                "role": self.role, "member": self.member}

    def encode(self) -> str:
        payload = encode(self.to_cbor())
        blob = payload + hashlib.sha256(_CHECK_DOMAIN + payload).digest()[:CHECKSUM_BYTES]
        return TOKEN_PREFIX + base64.b32encode(blob).decode("ascii").rstrip("=").lower()

    @classmethod
    def parse(cls, text: str) -> InviteToken:
        """Parse pasted token text; InviteError with a clear sentence if it is not one."""
        if not isinstance(text, str):
            raise InviteError("an invite token is text starting with mocksync1-")
        if len(text) > MAX_TOKEN_CHARS:
            raise InviteError(f"this is {len(text)} characters, too long to be an invite token")
        compact = "".join(text.split())
        if not compact.lower().startswith(TOKEN_PREFIX):
            raise InviteError("this is not a mocksync invite token (it should start with mocksync1-)")
        body = compact[len(TOKEN_PREFIX):].upper()
        try:
            blob = base64.b32decode(body + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError):
            raise InviteError(
                "the invite token is damaged (a character is wrong or it was cut short); copy it again"
            ) from None
        payload, check = blob[:-CHECKSUM_BYTES], blob[-CHECKSUM_BYTES:]
        if len(blob) <= CHECKSUM_BYTES or not hmac.compare_digest(
            hashlib.sha256(_CHECK_DOMAIN + payload).digest()[:CHECKSUM_BYTES], check
        ):
            raise InviteError(
                "the invite token is damaged (a character is wrong or it was cut short); copy it again"
            )
        try:
            obj = decode(payload, what="invite token")
        except ChangeSetError as exc:
            raise InviteError(str(exc)) from None
        return cls.from_cbor(obj)

    @classmethod
    def from_cbor(cls, obj: Any) -> InviteToken:
        t = read_record(_TokenFields, obj, "invite token", InviteError)
        return cls(t.space, t.name, t.relays[0] if t.relays else None, t.inviter, t.secret,
                   t.expires, t.role, t.member, t.relays[1:])

    def check_fresh(self, now: float) -> None:
        """Refuse an expired token locally, before reaching for any admin device."""
        if now >= self.expires:
            raise InviteExpiredError(
                f"this invite to {self.name!r} expired at {_when(self.expires)}; "
                "ask an admin of the space for a new one"
            )


# ---------------------------------------------------------------- the inviter's book


@dataclass(frozen=True)
class IssuedInvite:
    invite_id: str
    space_id: str
    secret: bytes = field(repr=False)
    role: str
    member: str | None
    created: float
    expires: int
    used_at: float | None = None
    used_by: str | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"invite_id": self.invite_id, "space_id": self.space_id,
                "secret": base64.b64encode(self.secret).decode(), "role": self.role,
                "member": self.member, "created": self.created, "expires": self.expires,
                "used_at": self.used_at, "used_by": self.used_by}

    @classmethod
    def from_doc(cls, d: Mapping[str, Any]) -> IssuedInvite:
        return cls(d["invite_id"], d["space_id"], base64.b64decode(d["secret"]), d["role"],
                   d.get("member"), float(d["created"]), int(d["expires"]), d.get("used_at"),
                   d.get("used_by"))


class InviteBook:
    """The invites one device has issued for one space: outstanding and used."""

    def __init__(self, space_id: str, records: Iterable[IssuedInvite] = ()) -> None:
        self.space_id = space_id
        self._by_id: dict[str, IssuedInvite] = {r.invite_id: r for r in records}

    def records(self) -> list[IssuedInvite]:
        return sorted(self._by_id.values(), key=lambda r: (r.created, r.invite_id))

    def get(self, invite_id: str) -> IssuedInvite | None:
        return self._by_id.get(invite_id)

    def outstanding(self, now: float) -> list[IssuedInvite]:
        return [r for r in self.records() if r.used_at is None and now < r.expires]

    def used(self) -> list[IssuedInvite]:
        return [r for r in self.records() if r.used_at is not None]

    def issue(self, state: SpaceState, inviter: Identity, *, now: float, role: str = "editor",
              own_device: bool = False, lifetime_s: int = DEFAULT_INVITE_LIFETIME_S,
              secret: bytes | None = None, relay: str | Sequence[str] | None = None
              ) -> tuple[IssuedInvite, InviteToken]:
        """Issue a one-time invite. `own_device` (always so in a personal space) admits another
        device of the inviter's own member instead of a new member. `relay` (one URL or
        several): where the joiner reaches this device when the space names no relay of its
        own (a personal space is reachable through the relays the inviter's daemon uses)."""
        if state.space_id != self.space_id:
            raise InviteError("this invite book belongs to another space")
        if not state.is_admin(inviter.device_id):
            raise InviteError(f"only an admin device can invite; this device is not an admin of {state.name!r}")
        if role not in ROLES:
            raise InviteError(f"role must be one of {', '.join(ROLES)}")
        fallback = as_relays(relay)
        problem = relays_problem(fallback)
        if problem:
            raise InviteError(f"the invite {problem}")
        if not isinstance(lifetime_s, int) or not MIN_INVITE_LIFETIME_S <= lifetime_s <= MAX_INVITE_LIFETIME_S:
            raise InviteError(
                f"an invite lives between {MIN_INVITE_LIFETIME_S} s and {MAX_INVITE_LIFETIME_S // 86400} days"
            )
        if len(self.outstanding(now)) >= MAX_OUTSTANDING_INVITES:
            raise InviteError(
                f"space {state.name!r} already has {MAX_OUTSTANDING_INVITES} unused invites, the limit; "
                "wait for some to expire"
            )
        member = None
        if own_device or state.kind == "personal":
            owner = state.member_of(inviter.device_id)
            assert owner is not None
            if len(owner.devices) >= state.device_limit:
                raise InviteError(
                    f"member {owner.name} already has {len(owner.devices)} devices registered, the "
                    f"most this space allows per member ({state.device_limit}); remove one with "
                    "`mocksync remove` first"
                )
            member = owner.id
            role = owner.role
        secret = secret or os.urandom(SECRET_BYTES)
        rec = IssuedInvite(invite_id_of(secret), self.space_id, secret, role, member, now,
                           int(now + lifetime_s))
        self._by_id[rec.invite_id] = rec
        self._prune()
        relays = state.relays or fallback
        token = InviteToken(state.space_id_bytes, state.name, relays[0] if relays else None,
                            inviter.device_id, secret, rec.expires, role, member, relays[1:])
        return rec, token

    def _prune(self) -> None:
        if len(self._by_id) <= MAX_INVITE_RECORDS:
            return
        for r in sorted(self._by_id.values(), key=lambda r: (r.used_at is None, r.created)):
            if len(self._by_id) <= MAX_INVITE_RECORDS:
                break
            del self._by_id[r.invite_id]

    def usable(self, invite_id: str, now: float) -> IssuedInvite:
        """The record of an invite that may still admit a device, or a clear refusal."""
        rec = self._by_id.get(invite_id)
        if rec is None:
            raise InviteError(
                "this invite is unknown to the inviting device (it was never issued, was issued "
                "by another device, or the token was altered)"
            )
        if rec.used_at is not None:
            raise InviteUsedError(
                f"this invite was already used (by device {rec.used_by} at {_when(rec.used_at)}); "
                "invites admit one device only: ask an admin for a new one"
            )
        if now >= rec.expires:
            raise InviteExpiredError(
                f"this invite expired at {_when(rec.expires)}; ask an admin for a new one"
            )
        return rec

    def mark_used(self, invite_id: str, device_id: str, now: float) -> None:
        rec = self.usable(invite_id, now)
        self._by_id[invite_id] = replace(rec, used_at=now, used_by=device_id)


# ---------------------------------------------------------------- handshake messages


def _decode_msg(data: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InviteError("join message: expected bytes")
    if len(data) > max_bytes:
        raise InviteError(f"join message of {len(data)} bytes is over the {max_bytes} byte limit")
    try:
        obj = decode(bytes(data), what="join message")
    except ChangeSetError as exc:
        raise InviteError(str(exc)) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise InviteError("join message: not a map with a kind field 't'")
    return obj


def _msg(kind: str, **fields: Any) -> bytes:
    return encode({"t": kind, **fields})


def refused(reason: str) -> bytes:
    return _msg("join-refused", reason=reason[:500])


def _transcript(invite_id: bytes, space: bytes, joiner_nonce: bytes, admin_nonce: bytes,
                device: DevicePublic, member_name: str) -> bytes:
    return encode({"invite": invite_id, "space": space, "jn": joiner_nonce, "an": admin_nonce,
                   "device": device.to_cbor(), "member_name": member_name})


def _welcome_mac(secret: bytes, transcript: bytes, log: list[bytes], keys: Mapping[int, bytes],
                 member: str) -> bytes:
    digest = hashlib.sha256(encode({"log": log, "keys": dict(keys), "member": member})).digest()
    return hmac.new(_subkey(secret, _WELCOME_INFO), hashlib.sha256(transcript).digest() + digest,
                    hashlib.sha256).digest()


@dataclass(frozen=True)
class JoinResult:
    """What a joiner ends with: the verified log, the state it proves and the content keys."""

    entries: list[Entry]
    state: SpaceState
    keys: dict[int, bytes] = field(repr=False)
    member_id: str


class JoinerSession:
    """The joining device's side of the handshake. Feed it messages, send what it returns."""

    def __init__(self, token: InviteToken, identity: Identity, *, member_name: str | None = None,
                 nonce: bytes | None = None) -> None:
        self.token = token
        self.identity = identity
        self.member_name = member_name or identity.member_name
        self.nonce = nonce or os.urandom(NONCE_BYTES)
        self.state = "new"
        self.result: JoinResult | None = None
        self.error: str | None = None
        self._transcript = b""

    def start(self, now: float) -> bytes:
        if self.state != "new":
            raise InviteError("the join handshake was already started")
        try:
            self.token.check_fresh(now)
        except InviteError as exc:
            self._fail(str(exc))
            raise
        self.state = "hello-sent"
        return _msg("join-hello", invite=bytes.fromhex(self.token.invite_id),
                    space=self.token.space, nonce=self.nonce)

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.error = reason

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Handle one message from the admin; returns messages to send back. Raises an
        InviteError (and moves to "failed") on refusal or on anything out of protocol."""
        if self.state in ("joined", "failed", "new"):
            raise InviteError(f"no message expected in state {self.state}")
        try:
            msg = _decode_msg(data, MAX_WELCOME_BYTES)
            kind = msg["t"]
            if kind == "join-refused":
                d = exact_map(msg, {"t", "reason"}, "join refusal", InviteError)
                reason = get_str(d, "reason", "join refusal", InviteError, max_chars=500)
                raise JoinRefusedError(f"the admin device refused: {reason}")
            if self.state == "hello-sent" and kind == "join-challenge":
                return [self._on_challenge(msg)]
            if self.state == "proof-sent" and kind == "join-welcome":
                self._on_welcome(msg)
                return []
            raise InviteError(f"unexpected join message {kind[:40]!r} in state {self.state}")
        except MocksyncError as exc:
            self._fail(str(exc))
            raise

    def _on_challenge(self, msg: dict[str, Any]) -> bytes:
        d = exact_map(msg, {"t", "nonce"}, "join challenge", InviteError)
        admin_nonce = get_bytes(d, "nonce", "join challenge", InviteError, length=NONCE_BYTES)
        device = self.identity.public
        self._transcript = _transcript(bytes.fromhex(self.token.invite_id), self.token.space,
                                       self.nonce, admin_nonce, device, self.member_name)
        proof = hmac.new(_subkey(self.token.secret, _PROOF_INFO), self._transcript,
                         hashlib.sha256).digest()
        sig = self.identity.sign(_DEVICE_SIG_DOMAIN + self._transcript)
        self.state = "proof-sent"
        return _msg("join-proof", device=device.to_cbor(), member_name=self.member_name,
                    proof=proof, sig=sig)

    def _on_welcome(self, msg: dict[str, Any]) -> None:
        what = "join welcome"
        d = exact_map(msg, {"t", "log", "keys", "member", "mac"}, what, InviteError)
        log = d["log"]
        if not isinstance(log, list) or not 1 <= len(log) <= MAX_LOG_ENTRIES:
            raise InviteError(f"{what}: the log must be a list of 1..{MAX_LOG_ENTRIES} entries")
        if not all(isinstance(x, bytes) for x in log):
            raise InviteError(f"{what}: log entries must be bytes")
        keys = d["keys"]
        if not isinstance(keys, dict) or not 1 <= len(keys) <= MAX_WELCOME_KEYS:
            raise InviteError(f"{what}: keys must map generations to sealed keys")
        for g, blob in keys.items():
            if not isinstance(g, int) or isinstance(g, bool) or g < 1 or not isinstance(blob, bytes):
                raise InviteError(f"{what}: keys must map generations to sealed keys")
        member = get_str(d, "member", what, InviteError, max_chars=16)
        mac = get_bytes(d, "mac", what, InviteError, length=MAC_BYTES)
        if not hmac.compare_digest(mac, _welcome_mac(self.token.secret, self._transcript, log,
                                                     keys, member)):
            raise InviteError(
                "the welcome did not come from the inviting device (its proof of the invite "
                "secret is wrong); someone may be in the middle"
            )
        entries = [Entry.from_wire(x) for x in log]
        state = verify_log(entries)
        if state.space_id_bytes != self.token.space:
            raise InviteError("the welcome carries the log of a different space than the invite")
        me = self.identity.device_id
        if not state.is_member(me) or state.devices[me].member != member:
            raise InviteError("the welcome's log does not admit this device")
        if state.devices[me].box_key != self.identity.box_public:
            raise InviteError("the welcome's log names this device with another sealing key")
        if not state.is_admin(self.token.inviter):
            raise InviteError("the inviting device is not an admin in the welcome's log")
        opened = {g: open_content_key(self.identity.box_key, self.token.space, g, blob)
                  for g, blob in keys.items()}
        if state.key_generation not in opened:
            raise InviteError(
                f"the welcome lacks the current content key (generation {state.key_generation})"
            )
        # Now the names in the log can be read (sealed with a key derived from generation 1).
        state = verify_log(entries, names_key(self.token.space, opened))
        self.result = JoinResult(entries, state, opened, member)
        self.state = "joined"


@dataclass(frozen=True)
class Admission:
    """A device admitted by an admin: the entries to store and broadcast."""

    invite_id: str
    device_id: str
    member_id: str
    new_entries: list[Entry]
    state: SpaceState


@dataclass(frozen=True)
class Refusal:
    reason: str


class AdminSession:
    """The inviting admin device's side of one join handshake.

    Never raises for anything the joiner sends: every problem becomes a `join-refused` message
    and `outcome = Refusal(reason)`. On success `outcome` is an `Admission`, and the invite is
    marked used in `book` (the caller persists the book and the new entries)."""

    def __init__(self, identity: Identity, book: InviteBook, entries: Iterable[Entry],
                 keys: Mapping[int, bytes], *, nonce: bytes | None = None) -> None:
        self.identity = identity
        self.book = book
        self.entries = list(entries)
        self.keys = dict(keys)
        self.nonce = nonce or os.urandom(NONCE_BYTES)
        self.state = "await-hello"
        self.outcome: Admission | Refusal | None = None
        self._invite_id = b""
        self._joiner_nonce = b""

    def receive(self, data: bytes, now: float) -> list[bytes]:
        if self.state == "done":
            return []
        try:
            msg = _decode_msg(data, MAX_MESSAGE_BYTES)
            if self.state == "await-hello" and msg["t"] == "join-hello":
                return [self._on_hello(msg, now)]
            if self.state == "await-proof" and msg["t"] == "join-proof":
                return [self._on_proof(msg, now)]
            raise InviteError(f"unexpected join message {msg['t'][:40]!r}")
        except MocksyncError as exc:
            self.state = "done"
            self.outcome = Refusal(str(exc))
            return [refused(str(exc))]

    def _on_hello(self, msg: dict[str, Any], now: float) -> bytes:
        what = "join hello"
        d = exact_map(msg, {"t", "invite", "space", "nonce"}, what, InviteError)
        self._invite_id = get_bytes(d, "invite", what, InviteError, length=INVITE_ID_BYTES)
        space = get_bytes(d, "space", what, InviteError, length=16)
        self._joiner_nonce = get_bytes(d, "nonce", what, InviteError, length=NONCE_BYTES)
        rec = self.book.usable(self._invite_id.hex(), now)
        if space.hex() != rec.space_id or rec.space_id != self.book.space_id:
            raise InviteError("the invite is for a different space than the one asked for")
        self.state = "await-proof"
        return _msg("join-challenge", nonce=self.nonce)

    def _on_proof(self, msg: dict[str, Any], now: float) -> bytes:
        what = "join proof"
        d = exact_map(msg, {"t", "device", "member_name", "proof", "sig"}, what, InviteError)
        device = DevicePublic.from_cbor(d["device"], what + " device", InviteError)
        member_name = get_name(d, "member_name", what, InviteError)
        proof = get_bytes(d, "proof", what, InviteError, length=MAC_BYTES)
        sig = get_bytes(d, "sig", what, InviteError, length=64)
        rec = self.book.usable(self._invite_id.hex(), now)
        space = bytes.fromhex(rec.space_id)
        transcript = _transcript(self._invite_id, space, self._joiner_nonce, self.nonce, device,
                                 member_name)
        expected = hmac.new(_subkey(rec.secret, _PROOF_INFO), transcript, hashlib.sha256).digest()
        if not hmac.compare_digest(proof, expected):
            raise InviteError(
                "the join proof does not match the invite's secret (the token was altered or "
                "mistyped); the device was not admitted"
            )
        if not verify_signature(device.sign_key, _DEVICE_SIG_DOMAIN + transcript, sig):
            raise InviteError("the joining device did not prove it holds its signing key")

        nk = names_key(space, self.keys)  # the joiner's names go into the log sealed
        state = verify_log(self.entries, nk)
        me = self.identity.device_id
        if not state.is_admin(me):
            raise InviteError("the inviting device is no longer an admin of the space")
        # A removed device may be invited back: it rejoins its old member when that member is
        # still in the space (not as a second member of the same person), else a new member.
        removal = state.removed_devices.get(device.device_id)
        if state.is_member(device.device_id):
            raise InviteError(f"device {device.device_id} is already a member of this space")
        gen = state.key_generation
        if gen not in self.keys:
            raise InviteError("the inviting device lacks the current content key; it cannot admit")
        sealed = seal_content_key(device.box_key, space, gen, self.keys[gen])
        new: list[Entry] = []
        owner_id = rec.member
        if owner_id is None and removal is not None and removal.member in state.members:
            owner_id = removal.member
        if owner_id is not None:
            owner = state.members.get(owner_id)
            if owner is None:
                raise InviteError("the member this invite adds a device to is no longer in the space")
            if len(owner.devices) >= state.device_limit:
                raise InviteError(
                    f"member {owner.name} already has {len(owner.devices)} devices registered, the "
                    f"most this space allows per member ({state.device_limit}); remove one with "
                    "`mocksync remove` first"
                )
            member_id = owner.id
        else:
            taken = name_taken(state, member_name)
            if taken is not None:  # two members of one name made `members`/`who` ambiguous
                raise InviteError(
                    f"another member of {state.name!r} is already called {taken.name!r}; join "
                    "again with the same token and a name of your own: `mocksync join TOKEN "
                    "--member-name NAME`")
            member_id = new_member_id()
            new.append(add_member(self.identity, state, member_id=member_id, name=member_name,
                                  role=rec.role, now_ms=int(now * 1000), names_key=nk))
            state = extend_log(self.entries, new, nk)
        new.append(add_device(self.identity, state, member_id=member_id, device=device,
                              sealed_key=(gen, sealed), now_ms=int(now * 1000), names_key=nk))
        state = extend_log(self.entries, new, nk)
        self.book.mark_used(rec.invite_id, device.device_id, now)
        self.state = "done"
        self.outcome = Admission(rec.invite_id, device.device_id, member_id, new, state)
        log = [e.wire for e in self.entries + new]
        keys = {g: seal_content_key(device.box_key, space, g, k) for g, k in sorted(self.keys.items())}
        return _msg("join-welcome", log=log, keys=keys, member=member_id,
                    mac=_welcome_mac(rec.secret, transcript, log, keys, member_id))


def new_invite_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


__all__ = [
    "AdminSession",
    "Admission",
    "DEFAULT_INVITE_LIFETIME_S",
    "InviteBook",
    "InviteToken",
    "IssuedInvite",
    "JoinResult",
    "JoinerSession",
    "MAX_INVITE_LIFETIME_S",
    "Refusal",
    "TOKEN_PREFIX",
    "invite_id_of",
    "new_invite_secret",
]
