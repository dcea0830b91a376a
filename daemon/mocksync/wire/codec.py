"""The one codec between typed messages and canonical CBOR maps with short keys.

Why typed records with the short keys declared beside them: code that handles a message reads
`msg.space` and `msg.items`, never `msg["s"]`, so a typo is a type error rather than a
`KeyError` at run time, and the one-letter keys that keep frames small live only here, in the
field declarations. Each wire format (the relay protocol, the peer sync messages) is one
`Codec` over its message classes: a size ceiling before parsing, canonical CBOR only (through
`changes.canonical`, the one gate), exactly the declared keys, every field checked by its
`wire.fields` checker, and every refusal an error of the format's own class whose sentence names
the field. What `encode` writes, `decode` accepts and returns equal; the bytes are those of
`canonical.encode` of the map, so they do not depend on this module (a golden test pins them).

A record is a frozen dataclass whose fields are declared with `wire(key, check)`; a message is
a record with a `KIND` (the value of the kind key, `t`) and optionally its own frame limit
`MAX_BYTES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from ..changes import canonical
from ..changes.errors import DecodeLimit
from ..errors import ChangeSetError
from .errors import FieldError, WireError, WireLimit
from .fields import Check

#: Key that names a message's kind in every format.
KIND_KEY = "t"
#: Longest kind name quoted back in a refusal.
MAX_KIND_QUOTE = 32


def wire(key: str, check: Check, **kw: Any) -> Any:
    """Declare a record field: its short key on the wire and its checker."""
    return dataclasses.field(metadata={"key": key, "check": check}, **kw)


def derived(**kw: Any) -> Any:
    """Declare a record field that is not sent: the record's `from_fields` derives it from the
    fields that are (a change set's space and seq, read from its signed bytes, never trusted
    from a field beside them)."""
    return dataclasses.field(metadata={"derived": True}, **kw)


class Record:
    """Base of typed records (frozen dataclasses whose fields are declared with `wire`).

    Two optional hooks, run by the codec both ways: `cross_check` for rules that tie fields
    together (a range's ends, "both null or both set"), and `from_fields` to build the record
    from its checked wire fields when some of its fields are `derived`."""

    __slots__ = ()

    def cross_check(self) -> None:
        """Refuse (`FieldError`, `where` relative: `".u"`) what no single field's checker can
        see. Run after every field decoded and before a record is encoded."""

    @classmethod
    def from_fields(cls: type[R], values: dict[str, Any]) -> R:
        """The record of its checked wire fields (by attribute name)."""
        return cls(**values)


class Message(Record):
    """A record sent as one frame: `KIND` is its `t`; `MAX_BYTES` its own frame limit (None:
    the codec's)."""

    __slots__ = ()
    KIND: ClassVar[str] = ""
    MAX_BYTES: ClassVar[int | None] = None


M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Record)

_Spec = tuple[tuple[str, str, Check], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Layout:
    """What the codec needs of one record class, worked out once: its wire fields, their key
    set, and whether its hooks are its own (a hook not overridden costs no call)."""

    fields: _Spec
    keys: frozenset[str]
    build: Callable[[dict[str, Any]], Any] | None
    cross: bool


_LAYOUTS: dict[type, _Layout] = {}


def _layout(cls: type[Any]) -> _Layout:
    got = _LAYOUTS.get(cls)
    if got is None:
        out = []
        for f in dataclasses.fields(cls):
            if f.metadata.get("derived"):
                continue
            if "key" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with wire(key, check)"
                                " or derived()")
            out.append((f.name, f.metadata["key"], f.metadata["check"]))
        keys = [k for _a, k, _c in out]
        if len(set(keys)) != len(keys) or KIND_KEY in keys and issubclass(cls, Message):
            raise TypeError(f"{cls.__name__}: repeated keys or a field named {KIND_KEY!r}")
        own_build = getattr(cls, "from_fields", None)
        base_build = getattr(Record.from_fields, "__func__", None)
        build = (own_build if own_build is not None
                 and getattr(own_build, "__func__", None) is not base_build else None)
        cross = getattr(cls, "cross_check", Record.cross_check) is not Record.cross_check
        got = _LAYOUTS[cls] = _Layout(tuple(out), frozenset(keys), build, cross)
    return got


def spec(cls: type[Any]) -> _Spec:
    """(attribute, key, checker) of every wire field of record class `cls` (derived fields
    left out), in declaration order."""
    return _layout(cls).fields


def keys_of(cls: type[Any]) -> frozenset[str]:
    return _layout(cls).keys


def _exact_keys(v: Mapping[Any, Any], expected: frozenset[str], where: str,
                ignore: frozenset[str] = frozenset()) -> None:
    got = set(v) - ignore
    if got != expected:
        extra = sorted(str(k)[:16] for k in got - expected)
        absent = sorted(expected - got)
        raise FieldError(where, f"unexpected keys {extra or 'none'}, missing keys {absent or 'none'}")


def record_from_map(cls: type[R], v: Any, where: str,
                    ignore: frozenset[str] = frozenset()) -> R:
    """A record of class `cls` from a decoded map with exactly its keys (plus `ignore`)."""
    if type(v) is not dict:
        raise FieldError(where, f"expected a map, got {type(v).__name__}")
    lay = _LAYOUTS.get(cls) or _layout(cls)
    fields = lay.fields
    skip = 0
    for k in ignore:
        if k in v:
            skip += 1
    if len(v) - skip != len(fields):
        _exact_keys(v, lay.keys, where, ignore)
    values = {}
    k = ""
    try:  # each field checked with a relative position, placed under `where` if it fails
        for a, k, c in fields:
            values[a] = c.decode(v[k], "")
        rec = cls(**values) if lay.build is None else lay.build(values)
        if lay.cross:
            k = ""
            rec.cross_check()
    except FieldError as exc:
        raise _under(f"{where}.{k}" if k else where, exc) from None
    except KeyError:  # as many keys as fields, but not the same ones
        _exact_keys(v, lay.keys, where, ignore)
        raise
    return rec


def record_to_map(rec: Record, where: str) -> dict[str, Any]:
    """The map canonical CBOR writes for `rec` (every field checked on the way out)."""
    lay = _LAYOUTS.get(type(rec)) or _layout(type(rec))
    out = {}
    k = ""
    try:
        if lay.cross:
            rec.cross_check()
        for a, k, c in lay.fields:
            out[k] = c.encode(getattr(rec, a), "")
    except FieldError as exc:
        raise _under(f"{where}.{k}" if k else where, exc) from None
    return out


def _under(where: str, exc: FieldError) -> FieldError:
    return FieldError(where + exc.where, exc.problem, limit=exc.limit)


_KIND_ONLY = frozenset((KIND_KEY,))


def to_legacy(v: Any) -> Any:
    """A record as a plain map with its short keys (nested records too); other values as they
    are. For callers that still take messages as maps."""
    if isinstance(v, Record):
        out = {KIND_KEY: v.KIND} if isinstance(v, Message) else {}
        out.update({k: to_legacy(getattr(v, a)) for a, k, _c in spec(type(v))})
        return out
    if type(v) is dict:
        return {k: to_legacy(x) for k, x in v.items()}
    if type(v) is list:
        return [to_legacy(x) for x in v]
    return v


class Codec:
    """Typed messages of one wire format <-> canonical CBOR frames.

    `label` starts every refusal ("relay message"); `error`/`limit_error` are the format's
    refusal classes (a `limit_error` for anything over a named limit); `max_bytes` is the
    ceiling checked before parsing; `max_items` the CBOR item cap of the canonical gate;
    `unknown(kind)` builds the refusal of a kind this codec does not know."""

    def __init__(self, kinds: Iterable[type[Message]], *, label: str,
                 max_bytes: int, max_items: int = canonical.MAX_ITEMS,
                 error: type[Exception] = WireError, limit_error: type[Exception] = WireLimit,
                 unknown: Callable[[str], Exception] | None = None,
                 frame_what: str | None = None) -> None:
        self.kinds: dict[str, type[Message]] = {}
        for cls in kinds:
            if not cls.KIND or cls.KIND in self.kinds:
                raise TypeError(f"{cls.__name__}: missing or repeated KIND {cls.KIND!r}")
            spec(cls)
            self.kinds[cls.KIND] = cls
        self.label = label
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.error = error
        self.limit_error = limit_error
        self._unknown = unknown
        self.frame_what = frame_what or label.replace("message", "frame")

    # ----------------------------------------------------------------- refusals
    def refusal(self, exc: FieldError) -> Exception:
        cls = self.limit_error if exc.limit else self.error
        return cls(f"{self.label} {exc.where}: {exc.problem}")

    def bad(self, where: str, problem: str) -> Exception:
        return self.error(f"{self.label} {where}: {problem}")

    def _limit_of(self, cls: type[Message]) -> int:
        return cls.MAX_BYTES if cls.MAX_BYTES is not None else self.max_bytes

    def _too_big(self, kind: str, n: int, limit: int) -> Exception:
        return self.limit_error(f"{self.label} {kind}: {n} bytes, over the {limit} byte limit")

    # ----------------------------------------------------------------- encode
    def to_map(self, msg: Message) -> dict[str, Any]:
        """The checked map of `msg` (kind included), as canonical CBOR will write it."""
        cls = type(msg)
        if self.kinds.get(cls.KIND) is not cls:
            raise self.bad(KIND_KEY, f"{cls.__name__} is not a message of this side")
        try:
            out = record_to_map(msg, cls.KIND)
        except FieldError as exc:
            raise self.refusal(exc) from None
        out[KIND_KEY] = cls.KIND
        return out

    def encode(self, msg: Message) -> bytes:
        """Canonical CBOR of `msg`, checked against the same rules as decoding."""
        data = canonical.encode(self.to_map(msg))
        limit = self._limit_of(type(msg))
        if len(data) > limit:
            raise self._too_big(msg.KIND, len(data), limit)
        return data

    # ----------------------------------------------------------------- decode
    def parse(self, data: Any, *, max_items: int | None = None) -> tuple[dict[Any, Any], str]:
        """Raw frame -> (decoded map, its kind): size ceiling, the canonical gate, a map with a
        text kind. No field is checked yet. `max_items` tightens the codec's item cap for this
        frame (a cap the caller knows from the frame's kind, e.g. `net.relay_gate`), checked
        in the gate's one pass; an item or depth cap is the format's `limit_error`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise self.error(f"{self.frame_what}: expected binary data, got "
                             f"{type(data).__name__}")
        data = bytes(data)
        if len(data) > self.max_bytes:
            raise self.limit_error(f"{self.frame_what} of {len(data)} bytes is over the "
                                   f"{self.max_bytes} byte limit")
        cap = self.max_items if max_items is None else min(max_items, self.max_items)
        try:
            obj = canonical.decode(data, what=self.frame_what, max_items=cap)
        except DecodeLimit as exc:
            raise self.limit_error(str(exc)) from None
        except ChangeSetError as exc:
            raise self.error(str(exc)) from None
        if type(obj) is not dict:
            raise self.bad("frame", f"expected a map, got {type(obj).__name__}")
        kind = obj.get(KIND_KEY)
        if type(kind) is not str:
            raise self.bad(KIND_KEY, "missing or not text")
        return obj, kind

    def from_map(self, obj: Mapping[Any, Any], kind: str | None = None) -> Message:
        """The typed message of a decoded map (every key and field checked)."""
        kind = obj.get(KIND_KEY) if kind is None else kind
        if type(kind) is not str:
            raise self.bad(KIND_KEY, "every message needs a text kind")
        cls = self.kinds.get(kind)
        if cls is None:
            if self._unknown is not None:
                raise self._unknown(kind)
            raise self.bad(KIND_KEY, f"unknown kind {kind[:MAX_KIND_QUOTE]!r}")
        try:
            return record_from_map(cls, obj if type(obj) is dict else dict(obj), kind,
                                   _KIND_ONLY)
        except FieldError as exc:
            raise self.refusal(exc) from None

    def kind_class(self, kind: str) -> type[Message]:
        """The message class of `kind`, or the refusal of an unknown kind."""
        cls = self.kinds.get(kind)
        if cls is None:
            if self._unknown is not None:
                raise self._unknown(kind)
            raise self.bad(KIND_KEY, f"unknown kind {kind[:MAX_KIND_QUOTE]!r}")
        return cls

    def check_size(self, kind: str, n: int) -> None:
        """Refuse a frame of `n` bytes over the limit of its kind (before its fields are read:
        a refusal that costs nothing more than the parse)."""
        limit = self._limit_of(self.kind_class(kind))
        if n > limit:
            raise self._too_big(kind, n, limit)

    def decode(self, data: Any) -> Message:
        """Check and decode one frame; the format's error on anything off."""
        obj, kind = self.parse(data)
        self.check_size(kind, len(data))
        return self.from_map(obj, kind)


__all__ = [
    "KIND_KEY",
    "Codec",
    "Message",
    "Record",
    "WireError",
    "WireLimit",
    "derived",
    "keys_of",
    "record_from_map",
    "record_to_map",
    "spec",
    "to_legacy",
    "wire",
]
