"""A private PostgreSQL server for the relay tests (Debian's binaries, loopback only).

Why our own server and not the system's: tests must not depend on, or touch, a cluster someone
runs on the machine, and the network rule (docs/design/testing.md) allows 127.0.0.1 only. So the session
starts one server in a temporary data directory, listening on 127.0.0.1 at a free port with
its unix socket in the same temporary tree, and stops it at teardown. initdb refuses to run
as root (CI runs as root), so the server then runs as Debian's `postgres` user via `runuser`.

`pg_url` (session fixture) is a `postgresql://` URL of a fresh database, or the tests that need
it are skipped with the reason (no binaries). `fresh_db(url)` makes another empty database on
the same server: each test that needs isolation gets its own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Seconds pg_ctl waits for the server to start or stop.
START_TIMEOUT_S = 60
#: The user that owns and runs the server when the tests run as root.
RUN_AS = "postgres"
#: Connections the private server accepts (two relay instances per test, a few pools each).
MAX_CONNECTIONS = 200


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin dir holding initdb and pg_ctl, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    for initdb in reversed(found):
        d = Path(initdb).parent
        if (d / "pg_ctl").exists():
            return d
    return None


def _free_port() -> int:
    """Below the ephemeral range (helpers.ports): picked here, bound later by `pg_ctl`."""
    from helpers.ports import fixed_port

    return fixed_port("127.0.0.1")


class PgServer:
    """One running private server: `url(db)`, `create_db()`, `stop()`."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin = bin_dir
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.port = _free_port()
        self.user = "postgres"
        self.as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.as_root:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S + 10,
                              check=False)

    def start(self) -> None:
        self.sock.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.root, RUN_AS)
            shutil.chown(self.sock, RUN_AS)
        r = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                      "-A", "trust", "-E", "UTF8", "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr or r.stdout}")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.sock} -c max_connections={MAX_CONNECTIONS} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts,
                      "-l", str(self.root / "server.log"), "-w", "-t", str(START_TIMEOUT_S),
                      "start")
        if r.returncode:
            log = (self.root / "server.log")
            raise RuntimeError(f"pg_ctl start failed: {r.stderr or r.stdout}\n"
                               f"{log.read_text() if log.exists() else ''}")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                  "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        """A new empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        r = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", self.user, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c",
                            f"CREATE DATABASE {name}"], capture_output=True, text=True,
                           timeout=30, check=False)
        if r.returncode:
            raise RuntimeError(f"CREATE DATABASE failed: {r.stderr}")
        return self.url(name)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer | str]:
    """A started server, or (yielded instead) the reason there is none."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt install postgresql)"
        return
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        yield "running as root without runuser: initdb refuses root"
        return
    root = Path(tempfile.mkdtemp(prefix="mocksync-pg-"))
    os.chmod(root, 0o755)
    server = PgServer(bin_dir, root)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        yield f"the private PostgreSQL server did not start: {exc}"
        return
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's private PostgreSQL server (started once), or skip saying why."""
    with running_server() as server:
        if isinstance(server, str):
            pytest.skip(server)
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the private server, as a postgresql:// URL."""
    return pg_server.create_db()


__all__ = ["PgServer", "find_bin_dir", "pg_server", "pg_url", "running_server"]
