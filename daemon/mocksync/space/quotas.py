"""Plan limits (pure policy): how many environments a space may sync, how big each may be, and
how many devices of one member may be online at once.

Why it is pure: the relay enforces these limits on what it stores and forwards, and a daemon
checks them before sharing so that the user hears the reason at once rather than from a
refusal later; both must say the same sentence, with the plan's own numbers (docs/design/cli.md "Plans").
Plans follow Mockoon's: solo 5 environments x 5 MB, team 10 x 10 MB, enterprise 20 x 15 MB,
2 simultaneous devices per member. Size = bytes of the environment as compact JSON (the caller
measures; 1 MB = 1,000,000 bytes, as the plans are stated in decimal megabytes).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from ..errors import ValidationError
from ..units import MB, human_bytes

DEFAULT_DEVICES_PER_MEMBER = 2
#: Upper bounds for relay overrides (`--max-envs`, `--max-env-bytes`, `--max-devices-per-member`).
MAX_ENVS_CEILING = 100_000
MAX_ENV_BYTES_CEILING = 1024 * MB
MAX_DEVICES_CEILING = 1000
#: Longest plan name a relay may announce (the relay protocol's own bound).
MAX_PLAN_NAME_CHARS = 32


@dataclass(frozen=True)
class Plan:
    name: str
    max_envs: int
    max_env_bytes: int
    max_devices_per_member: int = DEFAULT_DEVICES_PER_MEMBER

    def __post_init__(self) -> None:
        for label, value, ceiling in (("max_envs", self.max_envs, MAX_ENVS_CEILING),
                                      ("max_env_bytes", self.max_env_bytes, MAX_ENV_BYTES_CEILING),
                                      ("max_devices_per_member", self.max_devices_per_member,
                                       MAX_DEVICES_CEILING)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
                raise ValidationError(f"plan {self.name}: {label} must be a whole number 1..{ceiling}")


PLANS: dict[str, Plan] = {
    "solo": Plan("solo", 5, 5 * MB),
    "team": Plan("team", 10, 10 * MB),
    "enterprise": Plan("enterprise", 20, 15 * MB),
}


def get_plan(name: str, *, max_envs: int | None = None, max_env_bytes: int | None = None,
             max_devices_per_member: int | None = None) -> Plan:
    """A named plan, optionally with limits overridden (the relay's command-line options)."""
    base = PLANS.get(name)
    if base is None:
        raise ValidationError(f"unknown plan {name!r}; plans are {', '.join(PLANS)}")
    return Plan(
        base.name,
        base.max_envs if max_envs is None else max_envs,
        base.max_env_bytes if max_env_bytes is None else max_env_bytes,
        base.max_devices_per_member if max_devices_per_member is None else max_devices_per_member,
    )


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


OK = Decision(True)


class RelayPlan(Protocol):
    """What a relay's `welcome` says of the plan it enforces on one space. The relay's typed
    `PlanInfo` has this shape; it is named here structurally because `space` sits below the
    relay layer and may not import its types (issue 14: short wire keys stay in the codec)."""

    @property
    def plan(self) -> str: ...
    @property
    def envs(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def devs(self) -> int: ...


def plan_from_relay(info: RelayPlan) -> Plan:
    """The plan a relay enforces on one space, from its `welcome` (the typed `PlanInfo`).

    Why the daemon takes the relay's word: the relay is what refuses, and it may run a named
    plan with overridden limits (`--max-envs`, `--max-env-bytes`); checking a save against a
    default plan instead lets a too-big environment read `synced` while the relay refuses it.
    Raises ValidationError (and the caller keeps the plan it had) when the numbers are not a
    plan this daemon can hold to."""
    name = getattr(info, "plan", None)
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_PLAN_NAME_CHARS:
        raise ValidationError(f"the relay's plan name must be 1..{MAX_PLAN_NAME_CHARS} characters")
    try:
        envs, max_bytes, devs = info.envs, info.max_bytes, info.devs
    except AttributeError as exc:
        raise ValidationError(f"the relay's plan for a space is incomplete: {exc}") from None
    return Plan(name, envs, max_bytes, devs)  # Plan checks each number


def _count(value: int, label: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f"{label} must be a whole number, not {value!r}")
    return value


def check_env_size(plan: Plan, env_bytes: int) -> Decision:
    """May an environment of `env_bytes` (compact JSON) be synced under `plan`?"""
    _count(env_bytes, "environment size")
    if env_bytes > plan.max_env_bytes:
        return Decision(False, (
            f"quota exceeded: {plan.name} plan allows environments up to "
            f"{human_bytes(plan.max_env_bytes)}; this one is {human_bytes(env_bytes)}"
        ))
    return OK


def check_share(plan: Plan, current_env_count: int, env_bytes: int) -> Decision:
    """May one more environment (of `env_bytes`) join a space holding `current_env_count`?"""
    _count(current_env_count, "environment count")
    if current_env_count >= plan.max_envs:
        return Decision(False, (
            f"quota exceeded: {plan.name} plan allows {plan.max_envs} environments "
            f"and the space already has {current_env_count}"
        ))
    return check_env_size(plan, env_bytes)


def check_device_online(plan: Plan, member_online_devices: Collection[str],
                        device: str | None = None) -> Decision:
    """May `device` come online, given the member's devices already online?

    The rule ("2 simultaneous devices per member"), precisely: per space, a device is *online*
    while it holds an admitted session to the relay for that space; `member_online_devices`
    are the member's other devices online in that space right now. A member may own and
    register more devices than that (the membership log only caps registrations at
    `membership.MAX_DEVICE_LIMIT`); joining never counts, connecting does. A device already
    counted (a reconnect overlapping its old session) is always allowed; otherwise the member
    may have at most `plan.max_devices_per_member` online at once. A refused device retries by
    itself and is admitted once one of the others disconnects or is removed. Devices that sync
    only over the LAN are not counted: the relay cannot see them."""
    if device is not None and device in member_online_devices:
        return OK
    online = len(member_online_devices)
    if online >= plan.max_devices_per_member:
        return Decision(False, (
            f"device limit reached: {plan.name} plan allows {plan.max_devices_per_member} "
            f"simultaneous devices per member and {online} are online; disconnect one first"
        ))
    return OK


__all__ = [
    "DEFAULT_DEVICES_PER_MEMBER",
    "Decision",
    "MB",
    "PLANS",
    "Plan",
    "RelayPlan",
    "check_device_online",
    "check_env_size",
    "check_share",
    "get_plan",
    "human_bytes",
    "plan_from_relay",
]
