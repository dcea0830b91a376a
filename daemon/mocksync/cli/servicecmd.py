"""`mocksync service install|uninstall|status`: the daemon as a per-user service.

Thin: `agent.service.plan_for` decides the file and the manager's commands; this writes or
removes the file and runs those commands. Where the manager is absent or cannot be reached
(no systemctl, no user manager in a container), the file is still written and the command
says why it was not loaded and how to load it by hand.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import MocksyncError
from .common import EXIT_FAILED, EXIT_USAGE, Ctx, emit_json, examples, fail, main_group

#: Seconds one call of systemctl/launchctl may take.
MANAGER_TIMEOUT_S = 30

json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def _plan(ctx: Ctx, folder: str | None) -> Any:
    from ..agent.service import daemon_argv, plan_for

    try:
        argv = daemon_argv(sys.executable, str(ctx.home.root),
                           str(Path(folder).expanduser().resolve()) if folder else None)
        return plan_for(platform.system(), Path.home(), os.getuid(), argv,
                        str(ctx.home.root / "daemon.log"))
    except MocksyncError as exc:
        fail(str(exc), EXIT_USAGE, error=getattr(exc, "code", None) or "usage")


def _other_home(ctx: Ctx, plan: Any) -> str | None:
    """The home the installed service file runs when it is not this one (one file per user:
    see `agent.service.installed_home`), else None."""
    from ..agent.service import installed_home

    try:
        content = plan.path.read_bytes()
    except OSError:
        return None
    home = installed_home(plan.system, content)
    if home is None or Path(home).expanduser().resolve() == ctx.home.root.resolve():
        return None
    return home


def manager_absent(plan: Any) -> str | None:
    """Why the service manager cannot load the file here, or None when it can."""
    if shutil.which(plan.manager) is None:
        return f"{plan.manager} is not installed here (no service manager to load it)"
    if plan.manager == "systemctl":
        try:
            r = subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True,
                               text=True, timeout=MANAGER_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the systemd user manager does not answer ({exc})"
        if r.returncode != 0:
            return ("the systemd user manager is not running for this user "
                    f"({(r.stderr or r.stdout).strip()[:200] or 'no user bus'})")
    return None


def _run(cmd: tuple[str, ...]) -> tuple[int, str]:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=MANAGER_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return r.returncode, (r.stderr or r.stdout).strip()


@main_group.group("service", epilog=examples(
    "mocksync service install --folder ~/mockoon", "mocksync service status",
    "mocksync service uninstall"))
def service_group() -> None:
    """Run the daemon as a per-user service: a systemd user unit on Linux, a launchd agent on
    macOS (Windows is not supported yet)."""


@service_group.command("install", epilog=examples(
    "mocksync service install --folder ~/mockoon",
    "mocksync --home ~/.mocksync-work service install --no-load"))
@click.option("--folder", type=click.Path(file_okay=False),
              help="Folder of environment files the service watches (default: config.toml's).")
@click.option("--no-load", is_flag=True, help="Only write the file; do not load or start it.")
@json_opt
@click.pass_obj
def service_install_cmd(ctx: Ctx, folder: str | None, no_load: bool, as_json: bool) -> None:
    """Write the service file for this device's home and start it at login (and now)."""
    from ..agent.writer import atomic_write

    plan = _plan(ctx, folder)
    other = _other_home(ctx, plan)
    if other is not None:  # replacing it would silently stop that home's daemon at login
        fail(f"{plan.path} already runs the daemon of another home ({other}); there is one "
             f"service per user: run `mocksync --home {other} service uninstall` first",
             error="other_home", file=str(plan.path), home=other)
    try:
        plan.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(plan.path, plan.content)
    except (OSError, MocksyncError) as exc:
        fail(f"{plan.path}: cannot write ({exc})", error="unwritable")
    why = "--no-load was given" if no_load else manager_absent(plan)
    loaded = False
    if why is None:
        for cmd in plan.load:
            code, out = _run(cmd)
            if code != 0:
                fail(f"wrote {plan.path}, but `{' '.join(cmd)}` failed: {out}",
                     error="load_failed", file=str(plan.path))
        loaded = True
    doc = {"system": plan.system, "file": str(plan.path), "loaded": loaded, "not_loaded_why": why,
           "load_commands": [" ".join(c) for c in plan.load]}
    if as_json:
        emit_json(doc)
        return
    click.echo(f"wrote {plan.path}")
    if loaded:
        click.echo(f"loaded and started with {plan.manager}")
    else:
        click.echo(f"not loaded: {why}; load it with: "
                   + " && ".join(" ".join(c) for c in plan.load))


@service_group.command("uninstall", epilog=examples("mocksync service uninstall"))
@json_opt
@click.pass_obj
def service_uninstall_cmd(ctx: Ctx, as_json: bool) -> None:
    """Stop the service, keep it from starting at login, and remove its file."""
    plan = _plan(ctx, None)
    other = _other_home(ctx, plan)
    if other is not None:
        fail(f"{plan.path} runs the daemon of another home ({other}), not this one's; "
             f"nothing removed (`mocksync --home {other} service uninstall` removes it)",
             error="other_home", file=str(plan.path), home=other)
    existed = plan.path.exists()
    why = manager_absent(plan)
    if why is None and existed:
        for cmd in plan.unload:
            _run(cmd)  # not loaded is fine: the goal is "not running, not installed"
    try:
        plan.path.unlink(missing_ok=True)
    except OSError as exc:
        fail(f"{plan.path}: cannot remove ({exc.strerror or exc})", error="unwritable")
    if why is None and plan.manager == "systemctl":
        _run(("systemctl", "--user", "daemon-reload"))
    doc = {"system": plan.system, "file": str(plan.path), "removed": existed,
           "unloaded": why is None and existed, "not_unloaded_why": why if existed else None}
    if as_json:
        emit_json(doc)
        return
    click.echo(f"removed {plan.path}" if existed else f"no service file at {plan.path}")
    if existed and why is not None:
        click.echo(f"not unloaded: {why}")


@service_group.command("status", epilog=examples("mocksync service status",
                                                 "mocksync service status --json"))
@json_opt
@click.pass_obj
def service_status_cmd(ctx: Ctx, as_json: bool) -> None:
    """Is the service installed, and is it running? (exit 1 when not installed)"""
    plan = _plan(ctx, None)
    other = _other_home(ctx, plan)
    installed = plan.path.exists() and other is None
    why = manager_absent(plan)
    running: bool | None = None
    detail = why if other is None else f"the service file runs another home: {other}"
    if why is None and installed:
        code, out = _run(plan.query)
        running = code == 0
        detail = out.splitlines()[0] if out else None
    doc = {"system": plan.system, "file": str(plan.path), "installed": installed,
           "running": running, "detail": detail, "other_home": other}
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{'installed' if installed else 'not installed'}: {plan.path}"
                   + (f" (it runs another home: {other})" if other else ""))
        state = {True: "running", False: "not running", None: "unknown"}[running]
        click.echo(f"service {state}" + (f" ({detail})" if detail else ""))
    if not installed:
        raise SystemExit(EXIT_FAILED)
