"""The systemd units: the directives we promise are there, and systemd-analyze accepts them."""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
DAEMON = UNITS / "mocksync.service"
RELAY = UNITS / "mocksync-relay.service"
RELAY_BIN = "/usr/local/bin/mocksync"


def load(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_daemon_unit_directives() -> None:
    unit = load(DAEMON)
    svc = unit["Service"]
    assert svc["ExecStart"] == "%h/.local/bin/mocksync daemon"
    assert svc["Restart"] == "on-failure"
    assert float(svc["RestartSec"]) > 0
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["UMask"] == "0077"
    assert svc["SystemCallFilter"] == "@system-service"
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(svc["RestrictAddressFamilies"].split())
    assert unit["Install"]["WantedBy"] == "default.target"
    assert "User" not in svc and "DynamicUser" not in svc  # a user unit runs as its user
    # Options that need a mount namespace are an opt-in drop-in (README), so the unit starts
    # on systems without unprivileged user namespaces.
    for needs_userns in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateUsers"):
        assert needs_userns not in svc, needs_userns


def test_relay_unit_directives() -> None:
    unit = load(RELAY)
    svc = unit["Service"]
    assert svc["ExecStart"] == (
        f"{RELAY_BIN} relay --host 0.0.0.0 --port 8765 --data ${{STATE_DIRECTORY}}"
    )
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "mocksync-relay",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
        "Restart": "on-failure",
    }
    for key, value in expected.items():
        assert svc.get(key) == value, key
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_readme_covers_install_steps() -> None:
    text = (UNITS / "README.md").read_text()
    for step in (
        "systemctl --user enable --now mocksync",
        "loginctl enable-linger",
        "systemctl --user daemon-reload",
        "sudo systemctl enable --now mocksync-relay",
        "ExecStart=\nExecStart=",  # how to point the unit at a virtualenv
    ):
        assert step in text, step


# ---- systemd-analyze verify ------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze not installed (Debian package `systemd`); the unit files were "
    "only checked by parsing them",
)


def fake_executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def analyze(unit_file: Path, *, user: bool, home: Path, runtime: Path) -> list[str]:
    """Run `systemd-analyze verify`; return its complaints about our unit (empty = clean).

    verify exits 0 even for unknown keys or bad values (it only warns), so warnings that
    name the unit count as failures too.
    """
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime), SYSTEMD_LOG_COLOR="0")
    cmd = [ANALYZE, *(["--user"] if user else []), "--man=no", "verify", str(unit_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    complaints = [
        line for line in (proc.stdout + proc.stderr).splitlines() if unit_file.name in line
    ]
    if proc.returncode != 0:
        complaints.append(f"exit status {proc.returncode}: {proc.stderr.strip()}")
    return complaints


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path, Path]:
    home = tmp_path / "home"
    fake_executable(home / ".local" / "bin" / "mocksync")  # verify checks ExecStart exists
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    units = tmp_path / "units"
    units.mkdir()
    return home, runtime, units


@needs_analyze
def test_daemon_unit_verifies(sandbox) -> None:
    home, runtime, units = sandbox
    unit = units / DAEMON.name
    shutil.copy(DAEMON, unit)  # verbatim: %h resolves to the fake home
    assert analyze(unit, user=True, home=home, runtime=runtime) == []


@needs_analyze
def test_relay_unit_verifies(sandbox) -> None:
    home, runtime, units = sandbox
    unit = units / RELAY.name
    fake = home / ".local" / "bin" / "mocksync"
    text = RELAY.read_text()
    assert text.count(RELAY_BIN) >= 1
    # Only the binary path changes: verify insists that ExecStart's program exists.
    unit.write_text(text.replace(f"ExecStart={RELAY_BIN} ", f"ExecStart={fake} "))
    assert analyze(unit, user=False, home=home, runtime=runtime) == []


@needs_analyze
def test_verify_check_is_not_vacuous(sandbox) -> None:
    home, runtime, units = sandbox
    unit = units / DAEMON.name
    unit.write_text(DAEMON.read_text().replace("[Service]\n", "[Service]\nBogusKey=1\nNoNewPrivileges=maybe\n"))
    complaints = analyze(unit, user=True, home=home, runtime=runtime)
    assert any("BogusKey" in c for c in complaints)
    assert any("maybe" in c or "boolean" in c for c in complaints)
