"""The space documents' fields, checked by the wire schema's checkers (`mocksync.wire`).

Everything the space package accepts from another device (log entries, invite tokens, join
messages) arrives as a decoded CBOR value that may hold any type CBOR can express. Each field
is checked by one `wire.fields` checker, the same rules the relay and peer sync protocols use
(issue 14): the documents declare theirs as `wire.Record` classes where they have a fixed
shape (`read_record`), and the join messages read one field at a time (`read`, `get_int`...).
What is here is what only the space package needs: display names (`NAME`), a choice among
fixed words (`OneOf`), relay lists (`RELAYS`), a rule on a checked value (`Satisfies`), and
the turn of a checker's refusal into the caller's error class with a sentence naming the
document and the field. `bool` is never accepted where an `int` is expected.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import MocksyncError
from ..wire import Bytes, Check, FieldError, Int, Record, Text, record_from_map

#: Longest display name (member, device, space) in characters.
MAX_NAME_CHARS = 64
#: Longest relay URL in characters.
MAX_URL_CHARS = 256
#: Relay addresses one space (its genesis) or one invite token may name (issue 17): enough for
#: a relay and its fallbacks, few enough that a token still fits a chat message.
MAX_SPACE_RELAYS = 4
#: Largest integer any counter, time or sequence number may hold (fits a JS number exactly).
MAX_INT = 2**53 - 1
#: Default most bytes of a byte field read with `get_bytes`.
DEFAULT_MAX_BYTES = 1024

R = TypeVar("R", bound=Record)


# ---------------------------------------------------------------- checkers of the space


@dataclass(frozen=True, slots=True)
class NameCheck(Check):
    """A display name (see `name_problem`)."""

    def decode(self, v: Any, where: str) -> str:
        if type(v) is not str:
            raise FieldError(where, f"must be text, got {_tname(v)}")
        problem = name_problem(v)
        if problem:
            raise FieldError(where, problem)
        return v


@dataclass(frozen=True, slots=True)
class OneOf(Check):
    """One of a few fixed words (a role, a kind)."""

    choices: tuple[str, ...]

    def decode(self, v: Any, where: str) -> str:
        if type(v) is not str:
            raise FieldError(where, f"must be text, got {_tname(v)}")
        if v not in self.choices:
            raise FieldError(where, f"must be one of {', '.join(self.choices)}, got {v[:40]!r}")
        return v


@dataclass(frozen=True, slots=True)
class Satisfies(Check):
    """`inner`, and then `test` of the checked value; `problem` says what it is not."""

    inner: Check
    test: Callable[[Any], bool]
    problem: str

    def decode(self, v: Any, where: str) -> Any:
        out = self.inner.decode(v, where)
        if not self.test(out):
            raise FieldError(where, self.problem)
        return out


@dataclass(frozen=True, slots=True)
class RelaysCheck(Check):
    """A relay list on the wire: null, one URL (the old form) or a list of 2..MAX_SPACE_RELAYS
    distinct URLs; held as a tuple, first preferred. Encodes back to the same form."""

    def decode(self, v: Any, where: str) -> tuple[str, ...]:
        if v is None:
            return ()
        if isinstance(v, str):
            items: list[Any] = [v]
        elif isinstance(v, list):
            if not 2 <= len(v) <= MAX_SPACE_RELAYS:
                raise FieldError(where, f"must list 2..{MAX_SPACE_RELAYS} relays, got {len(v)}")
            items = v
        else:
            raise FieldError(where, f"must be a relay URL or a list of them, got {_tname(v)}")
        for item in items:
            if not isinstance(item, str):
                raise FieldError(where, f"must hold relay URLs (text), got {_tname(item)}")
        problem = relays_problem(items)
        if problem:
            raise FieldError(where, problem)
        return tuple(items)

    def encode(self, v: Any, where: str) -> str | list[str] | None:
        return relays_wire(self.decode(relays_wire(as_relays(v)), where))


NAME = NameCheck()
RELAYS = RelaysCheck()


# ---------------------------------------------------------------- reading documents


def _refusal(err: type[MocksyncError], what: str, key: str, exc: FieldError) -> MocksyncError:
    return err(f"{what}: field {key!r}{exc.where}: {exc.problem}")


def read(check: Check, d: Mapping[str, Any], key: str, what: str,
         err: type[MocksyncError]) -> Any:
    """Field `key` of a received document, checked by `check`; `err` naming document and field."""
    try:
        return check.decode(d[key], "")
    except FieldError as exc:
        raise _refusal(err, what, key, exc) from None


def read_record(cls: type[R], obj: Any, what: str, err: type[MocksyncError]) -> R:
    """A received document of fixed shape as its `Record` class: exactly its keys, every field
    checked; `err` naming the document and the field."""
    try:
        return record_from_map(cls, obj, "")
    except FieldError as exc:
        where = exc.where.lstrip(".")
        raise err(f"{what}: field {where}: {exc.problem}" if where
                  else f"{what}: {exc.problem}") from None


def exact_map(obj: Any, keys: set[str], what: str, err: type[MocksyncError],
              optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """`obj` must be a dict with string keys: all of `keys`, any of `optional`, nothing else."""
    if not isinstance(obj, dict):
        raise err(f"{what}: expected a map, got {_tname(obj)}")
    for k in obj:
        if not isinstance(k, str):
            raise err(f"{what}: has a non-text key")
    present = set(obj)
    missing = keys - present
    if missing:
        raise err(f"{what}: missing field {sorted(missing)[0]!r}")
    extra = present - keys - set(optional)
    if extra:
        raise err(f"{what}: unknown field {sorted(extra)[0]!r}")
    return obj


def get_int(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError], *,
            lo: int = 0, hi: int = MAX_INT) -> int:
    out: int = read(Int(lo, hi), d, key, what, err)
    return out


def get_bytes(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError], *,
              length: int | None = None, max_len: int = DEFAULT_MAX_BYTES) -> bytes:
    check = Bytes(length, length) if length is not None else Bytes(0, max_len)
    out: bytes = read(check, d, key, what, err)
    return out


def get_str(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError], *,
            max_chars: int = MAX_NAME_CHARS, choices: tuple[str, ...] | None = None) -> str:
    out: str = read(Text(max_chars) if choices is None else OneOf(choices), d, key, what, err)
    return out


def get_name(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError]) -> str:
    out: str = read(NAME, d, key, what, err)
    return out


def name_problem(name: str, max_chars: int = MAX_NAME_CHARS) -> str | None:
    """Why `name` cannot be a display name, or None. Names are shown in terminals: no control
    characters (which could rewrite the screen), no leading/trailing space, not empty."""
    if not isinstance(name, str):
        return "must be text"
    if not name:
        return "must not be empty"
    if len(name) > max_chars:
        return f"is {len(name)} characters, over the {max_chars} limit"
    if name != name.strip():
        return "must not start or end with a space"
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return "must not contain control or invisible characters"
    return None


def check_name(name: str, what: str, err: type[MocksyncError]) -> str:
    problem = name_problem(name)
    if problem:
        raise err(f"{what} {problem}")
    return name


def relay_url_problem(url: str) -> str | None:
    """Why `url` is not an acceptable relay address (`http(s)://host:port`), or None."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url:
        return "must be text like https://relay.example:8765"
    if len(url) > MAX_URL_CHARS:
        return f"is over the {MAX_URL_CHARS} character limit"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if port is None:
        return "must name a port, e.g. https://relay.example:8765"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "must not carry a query, fragment or credentials"
    return None


def _tname(v: Any) -> str:
    return "nothing" if v is None else type(v).__name__


# ---------------------------------------------------------------- relay lists (issue 17)
# On the wire (genesis `relay`, token `relay`) a space with one relay keeps the old form, a
# text field, so every existing log and token reads as before and a one-relay space made now
# is byte-for-byte what older versions made; only several relays take the new form, a list.


def as_relays(relay: str | Sequence[str] | None) -> tuple[str, ...]:
    """`relay` as given by callers (one URL, several, or None) as a tuple, first preferred."""
    if relay is None:
        return ()
    if isinstance(relay, str):
        return (relay,)
    return tuple(relay)


def relays_problem(relays: Sequence[str]) -> str | None:
    """Why `relays` cannot be a space's relay list, or None (pure)."""
    if len(relays) > MAX_SPACE_RELAYS:
        return f"names {len(relays)} relays, over the limit of {MAX_SPACE_RELAYS}"
    for url in relays:
        problem = relay_url_problem(url)
        if problem:
            shown = url[:80] + "..." if isinstance(url, str) and len(url) > 80 else url
            return f"relay address {shown!r} {problem}"
    if len(set(relays)) != len(relays):
        return "names the same relay twice"
    return None


def relays_wire(relays: Sequence[str]) -> str | list[str] | None:
    """The wire form of a relay list: None, one text field, or (2+) a list."""
    if not relays:
        return None
    if len(relays) == 1:
        return relays[0]
    return list(relays)


def read_relays(d: Mapping[str, Any], key: str, what: str,
                err: type[MocksyncError]) -> tuple[str, ...]:
    """Field `key` of a received document as a relay list: None, one URL (the old form) or a
    list of 2..MAX_SPACE_RELAYS distinct URLs; anything else is refused naming the field."""
    out: tuple[str, ...] = read(RELAYS, d, key, what, err)
    return out
