"""A write whose bytes landed but whose folder could not be flushed is still ours.

Red team of issue 15's write path (`EnvWrites.put_file`, `writer.replace_file`): the watcher
is told to expect a write right before its rename and the expectation is withdrawn when the
write fails. But one failure comes after the rename: the folder fsync (`FolderSyncError`,
an I/O error or a full journal). The new content is then in place; withdrawing the
expectation made the watcher report the daemon's own write as an editor's save, and the
daemon committed a teammate's edit a second time as its own (a change set of this device,
stamped as made on the version before: concurrent with the teammate's next edit, which it
could then undo by last-write-wins).
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import mocksync.fsatomic as fsatomic

from helpers.agents import settle, two_devices
from helpers.files import read_doc, response_by_uuid, responses
from helpers.polling import wait_until


def json_bytes(doc: object) -> bytes:
    import json

    return json.dumps(doc, indent=2).encode()


def editor_save(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".5f3a")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def test_a_write_landed_but_not_flushed_is_not_taken_for_an_editor_save(
        tmp_path: Path, monkeypatch) -> None:
    async with two_devices(tmp_path, settled=True) as two:
        folder_ino = os.stat(two.file_a.parent).st_ino
        failed: list[int] = []
        real_fsync_dir = fsatomic.fsync_dir

        def flaky_fsync_dir(dir_fd: int) -> None:
            if not failed and os.fstat(dir_fd).st_ino == folder_ino:
                failed.append(dir_fd)
                raise OSError(errno.EIO, "Input/output error")
            real_fsync_dir(dir_fd)

        monkeypatch.setattr(fsatomic, "fsync_dir", flaky_fsync_dir)
        mine_before = two.a.store.version_vector(two.env).get(two.a.device, 0)
        doc = read_doc(two.file_b)
        uuid = responses(doc)[0]["uuid"]
        response_by_uuid(doc, uuid)["label"] = "from B"
        editor_save(two.file_b, json_bytes(doc))
        await wait_until(lambda: response_by_uuid(read_doc(two.file_a), uuid)["label"]
                         == "from B", "B's edit to land in A's file")
        await wait_until(lambda: bool(failed), "the folder fsync of A's write to fail")
        await asyncio.sleep(0.5)  # the watcher's probe of the landed write, and its take
        await settle(two.a, two.b)
        assert two.a.store.version_vector(two.env).get(two.a.device, 0) == mine_before


def test_the_unflushed_write_error_names_the_version_in_place(tmp_path: Path,
                                                              monkeypatch) -> None:
    import hashlib

    from mocksync.agent import writer
    from mocksync.agent.errors import FileWriteError

    def no_flush(_dir_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    target = tmp_path / "env.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(fsatomic, "fsync_dir", no_flush)
    try:
        writer.replace_file(target, b"new")
    except FileWriteError as exc:
        landed = exc.landed
    else:
        raise AssertionError("no FileWriteError")
    st = os.stat(target)
    assert target.read_bytes() == b"new"
    assert landed.sha256 == hashlib.sha256(b"new").hexdigest()
    assert landed.sig == (st.st_ino, st.st_mtime_ns, st.st_size)
