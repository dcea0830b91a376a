"""Devices on this machine: a home made by `init_device` (keys, log, docs), a folder of
environment files, and spaces made and joined with the library's own code.

Why one `Device`: the in-process agent tests, the relay tests, the daemon subprocess tests and
the namespace tests each had their own (three dataclasses, two layouts, two ways to pair).
Every harness now starts from this one; what differs (an agent in this process, a daemon
subprocess, a host in a namespace) is added by helpers/agents.py, helpers/daemons.py and
helpers/netns.py. The journeys make their devices through the CLI instead (black box).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mocksync.devtools.pairing import pair
from mocksync.model import parse_env, render
from mocksync.paths import Home
from mocksync.space.identity import Identity
from mocksync.spaceio.actions import create_space, init_device
from mocksync.spaceio.store import append_entries, get_space
from mocksync.store import Store


@dataclass
class Device:
    """One device: its home, its synced folder, its identity and personal space."""

    name: str
    home: Home
    folder: Path
    identity: Identity
    personal: str  # personal space id

    @property
    def id(self) -> str:
        return self.identity.device_id


def make_device(root: Path, name: str, device_name: str | None = None,
                member: str | None = None) -> Device:
    """`mocksync init` for a device living under `root/name` (home `home/`, folder `envs/`).
    The device is called `device_name` (default `name`), its member `member` (default
    `NAME-user`)."""
    home = Home.resolve(root / name / "home")
    folder = root / name / "envs"
    folder.mkdir(parents=True)
    ident, personal = init_device(home, name=device_name or name,
                                  member_name=member or f"{name}-user")
    return Device(name, home, folder, ident, personal.space_id)


def team_space(admin: Device, *others: Device, name: str = "team",
               share_logs: bool = False) -> str:
    """A team space created by `admin`, every other device paired into it (the real join
    handshake); with `share_logs`, every member then holds the admin's whole membership log
    (what log gossip would do), so late members know each other."""
    space = create_space(admin.home, admin.identity, name).space_id
    for dev in others:
        assert pair(admin.home, dev.home, space) == space
    if share_logs:
        for dev in others:
            share_log(admin, dev, space)
    return space


def share_log(src: Device, dst: Device, space: str) -> None:
    """Give `dst` every membership entry `src` holds (what log gossip would do)."""
    append_entries(dst.home, space, get_space(src.home, space).entries)


def logs_of(dev: Device, *spaces: str) -> dict[str, list[bytes]]:
    """The membership log wires `dev` holds, per space (what a relay client uploads)."""
    return {s: [e.wire for e in get_space(dev.home, s).entries] for s in spaces}


def public_key(dev: Device) -> bytes:
    return dev.identity.sign_public


def parse_file(path: Path) -> dict[str, Any]:
    """The file as the daemon reads it (raises if it is not a valid environment)."""
    return parse_env(path.read_bytes()).doc


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
