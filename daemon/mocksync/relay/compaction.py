"""Bounded history on the relay: encrypted snapshots, and which change sets they let go (pure).

Why snapshots at all: the relay cannot read what it stores, so it cannot merge old change
sets into a state; without help, an environment's history only grows (capped at
`policy.STORED_BYTES_FACTOR` x the plan's size, after which edits are refused). A member
device holds the merged state anyway, so it seals that state with the space key and uploads
it as a *snapshot* naming the version vector it covers. The relay keeps the newest one per
(space, env tag) and drops the change sets it covers once every member device has said it
holds them (its high-water mark) or once they are older than the retention period. A device
whose catch-up needs a dropped change set starts from the snapshot instead.

What is decided here, without sockets, files or clocks (`now_ms` is passed in):
- `judge_snapshot`: may an uploaded snapshot replace the one held (size, rate, coverage);
- `drop_floors`: per device, up to which seq the relay may drop change sets now;
- `needs_snapshot`: does a fetch from `have` reach below what was dropped;
- `snapshot_due`: should a device make a snapshot now (the daemon's background policy);
- the sealed format: `snapshot_sig_bytes`, `snapshot_aad`, `seal_snapshot`, `open_snapshot`.

Sealed format (what the relay stores and serves): `(signer device, vv, ciphertext, sig)`.
`ciphertext = seal_payload(content key, gen, canonical(content), aad)` with the AAD binding
`[SNAPSHOT_CONTEXT, space, tag, signer, vv]`, and `sig` the signer's Ed25519 signature of
`[SNAPSHOT_SIG_CONTEXT, space, tag, vv, sha256(ciphertext)]`. The relay checks the signature
against the signer's key in the space's verified membership log (so only a member device's
own upload is kept); a receiving device checks the same signature and membership, opens the
ciphertext, and checks that what is inside names the same environment and version vector.
What the content holds is the store's business (`store.log.Store.snapshot_content`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..changes.canonical import decode, encode
from ..errors import ChangeSetError
from ..space.keys import open_payload, payload_generation, seal_payload
from .errors import SnapshotError, SnapshotTooLarge

#: A snapshot's ciphertext may be at most this many times the plan's environment size (the
#: state carries stamps, origins and frontiers beside the JSON, and a deleted entity stays as
#: a tombstone).
SNAPSHOT_SIZE_FACTOR = 4
#: Seconds after which change sets a snapshot covers are dropped even when some member device
#: has not acknowledged them (it then starts from the snapshot). Relay option `--retention`.
RETENTION_S = 30 * 24 * 3600
#: Least seconds between two snapshots accepted for one environment (a member cannot make the
#: relay rewrite a big row in a loop).
MIN_SNAPSHOT_INTERVAL_S = 10.0
#: Devices one snapshot's version vector may name (as a relay message's vv).
MAX_SNAPSHOT_DEVICES = 4096
#: Daemon policy: make a snapshot when this many change sets were stored since the last one,
#: or when the history held since then is over SNAPSHOT_HISTORY_FACTOR x the environment's size.
SNAPSHOT_CHANGESETS = 500
SNAPSHOT_HISTORY_FACTOR = 2
#: Least seconds between two snapshots a daemon makes of one environment.
SNAPSHOT_MIN_GAP_S = 60.0
#: Seconds between two rounds of the relay's compaction timer: retention-based drops do not
#: wait for the next upload or high-water mark (`relay.snapshots.compaction_loop`).
COMPACT_INTERVAL_S = 300.0
#: Environments (with a snapshot) one timer round compacts at most; the next round goes on
#: where this one stopped, so one round's work is bounded whatever the relay holds.
COMPACT_ENVS_PER_ROUND = 64
#: Least seconds between two compactions of one environment that high-water marks start: a
#: member flooding `hw` costs the relay a small upsert each, not a transaction over the
#: environment's history (the timer catches up whatever a skipped mark allowed).
HW_COMPACT_GAP_S = 5.0

SNAPSHOT_CONTEXT = "mocksync/relay-snapshot/v1"
SNAPSHOT_SIG_CONTEXT = "mocksync/relay-snapshot-sig/v1"


@dataclass(frozen=True)
class HeldSnapshot:
    """What the relay knows of the snapshot it keeps for one (space, env tag)."""

    signer: str
    vv: Mapping[str, int]
    size: int
    received_ms: int


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def dominates(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Does version vector `a` hold everything `b` does?"""
    return all(a.get(d, 0) >= n for d, n in b.items() if n > 0)


def judge_snapshot(vv: Mapping[str, int], size: int, *, held: HeldSnapshot | None,
                   floors: Mapping[str, int], max_env_bytes: int, now_ms: int,
                   min_interval_s: float = MIN_SNAPSHOT_INTERVAL_S,
                   relay_vv: Mapping[str, int] | None = None,
                   held_active: bool = True) -> Verdict:
    """May an uploaded snapshot (covering `vv`, `size` bytes of ciphertext) replace `held`?

    It must fit SNAPSHOT_SIZE_FACTOR x the plan's size; it must cover nothing the relay does
    not hold (`relay_vv`, the contiguous prefix held or dropped per device: a snapshot that
    claimed seqs a device has not uploaded yet would let the relay drop, and a device that
    starts from it skip, that device's real change sets when they come); it must cover every
    change set already dropped (`floors`), or the devices that need it could not continue;
    it must cover everything the snapshot held covers and more (snapshots only grow, so a
    device that started from one never needs a smaller one); and not come sooner than
    `min_interval_s` after the last one. When the held snapshot's signer is no longer an
    active device (`held_active` False: removed since), any snapshot that passes the other
    checks replaces it at once: devices refuse a removed device's snapshot, so it must go."""
    cap = SNAPSHOT_SIZE_FACTOR * max_env_bytes
    if size > cap:
        return Verdict(False, (
            f"snapshot refused: {size} bytes is over the {cap} byte limit "
            f"({SNAPSHOT_SIZE_FACTOR} x the plan's environment size)"))
    if not any(n > 0 for n in vv.values()):
        return Verdict(False, "snapshot refused: it covers no change set")
    if relay_vv is not None and not dominates(relay_vv, vv):
        over = sorted(d for d, n in vv.items() if n > relay_vv.get(d, 0))
        return Verdict(False, (
            f"snapshot refused: it covers change sets the relay does not hold (device "
            f"{over[0]} #{vv[over[0]]}, the relay holds #{relay_vv.get(over[0], 0)}); upload "
            "them first"))
    if not dominates(vv, floors):
        short = sorted(d for d, n in floors.items() if vv.get(d, 0) < n)
        return Verdict(False, (
            "snapshot refused: it does not cover change sets the relay already dropped (device "
            f"{short[0]}); a device that needs them could not continue from it"))
    if held is not None and held_active:
        if dominates(held.vv, vv):
            return Verdict(False, "snapshot refused: the relay holds one that covers as much")
        if not dominates(vv, held.vv):
            less = sorted(d for d, n in held.vv.items() if vv.get(d, 0) < n)
            return Verdict(False, (
                "snapshot refused: it covers less than the one the relay holds (device "
                f"{less[0]}); a snapshot must cover everything the held one does"))
        if now_ms - held.received_ms < min_interval_s * 1000:
            return Verdict(False, (
                f"snapshot refused: one was stored less than {min_interval_s:g} s ago; "
                "try again later"))
    return Verdict(True)


def drop_floors(snapshot_vv: Mapping[str, int], acks: Mapping[str, Mapping[str, int]],
                members: Collection[str], young: Mapping[str, int],
                floors: Mapping[str, int],
                stored: Mapping[str, int] | None = None) -> dict[str, int]:
    """Per author device, the highest seq the relay may have dropped after this decision.

    A change set (d, n) may go when the snapshot covers it (n <= snapshot_vv[d]) and either
    every member device acknowledged it (`acks[m][d] >= n`; a member device with no ack holds
    nothing) or it is older than the retention period. `young[d]`: the lowest seq of d the
    snapshot covers that is *not* older than retention (absent: all covered ones are old).
    `stored[d]`: the highest seq of d the relay holds or dropped (None: not checked); a floor
    never passes it, so a change set the relay never received is never counted as dropped
    (its late upload would be skipped as held). Dropping is always a prefix of each chain,
    never below what was dropped already (`floors`), and never above the snapshot."""
    out: dict[str, int] = {}
    for d, top in snapshot_vv.items():
        if top <= 0:
            continue
        acked = min((acks.get(m, {}).get(d, 0) for m in members), default=top)
        old = young[d] - 1 if d in young else top
        cap = top if stored is None else min(top, stored.get(d, 0))
        floor = min(cap, max(acked, old, floors.get(d, 0)))
        if floor > floors.get(d, 0):
            out[d] = floor
    return out


def needs_snapshot(have: Mapping[str, int], floors: Mapping[str, int]) -> bool:
    """Does a device holding `have` need change sets the relay dropped?"""
    return any(have.get(d, 0) < n for d, n in floors.items())


def snapshot_due(changesets_since: int, history_bytes_since: int, env_bytes: int, *,
                 since_last_s: float | None, every: int = SNAPSHOT_CHANGESETS,
                 factor: int = SNAPSHOT_HISTORY_FACTOR,
                 min_gap_s: float = SNAPSHOT_MIN_GAP_S) -> bool:
    """Should a device that holds an environment whole make a snapshot of it now?

    `changesets_since` / `history_bytes_since`: stored on the relay since the last snapshot
    (all of its history when there is none); `since_last_s`: seconds since this device last
    made one (None: never). `every` 0 turns snapshots off."""
    if every <= 0 or changesets_since <= 0:
        return False
    if since_last_s is not None and since_last_s < min_gap_s:
        return False
    return changesets_since >= every or history_bytes_since > factor * max(env_bytes, 1)


# ------------------------------------------------------------------------ the sealed format


def _vv_list(vv: Mapping[str, int]) -> list[list[Any]]:
    return [[d, int(n)] for d, n in sorted(vv.items())]


def snapshot_aad(space: str, tag: str, signer: str, vv: Mapping[str, int]) -> bytes:
    return encode([SNAPSHOT_CONTEXT, space, tag, signer, _vv_list(vv)])


def snapshot_sig_bytes(space: str, tag: str, vv: Mapping[str, int], ct: bytes) -> bytes:
    """What the signer signs: the slot, the coverage and the ciphertext's hash."""
    return encode([SNAPSHOT_SIG_CONTEXT, space, tag, _vv_list(vv), hashlib.sha256(ct).digest()])


def seal_snapshot(space: str, tag: str, keys_by_gen: Mapping[int, bytes], identity: Any,
                  content: Mapping[str, Any]) -> tuple[dict[str, int], bytes, bytes]:
    """(vv, ciphertext, signature) of a snapshot `content` (it holds its own `vv`)."""
    if not keys_by_gen:
        raise SnapshotError(f"this device holds no content key of space {space[:12]}")
    vv = {d: int(n) for d, n in content["vv"].items()}
    gen = max(keys_by_gen)
    ct = seal_payload(keys_by_gen[gen], gen, encode(dict(content)),
                      snapshot_aad(space, tag, identity.device_id, vv))
    return vv, ct, identity.sign(snapshot_sig_bytes(space, tag, vv, ct))


def verify_snapshot_sig(sign_key: bytes | None, space: str, tag: str, vv: Mapping[str, int],
                        ct: bytes, sig: bytes) -> None:
    """Raise unless `sig` is the signature of a member device's key (None: not a member)."""
    from ..space.identity import verify_signature

    if sign_key is None:
        raise SnapshotError("snapshot refused: its signer is not a device of the space")
    if not verify_signature(sign_key, snapshot_sig_bytes(space, tag, vv, ct), sig):
        raise SnapshotError("snapshot refused: its signature does not verify with its signer's "
                            "key (altered or forged)")


def open_snapshot(space: str, tag: str, keys_by_gen: Mapping[int, bytes], signer: str,
                  sign_key: bytes | None, vv: Mapping[str, int], ct: bytes, sig: bytes,
                  tagger: Any) -> dict[str, Any]:
    """Verify and open a snapshot served by the relay; its content, or SnapshotError."""
    verify_snapshot_sig(sign_key, space, tag, vv, ct, sig)
    try:
        payload_generation(ct)
        raw = open_payload(keys_by_gen, ct, snapshot_aad(space, tag, signer, vv))
        content = decode(raw, what="snapshot")
    except ChangeSetError as exc:
        raise SnapshotError(f"snapshot refused: {exc}") from None
    except Exception as exc:  # a key error of the AEAD layer
        raise SnapshotError(f"snapshot refused: it does not open ({exc})") from None
    if type(content) is not dict or type(content.get("e")) is not str \
            or type(content.get("vv")) is not dict:
        raise SnapshotError("snapshot refused: its content is not a snapshot")
    if tagger(content["e"]) != tag:
        raise SnapshotError("snapshot refused: it holds another environment than its tag names")
    if {d: n for d, n in content["vv"].items()} != dict(vv):
        raise SnapshotError("snapshot refused: its content covers another version vector than "
                            "it claims")
    return content


__all__ = [
    "COMPACT_ENVS_PER_ROUND",
    "COMPACT_INTERVAL_S",
    "HW_COMPACT_GAP_S",
    "HeldSnapshot",
    "MAX_SNAPSHOT_DEVICES",
    "MIN_SNAPSHOT_INTERVAL_S",
    "RETENTION_S",
    "SNAPSHOT_CHANGESETS",
    "SNAPSHOT_HISTORY_FACTOR",
    "SNAPSHOT_MIN_GAP_S",
    "SNAPSHOT_SIZE_FACTOR",
    "SnapshotError",
    "SnapshotTooLarge",
    "Verdict",
    "dominates",
    "drop_floors",
    "judge_snapshot",
    "needs_snapshot",
    "open_snapshot",
    "seal_snapshot",
    "snapshot_aad",
    "snapshot_due",
    "snapshot_sig_bytes",
    "verify_snapshot_sig",
]
