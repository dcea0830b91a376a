"""Journey: a teammate's Mockoon is older than the environment.

Bob's Mockoon reads environments up to migration 32 (`mockoon_max_migration = 32` in his
config.toml). Alice shares one saved by a newer Mockoon (lastMigration 33): Bob's daemon does
not write a file his app would refuse; his status says `held` and why. When he updates
Mockoon and raises the setting, the file is written.
"""

from __future__ import annotations

from .harness import Crew


def test_migration_gate_holds_until_mockoon_is_new_enough(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    bob.restart_with(mockoon_max_migration=32)
    laptop.add_example("petstore", "newer.json")
    doc = laptop.read("newer.json")
    assert doc["lastMigration"] == 33
    env = laptop.share("newer.json")["uuid"]
    team.synced(env, laptop, desktop)

    held = bob.wait_state(env, "held")
    reason = held["reason"] or ""
    assert "33" in reason and "32" in reason, reason  # which migration, which limit
    assert "mockoon_max_migration" in reason or "Mockoon" in reason, reason
    assert bob.file_of(env) is None

    # Bob updates Mockoon and raises the limit: the environment is written, in sync.
    bob.restart_with(mockoon_max_migration=33)
    team.synced(env, laptop, desktop, bob)
    assert bob.doc(env) == laptop.doc(env)
