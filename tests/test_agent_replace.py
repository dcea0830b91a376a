"""Compare-before-replace (issue 13): a save that lands while the daemon writes is never lost.

The daemon reads the file, renders the merged version, writes it to a temp file, fsyncs it
and renames it over the file. An editor save landing anywhere in that stretch used to be
overwritten unseen. These tests put the save exactly there (from inside the temp file's
fsync, the slowest step of the write) so the race is certain, not a matter of luck.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mocksync import fsatomic
from mocksync.agent import writer
from mocksync.agent.bus import LocalBus

from helpers.agents import TEST_BLIND_S, Two, make_agent, running, settle, state_doc, two_devices
from helpers.devices import make_device, team_space
from helpers.files import (
    copy_example,
    editor_save,
    read_doc,
    response_by_uuid,
    responses,
    set_label,
)
from helpers.polling import wait_until


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    """A's petstore shared and adopted by B (helpers.agents.two_devices), nothing pending on either."""
    async with two_devices(tmp_path, settled=True) as t:
        yield t


class SaveDuringFsync:
    """Make an editor save of `path` from inside the next fsync of one of our temp files
    (the daemon's write of `path` is then between its read and its rename)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path,
                 save: Callable[[], None], times: int = 1) -> None:
        self.path = path
        self.save = save
        self.left = times
        self.fired = 0
        self._real = os.fsync
        monkeypatch.setattr(writer.os, "fsync", self._fsync)

    def _fsync(self, fd: int) -> None:
        self._real(fd)
        if self.left <= 0:
            return
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if Path(name).parent == self.path.parent and Path(name).name.startswith(
                writer.TEMP_PREFIX):
            self.left -= 1
            self.fired += 1
            self.save()


def labels(doc: dict[str, Any], uuids: list[str]) -> dict[str, str]:
    return {u: response_by_uuid(doc, u)["label"] for u in uuids}


async def test_save_landing_mid_write_is_taken_in_not_overwritten(
        two: Two, monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = [r["uuid"] for r in responses(read_doc(two.file_a))]
    ua, ub = uuids[0], uuids[1]

    def bobs_save() -> None:  # the editor on B saves its own edit, unaware of A's
        doc = read_doc(two.file_b)
        response_by_uuid(doc, ub)["label"] = "saved by B mid-write"
        editor_save(two.file_b, doc)

    hook = SaveDuringFsync(monkeypatch, two.file_b, bobs_save)
    doc_a = read_doc(two.file_a)
    response_by_uuid(doc_a, ua)["label"] = "from A"
    editor_save(two.file_a, doc_a)

    want = {ua: "from A", ub: "saved by B mid-write"}
    await wait_until(lambda: hook.fired == 1, "B's daemon to write A's edit")
    await wait_until(lambda: labels(read_doc(two.file_b), [ua, ub]) == want
                     and labels(read_doc(two.file_a), [ua, ub]) == want,
                     "both edits in both files", timeout=5 * TEST_BLIND_S + 5)
    await settle(two.a, two.b, quiet_s=2 * TEST_BLIND_S)
    assert labels(read_doc(two.file_b), [ua, ub]) == want
    assert state_doc(two.a, two.env) == state_doc(two.b, two.env) == read_doc(two.file_b)
    assert two.b.store.conflicts(two.env) == []


async def test_every_save_of_a_burst_mid_writes_survives(
        two: Two, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five remote edits in a row, each write of B's met by a save of B's editor."""
    uuids = [r["uuid"] for r in responses(read_doc(two.file_a))]
    mine_a, mine_b = uuids[0::2], uuids[1::2]
    n = min(5, len(mine_a), len(mine_b))
    count = 0

    def bobs_save() -> None:
        nonlocal count
        doc = read_doc(two.file_b)
        response_by_uuid(doc, mine_b[count])["label"] = f"B-{count}"
        count += 1
        editor_save(two.file_b, doc)

    hook = SaveDuringFsync(monkeypatch, two.file_b, bobs_save, times=n)
    for i in range(n):
        edit = set_label(mine_a[i], f"A-{i}")
        doc = read_doc(two.file_a)
        edit(doc)
        editor_save(two.file_a, doc)
        await wait_until(lambda i=i: hook.fired > i, f"B's write #{i}", timeout=10)
    want = {**{mine_a[i]: f"A-{i}" for i in range(n)}, **{mine_b[i]: f"B-{i}" for i in range(n)}}
    await wait_until(lambda: labels(read_doc(two.file_b), list(want)) == want
                     and read_doc(two.file_a) == read_doc(two.file_b),
                     "every edit in both files", timeout=10)
    await settle(two.a, two.b, quiet_s=2 * TEST_BLIND_S)
    assert labels(read_doc(two.file_a), list(want)) == want
    assert state_doc(two.a, two.env) == state_doc(two.b, two.env)


async def test_forced_write_at_stop_keeps_a_save_landing_mid_write(
        two: Two, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopping flushes held writes (force): a save racing that write is committed too."""
    uuids = [r["uuid"] for r in responses(read_doc(two.file_a))]
    ua, ub = uuids[0], uuids[1]
    # B's editor saved just now: A's edit is held by B's blind window.
    doc_b = read_doc(two.file_b)
    response_by_uuid(doc_b, uuids[2])["label"] = "B first"
    editor_save(two.file_b, doc_b)
    await wait_until(lambda: response_by_uuid(state_doc(two.b, two.env), uuids[2])["label"]
                     == "B first", "B's first save committed")
    two.b.blind.note_editor_save(two.file_b, two.b.clock() + 60)  # hold for a minute
    doc_a = read_doc(two.file_a)
    response_by_uuid(doc_a, ua)["label"] = "from A"
    editor_save(two.file_a, doc_a)
    await wait_until(lambda: response_by_uuid(state_doc(two.b, two.env), ua)["label"]
                     == "from A", "A's edit in B's log")
    assert two.b.envs[two.env].write_handle is not None

    def bobs_save() -> None:
        doc = read_doc(two.file_b)
        response_by_uuid(doc, ub)["label"] = "B at stop"
        editor_save(two.file_b, doc)

    hook = SaveDuringFsync(monkeypatch, two.file_b, bobs_save)
    await two.b.stop()
    assert hook.fired == 1
    final = read_doc(two.file_b)
    assert labels(final, [ua, ub]) == {ua: "from A", ub: "B at stop"}
    assert response_by_uuid(final, uuids[2])["label"] == "B first"
    await asyncio.sleep(0)


# ------------------------------------------------------------------ the writer, directly

def _expected(path: Path) -> writer.Expected:
    data = path.read_bytes()
    return writer.Expected(writer.sig_of(os.stat(path)), writer.content_hash(data))


def test_replace_verdict_decides_from_signature_and_age() -> None:
    sig = (7, 1_000_000_000_000, 10)
    old_now = sig[1] + 10 * writer.TIMESTAMP_DOUBT_NS
    read = writer.Expected(sig, "h")
    assert writer.replace_verdict(read, sig, old_now) == writer.SAME
    assert writer.replace_verdict(read, (8, sig[1], 10), old_now) == writer.CHANGED  # renamed over
    assert writer.replace_verdict(read, (7, sig[1] + 1, 10), old_now) == writer.CHANGED
    assert writer.replace_verdict(read, (7, sig[1], 11), old_now) == writer.CHANGED
    assert writer.replace_verdict(read, None, old_now) == writer.CHANGED  # deleted meanwhile
    # Modified within the timestamp granularity: a same-tick write would look the same.
    assert writer.replace_verdict(read, sig, sig[1] + 1000) == writer.DOUBT
    absent = writer.Expected.absent()
    assert writer.replace_verdict(absent, None, old_now) == writer.SAME
    assert writer.replace_verdict(absent, sig, old_now) == writer.CHANGED  # created meanwhile


def test_replace_refuses_a_file_saved_over_since_it_was_read(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    path.write_bytes(b'{"v": 1}')
    read = _expected(path)
    editor_save(path, b'{"v": 2, "editor": true}')
    with pytest.raises(writer.FileChangedError, match="changed since it was read"):
        writer.replace_file(path, b'{"v": 3}', expect=read)
    assert path.read_bytes() == b'{"v": 2, "editor": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["env.json"]  # no temp file left


def test_replace_hashes_when_the_signature_cannot_tell(tmp_path: Path) -> None:
    """An in-place write of the same size within the same timestamp tick keeps inode, size
    and mtime: only the content shows it, and a recent mtime makes the writer look."""
    path = tmp_path / "env.json"
    path.write_bytes(b'{"v": 1}')
    st = os.stat(path)
    read = _expected(path)
    with open(path, "r+b") as fh:  # same inode, same size
        fh.write(b'{"v": 2}')
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    assert writer.sig_of(os.stat(path)) == read.sig
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b'{"v": 3}', expect=read)
    assert path.read_bytes() == b'{"v": 2}'
    # Unchanged content within the doubt window: replaced.
    again = _expected(path)
    out = writer.replace_file(path, b'{"v": 3, "x": 0}', expect=again)
    assert path.read_bytes() == b'{"v": 3, "x": 0}'
    assert out.sig == writer.sig_of(os.stat(path))  # the written version's identity


def test_replace_compares_bytes_when_the_writer_holds_them(tmp_path: Path) -> None:
    """A writer that kept the bytes it read (issue 15) is checked byte for byte, not by hash:
    a same-size, same-tick change is still refused, and its own hash is not trusted."""
    path = tmp_path / "env.json"
    data = b'{"v": 1}' * 300_000  # several compare slices
    path.write_bytes(data)
    st = os.stat(path)
    read = writer.Expected(writer.sig_of(st), "not-the-hash", data)
    changed = bytearray(data)
    changed[-3] = ord("2")
    with open(path, "r+b") as fh:  # same inode, same size, same mtime: only content tells
        fh.write(changed)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b'{"v": 3}', expect=read)
    assert path.read_bytes() == bytes(changed)
    # The same bytes: replaced, although the hash it carries is wrong (bytes decide).
    held = writer.Expected(writer.sig_of(os.stat(path)), "not-the-hash", bytes(changed))
    out = writer.replace_file(path, b'{"v": 3}', expect=held, sha256="given")
    assert path.read_bytes() == b'{"v": 3}' and out.sha256 == "given"


def test_replace_expecting_absence_refuses_a_file_created_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    path.write_bytes(b"made by the editor")
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b"ours", expect=writer.Expected.absent())
    assert path.read_bytes() == b"made by the editor"
    path.unlink()
    writer.replace_file(path, b"ours", expect=writer.Expected.absent())
    assert path.read_bytes() == b"ours"


def test_replace_checks_after_the_slow_part(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The check runs after the temp file's fsync: a save landing during it is seen."""
    path = tmp_path / "env.json"
    path.write_bytes(b"v1")
    read = _expected(path)
    hook = SaveDuringFsync(monkeypatch, path, lambda: editor_save(path, b"editor v2"))
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b"daemon v2", expect=read)
    assert hook.fired == 1
    assert path.read_bytes() == b"editor v2"


class SaveAfterLastCheck:
    """Make editor saves of `path` right after the writer's last check of it has passed:
    the thread preempted between that check and the rename (a loaded machine, or the GIL
    handed to an editor thread) while the editor saves. `then`: a save made while the
    writer looks at the version its swap displaced (a second save, microseconds later)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path, save: bytes,
                 then: bytes | None = None) -> None:
        self.path = path
        self.saves = [save] if then is None else [save, then]
        self.fired = 0
        self._real = writer._check_unchanged
        monkeypatch.setattr(writer, "_check_unchanged", self._check)

    def _check(self, target: Path, expected: writer.Expected) -> None:
        if target != self.path:  # the displaced version: a second save lands first
            if self.fired == 1 and len(self.saves) == 2:
                self._save()
            self._real(target, expected)
            return
        self._real(target, expected)
        if self.fired == 0:
            self._save()

    def _save(self) -> None:
        editor_save(self.path, self.saves[self.fired])
        self.fired += 1


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if writer.TEMP_PREFIX in p.name]


def test_a_save_after_the_last_check_is_put_back_not_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window between the last check and the rename: the swap shows the save, and
    puts it back (the hammer lost such a save under load)."""
    path = tmp_path / "env.json"
    path.write_bytes(b"v1")
    hook = SaveAfterLastCheck(monkeypatch, path, b"editor v2")
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b"daemon v2", expect=_expected(path))
    assert hook.fired == 1
    assert path.read_bytes() == b"editor v2"
    assert _leftovers(tmp_path) == []
    # Taken in, the next write goes through over the editor's version.
    writer.replace_file(path, b"daemon v3", expect=_expected(path))
    assert path.read_bytes() == b"daemon v3" and _leftovers(tmp_path) == []


def test_two_saves_in_the_window_leave_the_newest_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.json"
    path.write_bytes(b"v1")
    hook = SaveAfterLastCheck(monkeypatch, path, b"editor v2", then=b"editor v3")
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b"daemon v2", expect=_expected(path))
    assert hook.fired == 2
    assert path.read_bytes() == b"editor v3"
    assert _leftovers(tmp_path) == []


def test_a_file_created_after_the_last_check_is_put_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "new.json"
    hook = SaveAfterLastCheck(monkeypatch, path, b"made by the editor")
    with pytest.raises(writer.FileChangedError):
        writer.replace_file(path, b"ours", expect=writer.Expected.absent())
    assert hook.fired == 1
    assert path.read_bytes() == b"made by the editor"
    assert _leftovers(tmp_path) == []


def test_without_an_atomic_exchange_the_write_still_replaces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Systems without `renameat2`: a plain rename after the check, as before."""
    monkeypatch.setattr(fsatomic, "_renameat2", None)
    path = tmp_path / "env.json"
    path.write_bytes(b"v1")
    out = writer.replace_file(path, b"daemon v2", expect=_expected(path))
    assert path.read_bytes() == b"daemon v2" and _leftovers(tmp_path) == []
    assert out.sig == writer.sig_of(os.stat(path))


# ------------------------------------------------------------------ the hammer
#
# The editor stand-in runs in a thread of its own (its own event loop), so its saves land at
# any moment of the daemons' work, the temp file's fsync included, as a real editor's do.
# Every save adds a data bucket of its own (`save-N`): a lost save is a bucket that never
# reaches the team. Device A meanwhile streams edits of labels into B's daemon.

#: (daemon blind window, editor blind period, seconds of saving).
HAMMER_SMALL = (TEST_BLIND_S, 0.2, 6.0)
HAMMER_DEFAULT = (3.5, 3.0, 10.0)
#: Longest short gap between two editor saves / two of A's edits (seconds).
HAMMER_EDITOR_GAP_S = 0.15
HAMMER_REMOTE_GAP_S = 0.08
#: Share of the editor's gaps that end just around the daemon's hold (when a held write of
#: A's edits goes out: the hazard with the default window), and how far around (seconds).
HAMMER_AT_HOLD = 0.3
HAMMER_AT_HOLD_SPREAD_S = 0.1
#: After the saving: how long both daemons must stay quiet (beyond the hold) before a save
#: still missing counts as lost, and how many such quiet checks at most.
HAMMER_QUIET_S = 0.5
HAMMER_SETTLE_ROUNDS = 20


def save_numbers(doc: dict[str, Any]) -> set[int]:
    return {int(b["name"][5:]) for b in doc.get("data", []) if b.get("name", "").startswith("save-")}


def _editor_thread(path: Path, blind_s: float, hold_s: float, seconds: float, seed: int,
                   out: dict[str, Any], max_saves: int | None = None) -> None:
    import random
    import time
    import uuid

    from editor_standin import EditorStandin

    async def main() -> None:
        rng = random.Random(seed)
        ed = EditorStandin(path, blind_s=blind_s, poll_s=0.005)
        await ed.start()
        made = 0
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end and (max_saves is None or made < max_saves):
                if rng.random() < HAMMER_AT_HOLD:
                    gap = hold_s + rng.uniform(-HAMMER_AT_HOLD_SPREAD_S, HAMMER_AT_HOLD_SPREAD_S)
                else:
                    gap = rng.uniform(0.0, HAMMER_EDITOR_GAP_S)
                await asyncio.sleep(max(0.0, gap))
                n = made
                ed.edit(lambda d, n=n: d.setdefault("data", []).append(
                    {"uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                     "id": f"s{n}", "name": f"save-{n}", "documentation": "", "value": ""}))
                ed.save()
                made += 1
            await asyncio.sleep(blind_s + 0.05)  # watching again: reloads what came meanwhile
        finally:
            out["made"] = made
            out["reload_errors"] = ed.reload_errors
            await ed.stop()

    asyncio.run(main())


async def hammer(two: Two, editor_blind: float, hold_s: float, seconds: float,
                 seed: int, max_saves: int | None = None) -> tuple[int, int, list[int]]:
    """(saves made, A's edits, the numbers of lost saves)."""
    import random
    import threading

    rng = random.Random(seed)
    uuids = [r["uuid"] for r in responses(read_doc(two.file_a))]
    out: dict[str, Any] = {}
    editor = threading.Thread(target=_editor_thread, args=(two.file_b, editor_blind, hold_s,
                                                           seconds, seed, out, max_saves),
                              daemon=True)
    editor.start()
    remote = 0
    while editor.is_alive():
        doc = read_doc(two.file_a)
        response_by_uuid(doc, rng.choice(uuids))["label"] = f"A-{remote}"
        editor_save(two.file_a, doc)
        remote += 1
        await asyncio.sleep(rng.uniform(0.01, HAMMER_REMOTE_GAP_S))
    editor.join()
    made = out["made"]
    assert out["reload_errors"] == 0  # the editor never saw a half-written file

    def settled() -> bool:
        da, db = read_doc(two.file_a), read_doc(two.file_b)
        return da == db and save_numbers(db) == set(range(made))

    # Until every save is in both files, or nothing more can come: both daemons quiet (no
    # event, no held write, no store-worker job for a while) and both files equal and
    # unchanged across that. A save missing then is lost, not late: on a loaded machine
    # (`pytest -n`) a fixed deadline here counted late saves as lost.
    for _ in range(HAMMER_SETTLE_ROUNDS):
        if settled():
            break
        seen = (read_doc(two.file_a), read_doc(two.file_b))
        await settle(two.a, two.b, quiet_s=hold_s + HAMMER_QUIET_S, timeout=3 * hold_s + 10)
        if seen[0] == seen[1] == read_doc(two.file_a) == read_doc(two.file_b):
            break
    await wait_until(lambda: read_doc(two.file_a) == read_doc(two.file_b),
                     "both files to agree", timeout=3 * hold_s + 5)
    return made, remote, sorted(set(range(made)) - save_numbers(read_doc(two.file_b)))


@pytest.fixture
async def two_default(tmp_path: Path) -> AsyncIterator[Two]:
    """`two` with the daemons' default hold (3.5 s) instead of the tests' short one."""
    root = tmp_path / "default-hold"
    dev_a, dev_b = make_device(root, "a"), make_device(root, "b")
    team_space(dev_a, dev_b)
    bus = LocalBus()
    src = copy_example("petstore.json", dev_a.folder)
    blind = HAMMER_DEFAULT[0]
    async with running(make_agent(dev_a, bus, blind_s=blind),
                       make_agent(dev_b, bus, blind_s=blind)) as (a, b):
        env = a.share(str(src), space="team")["uuid"]
        await wait_until(lambda: env in b.envs and b.envs[env].path.exists(), "B to adopt")
        file_b = b.envs[env].path
        await wait_until(lambda: read_doc(file_b) == read_doc(src), "B's file to match")
        yield Two(a, b, dev_a, dev_b, env, src, file_b)


async def test_hammer_small_window_loses_no_save(two: Two) -> None:
    daemon_blind, editor_blind, seconds = HAMMER_SMALL
    made, remote, lost = await hammer(two, editor_blind, daemon_blind, seconds, seed=1)
    assert made >= 20 and remote >= 30, (made, remote)
    assert lost == [], f"{len(lost)} of {made} saves lost: {lost}"


async def test_hammer_default_window_loses_no_save(two_default: Two) -> None:
    daemon_blind, editor_blind, seconds = HAMMER_DEFAULT
    made, remote, lost = await hammer(two_default, editor_blind, daemon_blind, seconds, seed=2)
    assert made >= 5 and remote >= 30, (made, remote)
    assert lost == [], f"{len(lost)} of {made} saves lost: {lost}"


#: `make test-long`: saves counted per window setting (2,000 in all).
LONG_SAVES = {"small": 1500, "default": 500}


@pytest.mark.long
@pytest.mark.skipif(not os.environ.get("MOCKSYNC_LONG"),
                    reason="set MOCKSYNC_LONG=1 (make test-long)")
@pytest.mark.timeout(1800)
async def test_hammer_two_thousand_saves(two: Two, two_default: Two) -> None:
    """1,500 saves beside a small window and 500 beside the default one: none lost."""
    daemon_blind, editor_blind, _ = HAMMER_SMALL
    made, _remote, lost = await hammer(two, editor_blind, daemon_blind, 1e9, seed=3,
                                       max_saves=LONG_SAVES["small"])
    assert made == LONG_SAVES["small"] and lost == [], f"{len(lost)} of {made} lost: {lost}"
    daemon_blind, editor_blind, _ = HAMMER_DEFAULT
    made, _remote, lost = await hammer(two_default, editor_blind, daemon_blind, 1e9, seed=4,
                                       max_saves=LONG_SAVES["default"])
    assert made == LONG_SAVES["default"] and lost == [], f"{len(lost)} of {made} lost: {lost}"
