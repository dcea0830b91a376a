"""Write and commit failures as states and backoff (issue 13): the pure decisions."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from mocksync.agent import faults
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
from mocksync.agent.writer import FileWriteError


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
