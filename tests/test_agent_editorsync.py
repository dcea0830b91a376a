"""Editor interop rules (pure): blind window, base choice, version history."""

from __future__ import annotations

import math

import pytest

from mocksync.agent.editorsync import (
    EDITOR_BLIND_S,
    WRITE_HOLD_S,
    BlindWindow,
    VersionHistory,
    pick_base,
)


def test_hold_is_longer_than_mockoons_blind_period() -> None:
    assert WRITE_HOLD_S == 3.5 and WRITE_HOLD_S > EDITOR_BLIND_S


def test_blind_window() -> None:
    w = BlindWindow()
    assert w.can_write("a.json", 0.0)
    assert w.write_not_before("a.json") == -math.inf
    w.note_editor_save("a.json", 100.0)
    assert not w.can_write("a.json", 100.0)
    assert not w.can_write("a.json", 103.49)
    assert w.can_write("a.json", 103.5)
    assert w.write_not_before("a.json") == 103.5
    assert w.can_write("b.json", 100.0)  # per file
    # A later save pushes the window; an out-of-order earlier note does not pull it back.
    w.note_editor_save("a.json", 102.0)
    w.note_editor_save("a.json", 101.0)
    assert w.write_not_before("a.json") == 105.5
    w.prune(105.0)
    assert w.write_not_before("a.json") == 105.5
    w.prune(105.5)
    assert w.write_not_before("a.json") == -math.inf
    w.note_editor_save("a.json", 1.0)
    w.forget("a.json")
    assert w.can_write("a.json", 1.0)


def test_blind_window_custom_hold_and_paths() -> None:
    from pathlib import Path

    w = BlindWindow(hold_s=0.5)
    w.note_editor_save(Path("/x/a.json"), 10.0)
    assert w.write_not_before("/x/a.json") == 10.5
    with pytest.raises(ValueError):
        BlindWindow(hold_s=-1)


def count_diff(base: dict, saved: dict) -> int:
    keys = set(base) | set(saved)
    return sum(1 for k in keys if base.get(k) != saved.get(k))


def test_pick_base_fewest_ops() -> None:
    loaded = {"a": 1, "b": 1, "c": 1}
    remote1 = {"a": 1, "b": 2, "c": 1}  # a teammate changed b
    remote2 = {"a": 1, "b": 2, "c": 2}  # ... and c
    # The editor never saw the remote writes; its save changes only a.
    saved = {"a": 9, "b": 1, "c": 1}
    cands = [("L", loaded), ("R1", remote1), ("R2", remote2)]
    assert pick_base(saved, cands, count_diff) == "L"
    # The editor had reloaded R1 before editing.
    assert pick_base({"a": 9, "b": 2, "c": 1}, cands, count_diff) == "R1"


def test_pick_base_ties_go_to_most_recent_and_zero_stops_early() -> None:
    calls: list[str] = []

    def cost(base: dict, saved: dict) -> int:
        calls.append(base["id"])
        return 0 if base["id"] in ("B", "C") else 1

    cands = [("A", {"id": "A"}), ("B", {"id": "B"}), ("C", {"id": "C"})]
    assert pick_base({}, cands, cost) == "C"
    assert calls == ["C"]  # nothing beats zero ops, and the latest wins ties
    assert pick_base({}, [("x", {}), ("y", {})], lambda b, s: 3) == "y"
    with pytest.raises(ValueError):
        pick_base({}, [], lambda b, s: 0)


def test_version_history_candidates() -> None:
    h = VersionHistory(maxlen=3)
    assert h.candidates("e.json") == []
    h.record_write("e.json", "w1", {"v": 1})
    h.record_write("e.json", "w2", {"v": 2})
    assert h.candidates("e.json") == [("w1", {"v": 1}), ("w2", {"v": 2})]
    h.note_loaded("e.json", "s1", {"v": "saved"})  # the editor saved: it holds s1 now
    assert h.candidates("e.json") == [("s1", {"v": "saved"})]
    h.record_write("e.json", "w3", {"v": 3})
    h.record_write("e.json", "w4", {"v": 4})
    assert h.candidates("e.json") == [("s1", {"v": "saved"}), ("w3", {"v": 3}), ("w4", {"v": 4})]
    h.record_write("e.json", "w5", {"v": 5})
    h.record_write("e.json", "w6", {"v": 6})  # only the last 3 writes are kept
    assert [v.sha256 for v in h.written("e.json")] == ["w4", "w5", "w6"]
    assert h.candidates("e.json")[0] == ("s1", {"v": "saved"})  # loaded is kept regardless
    assert h.find("e.json", "w5") == {"v": 5}
    assert h.find("e.json", "s1") == {"v": "saved"}
    assert h.find("e.json", "w1") is None
    assert h.loaded("e.json").sha256 == "s1"
    assert h.candidates("other.json") == []
    h.forget("e.json")
    assert h.candidates("e.json") == [] and h.loaded("e.json") is None


def test_version_history_rewrite_moves_to_end_and_loaded_write_not_repeated() -> None:
    h = VersionHistory()
    h.record_write("e.json", "a", 1)
    h.record_write("e.json", "b", 2)
    h.record_write("e.json", "a", 1)  # content went back to a: a is the most recent
    assert [v.sha256 for v in h.written("e.json")] == ["b", "a"]
    h.note_loaded("e.json", "b", 2)
    h.record_write("e.json", "b", 2)  # same content as loaded: not a second candidate
    h.record_write("e.json", "c", 3)
    assert [label for label, _ in h.candidates("e.json")] == ["b", "c"]
    with pytest.raises(ValueError):
        VersionHistory(maxlen=0)


def test_stale_editor_save_does_not_revert_a_teammates_edit() -> None:
    """The scenario docs/design/merge.md warns about, end to end through the pure pieces."""
    window = BlindWindow()
    history = VersionHistory()
    path = "env.json"
    v0 = {"port": 3000, "name": "api"}
    history.note_loaded(path, "h0", v0)
    window.note_editor_save(path, now=10.0)
    # A teammate renames the environment; we must not write during the editor's blind window.
    assert not window.can_write(path, now=11.0)
    assert window.can_write(path, now=13.5)
    v1 = {"port": 3000, "name": "payments"}
    history.record_write(path, "h1", v1)
    # The editor (watcher disabled) never reloaded; the user changes the port and saves.
    saved = {"port": 4000, "name": "api"}
    base = pick_base(saved, history.candidates(path), count_diff)
    assert base == "h0"  # diffing against h1 would emit name: payments -> api, a revert
