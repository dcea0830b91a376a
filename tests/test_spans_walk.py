"""A text rendered whole is walked ahead of the next patch (issue 15, the first edit).

After a whole render (a teammate's new environment, a layout change) the span index knows
no value end; the next remote edit's write then walked the whole text first (~0.15 s per
5 MB: the slowest edit of all). `walk_index` does that walk on a spare thread right after the
write; it must give the next patch exactly what the walk by the patch itself gives, and never
replace an index a write put in the cache meanwhile (the two run on different threads).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from mocksync.model import MOCKOON_LAYOUT, render, spans, state_from_doc
from mocksync.model.spans import index_unwalked, indexed_text, text_to_write, walk_index

from envfactory import small_env


def _edited(doc: dict[str, Any], label: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["routes"][1]["responses"][0]["label"] = label
    return out


def _written_whole(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cache: dict[str, Any] = {}
    text = text_to_write(None, doc, MOCKOON_LAYOUT, cache)
    assert text is not None
    return text, cache


def test_a_whole_render_leaves_an_unwalked_index_and_the_walk_learns_its_ends() -> None:
    doc = render(state_from_doc(small_env()))
    text, cache = _written_whole(doc)
    assert index_unwalked(cache)
    assert walk_index(cache) is True
    assert not index_unwalked(cache)
    assert indexed_text(cache) is text  # the same text, now with its value ends
    assert walk_index(cache) is False  # nothing left to learn


def test_the_patch_after_a_walk_is_the_patch_without_it() -> None:
    doc = render(state_from_doc(small_env()))
    edited = _edited(doc, "after the walk")
    text, walked = _written_whole(doc)
    _text, unwalked = _written_whole(doc)
    assert walk_index(walked)
    with_walk = text_to_write(text, edited, MOCKOON_LAYOUT, walked)
    without = text_to_write(text, edited, MOCKOON_LAYOUT, unwalked)
    assert with_walk is not None and with_walk == without
    assert '"after the walk"' in with_walk


def test_a_write_during_the_walk_keeps_its_own_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer (store worker) patches the file while the spare thread walks the old text:
    the walk's result is dropped, the writer's index stays (else the next write would find
    an index of a text the file no longer holds and parse it whole)."""
    doc = render(state_from_doc(small_env()))
    text, cache = _written_whole(doc)
    edited = _edited(doc, "written meanwhile")
    real_patch = spans._patch
    written: list[str | None] = []
    calls = []

    def patch_then_write(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        got = real_patch(*args, **kwargs)
        if len(calls) == 1:  # the walk's own call: a write lands before it stores its result
            written.append(text_to_write(text, edited, MOCKOON_LAYOUT, cache))
        return got

    monkeypatch.setattr(spans, "_patch", patch_then_write)
    assert walk_index(cache) is False
    assert written[0] is not None
    assert indexed_text(cache) == written[0]


def test_the_walk_runs_beside_a_writer_without_a_deadlock() -> None:
    """The walk and the writer take the same lock to store an index: both finish."""
    doc = render(state_from_doc(small_env()))
    text, cache = _written_whole(doc)
    done = threading.Event()

    def walk() -> None:
        walk_index(cache)
        done.set()

    t = threading.Thread(target=walk)
    t.start()
    for i in range(20):
        text = text_to_write(text, _edited(doc, f"edit {i}"), MOCKOON_LAYOUT, cache) or text
    t.join(10)
    assert done.is_set()
    assert '"edit 19"' in text
    assert indexed_text(cache) == text or index_unwalked(cache) is False
