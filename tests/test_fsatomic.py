"""The one atomic writer (`mocksync.fsatomic`): whole files or nothing, folder flushed, keys
never clobbered, temp files never left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mocksync import fsatomic


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if fsatomic.is_temp_name(p.name))


def test_replaces_content_and_mode_and_flushes_the_folder(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "doc.json"
    target.write_bytes(b"old")
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_IFMT(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(fsatomic.os, "fsync", spy)
    st = fsatomic.put_file(target, b"new bytes", 0o640)
    assert target.read_bytes() == b"new bytes"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert (st.st_ino, st.st_size) == (target.stat().st_ino, 9)
    # the file, then the folder holding it
    assert synced == [stat.S_IFREG, stat.S_IFDIR]
    assert temps(tmp_path) == []


def test_exclusive_never_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    key = tmp_path / "key"
    fsatomic.put_file(key, b"first", 0o600, exclusive=True)
    with pytest.raises(FileExistsError):
        fsatomic.put_file(key, b"second", 0o600, exclusive=True)
    assert key.read_bytes() == b"first"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert temps(tmp_path) == []


def test_a_refusal_before_the_swap_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "env.json"
    target.write_bytes(b"editor's save")

    def refuse() -> None:
        raise RuntimeError("changed meanwhile")

    with pytest.raises(RuntimeError):
        fsatomic.put_file(target, b"ours", 0o644, before_swap=refuse)
    assert target.read_bytes() == b"editor's save"
    assert temps(tmp_path) == []


def test_a_failing_write_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "env.json"
    target.write_bytes(b"old")

    def full(_fd: int, _data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsatomic.os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        fsatomic.put_file(target, b"new", 0o644)
    assert target.read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_only_the_folder_flush_failing_is_told_apart(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "env.json"
    real_fsync = os.fsync

    def folder_fails(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(fsatomic.os, "fsync", folder_fails)
    with pytest.raises(fsatomic.FolderSyncError):
        fsatomic.put_file(target, b"new", 0o644)
    assert target.read_bytes() == b"new"  # in place; only its durability is in doubt


def test_temp_names_are_ones_the_watcher_skips() -> None:
    name = fsatomic.temp_name()
    assert fsatomic.is_temp_name(name)
    assert name.startswith(".") and not name.endswith(".json")
    assert not fsatomic.is_temp_name("petstore.json")
