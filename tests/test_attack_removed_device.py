"""Attack: a device removed while editing keeps writing after its removal (issue 12).

Before: the removal's cut was applied by whoever happened to know of it. Bob, removed while
editing, got an edit stored by the relay (which had not seen the removal yet) and applied by
one member but refused by another: permanent divergence, and nothing in `rejected`.

Now one decision (`space.writers.judge_change`) is made by the relay and every member, keyed
alike (env tag + seq against the removal's cut); the relay drops what it stored past the cut
once the removal reaches it, a member that applied such a change set before it learned of the
removal takes it back and rebuilds the environment, and the refusals are listed in `status`.

Black-box: a real relay and three real daemons (alice, admin; bob, removed; carol) driven by the
CLI and editor saves, plus a malicious client built from the library's own signing and sealing
code that uploads as bob. Loopback only; daemons run with --no-mdns on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from journeys.harness import Device, Team
from mocksync.changes import ChangeSet
from mocksync.net.errors import RelayRefused
from mocksync.net.relay_client import RelayClient
from mocksync.paths import Home
from mocksync.relay.envelope import Tagger, seal_envelope
from mocksync.relay.storage import DB_NAME
from mocksync.spaceio.identityfiles import load_identity
from mocksync.spaceio.store import get_space
from mocksync.store.log import Store


def _title(text: str):
    def edit(doc: dict[str, Any]) -> None:
        doc["routes"][0]["documentation"] = text
    return edit


def _space_id(dev: Device, name: str) -> str:
    return next(r["id"] for r in dev.ms("space", "list", "--json").json() if r["name"] == name)


def _forge_next(bob: Device, space: str, env: str, name: str) -> tuple[str, Any, int]:
    """Bob's next change set of `env`, built and signed with the library's own code from his
    home (his key, his chain head), sealed for the relay: (tag, envelope, seq)."""
    home = Home(bob.home)
    ident = load_identity(home)
    store = Store(home.log_db)
    try:
        head = max((cs for cs, _t in store.log(env) if cs.device == ident.device_id),
                   key=lambda cs: cs.seq)
    finally:
        store.close()
    cs = ChangeSet(space=space, env=env, device=ident.device_id, seq=head.seq + 1,
                   hlc=head.hlc + 1, deps={}, prev_hash=head.hash,
                   ops=(["s", env, ["v", "name"], f'"{name}"'],)).sign(ident.signing_key)
    keys = get_space(home, space).keys
    tag = Tagger(space, keys)(env)
    return tag, seal_envelope(space, tag, keys, cs.encode()), cs.seq


async def _upload_as(bob: Device, url: str, space: str, tag: str, envelope: Any) -> str:
    """The malicious client: authenticate to the relay as bob (his key, his copy of the log)
    and put one envelope. 'stored', or the relay's refusal code."""
    home = Home(bob.home)
    ident = load_identity(home)
    logs = {space: [e.wire for e in get_space(home, space).entries]}
    c = RelayClient(url, ident, lambda: logs, backoff_min_s=0.05, backoff_max_s=0.3,
                    refused_retry_s=60.0)
    await c.start()
    try:
        for _ in range(200):
            if c.state in ("connected", "refused"):
                break
            await asyncio.sleep(0.05)
        if c.state != "connected":
            return str(c.code or c.state)
        try:
            await c.put(space, tag, [envelope], declared_bytes=10_000)
        except RelayRefused as exc:
            return exc.code
        return "stored"
    finally:
        await c.stop()


def _relay_holds(relay_dir: Path, device: str) -> list[int]:
    db = sqlite3.connect(f"file:{relay_dir / DB_NAME}?mode=ro", uri=True)
    try:
        return sorted(s for (s,) in db.execute("SELECT seq FROM envelopes WHERE device=?",
                                               (device,)))
    finally:
        db.close()


def _relay_dir(team: Team) -> Path:
    hits = list(team.root.rglob(DB_NAME))
    assert len(hits) == 1, hits
    return hits[0].parent


def test_removed_device_writing_after_the_cut_is_refused_everywhere() -> None:
    team = Team()
    try:
        alice, bob, carol = team.crew(members={"alice": ["alice-laptop"], "bob": ["bob-laptop"],
                                               "carol": ["carol-laptop"]})
        space = _space_id(alice, "team")
        alice.add_example("petstore")
        pet = alice.share("petstore.json")["uuid"]
        team.synced(pet, alice, bob, carol)
        bob.edit(pet, _title("bob, still a member"))
        team.everywhere(pet, (alice, carol), lambda d: d["routes"][0]["documentation"]
                        == "bob, still a member", "bob's edit before the removal")

        # Alice removes bob while her daemon is down: the relay does not know yet (the race
        # of a removal made while bob edits). Her cut: bob's change sets she had, #1.
        alice.stop()
        assert "removed" in alice.ms("remove", "team", "bob").out
        # Bob keeps editing; the relay stores it and carol, who does not know either, applies it.
        bob.edit(pet, _title("bob, after his removal"))
        carol.wait_doc(pet, lambda d: d["routes"][0]["documentation"] == "bob, after his removal",
                       "bob's late edit (before the removal is known)")
        bob.stop()
        # And a malicious client built from the library uploads more as bob.
        tag, sealed, forged_seq = _forge_next(bob, space, pet, "owned by removed bob")
        assert asyncio.run(_upload_as(bob, team.relay.url, space, tag, sealed)) == "stored"
        carol.wait_doc(pet, lambda d: d["name"] == "owned by removed bob",
                       "the forged change set (before the removal is known)")
        relay_dir = _relay_dir(team)
        assert _relay_holds(relay_dir, bob.id) == [1, 2, 3]

        # Alice's daemon comes back: the removal reaches the relay and carol.
        alice.start()
        def converged() -> dict[str, Any] | None:
            a, c = alice.doc(pet), carol.doc(pet)
            return a if a is not None and a == c else None
        final = team.wait(converged, "alice and carol to hold the same file")
        assert final["routes"][0]["documentation"] == "bob, still a member"
        assert final["name"] != "owned by removed bob"
        # The relay dropped what bob stored past the cut, and refuses him now.
        team.wait(lambda: _relay_holds(relay_dir, bob.id) == [1], "the relay to drop bob's late "
                  "envelopes")
        tag, sealed, _ = _forge_next(bob, space, pet, "owned by removed bob, again")
        assert asyncio.run(_upload_as(bob, team.relay.url, space, tag, sealed)) == "revoked"
        assert _relay_holds(relay_dir, bob.id) == [1]
        # Carol took back what she had applied, and says so; nobody lists bob's #1.
        def carol_lists() -> list[dict[str, Any]] | None:
            rows = [r for r in carol.status()["rejected"] if r["device"] == bob.id]
            return rows if sorted(r["seq"] for r in rows) == [2, forged_seq] else None
        rows = team.wait(carol_lists, "carol's status to list bob's refused change sets")
        assert all("removed" in r["reason"] for r in rows)
        for dev in (alice, carol):
            assert not any(r["device"] == bob.id and r["seq"] == 1
                           for r in dev.status()["rejected"])
        team.synced(pet, alice, carol)

        # Bob's daemon, still running its old copy, keeps editing: nobody gets it.
        bob.start()
        team.wait(lambda: "removed" in (bob.status()["relay"].get("refused_spaces") or {})
                  .get(space, ""), "bob's daemon to be refused the space by the relay")
        bob.edit(pet, _title("bob, ignoring his removal"))
        # The remaining members still edit and converge; bob's edit is nowhere.
        carol.edit(pet, _title("carol, after the removal"))
        team.everywhere(pet, (alice,), lambda d: d["routes"][0]["documentation"]
                        == "carol, after the removal", "carol's edit")
        doc = team.synced(pet, alice, carol)
        assert doc["routes"][0]["documentation"] == "carol, after the removal"
        assert _relay_holds(relay_dir, bob.id) == [1]
    except BaseException:
        print(team.logs())
        raise
    finally:
        team.close()


def test_remove_takes_effect_at_the_relay_before_the_command_returns() -> None:
    """`mocksync remove` pokes the running daemon, which uploads the removal before the
    command returns: the very next upload as the removed device is refused (no waiting for a
    periodic check)."""
    team = Team()
    try:
        alice, bob = team.crew(members={"alice": ["alice-laptop"], "bob": ["bob-laptop"]})
        space = _space_id(alice, "team")
        alice.add_example("petstore")
        pet = alice.share("petstore.json")["uuid"]
        team.synced(pet, alice, bob)
        bob.edit(pet, _title("bob, a member"))
        alice.wait_doc(pet, lambda d: d["routes"][0]["documentation"] == "bob, a member",
                       "bob's edit")
        bob.stop()
        tag, sealed, _ = _forge_next(bob, space, pet, "late")
        assert "removed" in alice.ms("remove", "team", "bob").out
        assert asyncio.run(_upload_as(bob, team.relay.url, space, tag, sealed)) == "revoked"
        assert _relay_holds(_relay_dir(team), bob.id) == [1]
    except BaseException:
        print(team.logs())
        raise
    finally:
        team.close()


async def test_a_late_change_set_arriving_directly_is_refused_and_listed(tmp_path: Path
                                                                        ) -> None:
    """The LAN path: a removed device's change set reaches a member directly (no relay to
    drop it). The member's store refuses it, changes nothing, and `status` lists it."""
    import random

    from mocksync.errors import MocksyncError
    from mocksync.model import snapshot_ops
    from mocksync.spaceio.actions import remove

    from envfactory import small_env
    from helpers.relaylab import Lab, team_of

    lab = Lab(tmp_path)
    try:
        alice, bob, space = team_of(lab)
        await lab.start_relay()
        a, _ta = await lab.agent(alice)
        remove(alice.home, alice.identity, space, bob.identity.device_id)
        assert a.enforce_membership() == 0  # nothing of bob's to take back
        # bob (removed, offline from the team) makes a change set with the library's code
        doc = small_env()
        bstore = Store(bob.home.log_db)
        try:
            cs, _ = bstore.commit_local(bob.identity.signing_key, space=space, env=doc["uuid"],
                                        device=bob.identity.device_id,
                                        ops=snapshot_ops(doc, random.Random(1)),
                                        now_ms=int(1e12))
        finally:
            bstore.close()
        try:
            a.receive(space, cs.encode())
            raise AssertionError("alice applied a change set of a removed device")
        except MocksyncError as exc:
            assert bob.identity.device_id in str(exc)
        assert a.store.version_vector(doc["uuid"]) == {}
        rows = [r for r in a.status()["rejected"] if r["device"] == bob.identity.device_id]
        assert [r["seq"] for r in rows] == [1] and "removed" in rows[0]["reason"]
    finally:
        await lab.close()
