"""Plan limits and their sentences (docs/design/cli.md "Plans": solo 5 x 5 MB, team 10 x 10 MB, enterprise 20 x 15 MB,
2 simultaneous devices per member)."""

from __future__ import annotations

import pytest

from mocksync.errors import ValidationError
from mocksync.space.quotas import (
    MB,
    PLANS,
    check_device_online,
    check_env_size,
    check_share,
    get_plan,
)


def test_plans_match_the_published_numbers():
    assert (PLANS["solo"].max_envs, PLANS["solo"].max_env_bytes) == (5, 5 * MB)
    assert (PLANS["team"].max_envs, PLANS["team"].max_env_bytes) == (10, 10 * MB)
    assert (PLANS["enterprise"].max_envs, PLANS["enterprise"].max_env_bytes) == (20, 15 * MB)
    assert all(p.max_devices_per_member == 2 for p in PLANS.values())


def test_share_within_limits_is_ok():
    d = check_share(PLANS["team"], 9, 10 * MB)
    assert d.ok and bool(d) and d.reason == ""


def test_share_over_env_count_says_so_with_the_plans_numbers():
    d = check_share(PLANS["team"], 10, 100)
    assert not d
    assert d.reason.startswith("quota exceeded: team plan allows 10 environments")


def test_env_too_big_says_so_with_the_plans_numbers():
    d = check_env_size(PLANS["solo"], 5 * MB + 1)
    assert not d.ok
    assert "solo plan allows environments up to 5 MB" in d.reason
    assert "5 MB" in d.reason
    big = check_share(PLANS["enterprise"], 0, 15_400_000)
    assert not big.ok and "15 MB" in big.reason and "15.4 MB" in big.reason
    assert check_env_size(PLANS["solo"], 5 * MB).ok


def test_device_online_limit():
    plan = PLANS["team"]
    assert check_device_online(plan, []).ok
    assert check_device_online(plan, ["d1"], "d2").ok
    over = check_device_online(plan, ["d1", "d2"], "d3")
    assert not over.ok
    assert "team plan allows 2 simultaneous devices per member" in over.reason
    assert check_device_online(plan, ["d1", "d2"], "d2").ok  # a reconnect is not a new device


def test_overrides_and_bad_input():
    plan = get_plan("team", max_envs=3, max_devices_per_member=1)
    assert plan.max_envs == 3 and plan.max_env_bytes == 10 * MB
    assert "allows 3 environments" in check_share(plan, 3, 1).reason
    with pytest.raises(ValidationError, match="unknown plan"):
        get_plan("gold")
    with pytest.raises(ValidationError):
        get_plan("team", max_envs=0)
    with pytest.raises(ValidationError):
        check_share(plan, -1, 1)
    with pytest.raises(ValidationError):
        check_env_size(plan, True)  # type: ignore[arg-type]
