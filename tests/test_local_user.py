"""Another local user (issue 13): cannot read the home or the log DB, cannot answer for the
daemon's control socket.

Before the fix: with a long home path and no XDG_RUNTIME_DIR the socket fell back to a shared
/tmp name, so another user who created it first received the CLI's requests and answered
`status` with fake JSON; `--home` on an existing 0755 directory stayed 0755 and the log
database (plaintext environments in its WAL) was world-readable.

The black-box tests need root to create a second user (`useradd`, removed at teardown) and act
as it (fork + setuid); they skip, saying so, when not root. The pure checks run everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mocksync.agent.client import ControlClient, foreign_owner
from mocksync.agent.errors import ForeignSocketError
from mocksync.errors import PrivateDirError
from mocksync.paths import Home, ensure_private_dir, private_dir_problem

from helpers.daemons import DaemonProcess, cli, cli_process
from helpers.files import copy_example
from helpers.polling import wait_sync

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="needs root and useradd to create a second local user and act as it")


def fake_stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, uid, 0, 0, 0, 0))


# ------------------------------------------------------------------ pure decisions


def test_private_dir_problem() -> None:
    me = 1000
    assert private_dir_problem(fake_stat(stat.S_IFDIR | 0o700, me), me) is None
    assert "symlink" in private_dir_problem(fake_stat(stat.S_IFLNK | 0o777, me), me)
    assert "not a directory" in private_dir_problem(fake_stat(stat.S_IFREG | 0o600, me), me)
    other = private_dir_problem(fake_stat(stat.S_IFDIR | 0o700, 1001), me)
    assert other is not None and "uid 1001" in other
    loose = private_dir_problem(fake_stat(stat.S_IFDIR | 0o755, me), me)
    assert loose is not None and "0755" in loose
    # Our own directory with loose bits can be fixed (chmod), another user's never.
    assert private_dir_problem(fake_stat(stat.S_IFDIR | 0o777, me), me, fixable=True) is None
    assert private_dir_problem(fake_stat(stat.S_IFDIR | 0o700, 0), me, fixable=True)


def test_foreign_owner() -> None:
    assert foreign_owner(1000, 1000, 1000) is None
    assert foreign_owner(1001, 1000, 1000) == 1001  # the peer's uid decides, not the file's
    assert foreign_owner(None, 1001, 1000) == 1001  # no SO_PEERCRED: the file's owner
    assert foreign_owner(None, None, 1000) is None


def test_socket_only_in_a_private_directory(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    short = Home(Path(tempfile.mkdtemp(prefix="msh-", dir="/tmp")))
    try:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        assert short.socket == short.root / "control.sock"
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        assert short.socket.parent == runtime
        runtime.chmod(0o755)  # not private: never used
        assert short.socket == short.root / "control.sock"
        runtime.chmod(0o700)
        link = tmp_path / "runlink"
        link.symlink_to(runtime)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(link))  # a symlink: never used
        assert short.socket == short.root / "control.sock"
        monkeypatch.delenv("XDG_RUNTIME_DIR")
        long_home = Home(Path("/tmp") / ("h" * 120))
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        assert long_home.socket.parent == tmp_path / f"mocksync-{os.getuid()}"
    finally:
        shutil.rmtree(short.root, ignore_errors=True)


def test_ensure_private_dir(tmp_path: Path) -> None:
    d = tmp_path / "sock"
    ensure_private_dir(d)
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
    d.chmod(0o755)
    ensure_private_dir(d)  # ours: tightened
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(d)
    with pytest.raises(PrivateDirError, match="is a symlink"):
        ensure_private_dir(link)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PrivateDirError, match="not a directory"):
        ensure_private_dir(f)


def test_existing_loose_home_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "docs.json").write_text("{}")
    (home / "docs.json").chmod(0o644)
    (home / "trash").mkdir()
    (home / "trash").chmod(0o755)
    (home / "trash" / "1-a.json").write_text("{}")
    (home / "trash" / "1-a.json").chmod(0o644)
    Home(home).ensure()
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "docs.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "trash").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "trash" / "1-a.json").st_mode) == 0o600


# ------------------------------------------------------------------ a second local user


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture
def other_user() -> Iterator[User]:
    name = f"mst{secrets.token_hex(4)}"
    for _ in range(20):  # /etc/passwd may be locked by another useradd for a moment
        res = subprocess.run(["useradd", "--no-create-home", "--user-group",
                              "--shell", "/usr/sbin/nologin", name],
                             capture_output=True, text=True)
        if res.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"useradd failed: {res.stderr}")
    try:
        pw = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True)
        gr = subprocess.run(["id", "-g", name], capture_output=True, text=True, check=True)
        yield User(name, int(pw.stdout), int(gr.stdout))
    finally:
        for _ in range(20):
            if subprocess.run(["userdel", name], capture_output=True).returncode in (0, 6):
                break
            time.sleep(0.2)


def as_user(user: User, fn: Callable[[], int]) -> int:
    """Run `fn()` in a forked child as `user`; its exit code (99: it raised)."""
    pid = os.fork()
    if pid == 0:  # child: plain syscalls only, then _exit
        code = 99
        try:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def denied(fn: Callable[[], object]) -> Callable[[], int]:
    """A child body: 0 when `fn` is refused by the kernel, 1 when it succeeds."""
    def body() -> int:
        try:
            fn()
        except PermissionError:
            return 0
        return 1
    return body


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A short temp dir any user can traverse (what lies beneath decides)."""
    root = Path(tempfile.mkdtemp(prefix="msu-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@needs_root
def test_other_user_cannot_read_home_or_log(other_user: User, open_root: Path) -> None:
    home = open_root / "home"
    home.mkdir()
    home.chmod(0o755)  # `--home` on an existing world-readable directory
    (home / "notes.txt").write_text("mine")
    (home / "notes.txt").chmod(0o644)
    res = cli(home, "init", "--name", "laptop")
    assert res.code == 0, res.err
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700  # `init` made it private at once
    folder = open_root / "envs"
    folder.mkdir()
    copy_example("petstore.json", folder)
    daemon = DaemonProcess(Home.resolve(home), folder).start()
    try:
        assert cli(home, "share", "petstore.json").code == 0
        wait_sync(lambda: any(e["state"] == "synced" for e in
                              cli(home, "status", "--json").json()["environments"]),
                  "petstore.json synced")
        log = home / "log.sqlite3"
        private = [p for p in (log, Path(f"{log}-wal"), home / "docs.json", home / "notes.txt")
                   if p.exists()]
        assert Path(f"{log}-wal") in private  # the WAL, with the environment in it, exists
        for p in private:
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
        assert stat.S_IMODE(os.stat(home / "keys").st_mode) == 0o700
        # The other user can neither list the home nor open what is in it...
        assert as_user(other_user, denied(lambda: os.listdir(home))) == 0
        for p in private:
            assert as_user(other_user, denied(lambda p=p: open(p, "rb").close())) == 0, p
        # ...not even when the owner loosens the home by hand: the files stay 0600.
        home.chmod(0o755)
        for p in (log, Path(f"{log}-wal")):
            assert as_user(other_user, denied(lambda p=p: open(p, "rb").close())) == 0, p
        # Nor can they talk to the daemon.
        sock = str(Home.resolve(home).socket)

        def connect() -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sock)
            finally:
                s.close()
        assert as_user(other_user, denied(connect)) == 0
        assert daemon.stop() == 0
        daemon.start()  # every start makes the home private again
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    finally:
        daemon.stop()


FAKE_STATUS = b'{"device":{"id":"FAKE","name":"fake"},"environments":[]}'


@contextlib.contextmanager
def impostor(user: User, make: Callable[[], socket.socket], *,
             bind_here: bool = False) -> Iterator[list[int]]:
    """A forked child that, as `user`, listens on the socket `make()` returns (`make` runs
    in the child as `user`, or here as the test's user with `bind_here`) and answers any
    request like a daemon would, with fake status JSON, until the block ends. The yielded
    list then holds the number of request bytes it received."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    got_r, got_w = os.pipe()
    srv = make() if bind_here else None
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            sock = srv or make()
            sock.listen(8)  # the listener's credentials are what SO_PEERCRED reports
            os.write(ready_w, b"r")
            received = 0
            while True:
                readable, _, _ = select.select([sock, done_r], [], [], 30)
                if sock in readable:
                    conn, _ = sock.accept()
                    conn.settimeout(2)
                    try:
                        data = conn.recv(65536)
                        received += len(data)
                        if data:
                            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                                         b"\r\nContent-Length: %d\r\n\r\n%s"
                                         % (len(FAKE_STATUS), FAKE_STATUS))
                    except OSError:
                        pass
                    conn.close()
                if done_r in readable or not readable:
                    break
            os.write(got_w, str(received).encode())
            code = 0
        finally:
            os._exit(code)
    for fd in (ready_w, done_r, got_w):
        os.close(fd)
    if srv is not None:
        srv.close()
    result: list[int] = []
    try:
        assert os.read(ready_r, 1) == b"r", "the impostor did not start"
        yield result
    finally:
        os.write(done_w, b"d")
        result.append(int(os.read(got_r, 32) or b"-1"))
        os.waitpid(pid, 0)
        for fd in (ready_r, done_w, got_r):
            os.close(fd)


@needs_root
def test_cli_checks_the_peer_not_only_the_file(other_user: User, open_root: Path) -> None:
    # The socket file is ours (we bound it), but another user's process listens on it:
    # only SO_PEERCRED on the connected socket can tell, and the CLI asks it.
    sock_path = open_root / "c.sock"

    def bind_as_root() -> socket.socket:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(sock_path))
        return srv

    with impostor(other_user, bind_as_root, bind_here=True) as received:
        assert os.lstat(sock_path).st_uid == os.getuid()
        with pytest.raises(ForeignSocketError, match=f"another user \\(uid {other_user.uid}\\)"):
            ControlClient(sock_path, timeout=5).call("status")
    assert received == [0]


@needs_root
def test_cli_refuses_a_socket_planted_by_another_user(other_user: User, open_root: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A long home path and no XDG_RUNTIME_DIR: the socket goes to $TMPDIR/mocksync-<uid>/.
    tmp = open_root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)  # like /tmp: anyone may create things in it
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    home_path = open_root / ("h" * 100) / "home"
    assert cli(home_path, "init", "--name", "laptop").code == 0
    home = Home.resolve(home_path)
    sock_path = home.socket
    assert sock_path.parent == tmp / f"mocksync-{os.getuid()}"

    # The other user gets there first and answers like a daemon would, with fake JSON.
    def plant() -> socket.socket:
        os.mkdir(sock_path.parent, 0o777)
        os.chmod(sock_path.parent, 0o777)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(sock_path))
        os.chmod(sock_path, 0o777)
        return srv

    with impostor(other_user, plant) as received:
        res = cli_process(home_path, "status", "--json")
        assert res.code != 0
        # Nothing from the impostor reaches stdout: only our own error document (issue 18:
        # every --json command prints exactly one JSON document, errors included).
        assert "FAKE" not in res.out
        assert json.loads(res.out)["error"]["message"].startswith("refusing the control socket")
        assert "refusing the control socket" in res.err
        assert f"another user (uid {other_user.uid})" in res.err
        with pytest.raises(ForeignSocketError):
            ControlClient(sock_path, timeout=5).call("status")
    assert received == [0]  # not a single byte of a request reached the impostor

    # The daemon will not use that folder either: it says whose it is and what to do.
    folder = open_root / "envs"
    folder.mkdir()
    daemon = DaemonProcess(home, folder).start(wait=False)
    try:
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=30) != 0
        log = daemon.log()
        assert "belongs to another user" in log and str(sock_path.parent) in log
    finally:
        daemon.stop()
        shutil.rmtree(sock_path.parent, ignore_errors=True)
