"""Realistic Mockoon environments, built deterministically, and the format checks tests use.

Why: sync, diff and merge code is only as trustworthy as the environments it is tested on.
Two-route toy files miss what real ones hold (nested folders, CRUD routes backed by data
buckets, rules, callbacks, templated bodies, megabytes of text), so tests and benchmarks take
their inputs from here:

- `generate_env` grows a plausible API catalog to a requested size from a seed: same
  arguments, same environment, on every machine (all randomness, uuids included, comes from
  one `random.Random(seed)`).
- `dump_mockoon` writes the text Mockoon itself writes (`JSON.stringify(env, null, 2)`).
- `check_env_invariants` lists every way an environment breaks the rules Mockoon and our
  renderer must keep: a local stand-in for `mockoon-cli validate` plus the cross-references
  the schema does not check.
- `entity` builds one object with Mockoon's defaults, in Mockoon's key order.

Facts about the format come from Mockoon 9.9's own models (`@mockoon/commons`,
`constants/environment-schema.constants`), `lastMigration` 33. The key orders below are the
orders in which Mockoon builds fresh objects, hence the order of a file Mockoon saved. Mockoon
keeps whatever order an object already has, so hand-made or much-migrated files may differ:
`check_env_invariants(..., strict_keys=False)` then only checks that the known keys are there.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from ..errors import LimitError, ValidationError

# --------------------------------------------------------------------------------------------
# The format
# --------------------------------------------------------------------------------------------

#: The Mockoon migration whose format this module writes and checks.
LAST_MIGRATION = 33

#: Key order of each kind of object, as Mockoon 9.x builds it.
KEY_ORDERS: dict[str, tuple[str, ...]] = {
    "environment": (
        "uuid", "lastMigration", "name", "endpointPrefix", "latency", "port", "hostname",
        "folders", "routes", "rootChildren", "proxyMode", "proxyHost", "proxyRemovePrefix",
        "tlsOptions", "cors", "headers", "proxyReqHeaders", "proxyResHeaders", "data",
        "callbacks",
    ),
    "tls": ("enabled", "type", "pfxPath", "certPath", "keyPath", "caPath", "passphrase"),
    "folder": ("uuid", "name", "children"),
    "child": ("type", "uuid"),
    "route": (
        "uuid", "type", "documentation", "method", "endpoint", "responses", "responseMode",
        "streamingMode", "streamingInterval",
    ),
    "response": (
        "uuid", "body", "latency", "statusCode", "label", "headers", "bodyType", "filePath",
        "databucketID", "sendFileAsBody", "rules", "rulesOperator", "disableTemplating",
        "fallbackTo404", "default", "crudKey", "callbacks",
    ),
    "rule": ("target", "modifier", "value", "invert", "operator"),
    "header": ("key", "value"),
    "bucket": ("uuid", "id", "name", "documentation", "value"),
    # Mockoon's CallbackDefault order (bodyType before body, databucketID before filePath).
    "callback": (
        "uuid", "id", "uri", "name", "documentation", "method", "headers", "bodyType", "body",
        "databucketID", "filePath", "sendFileAsBody",
    ),
    "invocation": ("uuid", "latency"),
}

#: Keys `entity` cannot invent a value for (identities and references).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "environment": ("uuid",),
    "folder": ("uuid",),
    "child": ("type", "uuid"),
    "route": ("uuid",),
    "response": ("uuid",),
    "bucket": ("uuid", "id"),
    "callback": ("uuid", "id"),
    "invocation": ("uuid",),
}

_TLS_DEFAULT = {
    "enabled": False, "type": "CERT", "pfxPath": "", "certPath": "", "keyPath": "",
    "caPath": "", "passphrase": "",
}

#: Mockoon's defaults, except `hostname`: loopback, so a mock started from a generated or
#: example file never listens on a real interface (Mockoon's own default, "", means all).
DEFAULTS: dict[str, dict[str, Any]] = {
    "environment": {
        "lastMigration": LAST_MIGRATION, "name": "New environment", "endpointPrefix": "",
        "latency": 0, "port": 3000, "hostname": "127.0.0.1", "folders": [], "routes": [],
        "rootChildren": [], "proxyMode": False, "proxyHost": "", "proxyRemovePrefix": False,
        "tlsOptions": _TLS_DEFAULT, "cors": True, "headers": [], "proxyReqHeaders": [],
        "proxyResHeaders": [], "data": [], "callbacks": [],
    },
    "tls": _TLS_DEFAULT,
    "folder": {"name": "New folder", "children": []},
    "child": {},
    "route": {
        "type": "http", "documentation": "", "method": "get", "endpoint": "", "responses": [],
        "responseMode": None, "streamingMode": None, "streamingInterval": 0,
    },
    "response": {
        "body": "{}", "latency": 0, "statusCode": 200, "label": "", "headers": [],
        "bodyType": "INLINE", "filePath": "", "databucketID": "", "sendFileAsBody": False,
        "rules": [], "rulesOperator": "OR", "disableTemplating": False, "fallbackTo404": False,
        "default": False, "crudKey": "id", "callbacks": [],
    },
    "rule": {"target": "body", "modifier": "", "value": "", "invert": False, "operator": "equals"},
    "header": {"key": "", "value": ""},
    "bucket": {"name": "New data", "documentation": "", "value": "[\n]"},
    "callback": {
        "uri": "", "name": "Callback", "documentation": "", "method": "post", "headers": [],
        "bodyType": "INLINE", "body": "", "databucketID": "", "filePath": "",
        "sendFileAsBody": True,
    },
    "invocation": {"latency": 0},
}

ROUTE_TYPES = ("http", "crud", "ws")
ROUTE_METHODS = (
    "all", "get", "post", "put", "patch", "delete", "head", "options", "propfind", "proppatch",
    "move", "copy", "mkcol", "lock", "unlock", "",
)
CALLBACK_METHODS = tuple(m for m in ROUTE_METHODS if m not in ("all", ""))
RESPONSE_MODES = (None, "RANDOM", "SEQUENTIAL", "DISABLE_RULES", "FALLBACK")
STREAMING_MODES = (None, "UNICAST", "BROADCAST")
BODY_TYPES = ("INLINE", "FILE", "DATABUCKET")
RULES_OPERATORS = ("OR", "AND")
RULE_TARGETS = (
    "body", "query", "header", "cookie", "params", "path", "method", "request_number",
    "global_var", "data_bucket", "templating",
)
RULE_OPERATORS = (
    "equals", "regex", "regex_i", "null", "empty_array", "array_includes", "valid_json_schema",
)
TLS_TYPES = ("CERT", "PFX")
CHILD_TYPES = ("route", "folder")

# Field types, mirroring Mockoon's Joi schema: "str", "nonempty" (a string the schema does not
# allow to be ""), "bool" (strict), "num" (not bool), "list", "obj", or a tuple of values.
_STR, _NONEMPTY, _BOOL, _NUM, _LIST, _OBJ = "str", "nonempty", "bool", "num", "list", "obj"
_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "environment": {
        "lastMigration": _NUM, "name": _STR, "endpointPrefix": _STR, "latency": _NUM,
        "port": _NUM, "hostname": _STR, "folders": _LIST, "routes": _LIST,
        "rootChildren": _LIST, "proxyMode": _BOOL, "proxyHost": _STR,
        "proxyRemovePrefix": _BOOL, "tlsOptions": _OBJ, "cors": _BOOL, "headers": _LIST,
        "proxyReqHeaders": _LIST, "proxyResHeaders": _LIST, "data": _LIST, "callbacks": _LIST,
    },
    "tls": {
        "enabled": _BOOL, "type": TLS_TYPES, "pfxPath": _STR, "certPath": _STR,
        "keyPath": _STR, "caPath": _STR, "passphrase": _STR,
    },
    "folder": {"name": _STR, "children": _LIST},
    "child": {"type": CHILD_TYPES},
    "route": {
        "type": ROUTE_TYPES, "documentation": _STR, "method": ROUTE_METHODS, "endpoint": _STR,
        "responses": _LIST, "responseMode": RESPONSE_MODES, "streamingMode": STREAMING_MODES,
        "streamingInterval": _NUM,
    },
    "response": {
        "body": _STR, "latency": _NUM, "statusCode": _NUM, "label": _STR, "headers": _LIST,
        "bodyType": BODY_TYPES, "filePath": _STR, "databucketID": _STR,
        "sendFileAsBody": _BOOL, "rules": _LIST, "rulesOperator": RULES_OPERATORS,
        "disableTemplating": _BOOL, "fallbackTo404": _BOOL, "default": _BOOL,
        "crudKey": _NONEMPTY, "callbacks": _LIST,
    },
    "rule": {
        "target": RULE_TARGETS, "modifier": _STR, "value": _STR, "invert": _BOOL,
        "operator": RULE_OPERATORS,
    },
    "header": {"key": _STR, "value": _STR},
    "bucket": {"id": _STR, "name": _STR, "documentation": _STR, "value": _STR},
    "callback": {
        "id": _STR, "uri": _STR, "name": _NONEMPTY, "documentation": _STR,
        "method": CALLBACK_METHODS, "headers": _LIST, "bodyType": BODY_TYPES, "body": _STR,
        "databucketID": _STR, "filePath": _STR, "sendFileAsBody": _BOOL,
    },
    "invocation": {"latency": _NUM},
}
# Numeric ranges from the same schema: (min, max); None = unbounded.
_RANGES: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("environment", "latency"): (0, None),
    ("environment", "port"): (0, 65535),
    ("route", "streamingInterval"): (0, None),
    ("response", "latency"): (0, None),
    ("response", "statusCode"): (100, 999),
}

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def entity(kind: str, **fields: Any) -> dict[str, Any]:
    """One Mockoon object of `kind` (a key of KEY_ORDERS): Mockoon's defaults, Mockoon's key
    order, `fields` overriding. Identities (`uuid`, a bucket's or callback's `id`, a tree
    child's `type`) must be given: this module never invents randomness behind your back."""
    order = KEY_ORDERS.get(kind)
    if order is None:
        raise ValidationError(f"unknown kind {kind!r}; use one of {sorted(KEY_ORDERS)}")
    unknown = [k for k in fields if k not in order]
    if unknown:
        raise ValidationError(f"{kind} has no key(s) {unknown}; its keys are {list(order)}")
    missing = [k for k in REQUIRED_KEYS.get(kind, ()) if k not in fields]
    if missing:
        raise ValidationError(f"a {kind} needs {missing}: pass them as keyword arguments")
    defaults = DEFAULTS[kind]
    return {k: fields[k] if k in fields else copy.deepcopy(defaults[k]) for k in order}


# --------------------------------------------------------------------------------------------
# Writing: exactly what JSON.stringify writes
# --------------------------------------------------------------------------------------------

_SURROGATES_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def js_number_text(x: float | int) -> str:
    """A number as JavaScript's `JSON.stringify` prints it (ECMAScript Number::toString):
    `5` not `5.0`, `1e-7` not `1e-07`, `1e+21`, and `null` for NaN and the infinities."""
    if isinstance(x, int) and abs(x) < 10**21:
        return str(x)
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return "null"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr gives the shortest digits that round-trip, as JavaScript does.
    _, digit_tuple, exponent = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    exponent = int(exponent) + len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # the value is 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def _needs_js_numbers(obj: Any) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) or (
            isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 10**21
        ):
            return True
    return False


def _mark_numbers(obj: Any, marker: str) -> tuple[Any, int]:
    """Copy of `obj` where every number Python would print differently from JavaScript is a
    string `marker + js text + marker`; returns (copy, how many)."""
    count = 0

    def walk(item: Any) -> Any:
        nonlocal count
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, bool) or not isinstance(item, int | float):
            return item
        if isinstance(item, int) and abs(item) < 10**21:
            return item
        count += 1
        return marker + js_number_text(item) + marker

    return walk(obj), count


def dump_mockoon(env: Any, *, compact: bool = False) -> str:
    """The text Mockoon writes for `env`: `JSON.stringify(env, null, 2)` (2-space indent,
    `": "`, non-ASCII as is, no trailing newline), or with `compact=True`
    `JSON.stringify(env)`. Numbers print as JavaScript prints them and lone surrogates are
    escaped (`\\udxxx`), as JavaScript does, so the result always encodes to UTF-8."""
    indent = None if compact else 2
    separators = (",", ":") if compact else (",", ": ")
    if not _needs_js_numbers(env):
        text = json.dumps(env, indent=indent, separators=separators, ensure_ascii=False)
    else:
        # A random marker cannot collide with the content; it is replaced before returning.
        marker = "\x00jsnum" + secrets.token_hex(8)
        marked, count = _mark_numbers(env, marker)
        text = json.dumps(marked, indent=indent, separators=separators, ensure_ascii=False)
        escaped = re.escape(json.dumps(marker)[1:-1])
        text, replaced = re.subn(f'"{escaped}([^"]*?){escaped}"', r"\1", text)
        if replaced != count:  # pragma: no cover - would mean the marker leaked
            raise ValidationError("could not format numbers as JavaScript does")
    if not text.isascii() and _SURROGATES_RE.search(text):
        text = _SURROGATES_RE.sub(_fix_surrogates, text)
    return text


def _fix_surrogates(match: re.Match[str]) -> str:
    s = match.group(0)
    if len(s) == 2:  # a pair split in two Python characters: JavaScript sees one character
        return chr(0x10000 + ((ord(s[0]) - 0xD800) << 10) + (ord(s[1]) - 0xDC00))
    return f"\\u{ord(s):04x}"


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


def check_env_invariants(env: Any, *, strict_keys: bool = True) -> list[str]:
    """Every problem found in `env`, one sentence each; `[]` when it is a valid Mockoon
    environment that our renderer could have written.

    Checked: each object's keys (present; with `strict_keys`, exactly Mockoon's keys in
    Mockoon's order, otherwise only the known ones' relative order), field types and enum
    values as in Mockoon's schema, uuids (lowercase v4, unique across the file), the tree
    (every route and folder exactly once in `rootChildren` or one folder's `children`, no
    dangling reference, no folder unreachable from the root), exactly one `default: true`
    response in each http/ws route with responses (at most one in CRUD routes), unique bucket
    and callback ids, `databucketID` naming an existing bucket, and response `callbacks`
    naming an existing callback."""
    return _Checker(strict_keys).run(env)


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _uid(obj: dict) -> str:
    """An object's uuid for messages and lookups; "?" when it has no usable one."""
    u = obj.get("uuid")
    return u if isinstance(u, str) else "?"


class _Checker:
    def __init__(self, strict_keys: bool) -> None:
        self.strict = strict_keys
        self.problems: list[str] = []
        self.uuid_where: dict[str, str] = {}

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    # one object ----------------------------------------------------------------------------

    def obj(self, value: Any, kind: str, where: str) -> bool:
        """Keys, types and uuid of one object; False when it is not an object at all."""
        if not isinstance(value, dict):
            self.add(f"{where}: expected an object, got {_describe(value)}")
            return False
        expected = KEY_ORDERS[kind]
        actual = list(value)
        if actual != list(expected):
            known = set(expected)
            missing = [k for k in expected if k not in value]
            if missing:
                self.add(f"{where}: missing key(s) {missing}")
            extra = [k for k in actual if k not in known]
            if extra and self.strict:
                self.add(f"{where}: unexpected key(s) {extra}")
            present = [k for k in actual if k in known]
            if present != [k for k in expected if k in value]:
                self.add(
                    f"{where}: keys not in Mockoon's order: got {present}, "
                    f"expected {[k for k in expected if k in value]}"
                )
        for key, spec in _FIELD_TYPES[kind].items():
            if key in value:
                self.field(value[key], spec, f"{where}: {key}", _RANGES.get((kind, key)))
        if "uuid" in expected and kind not in ("child", "invocation"):
            self.entity_uuid(value.get("uuid"), where)
        return True

    def field(self, v: Any, spec: Any, where: str, bounds: tuple | None) -> None:
        if isinstance(spec, tuple):
            if not any(v is a or (isinstance(v, str) and v == a) for a in spec):
                self.add(f"{where} is {v!r}; allowed: {list(spec)}")
        elif spec == _STR and not isinstance(v, str):
            self.add(f"{where} must be a string, got {_describe(v)}")
        elif spec == _NONEMPTY and (not isinstance(v, str) or not v):
            self.add(f"{where} must be a non-empty string, got {v!r}")
        elif spec == _BOOL and not isinstance(v, bool):
            self.add(f"{where} must be true or false, got {_describe(v)}")
        elif spec == _LIST and not isinstance(v, list):
            self.add(f"{where} must be a list, got {_describe(v)}")
        elif spec == _OBJ and not isinstance(v, dict):
            self.add(f"{where} must be an object, got {_describe(v)}")
        elif spec == _NUM:
            if isinstance(v, bool) or not isinstance(v, int | float):
                self.add(f"{where} must be a number, got {_describe(v)}")
            elif bounds and (
                (bounds[0] is not None and v < bounds[0])
                or (bounds[1] is not None and v > bounds[1])
            ):
                self.add(f"{where} is {v}, outside {bounds[0]}..{bounds[1] or 'any'}")

    def entity_uuid(self, u: Any, where: str) -> None:
        if not isinstance(u, str) or not _UUID_RE.match(u):
            self.add(f"{where}: uuid {u!r} is not a lowercase version-4 uuid")
            return
        first = self.uuid_where.get(u)
        if first is not None:
            self.add(f"duplicate uuid {u}: {first} and {where}")
        else:
            self.uuid_where[u] = where

    def items(self, parent: dict, key: str, kind: str, where: str) -> list[dict]:
        """The well-formed objects of list `parent[key]` (problems recorded for the rest)."""
        seq = parent.get(key)
        if not isinstance(seq, list):
            return []
        good = []
        for i, item in enumerate(seq):
            label = f"{where}.{key}[{i}]"
            if isinstance(item, dict) and isinstance(item.get("uuid"), str):
                label = f"{where}.{key}[{i}] ({kind} {_uid(item)})"
            if self.obj(item, kind, label):
                good.append(item)
        return good

    def plain_list(self, parent: dict, key: str, kind: str, where: str) -> None:
        seq = parent.get(key)
        if isinstance(seq, list):
            for i, item in enumerate(seq):
                self.obj(item, kind, f"{where}.{key}[{i}]")

    # the whole environment -----------------------------------------------------------------

    def run(self, env: Any) -> list[str]:
        if not self.obj(env, "environment", "environment"):
            return self.problems
        if isinstance(env.get("tlsOptions"), dict):
            self.obj(env["tlsOptions"], "tls", "environment.tlsOptions")
        for key in ("headers", "proxyReqHeaders", "proxyResHeaders"):
            self.plain_list(env, key, "header", "environment")
        buckets = self.items(env, "data", "bucket", "environment")
        callbacks = self.items(env, "callbacks", "callback", "environment")
        for cb in callbacks:
            self.plain_list(cb, "headers", "header", f"callback {_uid(cb)}")
        folders = self.items(env, "folders", "folder", "environment")
        routes = self.items(env, "routes", "route", "environment")
        bucket_ids = self.unique_ids(buckets, "data bucket")
        callback_uuids = {_uid(cb) for cb in callbacks} - {"?"}
        self.unique_ids(callbacks, "callback")
        for cb in callbacks:
            ref = cb.get("databucketID")
            if isinstance(ref, str) and ref and ref not in bucket_ids:
                self.add(f"callback {_uid(cb)}: databucketID {ref!r} names no data bucket")
        for route in routes:
            self.route(route, bucket_ids, callback_uuids)
        self.tree(env, folders, routes)
        return self.problems

    def unique_ids(self, items: list[dict], what: str) -> set[str]:
        ids: set[str] = set()
        for item in items:
            short = item.get("id")
            if not isinstance(short, str) or not short:
                self.add(f"{what} {_uid(item)}: empty id")
            elif short in ids:
                self.add(f"{what} id {short!r} is used twice")
            else:
                ids.add(short)
        return ids

    def route(self, route: dict, bucket_ids: set[str], callback_uuids: set[str]) -> None:
        name = f"route {_uid(route)} ({route.get('method')} /{route.get('endpoint')})"
        responses = self.items(route, "responses", "response", name)
        defaults = sum(1 for r in responses if r.get("default") is True)
        kind = route.get("type")
        if responses and kind in ("http", "ws") and defaults != 1:
            self.add(f"{name}: {defaults} responses have default true; exactly one must")
        if kind == "crud" and defaults > 1:
            self.add(f"{name}: {defaults} responses have default true; at most one may")
        for resp in responses:
            where = f"{name} response {_uid(resp)}"
            self.plain_list(resp, "headers", "header", where)
            self.plain_list(resp, "rules", "rule", where)
            self.plain_list(resp, "callbacks", "invocation", where)
            ref = resp.get("databucketID")
            if isinstance(ref, str) and ref and ref not in bucket_ids:
                self.add(f"{where}: databucketID {ref!r} names no data bucket")
            invocations = resp.get("callbacks")
            for inv in invocations if isinstance(invocations, list) else []:
                if isinstance(inv, dict) and _uid(inv) not in callback_uuids:
                    self.add(f"{where}: invokes callback {inv.get('uuid')!r}, which does not exist")

    def tree(self, env: dict, folders: list[dict], routes: list[dict]) -> None:
        folder_by_uuid = {_uid(f): f for f in folders if _uid(f) != "?"}
        route_uuids = {_uid(r) for r in routes} - {"?"}
        seen: Counter[str] = Counter()
        containers: list[tuple[str, Any]] = [("rootChildren", env.get("rootChildren"))]
        containers += [(f"folder {_uid(f)} children", f.get("children")) for f in folders]
        for where, children in containers:
            if not isinstance(children, list):
                continue
            for i, ref in enumerate(children):
                label = f"{where}[{i}]"
                if not self.obj(ref, "child", label):
                    continue
                kind, u = ref.get("type"), ref.get("uuid")
                if not isinstance(u, str):
                    self.add(f"{label}: uuid must be a string, got {_describe(u)}")
                    continue
                exists = route_uuids if kind == "route" else folder_by_uuid
                if kind in CHILD_TYPES and u not in exists:
                    self.add(f"{label} refers to {kind} {u!r}, which does not exist")
                seen[u] += 1
        for kind, uuids in (("folder", list(folder_by_uuid)), ("route", list(route_uuids))):
            for u in uuids:
                if seen[u] == 0:
                    self.add(f"{kind} {u} is in no folder and not in rootChildren")
                elif seen[u] > 1:
                    self.add(f"{kind} {u} appears {seen[u]} times in the tree")
        # Reachability: a folder cycle keeps each member "placed once" yet out of reach.
        reached: set[str] = set()
        stack = [env.get("rootChildren")]
        while stack:
            children = stack.pop()
            for ref in children if isinstance(children, list) else []:
                if not isinstance(ref, dict):
                    continue
                u = ref.get("uuid")
                if not isinstance(u, str) or u in reached:
                    continue
                if ref.get("type") == "folder" and u in folder_by_uuid:
                    reached.add(u)
                    stack.append(folder_by_uuid[u].get("children"))
                elif ref.get("type") == "route":
                    reached.add(u)
        for kind, uuids in (("folder", list(folder_by_uuid)), ("route", list(route_uuids))):
            for u in uuids:
                if seen[u] and u not in reached:
                    self.add(f"{kind} {u} is not reachable from rootChildren (a folder cycle)")


# --------------------------------------------------------------------------------------------
# Generating
# --------------------------------------------------------------------------------------------

#: Largest environment `generate_env` builds (2-space layout, UTF-8 bytes).
MAX_TARGET_BYTES = 256 * 1024 * 1024
#: Most bytes one growth step adds (a route with its responses, plus the bucket, folders and
#: callbacks a new resource brings); the result overshoots the target by less than this.
MAX_STEP_BYTES = 24 * 1024

_SERVICES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Catalog", (
        ("products", "product"), ("categories", "category"), ("brands", "brand"),
        ("reviews", "review"), ("price-lists", "price list"), ("bundles", "bundle"),
    )),
    ("Orders", (
        ("orders", "order"), ("carts", "cart"), ("returns", "return"),
        ("shipments", "shipment"), ("invoices", "invoice"),
    )),
    ("Accounts", (
        ("customers", "customer"), ("addresses", "address"), ("sessions", "session"),
        ("api-keys", "API key"), ("roles", "role"),
    )),
    ("Inventory", (
        ("warehouses", "warehouse"), ("stock-levels", "stock level"),
        ("suppliers", "supplier"), ("purchase-orders", "purchase order"),
    )),
    ("Marketing", (
        ("campaigns", "campaign"), ("coupons", "coupon"), ("segments", "segment"),
        ("newsletters", "newsletter"),
    )),
    ("Support", (
        ("tickets", "ticket"), ("macros", "macro"), ("surveys", "survey"),
        ("knowledge-articles", "knowledge article"),
    )),
)

# (field name, handlebars value as it appears in a JSON body)
_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "\"{{faker 'commerce.productName'}}\""),
    ("title", "\"{{faker 'lorem.sentence'}}\""),
    ("description", "\"{{faker 'lorem.paragraph'}}\""),
    ("email", "\"{{faker 'internet.email'}}\""),
    ("firstName", "\"{{faker 'person.firstName'}}\""),
    ("lastName", "\"{{faker 'person.lastName'}}\""),
    ("company", "\"{{faker 'company.name'}}\""),
    ("city", "\"{{faker 'location.city'}}\""),
    ("country", "\"{{faker 'location.countryCode'}}\""),
    ("price", "{{faker 'commerce.price'}}"),
    ("currency", "\"{{faker 'finance.currencyCode'}}\""),
    ("quantity", "{{int 0 500}}"),
    ("status", "\"{{oneOf (array 'active' 'pending' 'archived')}}\""),
    ("createdAt", "\"{{faker 'date.past'}}\""),
    ("updatedAt", "\"{{now 'yyyy-MM-dd'}}\""),
    ("active", "{{boolean}}"),
    ("rating", "{{int 1 5}}"),
    ("tags", "[\"{{faker 'commerce.productAdjective'}}\", \"{{faker 'commerce.productMaterial'}}\"]"),
    ("imageUrl", "\"{{faker 'image.url'}}\""),
    ("phone", "\"{{faker 'phone.number'}}\""),
    ("sku", "\"{{faker 'string.alphanumeric' 10}}\""),
    ("notes", "\"{{faker 'lorem.sentence'}}\""),
    ("color", "\"{{faker 'color.human'}}\""),
    ("weightKg", "{{int 1 40}}"),
)

_SUBRESOURCES = ("history", "events", "attachments", "metrics", "notes", "audit-log", "links")
_ACTIONS = ("archive", "approve", "publish", "cancel", "sync", "duplicate", "restore", "lock")
_CALLBACK_EVENTS = ("created", "updated", "deleted", "exported", "approved")
#: Callback URIs stay on loopback so a mock started from a generated file calls nothing else.
_HOOK_BASE = "http://127.0.0.1:4010/hooks"


class _SizedEnv:
    """An environment being grown, with the exact byte size of `dump_mockoon(env)` kept up to
    date as items are appended, so growing to 15 MB never re-serialises the whole thing."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.size = len(dump_mockoon(env).encode("utf-8"))

    def append(self, seq: list, level: int, item: Any) -> None:
        """Append `item` to `seq`, a list nested `level` deep (the env's own lists: 1)."""
        text = json.dumps(item, indent=2, ensure_ascii=False)
        item_bytes = len(text) if text.isascii() else len(text.encode("utf-8"))
        item_bytes += text.count("\n") * 2 * (level + 1)  # re-indented where it lands
        if seq:  # ",\n" + indent + item
            self.size += 2 + 2 * (level + 1) + item_bytes
        else:  # "[]" -> "[\n" + indent + item + "\n" + indent + "]"
            self.size += 2 + 2 * (level + 1) + 2 * level + item_bytes
        seq.append(item)


class _Ids:
    """uuids and short ids drawn from the generator's rng, unique within one environment."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def uuid(self) -> str:
        while True:
            n = self.rng.getrandbits(128)
            n = (n & ~(0xF << 76)) | (0x4 << 76)  # version 4
            n = (n & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
            h = f"{n:032x}"
            u = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            if u not in self.used:
                self.used.add(u)
                return u

    def short(self) -> str:
        """Like Mockoon's GenerateUniqueID: 4 characters of base 36."""
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
        while True:
            s = "".join(self.rng.choice(alphabet) for _ in range(4))
            if s not in self.used:
                self.used.add(s)
                return s


def generate_env(target_bytes: int, seed: int = 0, name: str = "Generated catalog API") -> dict:
    """A realistic environment whose 2-space Mockoon layout (`dump_mockoon(env)`, UTF-8)
    is at least `target_bytes` long and less than `target_bytes + MAX_STEP_BYTES`.

    Deterministic: the same arguments give the same environment on every machine. The shape
    is an API catalog: root routes, one folder per API version, a folder per service inside
    it, a folder per resource for some resources (three levels deep), a CRUD route per
    resource backed by a data bucket of templated records, HTTP routes with 1-4 responses
    (rules with OR/AND, response modes, headers, FILE bodies, callbacks), and WebSocket
    streams. It always holds at least one route. Cost is linear: 15 MB takes a few seconds.
    """
    if isinstance(target_bytes, bool) or not isinstance(target_bytes, int) or target_bytes < 0:
        raise ValidationError(f"target_bytes must be a non-negative integer, got {target_bytes!r}")
    if target_bytes > MAX_TARGET_BYTES:
        raise LimitError(
            f"target_bytes {target_bytes} is over the generator's limit of {MAX_TARGET_BYTES} "
            "bytes; ask for less"
        )
    rng = random.Random(seed)
    ids = _Ids(rng)
    env = entity(
        "environment",
        uuid=ids.uuid(),
        name=name,
        endpointPrefix="api",
        port=3000 + rng.randrange(100, 900),
        headers=[
            entity("header", key="Content-Type", value="application/json"),
            entity("header", key="Access-Control-Allow-Origin", value="*"),
            entity(
                "header", key="Access-Control-Allow-Methods",
                value="GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS",
            ),
            entity(
                "header", key="Access-Control-Allow-Headers",
                value="Content-Type, Origin, Accept, Authorization, Content-Length, X-Requested-With",
            ),
        ],
        proxyReqHeaders=[entity("header")],
        proxyResHeaders=[entity("header")],
    )
    sized = _SizedEnv(env)
    for _ in _CatalogBuilder(rng, ids, sized).steps():
        if sized.size >= target_bytes:
            break
    return env


class _CatalogBuilder:
    """The growth steps of `generate_env`: each `next()` adds one route (with whatever
    folder, bucket or callbacks it needs first)."""

    def __init__(self, rng: random.Random, ids: _Ids, sized: _SizedEnv) -> None:
        self.rng = rng
        self.ids = ids
        self.sized = sized
        self.env = sized.env

    # placement -------------------------------------------------------------------------

    def add_folder(self, name: str, parent: dict | None) -> dict:
        folder = entity("folder", uuid=self.ids.uuid(), name=name)
        self.sized.append(self.env["folders"], 1, folder)
        self.place(folder, "folder", parent)
        return folder

    def add_route(self, route: dict, parent: dict | None) -> None:
        self.sized.append(self.env["routes"], 1, route)
        self.place(route, "route", parent)

    def place(self, item: dict, kind: str, parent: dict | None) -> None:
        ref = entity("child", type=kind, uuid=item["uuid"])
        if parent is None:
            self.sized.append(self.env["rootChildren"], 1, ref)
        else:  # env > folders > folder > children: the list sits 3 levels deep
            self.sized.append(parent["children"], 3, ref)

    # the catalog -----------------------------------------------------------------------

    def steps(self) -> Iterator[None]:
        yield from self.root_routes()
        version = 1
        while True:
            yield from self.api_version(version)
            version += 1

    def root_routes(self) -> Iterator[None]:
        self.add_route(self.route(
            "get", "health", "Liveness probe used by the load balancer.",
            [self.response(200, "OK", '{\n  "status": "ok",\n  "uptime": {{int 1 99999}}\n}',
                           default=True)],
        ), None)
        yield
        self.add_route(self.route(
            "get", "version", "Build information of the running API.",
            [self.response(
                200, "Current build",
                '{\n  "version": "{{int 1 9}}.{{int 0 30}}.{{int 0 99}}",\n'
                '  "commit": "{{faker \'git.commitSha\'}}"\n}',
                default=True,
            )],
        ), None)
        yield

    def api_version(self, version: int) -> Iterator[None]:
        vfolder = self.add_folder(f"API v{version}", None)
        prefix = f"v{version}"
        for service, resources in _SERVICES:
            sfolder = self.add_folder(service, vfolder)
            hooks: list[dict] = []
            for plural, singular in resources:
                if self.rng.random() < 0.5:
                    parent = self.add_folder(plural.replace("-", " ").capitalize(), sfolder)
                else:
                    parent = sfolder
                base = f"{prefix}/{service.lower()}/{plural}"
                bucket = self.add_bucket(service, plural, singular, version)
                if not hooks:
                    hooks = self.add_callbacks(service, version, bucket)
                yield from self.resource(base, plural, singular, bucket, hooks, parent)
            if self.rng.random() < 0.6:
                self.add_route(self.ws_route(f"{prefix}/{service.lower()}/events", service),
                               sfolder)
                yield

    def resource(self, base: str, plural: str, singular: str, bucket: dict,
                 hooks: list[dict], parent: dict) -> Iterator[None]:
        fields = ["id", *(f for f, _ in self.rng.sample(_FIELDS, self.rng.randint(4, 9)))]
        self.add_route(self.crud_route(base, plural, bucket), parent)
        yield
        makers: list[Callable[[], dict]] = [
            lambda: self.search_route(base, plural, fields),
            lambda: self.sub_route(base, singular, fields),
            lambda: self.action_route(base, singular, hooks),
            lambda: self.bulk_route(base, plural),
            lambda: self.export_route(base, plural),
        ]
        for make in self.rng.sample(makers, self.rng.randint(2, len(makers))):
            self.add_route(make(), parent)
            yield

    # entities --------------------------------------------------------------------------

    def add_bucket(self, service: str, plural: str, singular: str, version: int) -> dict:
        fields = self.rng.sample(_FIELDS, self.rng.randint(3, 8))
        lines = ['    "id": "{{faker \'string.uuid\'}}"']
        lines += [f'    "{f}": {v}' for f, v in fields]
        value = (
            f"[\n  {{{{#repeat {self.rng.randint(5, 60)}}}}}\n  {{\n"
            + ",\n".join(lines)
            + "\n  }\n  {{/repeat}}\n]"
        )
        bucket = entity(
            "bucket", uuid=self.ids.uuid(), id=self.ids.short(),
            name=f"{service} {plural} (v{version})",
            documentation=f"Seed records for the {singular} CRUD endpoints; regenerated on start.",
            value=value,
        )
        self.sized.append(self.env["data"], 1, bucket)
        return bucket

    def add_callbacks(self, service: str, version: int, bucket: dict) -> list[dict]:
        hooks = []
        for event in self.rng.sample(_CALLBACK_EVENTS, self.rng.randint(1, 2)):
            use_bucket = self.rng.random() < 0.3
            cb = entity(
                "callback", uuid=self.ids.uuid(), id=self.ids.short(),
                uri=f"{_HOOK_BASE}/v{version}/{service.lower()}/{event}",
                name=f"{service} {event} webhook (v{version})",
                documentation=f"Tells subscribers that a {service.lower()} record was {event}.",
                method="post",
                headers=[
                    entity("header", key="Content-Type", value="application/json"),
                    entity("header", key="X-Webhook-Signature",
                           value="{{faker 'string.hexadecimal' 64}}"),
                ],
                bodyType="DATABUCKET" if use_bucket else "INLINE",
                body="" if use_bucket else (
                    f'{{\n  "event": "{service.lower()}.{event}",\n'
                    '  "id": "{{faker \'string.uuid\'}}",\n'
                    '  "occurredAt": "{{now \'yyyy-MM-dd\'}}"\n}'
                ),
                databucketID=bucket["id"] if use_bucket else "",
                sendFileAsBody=False,
            )
            self.sized.append(self.env["callbacks"], 1, cb)
            hooks.append(cb)
        return hooks

    def route(self, method: str, endpoint: str, doc: str, responses: list[dict], *,
              kind: str = "http", mode: str | None = None) -> dict:
        return entity(
            "route", uuid=self.ids.uuid(), type=kind, documentation=doc, method=method,
            endpoint=endpoint, responses=responses, responseMode=mode,
        )

    def response(self, status: int, label: str, body: str, *, default: bool = False,
                 rules: list[dict] | None = None, operator: str = "OR",
                 headers: list[dict] | None = None, **extra: Any) -> dict:
        return entity(
            "response", uuid=self.ids.uuid(), body=body, statusCode=status, label=label,
            latency=self.rng.choice((0, 0, 0, 0, 50, 120, 400)),
            headers=headers if headers is not None else self.headers(),
            rules=rules or [], rulesOperator=operator, default=default, **extra,
        )

    def headers(self) -> list[dict]:
        pool = [
            ("X-Request-Id", "{{faker 'string.uuid'}}"),
            ("Cache-Control", self.rng.choice(("no-store", "max-age=60", "private, max-age=0"))),
            ("ETag", "W/\"{{faker 'string.alphanumeric' 12}}\""),
            ("X-RateLimit-Remaining", "{{int 0 100}}"),
        ]
        return [entity("header", key=k, value=v)
                for k, v in self.rng.sample(pool, self.rng.randint(0, 3))]

    def record_body(self, fields: list[str], indent: str) -> str:
        by_name = dict(_FIELDS)
        lines = [f'{indent}  "id": "{{{{urlParam \'id\'}}}}"' if f == "id"
                 else f'{indent}  "{f}": {by_name[f]}' for f in fields]
        return f"{indent}{{\n" + ",\n".join(lines) + f"\n{indent}}}"

    def error_responses(self, singular: str, limit: int) -> list[dict]:
        kits = [
            (401, "Missing token", [entity("rule", target="header", modifier="Authorization",
                                           operator="null")], "OR"),
            (403, "Read-only key", [
                entity("rule", target="header", modifier="Authorization",
                       value="^Bearer ro_", operator="regex"),
                entity("rule", target="method", value="get", invert=True)], "AND"),
            (404, f"Unknown {singular}", [entity("rule", target="params", modifier="id",
                                                 value="^0+$", operator="regex")], "OR"),
            (406, "XML not supported", [entity("rule", target="header", modifier="Accept",
                                               value="xml", operator="regex_i")], "OR"),
            (429, "Rate limited", [entity("rule", target="request_number",
                                          value="^([5-9]|[1-9][0-9]+)$", operator="regex")], "OR"),
            (503, "Maintenance window", [entity("rule", target="global_var",
                                                modifier="maintenance", value="true")], "OR"),
            (400, "Legacy client", [
                entity("rule", target="templating", modifier="{{queryParam 'version'}}",
                       value="1"),
                entity("rule", target="cookie", modifier="legacy_ui", value="yes")], "OR"),
        ]
        chosen = self.rng.sample(kits, min(limit, self.rng.randint(0, 3)))
        out = []
        for status, label, rules, op in chosen:
            body = (f'{{\n  "error": "{label}",\n  "status": {status},\n'
                    '  "requestId": "{{header \'X-Request-Id\'}}"\n}')
            headers = [entity("header", key="Retry-After", value="30")] if status in (
                429, 503) else []
            out.append(self.response(status, label, body, rules=rules, operator=op,
                                     headers=headers))
        return out

    def mode(self) -> str | None:
        roll = self.rng.random()
        for threshold, mode in ((0.06, "RANDOM"), (0.10, "SEQUENTIAL"), (0.13, "FALLBACK"),
                                (0.15, "DISABLE_RULES")):
            if roll < threshold:
                return mode
        return None

    def crud_route(self, base: str, plural: str, bucket: dict) -> dict:
        responses = [entity(
            "response", uuid=self.ids.uuid(), body="{}", label=f"CRUD on {plural}",
            bodyType="DATABUCKET", databucketID=bucket["id"], default=True,
        )]
        if self.rng.random() < 0.5:
            responses.append(self.response(
                401, "Missing token", '{\n  "error": "unauthorized"\n}',
                rules=[entity("rule", target="header", modifier="Authorization",
                              operator="null")],
            ))
        return entity(
            "route", uuid=self.ids.uuid(), type="crud",
            documentation=f"Create, read, update and delete {plural} (backed by the "
                          f"'{bucket['name']}' data bucket).",
            method="", endpoint=base, responses=responses,
        )

    def search_route(self, base: str, plural: str, fields: list[str]) -> dict:
        item = self.record_body(fields, "    ").replace("{{urlParam 'id'}}",
                                                         "{{faker 'string.uuid'}}")
        body = ('{\n  "data": [\n    {{#repeat (queryParam \'limit\' \'10\')}}\n'
                + item + "\n    {{/repeat}}\n  ],\n"
                '  "page": {{queryParam \'page\' \'1\'}},\n  "total": {{int 20 5000}}\n}')
        empty = self.response(200, "No match", '{\n  "data": [],\n  "total": 0\n}', rules=[
            entity("rule", target="query", modifier="q", value="^zz", operator="regex"),
        ])
        responses = [self.response(200, f"Matching {plural}", body, default=True), empty]
        responses += self.error_responses(plural, 2)
        return self.route("get", f"{base}/search",
                          f"Full-text search over {plural}. Query: `q`, `limit`, `page`.",
                          responses, mode=self.mode())

    def sub_route(self, base: str, singular: str, fields: list[str]) -> dict:
        sub = self.rng.choice(_SUBRESOURCES)
        body = ('{\n  "items": [\n    {{#repeat 5}}\n'
                '    {\n      "at": "{{faker \'date.recent\'}}",\n'
                '      "actor": "{{faker \'person.fullName\'}}",\n'
                '      "summary": "{{faker \'lorem.sentence\'}}"\n    }\n'
                '    {{/repeat}}\n  ],\n  "of": ' + self.record_body(fields, "  ").lstrip()
                + "\n}")
        responses = [self.response(200, f"{sub} of one {singular}", body, default=True)]
        responses += self.error_responses(singular, 3)
        return self.route("get", f"{base}/:id/{sub}", f"The {sub} of one {singular}.",
                          responses, mode=self.mode())

    def action_route(self, base: str, singular: str, hooks: list[dict]) -> dict:
        action = self.rng.choice(_ACTIONS)
        invocations = [entity("invocation", uuid=h["uuid"],
                              latency=self.rng.choice((0, 100, 500)))
                       for h in hooks if self.rng.random() < 0.7]
        ok = self.response(
            202, f"{action.capitalize()} accepted",
            '{\n  "id": "{{urlParam \'id\'}}",\n  "action": "' + action + '",\n'
            '  "jobId": "{{faker \'string.uuid\'}}"\n}',
            default=True, callbacks=invocations,
            headers=[entity("header", key="Location", value="/jobs/{{faker 'string.uuid'}}")],
        )
        conflict = self.response(
            409, "Already done", '{\n  "error": "state conflict"\n}', operator="AND", rules=[
                entity("rule", target="body", modifier="$.force", value="true", invert=True),
                entity("rule", target="body", modifier="state", value=f"{action}d"),
            ])
        responses = [ok, conflict, *self.error_responses(singular, 2)]
        return self.route("post", f"{base}/:id/{action}",
                          f"Ask the backend to {action} one {singular}; answers at once and "
                          "notifies webhooks when done.", responses, mode=self.mode())

    def bulk_route(self, base: str, plural: str) -> dict:
        responses = [
            self.response(200, "Bulk update applied",
                          '{\n  "updated": {{int 1 200}},\n  "failed": 0\n}', default=True),
            self.response(422, "Empty batch", '{\n  "error": "items must not be empty"\n}',
                          rules=[entity("rule", target="body", modifier="items",
                                        operator="empty_array")]),
            self.response(207, "Partial success",
                          '{\n  "updated": {{int 1 50}},\n  "failed": {{int 1 5}}\n}',
                          rules=[entity("rule", target="body", modifier="items",
                                        value="invalid", operator="array_includes")]),
        ]
        return self.route("patch", f"{base}/bulk", f"Update many {plural} in one call.",
                          responses[: self.rng.randint(1, 3)], mode=self.mode())

    def export_route(self, base: str, plural: str) -> dict:
        fmt = self.rng.choice(("csv", "json", "xlsx"))
        ctype = {"csv": "text/csv", "json": "application/json",
                 "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
        ok = self.response(
            200, f"{plural} export ({fmt})", "", default=True, bodyType="FILE",
            filePath=f"exports/{plural}.{fmt}", sendFileAsBody=fmt == "xlsx",
            headers=[entity("header", key="Content-Type", value=ctype[fmt]),
                     entity("header", key="Content-Disposition",
                            value=f'attachment; filename="{plural}.{fmt}"')],
        )
        return self.route("get", f"{base}/export.{fmt}",
                          f"Download all {plural} as {fmt.upper()}.", [ok])

    def ws_route(self, endpoint: str, service: str) -> dict:
        responses = [
            entity("response", uuid=self.ids.uuid(), default=True, sendFileAsBody=True,
                   label=f"{service} event",
                   body='{\n  "type": "{{oneOf (array \'created\' \'updated\' \'deleted\')}}",\n'
                        '  "id": "{{faker \'string.uuid\'}}",\n  "at": "{{now}}"\n}'),
            entity("response", uuid=self.ids.uuid(), sendFileAsBody=True, label="Heartbeat",
                   body='{\n  "type": "heartbeat"\n}'),
        ]
        route = entity(
            "route", uuid=self.ids.uuid(), type="ws",
            documentation=f"Live {service.lower()} events, one JSON message per change.",
            method="get", endpoint=endpoint, responses=responses,
            responseMode=self.rng.choice(("RANDOM", "SEQUENTIAL")),
            streamingMode=self.rng.choice(("BROADCAST", "UNICAST")),
            streamingInterval=self.rng.choice((1000, 2500, 5000)),
        )
        return route
