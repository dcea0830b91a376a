"""atomic_write: content, hash, mode kept, temp cleaned, target intact on failure."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from mocksync.agent import writer
from mocksync.agent.errors import FileWriteError
from mocksync.agent.writer import atomic_write, content_hash
from mocksync.errors import MocksyncError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(writer.TEMP_PREFIX))


def test_writes_bytes_and_returns_sha256(tmp_path: Path) -> None:
    target = tmp_path / "env.json"
    data = '{"name": "Démo ✓"}'.encode()
    digest = atomic_write(target, data)
    assert target.read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest() == content_hash(data)
    assert _leftovers(tmp_path) == []


def test_replaces_by_rename_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "env.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    before = os.stat(target).st_ino
    atomic_write(target, b"new")
    st = os.stat(target)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_ino != before  # a new inode renamed into place, not an in-place rewrite


def test_explicit_mode_and_new_file_mode(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    atomic_write(a, b"{}", mode=0o600)
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o600
    old = os.umask(0o027)
    try:
        b = tmp_path / "b.json"
        atomic_write(b, b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(b).st_mode) == 0o640  # 0o666 minus the umask, like open()


def test_symlink_target_replaced_link_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink()
    assert real.read_bytes() == b"new"


def test_failure_before_rename_leaves_target_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "env.json"
    target.write_bytes(b"precious")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.os, "fsync", broken_fsync)
    with pytest.raises(FileWriteError) as info:
        atomic_write(target, b"x" * 100_000)
    assert isinstance(info.value, MocksyncError)
    assert str(target) in str(info.value) and "No space left" in str(info.value)
    assert target.read_bytes() == b"precious"
    assert _leftovers(tmp_path) == []


def test_failing_rename_cleans_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "env.json"
    target.write_bytes(b"precious")

    def broken_replace(src, dst, **_dir_fds) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writer.os, "replace", broken_replace)
    with pytest.raises(FileWriteError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"precious"
    assert _leftovers(tmp_path) == []


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileWriteError, match="could not write"):
        atomic_write(tmp_path / "nope" / "env.json", b"{}")


def test_refuses_text(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "env.json", "text")  # type: ignore[arg-type]
    assert not (tmp_path / "env.json").exists()


def test_temp_name_is_one_the_watcher_ignores(tmp_path: Path, monkeypatch) -> None:
    from mocksync.agent.watcher import is_ignored_name

    seen: list[str] = []
    real_replace = os.replace

    def spy(src, dst, **dir_fds) -> None:
        seen.append(os.path.basename(src))
        # Same folder, so the rename stays atomic: both names are relative to one open fd of it.
        assert dir_fds["src_dir_fd"] == dir_fds["dst_dir_fd"]
        assert os.path.samestat(os.fstat(dir_fds["src_dir_fd"]), os.stat(tmp_path))
        real_replace(src, dst, **dir_fds)

    monkeypatch.setattr(writer.os, "replace", spy)
    atomic_write(tmp_path / "env.json", b"{}")
    assert len(seen) == 1
    assert seen[0].startswith(".mocksync-") and seen[0].endswith(".tmp")
    assert is_ignored_name(seen[0])


def test_a_big_write_is_hashed_beside_and_announced_before_it_lands(tmp_path: Path) -> None:
    """`hash_beside` + `before_rename` (issue 15): the hash is made while the bytes are
    written, and handed over while the old version is still in place (the watcher must
    expect the write before it can see it)."""
    target = tmp_path / "env.json"
    target.write_bytes(b"old")
    data = b"x" * (writer.HASH_BESIDE_BYTES + 17)
    seen: list[tuple[str, bytes]] = []

    def announce(sha: str) -> None:
        seen.append((sha, target.read_bytes()))

    got = writer.replace_file(target, data, sha256=writer.hash_beside(data),
                              before_rename=announce)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert seen == [(got.sha256, b"old")]
    assert target.read_bytes() == data


def test_a_refusal_before_the_rename_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "env.json"
    target.write_bytes(b"old")
    data = b"y" * (writer.HASH_BESIDE_BYTES + 1)

    def refuse(_sha: str) -> None:
        raise RuntimeError("not now")

    with pytest.raises(RuntimeError, match="not now"):
        writer.replace_file(target, data, sha256=writer.hash_beside(data), before_rename=refuse)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.json"]  # no temp file left
