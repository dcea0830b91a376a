"""FolderWatcher on real files: high-level events, own writes swallowed, editor noise ignored."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mocksync.agent.watcher import FileEvent, FolderWatcher, is_environment_name
from mocksync.agent.writer import atomic_write, content_hash

QUIET_S = 0.25  # no event for this long = the batch is over (debounce is 50 ms)
WAIT_S = 3.0  # longest wait for an expected event


async def collect(w: FolderWatcher, quiet: float = QUIET_S) -> list[FileEvent]:
    out: list[FileEvent] = []
    it = w.events()
    while True:
        try:
            out.append(await asyncio.wait_for(anext(it), quiet))
        except (TimeoutError, StopAsyncIteration):
            return out


async def expect(w: FolderWatcher, n: int = 1) -> list[FileEvent]:
    """Wait (up to WAIT_S) for n events, then make sure nothing else follows."""
    it = w.events()
    out = [await asyncio.wait_for(anext(it), WAIT_S) for _ in range(n)]
    return out + await collect(w)


def editor_save(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".5f3a")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, FolderWatcher]]:
    folder = tmp_path / "envs"
    folder.mkdir()
    (folder / "a.json").write_bytes(b'{"a": 1}')
    w = FolderWatcher(folder)
    await w.start()
    try:
        yield folder, w
    finally:
        await w.stop()


async def test_existing_files_are_known_without_events(watched) -> None:
    folder, w = watched
    assert w.known() == {folder / "a.json": content_hash(b'{"a": 1}')}
    assert await collect(w) == []


async def test_added_changed_deleted(watched) -> None:
    folder, w = watched
    (folder / "b.json").write_bytes(b'{"b": 1}')
    [ev] = await expect(w)
    assert ev == FileEvent("added", folder / "b.json", None, content_hash(b'{"b": 1}'))

    editor_save(folder / "b.json", b'{"b": 2}')
    [ev] = await expect(w)  # temp-then-rename is one change, the temp file never shows
    assert (ev.kind, ev.path, ev.sha256) == ("changed", folder / "b.json", content_hash(b'{"b": 2}'))

    (folder / "b.json").unlink()
    [ev] = await expect(w)
    assert ev == FileEvent("deleted", folder / "b.json")
    assert folder / "b.json" not in w.known()


async def test_own_write_swallowed_once(watched) -> None:
    folder, w = watched
    target = folder / "a.json"
    data = b'{"a": "from a peer"}'
    w.expect_write(target, content_hash(data))
    digest = atomic_write(target, data)
    assert await collect(w) == []
    assert w.last_hash(target) == digest

    # The user changes it, then types the peer's content back: that is the user's, reported.
    editor_save(target, b'{"a": "user"}')
    assert [e.kind for e in await expect(w)] == ["changed"]
    editor_save(target, data)
    [ev] = await expect(w)
    assert (ev.kind, ev.sha256) == ("changed", digest)


async def test_a_noted_own_write_is_matched_by_its_signature_not_hashed(
        watched, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's note (hash and the signature it stat-ed) spares the watcher reading and
    hashing the daemon's own write (issue 15: 5-15 MB); once, and only for that version."""
    import mocksync.agent.watcher as watcher_mod
    from mocksync.agent.writer import replace_file

    folder, w = watched
    target = folder / "a.json"
    hashed: list[int] = []
    real_hash = watcher_mod._hash_file

    def counted(fd: int) -> str:
        hashed.append(fd)
        return real_hash(fd)

    monkeypatch.setattr(watcher_mod, "_hash_file", counted)
    data = b'{"a": "from a peer"}'
    sha = content_hash(data)
    w.expect_write(target, sha)
    written = replace_file(target, data, sha256=sha)
    w.note_written(target, sha, written.sig)
    assert await collect(w) == []  # swallowed, as an expected write is
    assert w.last_hash(target) == sha and hashed == []  # ... without hashing the file
    # An editor's save after it is hashed and reported (the note was used up).
    editor_save(target, b'{"a": "user"}')
    [ev] = await expect(w)
    assert (ev.kind, ev.sha256) == ("changed", content_hash(b'{"a": "user"}'))
    assert ev.content is not None and ev.content.data == b'{"a": "user"}'  # read, and handed on


async def test_a_note_for_another_version_is_not_taken(watched) -> None:
    """A note whose signature is not the file's (an editor's save replaced the write before
    the probe) names nothing: the file is hashed and the save reported."""
    folder, w = watched
    target = folder / "a.json"
    st = os.stat(target)
    w.note_written(target, content_hash(b"not what is there"), (st.st_ino, st.st_mtime_ns, 999))
    editor_save(target, b'{"a": "editor"}')
    [ev] = await expect(w)
    assert (ev.kind, ev.sha256) == ("changed", content_hash(b'{"a": "editor"}'))


async def test_own_new_file_and_own_delete_swallowed(watched) -> None:
    folder, w = watched
    data = b'{"new": true}'
    w.expect_write(folder / "new.json", content_hash(data))
    atomic_write(folder / "new.json", data)
    w.expect_delete(folder / "a.json")
    (folder / "a.json").unlink()
    assert await collect(w) == []
    assert set(w.known()) == {folder / "new.json"}
    # A later deletion by someone else is reported.
    (folder / "new.json").unlink()
    assert [e.kind for e in await expect(w)] == ["deleted"]


async def test_unexpected_content_is_reported_even_with_a_pending_expectation(watched) -> None:
    folder, w = watched
    w.expect_write(folder / "a.json", content_hash(b"what the daemon meant to write"))
    editor_save(folder / "a.json", b'{"a": "editor won the race"}')
    [ev] = await expect(w)
    assert ev.kind == "changed"


async def test_editor_temp_and_backup_files_ignored(watched) -> None:
    folder, w = watched
    noise = [
        ".mocksync-a.json.x1y2.tmp", "a.json.tmp", "a.json~", ".#a.json", ".a.json.swp",
        "a.json.swx", "a.json.crswap", "4913", ".hidden.json", "notes.txt", "a.json.5f3a",
    ]
    for name in noise:
        (folder / name).write_bytes(b"{}")
    for name in noise:
        (folder / name).unlink()
    (folder / "real.json").write_bytes(b"{}")  # proves the watcher was live all along
    events = await expect(w)
    assert [(e.kind, e.path.name) for e in events] == [("added", "real.json")]


async def test_rename_detected(watched) -> None:
    folder, w = watched
    os.rename(folder / "a.json", folder / "renamed.json")
    [ev] = await expect(w)
    assert ev == FileEvent(
        "renamed", folder / "renamed.json", folder / "a.json", content_hash(b'{"a": 1}')
    )
    assert w.last_hash(folder / "renamed.json") == content_hash(b'{"a": 1}')
    assert w.last_hash(folder / "a.json") is None


async def test_rename_out_of_and_into_folder(watched, tmp_path: Path) -> None:
    folder, w = watched
    os.rename(folder / "a.json", tmp_path / "away.json")
    assert [e.kind for e in await expect(w)] == ["deleted"]
    os.rename(tmp_path / "away.json", folder / "back.json")
    [ev] = await expect(w)
    assert (ev.kind, ev.path.name) == ("added", "back.json")


async def test_delete_plus_different_new_file_is_not_a_rename(watched) -> None:
    folder, w = watched
    (folder / "a.json").unlink()
    (folder / "z.json").write_bytes(b'{"other": 1}')
    events = await expect(w, 2)
    assert sorted((e.kind, e.path.name) for e in events) == [("added", "z.json"), ("deleted", "a.json")]


async def test_identical_resave_still_reported(watched) -> None:
    # Mockoon re-saving unchanged content still starts its blind period: the daemon must know.
    folder, w = watched
    editor_save(folder / "a.json", b'{"a": 1}')
    [ev] = await expect(w)
    assert (ev.kind, ev.sha256) == ("changed", content_hash(b'{"a": 1}'))


async def test_symlink_pointing_outside_reported_unread(watched, tmp_path: Path) -> None:
    # Never read (no hash), but reported, so the daemon names it in `status` (issue 13).
    folder, w = watched
    outside = tmp_path / "secret.json"
    outside.write_bytes(b'{"secret": 1}')
    (folder / "evil.json").symlink_to(outside)
    (folder / "fine.json").write_bytes(b"{}")
    events = await expect(w, 2)
    assert sorted((e.path.name, e.sha256) for e in events) == [
        ("evil.json", None), ("fine.json", content_hash(b"{}"))]
    assert folder / "evil.json" not in w.known()


async def test_fifo_and_socket_reported_unread_without_blocking(watched) -> None:
    import socket

    folder, w = watched
    os.mkfifo(folder / "pipe.json")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(folder / "sock.json"))
        events = await expect(w, 2)
    finally:
        sock.close()
    assert sorted((e.kind, e.path.name, e.sha256) for e in events) == [
        ("added", "pipe.json", None), ("added", "sock.json", None)]
    # Two odd files vanishing and appearing are never paired into a "rename".
    os.unlink(folder / "pipe.json")
    os.mkfifo(folder / "pipe2.json")
    events = await expect(w, 2)
    assert sorted((e.kind, e.path.name) for e in events) == [
        ("added", "pipe2.json"), ("deleted", "pipe.json")]


async def test_extra_file_outside_folder(watched, tmp_path: Path) -> None:
    folder, w = watched
    other = tmp_path / "elsewhere"
    other.mkdir()
    extra = other / "shared.json"
    extra.write_bytes(b'{"v": 1}')
    await w.add_file(extra)
    assert w.last_hash(extra) == content_hash(b'{"v": 1}')
    (other / "unrelated.json").write_bytes(b"{}")
    editor_save(extra, b'{"v": 2}')
    [ev] = await expect(w)
    assert (ev.kind, ev.path) == ("changed", extra)
    # The folder itself is still watched after the restart.
    (folder / "a.json").write_bytes(b'{"a": 2}')
    assert [e.path for e in await expect(w)] == [folder / "a.json"]
    await w.remove_file(extra)
    editor_save(extra, b'{"v": 3}')
    assert await collect(w) == []


async def test_change_while_rewatching_is_not_lost(watched, tmp_path: Path) -> None:
    folder, w = watched
    extra = tmp_path / "x.json"
    extra.write_bytes(b"{}")
    add = asyncio.create_task(w.add_file(extra))
    (folder / "a.json").write_bytes(b'{"a": "during restart"}')
    await add
    events = await expect(w)
    assert [(e.kind, e.path.name) for e in events] == [("changed", "a.json")]


async def test_stop_event_ends_iteration(tmp_path: Path) -> None:
    stop = asyncio.Event()
    w = FolderWatcher(tmp_path, stop_event=stop)
    await w.start()
    it = w.events()
    (tmp_path / "one.json").write_bytes(b"{}")
    ev = await asyncio.wait_for(anext(it), WAIT_S)
    assert ev.path.name == "one.json"
    stop.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(it), WAIT_S)
    await w.stop()


async def test_stop_ends_iteration(tmp_path: Path) -> None:
    async with FolderWatcher(tmp_path) as w:
        task = asyncio.create_task(collect(w, quiet=WAIT_S * 2))
        await asyncio.sleep(0.05)
    assert await asyncio.wait_for(task, WAIT_S) == []


async def test_missing_folder_refused(tmp_path: Path) -> None:
    from mocksync.errors import MocksyncError

    with pytest.raises(MocksyncError, match="not an existing folder"):
        await FolderWatcher(tmp_path / "nope").start()


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("env.json", True), ("Env.JSON", True), ("a b.json", True), (".env.json", False),
        ("env.json~", False), ("env.json.tmp", False), ("env.tmp", False), ("4913", False),
        (".#env.json", False), ("env.swp", False), ("env.yaml", False), ("env.crswap", False),
    ],
)
def test_environment_names(name: str, ok: bool) -> None:
    assert is_environment_name(name) is ok


async def test_carried_bytes_stay_within_their_budget(
        watched, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events carry the bytes the watcher read only up to `CARRY_MAX_BYTES` in all; past it
    an event carries none (the daemon reads the file itself), and what events carried is
    let go once they are taken, so the budget never leaks."""
    import mocksync.agent.watcher as watcher_mod

    folder, w = watched
    monkeypatch.setattr(watcher_mod, "CARRY_MAX_BYTES", 100)
    small, big = b'{"v": "small"}', b'{"v": "' + b"x" * 200 + b'"}'
    editor_save(folder / "s.json", small)
    editor_save(folder / "b.json", big)
    got = {ev.path.name: ev for ev in await expect(w, 2)}
    assert got["s.json"].content is not None and got["s.json"].content.data == small
    assert got["b.json"].content is None and got["b.json"].sha256 == content_hash(big)
    assert w._carried == 0  # both taken: nothing counted any more
    w.expect_write(folder / "s.json", content_hash(b'{"v": "ours"}'))
    atomic_write(folder / "s.json", b'{"v": "ours"}')  # read, then swallowed as ours
    assert await collect(w) == []
    assert w._carried == 0 and w._read == {}


async def test_a_save_is_taken_in_from_the_bytes_its_event_carries(tmp_path: Path) -> None:
    """The daemon takes an editor's save in from the event's bytes: the file is not read a
    second time (issue 15: ~1 ms read and ~3 ms hash of a 5 MB save)."""
    from helpers.agents import two_devices
    from helpers.files import read_doc, response_by_uuid, responses
    from helpers.polling import wait_until

    async with two_devices(tmp_path, settled=True) as two:
        reads: list[Path] = []
        real = two.a.edits.read_sig

        def counted(path: Path) -> object:
            reads.append(path)
            return real(path)

        two.a.edits.read_sig = counted  # type: ignore[method-assign]
        doc = read_doc(two.file_a)
        uuid = responses(doc)[0]["uuid"]
        response_by_uuid(doc, uuid)["label"] = "carried"
        editor_save(two.file_a, json_bytes(doc))
        await wait_until(lambda: response_by_uuid(read_doc(two.file_b), uuid)["label"]
                         == "carried", "B's file to get the edit")
        assert two.file_a not in reads


def json_bytes(doc: object) -> bytes:
    import json

    return json.dumps(doc, indent=2).encode()


async def test_a_file_growing_while_read_never_carries_past_the_budget(
        watched, monkeypatch: pytest.MonkeyPatch) -> None:
    """Red team (issue 15): the budget was checked against the size the file had when
    opened, and the read then took up to `CARRY_MAX_BYTES` more: a file growing while read
    rode on its event whole, past the budget (two in a batch: twice the budget). Its event
    now carries nothing and names the hash of what was there; it is not taken for too big."""
    import contextlib
    from types import SimpleNamespace

    import mocksync.agent.watcher as watcher_mod

    folder, w = watched
    monkeypatch.setattr(watcher_mod, "CARRY_MAX_BYTES", 400)
    real_open = watcher_mod.open_regular

    @contextlib.contextmanager
    def opened_small(path: Path, **kw: object):  # the fstat taken before the file grew
        with real_open(path, **kw) as got:  # type: ignore[arg-type]
            if got is None or path.name != "g.json":
                yield got
                return
            fd, st = got
            yield fd, SimpleNamespace(st_ino=st.st_ino, st_mtime_ns=st.st_mtime_ns, st_size=1,
                                      st_mode=st.st_mode)

    monkeypatch.setattr(watcher_mod, "open_regular", opened_small)
    first = b'{"v": "' + b"s" * 240 + b'"}'
    editor_save(folder / "s.json", first)  # carried, not yet taken: 250 of the 400 bytes
    for _ in range(300):
        if w._queue.qsize():
            break
        await asyncio.sleep(0.01)
    assert w._carried == len(first)
    grown = b'{"v": "' + b"g" * 290 + b'"}'
    editor_save(folder / "g.json", grown)
    for _ in range(300):  # probed while the first is still carried (not yet taken)
        if w._queue.qsize() >= 2:
            break
        await asyncio.sleep(0.01)
    got = {ev.path.name: ev for ev in await expect(w, 2)}
    assert got["s.json"].content is not None and got["s.json"].content.data == first
    assert got["g.json"].kind == "added" and got["g.json"].content is None
    assert got["g.json"].sha256 == content_hash(grown)  # hashed whole, not taken for too big
    assert w._carried == 0 and w._read == {}


# ---- red team (issue 15): renamed-into-place batches skip the debounce -------------------


async def test_a_file_written_on_after_its_rename_is_reported_as_it_ends(watched) -> None:
    """An editor that renames a stub into place and then writes on: the rename's batch is
    looked at at once (perhaps the stub), but the writes after it are a batch of their own:
    the last event carries the whole file, never only the stub."""
    folder, w = watched
    stub, rest = b'{"a": ', b'2, "b": "' + b"z" * 5000 + b'"}'
    tmp = folder / "a.json.tmp~"
    tmp.write_bytes(stub)
    os.replace(tmp, folder / "a.json")
    with open(folder / "a.json", "ab") as f:
        for i in range(0, len(rest), 1000):
            f.write(rest[i:i + 1000])
            f.flush()
    events = await collect(w, 0.5)
    assert events and all(ev.kind == "changed" for ev in events)
    last = events[-1]
    assert last.sha256 == content_hash(stub + rest)
    assert last.content is not None and last.content.data == stub + rest


async def test_jetbrains_and_vim_saves_are_one_change_each(watched) -> None:
    """JetBrains' safe write (temp written, original renamed away, temp renamed in, old
    removed) and vim's (original renamed to a backup, the file written anew): one `changed`
    event with the whole new content each, never a deletion of the environment."""
    folder, w = watched
    a = folder / "a.json"
    jb = b'{"a": "jetbrains"}'
    (folder / "a.json___jb_tmp___").write_bytes(jb)
    os.replace(a, folder / "a.json___jb_old___")
    os.replace(folder / "a.json___jb_tmp___", a)
    (folder / "a.json___jb_old___").unlink()
    (ev,) = await expect(w, 1)
    assert (ev.kind, ev.sha256) == ("changed", content_hash(jb))
    assert ev.content is not None and ev.content.data == jb
    vim = b'{"a": "vim"}'
    os.replace(a, folder / "a.json~")
    with open(a, "wb") as f:
        f.write(vim[:5])
        f.flush()
        f.write(vim[5:])
    (folder / "a.json~").unlink()
    (ev,) = await expect(w, 1)
    assert (ev.kind, ev.sha256) == ("changed", content_hash(vim))


async def test_a_checkout_burst_reports_every_file_as_it_ends(watched) -> None:
    """A git checkout rewrites many files at once (unlink, create, write): each is reported
    with its final content, whatever batches the burst falls into."""
    folder, w = watched
    final = {f"e{i}.json": b'{"i": %d, "pad": "%s"}' % (i, b"p" * (i * 300)) for i in range(25)}
    for name in final:
        (folder / name).write_bytes(b'{"i": "old"}')
    await collect(w)
    for name, data in final.items():
        (folder / name).unlink()
        with open(folder / name, "wb") as f:
            f.write(data[:7])
            f.flush()
            f.write(data[7:])
    last: dict[str, str | None] = {}
    for ev in await collect(w, 0.5):
        last[ev.path.name] = ev.sha256
    assert last == {name: content_hash(data) for name, data in final.items()}
