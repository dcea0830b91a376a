"""The Mockoon-desktop stand-in behaves as docs/design/testing.md describes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from editor_standin import EditorStandin, render

BLIND_S = 0.3
POLL_S = 0.01


def env(name: str = "Démo", port: int = 3000) -> dict:
    return {"uuid": "e1", "name": name, "port": port, "routes": []}


def external_write(path: Path, doc: dict) -> None:
    """Someone else (the daemon) writes compact JSON atomically."""
    tmp = path.with_name(".mocksync-x.tmp")
    tmp.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
    os.replace(tmp, path)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "env.json"
    path.write_bytes(json.dumps(env()).encode())
    return path


async def test_save_writes_mockoon_layout_by_rename(env_file: Path) -> None:
    async with EditorStandin(env_file, blind_s=BLIND_S, poll_s=POLL_S) as ed:
        assert ed.doc == env()
        ed.edit(lambda d: d.update(port=4000))
        inode = os.stat(env_file).st_ino
        data = ed.save()
        raw = env_file.read_bytes()
        assert raw == data == render(ed.doc)
        assert raw == json.dumps(env(port=4000), indent=2, ensure_ascii=False).encode()
        assert not raw.endswith(b"\n")
        assert "Démo".encode() in raw  # not \u-escaped
        assert raw.startswith(b'{\n  "uuid": "e1"')
        assert os.stat(env_file).st_ino != inode  # temp file renamed over
        assert sorted(p.name for p in env_file.parent.iterdir()) == ["env.json"]
        assert ed.saves == 1 and not ed.watching


async def test_edit_may_return_a_replacement(env_file: Path) -> None:
    ed = EditorStandin(env_file)
    ed.load()
    ed.edit(lambda d: {**d, "name": "new"})
    assert ed.doc["name"] == "new"


async def test_external_change_reloaded_then_saved_in_own_format(env_file: Path) -> None:
    async with EditorStandin(env_file, blind_s=BLIND_S, poll_s=POLL_S) as ed:
        external_write(env_file, env(name="from peer"))
        await ed.wait_until(lambda e: e.reloads == 1 and e.saves == 1, timeout=5)
        assert ed.doc == env(name="from peer")
        assert env_file.read_bytes() == render(env(name="from peer"))
        assert [kind for kind, _ in ed.history] == ["load", "reload", "save"]


async def test_change_during_blind_period_goes_unnoticed(env_file: Path) -> None:
    async with EditorStandin(env_file, blind_s=BLIND_S, poll_s=POLL_S) as ed:
        ed.edit(lambda d: d.update(port=1))
        ed.save()
        external_write(env_file, env(name="remote during blind"))
        await asyncio.sleep(BLIND_S + 0.3)  # the blind period passes, watching resumes
        assert ed.reloads == 0
        assert ed.doc["name"] == "Démo" and ed.doc["port"] == 1  # stale, as in Mockoon
        assert json.loads(env_file.read_bytes())["name"] == "remote during blind"
        # A change after it resumed is seen.
        external_write(env_file, env(name="later"))
        await ed.wait_until(lambda e: e.reloads == 1, timeout=5)
        assert ed.doc["name"] == "later"


async def test_invalid_json_is_not_loaded(env_file: Path) -> None:
    async with EditorStandin(env_file, blind_s=BLIND_S, poll_s=POLL_S) as ed:
        env_file.write_bytes(b'{"uuid": "e1", broken')
        await ed.wait_until(lambda e: e.reload_errors == 1, timeout=5)
        assert ed.doc == env() and ed.saves == 0
        assert env_file.read_bytes() == b'{"uuid": "e1", broken'  # not overwritten
        external_write(env_file, env(name="fixed"))
        await ed.wait_until(lambda e: e.reloads == 1, timeout=5)
        assert ed.doc["name"] == "fixed"


async def test_stopped_editor_does_not_react(env_file: Path) -> None:
    ed = EditorStandin(env_file, blind_s=BLIND_S, poll_s=POLL_S)
    await ed.start()
    await ed.stop()
    external_write(env_file, env(name="after stop"))
    await asyncio.sleep(0.1)
    assert ed.reloads == 0 and ed.saves == 0
    with pytest.raises(TimeoutError):
        await ed.wait_until(lambda e: e.reloads == 1, timeout=0.05)
