"""folderread (issue 13): the pure decisions (stat -> read / skip with a reason) and the one
read helper on real odd files: FIFO, socket, device node, directory, symlinks in and out,
unreadable (judged from the error), too large. Nothing here may block: a FIFO is never opened
for reading in a way that waits for a writer."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from mocksync.agent.errors import SkippedFile
from mocksync.agent.folderread import (
    CHANGED,
    DEVICE,
    DIRECTORY,
    FIFO,
    OUTSIDE,
    SOCKET,
    TOO_LARGE,
    UNREADABLE,
    beneath,
    folder_path,
    judge_link,
    judge_os_error,
    judge_stat,
    open_regular,
    read_regular,
)
from mocksync.errors import ValidationError

MAX = 1000

# ------------------------------------------------------------------ pure decisions


@pytest.mark.parametrize(("mode", "kind"), [
    (stat.S_IFIFO | 0o644, FIFO),
    (stat.S_IFCHR | 0o600, DEVICE),
    (stat.S_IFBLK | 0o600, DEVICE),
    (stat.S_IFSOCK | 0o755, SOCKET),
    (stat.S_IFDIR | 0o755, DIRECTORY),
])
def test_judge_stat_skips_everything_but_regular_files(mode: int, kind: str) -> None:
    skip = judge_stat("y.json", mode, 0, MAX)
    assert skip is not None and skip.kind == kind
    assert skip.reason.startswith("skipped: y.json is ")


def test_judge_stat_reads_regular_files_within_the_limit() -> None:
    assert judge_stat("a.json", stat.S_IFREG | 0o644, MAX, MAX) is None
    assert judge_stat("a.json", stat.S_IFREG | 0o644, 10**12, None) is None
    big = judge_stat("a.json", stat.S_IFREG | 0o644, MAX + 1, MAX)
    assert big is not None and big.kind == TOO_LARGE and str(MAX) in big.reason


def test_judge_link_follows_only_beneath_the_folder() -> None:
    assert judge_link("x.json", "/data/envs/real.json", "/data/envs") is None
    assert judge_link("x.json", "/data/envs/sub/real.json", "/data/envs/") is None
    out = judge_link("x.json", "/etc/passwd", "/data/envs")
    assert out is not None and out.kind == OUTSIDE and "/etc/passwd" in out.reason
    # A sibling whose name merely starts like the folder is outside.
    sib = judge_link("x.json", "/data/envs2/a.json", "/data/envs")
    assert sib is not None and sib.kind == OUTSIDE
    assert beneath("/data/envs", "/data/envs") and not beneath("/data/envsx", "/data/envs")


def test_judge_os_error() -> None:
    assert judge_os_error("a.json", FileNotFoundError(errno.ENOENT, "gone")) is None
    denied = judge_os_error("a.json", PermissionError(errno.EACCES, "Permission denied"))
    assert denied is not None and denied.kind == UNREADABLE
    assert "permission denied" in denied.reason and "chmod u+r a.json" in denied.reason
    loop = judge_os_error("a.json", OSError(errno.ELOOP, "Too many levels"))
    assert loop is not None and loop.kind == CHANGED
    eio = judge_os_error("a.json", OSError(errno.EIO, "Input/output error"))
    assert eio is not None and eio.kind == UNREADABLE and "Input/output error" in eio.reason


def test_skipped_file_is_a_validation_error_with_its_sentence() -> None:
    skip = judge_stat("y.json", stat.S_IFIFO, 0, MAX)
    assert skip is not None
    exc = SkippedFile(skip)
    assert isinstance(exc, ValidationError) and str(exc) == skip.reason and exc.skip is skip


# ------------------------------------------------------------------ real files


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    f = tmp_path / "envs"
    f.mkdir()
    return f.resolve()


def _skip_kind(path: Path, folder: Path | None) -> str:
    with pytest.raises(SkippedFile) as info:
        read_regular(path, folder=folder, max_bytes=MAX)
    return info.value.skip.kind


def test_regular_file_read_with_its_signature(folder: Path) -> None:
    p = folder / "a.json"
    p.write_bytes(b'{"a": 1}')
    got = read_regular(p, folder=folder, max_bytes=MAX)
    st = os.stat(p)
    assert got is not None and got.data == b'{"a": 1}'
    assert got.sig == (st.st_ino, st.st_mtime_ns, st.st_size)
    assert read_regular(folder / "absent.json", folder=folder, max_bytes=MAX) is None


def test_fifo_is_skipped_without_blocking(folder: Path) -> None:
    os.mkfifo(folder / "y.json")
    assert _skip_kind(folder / "y.json", folder) == FIFO  # (a blocking open would hang here)
    with pytest.raises(SkippedFile), open_regular(folder / "y.json", folder=folder):
        pass


def test_socket_and_directory_skipped(folder: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(folder / "s.json"))
        assert _skip_kind(folder / "s.json", folder) == SOCKET
    finally:
        s.close()
    (folder / "d.json").mkdir()
    assert _skip_kind(folder / "d.json", folder) == DIRECTORY


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device node needs root")
def test_device_node_is_never_opened(folder: Path) -> None:
    os.mknod(folder / "dev.json", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    assert _skip_kind(folder / "dev.json", folder) == DEVICE


def test_symlink_inside_followed_outside_skipped(folder: Path, tmp_path: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "real.json").write_bytes(b"{}")
    (folder / "in.json").symlink_to(folder / "sub" / "real.json")
    got = read_regular(folder / "in.json", folder=folder, max_bytes=MAX)
    assert got is not None and got.data == b"{}"
    secret = tmp_path / "secret.json"
    secret.write_bytes(b'{"secret": 1}')
    (folder / "out.json").symlink_to(secret)
    (folder / "etc.json").symlink_to("/etc/passwd")
    assert _skip_kind(folder / "out.json", folder) == OUTSIDE
    assert _skip_kind(folder / "etc.json", folder) == OUTSIDE
    # Without a folder (a path the user named, as `adopt` reads) the link is followed.
    got = read_regular(folder / "out.json", folder=None, max_bytes=MAX)
    assert got is not None and got.data == b'{"secret": 1}'
    # A link inside leading to a FIFO is still not opened.
    os.mkfifo(folder / "pipe")
    (folder / "p.json").symlink_to(folder / "pipe")
    assert _skip_kind(folder / "p.json", folder) == FIFO
    # Dangling inside: simply absent; dangling outside: still named as outside.
    (folder / "gone.json").symlink_to(folder / "nothing.json")
    assert read_regular(folder / "gone.json", folder=folder, max_bytes=MAX) is None
    (folder / "far.json").symlink_to(tmp_path / "nothing.json")
    assert _skip_kind(folder / "far.json", folder) == OUTSIDE


def test_folder_path_keys_outside_links_by_their_own_name(folder: Path) -> None:
    (folder / "real.json").write_bytes(b"{}")
    (folder / "in.json").symlink_to(folder / "real.json")
    (folder / "out.json").symlink_to("/etc/passwd")
    assert folder_path(folder, folder / "in.json") == folder / "real.json"
    assert folder_path(folder, folder / "out.json") == folder / "out.json"
    assert folder_path(folder, folder / "real.json") == folder / "real.json"


def test_too_large_file_skipped(folder: Path) -> None:
    (folder / "big.json").write_bytes(b" " * (MAX + 1))
    assert _skip_kind(folder / "big.json", folder) == TOO_LARGE


def test_unreadable_file_named(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = folder / "locked.json"
    p.write_bytes(b"{}")
    if os.geteuid() == 0:
        # Root reads anything: stand in for the kernel's answer to a non-root daemon.
        real_open = os.open

        def denied(path, flags, *a, **k):
            if str(path) == str(p):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", denied)
    else:
        p.chmod(0)
    assert _skip_kind(p, folder) == UNREADABLE
