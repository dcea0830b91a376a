"""Bases stored as a delta against an anchor, and incremental size accounting (issue 15):
each incremental structure is checked against the whole computation it replaces."""

from __future__ import annotations

import copy
import random
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.agent.writer import content_hash
from mocksync.devtools.envgen import generate_env
from mocksync.model import dumps
from mocksync.model.envsize import SizeMemo, quick_compact_size
from mocksync.model.reparse import COMPARE_CHUNK
from mocksync.store import Store
from mocksync.store import basedelta as bd

ENV = "e" * 32


def _text(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(b'{}[]":, abcdefghij\n') for _ in range(n))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 300),
       st.binary(max_size=40))
def test_delta_rebuilds_the_text(anchor: bytes, other: bytes, cut: int, insert: bytes) -> None:
    for text in (other, anchor[:cut] + insert + anchor[cut + len(insert):]):
        head = bd.common_head(anchor, text)
        tail = bd.common_tail(anchor, text, min(len(anchor), len(text)) - head)
        assert anchor[:head] == text[:head]
        assert tail == 0 or anchor[-tail:] == text[-tail:]
        assert head + tail <= min(len(anchor), len(text))
        d = bd.make_delta(anchor, "a" * 64, text)
        if d is None:
            assert (len(text) - head - tail) * bd.MAX_DELTA_SHARE > len(text)
            continue
        back = bd.decode_delta(bd.encode_delta(d))
        assert back == d
        assert back.apply(anchor) == text


def test_common_head_and_tail_cross_chunk_borders() -> None:
    chunk = COMPARE_CHUNK  # the store compares bytes with the reparser's slices
    a = _text(3 * chunk + 17, 1)
    for at in (0, 1, chunk - 1, chunk, 2 * chunk + 5, len(a) - 1):
        b = a[:at] + b"#" + a[at + 1:]
        assert bd.common_head(a, b) == at
        assert bd.common_tail(a, b, len(a) - at) == len(a) - at - 1


def test_a_big_change_is_not_a_delta_and_a_damaged_one_is_refused() -> None:
    a = _text(50_000, 2)
    assert bd.make_delta(a, "a" * 64, _text(50_000, 3)) is None
    with pytest.raises(bd.BaseDeltaError):
        bd.decode_delta(b"not a delta")
    d = bd.Delta("a" * 64, 10, 10, b"x")
    with pytest.raises(bd.BaseDeltaError):
        d.apply(b"short")
    big = bd.Delta("b" * 64, 0, 0, _text(bd.COMPRESS_DELTA_OVER + 1, 4))
    assert bd.decode_delta(bd.encode_delta(big)) == big  # (stored compressed)


def _versions(n: int) -> list[bytes]:
    """Successive versions of a 60 KB file: mostly one-value edits, one big rewrite."""
    doc = generate_env(60_000, seed=21)
    out = [dumps(doc).encode()]
    rng = random.Random(5)
    for i in range(n):
        if i == n // 2:
            doc["routes"] = list(reversed(doc["routes"]))  # most of the text moves
        else:
            rng.choice(rng.choice(doc["routes"])["responses"])["label"] = f"edit {i} é"
        out.append(dumps(doc).encode())
    return out


def test_store_keeps_each_base_and_reads_it_back_after_a_restart(tmp_path) -> None:
    path = tmp_path / "log.db"
    s = Store(path)
    versions = _versions(12)
    for i, text in enumerate(versions):
        s.set_base(ENV, f"/f{i}.json", content_hash(text), text, seen={"D": i})
        assert s.get_base(ENV) == (f"/f{i}.json", content_hash(text), text)
        assert s.base_sha(ENV) == (f"/f{i}.json", content_hash(text))
        assert s.base_seen(ENV, content_hash(text)) == {"D": i}
    # Most versions were stored as a small delta, not a whole text.
    blob = s.db.execute("SELECT text FROM bases WHERE env=?", (ENV,)).fetchone()[0]
    assert bd.is_delta(bytes(blob)) and len(blob) < 1000
    s.close()
    again = Store(path)  # no anchor in memory: read from the log
    assert again.get_base(ENV) == ("/f12.json", content_hash(versions[-1]), versions[-1])
    small = b'{"uuid": "x"}'
    again.set_base(ENV, "/s.json", content_hash(small), small)
    assert again.get_base(ENV) == ("/s.json", content_hash(small), small)
    again.forget_env(ENV)
    assert again.get_base(ENV) is None and again.base_sha(ENV) is None
    assert again.db.execute("SELECT COUNT(*) FROM base_anchor").fetchone()[0] == 0
    again.close()


def test_a_base_whose_anchor_is_damaged_is_no_base(tmp_path) -> None:
    path = tmp_path / "log.db"
    s = Store(path)
    a, b = _versions(1)
    s.set_base(ENV, "/f.json", content_hash(a), a)
    s.set_base(ENV, "/f.json", content_hash(b), b)
    s.close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE base_anchor SET text=?", (a.replace(b"uuid", b"UUID"),))
    raw.commit()
    raw.close()
    s = Store(path)
    assert s.get_base(ENV) is None  # rebuilt text fails its sha256: never a wrong base
    assert s.base_sha(ENV) == ("/f.json", content_hash(b))
    s.close()


# ---------------------------------------------------------------------------- sizes


def _edit(doc: dict, rng: random.Random) -> dict:
    """A new version as a save's parse makes it: the changed route copied, the rest shared."""
    new = dict(doc)
    kind = rng.randrange(6)
    if kind == 5:
        new["name"] = f"name {rng.random()} \ud800 ü"
        return new
    key = rng.choice(["routes", "data", "callbacks", "folders"])
    items = list(new.get(key) or [])
    new[key] = items
    if not items or kind == 0:
        items.append({"uuid": f"u{rng.random()}", "v": [1, 2.5, None, True, "ñ"]})
        return new
    i = rng.randrange(len(items))
    if kind == 1:
        del items[i]
    elif kind == 2:
        items.insert(i, items.pop())  # a move: the very objects, in another order
    else:
        item = copy.deepcopy(items[i])
        item["label" if kind == 3 else "x"] = "e" * rng.randrange(30) + "\u2028"
        items[i] = item
    return new


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_size_memo_equals_the_whole_encode(seed: int) -> None:
    rng = random.Random(seed)
    doc = generate_env(8_000, seed=seed % 7)
    memo = SizeMemo()
    for _ in range(12):
        assert memo.size(doc) == quick_compact_size(doc)
        doc = _edit(doc, rng)
    assert memo.size({1: "non-str key"}) == quick_compact_size({1: "non-str key"})
    assert memo.size(doc) == quick_compact_size(doc)
