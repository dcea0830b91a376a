"""Format-preserving writes: change only the text spans of the values that changed.

Teams keep environment files in git in their own layout (Prettier's, with short arrays on one
line, is the common one). Re-rendering a whole file in Mockoon's layout after a one-value edit
turns a git history into layout noise and makes merge drivers see conflicts in lines nobody
touched. So a write starts from the file's current text and patches it:

- the old text is walked side by side with the new document; a subtree whose value did not
  change is skipped with the C scanner of the `json` module (never walked in Python), so its
  bytes are kept exactly, whatever their layout (spacing, escapes, `1.0` for 1);
- a changed scalar's span is replaced by its JavaScript rendering (`jsfmt`);
- an object or array whose members changed keeps the text of every member that stayed and the
  gaps between members that stayed neighbours; removed members take one separator with them,
  inserted ones get the separators and indentation of their neighbours, and their own content
  the file's style (indent unit; short scalar arrays on one line when the file has any, as
  Prettier writes them, within Prettier's 80 columns);
- array elements are aligned by entity `uuid` (else by value), so inserting, deleting or
  moving an entity touches only that entity's lines;
- key order of an object is the file's: values equal but for key order count as unchanged
  (Mockoon and the diff ignore key order too), and a new key goes after the key that precedes
  it in the new document.

`text_to_write` is what a writer calls: it returns None when the file already holds the
document (nothing is written: a file nobody changed is never rewritten), else the new text.
The patched text is checked to parse back to the document; a file that cannot be patched
(not JSON, not an object, a patch that would not read back) is rendered whole in its detected
layout, which for Mockoon's own layouts is byte-exact with what Mockoon writes.

Pure: text and documents in, text out.
"""

from __future__ import annotations

import bisect
import difflib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]  # the C scanner, not in typeshed
from typing import Any

from ..errors import ValidationError
from .errors import PatchError
from .jsfmt import (
    Layout,
    _compact,
    _js_string,
    _scalar,
    detect_layout,
    dumps,
    finite_float,
    gc_paused,
    parse_json,
)

#: Prettier's default print width: a new short array goes on one line only if its line fits.
SHORT_ARRAY_WIDTH = 80
#: Deepest nesting the patcher walks (the text is JSON a person or Mockoon wrote: far less).
#: Deeper values are replaced whole instead of walked, so recursion never overflows.
MAX_PATCH_DEPTH = 64
#: Largest text whose patch `text_to_write` reads back and compares with the document before
#: handing it out (a whole second parse). Bigger ones rely on the patcher's tested properties:
#: the check would double the cost of a one-value write to a 15 MB environment.
MAX_VERIFIED_CHARS = 1_000_000
#: Nesting levels walked member by member without first comparing the whole value: the
#: environment object (0) and its collections (1); below, an unchanged value is stepped over.
STRUCTURAL_DEPTH = 2
#: Most value ends a `SpanIndex` keeps (one per unchanged value stepped over: about one per
#: route and per top-level field); past it the index starts afresh, so memory stays bounded.
MAX_INDEX_ENDS = 1_000_000
#: Largest array aligned element by element (difflib on keys); a bigger one whose elements
#: moved is aligned by position only (still correct, possibly more lines changed).
MAX_ALIGN_ITEMS = 200_000
#: Fewest elements of a structural array (`routes`, `data`...) whose element spans a
#: `SpanIndex` keeps: a write then visits only the elements that changed (found by identity,
#: one C-speed pass) instead of stepping over every element in Python (issue 15).
MIN_INDEXED_ITEMS = 16
#: Most edits of one write remapped edit by edit (a few list passes each); more, and the
#: index's offsets are remapped one by one and its element spans dropped.
MAX_STEPWISE_EDITS = 8

_WS = re.compile(r"[ \t\n\r]*")
#: A non-empty array opened on the line of its key (`"tags": ["a"`): Prettier's short arrays.
#: The quote before the colon must not be escaped, so text inside a string never matches.
_INLINE_ARRAY = re.compile(r'(?<!\\)":[ \t]*\[[ \t]*[^\s\]]')


@dataclass(frozen=True)
class Style:
    """How new content is laid out: the file's indent unit (None: compact), line ending, and
    whether short scalar arrays go on one line."""

    unit: str | None = "  "
    newline: str = "\n"
    inline_arrays: bool = False

    @property
    def colon(self) -> str:
        return ":" if self.unit is None else ": "


def detect_style(text: str) -> Style:
    """The style of new content in a file, from the file's text."""
    layout = detect_layout(text)
    if layout.indent is None:
        return Style(None, layout.newline, False)
    return Style(layout.indent, layout.newline, _INLINE_ARRAY.search(text) is not None)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values. Scalars: true is not 1, but 1 is 1.0 (one JavaScript number).
    Containers: Python's C comparison (key order ignored; a true/1 swap deep inside is not
    seen, as in `diff`, because Mockoon's field types never swap)."""
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return type(a) is type(b) and a == b
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if type(a) is float or type(b) is float:
        # Two numbers as JavaScript reads them: a double beyond 2**53 is written as an
        # integer literal (6.72610175114281e16 as 67261017511428100), which reads back as a
        # Python int of another value: the file holds the document all the same.
        try:
            return float(a) == float(b)
        except OverflowError:  # an integer beyond any double: not this float
            return False
    return a == b  # two integers


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Reads values as `jsfmt.parse_json` does (same numbers), one value at a time.
_DECODER = json.JSONDecoder(parse_float=finite_float, parse_constant=_no_constant)


def render_fresh(value: Any, indent: str, style: Style, prefix: int = 0) -> str:
    """A new value's text when its first character sits on a line indented by `indent`
    (`prefix`: characters before it on that line, for the short-array width rule)."""
    if style.unit is None:
        parts: list[str] = []
        _compact(value, parts)
        return "".join(parts)
    parts = []
    _fresh(value, parts, indent, style, prefix)
    return "".join(parts)


def _fresh(value: Any, out: list[str], indent: str, style: Style, prefix: int) -> None:
    s = _scalar(value)
    if s is not None:
        out.append(s)
        return
    unit, nl = style.unit or "", style.newline
    inner = indent + unit
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        first = True
        for k, v in value.items():
            out.append(nl + inner if first else "," + nl + inner)
            first = False
            key = _js_string(str(k))
            out.append(key + ": ")
            _fresh(v, out, inner, style, len(inner) + len(key) + 2)
        out.append(nl + indent + "}")
        return
    if isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        if style.inline_arrays and all(not isinstance(v, dict | list | tuple) for v in value):
            one_line = "[" + ", ".join(_scalar(v) or "null" for v in value) + "]"
            if prefix + len(one_line) + 1 <= SHORT_ARRAY_WIDTH:  # +1: a trailing comma
                out.append(one_line)
                return
        out.append("[")
        for i, v in enumerate(value):
            out.append(nl + inner if i == 0 else "," + nl + inner)
            _fresh(v, out, inner, style, len(inner))
        out.append(nl + indent + "]")
        return
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


# ---------------------------------------------------------------------------- the patcher

Edit = tuple[int, int, str]  # replace text[start:end] by the string


def _apply(text: str, start: int, end: int, edits: list[Edit]) -> str:
    """text[start:end] with `edits` (sorted, disjoint, inside the range) applied."""
    parts: list[str] = []
    at = start
    for s, e, rep in edits:
        parts.append(text[at:s])
        parts.append(rep)
        at = e
    parts.append(text[at:end])
    return "".join(parts)


def _js_view(v: Any) -> Any:
    """`v` with every number as the double JavaScript reads (an integer beyond any double
    stays as it is): `0.0` and `0`, or a double and its integer spelling, are one value."""
    if isinstance(v, dict):
        return {k: _js_view(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_js_view(x) for x in v]
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:
            return v
    return v


def _align_key(v: Any) -> Any:
    """What identifies an array element across versions: its entity uuid, else its value
    (numbers as JavaScript reads them, so a file's `0.0` still pairs with a document's 0)."""
    if isinstance(v, dict):
        u = v.get("uuid")
        if isinstance(u, str):
            return ("u", u)
        return ("o", json.dumps(_js_view(v), sort_keys=True))
    if isinstance(v, list):
        return ("a", json.dumps(_js_view(v), sort_keys=True))
    if isinstance(v, int | float) and not isinstance(v, bool):
        return ("s", "n", _js_view(v))
    return ("s", type(v).__name__ if isinstance(v, bool) or v is None else "t", v)


_ONE_LINE_OBJECT = re.compile(r'\{([ \t]*)"(?:[^"\\]|\\.)*"([ \t]*:[ \t]*)[^\n]*?([ \t]*)\}')


def _one_line_like(neighbour: str, value: Any) -> str | None:
    """`value` on one line like `neighbour`, an object written on one line by a person or
    Prettier (`{ "type": "route", "uuid": "..." }`), when `value` is an object of scalars;
    else None (rendered in the file's style)."""
    if not isinstance(value, dict) or not value or "\n" in neighbour:
        return None
    if any(isinstance(v, dict | list) for v in value.values()):
        return None
    m = _ONE_LINE_OBJECT.fullmatch(neighbour)
    if m is None:
        return None
    pad, colon, close = m.group(1), m.group(2), m.group(3)
    sep = ", " if pad or ", " in neighbour else ","
    body = sep.join(_js_string(str(k)) + colon + (_scalar(v) or "null") for k, v in value.items())
    return "{" + pad + body + close + "}"


class _Patcher:
    """One patch of one text: walks old text and new document, collecting edits."""

    def __init__(self, text: str, style: Callable[[], Style],
                 ends: dict[int, int] | None = None) -> None:
        self.text = text
        self._style_fn = style
        self._style: Style | None = None
        #: Where the value starting at an offset ends, for values already walked in this text
        #: (`SpanIndex.ends`): an unchanged value is then stepped over without scanning it.
        self.ends: dict[int, int] = ends if ends is not None else {}
        #: Ends learnt by scanning during this patch (added to the index afterwards).
        self.learnt: dict[int, int] = {}
        #: Element spans of structural arrays, by the array's offset: (starts, ends, close)
        #: known from the index, and those walked during this patch (see `ElemSpans`).
        self.elems: dict[int, ElemSpans] = {}
        self.walked: dict[int, ElemSpans] = {}

    @property
    def style(self) -> Style:
        if self._style is None:
            self._style = self._style_fn()
        return self._style

    # ------------------------------------------------------------------ lexing
    def ws(self, pos: int) -> int:
        return _WS.match(self.text, pos).end()  # type: ignore[union-attr]

    def scan(self, pos: int) -> tuple[Any, int]:
        try:
            return _DECODER.scan_once(self.text, pos)  # type: ignore[attr-defined]
        except StopIteration:
            raise PatchError(f"not JSON at character {pos}") from None
        except (ValueError, RecursionError) as exc:
            raise PatchError(f"not JSON at character {pos}: {exc}") from None

    def skip(self, pos: int) -> int:
        """The end of the (unchanged) value at `pos`: known from the index, else scanned."""
        end = self.ends.get(pos)
        if end is None:
            end = self.scan(pos)[1]
            self.learnt[pos] = end
        return end

    def expect(self, pos: int, chars: str) -> str:
        if pos >= len(self.text) or self.text[pos] not in chars:
            raise PatchError(f"expected one of {chars!r} at character {pos}")
        return self.text[pos]

    def line_indent(self, pos: int) -> str:
        start = self.text.rfind("\n", 0, pos) + 1
        m = re.compile(r"[ \t]*").match(self.text, start)
        return m.group(0) if m else ""

    # ------------------------------------------------------------------ walking
    def value(self, pos: int, old: Any, new: Any, out: list[Edit], depth: int) -> int:
        """Patch the value at `pos` (whose parsed value is `old`) to `new`; returns its end."""
        ch = self.text[pos]
        if depth < STRUCTURAL_DEPTH and (
                (ch == "{" and type(old) is dict and type(new) is dict)
                or (ch == "[" and type(old) is list and type(new) is list)):
            # The environment object and its arrays are walked member by member whatever
            # changed: comparing each member once costs one comparison of the document, where
            # comparing the whole first would cost two.
            walk = self.obj if ch == "{" else self.arr
            return walk(pos, old, new, out, depth + 1)  # type: ignore[arg-type]
        if _same(old, new):
            return self.skip(pos)
        if depth < MAX_PATCH_DEPTH:
            if ch == "{" and isinstance(new, dict) and isinstance(old, dict):
                return self.obj(pos, old, new, out, depth + 1)
            if ch == "[" and isinstance(new, list) and isinstance(old, list):
                return self.arr(pos, old, new, out, depth + 1)
        end = self.skip(pos)
        out.append((pos, end, self.fresh_at(pos, new)))
        return end

    def fresh_at(self, pos: int, value: Any) -> str:
        scalar = _scalar(value)
        if scalar is not None:  # the common edit: no need to know the file's style
            return scalar
        indent = self.line_indent(pos)
        line_start = self.text.rfind("\n", 0, pos) + 1
        return render_fresh(value, indent, self.style, pos - line_start)

    def obj(self, pos: int, old: dict[str, Any], new: dict[str, Any], out: list[Edit],
            depth: int) -> int:
        text = self.text
        # items: (key, key start, value start, value end), and the edits inside each.
        items: list[tuple[str, int, int, int]] = []
        item_edits: list[list[Edit]] = []
        seen: set[str] = set()
        p = self.ws(pos + 1)
        if text[p] == "}":
            close = p
        else:
            while True:
                self.expect(p, '"')
                try:
                    key, kend = scanstring(text, p + 1, True)
                except ValueError as exc:
                    raise PatchError(f"bad key at character {p}: {exc}") from None
                c = self.ws(kend)
                self.expect(c, ":")
                vstart = self.ws(c + 1)
                if key in seen:  # a duplicate key: the parser kept the last; rewrite it all
                    end = self.scan(pos)[1]
                    out.append((pos, end, self.fresh_at(pos, new)))
                    return end
                seen.add(key)
                mine: list[Edit] = []
                if key in new:
                    vend = self.value(vstart, old[key], new[key], mine, depth)
                else:
                    vend = self.skip(vstart)
                items.append((key, p, vstart, vend))
                item_edits.append(mine)
                p = self.ws(vend)
                if self.expect(p, ",}") == "}":
                    close = p
                    break
                p = self.ws(p + 1)
        end = close + 1
        if len(new) == len(items) and all(k in new for k, *_r in items):
            for mine in item_edits:  # same members: only values changed, in place
                out.extend(mine)
            return end
        # Members changed: rebuild the inside from kept member texts and fresh ones.
        colon = self._colon(items)
        fresh_indent = self._child_indent(pos, [(s, e) for _k, s, _v, e in items])
        kept = {k: i for i, (k, *_r) in enumerate(items) if k in new}
        # Each new member goes after the kept member preceding it in the new order.
        after: dict[int, list[str]] = {}
        last = -1
        for k in new:
            if k in kept:
                last = kept[k]
            else:
                after.setdefault(last, []).append(k)

        def fresh_member(k: str) -> str:
            key = _js_string(k)
            return key + colon + render_fresh(new[k], fresh_indent, self.style,
                                              len(fresh_indent) + len(key) + len(colon))

        seq: list[tuple[int, str]] = [(-1, fresh_member(k)) for k in after.get(-1, [])]
        for i, (k, ks, _vs, ve) in enumerate(items):
            if k in new:
                seq.append((i, _apply(text, ks, ve, item_edits[i])))
                seq += [(-1, fresh_member(k2)) for k2 in after.get(i, [])]
        out.append(self._rebuild(pos, close, [(s, e) for _k, s, _v, e in items], seq))
        return end

    def arr(self, pos: int, old: list[Any], new: list[Any], out: list[Edit],
            depth: int) -> int:
        if depth <= STRUCTURAL_DEPTH:
            known = self.elems.get(pos)
            if known is not None and len(known[0]) == len(old) == len(new):
                end = self._arr_known(old, new, out, depth, known)
                if end is not None:
                    self.walked[pos] = known
                    return end
        text = self.text
        pairs = self._pair(old, new)  # old index -> new index, increasing
        spans: list[tuple[int, int]] = []
        patched: dict[int, str] = {}  # the new text of elements edited in place
        in_place: list[Edit] = []
        ends = self.ends
        p = self.ws(pos + 1)
        i = 0
        if text[p] == "]":
            close = p
        else:
            while True:
                if i >= len(old):
                    raise PatchError(f"array at character {pos} has more elements than parsed")
                j = pairs.get(i)
                if j is None:
                    vend = self.skip(p)
                elif old[i] is new[j]:  # the very same object (a render's cache): unchanged
                    vend = ends.get(p) or self.skip(p)
                else:
                    mine: list[Edit] = []
                    vend = self.value(p, old[i], new[j], mine, depth)
                    if mine:
                        patched[i] = _apply(text, p, vend, mine)
                        in_place += mine
                spans.append((p, vend))
                i += 1
                p = self.ws(vend)
                if self.expect(p, ",]") == "]":
                    close = p
                    break
                p = self.ws(p + 1)
        end = close + 1
        if depth <= STRUCTURAL_DEPTH and len(spans) >= MIN_INDEXED_ITEMS:
            self.walked[pos] = ([a for a, _b in spans], [b for _a, b in spans], close)
        if len(pairs) == len(old) == len(new):
            out.extend(in_place)
            return end
        fresh_indent = self._child_indent(pos, spans)
        back = {j: i for i, j in pairs.items()}

        def texts(k: int) -> str:  # an old element's text (edited in place, if it was)
            got = patched.get(k)
            return got if got is not None else text[spans[k][0]:spans[k][1]]

        seq: list[tuple[int, str]] = []
        near = -1  # the old element nearest to a new one: its layout is followed
        for j, v in enumerate(new):
            i2 = back.get(j)
            if i2 is not None:
                seq.append((i2, texts(i2)))
                near = i2
                continue
            if near < 0 and spans:
                near = min((i for i in back.values() if i >= 0), default=0)
            like = _one_line_like(texts(near), v) if spans else None
            seq.append((-1, like if like is not None else
                        render_fresh(v, fresh_indent, self.style, len(fresh_indent))))
        if not spans and self.style.unit is not None and self.style.inline_arrays and all(
                not isinstance(v, dict | list) for v in new):
            one = render_fresh(new, self.line_indent(pos), self.style,
                               pos - text.rfind("\n", 0, pos) - 1)
            if "\n" not in one:
                out.append((pos, end, one))
                return end
        out.append(self._rebuild(pos, close, spans, seq))
        return end

    def _arr_known(self, old: list[Any], new: list[Any], out: list[Edit], depth: int,
                   known: ElemSpans) -> int | None:
        """A structural array whose element spans the index knows, with as many elements as
        before: patch only the elements that are not the very same objects (a render's
        cache hands back the same object for every untouched entity), when each kept its
        place (same entity uuid). None: walk it whole."""
        starts, ends, close = known
        changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a is not b]
        if any(_align_key(old[i]) != _align_key(new[i]) for i in changed):
            return None
        mine: list[Edit] = []
        for i in changed:
            if _same(old[i], new[i]):
                continue
            if self.value(starts[i], old[i], new[i], mine, depth) != ends[i]:
                raise PatchError(f"the index's element at character {starts[i]} is stale")
        out.extend(mine)
        return close + 1

    def _pair(self, old: list[Any], new: list[Any]) -> dict[int, int]:
        """Which old element becomes which new one (increasing on both sides)."""
        if len(old) == len(new) and all(
                a is b or _align_key(a) == _align_key(b) for a, b in zip(old, new, strict=True)):
            return {i: i for i in range(len(old))}  # (keys made only for changed elements)
        ko = [_align_key(v) for v in old]
        kn = [_align_key(v) for v in new]
        if ko == kn:
            return {i: i for i in range(len(old))}
        if len(old) > MAX_ALIGN_ITEMS or len(new) > MAX_ALIGN_ITEMS:
            n = min(len(old), len(new))
            return {i: i for i in range(n)}
        out: dict[int, int] = {}
        sm = difflib.SequenceMatcher(None, ko, kn, autojunk=False)
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            if tag == "equal":
                out.update({i1 + d: j1 + d for d in range(i2 - i1)})
            elif tag == "replace":
                # Values in the same place (no entity ids): the element is edited in place.
                for d in range(min(i2 - i1, j2 - j1)):
                    if ko[i1 + d][0] != "u" and kn[j1 + d][0] != "u":
                        out[i1 + d] = j1 + d
        return out

    # ------------------------------------------------------------------ layout of members
    def _colon(self, items: list[tuple[str, int, int, int]]) -> str:
        """What goes between a key and its value: the neighbours', else the style's."""
        for _k, ks, vs, _ve in items:
            # The key's text ends at the colon's left: find the colon between them.
            c = self.text.rfind(":", ks, vs)
            k_end = c
            while k_end > ks and self.text[k_end - 1] in " \t\r\n":
                k_end -= 1
            return self.text[k_end:vs]
        return self.style.colon

    def _child_indent(self, pos: int, spans: list[tuple[int, int]]) -> str:
        """Indentation of a new member: that of the first existing one when it starts a line,
        else one unit deeper than the container's line."""
        if spans:
            gap = self.text[pos + 1:spans[0][0]]
            if "\n" in gap:
                return gap[gap.rfind("\n") + 1:]
        return self.line_indent(pos) + (self.style.unit or "")

    def _rebuild(self, pos: int, close: int, spans: list[tuple[int, int]],
                 seq: list[tuple[int, str]]) -> Edit:
        """The edit replacing a container's inside by `seq` ((old index or -1, text) per
        member), keeping the gaps of members that stay neighbours."""
        text = self.text
        if not seq:
            return (pos + 1, close, "")
        if spans:
            open_gap = text[pos + 1:spans[0][0]]
            close_gap = text[spans[-1][1]:close]
            seps = [text[spans[k][1]:spans[k + 1][0]] for k in range(len(spans) - 1)]
        else:
            open_gap = close_gap = ""
            seps = []
            if self.style.unit is not None:
                indent = self.line_indent(pos)
                open_gap = self.style.newline + indent + self.style.unit
                close_gap = self.style.newline + indent
        inline = "\n" not in open_gap and self.style.unit is not None
        default_sep = ", " if inline else "," + open_gap
        parts = [open_gap]
        prev = None
        for n, (i, member_text) in enumerate(seq):
            if n:
                if prev is not None and prev >= 0 and i == prev + 1:
                    parts.append(seps[prev])
                elif seps:
                    near = prev if prev is not None and 0 <= prev < len(seps) else \
                        min(max(i - 1, 0), len(seps) - 1)
                    parts.append(seps[near])
                else:
                    parts.append(default_sep)
            parts.append(member_text)
            prev = i
        parts.append(close_gap)
        return (pos + 1, close, "".join(parts))


def patch_text(text: str, new: Any, old: Any = None, *, verify: bool = True) -> str | None:
    """`text` changed so that it holds `new`, keeping every untouched span byte for byte.

    None when `text` already holds `new` (nothing to write). `old` is `text` parsed, when the
    caller has it (saves a parse). Raises PatchError when `text` is not a JSON object (the
    caller then renders whole). With `verify`, the result is parsed back and compared.
    """
    return _patch(text, new, old, None, verify=verify)[0]


@dataclass
class SpanIndex:
    """What the last patch knew of a file's text, so the next one does not re-read it.

    `text` is the file's whole text, `doc` the value it holds (never mutated: a render's
    output or a parse), `ends` the end offset of values that start at an offset (offsets in
    the text after any byte order mark): the values a patch stepped over, which are about one
    per entity. A write whose file still holds `text` then needs no parse at all, and steps
    over every unchanged route without scanning it: its cost is one C comparison of the
    document plus the changed entities, not a parse and walk of 15 MB.
    """

    text: str
    doc: Any
    ends: dict[int, int]
    #: Element spans of the structural arrays (`routes`, `data`...), by array offset.
    elems: dict[int, ElemSpans] = field(default_factory=dict)


#: Where the elements of an array are: their start offsets, their end offsets (both
#: increasing) and the offset of the closing bracket.
ElemSpans = tuple[list[int], list[int], int]


def _band(a: int, b: int, s: int, e: int) -> bool:
    """Does the value a..b touch the edit s..e other than by wholly holding it?"""
    return not (b < s or a >= e or (a < s and b > e))


def _remap_one(ends: dict[int, int], s: int, e: int, d: int) -> dict[int, int]:
    """`remap_ends` for one edit replacing s..e, growing the text by `d`: values before it
    stay, those after it move by `d`, those holding it grow by `d` (C-speed passes); the
    few touching it follow `remap_ends`'s rules one by one."""
    out = {a if a < s else a + d: b if b < s else b + d
           for a, b in ends.items() if b < s or a >= e or (a < s and b > e)}
    for a, b in [(a, b) for a, b in ends.items()
                 if not (b < s or a >= e or (a < s and b > e))]:  # (`_band`, inlined)
        if s < a < e:
            continue  # inside the edit: gone
        if b >= e:
            out[a] = b + d  # (a <= s here) it holds or is replaced by the edit
        elif b <= s:
            out[a] = b
        # else: the edit cuts across its end: forgotten
    return out


def _moved(x: int, s: int, e: int, d: int) -> int | None:
    """Offset `x` (a value's start or end) through the edit s..e growing the text by `d`:
    None when the edit cuts through it (`remap_ends`'s rules)."""
    if e <= x:
        return x + d
    return None if s < x else x


def remap_elems(elems: dict[int, ElemSpans], edits: list[Edit]) -> dict[int, ElemSpans]:
    """Element spans moved through `edits` (sorted, disjoint); an array an edit cuts into
    (an element inserted, removed, cut) is dropped: the next write walks it whole and
    learns it again. A few list passes per edit, not a Python step per element."""
    if not edits:
        return dict(elems)
    if len(edits) > MAX_STEPWISE_EDITS:
        return {}
    out = dict(elems)
    for s, e, rep in reversed(edits):  # later edits first: earlier offsets stay valid
        d = len(rep) - (e - s)
        nxt: dict[int, ElemSpans] = {}
        for pos, (starts, ends, close) in out.items():
            npos, nclose = _moved(pos, s, e, d), _moved(close, s, e, d)
            if npos is None or nclose is None:
                continue
            k1 = bisect.bisect_left(ends, s)  # elements before k1 end before the edit
            k2 = bisect.bisect_left(starts, e)  # those from k2 start after it
            if d == 0 and k1 >= k2:
                nxt[npos] = (starts, ends, nclose)
                continue
            new_starts = [a if a < s else a + d for a in starts]
            new_ends = [b if b < s else b + d for b in ends]
            for k in range(k1, k2):  # elements touching the edit: one by one
                na, nb = _moved(starts[k], s, e, d), _moved(ends[k], s, e, d)
                if na is None or nb is None:
                    break
                new_starts[k], new_ends[k] = na, nb
            else:
                nxt[npos] = (new_starts, new_ends, nclose)
        out = nxt
    return out


def remap_ends(ends: dict[int, int], edits: list[Edit]) -> dict[int, int]:
    """`ends` moved through `edits` (sorted, disjoint): a value before or after every edit is
    shifted by the edits before it, one holding edits grows or shrinks by them, one an edit
    replaced whole spans its replacement; one that an edit cuts into is forgotten."""
    if not edits:
        return dict(ends)
    if len(edits) <= MAX_STEPWISE_EDITS:
        for s, e, rep in reversed(edits):  # later edits first: earlier offsets stay valid
            ends = _remap_one(ends, s, e, len(rep) - (e - s))
        return ends
    starts = [s for s, _e, _r in edits]
    stops = [e for _s, e, _r in edits]
    shift = [0]
    for s, e, rep in edits:
        shift.append(shift[-1] + len(rep) - (e - s))
    n = len(edits)
    out: dict[int, int] = {}
    for a, b in ends.items():
        i = bisect.bisect_right(stops, a)  # edits wholly before a
        if i < n and starts[i] < a:
            continue  # a is inside an edit: the value is gone
        j = bisect.bisect_right(stops, b)
        if j < n and starts[j] < b:
            continue  # an edit cuts across the value's end
        out[a + shift[i]] = b + shift[j]
    return out


def _patch(text: str, new: Any, old: Any, ends: dict[int, int] | None, *, verify: bool,
           elems: dict[int, ElemSpans] | None = None,
           ) -> tuple[str | None, dict[int, int], dict[int, ElemSpans]]:
    """`patch_text`, also returning the ends and element spans known in the result (see
    SpanIndex)."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    body = text[len(bom):]
    if old is None:
        try:
            old = parse_json(body)
        except ValidationError as exc:
            raise PatchError(f"the file is not JSON ({exc})") from None
    if not isinstance(old, dict) or not isinstance(new, dict):
        if _same(old, new):
            return None, {}, {}
        raise PatchError("the file does not hold a JSON object")
    patcher = _Patcher(body, lambda: detect_style(body), ends)
    if elems:
        patcher.elems = elems
    start = patcher.ws(0)
    edits: list[Edit] = []
    with gc_paused():
        patcher.value(start, old, new, edits, 0)
    known = patcher.ends
    if patcher.learnt:
        known = {**known, **patcher.learnt} if known else patcher.learnt
    if not edits:
        return None, known, patcher.walked
    edits.sort()
    out = bom + _apply(body, 0, len(body), edits)
    if verify:
        try:
            back = parse_json(out[len(bom):])
        except ValidationError:
            back = _Unreadable
        if back != new and not _js_equal(back, new):
            raise PatchError("the patched text does not read back as the document")
    return out, remap_ends(known, edits), remap_elems(patcher.walked, edits)


def _js_equal(a: Any, b: Any) -> bool:
    """Equal as JavaScript reads them: numbers compare as doubles (18014400656965630 is the
    double 1.801440065696563e16, which JavaScript writes without an exponent)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _js_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(
            _js_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and not isinstance(a, bool) and \
            isinstance(b, int | float) and not isinstance(b, bool):
        return float(a) == float(b)
    return _same(a, b)


class _UnreadableType:
    pass


_Unreadable: Any = _UnreadableType()


def text_to_write(previous: str | bytes | None, doc: dict[str, Any], layout: Layout,
                  cache: dict[str, tuple[Any, int, str]] | None = None) -> str | None:
    """The text a writer should put in a file that now holds `previous`, for `doc`.

    None: the file already holds `doc` (write nothing). Otherwise the previous text with only
    the changed spans replaced, or, when there is no previous text or it cannot be patched,
    `doc` rendered whole in `layout`. `cache` (see `jsfmt.dumps`) also keeps a `SpanIndex` of
    the text handed out last, so the next write to an unchanged file parses nothing: it keeps
    `doc` for that, so with a cache, `doc` is never edited after the call (a render's output
    never is); a new document object each call, as `render` makes.
    """
    text: str | None
    if isinstance(previous, bytes | bytearray):
        try:
            text = bytes(previous).decode("utf-8")
        except UnicodeDecodeError:
            text = None
    else:
        text = previous
    index = _index_for(cache, text)
    if index is not None and index.doc is doc:
        index = None  # the caller edited the very document it handed in last time
    if index is None and text is not None and cache is not None:
        last = cache.get(_LAST_FULL)
        if last is not None and last[2] == text:
            # The file is exactly the whole render we handed out last time (Mockoon's layout):
            # rendering whole with the cache is then the patch (a tested property) and cheaper
            # than parsing and walking the text.
            return _full(doc, layout, cache, text)
    if text is not None:
        try:
            out, ends, elems = _patch(text, doc, index.doc if index else None,
                                      index.ends if index else None,
                                      verify=len(text) <= MAX_VERIFIED_CHARS,
                                      elems=index.elems if index else None)
        except PatchError:
            pass
        else:
            _remember(cache, SpanIndex(text if out is None else out, doc, ends, elems))
            return out
    return _full(doc, layout, cache, text)


#: Keys of `text_to_write`'s own entries in a text cache (never an entity uuid).
_LAST_FULL = "\x00last-full-render"
_SPAN_INDEX = "\x00span-index"


def indexed_text(cache: dict[str, tuple[Any, int, str]]) -> str | None:
    """The text the cache's span index was made for (what `text_to_write` handed out or
    found last): a caller that keeps it and hands it back spares the next call a decode."""
    entry = cache.get(_SPAN_INDEX)
    index = entry[0] if entry is not None else None
    return index.text if isinstance(index, SpanIndex) else None


def index_unwalked(cache: dict[str, tuple[Any, int, str]]) -> bool:
    """Is the cache's span index one of a whole render handed out (no value end known yet)?
    The next patch of that text then walks all of it first (~0.15 s per 5 MB, the slowest
    edit of all, issue 15): `walk_index` does that ahead, on a spare thread."""
    entry = cache.get(_SPAN_INDEX)
    index = entry[0] if entry is not None else None
    last = cache.get(_LAST_FULL)
    return isinstance(index, SpanIndex) and not index.ends and last is not None \
        and last[2] is index.text


def walk_index(cache: dict[str, tuple[Any, int, str]]) -> bool:
    """Learn the value ends of an unwalked index (`index_unwalked`) by walking its text
    against its own document: what the next patch would do first. Reads only the index; the
    result replaces it only if it is still the index in the cache (a write that came
    meanwhile keeps its own). Safe on another thread than the writer's. True when learnt."""
    entry = cache.get(_SPAN_INDEX)
    if entry is None or not index_unwalked(cache):
        return False
    index: SpanIndex = entry[0]
    try:
        out, ends, elems = _patch(index.text, index.doc, index.doc, {}, verify=False)
    except PatchError:
        return False
    if out is not None:  # (cannot be: a document against itself): leave the index as it is
        return False
    return _remember(cache, SpanIndex(index.text, index.doc, ends, elems), over=entry)


def _index_for(cache: dict[str, tuple[Any, int, str]] | None, text: str | None,
               ) -> SpanIndex | None:
    """The cached index when it is of exactly `text` (the file as the last write left it)."""
    if cache is None or text is None:
        return None
    entry = cache.get(_SPAN_INDEX)
    index = entry[0] if entry is not None else None
    if isinstance(index, SpanIndex) and index.text == text:
        return index
    return None


#: Held while a span index is put in a cache: `walk_index` (a spare thread) replaces an
#: index only if it is still the one it walked.
_CACHE_LOCK = threading.Lock()


def _remember(cache: dict[str, tuple[Any, int, str]] | None, index: SpanIndex, *,
              over: Any = None) -> bool:
    """Put `index` in `cache`; with `over`, only if that entry is still the one there."""
    if cache is None:
        return False
    if len(index.ends) > MAX_INDEX_ENDS:
        index = SpanIndex(index.text, index.doc, {}, index.elems)
    with _CACHE_LOCK:
        if over is not None and cache.get(_SPAN_INDEX) is not over:
            return False
        cache[_SPAN_INDEX] = (index, -1, "")
    return True


def _full(doc: dict[str, Any], layout: Layout,
          cache: dict[str, tuple[Any, int, str]] | None, text: str | None) -> str | None:
    out = dumps(doc, layout, cache)
    if cache is not None:
        cache[_LAST_FULL] = (None, -1, out)
        _remember(cache, SpanIndex(out, doc, {}))
    return None if out == text else out
