"""Commands for this device's identity, its spaces, invites and members
(docs/design/cli.md "Groups of commands"). Thin: parse, call `mocksync.spaceio.actions`, print.
None of them needs the
daemon; `join` needs an admin device of the space to be reachable through a registered join
transport and says so plainly when none is.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import socket
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import MocksyncError
from ..space.errors import InviteError, NotInitialisedError
from ..space.fields import MAX_SPACE_RELAYS, check_name
from ..space.invite import MAX_INVITE_LIFETIME_S, InviteToken, JoinerSession
from ..space.membership import ROLES, SpaceState
from ..space.standing import departure, member_labels
from ..spaceio import actions
from ..spaceio.identityfiles import has_identity, load_identity
from ..spaceio.join import find_join_transports, join_space
from ..spaceio.store import StoredSpace, get_space, list_spaces, personal_space
from .common import EXIT_USAGE, Ctx, emit_json, fail, main_group

#: Longest `join --timeout` in seconds.
MAX_JOIN_TIMEOUT_S = 3600

_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_duration(text: str) -> int:
    """`90s`, `30m`, `24h`, `7d` (a bare number is seconds) -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 24h or 7d")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _home(ctx: click.Context):
    obj: Ctx = ctx.find_object(Ctx)  # type: ignore[assignment]
    return obj.home


def _identity(ctx: click.Context):
    try:
        return load_identity(_home(ctx))
    except MocksyncError as exc:
        fail(str(exc))


def _space(ctx: click.Context, ref: str) -> StoredSpace:
    try:
        return get_space(_home(ctx), ref)
    except MocksyncError as exc:
        fail(str(exc))


def _space_summary(sp: StoredSpace, me: str) -> dict[str, Any]:
    st = sp.state
    gone = departure(st, me)
    return {
        "id": st.space_id,
        "name": st.name,
        "kind": st.kind,
        "role": st.role_of(me),
        "members": len(st.members),
        "devices": len(st.devices),
        "key_generation": st.key_generation,
        "model": st.model,
        "relay": st.relay,  # the first (the only one before issue 17), kept for scripts
        "relays": list(st.relays),
        "local_relays": list(sp.local_relays),  # `space relays --use`: this device only
        # Why this device is out of the space (removed, or its member left), from the
        # signed log alone; null while a member.
        "removed": gone.to_json() if gone is not None else None,
    }


# ---------------------------------------------------------------- init


@main_group.command(
    "init",
    epilog="\b\nExamples:\n  mocksync init --name laptop\n  mocksync --home /tmp/dev2 init --name desktop --member Alice",
)
@click.option("--name", help="This device's name as members see it (default: the host name).")
@click.option("--member", "member_name",
              help="Your own name as other members see it (default: your login name).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def init_cmd(ctx: click.Context, name: str | None, member_name: str | None, as_json: bool) -> None:
    """Make this device's keys and print its device id; also creates its personal space."""
    home = _home(ctx)
    if has_identity(home):
        ident = _identity(ctx)
        fail(f"already initialised: this home ({home.root}) is device {ident.device_id} "
             f"({ident.name!r}); use another --home for another device")
    name = name or socket.gethostname().split(".")[0] or "device"
    try:
        member_name = member_name or getpass.getuser()
    except (KeyError, OSError):
        member_name = member_name or name
    try:
        ident, personal = actions.init_device(home, name=name[:64], member_name=member_name[:64])
    except MocksyncError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"device": {"id": ident.device_id, "name": ident.name},
                   "member_name": ident.member_name, "home": str(home.root),
                   "personal_space": personal.space_id})
        return
    click.echo(f"device id: {ident.device_id}")
    click.echo(f"device name: {ident.name}")
    click.echo(f"personal space: {personal.name} ({personal.space_id})")


# ---------------------------------------------------------------- space create / list


@main_group.group(
    "space",
    epilog="\b\nExamples:\n  mocksync space create backend-team --relay https://relay.example:8765\n  mocksync space list --json",
)
def space_group() -> None:
    """Create and list the spaces this device belongs to."""


@space_group.command(
    "create",
    epilog="\b\nExamples:\n  mocksync space create backend-team\n  mocksync space create notes --personal\n  mocksync space create payments --relay https://relay.example:8765\n  mocksync space create payments --relay https://a.example:8765 --relay https://b.example:8765",
)
@click.argument("name")
@click.option("--personal", is_flag=True, help="A space for your own devices only (one member).")
@click.option("--relay", "relays", metavar="URL", multiple=True,
              help="The space's relay, http(s)://host:port. Repeat it (at most "
                   f"{MAX_SPACE_RELAYS}) to name fallbacks: invites list every one and a "
                   "joining device tries them all.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def space_create_cmd(ctx: click.Context, name: str, personal: bool, relays: tuple[str, ...],
                     as_json: bool) -> None:
    """Create a new space NAME with this device as its admin."""
    ident = _identity(ctx)
    try:
        sp = actions.create_space(_home(ctx), ident, name,
                                  kind="personal" if personal else "team", relay=relays)
    except MocksyncError as exc:
        fail(str(exc))
    if as_json:
        emit_json(_space_summary(sp, ident.device_id))
        return
    click.echo(f"created {sp.state.kind} space {sp.name!r} ({sp.space_id}); "
               f"invite others with `mocksync invite {sp.name}`")


@space_group.command(
    "list",
    epilog="\b\nExamples:\n  mocksync space list\n  mocksync space list --json | jq '.[].name'",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (an array).")
@click.pass_context
def space_list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the spaces this device belongs to."""
    ident = _identity(ctx)
    try:
        spaces = list_spaces(_home(ctx))
    except MocksyncError as exc:
        fail(str(exc))
    own = personal_space(spaces)
    rows = [_space_summary(sp, ident.device_id)
            | {"own": own is not None and sp.space_id == own.space_id} for sp in spaces]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("this device belongs to no space yet; `mocksync space create NAME`")
    for r in rows:
        mark = "  (this device's own: where share/new go without --space)" if r["own"] else ""
        click.echo(f"{r['name']}  {r['kind']}  {r['role'] or '-'}  {r['members']} members, "
                   f"{r['devices']} devices  key gen {r['key_generation']}  {r['id']}{mark}")
        if r["removed"]:
            click.echo(f"  {r['removed']['reason']}")


@space_group.command(
    "show",
    epilog="\b\nExamples:\n  mocksync space show backend-team\n  mocksync space show backend-team --json | jq '.relays'",
)
@click.argument("space")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def space_show_cmd(ctx: click.Context, space: str, as_json: bool) -> None:
    """One space this device belongs to: its kind, your role, its size and every relay it
    names (the order a joining device is told; it tries them all at once)."""
    ident = _identity(ctx)
    row = _space_summary(_space(ctx, space), ident.device_id)
    if as_json:
        emit_json(row)
        return
    click.echo(f"space    {row['name']} ({row['id']})")
    click.echo(f"kind     {row['kind']}, you are {row['role'] or 'not a member'}")
    if row["removed"]:
        click.echo(f"status   {row['removed']['reason']}")
    click.echo(f"members  {row['members']} ({row['devices']} devices), "
               f"key generation {row['key_generation']}")
    _print_relays(row)


def _print_relays(row: dict[str, Any]) -> None:
    if row["relays"]:
        for i, url in enumerate(row["relays"]):
            click.echo(f"{'relays' if i == 0 else '':<8} {url}")
    else:
        click.echo("relays   none: invites name the relays the inviting daemon uses, if any")
    for url in row["local_relays"]:
        click.echo(f"{'':<8} {url}  (this device only: `space relays --use`)")


@space_group.command(
    "relays",
    epilog="\b\nExamples:\n  mocksync space relays backend-team\n  mocksync space relays backend-team --set https://relay2.example:8765\n  mocksync space relays backend-team --set https://a.example:8765 --set https://b.example:8765\n  mocksync space relays backend-team --use https://relay2.example:8765   # this device only\n  mocksync space relays backend-team --forget-local",
)
@click.argument("space")
@click.option("--set", "new", metavar="URL", multiple=True,
              help="Move the space: its relay list from now on, http(s)://host:port, repeat "
                   f"for fallbacks (1..{MAX_SPACE_RELAYS}). Admin only; signed, so every "
                   "member follows.")
@click.option("--use", "use", metavar="URL", multiple=True,
              help="This device only: also sync the space through URL (repeatable), e.g. "
                   "to catch up with a move made while it was away. Not signed; replaces an "
                   "earlier --use list; forgotten once the space names URL.")
@click.option("--forget-local", is_flag=True, help="Drop the relays added with --use.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def space_relays_cmd(ctx: click.Context, space: str, new: tuple[str, ...],
                     use: tuple[str, ...], forget_local: bool, as_json: bool) -> None:
    """Show or change the relays SPACE syncs through.

    Without options: the space's relays. `--set` moves the space to other relays (the
    team's choice: a signed membership entry; members learn it from the old relay, the LAN
    or the new relay, and their daemons follow; the old relay hears nothing more of the
    space). A device that was away while its space moved, and cannot reach the old relay,
    catches up with `--use NEW-URL`. See docs/design/relay.md.
    """
    if sum((bool(new), bool(use), forget_local)) > 1:
        fail("give one of --set, --use and --forget-local", EXIT_USAGE)
    ident = _identity(ctx)
    home = _home(ctx)
    before = _space(ctx, space)
    try:
        if new:
            sp = actions.move_relays(home, ident, space, new)
        elif use or forget_local:
            sp = actions.use_local_relays(home, space, use)
        else:
            sp = before
    except MocksyncError as exc:
        fail(str(exc))
    if new:
        _poke_daemon(home, "membership")  # the old relay gets the move, then the new route
    elif use or forget_local:
        _poke_daemon(home)  # plan the routes again and connect now
    row = _space_summary(sp, ident.device_id)
    if as_json:
        emit_json(row)
        return
    if new:
        click.echo(f"space {sp.name!r} now syncs through {', '.join(sp.state.relays)} "
                   f"(was {', '.join(before.state.relays) or 'none'}); members follow as "
                   "they learn it")
    elif use and not sp.local_relays:
        click.echo(f"space {sp.name!r} already names {', '.join(use)}: no local relay needed")
    elif use:
        click.echo(f"this device also syncs {sp.name!r} through {', '.join(sp.local_relays)} "
                   "(this device only, until the space names it)")
    elif forget_local:
        click.echo(f"this device no longer adds relays of its own to {sp.name!r}")
    _print_relays(row)


@space_group.command(
    "unpin-relay",
    epilog="\b\nExamples:\n  mocksync space unpin-relay backend-team\n  mocksync space unpin-relay personal backend-team",
)
@click.argument("spaces", nargs=-1, required=True)
@click.pass_context
def space_unpin_relay_cmd(ctx: click.Context, spaces: tuple[str, ...]) -> None:
    """Forget the relay key each SPACE pinned, after its relay was reinstalled or moved on purpose.

    A space pins the key of the first relay that admits it and refuses any other (so a device
    cannot be talked into authenticating to a relay it never used). The next relay to admit
    this device is pinned instead. Restart the daemon (or `mocksync reconnect`) afterwards.
    """
    from ..relay.auth import fingerprint
    from ..spaceio.store import relay_pins, set_relay_pin

    home = _home(ctx)
    chosen = [_space(ctx, space) for space in spaces]  # every name checked before any change
    for sp in chosen:
        per_url, legacy = relay_pins(home, sp.space_id)  # pins are per relay address
        old = list(dict.fromkeys([*([legacy] if legacy else []), *per_url.values()]))
        try:
            set_relay_pin(home, sp.space_id, None)
        except MocksyncError as exc:
            fail(str(exc))
        if not old:
            click.echo(f"space {sp.name!r} had no relay key pinned")
        else:
            keys = ", ".join(fingerprint(k) for k in old)
            click.echo(f"space {sp.name!r} forgot relay key{'s' if len(old) > 1 else ''} "
                       f"{keys}; the next relay that admits this device is pinned")


# ---------------------------------------------------------------- invite / join


@main_group.command(
    "invite",
    epilog="\b\nExamples:\n  mocksync invite backend-team\n  mocksync invite backend-team --role admin --expires 2h\n  mocksync invite personal            # your own second device\n  mocksync invite backend-team --device  # your other device joins the team space",
)
@click.argument("space")
@click.option("--expires", default="24h", show_default=True, metavar="DURATION",
              help="How long the token stays valid: 30m, 24h, 7d (at most 30d).")
@click.option("--role", type=click.Choice(ROLES), default="editor", show_default=True,
              help="Role of the new member.")
@click.option("--device", "own_device", is_flag=True,
              help="Admit another device of yours rather than a new member.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def invite_cmd(ctx: click.Context, space: str, expires: str, role: str, own_device: bool,
               as_json: bool) -> None:
    """Print a one-time join token for SPACE (run `mocksync join TOKEN` on the new device).

    The token admits one device, once, until it expires. This device issued it and must be
    online (daemon running) when the new device joins.
    """
    lifetime = parse_duration(expires)
    if not 60 <= lifetime <= MAX_INVITE_LIFETIME_S:
        fail(f"--expires must be between 1m and {MAX_INVITE_LIFETIME_S // 86400}d", EXIT_USAGE)
    ident = _identity(ctx)
    home = _home(ctx)
    try:
        relay = None if get_space(home, space).state.relays else _daemon_relays(home)
        rec, token = actions.issue_invite(home, ident, space, role=role,
                                          lifetime_s=lifetime,
                                          own_device=own_device, relay=relay)
    except MocksyncError as exc:
        fail(str(exc))
    text = token.encode()
    _poke_daemon(home, "membership")  # announce the invite on the LAN now
    if as_json:
        emit_json({"token": text, "space": token.space_id, "space_name": token.name,
                   "invite_id": rec.invite_id, "role": rec.role, "member": rec.member,
                   "expires": rec.expires})
        return
    click.echo(text)
    if token.relay is None:
        click.echo(f"note: space {token.name!r} names no relay and this device's daemon uses "
                   "none: the new device finds this one on the LAN (keep the daemon running "
                   "with mDNS on); to join from another network, run the daemon with --relay "
                   "URL and invite again", err=True)
    who = "another device of yours" if rec.member else f"a new {rec.role}"
    click.echo(f"one-time invite to {token.name!r} for {who}, valid until {_when(rec.expires)}",
               err=True)


@main_group.command(
    "join",
    epilog="\b\nExamples:\n  mocksync join mocksync1-...\n  mocksync join \"$(cat token.txt)\" --timeout 120\n  mocksync join mocksync1-... --bind 192.168.1.20   # look for the inviter on that network only",
)
@click.argument("token")
@click.option("--timeout", default=60.0, show_default=True, type=float,
              help="Seconds to wait for an admin device to admit this device.")
@click.option("--bind", multiple=True, metavar="ADDR",
              help="Look for the inviting device on the LAN from this address only "
                   "(repeatable; default: the daemon's, from config.toml, else all).")
@click.option("--member-name", "member_name", metavar="NAME",
              help="Your name as the space's members see it (default: the one `init` "
                   "recorded); a name another member already uses is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def join_cmd(ctx: click.Context, token: str, timeout: float, bind: tuple[str, ...],
             member_name: str | None, as_json: bool) -> None:
    """Join the space TOKEN names, once an admin device of it has admitted this device.

    The token is checked here first (damaged or expired tokens fail at once). Then this
    device looks for the inviting device on the LAN (mDNS) and, when the invite names one,
    asks the relay, at the same time; it proves it holds the token's secret to the inviting
    device, which admits it and sends the space's membership log and keys.
    """
    import time

    if not 0 < timeout <= MAX_JOIN_TIMEOUT_S:
        fail(f"--timeout must be between 0 and {MAX_JOIN_TIMEOUT_S} seconds", EXIT_USAGE)
    try:
        parsed = InviteToken.parse(token)
    except InviteError as exc:
        fail(str(exc), EXIT_USAGE)
    home = _home(ctx)
    try:
        parsed.check_fresh(time.time())
        ident = load_identity(home)
    except NotInitialisedError:
        fail("this device has no identity yet; run `mocksync init --name NAME` first, then join")
    except MocksyncError as exc:
        fail(str(exc))
    held = actions.belongs_to(home, parsed.space_id)
    if held is not None and _surely_member(home, held, ident.device_id):
        fail(f"this device already belongs to space {parsed.name!r} ({parsed.space_id})")
    if member_name is not None:
        try:
            check_name(member_name, "--member-name", InviteError)
        except InviteError as exc:
            fail(str(exc), EXIT_USAGE)
    session = JoinerSession(parsed, ident, member_name=member_name)
    try:
        from ..agent.settings import load_settings
        from ..net import relay_join  # noqa: F401  (registers the relay join transport)
        from ..net.lan_join import LanJoinTransport

        settings = load_settings(home.root / "config.toml")
        lan = [LanJoinTransport(bind or settings.bind)] if settings.mdns or bind else []
        transports = [*lan, *find_join_transports(home)]
        from .progressui import Steps

        with Steps() as steps:  # a spinner on a terminal, plain lines in a pipe
            result = asyncio.run(join_space(session, transports, timeout=timeout,
                                            progress=steps.note))
        stored = actions.record_join(home, result, ident.device_id)
    except MocksyncError as exc:
        fail(str(exc))
    _poke_daemon(home)
    st: SpaceState = stored.state
    role = st.role_of(ident.device_id)
    if as_json:
        emit_json({"joined": True, **_space_summary(stored, ident.device_id),
                   "member": result.member_id})
        return
    click.echo(f"joined space {st.name!r} ({st.space_id}) as {role}")


def _daemon_status(home: Any) -> dict[str, Any] | None:
    """The running daemon's `status`, or None when no daemon answers."""
    from ..agent.client import ControlClient

    try:
        return ControlClient(home.socket, timeout=5).call("status")
    except (MocksyncError, OSError):
        return None


def _surely_member(home: Any, held: StoredSpace, device_id: str) -> bool:
    """Is this device still an active member of `held`, for certain? Its own log may be stale
    (it was removed while offline), so only when that log says so *and* the running daemon is
    admitted to the space by the relay right now. Otherwise the join handshake goes ahead and
    the admin device, which knows, admits the device again or says it is already a member."""
    if not held.state.is_member(device_id):
        return False
    st = _daemon_status(home) or {}
    connections = st.get("relays") or [st.get("relay") or {}]  # older daemons: one
    return any(c.get("state") == "connected" and held.space_id in (c.get("spaces") or ())
               for c in connections)


def _daemon_relays(home: Any) -> tuple[str, ...]:
    """The relays this device's daemon uses, for an invite to a space that names none: the
    one the running daemon is on first, then the rest it knows (from its status, else
    config.toml), at most MAX_SPACE_RELAYS; empty when neither names one."""
    from ..agent.settings import load_settings

    full = _daemon_status(home) or {}
    # Only the configured relays' connection: another one carries spaces that named their
    # own relays, which must not be handed to a space that named none (net.relay_fleet).
    connections = full.get("relays")
    st = (next((c for c in connections if c.get("source") == "config"), {})
          if connections is not None else full.get("relay") or {})
    urls = [str(u) for u in [st.get("url"), *(st.get("urls") or ())] if u]
    if not urls:
        try:
            urls = list(load_settings(home.root / "config.toml").relays)
        except MocksyncError:
            return ()
    return tuple(dict.fromkeys(urls))[:MAX_SPACE_RELAYS]


def _poke_daemon(home: Any, method: str = "reconnect") -> None:
    """Tell a running daemon now (not at its next periodic check): `reconnect` syncs a new
    space at once; `membership` applies a removal (takes back what it refuses, uploads it to
    the relay). No daemon running is fine: it does the same when it starts."""
    from ..agent.client import ControlClient

    with contextlib.suppress(MocksyncError, OSError):
        ControlClient(home.socket, timeout=5).call(method)


# ---------------------------------------------------------------- members / remove


def _members_doc(st: SpaceState, me: str) -> dict[str, Any]:
    labels = member_labels(st.members)  # `name (id prefix)` where two share a name
    return {
        "space": {"id": st.space_id, "name": st.name, "kind": st.kind},
        "key_generation": st.key_generation,
        "members": [
            {
                "id": m.id,
                "name": m.name,
                "label": labels[m.id],
                "role": m.role,
                "devices": [
                    {"id": d, "name": st.devices[d].name, "this_device": d == me,
                     "online": None}
                    for d in m.devices
                ],
            }
            for m in sorted(st.members.values(), key=lambda m: (m.name.casefold(), m.id))
        ],
        "removed_devices": [
            {"id": r.device, "name": r.name, "member": r.member, "covers": dict(r.covers)}
            for r in st.removed_devices.values()
        ],
    }


@main_group.command(
    "members",
    epilog="\b\nExamples:\n  mocksync members backend-team\n  mocksync members backend-team --json",
)
@click.argument("space")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def members_cmd(ctx: click.Context, space: str, as_json: bool) -> None:
    """List the members of SPACE, their devices and roles, and which devices are online.

    Whether a device is online comes from the running daemon (what `who` shows); without
    one, this device is offline and the others' `online` is unknown (null).
    """
    from ..agent.presence import mark_online

    ident = _identity(ctx)
    sp = _space(ctx, space)
    doc = mark_online(_members_doc(sp.state, ident.device_id), _online_now(_home(ctx)))
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{sp.name} ({sp.state.kind}, key generation {sp.state.key_generation})")
    for m in doc["members"]:
        click.echo(f"  {m['label']}  {m['role']}  [{m['id']}]")
        for d in m["devices"]:
            mark = "  (this device)" if d["this_device"] else ""
            online = {True: "  online", False: "  offline"}.get(d["online"], "")
            click.echo(f"    {d['id']}  {d['name']}{mark}{online}")


def _online_now(home: Any) -> set[str] | None:
    """Devices the running daemon sees online (itself included), or None without one."""
    from ..agent.client import ControlClient
    from ..agent.presence import online_devices

    try:
        return online_devices(ControlClient(home.socket, timeout=5).call("who")["who"])
    except (MocksyncError, OSError, KeyError, TypeError):
        return None


@main_group.command(
    "leave",
    epilog="\b\nExamples:\n  mocksync leave backend-team\n  mocksync leave backend-team --yes",
)
@click.argument("space")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def leave_cmd(ctx: click.Context, space: str, yes: bool, as_json: bool) -> None:
    """Leave SPACE on your own: every device of yours stops syncing it.

    Your local copies of its environments stay where they are (edits stay on this device).
    An admin device rotates the space's key when it learns you left. The last admin cannot
    leave: make another member an admin first. Asks for confirmation unless --yes.
    """
    ident = _identity(ctx)
    sp = _space(ctx, space)
    if not yes:
        click.confirm(f"leave space {sp.name!r}? your devices stop syncing it (local copies "
                      "stay; an admin must invite you to come back)", abort=True)
    try:
        stored = actions.leave_space(_home(ctx), ident, space)
    except MocksyncError as exc:
        fail(str(exc))
    _poke_daemon(_home(ctx), "membership")  # upload it now: the relay and peers learn it
    gone = departure(stored.state, ident.device_id)
    if as_json:
        emit_json({"left": True, **_space_summary(stored, ident.device_id)})
        return
    click.echo(f"left space {stored.name!r}; local copies of its environments stay on this "
               "device" + (f" ({gone.sentence()})" if gone is not None else ""))


@main_group.command(
    "remove",
    epilog="\b\nExamples:\n  mocksync remove backend-team bob\n  mocksync remove backend-team 5NYN2-XY5GQ-984PT-JKEG9",
)
@click.argument("space")
@click.argument("member_or_device")
@click.pass_context
def remove_cmd(ctx: click.Context, space: str, member_or_device: str) -> None:
    """Revoke a member (all their devices) or one device from SPACE, and rotate the key.

    The removal records the last change of each removed device this device has seen; its
    later changes are refused everywhere. The new content key is sealed to every remaining
    device.
    """
    ident = _identity(ctx)
    try:
        res = actions.remove(_home(ctx), ident, space, member_or_device)
    except MocksyncError as exc:
        fail(str(exc))
    _poke_daemon(_home(ctx), "membership")  # the removal takes effect now, relay included
    click.echo(f"removed {res.target.label} from {res.space.name!r}; "
               f"content key rotated to generation {res.generation}")


__all__ = ["parse_duration"]
