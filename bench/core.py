"""Issue #2 benchmarks: the cost of one edit through the pure core, and bulk apply.

- edit_1mb / edit_15mb: a one-property edit of a generated environment, end to end on the
  data path of a real save: parse the saved text (against the previous version, as the
  daemon does), diff against the base, build and sign the change set and commit it to the
  author's log, verify and apply it in a second device's log, render the merged state and
  make the text the writer puts in the second device's file (`text_to_write`, with the
  state's text cache, as the daemon's writer). Targets (issue 15): 15 MB <= 250 ms.
  Baseline: json.loads + json.dumps of the same text (the least any file-based tool must do
  per edit).
- apply_10k: 10,000 small change sets from one device ingested (verify + chain + apply +
  commit each) by another device's log.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocksync.changes import ChangeSet
from mocksync.devtools.envgen import generate_env
from mocksync.model import diff, dumps, parse_env, render, snapshot_ops
from mocksync.model.reparse import index_text
from mocksync.model.spans import text_to_write
from mocksync.store import Store

from .common import Result, repeat

SPACE = "cd" * 16


def _pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _edit_bench(size: int, count: int, target_ms: float, name: str) -> Result:
    from mocksync.agent.runner import tune_gc

    tune_gc()  # as the daemon runs
    doc = generate_env(size, seed=7)
    text = dumps(doc)
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as d:
        a, b = Store(Path(d) / "a.db"), Store(Path(d) / "b.db")
        env = doc["uuid"]
        now = int(time.time() * 1000)
        cs, _ = a.commit_local(key, space=SPACE, env=env, device="BENCHA", ops=snapshot_ops(doc),
                               now_ms=now)
        b.ingest(cs.encode(), _pub(key), now)
        responses = [r for route in doc["routes"] for r in route["responses"]]
        rng = random.Random(3)
        first = parse_env(text)
        base = {"doc": first.doc, "views": first.views, "parsed": first, "b_file": text}
        # What each daemon does at start, on its store worker, before any edit (issue 15,
        # `EnvWrites.check_written`): the state and the last change sets' deps loaded
        # (`Store.warm`), the file's reparse index made (`FolderEdits.index_parsed`), the
        # receiver's state rendered and its file's span index made. Start-up work: not
        # measured (it used to land on the first edit: a p99 of seconds).
        a.warm(env)
        b.warm(env)
        first = dataclasses.replace(first, spans=index_text(text))
        base["parsed"] = first
        sb0 = b.state(env)
        assert text_to_write(text, render(sb0), first.layout,
                             sb0.text_cache.setdefault(first.layout, {})) is None
        wire_sizes: list[int] = []

        def one(i: int) -> None:
            target = rng.choice(responses)
            target["label"] = f"edited {i}"
            saved = dumps(doc)  # what the editor wrote (outside the measured path below)
            t0 = time.perf_counter()
            parsed = parse_env(saved, previous=base["parsed"])
            st = a.state(env)
            ops = diff(base["doc"], parsed.doc, st, base_views=base["views"], new_views=parsed.views)
            c, _ = a.commit_local(key, space=SPACE, env=env, device="BENCHA", ops=ops,
                                  now_ms=int(time.time() * 1000))
            w = c.encode()
            b.ingest(w, _pub(key), int(time.time() * 1000))
            sb = b.state(env)
            out = text_to_write(base["b_file"], render(sb), parsed.layout,
                                sb.text_cache.setdefault(parsed.layout, {}))
            one.elapsed.append((time.perf_counter() - t0) * 1000)  # type: ignore[attr-defined]
            wire_sizes.append(len(w))
            assert out == saved, "receiver rendered something else"
            base["doc"], base["views"], base["parsed"], base["b_file"] = (
                parsed.doc, parsed.views, parsed, out)

        one.elapsed = []  # type: ignore[attr-defined]
        repeat(one, count, budget_s=120)
        samples = one.elapsed  # type: ignore[attr-defined]
        baseline = repeat(lambda i: json.dumps(json.loads(text), indent=2, ensure_ascii=False),
                          max(5, count // 2), budget_s=30)
        a.close()
        b.close()
    return Result(name, "ms", samples, target=target_ms, baseline_name="json parse+dump",
                  baseline=baseline, extra={"env_bytes": len(text.encode()),
                                            "wire_bytes_median": sorted(wire_sizes)[len(wire_sizes) // 2]},
                  note=f"one-property edit, {len(text.encode()) / 1e6:.1f} MB env, parse+diff+sign+"
                       "commit+verify+apply+render+patch the file text")


def edit_1mb() -> Result:
    return _edit_bench(1_000_000, 40, 50.0, "edit 1 MB env end to end")


def edit_15mb() -> Result:
    return _edit_bench(15_000_000, 8, 250.0, "edit 15 MB env end to end")


def apply_10k(n: int = 10_000) -> Result:
    key = Ed25519PrivateKey.generate()
    doc = generate_env(50_000, seed=1)
    env = doc["uuid"]
    responses = [r["uuid"] for route in doc["routes"] for r in route["responses"]]
    with tempfile.TemporaryDirectory() as d:
        a = Store(Path(d) / "a.db")
        now = int(time.time() * 1000)
        first, _ = a.commit_local(key, space=SPACE, env=env, device="BENCHA",
                                  ops=snapshot_ops(doc), now_ms=now)
        wires = []
        for i in range(n):
            cs, _ = a.commit_local(key, space=SPACE, env=env, device="BENCHA",
                                   ops=[("s", responses[i % len(responses)], ("v", "label"), f"l{i}")],
                                   now_ms=now + i)
            wires.append(cs.encode())
        a.close()
        runs = []
        pk = _pub(key)
        for r in range(3):
            b = Store(Path(d) / f"b{r}.db")
            b.ingest(first.encode(), _pub(key), now)
            t0 = time.perf_counter()
            for i in range(0, len(wires), 1000):  # as the relay catch-up pages them
                b.ingest_batch([(ChangeSet.decode(w), pk) for w in wires[i:i + 1000]], now + n)
            runs.append(time.perf_counter() - t0)
            assert b.version_vector(env) == {"BENCHA": n + 1}
            b.close()
    return Result(f"apply {n:,} change sets", "s", runs, target=2.0,
                  note="decode + verify signature + chain + apply, one SQLite transaction per 1,000 "
                       "(the relay catch-up path)")


BENCHMARKS = [edit_1mb, edit_15mb, apply_10k]
