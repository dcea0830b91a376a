"""Black-box journey harness (issue 11): a team of real processes driven through the CLI only.

Why a variant of its own: the in-process harness (tests/helpers/agents.py, relaylab.py)
reaches into agents, stores and key material to control timing; a journey must instead see
exactly what a user sees. So everything here goes through the `mocksync` executable (its
stdout, stderr, exit code and `--json` documents) and through the files in each device's
folder, written the way an editor writes them (temp file, fsync, rename). Nothing in this
module imports the `mocksync` package.

It is the out-of-process variant of the suite's one harness: processes are started, stopped
and reaped by tests/helpers/procs.py, files saved by tests/helpers/files.py, waits are
tests/helpers/polling.py's, the relay's port is tests/helpers/ports.py's; what is added here
is the CLI-only view of a team. Every process started here is killed at teardown (and, as a
last resort, at interpreter exit), whatever the test did. Every wait is bounded and fails with a sentence
naming what was awaited and the last value seen. On failure the conftest attaches the tail of
every daemon's and the relay's log to the report (`Team.logs()`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.files import editor_write, mockoon_bytes
from helpers.polling import wait_sync
from helpers.ports import fixed_port
from helpers.procs import (
    Child,
    logged_since_start,
    mocksync_command,
    short_root,
    spawn,
    wait_answering,
)

#: Longest a journey waits for anything the system should do by itself (seconds).
WAIT_S = 20.0
#: Pause between two looks while waiting: short for files (cheap), longer for CLI calls.
POLL_S = 0.05
#: Pause between two `status` calls while waiting for a state (each call is a process start).
STATUS_POLL_S = 0.3
#: Longest a daemon may take to answer `status` after it was started.
DAEMON_START_S = 30.0
#: After this long, `wait_ready` asks `status` even if the daemon's log gave no sign yet.
READY_HINT_S = 8.0
#: Longest the relay may take to accept connections after it was started.
RELAY_START_S = 20.0
#: Blind window the journey daemons use unless a test says otherwise (Mockoon's is 3 s).
JOURNEY_BLIND_S = 0.3
#: Default timeout of one CLI call (seconds).
CLI_TIMEOUT_S = 60.0
#: Terminal width CLI calls see unless a journey asks for another (wide: no table wraps).
CLI_COLUMNS = 200
#: Join waits at most this long for the inviting device to admit the joiner.
JOIN_TIMEOUT_S = 30.0
#: Directory whose sitecustomize.py shifts a command's wall clock, and the variable it reads.
CLOCK_DIR = Path(__file__).resolve().parent / "clock"
CLOCK_SHIFT_ENV = "MOCKSYNC_JOURNEY_CLOCK_SHIFT_S"
#: Set this environment variable to print every CLI call and wait with its duration.
TRACE_ENV = "MOCKSYNC_JOURNEY_TRACE"
#: Loopback only (docs/design/testing.md "The network rule").
LOOPBACK = "127.0.0.1"
#: The example environments (examples/environments/*.json) journeys start from.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "environments"
#: Prefix of a team's temp directory (short: AF_UNIX socket paths are limited to ~107 bytes).
TEAM_DIR_PREFIX = "msj-"


# ------------------------------------------------------------------------------ processes

_T0 = time.monotonic()


def trace(what: str, started: float) -> None:
    """With MOCKSYNC_JOURNEY_TRACE set: when and how long (to find where a journey's time
    goes on a loaded machine)."""
    if os.environ.get(TRACE_ENV):
        now = time.monotonic()
        print(f"[journey {now - _T0:7.2f}s +{now - started:5.2f}s] {what}", file=sys.stderr,
              flush=True)


def free_port() -> int:
    """The relay's port, kept across its restarts: below the ephemeral range, so no client's
    source port can take it while the relay is down (helpers.ports)."""
    return fixed_port(LOOPBACK)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOOPBACK, port)) == 0


# ------------------------------------------------------------------------------ waiting


def wait(pred: Callable[[], Any], what: str, timeout: float = WAIT_S,
         step: float = POLL_S) -> Any:
    """Poll `pred` until it returns something truthy and return that; fail naming `what`
    and the last value seen (helpers.polling.wait_sync).

    A file mid-replace, a document not there yet or a CLI call that failed is "not yet"
    (OSError, ValueError, KeyError, IndexError, TypeError, CliError), not a failure."""
    started = time.monotonic()
    value = wait_sync(pred, what, timeout, step, transient=_NOT_YET)
    trace(f"waited for {what}", started)
    return value


# ------------------------------------------------------------------------------ the CLI


class CliError(AssertionError):
    """A CLI call that was expected to succeed did not (the sentence says which and why)."""


#: What a look in `wait` may raise meaning "not yet".
_NOT_YET = (OSError, ValueError, KeyError, IndexError, TypeError, CliError)


@dataclass
class Result:
    """One `mocksync` run as a user's shell sees it."""

    code: int
    out: str
    err: str
    args: tuple[str, ...] = ()

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def text(self) -> str:
        """stdout and stderr together (what the terminal shows)."""
        return self.out + self.err


def run_cli(home: Path | None, *args: str, check: bool = True,
            timeout: float = CLI_TIMEOUT_S, clock_shift_s: float = 0,
            columns: int = CLI_COLUMNS, login: str | None = None) -> Result:
    """Run the real `mocksync` executable (`--home HOME` when given). `clock_shift_s`: the
    command's wall clock runs that much ahead (clock/sitecustomize.py), e.g. to use an invite
    after it expired. `columns`: the terminal width the command lays its tables out for.
    `login`: the user's login name (LOGNAME/USER), as on that person's own machine."""
    cmd = [*mocksync_command(), *(["--home", str(home)] if home is not None else []), *args]
    env = {**os.environ, "COLUMNS": str(columns)}
    if login is not None:
        env["LOGNAME"] = env["USER"] = login
    if clock_shift_s:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(CLOCK_DIR), env.get("PYTHONPATH", "")) if p)
        env[CLOCK_SHIFT_ENV] = str(clock_shift_s)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)
    res = Result(proc.returncode, proc.stdout, proc.stderr, tuple(args))
    trace(f"{home.parent.name if home else ''} mocksync {' '.join(args)[:80]} -> {res.code}",
          started)
    if check and res.code != 0:
        raise CliError(f"`mocksync {' '.join(args)}` exited {res.code}:\n"
                       f"stdout: {res.out.strip()}\nstderr: {res.err.strip()}")
    return res


# ------------------------------------------------------------------------------ files


def example_doc(example: str, fresh: bool = True) -> dict[str, Any]:
    """An environment from examples/environments/; with `fresh`, every uuid in it (and every
    reference to one) replaced by a new one, as a teammate's independent file would be."""
    raw = (EXAMPLES / f"{example.removesuffix('.json')}.json").read_text()
    if not fresh:
        return json.loads(raw)
    olds: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "uuid" and isinstance(value, str) and value:
                    olds.add(value)
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(json.loads(raw))
    for old in olds:
        raw = raw.replace(f'"{old}"', f'"{uuid.uuid4()}"')
    return json.loads(raw)


# ------------------------------------------------------------------------------ relay


class Relay(Child):
    """A real `mocksync relay` on 127.0.0.1:<port>; the port and data dir survive restarts
    (stop, kill9, running and log: `helpers.procs.Child`)."""

    def __init__(self, root: Path, db: str | None = None, name: str = "relay") -> None:
        """`db`: a postgresql:// URL (`relay --db`): this relay is one instance of a cluster
        whose state is in that database; without, its state is SQLite under `data`."""
        self.root = root
        self.db = db
        self.data = root / f"{name}-data"
        super().__init__(root / f"{name}.log")
        self.port = free_port()
        self.limits: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, **limits: Any) -> Relay:
        """Start (limits: plan, max_envs, max_env_bytes, max_devices_per_member, retention
        (seconds, `--retention`); kept for restarts unless given again) and wait until it
        accepts connections."""
        unknown = set(limits) - {"plan", "max_envs", "max_env_bytes", "max_devices_per_member",
                                 "retention"}
        if unknown:
            raise ValueError(f"unknown relay limits: {sorted(unknown)}")
        if limits:
            self.limits = dict(limits)
        if self.running:
            raise RuntimeError("the relay is already running")
        args = [*mocksync_command(), "relay", "--host", LOOPBACK, "--port", str(self.port),
                "--data", str(self.data), "--plan", str(self.limits.get("plan", "team"))]
        if self.db is not None:
            args += ["--db", self.db]
        for key in ("max_envs", "max_env_bytes", "max_devices_per_member", "retention"):
            if key in self.limits:
                args += [f"--{key.replace('_', '-')}", str(self.limits[key])]
        self.data.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(args, self.log_path)
        wait_answering(self.proc, lambda: port_open(self.port), "the relay", RELAY_START_S,
                       self.log_path, step=POLL_S)
        return self

    def restart(self) -> Relay:
        self.stop()
        return self.start()


# ------------------------------------------------------------------------------ devices


class Device(Child):
    """One device: a home made by `mocksync init`, a folder of environment files, and (when
    started) a real `mocksync daemon` on it (stop, kill9, running and log:
    `helpers.procs.Child`)."""

    def __init__(self, team: Team, name: str, member: str) -> None:
        self.team = team
        self.name = name
        self.member = member
        self.root = team.root / name
        self.home = self.root / "h"
        self.folder = self.root / "envs"
        super().__init__(self.root / "daemon.log")
        self.id = ""
        self._start_args: tuple[Any, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"Device({self.name!r}, member={self.member!r})"

    # -------------------------------------------------------------- the CLI
    def ms(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT_S,
           clock_shift_s: float = 0, columns: int = CLI_COLUMNS) -> Result:
        """`mocksync --home HOME ARGS...`; with check, a non-zero exit fails the test.
        `clock_shift_s`: this command runs with its wall clock that far ahead; `columns`:
        the terminal's width."""
        # Each teammate works under their own login name (`init` defaults a member's name
        # to it); all of them share this machine's login otherwise.
        return run_cli(self.home, *args, check=check, timeout=timeout,
                       clock_shift_s=clock_shift_s, columns=columns, login=self.member)

    def status(self) -> dict[str, Any]:
        """`status --json` (fails if the daemon does not answer)."""
        return self.ms("status", "--json").json()

    def env(self, name_or_uuid: str) -> dict[str, Any] | None:
        """This environment's entry in `status --json`: by uuid, file name, file path or
        environment name; None when status does not list it."""
        for e in self.status().get("environments", []):
            if name_or_uuid in (e.get("uuid"), e.get("name"), e.get("file")):
                return e
            if e.get("file") and Path(e["file"]).name == name_or_uuid:
                return e
        return None

    def state(self, name_or_uuid: str) -> str | None:
        """The environment's `state` in `status --json` (None when not listed)."""
        e = self.env(name_or_uuid)
        return None if e is None else e.get("state")

    def list(self) -> list[dict[str, Any]]:
        """`list --json`."""
        doc = self.ms("list", "--json").json()
        return doc["environments"] if isinstance(doc, dict) else doc

    def conflicts(self, env: str | None = None) -> list[dict[str, Any]]:
        """`conflicts --json` (exit 1 just means "there are some")."""
        res = self.ms("conflicts", *([env] if env else []), "--json", check=False)
        if res.code not in (0, 1):
            raise CliError(f"`mocksync conflicts` exited {res.code}: {res.err.strip()}")
        doc = res.json()
        return doc["conflicts"] if isinstance(doc, dict) else doc

    # -------------------------------------------------------------- the daemon
    def start(self, relay: bool | str | list[str] = True, wait: bool = True,
              **config: Any) -> Device:
        """Write HOME/config.toml (journey defaults + `config`), start `mocksync daemon
        --folder F [--relay URL] --no-mdns --bind 127.0.0.1`, wait until it answers
        `status`. relay=True: the team's relay; a string: that URL; a list: several
        (`--relay` repeated: instances of one relay cluster, tried in order); False: none.
        wait=False only spawns (`Team.start` starts several at once, then waits).
        `mdns=True` in `config` keeps mDNS on (LAN discovery, still bound to 127.0.0.1).
        The local web page is off unless `config` asks (`ui=True, ui_port=0`): journey
        daemons must not contend for its fixed default port, nor show an extra listener to
        tests that count a daemon's ports."""
        if self.running:
            raise RuntimeError(f"{self.name}'s daemon is already running")
        self._start_args = (relay, dict(config))
        settings: dict[str, Any] = {"blind_window_s": JOURNEY_BLIND_S, "watch_step_ms": 5,
                                    "watch_debounce_ms": 50, "ui": False, "bind": [LOOPBACK],
                                    **config}
        (self.home / "config.toml").write_text(_toml(settings))
        args = [*mocksync_command(), "--home", str(self.home), "daemon",
                "--folder", str(self.folder),
                *([] if config.get("mdns") else ["--no-mdns"]), "--bind", LOOPBACK, "-v"]
        url = self.team.relay.url if relay is True else relay
        for u in (url if isinstance(url, list) else [url] if url else []):
            args += ["--relay", str(u)]
        self.proc = spawn(args, self.log_path)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = DAEMON_START_S) -> Device:
        """Wait until this device's daemon (the process we started) answers `status`."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        ask_anyway = time.monotonic() + READY_HINT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}'s daemon exited with "
                                     f"{self.proc.returncode}:\n{self.log()}")
            # Each `mocksync` call costs an interpreter start, which slows the very start-up
            # being waited for on a busy machine: ask once the daemon logged that it watches
            # the folder (cheap to read), or after a while if its log never says so.
            ask = (logged_since_start(self.log_path, "watching")
                   or time.monotonic() > ask_anyway)
            res = self.ms("status", "--json", check=False, timeout=10) if ask else None
            if res is not None and res.code == 0:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if res.json()["daemon"]["pid"] == self.proc.pid:
                        trace(f"{self.name}'s daemon is ready", deadline - timeout)
                        return self
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}'s daemon did not answer `status` within "
                                     f"{timeout} s:\n{self.log()}")
            time.sleep(0.1)

    @property
    def start_args(self) -> tuple[Any, dict[str, Any]] | None:
        """(relay, config) of the last start, None if never started."""
        return self._start_args

    def restart(self) -> Device:
        """Stop and start again with the same arguments as the last start."""
        self.stop()
        relay, config = self._start_args or (True, {})
        return self.start(relay, **config)

    def restart_with(self, relay: bool | str = True, **config: Any) -> Device:
        """Stop and start with other settings (what a user does after editing config.toml)."""
        self.stop()
        return self.start(relay, **config)

    # -------------------------------------------------------------- files
    def path(self, name: str) -> Path:
        """The file `name` in this device's folder (`.json` added when missing)."""
        return self.folder / (name if name.endswith(".json") else f"{name}.json")

    def files(self) -> list[str]:
        """Environment files (*.json, hidden temp files excluded) in the folder, sorted."""
        return sorted(p.name for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def read(self, name: str) -> dict[str, Any]:
        return json.loads(self.path(name).read_bytes())

    def save(self, name: str, doc: dict[str, Any] | Callable[[dict[str, Any]], Any]) -> Path:
        """An editor save of `name`: a document, or a callable that edits the parsed file in
        place (or returns a replacement). Written Mockoon-style, temp file then rename."""
        path = self.path(name)
        if callable(doc):
            current = json.loads(path.read_bytes())
            out = doc(current)
            doc = current if out is None else out
        editor_write(path, mockoon_bytes(doc), fsync=True)
        return path

    def write_raw(self, name: str, data: bytes) -> Path:
        """An editor save of arbitrary bytes (any file name, e.g. a linked FILE body)."""
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        editor_write(path, data, fsync=True)
        return path

    def delete(self, name: str) -> None:
        """The user deletes the file (not `mocksync delete`)."""
        self.path(name).unlink()

    # -------------------------------------------------------------- stories
    def add_example(self, example: str, as_name: str | None = None,
                    edit: Callable[[dict[str, Any]], Any] | None = None,
                    fresh: bool = True) -> str:
        """Save one of examples/environments/ into the folder (fresh uuids unless told
        otherwise, so journeys sharing a team never collide; optionally edited first) and
        wait until the daemon lists it; the file's name."""
        doc = example_doc(example, fresh=fresh)
        if edit is not None:
            out = edit(doc)
            doc = doc if out is None else out
        name = as_name or f"{example.removesuffix('.json')}.json"
        self.save(name, doc)
        if self.running:
            wait(lambda: self.env(name), f"{self.name}'s daemon to list {name}", step=0.2)
        return name

    def share(self, name: str, space: str | None = "team", copy: bool = False) -> dict[str, Any]:
        """`share FILE --space SPACE [--copy] --json`; the result (uuid, name, file...)."""
        args = ["share", str(self.path(name)), "--json"]
        if space:
            args += ["--space", space]
        if copy:
            args.append("--copy")
        return self.ms(*args).json()

    def new(self, env_name: str, space: str | None = "team") -> dict[str, Any]:
        """`new NAME --space SPACE --json`; the result (uuid, file...)."""
        return self.ms("new", env_name, *(["--space", space] if space else []), "--json").json()

    def file_of(self, uuid: str) -> Path | None:
        """The file in the folder holding environment `uuid` (by its content), else None."""
        for name in self.files():
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(self.path(name).read_bytes())
                if isinstance(doc, dict) and doc.get("uuid") == uuid:
                    return self.path(name)
        return None

    def doc(self, uuid: str) -> dict[str, Any] | None:
        """The document of environment `uuid` as on disk here, None when no file holds it."""
        path = self.file_of(uuid)
        return None if path is None else json.loads(path.read_bytes())

    def edit(self, uuid: str, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Editor save of the file holding `uuid` with `fn` applied; the saved document."""
        path = self.file_of(uuid)
        assert path is not None, f"{self.name} has no file for environment {uuid}"
        doc = json.loads(path.read_bytes())
        out = fn(doc)
        doc = doc if out is None else out
        editor_write(path, mockoon_bytes(doc), fsync=True)
        return doc

    def wait_doc(self, uuid: str, pred: Callable[[dict[str, Any]], Any], what: str,
                 timeout: float = WAIT_S) -> dict[str, Any]:
        """Wait until this device's file of `uuid` satisfies `pred`; the document."""
        def check() -> dict[str, Any] | None:
            doc = self.doc(uuid)
            return doc if doc is not None and pred(doc) else None
        return wait(check, f"{what} on {self.name}", timeout)

    def wait_state(self, env: str, state: str, timeout: float = WAIT_S) -> dict[str, Any]:
        """Wait until `status --json` lists `env` in `state`; its status entry."""
        def check() -> dict[str, Any] | None:
            e = self.env(env)
            return e if e is not None and e.get("state") == state else None
        return wait(check, f"{env} to be {state!r} in {self.name}'s status", timeout,
                    step=STATUS_POLL_S)


def _toml(settings: dict[str, Any]) -> str:
    """A flat TOML document (strings, numbers, booleans, lists of strings)."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | list):
            text = json.dumps(value)
        else:
            text = str(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the team


class Team:
    """A relay and the devices of a team, all on this machine under one short directory."""

    def __init__(self, root: Path | None = None, start_relay: bool = True,
                 **relay_limits: Any) -> None:
        self.root = root or short_root(TEAM_DIR_PREFIX)
        self.relay = Relay(self.root)
        self.devices: dict[str, Device] = {}
        if start_relay:
            self.relay.start(**relay_limits)

    # -------------------------------------------------------------- people and spaces
    def device(self, name: str, member: str | None = None) -> Device:
        """A new device: `mocksync --home H init --name NAME --member MEMBER`."""
        if name in self.devices:
            raise ValueError(f"device {name!r} already exists in this team")
        dev = Device(self, name, member or name)
        dev.folder.mkdir(parents=True)
        # `join` looks for its inviter on the LAN from the config's bind addresses (as the
        # daemon does): loopback only, whether or not this device's daemon ever starts.
        dev.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        (dev.home / "config.toml").write_text(_toml({"bind": [LOOPBACK]}))
        doc = dev.ms("init", "--name", name, "--member", dev.member, "--json").json()
        dev.id = doc["device"]["id"]
        self.devices[name] = dev
        return dev

    def space(self, admin: Device, name: str) -> str:
        """`space create NAME --relay URL` on `admin`; the space's name."""
        admin.ms("space", "create", name, "--relay", self.relay.url)
        return name

    def invite(self, by: Device, space: str, role: str = "editor", device: bool = False,
               expires: str | None = None) -> str:
        """`invite SPACE` on `by`; the token."""
        args = ["invite", space, "--role", role, "--json"]
        if device:
            args.append("--device")
        if expires:
            args += ["--expires", expires]
        return by.ms(*args).json()["token"]

    def join(self, dev: Device, space: str, by: Device, role: str = "editor",
             device: bool = False) -> Result:
        """`invite` on `by` (whose daemon must be running) and `join` on `dev`."""
        token = self.invite(by, space, role=role, device=device)
        return dev.ms("join", token, "--timeout", str(JOIN_TIMEOUT_S),
                      timeout=JOIN_TIMEOUT_S + 30)

    def start(self, *devices: Device, **config: Any) -> None:
        """Start several daemons at once (same `config`), then wait for each to answer."""
        for dev in devices:
            dev.start(wait=False, **config)
        for dev in devices:
            dev.wait_ready()

    def devices_of(self, members: dict[str, list[str]]) -> list[Device]:
        """Several `init`s at once (key generation is the slow part): {member: [device...]}."""
        pairs = [(name, member) for member, names in members.items() for name in names]
        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            return list(pool.map(lambda p: self.device(*p), pairs))

    def crew(self, space: str = "team",
             members: dict[str, list[str]] | None = None, **config: Any) -> list[Device]:
        """A running team: the first device of the first member creates `space`; every
        daemon starts (with `config`); then every other device joins (another member's first
        device as an editor invited by the admin, a member's further devices with `invite
        --device` from that member's first device). Default: alice (alice-laptop,
        alice-desktop) and bob (bob-laptop). The devices, in order."""
        members = members or {"alice": ["alice-laptop", "alice-desktop"], "bob": ["bob-laptop"]}
        devs = self.devices_of(members)
        firsts: dict[str, Device] = {}
        for dev in devs:
            firsts.setdefault(dev.member, dev)
        admin = devs[0]
        self.space(admin, space)
        self.start(*devs, **config)
        for dev in devs[1:]:
            own = firsts[dev.member] is not dev
            self.join(dev, space, by=firsts[dev.member] if own else admin, device=own)
        return devs

    def synced(self, uuid: str, *devices: Device, timeout: float = WAIT_S) -> dict[str, Any]:
        """Wait until every device has a file of environment `uuid`, all files hold the same
        document and every device's status says `synced`; that document."""
        def same() -> dict[str, Any] | None:
            docs = [d.doc(uuid) for d in devices]
            if any(doc is None for doc in docs) or any(doc != docs[0] for doc in docs[1:]):
                return None
            return docs[0]
        try:
            wait(same, f"the same environment {uuid} on "
                 f"{', '.join(d.name for d in devices)}", timeout)
            for d in devices:
                d.wait_state(uuid, "synced", timeout)
            return wait(same, f"the same environment {uuid} on every device", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain(uuid, devices)}") from None

    def everywhere(self, uuid: str, devices: tuple[Device, ...] | list[Device],
                   pred: Callable[[dict[str, Any]], Any], what: str,
                   timeout: float = WAIT_S) -> None:
        """Wait until `pred` holds for environment `uuid`'s file on every device; on failure
        say which devices disagree and what their status says."""
        try:
            for d in devices:
                d.wait_doc(uuid, pred, what, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain(uuid, devices, pred)}") from None

    def explain(self, uuid: str, devices: tuple[Device, ...] | list[Device],
                pred: Callable[[dict[str, Any]], Any] | None = None) -> str:
        """What each device has of `uuid`: its status entry, whether its file satisfies
        `pred`, and the top-level keys where its file differs from the first device's."""
        lines = []
        first = devices[0].doc(uuid) if devices else None
        for d in devices:
            try:
                doc = d.doc(uuid)
                entry = d.env(uuid) if d.running else "(daemon stopped)"
                ok = None
                if pred is not None and doc is not None:
                    try:
                        ok = bool(pred(doc))
                    except (KeyError, IndexError, TypeError, StopIteration) as exc:
                        ok = f"pred raised {type(exc).__name__}: {exc}"
                differs = (None if doc is None or first is None else
                           sorted(k for k in set(doc) | set(first) if doc.get(k) != first.get(k)))
                lines.append(f"  {d.name}: file={'none' if doc is None else 'yes'} pred={ok} "
                             f"differs from {devices[0].name} in {differs}; status={entry}")
            except Exception as exc:  # explaining must never hide the original failure
                lines.append(f"  {d.name}: could not explain ({type(exc).__name__}: {exc})")
        return "\n".join(lines)

    # -------------------------------------------------------------- waiting
    def wait(self, pred: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        """Poll `pred` (bounded) until truthy; fail saying what was awaited."""
        return wait(pred, what, timeout)

    # -------------------------------------------------------------- teardown
    def logs(self) -> str:
        """The tail of the relay's and every daemon's log (for failure reports)."""
        parts = [f"===== relay ({self.relay.url}) =====\n{self.relay.log()}"]
        for dev in self.devices.values():
            parts.append(f"===== {dev.name} (member {dev.member}, id {dev.id}) =====\n"
                         f"{dev.log()}")
        return "\n".join(parts)

    def close(self, keep: bool = False) -> None:
        """Stop every daemon, then the relay; remove the directory unless `keep`."""
        for dev in self.devices.values():
            with contextlib.suppress(Exception):
                dev.stop()
        with contextlib.suppress(Exception):
            self.relay.stop()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Crew:
    """A running team shared by the journeys of one module: Alice on two devices, Bob on one,
    all in space `team` (see `Team.crew`)."""

    team: Team
    laptop: Device
    desktop: Device
    bob: Device

    @property
    def all(self) -> tuple[Device, Device, Device]:
        return (self.laptop, self.desktop, self.bob)

    def ensure_running(self) -> None:
        """Start (team relay, default settings) every daemon that is not running, and the
        relay if it is down: a journey that stopped one must not break the next."""
        if not self.team.relay.running:
            self.team.relay.start()
        stopped = [d for d in self.all if not d.running or d.start_args != (True, {})]
        for d in stopped:
            d.stop()
            d.start(wait=False)
        for d in stopped:
            d.wait_ready()


@contextlib.contextmanager
def team_context() -> Iterator[Team]:
    team = Team()
    try:
        yield team
    finally:
        team.close()
