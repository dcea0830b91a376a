"""Local files at linked paths, the pure part (issue #12): who linked a path, and whether the
file this device keeps there may be opened at all.

The attack these decisions close: a member links a path where a teammate keeps an unshared
file (`notes.txt`, `secrets/token.txt`) and sends no content for it; the teammate's next
local check must not read that file and commit it to the team. The black-box proof is
`tests/test_attack_linked_files.py`; here each rule is pinned down without disk or sockets.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from mocksync.model import render, snapshot_ops, to_wire, validate_ops
from mocksync.model.files import (
    DELETED,
    NO_ENTITY,
    UNREAD,
    Action,
    decide,
    judge_local_file,
    linked_by,
    linked_here,
    linked_paths,
    linked_paths_of_state,
    plan_links,
    relink_ops,
)
from mocksync.model.state import State

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "environments" / \
    "payments-callbacks.json"
#: Responses of the example with an INLINE body and no file path.
R1, R2 = "4a377247-7e2d-416c-a35c-930864201495", "9ec6cf92-d28a-4609-810e-d439ec92010c"
HONEST = {"fixtures/receipt.html", "fixtures/webhook.json", "tls/cert.pem", "tls/key.pem"}
S1, S2, S3 = "1" * 64, "2" * 64, "3" * 64


def shared_by_alice() -> tuple[State, str]:
    """The example environment as `alice` shares it (her change set 1)."""
    doc = json.loads(EXAMPLE.read_bytes())
    state = State(doc["uuid"])
    state.apply(validate_ops([to_wire(op) for op in snapshot_ops(doc, random.Random(2))]),
                (1, "alice"), ("alice", 1), {})
    return state, doc["uuid"]


def edit(state: State, ops: list[tuple], hlc: int, origin: tuple[str, int],
         deps: dict[str, int]) -> None:
    state.apply(validate_ops([to_wire(op) for op in ops]), (hlc, origin[0]), origin, deps)


def mine(state: State, device: str) -> set[str]:
    return linked_here(plan_links(linked_paths_of_state(state)), device, state.deps_of)


def link(resp: str, path: str) -> list[tuple]:
    return [("s", resp, ("v", "bodyType"), "FILE"), ("s", resp, ("v", "filePath"), path)]


# ------------------------------------------------------------------------------ who linked it


def test_the_sharer_linked_every_path_and_nobody_else_did() -> None:
    state, _env = shared_by_alice()
    assert mine(state, "alice") == HONEST
    assert mine(state, "bob") == set()


def test_a_path_linked_by_a_teammate_is_not_mine_and_one_i_linked_is() -> None:
    state, _env = shared_by_alice()
    edit(state, link(R1, "notes.txt"), 5, ("mallory", 1), {"alice": 1})
    edit(state, link(R2, "fixtures/bob.json"), 6, ("bob", 1), {"alice": 1, "mallory": 1})
    assert "notes.txt" not in mine(state, "bob")
    assert "notes.txt" in mine(state, "mallory")
    assert "fixtures/bob.json" in mine(state, "bob")


def test_a_teammate_flipping_the_body_to_file_under_my_old_path_does_not_make_it_mine() -> None:
    """Bob typed a path into an inline response; Mallory later makes the body FILE, with a
    stamp older than Bob's write (a member chooses its clock): causality decides, not stamps."""
    state, _env = shared_by_alice()
    edit(state, [("s", R1, ("v", "filePath"), "secrets/token.txt")], 50, ("bob", 1),
         {"alice": 1})
    edit(state, [("s", R1, ("v", "bodyType"), "FILE")], 3, ("mallory", 1),
         {"alice": 1, "bob": 1})
    refs = [r for r in linked_paths_of_state(state) if r.path == "secrets/token.txt"]
    assert refs and refs[0].origin == ("bob", 1) and refs[0].armed_by == (("mallory", 1),)
    assert "secrets/token.txt" not in mine(state, "bob")


def test_a_body_made_file_before_i_wrote_the_path_is_mine_and_a_concurrent_one_is_not() -> None:
    state, _env = shared_by_alice()
    edit(state, [("s", R1, ("v", "bodyType"), "FILE")], 2, ("mallory", 1), {"alice": 1})
    edit(state, [("s", R1, ("v", "filePath"), "fixtures/seen.json")], 3, ("bob", 1),
         {"alice": 1, "mallory": 1})  # Bob had Mallory's edit when he typed the path
    assert "fixtures/seen.json" in mine(state, "bob")
    edit(state, [("s", R2, ("v", "bodyType"), "FILE")], 4, ("mallory", 2), {"alice": 1})
    edit(state, [("s", R2, ("v", "filePath"), "fixtures/unseen.json")], 5, ("bob", 2),
         {"alice": 1, "mallory": 1})  # concurrent with Mallory's second edit
    assert "fixtures/unseen.json" not in mine(state, "bob")


def test_tls_paths_count_their_enabled_and_type_registers() -> None:
    state, env = shared_by_alice()
    tls = ("v", "tlsOptions")
    edit(state, [("s", env, (*tls, "keyPath"), "secrets/key.pem")], 5, ("mallory", 1),
         {"alice": 1})
    assert "secrets/key.pem" not in mine(state, "bob")
    edit(state, [("s", env, (*tls, "caPath"), "secrets/ca.pem")], 6, ("bob", 1),
         {"alice": 1, "mallory": 1})
    assert "secrets/ca.pem" in mine(state, "bob")
    # Mallory turns TLS off and on again: nothing under it is Bob's link any more.
    edit(state, [("s", env, (*tls, "enabled"), False)], 7, ("mallory", 2),
         {"alice": 1, "bob": 1})
    edit(state, [("s", env, (*tls, "enabled"), True)], 8, ("mallory", 3),
         {"alice": 1, "bob": 1})
    assert "secrets/ca.pem" not in mine(state, "bob")


def test_a_reference_from_a_document_has_no_author() -> None:
    doc = json.loads(EXAMPLE.read_bytes())
    for ref in linked_paths(doc):
        assert ref.origin is None and not linked_by(ref, "alice", lambda _o: {})


def test_relink_ops_make_a_teammates_links_mine_and_change_nothing_rendered() -> None:
    state, env = shared_by_alice()
    tls = ("v", "tlsOptions")
    edit(state, link(R1, "notes.txt") + [("s", env, (*tls, "keyPath"), "secrets/key.pem")],
         5, ("mallory", 1), {"alice": 1})
    before = render(state)
    links = [lk for lk in plan_links(linked_paths_of_state(state))
             if lk.rel in ("notes.txt", "secrets/key.pem")]
    assert len(links) == 2 and mine(state, "bob") == set()
    ops = relink_ops(env, [r for lk in links for r in lk.refs])
    assert len(ops) == 2
    edit(state, ops, 6, ("bob", 1), {"alice": 1, "mallory": 1})
    assert mine(state, "bob") == {"notes.txt", "secrets/key.pem"}
    assert render(state) == before


# ------------------------------------------------------------------------------ may it be read


@pytest.mark.parametrize("team,seen,is_mine,had,readable", [
    (NO_ENTITY, None, False, False, False),  # the attack: a teammate linked it, sent nothing
    (DELETED, None, False, False, False),  # ... or sent a deletion
    (NO_ENTITY, None, True, False, True),  # I linked it: my file goes to the team
    (NO_ENTITY, S1, False, False, True),  # the synced file (I wrote or committed it before)
    (DELETED, S1, False, False, True),
    (DELETED, None, False, True, True),  # it was synced here until deleted: made again
    (S1, None, False, False, True),  # the team has content: only compared, never sent
])
def test_judge_local_file(team: str, seen: str | None, is_mine: bool, had: bool,
                          readable: bool) -> None:
    v = judge_local_file("secrets/token.txt", team, seen, mine=is_mine, had=had,
                         env_label="api.json")
    assert v.readable is readable
    if readable:
        assert v.reason == ""
    else:
        assert "a teammate's edit linked secrets/token.txt" in v.reason
        assert "`mocksync adopt api.json secrets/token.txt`" in v.reason


def test_the_share_command_in_the_reason_is_quoted_for_a_shell() -> None:
    v = judge_local_file("my notes/a;b.txt", NO_ENTITY, None, mine=False, env_label="api.json")
    assert "`mocksync adopt api.json 'my notes/a;b.txt'`" in v.reason


def test_decide_never_commits_a_local_file_a_teammate_linked() -> None:
    assert decide(NO_ENTITY, UNREAD, None, local=True, confirmed=False) == Action.UNCONFIRMED
    assert decide(DELETED, UNREAD, None, local=False, confirmed=False) == Action.UNCONFIRMED
    assert decide(NO_ENTITY, S1, None, local=True, confirmed=True) == Action.COMMIT
    assert decide(NO_ENTITY, UNREAD, None, local=True, referenced=False,
                  confirmed=False) == Action.NOTHING
    # Once synced here, later edits travel as before.
    assert decide(S1, S2, S1, local=True, confirmed=False) == Action.COMMIT
    assert decide(NO_ENTITY, S2, S2, local=True, confirmed=False) == Action.COMMIT


def test_what_is_not_readable_is_never_sent_and_always_unconfirmed() -> None:
    """Over every combination: the file `judge_local_file` keeps closed is never committed
    by `decide`, and it is UNCONFIRMED exactly when a file is there and the path is linked;
    whatever is readable and not mine is never committed without a synced `seen`."""
    teams = (NO_ENTITY, DELETED, S1, S2)
    disks: tuple[Any, ...] = (None, S1, S2, S3)
    for team, disk, seen, local, referenced, is_mine, had in itertools.product(
            teams, disks, (None, S1, S2), (True, False), (True, False), (True, False),
            (True, False)):
        v = judge_local_file("a.txt", team, seen, mine=is_mine, had=had)
        shown = disk if v.readable or disk is None else UNREAD
        action = decide(team, shown, seen, local=local, referenced=referenced,
                        confirmed=is_mine or had)
        if not v.readable:
            assert action not in (Action.COMMIT, Action.COMMIT_OVER, Action.WRITE,
                                  Action.ADOPT), (team, disk, seen, local, referenced)
            assert (action == Action.UNCONFIRMED) == (disk is not None and referenced)
        elif not (is_mine or had) and seen is None and disk is not None:
            assert action not in (Action.COMMIT, Action.COMMIT_OVER), (team, disk, local)
