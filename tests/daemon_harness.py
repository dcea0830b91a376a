"""Shared pieces for the daemon tests (issue #3): devices, in-process agents, a real daemon
subprocess, the CLI as a user runs it, and bounded waiting.

Why two harnesses: in-process Agents on a `LocalBus` (asyncio, small blind window) let tests
run two devices side by side, reach into state and control timing to the millisecond; the
subprocess harness runs the real `mocksync daemon` and the real `mocksync` command, so what a
user sees (exit codes, stderr sentences, the socket's mode, `kill -9`) is what is tested.

Every wait is bounded by a deadline and fails with a sentence that says what was awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mocksync.agent.bus import LocalBus
from mocksync.agent.client import ControlClient, ControlError, DaemonNotRunning
from mocksync.agent.daemon import Agent
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.devtools.pairing import pair
from mocksync.model import parse_env, render
from mocksync.paths import Home
from mocksync.space.actions import create_space, init_device
from mocksync.space.identity import Identity
from mocksync.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "environments"

#: Blind window the in-process agents use (Mockoon's is 3 s, the daemon's default hold 3.5 s).
TEST_BLIND_S = 0.3
#: Longest a test waits for anything the daemon should do by itself.
WAIT_S = 10.0
#: Longest a daemon subprocess may take to answer on its socket after start.
DAEMON_START_S = 20.0


# ------------------------------------------------------------------------------ devices


@dataclass
class Device:
    """One device on this machine: its home (keys, log, docs) and its synced folder."""

    name: str
    home: Home
    folder: Path
    identity: Identity
    personal: str  # personal space id

    @property
    def id(self) -> str:
        return self.identity.device_id


def make_device(root: Path, name: str) -> Device:
    """`mocksync init` for a device living under `root/name`."""
    home = Home.resolve(root / name / "home")
    folder = root / name / "envs"
    folder.mkdir(parents=True)
    ident, personal = init_device(home, name=name, member_name=f"{name}-user")
    return Device(name, home, folder, ident, personal.space_id)


def team_space(admin: Device, *others: Device, name: str = "team") -> str:
    """A team space created by `admin`, with every other device paired into it."""
    space = create_space(admin.home, admin.identity, name).space_id
    for dev in others:
        assert pair(admin.home, dev.home, space) == space
    return space


def short_root() -> Path:
    """A short temp dir: AF_UNIX socket paths are limited to ~107 bytes and pytest's
    tmp_path can be long. The caller removes it (see `short_tmp`)."""
    return Path(tempfile.mkdtemp(prefix="msd-", dir="/tmp"))


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    root = short_root()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------ files


def copy_example(name: str, folder: Path, as_name: str | None = None) -> Path:
    dest = folder / (as_name or name)
    shutil.copyfile(EXAMPLES / name, dest)
    return dest


def read_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def mockoon_bytes(doc: Any) -> bytes:
    """What Mockoon desktop writes: JSON.stringify(doc, null, 2), no trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def editor_save(path: Path, data: bytes | dict[str, Any]) -> None:
    """An editor-style save: whole file to a temp name beside it, then rename over."""
    if not isinstance(data, bytes | bytearray):
        data = mockoon_bytes(data)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def edit_file(path: Path, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Read the file, apply `fn` to its document, save it editor-style; return the doc."""
    doc = read_doc(path)
    out = fn(doc)
    doc = doc if out is None else out
    editor_save(path, doc)
    return doc


def responses(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for route in doc["routes"] for r in route["responses"]]


def response_by_uuid(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    for r in responses(doc):
        if r["uuid"] == uuid:
            return r
    raise KeyError(uuid)


def set_label(uuid: str, value: str) -> Callable[[dict[str, Any]], None]:
    def fn(doc: dict[str, Any]) -> None:
        response_by_uuid(doc, uuid)["label"] = value

    return fn


def all_uuids(doc: dict[str, Any]) -> set[str]:
    out = {doc["uuid"]}
    for key in ("folders", "routes", "data", "callbacks"):
        for obj in doc.get(key, []):
            out.add(obj["uuid"])
            for r in obj.get("responses", []) if key == "routes" else []:
                out.add(r["uuid"])
    return out


# ------------------------------------------------------------------------------ waiting


# ------------------------------------------------------------------------------ in-process


def agent_settings(folder: Path, blind_s: float = TEST_BLIND_S, **kw: Any) -> Settings:
    return Settings(folder=folder, blind_window_s=blind_s, watch_step_ms=5,
                    watch_debounce_ms=50, mdns=False, **kw).check()


def make_agent(dev: Device, bus: LocalBus | None = None, blind_s: float = TEST_BLIND_S,
               **kw: Any) -> Agent:
    bus = bus if bus is not None else LocalBus()
    return Agent(dev.home, agent_settings(dev.folder, blind_s, **kw), dev.identity,
                 SpaceDirectory(dev.home), transport=bus.port())


@contextlib.asynccontextmanager
async def running(*agents: Agent) -> AsyncIterator[tuple[Agent, ...]]:
    """Start agents in order; stop them all (in reverse) whatever happens."""
    started: list[Agent] = []
    try:
        for a in agents:
            await a.start()
            started.append(a)
        yield tuple(agents)
    finally:
        for a in reversed(started):
            with contextlib.suppress(Exception):
                await a.stop()


class EventLog:
    """Collect an agent's published events (the same dicts the control stream sends)."""

    def __init__(self, agent: Agent) -> None:
        self.events: list[dict[str, Any]] = []
        agent.listeners.append(self.events.append)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind
                and all(e.get(k) == v for k, v in match.items())]


def env_status(agent: Agent, uuid_or_file: str | Path) -> dict[str, Any] | None:
    """This environment's row of `status` (what `status --json` prints), by uuid or file."""
    key = str(uuid_or_file)
    for e in agent.status()["environments"]:
        if e["uuid"] == key or e["file"] == key:
            return e
    return None


def state_doc(agent: Agent, env: str) -> dict[str, Any]:
    return render(agent.store.state(env))


async def settle(*agents: Agent, quiet_s: float = 0.15, timeout: float = WAIT_S) -> None:
    """Wait until no agent has a held write pending or a store-worker job (an ingest, a
    write) queued or running, and nothing happened for `quiet_s`."""
    logs = [EventLog(a) for a in agents]
    deadline = time.monotonic() + timeout
    last_count = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        count = sum(len(lg.events) for lg in logs)
        pending = any(rt.write_handle is not None for a in agents for rt in a.envs.values()) \
            or any(a.worker is not None and (a.worker.pending or a.worker.busy) for a in agents)
        if count != last_count or pending:
            last_count = count
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            for a, lg in zip(agents, logs, strict=True):
                a.listeners.remove(lg.events.append)
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"agents did not settle within {timeout} s")


# ------------------------------------------------------------------------------ subprocess


def mocksync_command() -> list[str]:
    """The installed `mocksync` console script, else `python -m mocksync`."""
    script = Path(sys.executable).parent / "mocksync"
    if script.exists():
        return [str(script)]
    found = shutil.which("mocksync")
    if found:
        return [found]
    return [sys.executable, "-m", "mocksync"]


@dataclass
class CliResult:
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


def cli_process(home: Home | Path, *args: str, timeout: float = 60.0) -> CliResult:
    """Run the real `mocksync` executable, as a user's shell does."""
    root = home.root if isinstance(home, Home) else home
    proc = subprocess.run([*mocksync_command(), "--home", str(root), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def write_config(home: Home, **settings: Any) -> None:
    """HOME/config.toml with the given settings (numbers and strings only)."""
    lines = []
    for k, v in settings.items():
        lines.append(f"{k} = {json.dumps(v) if isinstance(v, str) else v}")
    (home.root / "config.toml").write_text("\n".join(lines) + "\n")


class DaemonProcess:
    """A real `mocksync daemon --home H --folder F --no-mdns` child process."""

    def __init__(self, home: Home, folder: Path, log_path: Path | None = None) -> None:
        self.home = home
        self.folder = folder
        self.log_path = log_path or home.root / "daemon-test.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, timeout: float = 30.0) -> ControlClient:
        return ControlClient(self.home.socket, timeout=timeout)

    def start(self, wait: bool = True) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                # --no-ui: the page's fixed default port (8385) would be contended by
                # daemons of tests running in parallel (pytest -n).
                [*mocksync_command(), "--home", str(self.home.root), "daemon",
                 "--folder", str(self.folder), "--no-mdns", "--no-ui"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = DAEMON_START_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log()}")
            try:
                st = self.client(timeout=5).call("status")
                if st["daemon"]["pid"] == self.proc.pid:
                    return
            except (DaemonNotRunning, ControlError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not answer within {timeout} s: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not stop in time); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def status_env(client: ControlClient, file: Path) -> dict[str, Any] | None:
    for e in client.call("status")["environments"]:
        if e["file"] == str(file):
            return e
    return None


# ------------------------------------------------------------------------------ the log


def replay_render(home: Home, env: str, keys: dict[str, bytes]) -> dict[str, Any]:
    """Rebuild `env` from nothing but its change sets in `home`'s log: every wire is
    verified and applied by a fresh store, then rendered. What the log (not the cached
    state) says the environment is."""
    src = Store(home.log_db)
    try:
        wires = [(cs.device, cs.encode()) for cs, _ in src.log(env)]
    finally:
        src.close()
    with tempfile.TemporaryDirectory(prefix="msd-replay-") as d:
        fresh = Store(Path(d) / "replay.db")
        try:
            now = int(time.time() * 1000)
            by_device: dict[str, list[bytes]] = {}
            for device, w in wires:
                by_device.setdefault(device, []).append(w)
            for device, ws in by_device.items():
                for w in ws:
                    fresh.ingest(w, keys[device], now)
            return render(fresh.state(env))
        finally:
            fresh.close()


def public_key(dev: Device) -> bytes:
    return dev.identity.sign_public


def parse_file(path: Path) -> dict[str, Any]:
    """The file as the daemon reads it (raises if it is not a valid environment)."""
    return parse_env(path.read_bytes()).doc
