"""What a save had seen (issue 11 item 8): the version vector of the version its editor had,
and, when the save could stem from several versions, only what all of them hold."""

from __future__ import annotations

import pytest

from mocksync.agent.editorsync import SeenVersions, meet, pick_base, tied_bases


def cost(a: dict, b: dict) -> int:
    return sum(1 for k in set(a) | set(b) if a.get(k) != b.get(k))


def test_a_save_one_op_from_two_versions_is_ambiguous():
    old = {"port": 3000, "name": "api"}
    theirs = {"port": 3001, "name": "api"}  # a teammate's edit we wrote 16 ms before the save
    saved = {"port": 3002, "name": "api"}  # the editor's save of the same property
    cands = [("old", old), ("theirs", theirs)]
    assert tied_bases(saved, cands, cost) == ["theirs", "old"]
    assert pick_base(saved, cands, cost) == "theirs"


def test_an_exact_match_or_a_clear_winner_is_not_ambiguous():
    old = {"port": 3000, "name": "api"}
    theirs = {"port": 3000, "name": "renamed"}
    assert tied_bases(dict(theirs), [("old", old), ("theirs", theirs)], cost) == ["theirs"]
    saved = {"port": 3002, "name": "renamed"}  # their rename kept, port edited: on top of it
    assert tied_bases(saved, [("old", old), ("theirs", theirs)], cost) == ["theirs"]
    with pytest.raises(ValueError):
        tied_bases(saved, [], cost)


def test_meet_keeps_what_every_version_holds():
    assert meet([{"A": 3, "B": 2}, {"A": 1, "B": 5, "C": 1}]) == {"A": 1, "B": 2}
    assert meet([{"A": 3}]) == {"A": 3}
    assert meet([]) == {}


def test_seen_versions_remember_the_last_few_per_environment():
    seen = SeenVersions(maxlen=2)
    seen.put("E", "v1", {"A": 1})
    seen.put("E", "v2", {"A": 2})
    seen.put("E", "v1", {"A": 1})  # again: now the most recent
    seen.put("E", "v3", {"A": 3})
    assert seen.get("E", "v2") is None  # the oldest went
    assert seen.get("E", "v1") == {"A": 1} and seen.get("E", "v3") == {"A": 3}
    got = seen.get("E", "v3")
    got["A"] = 99  # a copy: the caller cannot change what is kept
    assert seen.get("E", "v3") == {"A": 3}
    assert seen.get("E", None) is None and seen.get("F", "v1") is None
    seen.forget("E")
    assert seen.get("E", "v1") is None
    with pytest.raises(ValueError):
        SeenVersions(maxlen=0)
