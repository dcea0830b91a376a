"""Read and write environment files byte-for-byte the way Mockoon (JavaScript) does.

Mockoon saves `JSON.stringify(env, null, 2)` (or compact). A file nobody changed must come back
byte-identical, and a file we write must look like one Mockoon wrote, so that the editor does
not see a spurious change and a git diff shows only the edit. Python's `json` module agrees
with JavaScript on strings when `ensure_ascii=False` (both escape only quotes, backslash and
control characters, with lowercase hex), but not on numbers: JS prints `5` for 5.0, `1e-7` for
1e-07 and `100000000000000000000` for 1e20. `js_number` reproduces ECMAScript's
Number::toString, and `dumps` renders with it.

The layout of the file being replaced is kept: indent (Mockoon's 2 spaces, other widths, tabs,
or compact), line ending and trailing newline. Other layouts (Prettier's short arrays on one
line) are rewritten in Mockoon's 2-space layout: never corrupted, possibly reformatted.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ValidationError
from .errors import JSONSyntaxError

_STR_ENCODER = json.JSONEncoder(ensure_ascii=False)
#: A surrogate pair split over two Python characters, or an unpaired surrogate.
_SURROGATE_RE = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def _js_string(s: str) -> str:
    """JSON.stringify of a string: like Python's, except that (ES2019 well-formed stringify)
    an unpaired surrogate is escaped as \\udxxx, so the text is always valid UTF-8."""
    out = _STR_ENCODER.encode(s)
    if not out.isascii() and _SURROGATE_RE.search(out):
        out = _SURROGATE_RE.sub(_fix_surrogate, out)
    return out


def _fix_surrogate(m: re.Match[str]) -> str:
    s = m.group(0)
    if len(s) == 2:  # a pair: JavaScript sees one character
        return chr(0x10000 + ((ord(s[0]) - 0xD800) << 10) + (ord(s[1]) - 0xDC00))
    return f"\\u{ord(s):04x}"


@dataclass(frozen=True)
class Layout:
    """How a file is laid out. `indent` None means compact (no whitespace at all)."""

    indent: str | None = "  "
    newline: str = "\n"
    trailing_newline: bool = False

    @classmethod
    def mockoon(cls) -> Layout:
        return cls()


MOCKOON_LAYOUT = Layout()
COMPACT_LAYOUT = Layout(indent=None)

_INDENT_RE = re.compile(r"\n([ \t]+)\S")


def detect_layout(text: str, newline: str | None = None) -> Layout:
    """Infer the layout of an environment file from its text (`newline`: its line ending
    when the caller knows it, which spares a search through the whole text)."""
    if newline is None:
        newline = "\r\n" if "\r\n" in text else "\n"
    trailing = text.endswith("\n")
    end = len(text)  # the text without its trailing newlines, found without copying 15 MB
    while end and text[end - 1] in "\r\n":
        end -= 1
    if text.find("\n", 0, end) < 0:
        return Layout(indent=None, newline=newline, trailing_newline=trailing)
    m = _INDENT_RE.search(text, 0, end)  # (a "\r" before the "\n" is not in the match)
    indent = m.group(1) if m else "  "
    return Layout(indent=indent, newline=newline, trailing_newline=trailing)


def finite_float(literal: str) -> float:
    """`parse_float` for json.loads: refuse a number too large for a double (`1e400`), which
    Python would read as inf, a value JSON cannot carry (JSON.stringify writes it as null)."""
    x = float(literal)
    if not math.isfinite(x):
        raise ValueError(f"number {literal[:40]} is too large for a double")
    return x


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a big acyclic structure.

    A 15 MB environment is ~1.5 million objects; the collector would scan all live objects
    several times while they are created (JSON makes no cycles), doubling or tripling parse
    time. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: orjson reads an integer literal beyond 64 bits as a double, the standard parser as the
#: exact integer (which mocksync keeps): a text holding a run of this many digits is read by
#: the standard parser. (Found with a C translate and find: ~3 ms a MB, not a regex scan.)
LONG_DIGIT_RUN = 19
_DIGITS_TO_ZERO = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))


def _has_long_digit_run(data: bytes) -> bool:
    return data.translate(_DIGITS_TO_ZERO).find(b"0" * LONG_DIGIT_RUN) >= 0


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes) -> Any:
    """Parse an environment file's text: orjson (several times faster on a 15 MB file) with
    the standard parser as the exact fallback, for the texts orjson refuses (an escaped
    unpaired surrogate, which JavaScript reads and writes back escaped) and for the errors,
    which name line and column. NaN, Infinity and numbers beyond a double are refused."""
    if isinstance(text, bytes | bytearray):
        data = bytes(text)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"file is not UTF-8 text (byte {exc.start})") from None
    else:
        if text.startswith("\ufeff"):
            text = text[1:]
        data = text.encode("utf-8", "surrogatepass")
    if not _has_long_digit_run(data):
        with gc_paused():
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass  # an escaped lone surrogate, 1e400, NaN or a syntax error: exact path
    try:
        with gc_paused():
            return json.loads(text, parse_constant=_no_constant, parse_float=finite_float)
    except json.JSONDecodeError as exc:
        # Python's messages end in "... starting at" (it would add the offset); we give
        # line and column instead, so drop the dangling word.
        raise JSONSyntaxError(exc.msg.removesuffix(" at"), exc.lineno, exc.colno) from None
    except ValueError as exc:  # NaN / Infinity / 1e400
        raise ValidationError(f"file is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError("file is not valid JSON: nested too deeply") from None


def js_number(x: int | float) -> str:
    """ECMAScript Number::toString(10) for a finite number."""
    if isinstance(x, bool):
        raise TypeError("bool is not a number")
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "null"  # JSON.stringify turns NaN/Infinity into null
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number(-x)
    # Shortest round-tripping digits, as JS and Python's repr both choose them.
    digits, exp = _shortest_digits(x)
    k = len(digits)
    n = exp + k  # position of the decimal point relative to the digit string
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{mantissa}e{sign}{abs(e)}"


def _shortest_digits(x: float) -> tuple[str, int]:
    """Digits d1..dk and exponent e such that x == 0.d1..dk * 10**(e+k)... i.e. int(digits)*10**exp."""
    r = repr(x)  # Python's repr is the shortest round-tripping form, like JS
    mant, _, e = r.partition("e")
    exp = int(e) if e else 0
    if "." in mant:
        ip, fp = mant.split(".")
    else:
        ip, fp = mant, ""
    if fp == "0":
        fp = ""
    digits = (ip + fp).lstrip("0")
    exp -= len(fp)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    return stripped or "0", exp


#: Objects holding these keys contain other entities: never cached as text (see `dumps`).
_CONTAINER_KEYS = ("responses", "children", "routes")


#: Parts joined per C call when a render is put together: one join of a 15 MB environment's
#: 1.5 million parts held the GIL (and so stalled the event loop) ~35 ms; in slices, the
#: longest hold is the final join of the slices' texts (P15c, issue 15).
JOIN_PARTS = 1 << 15


def _join(parts: list[str]) -> str:
    """`"".join(parts)`, made in slices of `JOIN_PARTS` so the GIL is let go between them."""
    if len(parts) <= JOIN_PARTS:
        return "".join(parts)
    return "".join(["".join(parts[i:i + JOIN_PARTS]) for i in range(0, len(parts), JOIN_PARTS)])


def dumps(value: Any, layout: Layout = MOCKOON_LAYOUT,
          cache: dict[str, tuple[Any, int, str]] | None = None) -> str:
    """Render like JSON.stringify(value, null, indent), in the given layout.

    The recursive renderer below is faster than the standard library's indenting encoder
    (which is pure Python too) and handles unpaired surrogates as JavaScript does. With
    `cache` (one dict per State and layout), the text of each leaf entity object (response,
    data bucket, callback) is kept by uuid and reused while the object is the same one — the
    render cache hands back the same objects for untouched entities — so writing a 15 MB
    environment after a one-property edit re-serialises one response, not twenty thousand.
    """
    if layout.indent is None:
        return _slow_dumps(value, layout)
    parts: list[str] = []
    _pretty(value, parts, layout.indent, layout.newline, 0, cache)
    out = _join(parts)
    if layout.trailing_newline:
        out += layout.newline
    return out


def _slow_dumps(value: Any, layout: Layout) -> str:
    parts: list[str] = []
    ind = layout.indent
    nl = layout.newline
    if ind is None:
        _compact(value, parts)
    else:
        _pretty(value, parts, ind, nl, 0)
    out = "".join(parts)
    if layout.trailing_newline:
        out += nl
    return out


def _scalar(value: Any) -> str | None:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, int | float):
        return js_number(value)
    return None


def _compact(value: Any, out: list[str]) -> None:
    s = _scalar(value)
    if s is not None:
        out.append(s)
        return
    if isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_js_string(str(k)))
            out.append(":")
            _compact(v, out)
        out.append("}")
        return
    if isinstance(value, list | tuple):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _compact(v, out)
        out.append("]")
        return
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


_ORJSON_INDENT = "  "
#: Leaf types orjson writes exactly as JSON.stringify does (keys and strings escaped alike,
#: integers in full): a float (5.0, 1e+16 in orjson's spelling) is not among them.
_ORJSON_SAME = frozenset((str, int, bool, type(None)))


def _orjson_safe(value: dict[str, Any]) -> bool:
    """Does `value` hold only dicts, lists and `_ORJSON_SAME` leaves? (Iterative: values
    are at most MAX_VALUE_DEPTH deep, but no stack is needed to know.)"""
    stack: list[Any] = [value]
    pop, push, same = stack.pop, stack.append, _ORJSON_SAME
    while stack:
        v = pop()
        for x in (v.values() if type(v) is dict else v):
            t = type(x)
            if t in same:
                continue
            if t is dict or t is list:
                push(x)
                continue
            return False
    return True


def _leaf_text(value: Any, ind: str, nl: str, level: int) -> str:
    """`_pretty` of one leaf entity object, at `level`. In Mockoon's 2-space layout by orjson
    (one C call; a first sync renders 20,000 of them, issue 15), which writes strings, keys,
    integers, literals, empty and nested containers as JSON.stringify does: only floats are
    spelled otherwise (5.0, 1e+16), so an object holding a float (or any other type) is
    rendered by the exact path, as is a value orjson refuses (an unpaired surrogate, an integer past 64 bits)."""
    if ind == _ORJSON_INDENT and _orjson_safe(value):
        try:
            text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode("utf-8")
        except orjson.JSONEncodeError:
            text = ""
        if text:
            if nl != "\n" or level:
                text = text.replace("\n", nl + ind * level)
            return text
    sub: list[str] = []
    _pretty(value, sub, ind, nl, level, None)
    return "".join(sub)


def _pretty(value: Any, out: list[str], ind: str, nl: str, level: int,
            cache: dict[str, tuple[Any, int, str]] | None = None) -> None:
    s = _scalar(value)
    if s is not None:
        out.append(s)
        return
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        if cache is not None:
            u = value.get("uuid")
            if type(u) is str and not any(k in value for k in _CONTAINER_KEYS):
                hit = cache.get(u)
                if hit is not None and hit[0] is value and hit[1] == level:
                    out.append(hit[2])
                    return
                text = _leaf_text(value, ind, nl, level)
                cache[u] = (value, level, text)
                out.append(text)
                return
        inner = nl + ind * (level + 1)
        out.append("{")
        first = True
        for k, v in value.items():
            out.append(inner if first else "," + inner)
            first = False
            out.append(_js_string(str(k)))
            out.append(": ")
            _pretty(v, out, ind, nl, level + 1, cache)
        out.append(nl + ind * level + "}")
        return
    if isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = nl + ind * (level + 1)
        out.append("[")
        for i, v in enumerate(value):
            out.append(inner if i == 0 else "," + inner)
            _pretty(v, out, ind, nl, level + 1, cache)
        out.append(nl + ind * level + "]")
        return
    raise TypeError(f"cannot render {type(value).__name__} as JSON")
