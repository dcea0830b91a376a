"""Write and commit failures as states and backoff (issue 13): the pure decisions."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mocksync.agent import faults
from mocksync.agent import writer as writer_mod
from mocksync.agent.daemon import Agent
from mocksync.agent.errors import FileWriteError
from mocksync.agent.faults import (
    COMMITTING,
    DISK_FULL,
    ERROR,
    IO_ERROR,
    NO_PERMISSION,
    READ_ONLY,
    RECEIVING,
    RETRY_FIRST_S,
    RETRY_MAX_S,
    WRITING,
    Fault,
    FaultBook,
    classify,
    retry_delay,
    sentence,
)

from helpers.agents import env_status, state_doc, two_devices
from helpers.files import edit_file, read_doc, responses, set_label
from helpers.polling import wait_until


def raised_from(cause: BaseException) -> FileWriteError:
    try:
        try:
            raise cause
        except OSError as exc:
            raise FileWriteError(f"could not write x: {exc.strerror}") from exc
    except FileWriteError as exc:
        return exc


@pytest.mark.parametrize(("code", "kind"), [
    (errno.ENOSPC, DISK_FULL), (errno.EDQUOT, DISK_FULL), (errno.EROFS, READ_ONLY),
    (errno.EACCES, NO_PERMISSION), (errno.EPERM, NO_PERMISSION), (errno.EIO, IO_ERROR),
])
def test_os_errors_are_classified_by_errno(code: int, kind: str) -> None:
    fault = classify(raised_from(OSError(code, "boom")), "folder")
    assert fault is not None and fault.kind == kind and fault.where == "folder"
    assert errno.errorcode[code] in fault.cause


def test_sqlite_full_is_found_behind_cannot_rollback() -> None:
    """The log used to show only SQLite's "cannot rollback", raised while handling the full
    disk: the real cause is further down the chain, and that is what is reported."""
    echo = sqlite3.OperationalError("cannot rollback - no transaction is active")
    assert classify(echo, "home") is None  # only the echo: no cause to report
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.Error:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")  # noqa: B904
    except sqlite3.Error as exc:
        chained = exc
    fault = classify(chained, "home")
    assert fault == Fault(DISK_FULL, "home", "database or disk is full (sqlite)")


@pytest.mark.parametrize(("text", "kind"), [
    ("attempt to write a readonly database", READ_ONLY),
    ("disk I/O error", IO_ERROR),
    ("database or disk is full", DISK_FULL),
])
def test_sqlite_messages(text: str, kind: str) -> None:
    fault = classify(sqlite3.OperationalError(text), "home")
    assert fault is not None and fault.kind == kind


def test_a_bug_is_not_a_fault() -> None:
    assert classify(ValueError("bug"), "folder") is None
    assert classify(KeyError("x"), "home") is None
    assert classify(sqlite3.IntegrityError("UNIQUE constraint failed"), "home") is None


def test_sentence_says_what_where_and_what_next() -> None:
    full = Fault(DISK_FULL, "folder", "No space left on device (ENOSPC)")
    text = sentence(full, WRITING, "petstore.json", "/h", 4.0)
    assert text.startswith("disk full writing petstore.json (No space left on device (ENOSPC))")
    assert "the team's version is kept" in text and "retrying by itself in 4.0 s" in text
    assert "free some space" in text
    home = Fault(DISK_FULL, "home", "database or disk is full (sqlite)")
    text = sentence(home, COMMITTING, "petstore.json", "/h", None)
    assert text.startswith("disk full committing an edit of petstore.json (the daemon's own "
                           "state in /h")
    assert "taken in once it can be committed" in text and "retrying" not in text
    ro = Fault(READ_ONLY, "home", "x")
    assert "fetched again" in sentence(ro, RECEIVING, "a.json", "/h", 1.0)
    assert "write access" in sentence(ro, RECEIVING, "a.json", "/h", 1.0)


def test_retry_delay_doubles_to_a_cap_with_bounded_jitter() -> None:
    assert retry_delay(1) == RETRY_FIRST_S
    assert retry_delay(2) == 2 * RETRY_FIRST_S
    assert retry_delay(3) == 4 * RETRY_FIRST_S
    assert retry_delay(50) == RETRY_MAX_S
    assert retry_delay(10_000) == RETRY_MAX_S  # no overflow
    assert retry_delay(1, 1.0) == pytest.approx(RETRY_FIRST_S * (1 + faults.RETRY_JITTER))
    assert retry_delay(1, -1.0) == pytest.approx(RETRY_FIRST_S * (1 - faults.RETRY_JITTER))
    assert retry_delay(50, 1.0) == RETRY_MAX_S
    with pytest.raises(ValueError):
        retry_delay(0)
    with pytest.raises(ValueError):
        retry_delay(1, 1.5)


def test_fault_book_tracks_failures_until_cleared() -> None:
    book = FaultBook()
    full = Fault(DISK_FULL, "folder", "ENOSPC")
    assert book.view("e1", "a.json", "/h", 0.0) == {}
    assert book.failed("e1", WRITING, full, now=100.0) == RETRY_FIRST_S
    assert book.failed("e1", WRITING, full, now=100.5) == 2 * RETRY_FIRST_S
    view = book.view("e1", "a.json", "/h", now=100.6)
    assert view["state"] == ERROR
    assert view["reason"].startswith("disk full writing a.json")
    assert "retrying by itself in 0.9 s" in view["reason"]
    assert book.view("e2", "b.json", "/h", 100.6) == {}
    # A commit failure too: the write's sentence comes first (it is what the file lacks).
    book.failed("e1", COMMITTING, Fault(DISK_FULL, "home", "full"), now=101.0)
    assert book.view("e1", "a.json", "/h", 101.0)["reason"].startswith("disk full writing")
    gone = book.cleared("e1", WRITING)
    assert gone is not None and gone.retry.failures == 2 and gone.retry.since == 100.0
    assert book.view("e1", "a.json", "/h", 101.0)["reason"].startswith(
        "disk full committing an edit of a.json")
    assert book.cleared("e1", WRITING) is None
    book.forget("e1")
    assert book.view("e1", "a.json", "/h", 101.0) == {}
    # Failing again after a recovery starts the backoff over.
    assert book.failed("e1", WRITING, full, now=200.0) == RETRY_FIRST_S


# ------------------------------------------------------------------ in the daemon (no root)
# The full disk is simulated here (ENOSPC from the temp file's write, "database or disk is
# full" from the log); tests/journeys/test_disk.py fills a real tmpfs.



@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Agent, Agent, str, Path, Path]]:
    async with two_devices(tmp_path) as t:
        yield t.a, t.b, t.env, t.file_a, t.file_b


class DiskFull:
    """ENOSPC for every write into our temp files in `folder` while `on`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        self.on = True
        self.hits = 0
        real = os.write

        def write(fd: int, data: bytes) -> int:
            if self.on:
                name = Path("/")
                with contextlib.suppress(OSError):
                    name = Path(os.readlink(f"/proc/self/fd/{fd}"))
                if name.parent == folder and name.name.startswith(writer_mod.TEMP_PREFIX):
                    self.hits += 1
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr(writer_mod.os, "write", write)




async def test_folder_full_is_an_error_state_retried_by_itself(
        pair: tuple[Agent, Agent, str, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, env, file_a, file_b = pair
    before = file_b.read_bytes()
    full = DiskFull(monkeypatch, file_b.parent)
    target = responses(read_doc(file_a))[0]["uuid"]
    edit_file(file_a, set_label(target, "while B's disk is full"))
    row = await wait_until(lambda: (r := env_status(b, env)) and r["state"] == "error" and r,
                           "B's status to say error")
    assert row["reason"].startswith(f"disk full writing {file_b.name} (No space left on "
                                    "device (ENOSPC))")
    assert "retrying by itself" in row["reason"]
    assert file_b.read_bytes() == before  # untouched
    assert [p.name for p in file_b.parent.iterdir()] == [file_b.name]  # no temp left
    await wait_until(lambda: full.hits >= 3, "B to retry by itself, more than once")
    full.on = False  # space returns; nobody calls reconnect
    await wait_until(lambda: read_doc(file_b) == state_doc(a, env), "B's file written")
    await wait_until(lambda: env_status(b, env)["state"] == "synced", "B synced again")
    assert env_status(b, env)["reason"] is None
    assert b.faults.failing(env) == []


async def test_home_full_save_is_taken_in_once_space_returns(
        pair: tuple[Agent, Agent, str, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, env, file_a, file_b = pair
    real = b.store.commit_local
    state = {"full": True, "tries": 0}

    def commit_local(*args: object, **kw: object) -> object:
        if state["full"]:
            state["tries"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return real(*args, **kw)

    monkeypatch.setattr(b.store, "commit_local", commit_local)
    target = responses(read_doc(file_b))[1]["uuid"]
    edit_file(file_b, set_label(target, "saved while B's home is full"))
    row = await wait_until(lambda: (r := env_status(b, env)) and r["state"] == "error" and r,
                           "B's status to say error")
    assert row["reason"].startswith(f"disk full committing an edit of {file_b.name} (the "
                                    "daemon's own state in ")
    assert "the saved file is kept" in row["reason"]
    await wait_until(lambda: state["tries"] >= 3, "B to retry the commit by itself")
    state["full"] = False
    await wait_until(lambda: read_doc(file_a) == read_doc(file_b), "B's save to reach A")
    await wait_until(lambda: env_status(b, env)["state"] == "synced", "B synced again")
    labels = [r["label"] for r in responses(read_doc(file_a))]
    assert "saved while B's home is full" in labels


async def test_home_full_log_reports_disk_full_not_cannot_rollback(
        pair: tuple[Agent, Agent, str, Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    """A real SQLITE_FULL (the log may not grow: `max_page_count`): SQLite rolls the
    transaction back itself, and a second ROLLBACK used to replace "database or disk is
    full" with "cannot rollback - no transaction is active" in the log."""
    a, b, env, file_a, file_b = pair
    pages = b.store.db.execute("PRAGMA page_count").fetchone()[0]
    b.store.db.execute(f"PRAGMA max_page_count={pages}")
    big = "x" * 200_000  # needs new pages: cannot fit
    target = responses(read_doc(file_b))[2]["uuid"]
    edit_file(file_b, set_label(target, big))
    row = await wait_until(lambda: (r := env_status(b, env)) and r["state"] == "error" and r,
                           "B's status to say error")
    assert "database or disk is full" in row["reason"]
    assert "cannot rollback" not in caplog.text
    assert "database or disk is full" in caplog.text
    b.store.db.execute("PRAGMA max_page_count=1073741823")  # space returns
    await wait_until(lambda: big in {r["label"] for r in responses(read_doc(file_a))},
                     "B's save, taken in once the log can grow, to reach A")
    await wait_until(lambda: env_status(b, env)["state"] == "synced", "B synced again")
