"""The identity/space/invite/member commands through click's CliRunner, each device in its own
`--home`. A loopback join transport (an admin session on the other home, in-process) stands in
for the network, which later work provides."""

from __future__ import annotations

import asyncio
import json
import stat

import pytest
from click.testing import CliRunner

from mocksync.cli import main
from mocksync.paths import Home
from mocksync.space.invite import Admission, InviteToken
from mocksync.spaceio import actions
from mocksync.spaceio.identityfiles import load_identity
from mocksync.spaceio.join import register_join_transport, unregister_join_transport
from mocksync.spaceio.store import get_space


@pytest.fixture()
def run(tmp_path):
    runner = CliRunner()

    def invoke(home: str, *args: str):
        return runner.invoke(main, ["--home", str(tmp_path / home), *args])

    invoke.root = tmp_path
    return invoke


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
    return result


class Loopback:
    """Reach the admin device at `admin_home` by running its admin session in-process."""

    name = "loopback"

    def __init__(self, admin_home: Home) -> None:
        self.admin_home = admin_home

    async def connect(self, token: InviteToken):
        ident = load_identity(self.admin_home)
        session = actions.admin_session(self.admin_home, ident, token.space_id)
        home = self.admin_home

        class Channel:
            def __init__(self) -> None:
                self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

            async def send(self, message: bytes) -> None:
                import time

                for out in session.receive(message, time.time()):
                    if isinstance(session.outcome, Admission):
                        actions.record_admission(home, session)
                    self.inbox.put_nowait(out)

            async def receive(self) -> bytes:
                return await self.inbox.get()

            async def close(self) -> None:
                pass

        return Channel()


@pytest.fixture()
def loopback(tmp_path):
    factory = lambda home: Loopback(Home(tmp_path / "alice"))  # noqa: E731
    register_join_transport(factory)
    yield
    unregister_join_transport(factory)


def test_init_prints_device_id_creates_personal_space_and_refuses_twice(run):
    r = ok(run("alice", "init", "--name", "laptop", "--member", "Alice"))
    did = r.stdout.split("device id:")[1].split()[0]
    assert len(did) == 23
    home = Home(run.root / "alice")
    assert stat.S_IMODE((home.keys / "device-ed25519.pem").stat().st_mode) == 0o600
    spaces = json.loads(ok(run("alice", "space", "list", "--json")).stdout)
    assert [(s["name"], s["kind"], s["role"]) for s in spaces] == [("personal", "personal", "admin")]
    again = run("alice", "init")
    assert again.exit_code == 1 and "already initialised" in again.stderr and did in again.stderr


def test_commands_need_init_first(run):
    r = run("nobody", "space", "list")
    assert r.exit_code == 1 and "mocksync init" in r.stderr


def test_space_create_list_and_duplicates(run):
    ok(run("alice", "init", "--name", "laptop"))
    ok(run("alice", "space", "create", "backend", "--relay", "https://relay.example:8765"))
    dup = run("alice", "space", "create", "Backend")
    assert dup.exit_code == 1 and "already belongs to a space named" in dup.stderr
    bad = run("alice", "space", "create", "x", "--relay", "ftp://nope")
    assert bad.exit_code == 1 and "http" in bad.stderr
    rows = json.loads(ok(run("alice", "space", "list", "--json")).stdout)
    team = next(s for s in rows if s["name"] == "backend")
    assert team["relay"] == "https://relay.example:8765" and team["key_generation"] == 1
    assert team["members"] == 1 and team["kind"] == "team"


def test_invite_validates_options(run):
    ok(run("alice", "init"))
    ok(run("alice", "space", "create", "backend"))
    assert run("alice", "invite", "backend", "--expires", "soon").exit_code == 2
    assert run("alice", "invite", "backend", "--expires", "90d").exit_code == 2
    assert run("alice", "invite", "backend", "--role", "owner").exit_code == 2
    missing = run("alice", "invite", "nosuch")
    assert missing.exit_code == 1 and "no space 'nosuch'" in missing.stderr
    token = ok(run("alice", "invite", "backend", "--expires", "2h")).stdout.strip()
    assert InviteToken.parse(token).name == "backend"


def test_join_fails_clearly_when_no_admin_is_reachable(run):
    ok(run("alice", "init"))
    ok(run("alice", "space", "create", "backend"))
    token = ok(run("alice", "invite", "backend")).stdout.strip()
    ok(run("bob", "init", "--name", "desk"))
    r = run("bob", "join", "--bind", "127.0.0.1", token, "--timeout", "1")
    assert r.exit_code == 1
    assert "no admin device of space 'backend' is reachable" in r.stderr
    spaces = json.loads(ok(run("bob", "space", "list", "--json")).stdout)
    assert [s["name"] for s in spaces] == ["personal"]  # no fake success


def test_join_rejects_malformed_and_expired_tokens(run):
    ok(run("bob", "init"))
    r = run("bob", "join", "--bind", "127.0.0.1", "mocksync1-notatoken")
    assert r.exit_code == 2 and "damaged" in r.stderr
    r = run("bob", "join", "--bind", "127.0.0.1", "hello")
    assert r.exit_code == 2 and "mocksync1-" in r.stderr
    ok(run("alice", "init"))
    ok(run("alice", "space", "create", "backend"))
    home = Home(run.root / "alice")
    _, token = actions.issue_invite(home, load_identity(home), "backend", lifetime_s=60,
                                    now=1_000_000.0)
    r = run("bob", "join", "--bind", "127.0.0.1", token.encode())
    assert r.exit_code == 1 and "expired" in r.stderr


def test_full_join_members_and_remove(run, loopback):
    ok(run("alice", "init", "--name", "laptop", "--member", "Alice"))
    ok(run("alice", "space", "create", "backend"))
    token = ok(run("alice", "invite", "backend", "--role", "editor")).stdout.strip()
    ok(run("bob", "init", "--name", "desk", "--member", "Bob"))
    joined = ok(run("bob", "join", "--bind", "127.0.0.1", token, "--json"))
    doc = json.loads(joined.stdout)
    assert doc["joined"] and doc["name"] == "backend" and doc["role"] == "editor"
    # both devices now agree on the members
    for who in ("alice", "bob"):
        members = json.loads(ok(run(who, "members", "backend", "--json")).stdout)
        assert sorted((m["name"], m["role"]) for m in members["members"]) == [
            ("Alice", "admin"), ("Bob", "editor")]
    # the token is spent
    ok(run("carol", "init"))
    replay = run("carol", "join", "--bind", "127.0.0.1", token)
    assert replay.exit_code == 1 and "already used" in replay.stderr
    # an editor cannot remove anyone
    denied = run("bob", "remove", "backend", "Alice")
    assert denied.exit_code == 1 and "only an admin" in denied.stderr
    # a typo in a device id is caught as a typo
    bob_id = load_identity(Home(run.root / "bob")).device_id
    typo = bob_id[:-1] + ("0" if bob_id[-1] != "0" else "1")
    r = run("alice", "remove", "backend", typo)
    assert r.exit_code == 1 and "typo" in r.stderr
    # Alice's change log has two of Bob's change sets for env-1: the removal must cover them
    from mocksync.store.log import Store

    alice_home = Home(run.root / "alice")
    log = Store(alice_home.log_db)
    bob_key = load_identity(Home(run.root / "bob")).signing_key
    for i in range(2):
        log.commit_local(bob_key, space=doc["id"], env="env-1", device=bob_id, ops=[],
                         now_ms=1_000 + i)
    log.close()
    # remove Bob's device: key rotates, Bob is gone, Alice holds both generations
    r = ok(run("alice", "remove", "backend", bob_id.lower()))
    assert "rotated to generation 2" in r.stdout
    sp = get_space(Home(run.root / "alice"), "backend")
    assert not sp.state.is_member(bob_id) and sp.state.key_generation == 2
    assert set(sp.keys) == {1, 2} and not sp.state.rotation_needed
    members = json.loads(ok(run("alice", "members", "backend", "--json")).stdout)
    assert [d["id"] for d in members["removed_devices"]] == [bob_id]
    # the cut is keyed by env-1's relay tag (the relay applies it too; the log names no env)
    from mocksync.relay.envelope import Tagger

    tag = Tagger(sp.space_id, sp.keys)("env-1")
    assert members["removed_devices"][0]["covers"] == {tag: 2}
    assert sp.state.accepts_change(bob_id, tag, 2)
    assert not sp.state.accepts_change(bob_id, tag, 3)
    again = run("alice", "remove", "backend", bob_id)
    assert again.exit_code == 1 and "already removed" in again.stderr


def test_join_twice_is_refused(run, loopback):
    ok(run("alice", "init"))
    ok(run("alice", "space", "create", "backend"))
    ok(run("bob", "init", "--member", "Bob"))  # not alice's login name: a join needs its own
    ok(run("bob", "join", "--bind", "127.0.0.1", ok(run("alice", "invite", "backend")).stdout.strip()))
    r = run("bob", "join", "--bind", "127.0.0.1", ok(run("alice", "invite", "backend")).stdout.strip())
    # bob's copy of the log may be stale (removed while offline), so the admin device decides
    assert r.exit_code == 1 and "already a member of this space" in r.stderr


def test_every_command_has_help_with_examples(run):
    for args in (["init"], ["space"], ["space", "create"], ["space", "list"], ["invite"],
                 ["join"], ["members"], ["remove"], ["leave"]):
        r = ok(run("x", *args, "--help"))
        assert "Examples:" in r.stdout, args
        assert "mocksync" in r.stdout.split("Examples:")[1], args
