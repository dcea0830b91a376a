"""Child processes of the test suite (daemons, relays, CLI runs) and the short homes they use.

Why one module: the suite starts real `mocksync daemon` and `mocksync relay` processes from
three places (the black-box journeys, the daemon subprocess tests, the namespace tests). Each
used to spawn, stop and reap on its own, and a stuck child of one outlived the run. Here every
long-running child is started the same way (its own session, output appended to a log file
with a start marker), registered, stopped by SIGTERM to its process group then SIGKILL, and
reaped at interpreter exit whatever the test did. Nothing here imports `mocksync`: the
journeys' harness, which must see only what a user sees, is built on this module too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Longest a process gets to exit after SIGTERM before it is SIGKILLed (seconds).
STOP_S = 10.0
#: How much of a log a failure message shows.
LOG_TAIL_CHARS = 4000
#: Log lines containing this are left out of failure messages (the watcher's batch counts,
#: which would push the lines that explain a failure out of the tail).
LOG_NOISE = "watchfiles.main"
#: Pause between two looks while waiting for a started process to answer.
READY_POLL_S = 0.05
#: Terminal width every child sees (click wraps help and tables to it).
COLUMNS = "200"

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _reap_all() -> None:
    """Last resort at interpreter exit: no child outlives the test run."""
    for proc in list(_LIVE.values()):
        terminate(proc)


atexit.register(_reap_all)


def mocksync_command() -> list[str]:
    """The installed `mocksync` console script next to this interpreter, else on PATH, else
    `python -m mocksync`."""
    script = Path(sys.executable).parent / "mocksync"
    if script.exists():
        return [str(script)]
    found = shutil.which("mocksync")
    if found:
        return [found]
    return [sys.executable, "-m", "mocksync"]


def in_namespace(netns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside network namespace `netns` (helpers/netns.py), or as is."""
    return argv if netns is None else ["ip", "netns", "exec", netns, *argv]


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": COLUMNS, **extra}


def spawn(argv: list[str], log_path: Path, netns: str | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running child in its own session (inside `netns` when given), output
    appended to `log_path` after a start marker; registered for `terminate` / `_reap_all`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n----- {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(in_namespace(netns, argv), stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=child_env())
    _LIVE[proc.pid] = proc
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """`sig` to the child's process group when it leads one (`spawn`), else to the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def terminate(proc: subprocess.Popen[bytes], timeout: float = STOP_S) -> int | None:
    """SIGTERM the child's process group, wait, then SIGKILL; its exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=STOP_S)
    _LIVE.pop(proc.pid, None)
    return proc.returncode


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (a crash, no clean shutdown) and reap it."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=STOP_S)
    _LIVE.pop(proc.pid, None)


class Child:
    """What every harness keeps of one long-running child (a daemon, a relay): the process
    of its last start, its log, and the clean stop, the crash and the log tail."""

    log_chars = LOG_TAIL_CHARS

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_S) -> int | None:
        """SIGTERM (clean shutdown), SIGKILL if it does not stop in time; the exit code."""
        return None if self.proc is None else terminate(self.proc, timeout)

    def kill9(self) -> None:
        if self.proc is not None:
            kill9(self.proc)

    def log(self) -> str:
        return tail(self.log_path, self.log_chars)


def tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a log, without the file watcher's chatter (`LOG_NOISE`)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    text = "\n".join(line for line in text.splitlines() if LOG_NOISE not in line)
    return text[-chars:] if len(text) > chars else text


def logged_since_start(path: Path, text: str) -> bool:
    """Does the log, since the last start marker `spawn` wrote, contain `text`?"""
    try:
        log = path.read_text(errors="replace")
    except OSError:
        return False
    return text in log[log.rfind("\n----- "):]


def wait_answering(proc: subprocess.Popen[bytes], answers: Callable[[], Any], what: str,
                   timeout: float, log_path: Path, step: float = READY_POLL_S) -> Any:
    """Wait until `answers()` is truthy (returned) while `proc` runs; fail with the log's
    tail if the process exits first or `timeout` passes. `answers` may raise OSError while
    the process is still starting (no socket yet): that is "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            value = answers()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not answer within {timeout} s:\n"
                                 f"{tail(log_path)}")
        time.sleep(step)


def short_root(prefix: str = "msd-") -> Path:
    """A short temp dir: AF_UNIX socket paths are limited to ~107 bytes and pytest's
    tmp_path can be long. The caller removes it (see `short_tmp`)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextlib.contextmanager
def short_tmp(prefix: str = "msd-") -> Iterator[Path]:
    root = short_root(prefix)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
