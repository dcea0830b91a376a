"""Commands that run or talk to the daemon (docs/design/cli.md "Groups of commands").

Each command is a thin call over the control socket; exit code 3 when no daemon answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import click

from ..agent.client import ControlClient
from ..agent.errors import ControlError, DaemonNotRunning
from ..errors import MocksyncError
from .common import (
    ENV_HELP,
    EXIT_FAILED,
    EXIT_NO_DAEMON,
    EXIT_USAGE,
    Ctx,
    emit_json,
    examples,
    fail,
    main_group,
)


def _call(ctx: Ctx, method: str, /, **params: Any) -> dict[str, Any]:
    # `method` is positional-only: `new` passes a parameter called `name`.
    try:
        return ControlClient(ctx.home.socket).call(method, **params)
    except DaemonNotRunning as exc:
        fail(str(exc), EXIT_NO_DAEMON, error=DaemonNotRunning.code, daemon={"running": False})
    except ControlError as exc:
        fail(exc.message if hasattr(exc, "message") else str(exc),
             error=exc.code if isinstance(exc.code, str) else None)


json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@main_group.command("daemon", epilog=examples(
    "mocksync daemon --folder ~/mockoon",
    "mocksync --home /tmp/dev2 daemon --folder /tmp/dev2/envs --bind 127.0.0.1 --no-mdns"))
@click.option("--folder", type=click.Path(file_okay=False), help="Folder of environment files.")
@click.option("--relay", multiple=True, metavar="URL",
              help="Relay URL, http://host:port or https://host:port, for spaces that name "
                   "no relay of their own (e.g. your personal space). Repeat it for the "
                   "instances of one relay: the daemon uses the first that answers and fails "
                   "over to the next. Not needed for spaces made with `space create --relay`.")
@click.option("--bind", multiple=True, help="Address to sync over (repeatable); default: all.")
@click.option("--no-mdns", is_flag=True, help="Do not announce or discover peers on the LAN.")
@click.option("--ui-port", type=int, metavar="PORT",
              help="Port of the local web page on 127.0.0.1 (default 8385; 0: any free port).")
@click.option("--no-ui", is_flag=True, help="Do not serve the local web page (`mocksync open`).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_obj
def daemon_cmd(ctx: Ctx, folder: str | None, relay: tuple[str, ...], bind: tuple[str, ...],
               no_mdns: bool, ui_port: int | None, no_ui: bool, verbose: int) -> None:
    """Run the sync daemon in the foreground (`mocksync service install` runs it as a user
    service). SIGTERM stops it cleanly.

    Each space syncs through the relays it names (`space create --relay`, in the invite),
    one connection per distinct list, and never through another relay. A space naming no
    relay uses --relay (or config.toml `relay`); a space naming one of the --relay addresses
    takes all of them, as instances of that relay, in this device's order. Spaces created or
    joined while the daemon runs are picked up without a restart.
    """
    from ..agent.runner import run_daemon
    from ..agent.settings import load_settings
    from ..spaceio.identityfiles import has_identity
    from ..ui.mount import mount_ui

    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:  # every option, config.toml and the identity checked before the banner
        settings = load_settings(ctx.home.root / "config.toml").with_overrides(
            folder=Path(folder) if folder else None, relay=relay[0] if relay else None,
            relay_more=tuple(relay[1:]) if relay else None,
            bind=tuple(bind) if bind else None, mdns=False if no_mdns else None,
            ui=False if no_ui else None, ui_port=ui_port,
        ).check()
        settings = _checked_daemon_settings(settings)
    except MocksyncError as exc:
        fail(str(exc), EXIT_USAGE, error="usage")
    if not has_identity(ctx.home):
        fail(f"this home ({ctx.home.root}) has no device identity yet; run `mocksync init "
             "--name NAME` first, then start the daemon", error="not_initialised")
    try:
        click.echo(f"mocksync daemon: watching {Path(settings.folder).expanduser()} "
                   f"(home {ctx.home.root}); Ctrl-C to stop", err=True)
        asyncio.run(run_daemon(ctx.home, settings, mount=mount_ui))
    except MocksyncError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    click.echo("mocksync daemon: stopped", err=True)


def _checked_daemon_settings(settings: Any) -> Any:
    """`settings` with every relay address and `--bind` address checked the way the daemon
    will use them (a usage error said before anything starts, not a failure minutes later)."""
    from dataclasses import replace

    from ..net.ice import check_bind
    from ..relay.auth import relay_origin

    for url in settings.relays:
        relay_origin(url)
    return replace(settings, bind=check_bind(settings.bind))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[("" if v is None else str(v)) for v in r])
    Console().print(t)


def relay_text(r: dict[str, Any]) -> str:
    """The `relay` line of `status`: its state, why, and, when not connected, when the daemon
    tries again by itself and what happens to edits meanwhile (a person reading "offline"
    needs to know whether to wait, act, or run `mocksync reconnect`)."""
    state = r.get("state") or "none"
    line = f"relay   {state}"
    if r.get("url") and state not in ("offline", "refused"):
        line += f" {r['url']}"  # offline/refused: the reason names the relay
    if r.get("reason"):
        line += f": {r['reason']}"
    elif state in ("offline", "refused") and r.get("url"):
        line += f" {r['url']}"
    if state in ("offline", "refused"):
        retry = r.get("next_retry_s")
        if isinstance(retry, int | float):
            line += (f"\n        next try in {_seconds(retry)} by itself "
                     "(`mocksync reconnect` tries now)")
        line += _EDITS_MEANWHILE.get(str(r.get("code")), _EDITS_KEPT)
    return line


#: What happens to edits while the relay is not connected: sent once it is back, except when
#: this device was removed: nothing it saves reaches that space again unless it is invited back.
_EDITS_KEPT = "; edits made meanwhile are kept on this device and sent when it is back"
_EDITS_MEANWHILE = {
    "revoked": ("; edits made here stay on this device only: the space no longer takes them "
                "from it (an admin's `mocksync invite` and `mocksync join` bring it back)"),
}


def _seconds(s: float) -> str:
    if s < 1:
        return "under a second"
    if s < 90:
        return f"{round(s)} s"
    return f"{round(s / 60)} min"


#: How long `status --wait` waits for a daemon that holds the home but does not answer yet
#: (just started: `service install`, or `mocksync daemon` in another terminal a moment ago).
DAEMON_START_WAIT_S = 30.0
#: ...and for one that does not even hold the home yet (a process still importing its code).
DAEMON_APPEAR_WAIT_S = 5.0
#: Pause between two looks for that daemon's control socket.
DAEMON_START_POLL_S = 0.2


def _wait_for_starting_daemon(ctx: Ctx, limit: float) -> None:
    """`status --wait` right after starting the daemon said "the daemon is not running" while
    it was starting up. Wait (saying so) while a live process holds the home's lock, and a few
    seconds more for one that may not have taken it yet; then fail as `status` does. The lock
    is only read, never taken: taking it, even for an instant, could make the starting daemon
    refuse to run."""
    import os
    import time

    from ..agent.lock import read_lock_pid

    started = time.monotonic()
    said = False
    while True:
        try:
            ControlClient(ctx.home.socket).call("status")
            return
        except DaemonNotRunning as exc:
            pid = read_lock_pid(ctx.home.lock)
            alive = pid is not None and pid != os.getpid() and _pid_alive(pid)
            waited = time.monotonic() - started
            if waited >= (limit if alive else min(limit, DAEMON_APPEAR_WAIT_S)):
                fail(str(exc), EXIT_NO_DAEMON, error=DaemonNotRunning.code,
                     daemon={"running": False})
            if not said:
                click.echo("waiting for the daemon to start answering...", err=True)
                said = True
        except ControlError:
            return  # it answers; the real call below reports whatever it says
        time.sleep(DAEMON_START_POLL_S)


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@main_group.command("status", epilog=examples(
    "mocksync status",
    "mocksync status --wait --timeout 300",
    "mocksync status --json | jq '.environments[] | select(.state != \"synced\")'"))
@click.option("--wait", is_flag=True,
              help="First wait until no environment is catching up, showing progress (and "
                   "for a daemon still starting up).")
@click.option("--timeout", default=600.0, show_default=True, type=float,
              help="With --wait: give up after this many seconds (exit 1).")
@json_opt
@click.pass_obj
def status_cmd(ctx: Ctx, wait: bool, timeout: float, as_json: bool) -> None:
    """The whole picture: device, daemon, relay, peers, environments and why each is as it is.

    Peers are one row per device: how it is reached now (via) and the route that takes over
    when that one goes (fallback). An environment being caught up is `syncing`, with its
    progress (`progress` in --json).
    """
    from .progressui import MAX_WAIT_S, Reporter, wait_caught_up

    if not 0 < timeout <= MAX_WAIT_S:
        fail(f"--timeout must be between 0 and {MAX_WAIT_S} seconds", EXIT_USAGE)
    if wait:
        _wait_for_starting_daemon(ctx, min(timeout, DAEMON_START_WAIT_S))
        with Reporter() as reporter:
            done, st = wait_caught_up(lambda: _call(ctx, "status"), reporter, timeout)
        if not done:
            fail(f"still catching up after {timeout:g} s; run `mocksync status` to see where",
                 error="timeout", status=st)
    else:
        st = _call(ctx, "status")
    if as_json:
        emit_json(st)
        return
    d, dm, r = st["device"], st["daemon"], st["relay"]
    click.echo(f"device  {d['name']} ({d['id']})")
    click.echo(f"daemon  running, version {dm['version']}, folder {dm['folder']}")
    if dm.get("watch_problem"):  # the folder went away: no save is seen until it is back
        click.echo(f"watch   {dm['watch_problem']}")
    connections = st.get("relays") or []
    if len(connections) > 1:  # one per relay route of the spaces (net.relay_fleet)
        names = {sp.get("id"): sp.get("name") for sp in st.get("spaces") or ()}
        for row in connections:
            click.echo(relay_text(row))
            carried = [str(names.get(s) or str(s)[:12]) for s in row.get("serves") or ()]
            click.echo(f"        for {', '.join(carried) or 'no space'}")
    else:
        click.echo(relay_text(r))
    for sp in st.get("spaces") or ():  # the relays each space names (issue 17)
        if sp.get("removed"):  # out of the space, as its signed log proves
            click.echo(f"space   {sp['name']}: {sp['removed']['reason']}")
        if sp.get("relays"):
            click.echo(f"space   {sp['name']}: relays {', '.join(sp['relays'])}")
        if sp.get("local_relays"):  # `space relays --use`: this device only, not signed
            click.echo(f"space   {sp['name']}: also {', '.join(sp['local_relays'])} "
                       "(this device only, until the space names it)")
    if st["peers"]:
        _table("peers", ["device", "member", "via", "fallback", "state", "rtt ms"],
               [[p.get("device"), p.get("member"), p.get("via"), p.get("fallback") or "",
                 p.get("state"), p.get("rtt_ms")] for p in st["peers"]])
    else:
        click.echo("peers   none connected")
    for p in st.get("progress") or ():
        click.echo(f"syncing {p.get('name') or p.get('env')}: {p.get('done')} of "
                   f"{p.get('total')} change sets")
    envs = st["environments"]
    if envs:
        # Reasons are sentences (what is wrong and what to do): under the table, one line
        # each, not squeezed into a column a narrow terminal wraps a word per line.
        _table("environments", ["name", "file", "space", "state", "conflicts"],
               [[e["name"], Path(e["file"]).name, e.get("space_name") or "", e["state"],
                 e["conflicts"] or ""] for e in envs])
        for e in envs:  # why each one is as it is, then linked files not in sync, and why
            name, extra = Path(e["file"]).name, []
            if e.get("reason"):
                click.echo(f"  {name}: {e['state']}: {e['reason']}")
            waiting: dict[str, list[str]] = {}
            for lk in e.get("linked") or ():
                state = lk.get("state")
                line = (f"  {name}: {lk['path']}: {state}"
                        + (f": {lk['reason']}" if lk.get("reason") else ""))
                if state == "too_many":
                    extra.append(lk)
                elif state in _LINKED_WAITING:
                    waiting.setdefault(state, []).append(line)
                elif state != "synced":
                    click.echo(line)
            for state, lines in waiting.items():
                shown = lines if len(lines) <= MAX_LINKED_LINES + 1 else lines[:MAX_LINKED_LINES]
                click.echo("\n".join(shown))
                if len(shown) < len(lines):  # one line for the rest, not hundreds
                    click.echo(f"  {name}: {len(lines) - len(shown)} more linked files {state}: "
                               f"{_LINKED_WAITING[state]} (`mocksync status --json` lists each)")
            if extra:
                click.echo(f"  {name}: {len(extra)} more linked files: {extra[0]['reason']}")
            for rf in e.get("refused") or ():  # change sets refused or quarantined (issue 12)
                click.echo(f"  {name}: refused #{rf.get('seq')} from {rf.get('device')}"
                           + ("" if rf.get("blocking") else " (not blocking)")
                           + f": {rf.get('reason')}")
    else:
        click.echo("no environment files in the folder yet")


#: Linked files of one environment `status` names one line each while they only wait (for a
#: teammate to have them, or to arrive): past this many, the rest are counted in one line, so
#: an environment linking hundreds of files no device has yet does not bury the rest.
MAX_LINKED_LINES = 3
_LINKED_WAITING = {"missing": "not on this device yet", "pending": "not received yet"}


@main_group.command("list", epilog=examples("mocksync list", "mocksync list --json"))
@json_opt
@click.pass_obj
def list_cmd(ctx: Ctx, as_json: bool) -> None:
    """Environments in the folder, local or synced, and which file holds each (a teammate's
    environment keeps the file name it has on the sharer's device when that name is free here).
    """
    envs = _call(ctx, "list")["environments"]
    if as_json:
        emit_json(envs)
        return
    _table("environments", ["name", "uuid", "file", "sharer's file", "state", "space"],
           [[e["name"], e["uuid"], Path(e["file"]).name, e.get("shared_as") or "",
             e["state"], e.get("space_name")] for e in envs])


@main_group.command("share", epilog=examples("mocksync share petstore.json --space team",
                                                "mocksync share petstore.json --copy"))
@click.argument("file")
@click.option("--space", "space", help="Space name or id (default: your personal space).")
@click.option("--copy", is_flag=True, help="Leave FILE as is; sync a copy with fresh uuids.")
@json_opt
@click.pass_obj
def share_cmd(ctx: Ctx, file: str, space: str | None, copy: bool, as_json: bool) -> None:
    """Make a local environment synced (Mockoon Pro: "Duplicate to the cloud").

    Teammates get it under the same file name when that name is free on their device.
    """
    p = Path(file)
    res = _call(ctx, "share", file=str(p.resolve()) if p.exists() else file, space=space, copy=copy)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"shared {res['name']!r} ({res['uuid']}) from {res['file']} "
                   f"in space {res.get('space_name')}")


@main_group.command("new", epilog=examples('mocksync new "Orders API" --space team'))
@click.argument("name")
@click.option("--space", "space", help="Space name or id (default: your personal space).")
@json_opt
@click.pass_obj
def new_cmd(ctx: Ctx, name: str, space: str | None, as_json: bool) -> None:
    """Create a valid empty environment file, synced (Mockoon Pro: "New cloud environment")."""
    res = _call(ctx, "new", name=name, space=space)
    if as_json:
        emit_json(res)
    else:
        click.echo(f"created {res['file']} ({res['uuid']}), synced in space {res.get('space_name')}")


def _env_command(name: str, verb: str, help_text: str, example: str) -> None:
    @main_group.command(name, help=f"{help_text}\n\n{ENV_HELP}", epilog=examples(example))
    @click.argument("env")
    @json_opt
    @click.pass_obj
    def cmd(ctx: Ctx, env: str, as_json: bool) -> None:
        res = _call(ctx, name, env=env)
        if as_json:
            emit_json(res)
        elif res.get("restored") is False:  # `restore` of a file that is there: say so
            click.echo(f"nothing to restore: {res['file']} is in place")
        else:
            click.echo(f"{verb} {res['file']}" + (f" ({res['note']})" if res.get("note") else ""))


_env_command("unshare", "unshared; kept as a local file:",
             "Leave the space on every device; every copy stays as a local file "
             "(Mockoon Pro: \"Convert to local\").", "mocksync unshare petstore.json")
_env_command("delete", "deleted from the space; kept here as a local file:",
             "Leave the space; other devices move their copy to a recoverable trash "
             "(Mockoon Pro: \"Delete from cloud\").", "mocksync delete 'Pet Store'")
_env_command("restore", "restored", "Write a synced environment's file again after it was "
             "deleted on this device.", "mocksync restore petstore.json")


@main_group.command("adopt", epilog=examples("mocksync adopt payments-callbacks.json",
                                              "mocksync adopt payments-callbacks.json notes.txt"))
@click.argument("env")
@click.argument("paths", nargs=-1)
@json_opt
@click.pass_obj
def adopt_cmd(ctx: Ctx, env: str, paths: tuple[str, ...], as_json: bool) -> None:
    """Sync the files ENV links by absolute paths or paths outside the folder: copy them into
    a folder beside the environment and point the environment at the copies (one ordinary
    edit, synced like any other). Also share the files of this device at paths a teammate
    linked (`unconfirmed` in `status`): they are never read until you do.

    ENV is a uuid, a name or a file path. PATHS (as `status` names them) limit it to those.
    Without PATHS only the paths you linked yourself are adopted: whatever a teammate linked
    is read only once you name it, and is listed as skipped.
    """
    res = _call(ctx, "adopt", env=env, **({"paths": list(paths)} if paths else {}))
    if as_json:
        emit_json(res)
    elif not res["adopted"] and not res.get("shared"):
        click.echo(f"nothing to adopt in {res['file']}: {res.get('note', '')}")
    else:
        for a in res["adopted"]:
            click.echo(f"adopted {a['from']} -> {a['to']}")
        for rel in res.get("shared") or ():
            click.echo(f"shared {rel} (linked by a teammate; now linked by you too)")
    if not as_json:
        for sk in res.get("skipped") or ():  # a teammate's link: read only when named
            click.echo(f"skipped {sk['path']}: {sk['reason']}")


@main_group.command("conflicts", epilog=examples("mocksync conflicts",
                                                    "mocksync conflicts petstore.json --json"))
@click.argument("env", required=False)
@json_opt
@click.pass_obj
def conflicts_cmd(ctx: Ctx, env: str | None, as_json: bool) -> None:
    """What merged over what: concurrent writes whose loser was kept (exit 1 when any).

    ENV is a uuid, a name or a file path.
    """
    cs = _call(ctx, "conflicts", env=env)["conflicts"]
    if as_json:
        emit_json(cs)
    elif not cs:
        click.echo("no conflicts")
    else:
        files = {c.get("file") for c in cs}
        mixed = len({c.get("flip") for c in cs}) > 1
        _table("conflicts", [*(["file"] if len(files) > 1 else []), "id", "where", "field",
                             "kept", "over", *(["flip with"] if mixed else [])],
               [[*([c.get("file")] if len(files) > 1 else []), c["id"], c["where"],
                 _field_text(c),
                 f"{_value_text(c['winner'])} ({_writer(c['winner'])})",
                 f"{_value_text(c['loser'])} ({_writer(c['loser'])})",
                 *([f"--take {c.get('flip', 'theirs')}"] if mixed else [])] for c in cs])
        click.echo(_flip_hint(cs))
    if cs:
        raise SystemExit(EXIT_FAILED)


def _flip_hint(cs: list[dict[str, Any]]) -> str:
    """The line under the conflicts table. "Ours" is the side this device wrote, so the word
    that flips a conflict depends on who wrote its losing value (`flip`, from the daemon):
    on the device whose write lost, `--take theirs` would keep things as they are."""
    flips = {c.get("flip", "theirs") for c in cs}
    take = f"--take {flips.pop()}" if len(flips) == 1 else "--take as its row says"
    return (f"flip one with: mocksync resolve ID {take}\n"
            "(\"ours\" is the value this device wrote, else the one kept)")


def _field_text(c: dict[str, Any]) -> str:
    """The field a conflict is about, as a person reads it: `body`, not `v.body`, also when
    the entity holding it was deleted concurrently (`#deleted` leads the field then)."""
    if c.get("what"):
        return str(c["what"])
    field = [str(f) for f in c.get("field") or ()]
    if field and field[0] == "#deleted":
        return ".".join(field[2:]) or "the whole entity"
    return ".".join(field[1:]) or (field[0] if field else "")


def _value_text(side: dict[str, Any]) -> str:
    """One side's value; a delete has none to show (`None` read as a value someone wrote)."""
    return "(deleted)" if side.get("absent") else _short(side.get("value"))


def _writer(side: dict[str, Any]) -> str:
    """Who wrote one side of a conflict: the member's name when the space knows it (device
    ids mean nothing to a person), with the device id's first group to tell devices apart."""
    device = str(side.get("device") or "")
    member = side.get("member")
    return f"{member}, {device[:5]}" if member else device[:11]


def _short(v: Any, n: int = 30) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


@main_group.command("resolve", epilog=examples("mocksync resolve 3f2a9c1b07de --take theirs",
                                                  "mocksync resolve petstore.json --keep-local"))
@click.argument("target")
@click.option("--take", type=click.Choice(["ours", "theirs"]),
              help="For a conflict id: keep our value or take theirs.")
@click.option("--keep-local", is_flag=True, help="For an environment held by the prompt policy.")
@click.option("--discard-local", is_flag=True, help="For an environment held by the prompt policy.")
@json_opt
@click.pass_obj
def resolve_cmd(ctx: Ctx, target: str, take: str | None, keep_local: bool, discard_local: bool,
                as_json: bool) -> None:
    """Flip one conflict (TARGET = conflict id), or decide a held environment (TARGET = ENV).

    ENV is a uuid, a name or a file path.
    """
    if take and (keep_local or discard_local):
        fail("give either --take (for a conflict) or --keep-local/--discard-local", 2)
    if keep_local or discard_local:
        if keep_local and discard_local:
            fail("give only one of --keep-local and --discard-local", 2)
        res = _call(ctx, "resolve_env", env=target, keep_local=keep_local)
    elif take:
        res = _call(ctx, "resolve", id=target, take=take)
    else:
        fail("say what to do: --take ours|theirs, --keep-local or --discard-local", 2)
    if as_json:
        emit_json(res)
    else:
        click.echo(_resolved_text(res) if take else
                   "resolved" + (" (file updated)" if res.get("changed") else ""))


def _resolved_text(res: dict[str, Any]) -> str:
    """What `resolve` did, in values: taking the side already kept changes no file, and a
    person who meant to flip it must be able to see that."""
    value = "(deleted)" if res.get("absent") else _short(res.get("value"), 60)
    if res.get("changed"):
        return f"resolved: took {value} (file updated)"
    return f"resolved: kept {value}, the value already in place (file unchanged)"


@main_group.command("log", epilog=examples("mocksync log petstore.json --json"))
@click.argument("env")
@json_opt
@click.pass_obj
def log_cmd(ctx: Ctx, env: str, as_json: bool) -> None:
    """Change sets of an environment, oldest first.

    ENV is a uuid, a name or a file path.
    """
    rows = _call(ctx, "log", env=env)["changesets"]
    if as_json:
        emit_json(rows)
        return
    _table("change sets", ["time", "device", "member", "seq", "ops", "summary"],
           [[dt.datetime.fromtimestamp(r["time"]).isoformat(timespec="seconds"), r["device"][:11],
             r["member"], r["seq"], r["ops"], r["summary"]] for r in rows])


@main_group.command("reconnect", epilog=examples("mocksync reconnect && mocksync status"))
@click.pass_obj
def reconnect_cmd(ctx: Ctx) -> None:
    """Retry the relay and peers now, and rescan the folder."""
    _call(ctx, "reconnect")
    click.echo("reconnecting")


@main_group.command("peers", epilog=examples(
    "mocksync peers", "mocksync peers --json | jq '.[] | select(.state != \"connected\")'"))
@json_opt
@click.pass_obj
def peers_cmd(ctx: Ctx, as_json: bool) -> None:
    """Devices this daemon syncs with, one row each: how it is reached now (LAN over WebRTC,
    or the relay), the fallback when that goes, state and round trip.

    A peer that is not connected says why (offline, unreachable, incompatible version...).
    """
    peers = _call(ctx, "peers")["peers"]
    if as_json:
        emit_json(peers)
        return
    if not peers:
        click.echo("no peers known yet (none on the LAN share a space with this device, "
                   "and the relay reports none)")
        return
    _table("peers", ["device", "name", "member", "via", "fallback", "state", "rtt ms",
                     "address", "reason"],
           [[p.get("device"), p.get("name") or "", p.get("member"), p.get("via"),
             p.get("fallback") or "",
             p.get("state"), p.get("rtt_ms"), p.get("address"), p.get("reason") or ""]
            for p in peers])


@main_group.command("who", epilog=examples("mocksync who", "mocksync who --json"))
@json_opt
@click.pass_obj
def who_cmd(ctx: Ctx, as_json: bool) -> None:
    """Who is online now and what they are editing (environment and, if the editor says, the
    route or response)."""
    rows = _call(ctx, "who")["who"]
    if as_json:
        emit_json(rows)
        return

    def looking_at(r: dict[str, Any]) -> str:
        if not r.get("env"):
            return ""
        what = r.get("env_name") or r["env"]
        if r.get("entity_name") or r.get("entity"):
            what += f" / {r.get('entity_name') or r['entity']}"
        return what

    _table("online", ["who", "device", "name", "via", "editing", "in"],
           [[(r.get("member") or r.get("name") or "?") + (" (you)" if r.get("you") else ""),
             r.get("device"), r.get("name") or "", r.get("via") or "", looking_at(r),
             r.get("editor") or ""]
            for r in rows])
