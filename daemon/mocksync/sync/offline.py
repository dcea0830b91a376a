"""The `prompt` offline policy (docs/design/merge.md "Offline"): what a reconnect means for one
environment, the holds it creates, and the team's version a `--discard-local` goes back to.

Why a module of its own, in `sync`: the decision is a pure function of version vectors (our own
log before the catch-up, and what the relay holds), so it is tested as a table, without sockets;
the agent and the transports only act on its answer. Both the agent (which holds) and the
transports (which keep held change sets back: `is_unsent`, `HoldingSource`) use it, so it sits
below both (issue 14). The holds' persistence is the agent's (`agent.offline.HoldBook`).

Holding never stops the log: remote change sets are applied to the state as always (so the
decision can be taken later without the network), only the file is left alone and our own
change sets past the `cut` (the last of ours the relay held at that catch-up) are not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..changes import ChangeSet
from ..errors import MocksyncError
from ..model import State, validate_ops
from .messages import peek_changeset
from .source import Source

#: What a reconnect means for one environment.
PUSH = "push"  # only local changes: send them
PULL = "pull"  # only remote changes: take them in and write the file
BOTH = "both"  # both sides changed it while apart: merge, or hold (policy `prompt`)
NONE = "none"  # nothing new either way

MERGE_POLICY = "merge"
PROMPT_POLICY = "prompt"


def decide(me: str, local_vv: Mapping[str, int], relay_vv: Mapping[str, int]) -> str:
    """PUSH, PULL, BOTH or NONE for one environment at a relay catch-up.

    `local_vv` is our log's version vector before this catch-up took anything in, `relay_vv`
    what the relay holds. Local unsent = our own device's change sets beyond the relay's;
    remote new = any other device's change sets the relay holds and we did not.
    """
    local_unsent = local_vv.get(me, 0) > relay_vv.get(me, 0)
    remote_new = any(seq > local_vv.get(device, 0)
                     for device, seq in relay_vv.items() if device != me)
    if local_unsent and remote_new:
        return BOTH
    if local_unsent:
        return PUSH
    if remote_new:
        return PULL
    return NONE


def should_hold(policy: str, decision: str) -> bool:
    """Only the `prompt` policy holds, and only when both sides changed the environment."""
    return policy == PROMPT_POLICY and decision == BOTH


def held_reason(name: str, target: str) -> str:
    """The sentence `status` shows for a held environment."""
    return (f"both this device and the team changed {name} while offline; it is held (the file "
            "is not rewritten and this device's changes are not sent) until you choose: "
            f"`mocksync resolve {target} --keep-local` makes this device's file the team's "
            f"version, `mocksync resolve {target} --discard-local` takes the team's version "
            "(this device's file goes to the trash)")


def team_state(env: str, log: Iterable[ChangeSet], device: str, cut: int) -> State:
    """The state `env` would have without `device`'s change sets numbered above `cut`.

    Replays the given applied change sets (any order: applying is commutative) into a fresh
    State; it is what every other device holds once it has what the relay had.
    """
    st = State(env)
    for cs in log:
        if cs.device == device and cs.seq > cut:
            continue
        st.apply(validate_ops(list(cs.ops)), (cs.hlc, cs.device), (cs.device, cs.seq),
                 dict(cs.deps))
    return st


def is_unsent(wire: bytes, device: str, cut: int) -> bool:
    """Is this wire-form change set one of `device`'s beyond `cut` (held back)?"""
    try:
        _space, _env, author, seq = peek_changeset(wire)
    except MocksyncError:
        return False  # not ours to judge: the receiver refuses it
    return author == device and seq > cut


def settled_by_decision(conflict: Mapping[str, Any], device: str, cut: int) -> bool:
    """A recorded conflict that involves one of our held change sets: the user's
    keep-local/discard-local decision answers it, so it is no longer open."""
    for side in ("winner", "loser"):
        origin = (conflict.get(side) or {}).get("origin")
        if origin and origin[0] == device and origin[1] > cut:
            return True
    return False


@dataclass(frozen=True)
class Hold:
    env: str
    #: Our own device's last seq the relay held when the environment was held.
    cut: int
    #: When (Unix seconds) the hold began.
    since: float

    def to_doc(self) -> dict[str, Any]:
        return {"env": self.env, "cut": self.cut, "since": self.since}


class HoldingSource:
    """A sync `Source` (what LAN sessions read) that hides our own held change sets: a peer
    neither sees them in our version vector nor gets them when it asks."""

    def __init__(self, inner: Source, device: str, cut_of: Callable[[str], int | None]) -> None:
        self.inner = inner
        self.device = device
        self.cut_of = cut_of

    def version_vector(self, space: str, env: str) -> Mapping[str, int]:
        vv = dict(self.inner.version_vector(space, env))
        cut = self.cut_of(env)
        if cut is not None and vv.get(self.device, 0) > cut:
            if cut > 0:
                vv[self.device] = cut
            else:
                vv.pop(self.device)
        return vv

    def wires(self, space: str, env: str, device: str, after: int, upto: int) -> Sequence[bytes]:
        cut = self.cut_of(env)
        if cut is not None and device == self.device:
            upto = min(upto, cut)
        if upto <= after:
            return []
        return self.inner.wires(space, env, device, after, upto)


__all__ = [
    "BOTH", "Hold", "HoldingSource", "MERGE_POLICY", "NONE",
    "PROMPT_POLICY", "PULL", "PUSH", "decide", "held_reason", "is_unsent",
    "settled_by_decision", "should_hold", "team_state",
]
