"""Strict readers for decoded canonical-CBOR documents.

Everything the space package accepts from another device (log entries, invite tokens, join
messages) arrives as a decoded CBOR value that may hold any type CBOR can express. These
helpers check one field at a time against an exact type and limit and raise the caller's
error class with a sentence naming the field, so a malformed document is refused before any
of it is used. `bool` is never accepted where an `int` is expected (Python's bool is an int).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import MocksyncError

#: Longest display name (member, device, space) in characters.
MAX_NAME_CHARS = 64
#: Longest relay URL in characters.
MAX_URL_CHARS = 256
#: Relay addresses one space (its genesis) or one invite token may name (issue 17): enough for
#: a relay and its fallbacks, few enough that a token still fits a chat message.
MAX_SPACE_RELAYS = 4
#: Largest integer any counter, time or sequence number may hold (fits a JS number exactly).
MAX_INT = 2**53 - 1


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
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise err(f"{what}: field {key!r} must be an integer, got {_tname(v)}")
    if not lo <= v <= hi:
        raise err(f"{what}: field {key!r} = {v} is outside {lo}..{hi}")
    return v


def get_bytes(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError], *,
              length: int | None = None, max_len: int = 1024) -> bytes:
    v = d[key]
    if not isinstance(v, bytes):
        raise err(f"{what}: field {key!r} must be bytes, got {_tname(v)}")
    if length is not None and len(v) != length:
        raise err(f"{what}: field {key!r} must be {length} bytes, got {len(v)}")
    if len(v) > max_len:
        raise err(f"{what}: field {key!r} is {len(v)} bytes, over the {max_len} byte limit")
    return v


def get_str(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError], *,
            max_chars: int = MAX_NAME_CHARS, choices: tuple[str, ...] | None = None) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise err(f"{what}: field {key!r} must be text, got {_tname(v)}")
    if len(v) > max_chars:
        raise err(f"{what}: field {key!r} is {len(v)} characters, over the {max_chars} limit")
    if choices is not None and v not in choices:
        raise err(f"{what}: field {key!r} must be one of {', '.join(choices)}, got {v[:40]!r}")
    return v


def get_name(d: Mapping[str, Any], key: str, what: str, err: type[MocksyncError]) -> str:
    v = get_str(d, key, what, err)
    problem = name_problem(v)
    if problem:
        raise err(f"{what}: field {key!r} {problem}")
    return v


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
    v = d[key]
    if v is None:
        return ()
    if isinstance(v, str):
        items: list[Any] = [v]
    elif isinstance(v, list):
        if not 2 <= len(v) <= MAX_SPACE_RELAYS:
            raise err(f"{what}: field {key!r} must list 2..{MAX_SPACE_RELAYS} relays, "
                      f"got {len(v)}")
        items = v
    else:
        raise err(f"{what}: field {key!r} must be a relay URL or a list of them, "
                  f"got {_tname(v)}")
    for item in items:
        if not isinstance(item, str):
            raise err(f"{what}: field {key!r} must hold relay URLs (text), got {_tname(item)}")
    problem = relays_problem(items)
    if problem:
        raise err(f"{what}: {problem}")
    return tuple(items)
