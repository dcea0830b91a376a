"""DaemonLock: one daemon per home, across processes; freed when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mocksync.agent.errors import DaemonAlreadyRunning
from mocksync.agent.lock import DaemonLock, read_lock_pid
from mocksync.errors import MocksyncError

TRY_LOCK = textwrap.dedent(
    """
    import sys
    from mocksync.agent.lock import DaemonAlreadyRunning, DaemonLock
    try:
        DaemonLock(sys.argv[1]).acquire()
    except DaemonAlreadyRunning as exc:
        print(exc)
        sys.exit(7)
    print("acquired")
    """
)

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from mocksync.agent.lock import DaemonLock
    DaemonLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def try_in_subprocess(lock_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(lock_path)],
        capture_output=True, text=True, timeout=30,
    )


def test_second_daemon_in_another_process_is_refused(tmp_path: Path) -> None:
    lock_path = tmp_path / "home" / "daemon.lock"
    with DaemonLock(lock_path) as lock:
        assert lock.held
        assert read_lock_pid(lock_path) == os.getpid()
        assert os.stat(lock_path).st_mode & 0o777 == 0o600
        result = try_in_subprocess(lock_path)
        assert result.returncode == 7, result.stderr
        message = result.stdout.strip()
        assert f"pid {os.getpid()}" in message
        assert str(tmp_path / "home") in message
    # Released: another process may take it now.
    result = try_in_subprocess(lock_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "acquired"


def test_second_lock_in_same_process_is_refused(tmp_path: Path) -> None:
    first = DaemonLock(tmp_path / "daemon.lock", home=tmp_path / "some-home").acquire()
    try:
        with pytest.raises(DaemonAlreadyRunning) as info:
            DaemonLock(tmp_path / "daemon.lock", home=tmp_path / "some-home").acquire()
        assert isinstance(info.value, MocksyncError)
        assert "some-home" in str(info.value)
    finally:
        first.release()
    assert not first.held
    DaemonLock(tmp_path / "daemon.lock").acquire().release()


def test_lock_freed_when_holder_is_killed(tmp_path: Path) -> None:
    lock_path = tmp_path / "daemon.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DaemonAlreadyRunning, match=f"pid {holder.pid}"):
            DaemonLock(lock_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        lock = DaemonLock(lock_path).acquire()  # no stale lock after kill -9
        assert read_lock_pid(lock_path) == os.getpid()
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_garbage_pid_file_does_not_break_anything(tmp_path: Path) -> None:
    lock_path = tmp_path / "daemon.lock"
    lock_path.write_bytes(b"not a pid \xff" * 10)
    assert read_lock_pid(lock_path) is None
    assert read_lock_pid(tmp_path / "missing") is None
    with DaemonLock(lock_path):
        assert read_lock_pid(lock_path) == os.getpid()


def test_unusable_lock_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(MocksyncError, match="cannot open the daemon lock"):
        DaemonLock(tmp_path / "file" / "daemon.lock").acquire()
