"""Files an environment links to (issue #7): which ones, which may be synced, and what to do.

Mockoon reads some files by path: a response's or callback's body when `bodyType` is FILE
(`filePath`), and the TLS files of `tlsOptions` (`pfxPath`, `certPath`, `keyPath`, `caPath`).
Mockoon Pro does not sync them, so teams mail fixtures and certificates around. We do.

Why each file is an entity of the environment's own state (kind `file`), not a side channel:
it then rides in ordinary change sets, so it is signed, chained, end-to-end encrypted by the
relay transport, chunked by the LAN transport, kept by the relay for offline devices and
merged by the same last-writer-wins registers as everything else. Its uuid is derived from
the environment's uuid and the normalised relative path, so every device names the same file
the same way without asking anyone. Registers: `("v","path")` the relative path and
`("v","content")` = {sha256, size, mode, b64}: the whole file is one register, so the last
writer wins for the whole file and a concurrent loser is a Conflict like any other (listed by
`mocksync conflicts`, recoverable with `resolve --take`). A deleted file is content `null`,
never an entity delete: a tombstone would stop the path from ever coming back. `render`
ignores the kind, so the environment JSON is untouched.

Which paths are synced: relative ones that stay inside the folder, resolved against the
environment file's folder (Mockoon's rule). An absolute path, one that climbs out with `..`,
or a template (`{{...}}`, only known when a request arrives) is left alone and `status` says
why and how to fix it (`mocksync adopt ENV`).

Everything here is pure: the agent (`agent.linked`) reads and writes the disk and calls
`decide` with three content hashes per path.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import posixpath
import re
import shlex
import stat
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from ..errors import LimitError
from .errors import LinkedFileError
from .ops import Create, Op, Set
from .schema import CALLBACK, FILE, LIST, RESPONSE, ROUTE
from .state import ABSENT, Entity, Origin, State, happened_before

#: Largest linked file synced. A file travels base64-encoded in one change set, and the relay
#: stores one change set of up to 20 MiB of ciphertext (relay.protocol.MAX_CIPHERTEXT_BYTES):
#: 12 MiB is 16 MiB as base64, which fits with room for the envelope even when it does not
#: compress. Also above every plan's environment size (15 MB enterprise), so a plan refuses a
#: file long before this limit does.
MAX_LINKED_FILE_BYTES = 12 * 1024 * 1024
#: Most distinct linked files synced per environment (the rest are reported, not synced).
MAX_LINKED_FILES = 128
#: Longest linked path considered, in characters.
MAX_LINKED_PATH_CHARS = 1024
#: Files committed together in one change set, up to this many bytes (a bigger file goes alone).
LINKED_BATCH_BYTES = 4 * 1024 * 1024

PATH_REG = ("v", "path")
CONTENT_REG = ("v", "content")
#: Mode given to private key files (TLS `keyPath`, `pfxPath`) wherever they are written.
PRIVATE_MODE = 0o600
#: Permission bits a synced file may get from a teammate: never an exec bit (a planted hook or
#: script must never be runnable), group/other write, setuid, setgid or sticky; the owner can
#: always read and write it (so later versions can replace it). So at most 0644.
MODE_ALLOWED = 0o644
MODE_REQUIRED = 0o600
#: Longest path a refusal shows in `status` (a hostile path register may be huge).
MAX_SHOWN_PATH_CHARS = 200
#: Most refused files named per environment in `status`; the rest are counted in one row.
MAX_REFUSED_SHOWN = 32
#: Longest file name stem the daemon gives an environment file that a teammate shared.
MAX_ENV_STEM_CHARS = 60

#: Namespace of linked-file uuids (a fixed random value: changing it renames every file).
_NAMESPACE = uuidlib.UUID("5b0f6a52-7c1e-4c55-9a43-0f1d6c2b7e91")

# Reference kinds and the fields that hold paths.
REF_RESPONSE, REF_CALLBACK, REF_TLS = "response", "callback", "tls"
TLS_FIELDS = ("pfxPath", "certPath", "keyPath", "caPath")
PRIVATE_FIELDS = frozenset({"pfxPath", "keyPath"})
_TLS_BY_TYPE = {"CERT": ("certPath", "keyPath", "caPath"), "PFX": ("pfxPath", "caPath")}

# Link states shown by `status` (`linked[].state`).
SYNCED = "synced"
MISSING = "missing"
OUTSIDE = "outside"
TOO_LARGE = "too_large"
TOO_MANY = "too_many"
PENDING = "pending"
HELD = "held"
INVALID = "invalid"
#: A teammate's file that is never written here (the path the model does not allow), or that
#: this device cannot write safely (a symlink on the way).
REFUSED = "refused"
#: A teammate's version not written because a local file that was never synced is in the way.
CONFLICT = "conflict"
#: A local file at a path a teammate's edit linked (not this device's), that the team never
#: had from here: never read nor sent until the user shares it here (`judge_local_file`).
UNCONFIRMED = "unconfirmed"

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_WIN_ABS = re.compile(r"^(?:[A-Za-z]:|[\\/]{2})")


@dataclass(frozen=True)
class LinkRef:
    """One place in an environment that names a file."""

    kind: str  # response | callback | tls
    entity: str  # uuid of the response, callback, or the environment (tls)
    field: str  # filePath | pfxPath | certPath | keyPath | caPath
    path: str  # as written in the environment
    #: Who made this reference, known only for one taken from a State (None from a document):
    #: the change set that wrote its path register, and those that wrote the registers that
    #: make it live (a body's `bodyType`; `tlsOptions`, its `enabled` and `type`). Not part of
    #: equality: the same reference is the same whoever wrote it. See `linked_by`.
    origin: Origin | None = dataclasses.field(default=None, compare=False)
    armed_by: tuple[Origin | None, ...] = dataclasses.field(default=(), compare=False)

    @property
    def private(self) -> bool:
        return self.kind == REF_TLS and self.field in PRIVATE_FIELDS


@dataclass
class Link:
    """One distinct file an environment names, with every reference to it and its fate."""

    path: str  # as first written in the environment
    rel: str | None  # normalised relative path when synced
    state: str  # SYNCED (may be synced) or OUTSIDE / TOO_MANY (never read)
    reason: str = ""
    refs: list[LinkRef] = field(default_factory=list)

    @property
    def private(self) -> bool:
        return any(r.private for r in self.refs)

    @property
    def adoptable(self) -> bool:
        """`mocksync adopt` can copy it in: a fixed path that is absolute or escapes."""
        return self.state == OUTSIDE and "{{" not in self.path and "\x00" not in self.path


# ---------------------------------------------------------------------------- paths


def normalise(path: str) -> tuple[str | None, str]:
    """A path as written in an environment -> (relative path to sync, "") or (None, why not).

    Backslashes count as separators (an environment saved on Windows names the same file).
    """
    if not isinstance(path, str) or not path:
        return None, "empty path"
    if len(path) > MAX_LINKED_PATH_CHARS:
        return None, f"the path is longer than {MAX_LINKED_PATH_CHARS} characters"
    if "{{" in path:
        return None, "the path is a template ({{...}}), only known when a request arrives"
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        return None, "the path holds control characters"
    if path.startswith(("/", "~")) or _WIN_ABS.match(path):
        return None, "the path is absolute, so it names a file on this machine only"
    p = posixpath.normpath(path.replace("\\", "/"))
    if p == "." or p.endswith("/"):
        return None, "the path names a folder, not a file"
    if p == ".." or p.startswith("../"):
        return None, "the path leaves the synced folder (..)"
    hidden = next((part for part in p.split("/") if part.startswith(".")), None)
    if hidden is not None:
        return None, (f"a part of the path ({hidden}) starts with '.': hidden files and folders "
                      "(.git, .ssh, .env, ...) are never synced")
    return p, ""


def file_uuid(env_uuid: str, rel: str) -> str:
    """The linked file's entity uuid: the same on every device for the same env and path."""
    return str(uuidlib.uuid5(_NAMESPACE, f"{env_uuid}\x00{rel}"))


# ---------------------------------------------------------------------------- references


def linked_paths(doc: dict[str, Any]) -> list[LinkRef]:
    """Every file the environment document names, in document order.

    Only what Mockoon would read: FILE bodies of responses and callbacks, and the TLS files of
    an enabled `tlsOptions` of the type it names (all four fields for an unknown type).
    """
    return linked_paths_memo(doc, None)


def linked_paths_memo(doc: dict[str, Any],
                      memo: dict[int, tuple[Any, list[LinkRef]]] | None) -> list[LinkRef]:
    """`linked_paths(doc)`, with `memo` (the caller's, kept between calls): each route's
    references by the route object's identity. The parse of a save shares every untouched
    route object with the version before (`model.reparse`), so a save of a 15 MB
    environment looks into the responses of the one route it changed, not all (issue 15).
    The memo keeps only the routes of the last document (and holds them, so no identity is
    reused while it is known)."""
    refs: list[LinkRef] = []
    if not isinstance(doc, dict):
        return refs
    kept: dict[int, tuple[Any, list[LinkRef]]] = {}
    known = memo if memo is not None else {}
    for route in doc.get("routes") or ():
        if not isinstance(route, dict):
            continue
        key = id(route)
        hit = known.get(key)
        if hit is None or hit[0] is not route:
            hit = (route, [ref for r in route.get("responses") or ()
                           if (ref := _body_ref(r, REF_RESPONSE)) is not None])
        kept[key] = hit  # (the memo's own entry when the route is unchanged: no new tuple)
        if hit[1]:
            refs += hit[1]
    if memo is not None:
        memo.clear()
        memo.update(kept)
    for c in doc.get("callbacks") or ():
        ref = _body_ref(c, REF_CALLBACK)
        if ref is not None:
            refs.append(ref)
    tls = doc.get("tlsOptions")
    if isinstance(tls, dict) and tls.get("enabled") is True:
        for f in _TLS_BY_TYPE.get(tls.get("type"), TLS_FIELDS):  # type: ignore[arg-type]
            v = tls.get(f)
            if isinstance(v, str) and v:
                refs.append(LinkRef(REF_TLS, str(doc.get("uuid", "")), f, v))
    return refs


def _body_ref(obj: Any, kind: str) -> LinkRef | None:
    if not isinstance(obj, dict) or obj.get("bodyType") != "FILE":
        return None
    p = obj.get("filePath")
    if not isinstance(p, str) or not p:
        return None
    return LinkRef(kind, str(obj.get("uuid", "")), "filePath", p)


def _pos(e: Entity) -> tuple[str, str]:
    v = e.get(("p", LIST), None)
    if isinstance(v, list | tuple) and len(v) == 2 and isinstance(v[1], str):
        return (str(v[0]), v[1])
    return ("", "~")


_BODY_TYPE, _FILE_PATH = ("v", "bodyType"), ("v", "filePath")
_TLS = ("v", "tlsOptions")
#: The registers that make a TLS file reference live besides its path (see `LinkRef`).
_TLS_ARMING = (_TLS, (*_TLS, "enabled"), (*_TLS, "type"))


def linked_paths_of_state(state: State) -> list[LinkRef]:
    """`linked_paths(render(state))` without rendering: the same references in the same order
    (routes, then responses, by their list places; then callbacks). One pass that looks only
    at FILE bodies, so it stays cheap on a 15 MB environment (it runs after every change)."""
    env = state.entity(state.env_uuid)
    if env is None or not env.live:
        return []
    responses: list[tuple[tuple[str, ...], LinkRef]] = []
    callbacks: list[tuple[tuple[str, ...], LinkRef]] = []
    for e in state.entities.values():
        if e.kind not in (RESPONSE, CALLBACK) or not e.live:
            continue
        bt = e.regs.get(_BODY_TYPE)
        if bt is None or bt.value != "FILE":
            continue
        fp = e.regs.get(_FILE_PATH)
        if fp is None or not isinstance(fp.value, str) or not fp.value:
            continue
        route, key = _pos(e)
        if e.kind == CALLBACK:
            callbacks.append(((key, e.uuid), LinkRef(REF_CALLBACK, e.uuid, "filePath", fp.value,
                                                     fp.origin, (bt.origin,))))
            continue
        parent = state.entities.get(route)
        if parent is None or parent.kind != ROUTE or not parent.live:
            continue  # not rendered: its route is gone
        responses.append(((_pos(parent)[1], parent.uuid, key, e.uuid),
                          LinkRef(REF_RESPONSE, e.uuid, "filePath", fp.value, fp.origin,
                                  (bt.origin,))))
    refs = [r for _k, r in sorted(responses, key=lambda x: x[0])]
    refs += [r for _k, r in sorted(callbacks, key=lambda x: x[0])]
    tls = env.get(_TLS, None)
    if isinstance(tls, dict):
        tls = {rid[2]: r.value for rid, r in env.regs.items()
               if len(rid) == 3 and rid[:2] == _TLS and r.value is not ABSENT}
    armed = tuple(env.regs[rid].origin for rid in _TLS_ARMING if rid in env.regs)
    for r in linked_paths({"uuid": state.env_uuid, "tlsOptions": tls}):
        reg = env.regs.get((*_TLS, r.field))
        refs.append(replace(r, origin=None if reg is None else reg.origin, armed_by=armed))
    return refs


def link_watch(state: State, refs: list[LinkRef]) -> frozenset[str]:
    """Entities whose touch may change `linked_paths_of_state(state)` (made into `refs`):
    the referencing responses, callbacks and environment (TLS) themselves (a body no longer
    FILE), and the route of every live FILE response (deleting or restoring a route hides
    or shows its responses; its place orders them). See `links_touched`."""
    out = {r.entity for r in refs}
    for e in state.entities.values():
        if e.kind == RESPONSE and e.live:
            bt = e.regs.get(_BODY_TYPE)
            if bt is not None and bt.value == "FILE":
                out.add(_pos(e)[0])
    return frozenset(out)


def tls_registers(state: State) -> tuple[Any, ...]:
    """The environment's `tlsOptions` registers (value and writer), which its TLS links are
    made of: compared by `links_touched` when the environment itself was touched."""
    env = state.entity(state.env_uuid)
    if env is None:
        return ()
    return tuple((rid, r.value, r.origin) for rid, r in env.regs.items() if rid[:2] == _TLS)


def links_touched(state: State, touched: Iterable[str], watched: frozenset[str],
                  tls: tuple[Any, ...] = ()) -> bool:
    """May touching `touched` (`State.touched_since`) have changed the linked paths or the
    file entities of `state`, since a view of them whose `link_watch` was `watched` and
    whose `tls_registers` were `tls`? False for the everyday edit (a label, a body, a
    route's path, the port): the view is kept, and the walk of every entity it took is not
    taken again (issue 15)."""
    env_uuid = state.env_uuid
    for u in touched:
        e = state.entities.get(u)
        if e is None or u in watched or e.kind == FILE:
            return True
        if e.kind in (RESPONSE, CALLBACK):
            bt = e.regs.get(_BODY_TYPE)
            if bt is not None and bt.value == "FILE":
                return True
        elif u == env_uuid and tls_registers(state) != tls:
            return True
    return False


def plan_links(refs: list[LinkRef], env_label: str = "ENV") -> list[Link]:
    """Group references by file and decide which may be synced (at most MAX_LINKED_FILES).

    `env_label` is how the fix-it sentences name the environment (`mocksync adopt LABEL`).
    """
    links: dict[str, Link] = {}
    synced = 0
    for ref in refs:
        rel, why = normalise(ref.path)
        key = rel if rel is not None else "\x00" + ref.path
        link = links.get(key)
        if link is None:
            if rel is None:
                fix = (f"run `mocksync adopt {env_label}` to copy it next to the environment "
                       "and link it by a relative path" if "{{" not in ref.path else
                       "link the files teammates need by fixed relative paths")
                link = Link(ref.path, None, OUTSIDE, f"not synced: {why}; {fix}")
            elif synced >= MAX_LINKED_FILES:
                link = Link(ref.path, rel, TOO_MANY, (
                    f"not synced: an environment syncs at most {MAX_LINKED_FILES} linked files"))
            else:
                link = Link(ref.path, rel, SYNCED)
                synced += 1
            links[key] = link
        link.refs.append(ref)
    return list(links.values())


def private_rels(links: list[Link]) -> set[str]:
    return {lk.rel for lk in links if lk.rel is not None and lk.private}


# ---------------------------------------------------------------------------- content


def file_mode(st_mode: int, private: bool) -> int:
    """The mode a synced copy gets (and is recorded with): 0600 for private keys; otherwise
    the file's permission bits within MODE_ALLOWED, owner read/write always set."""
    if private:
        return PRIVATE_MODE
    return (stat.S_IMODE(st_mode) & MODE_ALLOWED) | MODE_REQUIRED


def content_value(data: bytes, st_mode: int, private: bool) -> dict[str, Any]:
    """The `("v","content")` register value for `data`."""
    if len(data) > MAX_LINKED_FILE_BYTES:
        raise LimitError(f"a linked file of {len(data)} bytes is over the "
                         f"{MAX_LINKED_FILE_BYTES} byte limit")
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "mode": file_mode(st_mode, private), "b64": base64.b64encode(data).decode("ascii")}


def content_sha(value: Any) -> str | None:
    """The sha256 a content register names (None when absent, null or malformed)."""
    if isinstance(value, dict):
        sha = value.get("sha256")
        if isinstance(sha, str) and _SHA_RE.fullmatch(sha):
            return sha
    return None


def decode_content(value: Any, rel: str) -> tuple[bytes, int]:
    """A content register from a peer -> (bytes, mode). Checked: shape, size limit, base64,
    length and hash, so a corrupt or hostile value is refused before anything is written."""
    bad = f"the synced copy of {rel} is malformed"
    if not isinstance(value, dict):
        raise LinkedFileError(f"{bad}: not an object")
    sha, size, mode, b64 = (value.get(k) for k in ("sha256", "size", "mode", "b64"))
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise LinkedFileError(f"{bad}: no sha256")
    if type(size) is not int or not 0 <= size <= MAX_LINKED_FILE_BYTES:
        raise LinkedFileError(f"{bad}: size is not 0..{MAX_LINKED_FILE_BYTES}")
    if type(mode) is not int or not 0 <= mode <= 0o7777:
        raise LinkedFileError(f"{bad}: mode is not a permission value")
    if not isinstance(b64, str) or len(b64) > 4 * (MAX_LINKED_FILE_BYTES // 3 + 1):
        raise LinkedFileError(f"{bad}: no content")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise LinkedFileError(f"{bad}: content is not base64") from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise LinkedFileError(f"{bad}: content does not match its size and sha256")
    return data, mode


def summary(value: Any) -> Any:
    """A content value without its bytes (for conflicts lists and logs: never file contents)."""
    if isinstance(value, dict) and "b64" in value:
        return {k: value[k] for k in ("sha256", "size", "mode") if k in value}
    return value


def file_entities(state: State) -> dict[str, Entity]:
    """Linked-file entities by relative path: only those whose path register is a valid
    relative path and whose uuid is the one derived from it (a peer cannot aim one uuid at
    another path, or two entities at one path)."""
    out: dict[str, Entity] = {}
    for e in state.live(FILE):
        rel = e.get(PATH_REG, None)
        if not isinstance(rel, str):
            continue
        norm, _why = normalise(rel)
        if norm != rel or file_uuid(state.env_uuid, rel) != e.uuid:
            continue
        out[rel] = e
    return out


# ---------------------------------------------------------------------------- files from peers


@dataclass(frozen=True)
class PeerFileVerdict:
    """Whether a teammate's file entity may be written on this device, and how.

    Why a verdict and not just `file_entities`: a refused file must be named in `status`
    with its reason (a member planting `.git/hooks/pre-commit` must be seen, not silently
    dropped), and the writer needs the mode to use."""

    allowed: bool
    rel: str | None  # the relative path to write (None when refused)
    mode: int  # permission bits to write with (0 when refused)
    reason: str  # why refused, a sentence ("" when allowed)


def peer_mode(mode: Any, private: bool) -> int:
    """The mode a teammate's file lands with: 0600 for private keys (or a file recorded 0600),
    otherwise its bits within MODE_ALLOWED (so never an exec bit: at most 0644)."""
    if private or mode == PRIVATE_MODE:
        return PRIVATE_MODE
    if type(mode) is not int:
        return MODE_ALLOWED
    return file_mode(mode, False)


def shown_path(path: Any) -> str:
    """A path register as `status` shows it: printable, bounded (a hostile one may be huge)."""
    if not isinstance(path, str):
        return f"(a path that is not text: {type(path).__name__})"
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in path[:MAX_SHOWN_PATH_CHARS])
    return text + ("..." if len(path) > MAX_SHOWN_PATH_CHARS else "")


def judge_peer_file(env_uuid: str, entity_uuid: str, path: Any, mode: Any,
                    referenced: set[str] | frozenset[str],
                    private: set[str] | frozenset[str] = frozenset()) -> PeerFileVerdict:
    """May a teammate's file entity (`path` register, recorded `mode`) be written here?

    `referenced`: the normalised relative paths the environment links (FILE bodies, TLS
    files; `plan_links` SYNCED rels); `private`: those that are private keys. Allowed only
    for a relative path in normal form, inside the folder, with no part starting with `.`,
    under the uuid derived from it, that the environment links; the mode never has an exec
    bit. The disk checks (symlinks, a local file in the way) come after, in the writer and
    `decide`.
    """

    def no(reason: str) -> PeerFileVerdict:
        return PeerFileVerdict(False, None, 0, f"not written: {reason}")

    if not isinstance(path, str):
        return no("its path is not text")
    rel, why = normalise(path)
    if rel is None:
        return no(why)
    if rel != path:
        return no(f"the path is not in normal form (it names {shown_path(rel)})")
    if file_uuid(env_uuid, rel) != entity_uuid:
        return no("its id is not the one derived from its path (a forged file entity)")
    if rel not in referenced:
        return no("no environment links this path (only files a FILE body or the TLS options "
                  "name are written)")
    return PeerFileVerdict(True, rel, peer_mode(mode, rel in private), "")


def peer_file_refusals(state: State, referenced: set[str] | frozenset[str],
                       private: set[str] | frozenset[str] = frozenset(),
                       seen: dict[str, str] | None = None,
                       files: Iterable[Entity] | None = None) -> list[dict[str, Any]]:
    """`status` rows (`linked[]`, state REFUSED) for the teammates' files that are never
    written here, with why; at most MAX_REFUSED_SHOWN named, the rest counted in one row.

    Not listed: deletions (nothing to write), and files this device had in sync while the
    environment linked them (`seen`: a fixture the environment stopped linking, kept as is).
    `files`: the state's live file entities, when the caller has them (spares a walk).
    """
    seen = seen or {}
    rows: list[dict[str, Any]] = []
    for e in sorted(state.live(FILE) if files is None else files, key=lambda x: x.uuid):
        content = e.get(CONTENT_REG, None)
        if not isinstance(content, dict):
            continue
        path = e.get(PATH_REG, None)
        v = judge_peer_file(state.env_uuid, e.uuid, path, content.get("mode"), referenced,
                            private)
        if v.allowed or (isinstance(path, str) and path in seen):
            continue
        rows.append({"path": shown_path(path), "rel": None, "state": REFUSED,
                     "reason": v.reason})
    if len(rows) > MAX_REFUSED_SHOWN:
        more = len(rows) - MAX_REFUSED_SHOWN
        rows = rows[:MAX_REFUSED_SHOWN] + [{
            "path": f"({more} more files)", "rel": None, "state": REFUSED,
            "reason": f"not written: {more} more files from teammates that the environment "
                      "does not allow"}]
    return rows


# ---------------------------------------------------------------------------- local files

#: Looks up what a change set had seen when it was made (`State.deps_of`).
DepsOf = Callable[[Origin], "dict[str, int] | None"]


def linked_by(ref: LinkRef, device: str, deps_of: DepsOf) -> bool:
    """Did `device` make this reference: its own change set wrote the path register, while the
    reference was live in its view (each register that arms it was written by `device` too,
    or had reached it when it wrote the path)?

    Why the arming registers count: a teammate who flips a response to a FILE body whose
    `filePath` this device typed long ago (Mockoon keeps it while the body is inline), or who
    enables TLS options this device filled in, links a local file as surely as one who writes
    the path. Why causality and not stamps: a stamp is its writer's clock, which a hostile
    member chooses; `deps` say what the path's writer had actually seen.
    """
    origin = ref.origin
    if origin is None or origin[0] != device:
        return False
    deps: dict[str, int] | None = None
    for armed in ref.armed_by:
        if armed is None or armed[0] == device:
            continue  # (a snapshot's baseline precedes every write; our own writes are ours)
        if deps is None:
            deps = deps_of(origin) or {}
        if not happened_before(armed, origin, deps):
            return False
    return True


def linked_here(links: list[Link], device: str, deps_of: DepsOf) -> set[str]:
    """The synced linked paths that `device` linked itself, by any one of their references."""
    return {lk.rel for lk in links if lk.state == SYNCED and lk.rel is not None
            and any(linked_by(r, device, deps_of) for r in lk.refs)}


@dataclass(frozen=True)
class LocalFileVerdict:
    """Whether the local file at a linked path may be opened here at all.

    Why a verdict with a sentence: a file held back must be named in `status` with how to
    share it on purpose, not silently left out."""

    readable: bool
    reason: str  # a sentence for `status` ("" when readable)


def judge_local_file(rel: str, team: str, seen: str | None, *, mine: bool, had: bool = False,
                     env_label: str = "ENV") -> LocalFileVerdict:
    """May this device open the local file at linked path `rel` (hash it, send it if new)?

    Issue #12: a member who links a path where a teammate keeps an unshared file
    (`notes.txt`, `secrets/token.txt`) and sends no content for it must never receive it.
    `team`: `team_marker` of the file entity; `seen`: the hash this device last had in sync.
    Readable when (a) `mine`: this device linked the path itself (`linked_here`): its user
    linked it; (b) `seen`: the file there is the synced one (written here from the team's
    version, found identical to it, or committed from here), or `had`: it was, until it
    was deleted (here or by the team) while the path stayed linked, so a file made there
    again is that fixture coming back; or (c) the team has content for the path: the bytes
    are then only compared with it (equal: in sync; different: a CLASH, never sent).
    Otherwise the only use of the bytes would be to send them: nothing is read, and the path
    is UNCONFIRMED until the user shares it here.
    """
    if mine or had or seen is not None or team not in (NO_ENTITY, DELETED):
        return LocalFileVerdict(True, "")
    return LocalFileVerdict(False, (
        f"not read or sent: a teammate's edit linked {shown_path(rel)}, and the file here was "
        "never shared from this device. To share it, run `mocksync adopt "
        f"{env_label} {shlex.quote(rel)}` (or link it again yourself); to keep it private, "
        "leave it or change the link"))


def relink_ops(env_uuid: str, refs: list[LinkRef]) -> list[Op]:
    """The ops by which this device links `refs` itself: each path register written again
    with the value it holds, signed by this device, so `linked_by` then names it (and, by
    its deps, the arming registers it had seen). How `mocksync adopt ENV PATH` shares, on
    purpose, a local file a teammate linked."""
    ops: list[Op] = []
    for ref in refs:
        if ref.kind == REF_TLS:
            ops.append(Set(env_uuid, (*_TLS, ref.field), ref.path))
        else:
            ops.append(Set(ref.entity, _FILE_PATH, ref.path))
    return ops


def env_file_stem(name: Any) -> str:
    """The file name stem (without `.json`) for an environment a teammate shared, from its
    name: letters, digits, `-` and `_` only, so never a separator, a `.` part or a hidden
    name, and at most MAX_ENV_STEM_CHARS; "environment" when nothing is left."""
    text = name if isinstance(name, str) else ""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower()).strip("-")
    return slug[:MAX_ENV_STEM_CHARS].strip("-") or "environment"


def linked_bytes(state: State) -> tuple[int, int]:
    """(count, bytes) of the linked files the state holds content for (for quotas)."""
    n = total = 0
    for e in file_entities(state).values():
        v = e.get(CONTENT_REG, None)
        if isinstance(v, dict) and type(v.get("size")) is int:
            n += 1
            total += v["size"]
    return n, total


def create_op(env_uuid: str, rel: str, value: Any) -> Create:
    return Create(file_uuid(env_uuid, rel), FILE, [(PATH_REG, rel), (CONTENT_REG, value)])


def set_op(env_uuid: str, rel: str, value: Any) -> Set:
    return Set(file_uuid(env_uuid, rel), CONTENT_REG, value)


# ---------------------------------------------------------------------------- decisions


class Action(Enum):
    NOTHING = "nothing"
    ADOPT = "adopt"  # disk and state agree: remember that hash as seen
    FORGET = "forget"  # gone everywhere: forget the seen hash
    COMMIT = "commit"  # a local change (new, edited or deleted file) goes to the team
    COMMIT_OVER = "commit_over"  # local and team both changed it: local wins, team's is a conflict
    WRITE = "write"  # the team's version goes to disk
    REMOVE = "remove"  # the team deleted it: remove the local copy (to the trash)
    #: A local file this device never synced is where the team's version would go: nothing
    #: is written over it; it is a conflict shown in `status` (move the file away to get the
    #: team's version).
    CLASH = "clash"
    #: A local file the team never had from here, at a path a teammate linked: never read
    #: nor sent; shown in `status` until the user shares it (`judge_local_file`, issue #12).
    UNCONFIRMED = "unconfirmed"


#: State content markers for `decide` besides a sha256.
NO_ENTITY = "absent"
DELETED = "deleted"
#: `decide`'s `disk` for a file that is there but was not opened (`judge_local_file`).
UNREAD = "unread"


def decide(team: str, disk: str | None, seen: str | None, *, local: bool,
           referenced: bool = True, confirmed: bool = True) -> Action:
    """What to do for one linked file.

    `team`: the state's content hash, NO_ENTITY or DELETED; `disk`: the file's hash now, None
    when missing; `seen`: the hash this device last had in sync with the team (wrote, read or
    committed), None if never. `local`: the trigger is a local one (a save, a file event, a
    scan) that may commit; a remote change only ever writes, so a device catching up never
    pushes a stale copy over the team's. `referenced`: the environment still links the file;
    an unreferenced one may still be deleted (a rename), never committed with content and
    never written (issue #12: a teammate cannot plant a file the environment does not name).
    A local file the team never had from here is never overwritten (CLASH). `confirmed`:
    this device linked the path itself or had the file there in sync (`judge_local_file`'s
    `mine` or `had`); when not, a local file the team never had from here is never
    committed (UNCONFIRMED; `judge_local_file` keeps it unread, `disk` is then UNREAD).
    """
    if disk is not None and disk == team:
        return Action.NOTHING if seen == disk else Action.ADOPT
    if disk is None and team in (NO_ENTITY, DELETED):
        return Action.NOTHING if seen is None else Action.FORGET
    if disk == seen:  # unchanged here since the last sync
        if team == NO_ENTITY:  # (disk is present) the team never had it
            return Action.COMMIT if local and referenced else Action.NOTHING
        if team == DELETED:
            return Action.REMOVE
        return Action.WRITE if referenced else Action.NOTHING
    if seen is None:  # first contact with a local copy the team never saw from here
        if team in (NO_ENTITY, DELETED):
            if referenced and not confirmed:
                return Action.UNCONFIRMED  # a teammate linked it: never sent (issue #12)
            return Action.COMMIT if local and referenced else Action.NOTHING
        return Action.CLASH if referenced else Action.NOTHING
    if disk is None:  # deleted here
        if team == seen:
            return Action.COMMIT if local else Action.NOTHING
        if team in (NO_ENTITY, DELETED) or not referenced:
            return Action.FORGET
        return Action.WRITE  # the team changed it meanwhile: keep the newer content
    # edited here
    if not local or not referenced:
        return Action.NOTHING
    if team in (seen, NO_ENTITY):
        return Action.COMMIT
    return Action.COMMIT_OVER


def team_marker(entity: Entity | None) -> str:
    """`decide`'s `team` argument for a file entity (or None)."""
    if entity is None:
        return NO_ENTITY
    v = entity.get(CONTENT_REG)
    if v is ABSENT:
        return NO_ENTITY
    if v is None:
        return DELETED
    return content_sha(v) or DELETED


def quota_reason(reason: str, n_files: int, files_bytes: int) -> str:
    """A plan's size refusal, saying that linked files count (when there are any)."""
    if n_files <= 0:
        return reason
    from ..units import human_bytes

    files = "1 linked file" if n_files == 1 else f"{n_files} linked files"
    return (f"{reason} (linked files count toward the size: {files}, "
            f"{human_bytes(files_bytes)})")


__all__ = [
    "Action", "CONFLICT", "CONTENT_REG", "DELETED", "DepsOf", "HELD", "INVALID",
    "LINKED_BATCH_BYTES", "Link", "LinkRef", "LinkedFileError", "LocalFileVerdict",
    "MAX_ENV_STEM_CHARS", "MAX_LINKED_FILES", "MAX_LINKED_FILE_BYTES", "MAX_LINKED_PATH_CHARS",
    "MAX_REFUSED_SHOWN", "MAX_SHOWN_PATH_CHARS", "MISSING", "MODE_ALLOWED", "NO_ENTITY", "OUTSIDE", "PATH_REG",
    "PENDING", "PRIVATE_MODE", "PeerFileVerdict", "REFUSED", "SYNCED", "TOO_LARGE",
    "TOO_MANY", "UNCONFIRMED", "UNREAD", "content_sha", "content_value", "create_op", "decide",
    "decode_content", "env_file_stem", "file_entities", "file_mode", "file_uuid",
    "judge_local_file", "judge_peer_file", "linked_by", "linked_bytes", "linked_here",
    "linked_paths", "linked_paths_of_state", "normalise", "peer_file_refusals",
    "peer_mode", "plan_links", "private_rels", "quota_reason", "relink_ops", "set_op",
    "shown_path", "summary", "team_marker",
]
