"""What the relay decides (pure): who may use a space, what it may store, and the sentences.

Why pure: admission and quotas are the relay's whole authority, so they are plain functions of
values (a verified `SpaceState`, a `Plan`, counts) that tests can drive without sockets, and the
server only looks up the values and acts on the answer. Every refusal is a `Refusal(code,
reason)`: the code is for programs (the daemon picks its retry policy and its sentence by it),
the reason is a sentence a person can act on.

Codes:
| code                 | when                                                        | retry      |
| -------------------- | ----------------------------------------------------------- | ---------- |
| auth_refused         | unknown device, bad signature, no or bad membership log     | slow       |
| revoked              | the device was removed from the space                       | slow       |
| incompatible_version | protocol differs, or the space's model is newer than ours   | slow       |
| quota_envs           | the space already syncs the plan's number of environments   | per env    |
| quota_bytes          | an environment (declared size, or history held) is too big  | per env    |
| too_many_devices     | the member already has the plan's number of devices online  | normal     |
| too_many_connections | this device already holds MAX_CONNECTIONS_PER_DEVICE        | normal     |
| server_full          | the relay holds its maximum number of sessions              | normal     |
| not_member           | a request names a space the session was not admitted to     | -          |
| not_online           | a signal's recipient is not connected                       | -          |
| bad_message          | malformed frame, unknown kind, message out of place         | normal     |
| bad_envelope         | an envelope naming a device the space does not know         | -          |
| slow_consumer        | the session's outgoing queue overflowed (it catches up)     | normal     |
| shutting_down        | the relay is stopping                                       | normal     |
| timeout              | the handshake took longer than AUTH_TIMEOUT_S, or the device | normal     |
|                      | answered nothing for relay.session.STALL_TIMEOUT_S (reaped)  |            |
| compacted            | a fetch needs change sets dropped after a snapshot          | snapshot   |
| bad_snapshot         | a snapshot upload was refused (signature, size, coverage)   | -          |
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..space.membership import SpaceState
from ..space.quotas import Plan, check_device_online, check_env_size, check_share, human_bytes
from ..space.writers import REMOVED, judge_change

#: Cap on ciphertext held per environment, as a multiple of the plan's environment size: the
#: relay keeps the whole history (it cannot compact what it cannot read), so an environment
#: may accumulate this much before further change sets are refused with `quota_bytes`.
STORED_BYTES_FACTOR = 8

CODES = (
    "auth_refused", "revoked", "incompatible_version", "quota_envs", "quota_bytes",
    "too_many_devices", "too_many_connections", "server_full", "not_member", "not_online",
    "bad_message", "bad_envelope", "slow_consumer", "shutting_down", "timeout",
    "relay_key_changed",
    # compaction (relay.snapshots): a fetch below what was dropped; a refused snapshot
    "compacted", "bad_snapshot",
)
#: Codes after which retrying soon cannot help: a person must act first.
PERSISTENT_CODES = frozenset({"auth_refused", "revoked", "incompatible_version",
                              "relay_key_changed"})
# Which refusal a session reports when every space was refused: the most actionable first.
_PRECEDENCE = ("incompatible_version", "revoked", "too_many_devices", "auth_refused")


@dataclass(frozen=True)
class Refusal:
    code: str
    reason: str

    def __str__(self) -> str:
        return self.reason


def protocol_refusal(relay_protocol: int, client_protocol: int) -> Refusal | None:
    if relay_protocol == client_protocol:
        return None
    action = ("update mocksync" if relay_protocol > client_protocol
              else "the relay runs an older mocksync; ask its operator to update it")
    return Refusal("incompatible_version", (
        f"incompatible version: the relay speaks protocol {relay_protocol} and this device "
        f"{client_protocol}; {action}"
    ))


def space_label(state: SpaceState | None, space: str) -> str:
    """How the relay names a space in refusals and its log: by id only. Space names are
    sealed for members (`space.names`); even an older log with names in the clear must not
    have them repeated in the relay's log output."""
    return f"space {(state.space_id if state is not None else space)[:12]}"


def admit(state: SpaceState | None, space: str, device: str, *, model: int, plan: Plan,
          member_online: Collection[str]) -> Refusal | None:
    """May `device` (claiming register model `model`) use `space` now?

    `member_online`: the devices of the same member already online in this space."""
    label = space_label(state, space)
    if state is None:
        return Refusal("auth_refused", (
            f"auth refused: the relay has no membership log for {label}; "
            "a member device must connect first"
        ))
    removal = state.removed_devices.get(device)
    if removal is not None:
        return Refusal("revoked", (
            f"revoked: this device was removed from {label} by an admin; "
            "ask an admin to invite it again if that was a mistake"
        ))
    if device not in state.devices:
        return Refusal("auth_refused", (
            f"auth refused: device {device} is not a member of {label}"
        ))
    if model < state.model:
        return Refusal("incompatible_version", (
            f"incompatible version: this space was migrated to model {state.model}; update mocksync"
        ))
    d = check_device_online(plan, member_online, device)
    if not d.ok:
        return Refusal("too_many_devices", f"{d.reason} ({label})")
    return None


def session_refusal(refusals: Mapping[str, Refusal]) -> Refusal:
    """The one refusal reported when no space was admitted (the most actionable)."""
    found = list(refusals.values())
    if not found:
        return Refusal("auth_refused", "auth refused: the hello named no space")
    for code in _PRECEDENCE:
        for r in found:
            if r.code == code:
                return r
    return found[0]


def check_put(plan: Plan, *, env_count: int, known_env: bool, declared_bytes: int,
              stored_bytes: int, adding_bytes: int) -> Refusal | None:
    """May one put of `adding_bytes` of ciphertext for one environment be stored?

    `env_count`: environments (tags) the space has on the relay; `known_env`: this one among
    them; `declared_bytes`: the environment's compact-JSON size as its uploader declares it;
    `stored_bytes`: ciphertext already held for it."""
    if not known_env:
        d = check_share(plan, env_count, declared_bytes)
        if not d.ok:
            code = "quota_envs" if env_count >= plan.max_envs else "quota_bytes"
            return Refusal(code, d.reason)
    else:
        d = check_env_size(plan, declared_bytes)
        if not d.ok:
            return Refusal("quota_bytes", d.reason)
    cap = STORED_BYTES_FACTOR * plan.max_env_bytes
    if stored_bytes + adding_bytes > cap:
        return Refusal("quota_bytes", (
            f"quota exceeded: the relay holds {human_bytes(stored_bytes)} of history for this "
            f"environment and the {plan.name} plan allows {human_bytes(cap)} "
            f"({STORED_BYTES_FACTOR} x {human_bytes(plan.max_env_bytes)}); new edits stay on "
            "this device and sync with peers directly"
        ))
    return None


def counted_env(held_declared: int | None, declared: int) -> bool:
    """Does a put (declaring `declared` bytes) go to an environment the count quota already
    counts? `held_declared`: what the relay holds for it (None: never seen). A tombstoned
    environment (declared 0) frees its slot, so a put that makes it live again is judged as
    a new share; a tombstone and late edits under it (declared 0) need no slot and pass.
    (Declared sizes are the uploader's word, as every quota here: the relay cannot read.)"""
    return declared == 0 or (held_declared is not None and held_declared > 0)


def unknown_device(state: SpaceState, device: str) -> Refusal | None:
    """An envelope may only name a device the space has known (active, or removed with its
    cut); `foreign_slot` then requires that device to be the uploader."""
    if device in state.devices or device in state.removed_devices:
        return None
    return Refusal("bad_envelope", (
        f"an envelope names device {device}, which is not a device of {space_label(state, '')}"
    ))


def foreign_slot(uploader: str, envelope: Any) -> Refusal | None:
    """A device's slot is its own (issue 12): the relay stores an envelope for device D only
    when D itself uploads it. The relay cannot open an envelope to check the change set's
    signature, so the session's authentication (D's key from the verified membership log,
    answering this relay's challenge) is the signature that counts; and since an occupied slot
    keeps its first envelope, accepting anyone else's upload would let any member squat the
    next seq of a teammate's chain and block it for every device fetching from the relay.
    Change sets of other devices still travel between peers over the LAN, where each is
    verified against its author's key."""
    if envelope.device == uploader:
        return None
    return Refusal("bad_envelope", (
        f"envelope {envelope.device}#{envelope.seq} was uploaded by device {uploader}: a device "
        "may store only its own change sets on the relay (each device's slot is its own)"))


def refused_writer(state: SpaceState, tag: str, envelope: Any) -> Refusal | None:
    """The same decision every member makes (`space.writers.judge_change`): a removed
    device's change sets after its removal cut are refused here too, so the relay never
    stores what members would refuse (and members never diverge over it)."""
    v = judge_change(state, envelope.device, tag, envelope.seq)
    if v.accept:
        return None
    return Refusal("revoked" if v.code == REMOVED else "bad_envelope",
                   f"envelope {envelope.device}#{envelope.seq}: {v.reason}")


class TokenBucket:
    """Per-device message rate: `rate` messages a second on average, bursts up to `burst`.

    `take(now)` spends one token and returns how long the caller must wait first (0 when a
    token was available). The relay waits that long before reading the device's next message,
    so a device over its rate is slowed down, never answered out of order or dropped."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a message rate needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


__all__ = [
    "CODES",
    "foreign_slot",
    "refused_writer",
    "TokenBucket",
    "PERSISTENT_CODES",
    "Refusal",
    "STORED_BYTES_FACTOR",
    "admit",
    "check_put",
    "counted_env",
    "protocol_refusal",
    "session_refusal",
    "space_label",
    "unknown_device",
]
