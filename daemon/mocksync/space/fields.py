"""Strict readers for decoded canonical-CBOR documents.

Everything the space package accepts from another device (log entries, invite tokens, join
messages) arrives as a decoded CBOR value that may hold any type CBOR can express. These
helpers check one field at a time against an exact type and limit and raise the caller's
error class with a sentence naming the field, so a malformed document is refused before any
of it is used. `bool` is never accepted where an `int` is expected (Python's bool is an int).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from ..errors import MocksyncError

#: Longest display name (member, device, space) in characters.
MAX_NAME_CHARS = 64
#: Longest relay URL in characters.
MAX_URL_CHARS = 256
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
