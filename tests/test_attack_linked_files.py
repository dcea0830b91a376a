"""Attack (issue #12): a malicious member plants files through linked-file entities.

The reported attack: a member uploaded a file entity at `.git/hooks/pre-commit` with mode
0755 that no environment references; the victim's daemon wrote it, `status` said nothing,
and the victim's next `git commit` ran it.

A second attack (found by G2): a member links a path where a teammate keeps an unshared
file (a FILE body's `filePath`, a TLS path, or a response made FILE under a path the victim
once typed) and sends no content for it; the victim's next local check must not read that
file and send it. See `test_a_member_linking_a_teammates_local_file_never_receives_it`.

Three devices of three members on one space (in-process daemons on a LocalBus, which hands
every change set to the receiver's store to verify like the real transports): Alice shares
an environment honestly, Bob is the victim, Mallory is a member whose change sets are made
and signed by the library's own code (`Agent._commit` -> `Store.commit_local`) but whose ops
no honest device makes. What must hold on Bob: nothing planted is written (not the hook,
not `../x`, not through a symlinked folder, not an unlinked `notes.txt`, not over Bob's own
unsynced file), each is named in Bob's `status` (JSON and text) with its reason, and honest
edits keep flowing both ways afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mocksync.agent.bus import LocalBus
from mocksync.agent.daemon import Agent
from mocksync.errors import ValidationError
from mocksync.model.files import CONTENT_REG, PATH_REG, file_entities, file_uuid
from mocksync.spaceio.store import append_entries, get_space

from helpers.agents import env_status, make_agent, running, settle
from helpers.devices import Device, make_device, team_space
from helpers.files import copy_example, edit_file, read_doc
from helpers.polling import wait_until

HOOK = b"#!/bin/sh\necho PWNED > /tmp/pwned\n"
#: Bob's own files in his synced folder that no environment shared (the exfiltration bait).
BOBS_PRIVATE = {"notes.txt": b"bob's private notes: salary talk on friday\n",
                "secrets/token.txt": b"ghp_bobs-personal-token-never-shared\n",
                "secrets/draft.txt": b"bob's draft reply, not for the team\n"}
#: Three inline responses of payments-callbacks.json.
R1, R2, R3 = ("4a377247-7e2d-416c-a35c-930864201495", "9ec6cf92-d28a-4609-810e-d439ec92010c",
              "b4a4a3cf-47ba-4080-a9ab-7589acc13e36")
BOBS_NOTES = b"bob's own webhook draft, never synced\n"


@dataclass
class Team:
    alice: Agent
    bob: Agent
    mallory: Agent
    dev_alice: Device
    dev_bob: Device
    dev_mallory: Device
    outside: Path  # a folder next to Bob's synced folder that nothing may touch


@pytest.fixture
async def team(tmp_path: Path) -> AsyncIterator[Team]:
    devs = [make_device(tmp_path, n) for n in ("alice", "bob", "mallory")]
    space = team_space(*devs)
    entries = get_space(devs[0].home, space).entries  # everyone knows the whole membership
    for dev in devs[1:]:
        append_entries(dev.home, space, entries)
    bus = LocalBus()
    agents = [make_agent(d, bus) for d in devs]
    for ag in agents:
        ag.linked.poll_s = 0.05
    outside = tmp_path / "outside"
    outside.mkdir()
    async with running(*agents):
        yield Team(*agents, *devs, outside)


def raw_content(data: bytes, mode: int) -> dict[str, Any]:
    """A content register value as a hostile client writes it (any mode it likes)."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "mode": mode,
            "b64": base64.b64encode(data).decode("ascii")}


def plant(env: str, rel: str, data: bytes, mode: int = 0o755) -> tuple:
    return ("c", file_uuid(env, rel), "file", [(PATH_REG, rel), (CONTENT_REG, raw_content(data,
                                                                                         mode))])


def put(folder: Path, rel: str, data: bytes) -> None:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def rows(agent: Agent, env: str) -> dict[str, dict[str, Any]]:
    row = env_status(agent, env)
    assert row is not None
    return {lk["path"]: lk for lk in row["linked"]}


def status_text(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> str:
    """`mocksync status` as the user reads it, rendered from this daemon's status."""
    from mocksync.cli import daemoncmds, main

    monkeypatch.setattr(daemoncmds, "_call", lambda _ctx, method, **_kw: agent.status())
    res = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["--home", str(agent.home.root),
                                                          "status"])
    assert res.exit_code == 0, res.output
    return res.stdout


def executables(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not p.is_symlink() and os.stat(p).st_mode & 0o111)


async def test_a_malicious_member_cannot_plant_files(team: Team,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fa, fb = team.dev_alice.folder, team.dev_bob.folder
    # Bob's folder is a git work tree, keeps his TLS files in a folder reached by a symlink,
    # and has his own draft where the environment's webhook body will be.
    (fb / ".git/hooks").mkdir(parents=True)
    (fb / "certs").mkdir()
    os.symlink(fb / "certs", fb / "tls")
    put(fb, "fixtures/webhook.json", BOBS_NOTES)
    await team.bob.transport.stop()  # Bob is away while Alice shares and Mallory plants

    src = copy_example("payments-callbacks.json", fa, "payments.json")
    put(fa, "fixtures/receipt.html", b"<p>receipt</p>\n")
    put(fa, "tls/cert.pem", b"ALICE CERT\n")
    put(fa, "tls/key.pem", b"ALICE KEY\n")  # (webhook.json: not on Alice's machine)
    env = team.alice.share(str(src), space="team")["uuid"]
    await wait_until(lambda: env in team.mallory.envs, "Mallory to have the environment")
    await settle(team.alice, team.mallory)

    hostile = [
        plant(env, ".git/hooks/pre-commit", HOOK),  # the reported attack
        plant(env, "../x", b"escaped\n"),
        plant(env, "notes.txt", b"unlinked\n", 0o644),
        ("s", file_uuid(env, "tls/cert.pem"), CONTENT_REG, raw_content(b"MALLORY CERT\n", 0o755)),
        plant(env, "fixtures/webhook.json", b'{"event": "mallory"}\n'),
    ]
    team.mallory._commit(team.mallory.envs[env], hostile)
    await settle(team.alice, team.mallory)

    await team.bob.transport.start(team.bob)  # Bob catches up: everything arrives at once
    await wait_until(lambda: env in team.bob.envs and (fb / "fixtures/receipt.html").exists(),
                     "Bob to have the environment and its honest files")
    await wait_until(lambda: rows(team.bob, env).get("fixtures/webhook.json", {}).get("state")
                     == "conflict", "Bob's own webhook draft shown as a conflict")
    await settle(team.alice, team.bob, team.mallory)

    # Nothing planted was written on Bob's machine.
    assert not (fb / ".git/hooks/pre-commit").exists()
    assert not (fb.parent / "x").exists() and not (fb / "x").exists()
    assert not (fb / "notes.txt").exists()
    assert list((fb / "certs").iterdir()) == []  # not through the symlinked folder
    assert (fb / "fixtures/webhook.json").read_bytes() == BOBS_NOTES  # not over his own file
    assert executables(fb) == []
    assert (fb / "fixtures/receipt.html").read_bytes() == b"<p>receipt</p>\n"  # honest: in

    # Each one is named in Bob's status, with its reason.
    r = rows(team.bob, env)
    assert r[".git/hooks/pre-commit"]["state"] == "refused"
    assert "(.git) starts with '.'" in r[".git/hooks/pre-commit"]["reason"]
    assert r["../x"]["state"] == "refused"
    assert "leaves the synced folder" in r["../x"]["reason"]
    assert r["notes.txt"]["state"] == "refused"
    assert "no environment links this path" in r["notes.txt"]["reason"]
    for rel in ("tls/cert.pem", "tls/key.pem"):
        assert r[rel]["state"] == "refused" and "symlink" in r[rel]["reason"], r[rel]
    assert r["fixtures/webhook.json"]["state"] == "conflict"
    assert "never synced" in r["fixtures/webhook.json"]["reason"]
    text = status_text(team.bob, monkeypatch)
    for needle in (".git/hooks/pre-commit: refused", "../x: refused", "notes.txt: refused",
                   "tls/cert.pem: refused", "fixtures/webhook.json: conflict"):
        assert needle in text, text

    # Bob's own draft was never sent; Alice got Mallory's linked webhook body, without the
    # exec bit, and nothing unlinked or hidden.
    assert (fa / "fixtures/webhook.json").read_bytes() == b'{"event": "mallory"}\n'
    assert stat.S_IMODE(os.stat(fa / "fixtures/webhook.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(fa / "tls/cert.pem").st_mode) == 0o644
    assert not (fa / ".git").exists() and not (fa / "notes.txt").exists()
    assert executables(fa) == []

    # Honest edits keep flowing, both ways.
    def relabel(value: str):
        def fn(doc: dict[str, Any]) -> None:
            doc["routes"][0]["responses"][0]["label"] = value
        return fn

    edit_file(team.alice.envs[env].path, relabel("from alice"))
    put(fa, "fixtures/receipt.html", b"<p>receipt v2</p>\n")
    await wait_until(lambda: read_doc(team.bob.envs[env].path)["routes"][0]["responses"][0]
                     ["label"] == "from alice", "Alice's edit on Bob")
    await wait_until(lambda: (fb / "fixtures/receipt.html").read_bytes()
                     == b"<p>receipt v2</p>\n", "Alice's fixture edit on Bob")
    edit_file(team.bob.envs[env].path, relabel("from bob"))
    await wait_until(lambda: read_doc(team.alice.envs[env].path)["routes"][0]["responses"][0]
                     ["label"] == "from bob", "Bob's edit on Alice")
    await settle(team.alice, team.bob, team.mallory)
    assert not (fb / ".git/hooks/pre-commit").exists() and executables(fb) == []


async def test_a_planted_file_is_refused_live_while_an_honest_linked_one_arrives(
        team: Team) -> None:
    """While Bob is online: Mallory's unlinked script is refused at once and stays refused;
    a script Alice links in the environment (an honest edit) arrives, without its exec bit."""
    fa, fb = team.dev_alice.folder, team.dev_bob.folder
    src = copy_example("payments-callbacks.json", fa, "payments.json")
    put(fa, "fixtures/receipt.html", b"r\n")
    env = team.alice.share(str(src), space="team")["uuid"]
    await wait_until(lambda: env in team.mallory.envs and env in team.bob.envs
                     and (fb / "fixtures/receipt.html").exists(), "everyone to have it")
    team.mallory._commit(team.mallory.envs[env],
                         [plant(env, "scripts/deploy.sh", b"#!/bin/sh\nrm -rf ~\n")])
    await wait_until(lambda: rows(team.bob, env).get("scripts/deploy.sh"),
                     "the planted file named in Bob's status")
    assert "no environment links" in rows(team.bob, env)["scripts/deploy.sh"]["reason"]

    put(fa, "scripts/seed.sh", b"echo honest\n")
    os.chmod(fa / "scripts/seed.sh", 0o755)

    def link(doc: dict[str, Any]) -> None:
        r = doc["routes"][0]["responses"][0]
        r["bodyType"], r["filePath"] = "FILE", "scripts/seed.sh"

    edit_file(team.alice.envs[env].path, link)
    await wait_until(lambda: (fb / "scripts/seed.sh").read_bytes() == b"echo honest\n",
                     "Alice's linked file on Bob")
    assert stat.S_IMODE(os.stat(fb / "scripts/seed.sh").st_mode) == 0o644
    await wait_until(lambda: rows(team.bob, env)["scripts/seed.sh"]["state"] == "synced",
                     "the linked file synced on Bob")
    await settle(team.alice, team.bob, team.mallory)
    assert not (fb / "scripts/deploy.sh").exists() and executables(fb) == []
    assert rows(team.bob, env)["scripts/deploy.sh"]["state"] == "refused"


async def test_an_environment_from_a_peer_gets_a_plain_file_name_in_the_folder(
        team: Team) -> None:
    """The name of a teammate's environment becomes a plain file name directly in the
    folder: no separator, no hidden name, never a name taken by a (dangling) symlink."""
    fb = team.dev_bob.folder
    os.symlink(team.outside / "planted.json", fb / "git-hooks-pre-commit.json")  # dangling
    env = team.mallory.new("../../.git/hooks/pre-commit", "team")["uuid"]
    await wait_until(lambda: env in team.bob.envs and team.bob.envs[env].path.exists(),
                     "Bob to have Mallory's environment")
    await settle(team.bob, team.mallory)
    path = team.bob.envs[env].path
    assert path.parent == fb and path.name == "git-hooks-pre-commit-2.json"
    assert read_doc(path)["uuid"] == env
    assert list(team.outside.iterdir()) == []  # not written through the symlink
    assert not (fb / ".git").exists() and not (fb.parent / ".git").exists()


def _response(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    return next(r for route in doc["routes"] for r in route["responses"] if r["uuid"] == uuid)


def _received(agent: Agent, env: str, rel: str) -> Any:
    """The content a device holds in its log for linked path `rel` (None: nothing)."""
    ent = file_entities(agent.store.state(env)).get(rel)
    return None if ent is None else ent.get(CONTENT_REG, None)


async def test_a_member_linking_a_teammates_local_file_never_receives_it(
        team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mallory links three paths where Bob keeps files he never shared: a response's body
    (an ordinary save of her file: the stock client does it), the TLS certificate (ops
    signed by the library's own code), and an inline response Bob once typed a path into,
    which she makes a FILE body. Bob's daemon polls, and Bob saves the environment: none of
    his files is even opened, nothing reaches Alice or Mallory, and Bob's `status` names each
    as `unconfirmed` with how to share it. `mocksync adopt ENV PATH` shares one on purpose;
    a file Bob links himself reaches the team as before."""
    fa, fb, fm = team.dev_alice.folder, team.dev_bob.folder, team.dev_mallory.folder
    src = copy_example("payments-callbacks.json", fa, "payments.json")
    put(fa, "fixtures/receipt.html", b"<p>receipt</p>\n")
    env = team.alice.share(str(src), space="team")["uuid"]
    await wait_until(lambda: env in team.mallory.envs and env in team.bob.envs
                     and team.bob.envs[env].path.exists() and team.mallory.envs[env].path.exists()
                     and (fb / "fixtures/receipt.html").exists(), "everyone to have it")
    await settle(team.alice, team.bob, team.mallory)
    for rel, data in BOBS_PRIVATE.items():
        put(fb, rel, data)

    def typed_a_path(doc: dict[str, Any]) -> None:  # Bob, long ago: the body stays inline
        _response(doc, R2)["filePath"] = "secrets/draft.txt"

    edit_file(team.bob.envs[env].path, typed_a_path)
    await wait_until(lambda: _response(read_doc(team.mallory.envs[env].path), R2)["filePath"]
                     == "secrets/draft.txt", "Bob's typed path on Mallory")

    opened: list[Path] = []
    from mocksync.agent import linked as linked_mod

    def watching(real: Any) -> Any:
        def fn(path: Any, *a: Any, **kw: Any) -> Any:
            opened.append(Path(path))
            return real(path, *a, **kw)
        return fn

    monkeypatch.setattr(linked_mod, "open_regular", watching(linked_mod.open_regular))
    monkeypatch.setattr(linked_mod, "read_regular", watching(linked_mod.read_regular))

    def link_notes(doc: dict[str, Any]) -> None:  # Mallory's ordinary save
        r = _response(doc, R1)
        r["bodyType"], r["filePath"] = "FILE", "notes.txt"

    edit_file(team.mallory.envs[env].path, link_notes)
    tls = ("v", "tlsOptions")
    team.mallory._commit(team.mallory.envs[env], [
        ("s", env, (*tls, "certPath"), "secrets/token.txt"),
        ("s", R2, ("v", "bodyType"), "FILE"),
    ])
    await wait_until(lambda: all(rows(team.bob, env).get(rel, {}).get("state") == "unconfirmed"
                                 for rel in BOBS_PRIVATE), "Bob's files shown as unconfirmed")
    # Bob's daemon keeps looking: a save of the environment, and edits of the files.
    edit_file(team.bob.envs[env].path, lambda d: _response(d, R1).update(label="bob saved"))
    for rel, data in BOBS_PRIVATE.items():
        put(fb, rel, data + b"edited\n")
    await wait_until(lambda: _response(read_doc(team.alice.envs[env].path), R1)["label"]
                     == "bob saved", "Bob's save on Alice")
    await asyncio.sleep(0.3)  # several polls of the edited files
    await settle(team.alice, team.bob, team.mallory)

    victims = {fb / rel for rel in BOBS_PRIVATE}
    assert not victims & {p.resolve() for p in opened}, opened  # never even opened
    for agent, folder in ((team.alice, fa), (team.mallory, fm), (team.bob, fb)):
        for rel in BOBS_PRIVATE:
            assert _received(agent, env, rel) is None, (agent.device, rel)
            if folder != fb:
                assert not (folder / rel).exists(), (folder, rel)
    r = rows(team.bob, env)
    for rel in BOBS_PRIVATE:
        assert r[rel]["state"] == "unconfirmed", r[rel]
        assert f"a teammate's edit linked {rel}" in r[rel]["reason"]
        assert f"mocksync adopt payments.json {rel}" in r[rel]["reason"]
    text = status_text(team.bob, monkeypatch)
    for rel in BOBS_PRIVATE:
        assert f"{rel}: unconfirmed: not read or sent" in text, text
    # Never sent, so never counted toward Bob's size quota (only the receipt he received is).
    assert team.bob.linked.quota_bytes(read_doc(team.bob.envs[env].path)) == (
        1, len(b"<p>receipt</p>\n"))

    # A path nobody linked is refused, and changes nothing.
    with pytest.raises(ValidationError, match="nothing to adopt at nope.txt"):
        team.bob.linked.adopt(env, ["nope.txt"])
    # Mallory also links a file outside Bob's folder by an absolute path, which `status`
    # says to `adopt`: Bob's plain `adopt ENV` skips whatever a teammate linked, unread.
    key = team.outside / "id_rsa"
    key.write_bytes(b"bob's ssh key\n")
    team.mallory._commit(team.mallory.envs[env], [("s", R3, ("v", "bodyType"), "FILE"),
                                                  ("s", R3, ("v", "filePath"), str(key))])
    await wait_until(lambda: rows(team.bob, env).get(str(key), {}).get("state") == "outside",
                     "Mallory's absolute path in Bob's status")
    res = team.bob.linked.adopt(env)
    assert res["adopted"] == [] and res["shared"] == [], res
    assert {sk["path"] for sk in res["skipped"]} == {str(key), "notes.txt",
                                                      "secrets/token.txt", "secrets/draft.txt"}
    assert key.resolve() not in {p.resolve() for p in opened}
    assert not (fb / "payments").exists()
    # Bob shares one on purpose, through the CLI: it reaches the team; the others stay home.
    from mocksync.cli import daemoncmds, main

    monkeypatch.setattr(daemoncmds, "_call", lambda _ctx, method, **kw:
                        team.bob.linked.adopt(kw["env"], kw.get("paths")))
    res = CliRunner().invoke(main, ["--home", str(team.bob.home.root), "adopt",
                                    "payments.json", "notes.txt"])
    assert res.exit_code == 0, res.output
    assert "shared notes.txt" in res.stdout
    notes = BOBS_PRIVATE["notes.txt"] + b"edited\n"
    await wait_until(lambda: (fa / "notes.txt").exists()
                     and (fa / "notes.txt").read_bytes() == notes, "Bob's notes on Alice")
    await wait_until(lambda: rows(team.bob, env)["notes.txt"]["state"] == "synced",
                     "notes.txt synced on Bob")
    await settle(team.alice, team.bob, team.mallory)
    for rel in ("secrets/token.txt", "secrets/draft.txt"):
        assert _received(team.alice, env, rel) is None and not (fa / rel).exists()
        assert rows(team.bob, env)[rel]["state"] == "unconfirmed"
    assert not {fb / "secrets/token.txt", fb / "secrets/draft.txt"} & {
        p.resolve() for p in opened}

    # The honest flow: a file Bob links himself, and has, reaches everyone.
    put(fb, "fixtures/bob.json", b'{"from": "bob"}\n')

    def bob_links(doc: dict[str, Any]) -> None:
        cb = next(c for c in doc["callbacks"] if c["bodyType"] == "INLINE")
        cb["bodyType"], cb["filePath"] = "FILE", "fixtures/bob.json"

    edit_file(team.bob.envs[env].path, bob_links)
    for folder in (fa, fm):
        await wait_until(lambda f=folder: (f / "fixtures/bob.json").exists()
                         and (f / "fixtures/bob.json").read_bytes() == b'{"from": "bob"}\n',
                         f"Bob's linked file in {folder.name}")
