"""A second local user for attack tests: created with `useradd` (root only), removed after.

Why a helper: the attacks of "another user of this machine" (issue 13, issue 19's page) are
only real when the kernel sees another uid. Code run as that user is forked from the test
process and calls `setuid`, so it must use nothing that imports lazily from a root-only
interpreter path (`encodings.idna` is imported here for `http.client` on an IP address).
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  (loaded before setuid: the child cannot read it later)
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Tries at useradd/userdel while another test holds /etc/passwd's lock.
PASSWD_TRIES = 20

CAN_ADD_USERS = os.geteuid() == 0 and shutil.which("useradd") is not None
WHY_NOT = "needs root and useradd to create a second local user and act as it"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@contextlib.contextmanager
def other_user() -> Iterator[User]:
    """A fresh local user (no home, no shell), deleted on exit."""
    name = f"msr{secrets.token_hex(4)}"
    for _ in range(PASSWD_TRIES):
        res = subprocess.run(["useradd", "--no-create-home", "--user-group",
                              "--shell", "/usr/sbin/nologin", name],
                             capture_output=True, text=True)
        if res.returncode == 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"useradd failed: {res.stderr}")
    try:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True,
                                 check=True).stdout)
        gid = int(subprocess.run(["id", "-g", name], capture_output=True, text=True,
                                 check=True).stdout)
        yield User(name, uid, gid)
    finally:
        for _ in range(PASSWD_TRIES):
            if subprocess.run(["userdel", name], capture_output=True).returncode in (0, 6):
                break
            time.sleep(0.2)


def as_user(user: User, fn: Callable[[], bytes]) -> bytes:
    """Run `fn()` in a forked child as `user`; what it returned (or the error it raised, as
    text starting with `raised:`), through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: setuid, run, write, _exit (never back into pytest)
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            try:
                out = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
                out = f"raised: {type(exc).__name__}: {exc}".encode()
            os.write(w, out)
        except BaseException:  # noqa: BLE001
            code = 99
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert code == 0, f"the child acting as {user.name} failed ({code})"
    return b"".join(chunks)
