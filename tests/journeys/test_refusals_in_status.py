"""Journey: a teammate's edits that cannot be applied show in `status`, never as `synced`.

Bob's machine has its clock two hours ahead. His edits reach Alice's two devices through the
relay but are stamped too far in the future: each is quarantined, not applied. Before issue 12
Alice's `status` still said `synced` and Bob's edits silently never arrived; now both of her
devices say `blocked`, name Bob's device and say why, in `status --json` and in the text.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from .harness import CLOCK_DIR, CLOCK_SHIFT_ENV, Team

AHEAD_S = 2 * 3600


def test_a_teammate_far_in_the_future_is_shown_blocked(team: Team,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    laptop, desktop, bob = team.devices_of({"alice": ["alice-laptop", "alice-desktop"],
                                            "bob": ["bob-laptop"]})
    team.space(laptop, "team")
    team.start(laptop, desktop)
    with monkeypatch.context() as m:  # only bob's daemon runs with its clock ahead
        m.setenv("PYTHONPATH", os.pathsep.join(
            p for p in (str(CLOCK_DIR), os.environ.get("PYTHONPATH", "")) if p))
        m.setenv(CLOCK_SHIFT_ENV, str(AHEAD_S))
        bob.start(wait=False)
    bob.wait_ready()
    team.join(desktop, "team", by=laptop, device=True)
    team.join(bob, "team", by=laptop)
    laptop.add_example("petstore", "pets.json")
    env = laptop.share("pets.json")["uuid"]
    team.synced(env, laptop, desktop, bob)

    bob.edit(env, lambda d: d.update(port=3999))
    for dev in (laptop, desktop):
        e: dict[str, Any] = dev.wait_state(env, "blocked")
        assert bob.id in e["reason"] and "quarantined: stamped" in e["reason"], e
        assert any(r["device"] == bob.id and r["blocking"] for r in e["refused"]), e
        assert dev.doc(env)["port"] != 3999  # held, not applied
        text = dev.ms("status").out
        assert "blocked" in text and "quarantined" in text and bob.id in text, text
    assert bob.doc(env)["port"] == 3999
