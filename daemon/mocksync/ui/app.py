"""The local web page's HTTP side: a thin aiohttp app on 127.0.0.1 over the control API.

Every page is rendered on the server (Jinja2) from the documents the CLI's control methods
answer (`ControlServer.call`: the same handlers, in this process), so the page and the CLI
cannot disagree; every button is a form POST to the same methods. A little plain JavaScript
(static/ui.js) keeps a page live: it listens to `/events` (server-sent events, fed by the
daemon's event listeners) and swaps in the page's freshly rendered live part on each change,
without reloading. Without JavaScript every page still works, it just is not live.

Fences: before a byte is read, the connection must come from this daemon's own user and
fit under the connection cap (`gate`); every page lives under a secret path drawn at start
(`PATH_SECRET_BYTES`), to which the session cookie is scoped (browsers send cookies to every
port of 127.0.0.1); then (decided in `auth`, applied here to every request) Host must be
this machine's loopback and port (DNS rebinding), a session cookie from a one-time `mocksync
open` token, Origin must be this page when sent (and is required on changes), and every
change is a POST carrying the session's CSRF token. Bounded: request bodies (`MAX_BODY_BYTES`), live streams
(`MAX_EVENT_CLIENTS`), and the work per page (`views.MAX_TIMELINE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import jinja2
from aiohttp import web

from ..agent.control import ControlServer
from ..aiotime import within
from ..errors import MocksyncError
from . import views
from .auth import TOKEN_TTL_S, Session, UiAuth
from .errors import UiAuthError, UiOff
from .gate import Gate

log = logging.getLogger("mocksync.ui")

#: The only address the page listens on: never the network.
UI_HOST = "127.0.0.1"
#: Largest request body (a form of a few fields; an invite or a remove is far smaller).
MAX_BODY_BYTES = 16 * 1024
#: Live pages (event streams) open at once; one more is refused with 503.
MAX_EVENT_CLIENTS = 8
#: Seconds between keepalive comments on an idle event stream.
KEEPALIVE_S = 15.0
#: Seconds between looks at the relay, peers and memberships for a change no event announces
#: (a peer's presence, a device admitted by a join); only while a live page is open.
DIGEST_POLL_S = 1.0
#: Seconds `stop()` gives running requests.
STOP_TIMEOUT_S = 1.0
#: Environment files whose size (for the plan quota) is remembered between renders.
MAX_SIZE_CACHE = 256
#: Largest environment file read to measure its size for the quota bar (bigger: file size).
MAX_MEASURE_BYTES = 64 * 1024 * 1024
#: Form fields longer than this are refused (ids, a member name, a role).
MAX_FIELD_CHARS = 200
#: Random bytes in the secret path prefix of every page (`/s/<secret>/`), drawn at each start.
#: Why: browsers send cookies to every port of a host, so any other server on 127.0.0.1 (a
#: Mockoon mock whose proxy mode, in a teammate's environment, forwards to this page; another
#: user's server) received the session cookie, and a same-user proxy passes the gate. A cookie
#: scoped to a path nobody else knows is sent only to that path: a page on another port never
#: gets it, and cannot name the path to have the browser send it there.
PATH_SECRET_BYTES = 24
#: Seconds a connection may sit without a request before it is closed (aiohttp's default is
#: an hour: idle connections would hold `gate.MAX_CONNECTIONS` slots).
IDLE_CONNECTION_S = 75.0

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: Static files served, by name (nothing else under /static/ exists).
STATIC_FILES = {"ui.css": "text/css", "ui.js": "text/javascript"}
#: Headers on every answer: no framing, no inline or foreign scripts, nothing cached, and a
#: referrer only within the page (no URL of ours ever leaves in one; not `no-referrer`,
#: under which browsers send `Origin: null` on the page's own form posts).
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; connect-src 'self'; form-action 'self'; "
                                "base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _GatedSite(web.BaseSite):
    """Like aiohttp's TCPSite, but every new connection passes the `gate` first (who opened
    it, how many are open) before the HTTP server sees a byte of it."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: Gate) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._gate = gate

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._gate.protocol(server), self._host, self._port,
            reuse_address=False)


@dataclass(eq=False)
class _Client:
    """One live page: woken when something changed (changes coalesce: a burst of events
    makes one refresh, so a slow browser never queues anything)."""

    cookie: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    kinds: set[str] = field(default_factory=set)
    closing: bool = False


#: What an environment or space id in a page's path may look like.
ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


#: Where the guard leaves a request's session and (for a change) its parsed form.
SESSION_KEY = web.RequestKey("session", Session)
FORM_KEY: web.RequestKey[Mapping[str, Any]] = web.RequestKey("form")


def _path_id(request: web.Request, key: str) -> str:
    """An id from the path, checked before it goes anywhere (a Location header included)."""
    value = request.match_info[key]
    if not ID_RE.fullmatch(value):
        raise web.HTTPNotFound(text=f"{value[:64]!r} is not an id this page knows")
    return value


def _see_other(location: str) -> web.Response:
    """Back to a page after a change (so a reload never repeats the change)."""
    return web.Response(status=303, headers={"Location": location})


@overload
def _field(form: Any, name: str, required: Literal[True] = True) -> str: ...
@overload
def _field(form: Any, name: str, required: bool) -> str | None: ...
def _field(form: Any, name: str, required: bool = True) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise web.HTTPBadRequest(text=f"the form lacks {name!r}")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS or not value.isprintable():
        raise web.HTTPBadRequest(text=f"the form's {name!r} is not a short line of text")
    return value


class UiServer:
    """The page server of one daemon. `start` never fails the daemon: a port in use leaves
    the page off with a sentence (`problem`) that `mocksync open` shows."""

    def __init__(self, agent: Any, control: ControlServer, *, port: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.agent = agent
        self.control = control
        self.port_wanted = port
        self.port: int | None = None
        self.clock = clock
        self.auth: UiAuth | None = None
        self.problem: str | None = None
        self._runner: web.AppRunner | None = None
        self._clients: set[_Client] = set()
        self._digest: str | None = None
        self._digest_task: asyncio.Task[None] | None = None
        self._sizes: dict[str, tuple[tuple[int, int, int], int]] = {}
        #: Admits only this user's connections, a bounded number (`gate` module docstring).
        self.gate = Gate(SECURITY_HEADERS)
        #: The path every page lives under, secret and new at each start; the session cookie
        #: is scoped to it (`PATH_SECRET_BYTES` says why).
        self.base = f"/s/{secrets.token_urlsafe(PATH_SECRET_BYTES)}/"
        self._jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        r = app.router
        b = self.base  # every route lives under the secret prefix (`PATH_SECRET_BYTES`)
        r.add_get(b + "auth", self._sign_in)
        r.add_get(b, self._overview)
        r.add_get(b + "env/{env}", self._env_page)
        r.add_get(b + "space/{space}", self._space_page)
        r.add_get(b + "events", self._events)
        r.add_get(b + "static/{name}", self._static)
        r.add_post(b + "reconnect", self._reconnect)
        r.add_post(b + "signout", self._sign_out)
        r.add_post(b + "env/{env}/resolve", self._resolve)
        r.add_post(b + "env/{env}/held", self._held)
        r.add_post(b + "space/{space}/invite", self._invite)
        r.add_post(b + "space/{space}/remove", self._remove)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               shutdown_timeout=STOP_TIMEOUT_S, handler_cancellation=True,
                               keepalive_timeout=IDLE_CONNECTION_S)
        await runner.setup()
        site = _GatedSite(runner, UI_HOST, self.port_wanted, self.gate)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self.problem = (f"the web page is off: port {self.port_wanted} on {UI_HOST} is in "
                            f"use ({exc.strerror or exc}); set another `ui_port` in config.toml "
                            "(0: any free port) or start the daemon with --ui-port, then "
                            "restart it")
            log.warning("%s", self.problem)
            return
        bound = runner.addresses  # the real port when `ui_port` is 0
        self.port = int(bound[0][1]) if bound else self.port_wanted
        self.auth = UiAuth(self.port)
        self._runner = runner
        self.agent.listeners.append(self.on_event)
        log.info("web page on http://%s:%s/ (`mocksync open` signs a browser in)", UI_HOST,
                 self.port)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.agent.listeners.remove(self.on_event)
        for c in list(self._clients):
            c.closing = True
            c.wake.set()
        if self._digest_task is not None:
            self._digest_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._digest_task
            self._digest_task = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str | None:
        """The page's address (with its secret path: give it only to whoever may sign in)."""
        return None if self.port is None else f"http://{UI_HOST}:{self.port}{self.base}"

    def open_url(self) -> dict[str, Any]:
        """A one-time sign-in address (the `ui_open` control method, for `mocksync open`)."""
        if self.auth is None or self.url is None:
            raise UiOff(self.problem or "the web page is not running")
        token = self.auth.mint(self.clock())
        return {"url": f"{self.url}auth?token={token}", "base": self.url,
                "expires_in_s": TOKEN_TTL_S}

    # ---------------------------------------------------------------- live updates
    def on_event(self, event: dict[str, Any]) -> None:
        """An agent event (a listener, on the loop): wake every live page."""
        kind = str(event.get("event") or event.get("type") or "change")
        for c in self._clients:
            if len(c.kinds) < 32:
                c.kinds.add(kind)
            c.wake.set()

    def _relay_digest(self) -> str:
        """A digest of what the pages show of the relay, peers and space membership (a join
        admitted by the join transport announces no event), minus what changes all the time
        (round trips): a change means the page is stale."""
        t = self.agent.transport
        st = t.status() if t is not None else {}
        relay = st.get("relay") or {}
        peers = sorted((str(p.get("device")), str(p.get("state")), str(p.get("via")),
                        json.dumps(p.get("presence") or p.get("env"), sort_keys=True,
                                   default=str))
                       for p in st.get("peers") or [])
        spaces = sorted((s.space_id, len(s.state.members), len(s.state.devices),
                         s.state.key_generation) for s in self.agent.spaces.spaces())
        text = json.dumps([relay.get("state"), relay.get("reason"), peers, spaces], default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    async def _watch_digest(self) -> None:
        while self._clients:
            with contextlib.suppress(Exception):  # a transport mid-restart: look again later
                d = self._relay_digest()
                if self._digest is not None and d != self._digest:
                    self.on_event({"event": "peers"})
                self._digest = d
            await asyncio.sleep(DIGEST_POLL_S)
        self._digest_task = None

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) >= MAX_EVENT_CLIENTS:
            return self._page_error(503, "Too many live pages",
                                    f"at most {MAX_EVENT_CLIENTS} live pages at once; close "
                                    "some tabs (this one still works, it just is not live)")
        cookie = request.cookies.get(self.auth.cookie_name, "")  # type: ignore[union-attr]
        client = _Client(cookie)
        resp = web.StreamResponse(headers={**SECURITY_HEADERS,
                                           "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self._clients.add(client)
        if self._digest_task is None:
            self._digest = None
            self._digest_task = asyncio.create_task(self._watch_digest(), name="ui-digest")
        try:
            await resp.write(b"retry: 1000\n\nevent: hello\ndata: {}\n\n")
            while True:
                try:
                    await within(KEEPALIVE_S, client.wake.wait())
                except TimeoutError:
                    if not self._still_signed_in(client):
                        break
                    await resp.write(b": keepalive\n\n")
                    continue
                client.wake.clear()
                if not self._still_signed_in(client):
                    break
                kinds, client.kinds = sorted(client.kinds), set()
                await resp.write(b"event: change\ndata: "
                                 + json.dumps({"kinds": kinds}).encode() + b"\n\n")
        except (ConnectionError, RuntimeError):
            pass  # the page went away
        finally:
            self._clients.discard(client)
        return resp

    def _still_signed_in(self, client: _Client) -> bool:
        """A live stream ends with its session (signed out, expired) or the server."""
        return (not client.closing and self.auth is not None
                and self.auth.session(client.cookie, self.clock()) is not None)

    # ---------------------------------------------------------------- the fences
    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        resp = await self._checked(request, handler)
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    async def _checked(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        auth = self.auth
        assert auth is not None
        problem = auth.host_problem(request.headers.get("Host"))
        if problem is not None:
            return self._page_error(403, "Refused", problem)
        change = request.method not in ("GET", "HEAD")
        problem = auth.origin_problem(request.headers.get("Origin"), change=change)
        if problem is not None:
            return self._page_error(403, "Refused", problem)
        if request.path == self.base + "auth":
            return await handler(request)
        # Outside the secret path nothing is served, whatever cookie comes along (a cookie
        # leaked to another port is useless without the path: `PATH_SECRET_BYTES`).
        inside = request.path.startswith(self.base)
        session = auth.session(request.cookies.get(auth.cookie_name), self.clock()) \
            if inside else None
        if session is None:
            return self._page_error(
                401, "Not signed in",
                "this page needs a session: run `mocksync open` on this machine and use the "
                "address it prints (sign-in links work once)")
        request[SESSION_KEY] = session
        if change:
            length = request.content_length
            if length is not None and length > MAX_BODY_BYTES:
                return self._page_error(413, "Too large",
                                        f"a form is at most {MAX_BODY_BYTES} bytes")
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                return self._page_error(413, "Too large",
                                        f"a form is at most {MAX_BODY_BYTES} bytes")
            token = request.headers.get("X-CSRF-Token") or form.get("csrf")
            if not auth.csrf_ok(session, token if isinstance(token, str) else None):
                return self._page_error(403, "Refused",
                                        "this change lacks the page's CSRF token (it did not "
                                        "come from this page); reload the page and try again")
            request[FORM_KEY] = form
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return self._page_error(exc.status, exc.reason, exc.text or exc.reason)

    # ---------------------------------------------------------------- rendering
    def _render(self, name: str, http_status: int = 200, **ctx: Any) -> web.Response:
        text = self._jinja.get_template(name).render(**ctx)
        return web.Response(status=http_status, text=text, content_type="text/html",
                            charset="utf-8")

    def _page_error(self, status: int, title: str, message: str) -> web.Response:
        return self._render("error.html", status, title=title, message=message)

    def _page(self, request: web.Request, name: str, live: str, **ctx: Any) -> web.Response:
        """The whole page, or only its live part (`?part=live`, what ui.js fetches)."""
        session: Session = request[SESSION_KEY]
        if request.query.get("part") == "live":
            return self._render(live, csrf=session.csrf, base=self.base, **ctx)
        return self._render(name, csrf=session.csrf, base=self.base, live_template=live,
                            notices=session.take_notices(), me=self._me(),
                            spaces=self._space_links(), path=request.path, **ctx)

    def _me(self) -> dict[str, Any]:
        ident = self.agent.identity
        return {"id": self.agent.device, "name": getattr(ident, "name", ""),
                "member": getattr(ident, "member_name", None)}

    def _space_links(self) -> list[dict[str, Any]]:
        return sorted(({"id": s.space_id, "name": s.name} for s in self.agent.spaces.spaces()),
                      key=lambda s: s["name"].casefold())

    # ---------------------------------------------------------------- sign-in
    async def _sign_in(self, request: web.Request) -> web.StreamResponse:
        auth = self.auth
        assert auth is not None
        try:
            session = auth.redeem(request.query.get("token"), self.clock())
        except UiAuthError as exc:
            return self._page_error(403, "Sign-in refused", str(exc))
        resp = _see_other(self.base)
        resp.set_cookie(auth.cookie_name, session.id, httponly=True, samesite="Strict",
                        path=self.base)
        return resp

    async def _sign_out(self, request: web.Request) -> web.StreamResponse:
        assert self.auth is not None
        self.auth.end(request[SESSION_KEY])
        resp = self._page_error(200, "Signed out", "run `mocksync open` to sign in again")
        resp.del_cookie(self.auth.cookie_name, path=self.base)
        return resp

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=(STATIC / name).read_bytes(), content_type=kind)

    # ---------------------------------------------------------------- overview
    async def _overview(self, request: web.Request) -> web.StreamResponse:
        from ..cli.daemoncmds import relay_text

        status = await self.control.call("status")
        who = (await self.control.call("who"))["who"]
        envs = status.get("environments") or []
        quotas = await self._quotas(envs)
        relay = status.get("relay") or {}
        counts: dict[str, int] = {}
        for e in envs:
            if e.get("space"):
                counts[e["space"]] = counts.get(e["space"], 0) + 1
        spaces = []
        for s in self.agent.spaces.spaces():
            plan = self.agent.spaces.plan(s.space_id)
            spaces.append({"id": s.space_id, "name": s.name, "kind": s.state.kind,
                           "role": s.state.role_of(self.agent.device) or "",
                           "members": len(s.state.members), "devices": len(s.state.devices),
                           "envs": counts.get(s.space_id, 0), "max_envs": plan.max_envs,
                           "plan": plan.name})
        spaces.sort(key=lambda s: s["name"].casefold())
        return self._page(
            request, "overview.html", "overview_live.html", title="Overview",
            status=status, relay=views.relay_view(relay, relay_text(relay)),
            peers=views.peer_rows(status.get("peers") or [], who, self._all_device_names()),
            envs=views.env_rows(envs, quotas), space_rows=spaces,
            conflicts=sum(int(e.get("conflicts") or 0) for e in envs),
            linked_problems=sum(len(views.linked_problems(e)) for e in envs))

    async def _quotas(self, envs: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
        """Each synced environment's size against its space's plan. The size is that of the
        compact JSON of the file on disk (what the plan counts; `status` names a linked
        file that tips it over), measured again only when the file changed."""
        out: dict[str, dict[str, Any] | None] = {}
        plans: dict[str, Any] = {}
        for e in envs:
            uuid, space, path = e.get("uuid"), e.get("space"), e.get("file")
            if not uuid or not space or not path:
                continue
            if space not in plans:
                plans[space] = self.agent.spaces.plan(space)
            size = await self._size(Path(path))
            plan = plans[space]
            out[uuid] = views.quota_view(size, plan.max_env_bytes, plan.name)
        return out

    async def _size(self, path: Path) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._sizes.get(str(path))
        if cached is not None and cached[0] == sig:
            return cached[1]
        if st.st_size > MAX_MEASURE_BYTES:
            size = st.st_size
        else:
            measured = await asyncio.to_thread(_compact_size_of, path)
            if measured is None:
                return None
            size = measured
        if len(self._sizes) >= MAX_SIZE_CACHE:
            self._sizes.pop(next(iter(self._sizes)))
        self._sizes[str(path)] = (sig, size)
        return size

    async def _reconnect(self, request: web.Request) -> web.StreamResponse:
        await self._act(request, "reconnect", {}, "reconnecting: the relay and peers are "
                        "being tried now and the folder rescanned")
        return _see_other(self.base)

    # ---------------------------------------------------------------- an environment
    def _env_entry(self, status: dict[str, Any], env: str) -> dict[str, Any]:
        for e in status.get("environments") or []:
            if e.get("uuid") == env and e.get("space"):
                return e
        raise web.HTTPNotFound(text=f"no synced environment {env[:64]!r} on this device")

    def _all_device_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for s in self.agent.spaces.spaces():
            names.update({d.id: d.name for d in s.state.devices.values()})
        return names

    def _device_names(self, space: str | None) -> dict[str, str]:
        sp = self.agent.spaces.get(space) if space else None
        if sp is None:
            return {}
        names = {d.id: d.name for d in sp.state.devices.values()}
        names.update({r.device: r.name for r in sp.state.removed_devices.values()})
        return names

    async def _env_page(self, request: web.Request) -> web.StreamResponse:
        env = _path_id(request, "env")
        status = await self.control.call("status")
        entry = self._env_entry(status, env)
        space = entry.get("space")
        names = self._device_names(space)
        members = {d: self.agent.spaces.member_name(space, d) or "" for d in names}
        changes = (await self.control.call("log", {"env": env}))["changesets"]
        conflicts = (await self.control.call("conflicts", {"env": env}))["conflicts"]
        quota = (await self._quotas([entry])).get(env)
        return self._page(
            request, "env.html", "env_live.html", title=entry.get("name") or env,
            env=views.env_rows([entry], {env: quota})[0],
            timeline=views.timeline(changes, names, self.agent.device),
            total_changes=len(changes),
            conflicts=views.conflict_rows(conflicts, self.agent.device, members, names),
            held=env in self.agent.holds, linked=views.linked_rows(entry))

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        env = _path_id(request, "env")
        form = request[FORM_KEY]
        take = _field(form, "take")
        if take not in ("ours", "theirs"):
            raise web.HTTPBadRequest(text="take must be 'ours' or 'theirs'")
        cid = _field(form, "id")
        await self._act(request, "resolve", {"id": cid, "take": take},
                        f"conflict resolved: took {take}")
        return _see_other(f"{self.base}env/{env}")

    async def _held(self, request: web.Request) -> web.StreamResponse:
        env = _path_id(request, "env")
        choice = _field(request[FORM_KEY], "choice")
        if choice not in ("keep", "discard"):
            raise web.HTTPBadRequest(text="choice must be 'keep' or 'discard'")
        await self._act(request, "resolve_env", {"env": env, "keep_local": choice == "keep"},
                        "kept this device's version" if choice == "keep" else
                        "took the team's version (this device's file went to the trash)")
        return _see_other(f"{self.base}env/{env}")

    async def _act(self, request: web.Request, method: str, params: dict[str, Any],
                   done: str) -> dict[str, Any] | None:
        """Call a control method; its refusal becomes a notice on the next page."""
        session: Session = request[SESSION_KEY]
        try:
            res = await self.control.call(method, params)
        except MocksyncError as exc:
            session.notify("error", str(exc))
            return None
        session.notify("ok", done)
        return res

    # ---------------------------------------------------------------- a space
    def _space(self, space: str) -> Any:
        sp = self.agent.spaces.get(space)
        if sp is None:
            raise web.HTTPNotFound(text=f"this device is in no space {space[:64]!r}")
        return sp

    async def _space_page(self, request: web.Request) -> web.StreamResponse:
        from ..agent.presence import online_devices
        from ..space.membership import ROLES

        sp = self._space(_path_id(request, "space"))
        try:
            online: set[str] | None = online_devices(
                (await self.control.call("who"))["who"])
        except MocksyncError:
            online = None
        st = sp.state
        envs = [e for e in (await self.control.call("status")).get("environments") or []
                if e.get("space") == sp.space_id]
        plan = self.agent.spaces.plan(sp.space_id)
        return self._page(
            request, "space.html", "space_live.html", title=sp.name,
            space={"id": sp.space_id, "name": sp.name, "kind": st.kind,
                   "relay": st.relay, "key_generation": st.key_generation,
                   "admin": st.is_admin(self.agent.device), "plan": plan.name,
                   "max_envs": plan.max_envs,
                   "max_devices_per_member": plan.max_devices_per_member},
            members=views.member_rows(st, self.agent.device, online),
            envs=views.env_rows(envs, {}), roles=ROLES)

    async def _invite(self, request: web.Request) -> web.StreamResponse:
        from ..space.invite import DEFAULT_INVITE_LIFETIME_S
        from ..space.membership import ROLES
        from ..spaceio import actions

        sp = self._space(_path_id(request, "space"))
        form = request[FORM_KEY]
        role = _field(form, "role", required=False) or "editor"
        if role not in ROLES:
            raise web.HTTPBadRequest(text=f"role must be one of {', '.join(ROLES)}")
        own = form.get("device") == "yes"
        session: Session = request[SESSION_KEY]
        relay = None if sp.state.relay else self.agent.settings.relay
        try:
            rec, token = await asyncio.to_thread(
                actions.issue_invite, self.agent.home, self.agent.identity, sp.space_id,
                role=role, lifetime_s=DEFAULT_INVITE_LIFETIME_S, own_device=own, relay=relay)
        except MocksyncError as exc:
            session.notify("error", str(exc))
            return _see_other(f"{self.base}space/{sp.space_id}")
        with contextlib.suppress(MocksyncError):
            await self.control.call("membership")  # announce it on the LAN now, as the CLI does
        who = "another device of yours" if rec.member else f"a new {rec.role}"
        session.notify("ok", f"one-time invite to {sp.name!r} for {who}, valid until "
                       f"{views.when_text(rec.expires)}; on the new device run "
                       "`mocksync join TOKEN` with:", secret=token.encode())
        return _see_other(f"{self.base}space/{sp.space_id}")

    async def _remove(self, request: web.Request) -> web.StreamResponse:
        from ..spaceio import actions

        sp = self._space(_path_id(request, "space"))
        target = _field(request[FORM_KEY], "target")
        session: Session = request[SESSION_KEY]
        try:
            res = await asyncio.to_thread(actions.remove, self.agent.home, self.agent.identity,
                                          sp.space_id, target)
        except MocksyncError as exc:
            session.notify("error", str(exc))
            return _see_other(f"{self.base}space/{sp.space_id}")
        with contextlib.suppress(MocksyncError):
            await self.control.call("membership")  # takes effect now, relay included
        session.notify("ok", f"removed {res.target.label} from {sp.name!r}; content key "
                       f"rotated to generation {res.generation}")
        self.on_event({"event": "membership"})
        return _see_other(f"{self.base}space/{sp.space_id}")


def _compact_size_of(path: Path) -> int | None:
    """Bytes of the file's document as compact JSON (what plans count), off the loop."""
    from ..agent.daemon import quick_compact_size

    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return quick_compact_size(doc) if isinstance(doc, dict) else None


__all__ = ["MAX_BODY_BYTES", "MAX_EVENT_CLIENTS", "UI_HOST", "UiServer"]
