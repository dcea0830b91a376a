"""Field checkers of the wire schema: what one value of a message may be, both ways.

Why one set of checkers for every wire format: the relay protocol, the peer sync messages and
the space documents each grew a hand-written validator with its own idea of a length limit and
its own error text (issue 14). A checker here holds one rule (an integer range, a byte or text
length and pattern, a list or map with its most items, a nested record) and applies it in both
directions: `decode` turns a value fresh from canonical CBOR into the Python value a message
holds, `encode` turns that value back into what canonical CBOR writes, and both refuse what the
rule refuses. So a message that encodes always decodes to an equal message, and nothing
malformed is ever sent.

A checker raises `FieldError` (where, problem, over a limit or not); the codec that runs it
turns that into the error class of its protocol with a sentence that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import FieldError


def _type_name(v: Any) -> str:
    return type(v).__name__


def _within(where: str, exc: FieldError) -> FieldError:
    """`exc`, raised by a part checked with a relative position, placed under `where`.

    Containers check their parts with the part's position only (`[3]`, ` seq`) and build the
    full position when a part fails: naming every element's position up front cost a fifth
    of the decode time of a batch of a thousand envelopes."""
    return FieldError(where + exc.where, exc.problem, limit=exc.limit)


class Check:
    """One rule for one value. `decode` is fed what canonical CBOR decoded; `encode` is fed what
    a message holds. Both return the checked value in the other representation."""

    def decode(self, v: Any, where: str) -> Any:
        raise NotImplementedError

    def encode(self, v: Any, where: str) -> Any:
        return self.decode(v, where)


@dataclass(frozen=True, slots=True)
class Int(Check):
    """An integer in lo..hi (bool is not an integer here)."""

    lo: int
    hi: int

    def decode(self, v: Any, where: str) -> int:
        if type(v) is not int:
            raise FieldError(where, f"expected an integer, got {_type_name(v)}")
        if not self.lo <= v <= self.hi:
            raise FieldError(where, f"{v} is outside {self.lo}..{self.hi}")
        return v


@dataclass(frozen=True, slots=True)
class Bool(Check):
    def decode(self, v: Any, where: str) -> bool:
        if type(v) is not bool:
            raise FieldError(where, f"expected true or false, got {_type_name(v)}")
        return v


@dataclass(frozen=True, slots=True)
class Bytes(Check):
    """A byte string of lo..hi bytes."""

    lo: int
    hi: int

    def decode(self, v: Any, where: str) -> bytes:
        if type(v) is not bytes:
            raise FieldError(where, f"expected bytes, got {_type_name(v)}")
        n = len(v)
        if n > self.hi:
            raise FieldError(where, f"{n} bytes is over the {self.hi} byte limit", limit=True)
        if n < self.lo:
            raise FieldError(where, f"{n} bytes, expected at least {self.lo}")
        return v


@dataclass(frozen=True, slots=True)
class Text(Check):
    """A text of at most `hi` characters, matching `pattern` whole when one is given; `what`
    names the expected value in a refusal ("a space id (32 lowercase hex digits)")."""

    hi: int
    pattern: re.Pattern[str] | None = None
    what: str = "text"

    def decode(self, v: Any, where: str) -> str:
        if type(v) is not str:
            raise FieldError(where, f"expected {self.what}, got {_type_name(v)}")
        if len(v) > self.hi:
            raise FieldError(where, f"{len(v)} characters, over the {self.hi} limit", limit=True)
        if self.pattern is not None and not self.pattern.fullmatch(v):
            raise FieldError(where, f"expected {self.what}, got {v[:40]!r}")
        return v


@dataclass(frozen=True, slots=True)
class Ident(Check):
    """An identifier: a text of lo..hi characters matching `pattern` whole, or printable when
    no pattern is given. Unlike `Text`, a long one is malformed, not over a limit: an id of
    the wrong length is the wrong shape, and every way it is off gets one sentence naming
    `what` ("an env id of 1..64 printable characters")."""

    lo: int
    hi: int
    what: str
    pattern: re.Pattern[str] | None = None

    def decode(self, v: Any, where: str) -> str:
        if (type(v) is not str or not self.lo <= len(v) <= self.hi
                or not (v.isprintable() if self.pattern is None else self.pattern.fullmatch(v))):
            raise FieldError(where, f"expected {self.what}, got {v!r:.80}")
        return v


@dataclass(frozen=True, slots=True)
class Nullable(Check):
    """`inner`, or null (None)."""

    inner: Check

    def decode(self, v: Any, where: str) -> Any:
        return None if v is None else self.inner.decode(v, where)

    def encode(self, v: Any, where: str) -> Any:
        return None if v is None else self.inner.encode(v, where)


@dataclass(frozen=True, slots=True)
class ListOf(Check):
    """A list of lo..hi values each checked by `inner`. `tuple_` holds it as a tuple in the
    message (immutable sequences that are passed on as they are, like envelope batches);
    `whole`, when given, checks the decoded sequence as a whole (a total size)."""

    inner: Check
    hi: int
    lo: int = 0
    tuple_: bool = False
    what: str = "a list"
    whole: Callable[[Sequence[Any], str], None] | None = None
    unit: str = "entries"

    def _size(self, v: Any, where: str) -> None:
        if len(v) > self.hi:
            raise FieldError(where, f"{len(v)} {self.unit}, over the {self.hi} limit",
                             limit=True)
        if len(v) < self.lo:
            raise FieldError(where, f"needs at least {self.lo} entries")

    def decode(self, v: Any, where: str) -> list[Any] | tuple[Any, ...]:
        if type(v) is not list:
            raise FieldError(where, f"expected {self.what}, got {_type_name(v)}")
        self._size(v, where)
        inner = self.inner.decode
        out = []
        try:
            for x in v:
                out.append(inner(x, ""))
        except FieldError as exc:
            raise _within(f"{where}[{len(out)}]", exc) from None
        if self.whole is not None:
            self.whole(out, where)
        return tuple(out) if self.tuple_ else out

    def encode(self, v: Any, where: str) -> list[Any]:
        if not isinstance(v, list | tuple):
            raise FieldError(where, f"expected {self.what}, got {_type_name(v)}")
        self._size(v, where)
        inner = self.inner.encode
        out = []
        try:
            for x in v:
                out.append(inner(x, ""))
        except FieldError as exc:
            raise _within(f"{where}[{len(out)}]", exc) from None
        if self.whole is not None:  # on the held values, each one checked first
            self.whole(v, where)
        return out


@dataclass(frozen=True, slots=True)
class MapOf(Check):
    """A map of at most `hi` entries, keys checked by `key` and values by `value`."""

    key: Check
    value: Check
    hi: int

    def _run(self, v: Any, where: str, enc: bool) -> dict[Any, Any]:
        # a message may hold any mapping (a read-only view); what arrives must be a map
        if not isinstance(v, Mapping) if enc else type(v) is not dict:
            raise FieldError(where, f"expected a map, got {_type_name(v)}")
        if len(v) > self.hi:
            raise FieldError(where, f"{len(v)} entries, over the {self.hi} limit", limit=True)
        kc = self.key.encode if enc else self.key.decode
        vc = self.value.encode if enc else self.value.decode
        out = {}
        for k, x in v.items():
            try:
                ck = kc(k, "")
            except FieldError as exc:
                raise _within(f"{where} key", exc) from None
            try:
                out[ck] = vc(x, "")
            except FieldError as exc:
                raise _within(f"{where}[{str(k)[:32]}]", exc) from None
        return out

    def decode(self, v: Any, where: str) -> dict[Any, Any]:
        # `_run` unrolled: maps (version vectors) sit on the hot path of peer sync messages
        if type(v) is not dict or len(v) > self.hi:
            return self._run(v, where, False)  # refuses, naming the problem
        kc = self.key.decode
        vc = self.value.decode
        out = {}
        try:
            for k, x in v.items():
                out[kc(k, "")] = vc(x, "")
        except FieldError:
            return self._run(v, where, False)  # refuses again, naming key or value
        return out

    def encode(self, v: Any, where: str) -> dict[Any, Any]:
        return self._run(v, where, True)


@dataclass(frozen=True, slots=True)
class Struct(Check):
    """A fixed-length list `[a, b, ...]` held as `build(a, b, ...)` (a tuple, an `Envelope`);
    `parts` reads the held value back into its positions. `what` names the shape."""

    checks: tuple[tuple[str, Check], ...]
    what: str
    build: Callable[..., Any] | None = None  # None: held as the tuple of its parts
    parts: Callable[[Any], Sequence[Any]] = tuple

    def decode(self, v: Any, where: str) -> Any:
        if type(v) is not list or len(v) != len(self.checks):
            raise FieldError(where, f"expected {self.what}")
        name = ""
        parts = []
        try:
            for (name, c), x in zip(self.checks, v, strict=True):  # noqa: B007 (in except)
                parts.append(c.decode(x, ""))
        except FieldError as exc:
            raise _within(f"{where} {name}" if name else where, exc) from None
        return tuple(parts) if self.build is None else self.build(*parts)

    def encode(self, v: Any, where: str) -> list[Any]:
        try:
            parts = self.parts(v)
        except (TypeError, AttributeError):
            raise FieldError(where, f"expected {self.what}") from None
        if len(parts) != len(self.checks):
            raise FieldError(where, f"expected {self.what}")
        out = []
        name = ""
        try:
            for (name, c), x in zip(self.checks, parts, strict=True):  # noqa: B007 (in except)
                out.append(c.encode(x, ""))
        except FieldError as exc:
            raise _within(f"{where} {name}" if name else where, exc) from None
        return out


class RecordCheck(Check):
    """A nested record: a map with exactly the keys of a `Record` class (see `wire.codec`).
    Bound late so records can refer to records declared after them."""

    def __init__(self, cls: Callable[[], type[Any]] | type[Any]) -> None:
        self._cls = cls

    @property
    def cls(self) -> type[Any]:
        c = self._cls
        return c if isinstance(c, type) else c()

    def decode(self, v: Any, where: str) -> Any:
        from .codec import record_from_map

        return record_from_map(self.cls, v, where)

    def encode(self, v: Any, where: str) -> Any:
        from .codec import record_to_map

        if not isinstance(v, self.cls):
            raise FieldError(where, f"expected a {self.cls.__name__}, got {_type_name(v)}")
        return record_to_map(v, where)


__all__ = [
    "Bool",
    "Bytes",
    "Check",
    "FieldError",
    "Ident",
    "Int",
    "ListOf",
    "MapOf",
    "Nullable",
    "RecordCheck",
    "Struct",
    "Text",
]
