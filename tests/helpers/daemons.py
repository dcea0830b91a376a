"""Real `mocksync daemon` subprocesses for a `helpers.devices.Device`, and the CLI as a user
runs it against them.

Why subprocesses: what a user sees (exit codes, stderr sentences, the socket's mode,
`kill -9`, a host whose link goes down) is only real with the real executable. The daemon is
started, stopped and reaped by helpers/procs.py (the journeys' harness uses the same), on
this machine's loopback or inside a network namespace host (helpers/netns.py); tests talk to
it through its control socket (`call`) or the `mocksync` command (`cli_process`).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mocksync.agent.client import ControlClient
from mocksync.agent.errors import ControlError, DaemonNotRunning
from mocksync.paths import Home

from helpers.procs import Child, child_env, in_namespace, mocksync_command, spawn, wait_answering

if TYPE_CHECKING:
    from helpers.devices import Device
    from helpers.netns import Host

#: Longest a daemon subprocess may take to answer on its socket after start.
DAEMON_START_S = 30.0
#: Default timeout of one control call or one CLI run (seconds).
CALL_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0
#: How much of its log a daemon's failure message shows.
DAEMON_LOG_CHARS = 3000
#: Longest a daemon gets to exit after SIGTERM before it is SIGKILLed.
DAEMON_STOP_S = 15.0


class DaemonProcess(Child):
    """`mocksync daemon --home H --folder F --no-ui`: on loopback with `--no-mdns` by
    default; inside `host`'s namespace (bound to its address, mDNS on) when given. Stop,
    kill9, running and log: `helpers.procs.Child`."""

    log_chars = DAEMON_LOG_CHARS

    def __init__(self, home: Home, folder: Path, log_path: Path | None = None,
                 host: Host | None = None, name: str = "daemon") -> None:
        self.home = home
        self.folder = folder
        self.host = host
        self.name = name
        super().__init__(log_path or home.root / "daemon-test.log")

    @classmethod
    def of(cls, dev: Device, host: Host | None = None) -> DaemonProcess:
        return cls(dev.home, dev.folder, host=host, name=f"{dev.name}'s daemon")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout: float = CALL_TIMEOUT_S) -> ControlClient:
        return ControlClient(self.home.socket, timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        """One control call on the daemon's socket."""
        return self.client().call(method, **params)

    def argv(self) -> list[str]:
        # --no-ui: the page's fixed default port (8385) would be contended by daemons of
        # tests running in parallel (pytest -n).
        args = [*mocksync_command(), "--home", str(self.home.root), "daemon",
                "--folder", str(self.folder), "--no-ui"]
        if self.host is None:
            return [*args, "--no-mdns"]
        return [*args, "--bind", self.host.address, "-v"]

    def start(self, wait: bool = True) -> DaemonProcess:
        self.proc = spawn(self.argv(), self.log_path,
                          netns=None if self.host is None else self.host.name)
        if self.host is not None:
            self.host.procs.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client(timeout=5).call("status")["daemon"]["pid"] == self.pid)
        except (DaemonNotRunning, ControlError):
            return False

    def wait_ready(self, timeout: float = DAEMON_START_S) -> None:
        assert self.proc is not None, "start() first"
        wait_answering(self.proc, self._answers, self.name, timeout, self.log_path, step=0.02)

    def stop(self, timeout: float = DAEMON_STOP_S) -> int | None:
        return super().stop(timeout)

    # ------------------------------------------------------------------ peers
    def peers(self) -> dict[str, dict[str, Any]]:
        return {p["device"]: p for p in self.call("peers")["peers"]}

    def connected_to(self, *devices: Device) -> bool:
        peers = self.peers()
        return all(peers.get(d.id, {}).get("state") == "connected" for d in devices)

    def lists(self, path: Path) -> bool:
        """Does the daemon list the file at `path`?"""
        return any(e["file"] == str(path) for e in self.call("list")["environments"])

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def status_env(client: ControlClient, file: Path) -> dict[str, Any] | None:
    for e in client.call("status")["environments"]:
        if e["file"] == str(file):
            return e
    return None


def write_config(home: Home, **settings: Any) -> None:
    """HOME/config.toml with the given settings (numbers and strings only)."""
    lines = []
    for k, v in settings.items():
        lines.append(f"{k} = {json.dumps(v) if isinstance(v, str) else v}")
    (home.root / "config.toml").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------ the CLI


@dataclass
class CliResult:
    """One `mocksync` run: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(home: Home | Path, *args: str) -> CliResult:
    """Run `mocksync --home HOME ARGS...` in this process (click's runner: the same command
    code, without paying the interpreter start-up on every call); never raises on exit codes,
    re-raises a crash (a bug is not an exit code)."""
    from click.testing import CliRunner

    from mocksync.cli import main

    root = home.root if isinstance(home, Home) else home
    res = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["--home", str(root), *args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return CliResult(res.exit_code, res.stdout, res.stderr)


def cli_process(home: Home | Path, *args: str, timeout: float = CLI_TIMEOUT_S,
                host: Host | None = None) -> CliResult:
    """Run the real `mocksync` executable, as a user's shell does (inside `host`'s
    namespace when given)."""
    root = home.root if isinstance(home, Home) else home
    argv = in_namespace(None if host is None else host.name,
                        [*mocksync_command(), "--home", str(root), *args])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=child_env())
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
