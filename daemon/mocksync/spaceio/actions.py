"""What the CLI (and later the daemon) does to spaces: load, decide with the pure modules,
persist. Each function is a short script over `identity`, `membership`, `keys`, `invite` and
`store`, so the commands stay thin and the same steps can run inside the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..paths import Home
from ..space.errors import MembershipError, SpaceNotFoundError
from ..space.fields import as_relays, check_name, relays_problem
from ..space.identity import ALPHABET, ID_SYMBOLS, Identity, parse_device_id
from ..space.invite import (
    DEFAULT_INVITE_LIFETIME_S,
    AdminSession,
    Admission,
    InviteToken,
    IssuedInvite,
    JoinResult,
)
from ..space.keys import new_content_key, rotate
from ..space.membership import (
    DEFAULT_DEVICE_LIMIT,
    Entry,
    SpaceState,
    extend_log,
    leave,
    new_genesis,
    new_space_id,
    remove_device,
    remove_member,
    rotate_key,
    set_relays,
)
from ..space.names import names_key
from .identityfiles import create_identity
from .store import (
    PERSONAL_SPACE_NAME,
    StoredSpace,
    add_space,
    append_entries,
    get_space,
    list_spaces,
    load_invite_book,
    rejoin_space,
    save_invite_book,
    set_local_relays,
)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def init_device(home: Home, *, name: str, member_name: str | None = None,
                now: float | None = None) -> tuple[Identity, StoredSpace]:
    """`mocksync init`: make this device's keys and its personal space."""
    ident = create_identity(home, name, member_name=member_name, now=_now(now))
    personal = create_space(home, ident, PERSONAL_SPACE_NAME, kind="personal", now=now)
    return ident, personal


def create_space(home: Home, identity: Identity, name: str, *, kind: str = "team",
                 relay: str | Sequence[str] | None = None,
                 device_limit: int = DEFAULT_DEVICE_LIMIT,
                 now: float | None = None) -> StoredSpace:
    """A new space with this device as its first admin device and a fresh content key.
    `relay`: the space's relay, or several (issue 17), preferred first."""
    check_name(name, "space name", MembershipError)
    problem = relays_problem(as_relays(relay))
    if problem:
        raise MembershipError(f"the space {problem}")
    for s in list_spaces(home):
        if s.name.casefold() == name.casefold():
            raise MembershipError(f"this device already belongs to a space named {s.name!r}; pick another name")
    t = _now(now)
    # Names go into the log sealed with a key only members hold (`space.names`): the relay
    # stores and verifies the log without reading who is in it.
    space_id, key = new_space_id(), new_content_key()
    genesis = new_genesis(identity, name=name, member_name=identity.member_name, kind=kind,
                          relay=relay, device_limit=device_limit, now_ms=int(t * 1000),
                          space_id=space_id, names_key=names_key(space_id, {1: key}))
    return add_space(home, [genesis], {1: key}, now=t)


def issue_invite(home: Home, identity: Identity, space: str, *, role: str = "editor",
                 lifetime_s: int = DEFAULT_INVITE_LIFETIME_S, own_device: bool = False,
                 relay: str | Sequence[str] | None = None, now: float | None = None
                 ) -> tuple[IssuedInvite, InviteToken]:
    """Issue an invite. `relay`: the relays this device's daemon uses, put in the token when
    the space names none (the personal space `init` makes), so the joiner can reach us."""
    sp = get_space(home, space)
    book = load_invite_book(home, sp.space_id)
    rec, token = book.issue(sp.state, identity, now=_now(now), role=role, own_device=own_device,
                            lifetime_s=lifetime_s, relay=relay)
    save_invite_book(home, book)
    return rec, token


@dataclass(frozen=True)
class Target:
    kind: str  # "device" | "member"
    id: str
    label: str
    devices: tuple[str, ...]


def _looks_like_device_id(text: str) -> bool:
    raw = "".join(ch for ch in text.upper() if ch not in "- \t")
    return len(raw) == ID_SYMBOLS and all(ch in ALPHABET or ch in "ILO" for ch in raw)


def resolve_target(state: SpaceState, text: str) -> Target:
    """A device (by id) or a member (by id or name) of the space, or a clear error."""
    if _looks_like_device_id(text):
        did = parse_device_id(text)  # a typo is reported as one, not as "no such member"
        if did in state.removed_devices:
            raise MembershipError(f"device {did} was already removed from {state.name!r}")
        dev = state.devices.get(did)
        if dev is None:
            raise MembershipError(f"device {did} is not in space {state.name!r}")
        member = state.members[dev.member]
        return Target("device", did, f"device {did} ({dev.name}) of {member.name}", (did,))
    hits = state.find_members(text)
    if not hits:
        raise MembershipError(
            f"space {state.name!r} has no member or device {text!r}; see `mocksync members {state.name}`"
        )
    if len(hits) > 1:
        ids = ", ".join(m.id for m in hits)
        raise MembershipError(f"{len(hits)} members are named {text!r} ({ids}); name one by its id")
    m = hits[0]
    return Target("member", m.id, f"member {m.name}", m.devices)


def seen_seqs(home: Home, device_id: str, space: StoredSpace | None = None) -> dict[str, int]:
    """The last seq of `device_id` this device has applied, per environment of `space`, keyed
    by env tag: the cut a removal records (docs/design/security.md §2, `space.writers`). Tags, not ids, so
    the relay applies the same cut and the log names no environment; only environments of
    `space` (another space's are none of this log's business). Without `space` (older
    callers), keyed by environment id."""
    if not home.log_db.exists():
        return {}
    from ..space.envtags import Tagger
    from ..store.log import Store

    tagger = Tagger(space.space_id, space.keys) if space is not None else None
    store = Store(home.log_db)
    try:
        cut = {}
        for env in store.envs():
            if space is not None and store.head_space(env) != space.space_id:
                continue
            seq = store.version_vector(env).get(device_id)
            if seq:
                cut[tagger(env) if tagger is not None else env] = seq
        return cut
    finally:
        store.close()


@dataclass(frozen=True)
class RemoveResult:
    target: Target
    generation: int
    space: StoredSpace


def remove(home: Home, identity: Identity, space: str, target_text: str, *,
           now: float | None = None) -> RemoveResult:
    """Remove a device or a member, recording what they wrote up to now, and rotate the key."""
    sp = get_space(home, space)
    state = sp.state
    if not state.is_admin(identity.device_id):
        raise MembershipError(f"only an admin device can remove; this device is not an admin of {state.name!r}")
    target = resolve_target(state, target_text)
    if identity.device_id in target.devices:
        # The key rotation that follows a removal must be signed by a device that stays, so a
        # removal of this very device (or of its own member) cannot be completed here.
        what = "itself" if target.kind == "device" else f"{target.label}, its own member,"
        raise MembershipError(
            f"this device cannot remove {what} from {state.name!r}: the new content key must "
            f"be signed by a device that stays; run `mocksync remove {state.name} "
            f"{target_text}` on another admin device of the space")
    t = _now(now)
    ms = int(t * 1000)
    if target.kind == "device":
        rm = remove_device(identity, state, device_id=target.id,
                           covers=seen_seqs(home, target.id, sp), now_ms=ms)
    else:
        rm = remove_member(identity, state, member_id=target.id,
                           covers={d: seen_seqs(home, d, sp) for d in target.devices},
                           now_ms=ms)
    after = extend_log(sp.entries, [rm])
    if max(sp.keys, default=0) != after.key_generation:
        raise MembershipError(
            f"this device lacks content key generation {after.key_generation} of {state.name!r}, "
            "so it cannot rotate it; run remove from another admin device"
        )
    recipients = {d.id: d.box_key for d in after.devices.values()}
    rot = rotate(sp.keys, after.space_id_bytes, recipients)
    rk = rotate_key(identity, after, generation=rot.generation, sealed=rot.sealed, now_ms=ms)
    stored = append_entries(home, sp.space_id, [rm, rk], {rot.generation: rot.key})
    return RemoveResult(target, rot.generation, stored)


def leave_space(home: Home, identity: Identity, space: str, *,
                now: float | None = None) -> StoredSpace:
    """`mocksync leave SPACE`: this device's member leaves the space on its own (a `leave`
    entry it signs; no admin needed). Local copies stay; the daemon stops syncing the space
    once it sees the entry, and an admin device that learns it rotates the content key.
    Refused, with nothing written: a personal space, a device that is no longer a member, the
    last admin (another member must be made an admin first)."""
    sp = get_space(home, space)
    state = sp.state
    member = state.member_of(identity.device_id)
    if member is None:
        raise MembershipError(f"this device is no longer a member of {state.name!r}; "
                              "there is nothing to leave")
    if state.kind == "personal":
        raise MembershipError(f"{state.name!r} is this device's personal space; it cannot be "
                              "left (remove a device of yours from it with `mocksync remove`)")
    others = [d for d in state.admin_devices() if d not in member.devices]
    if member.role == "admin" and not others:
        raise MembershipError(
            f"you are the last admin of {state.name!r}: it cannot be left without another "
            "admin; invite one with `mocksync invite "
            f"{state.name} --role admin` first")
    entry = leave(identity, state, now_ms=int(_now(now) * 1000),
                  covers={d: seen_seqs(home, d, sp) for d in member.devices})
    return append_entries(home, sp.space_id, [entry])


def rotator(state: SpaceState) -> str | None:
    """The one admin device that rotates the content key after a removal it did not sign (a
    member left): the first active admin device by id (pure). One device only, so two admins
    never sign rival rotations of the same generation (the later would be void everywhere)."""
    admins = state.admin_devices()
    return admins[0] if state.rotation_needed and admins else None


def rotate_if_needed(home: Home, identity: Identity, sp: StoredSpace, *,
                     now: float | None = None) -> list[Entry]:
    """After a `leave`: when this device is the space's `rotator` and holds the current key,
    seal a new generation to every remaining device and store it; the entries written (none
    when nothing was due). The removing admin rotates at once (`remove`), so this is for
    removals no admin signed."""
    state = sp.state
    if rotator(state) != identity.device_id or max(sp.keys, default=0) != state.key_generation:
        return []
    recipients = {d.id: d.box_key for d in state.devices.values()}
    rot = rotate(sp.keys, state.space_id_bytes, recipients)
    rk = rotate_key(identity, state, generation=rot.generation, sealed=rot.sealed,
                    now_ms=int(_now(now) * 1000))
    append_entries(home, sp.space_id, [rk], {rot.generation: rot.key})
    return [rk]


def move_relays(home: Home, identity: Identity, space: str, relays: Sequence[str], *,
                now: float | None = None) -> StoredSpace:
    """`space relays SPACE --set URL...`: sign the space's new relay list (admin only; the
    same checks as `space create --relay`). Refused, with nothing written, when this device
    is not an admin, the list is bad, or it is the list the space already names."""
    sp = get_space(home, space)
    state = sp.state
    if not state.is_admin(identity.device_id):
        raise MembershipError(
            f"only an admin device can change the relays of {state.name!r}; this device is not "
            "an admin of it (ask one to run `mocksync space relays "
            f"{state.name} --set URL`)")
    urls = tuple(relays)
    if urls == state.relays:
        raise MembershipError(f"space {state.name!r} already names exactly these relays; "
                              "nothing changed")
    entry = set_relays(identity, state, relays=urls, now_ms=int(_now(now) * 1000))
    return append_entries(home, sp.space_id, [entry])


def use_local_relays(home: Home, space: str, relays: Sequence[str]) -> StoredSpace:
    """`space relays SPACE --use URL...` (or none: `--forget-local`): the relays this device
    alone also syncs the space through, until the space's own list names them."""
    sp = get_space(home, space)
    return set_local_relays(home, sp.space_id, relays)


def admin_session(home: Home, identity: Identity, space: str) -> AdminSession:
    """An admin-side join session over this device's copy of a space (for the daemon)."""
    sp = get_space(home, space)
    return AdminSession(identity, load_invite_book(home, sp.space_id), sp.entries, sp.keys)


def record_admission(home: Home, session: AdminSession) -> StoredSpace:
    """Persist what an admin session decided: the invite marked used, the new entries."""
    outcome = session.outcome
    if not isinstance(outcome, Admission):
        raise MembershipError("the join session did not admit anyone; nothing to record")
    save_invite_book(home, session.book)
    return append_entries(home, outcome.state.space_id, outcome.new_entries)


def record_join(home: Home, result: JoinResult, device_id: str | None = None, *,
                now: float | None = None) -> StoredSpace:
    """Persist a space this device (`device_id`) has just joined, or rejoined after being
    removed: its old copy of the space is brought up to the welcome's log, keys kept. Without
    `device_id`, a space already held is refused as before."""
    if device_id is not None and belongs_to(home, result.state.space_id) is not None:
        return rejoin_space(home, result.entries, result.keys, device_id, now=now)
    return add_space(home, result.entries, result.keys, now=now)


def belongs_to(home: Home, space_id: str) -> StoredSpace | None:
    try:
        return get_space(home, space_id)
    except SpaceNotFoundError:
        return None


__all__ = [
    "PERSONAL_SPACE_NAME",
    "RemoveResult",
    "Target",
    "admin_session",
    "belongs_to",
    "create_space",
    "init_device",
    "issue_invite",
    "leave_space",
    "move_relays",
    "record_admission",
    "record_join",
    "remove",
    "resolve_target",
    "rotate_if_needed",
    "rotator",
    "seen_seqs",
    "use_local_relays",
]
