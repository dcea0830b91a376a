"""Parse a save as what it changed: the text spans of the entities whose text changed.

An editor's save of a 15 MB environment usually changes one property. Parsing the whole
text again (1.5 million Python objects), flattening all its entities and comparing them
with the last version costs hundreds of milliseconds, all for one value. So the parse of a
save starts from the previous version (`ParsedEnv`, with an `EnvSpans` index of where each
entity's text lies):

1. the texts are compared in C (chunked slices): the common prefix and suffix leave one
   changed region;
2. the innermost entity whose span holds the whole region (a response, data bucket,
   callback, folder or route) is found in the index by bisection;
3. only that entity's new text is parsed; the new document shares every other object with
   the previous one (paths to the entity are copied, never mutated), and the entity views
   are the previous ones but the re-parsed entity's (and a route's responses');
4. `diff` then compares only the views that are not the very same objects, and skips the
   ordering pass when no entity moved (see `diff.diff`).

Anything else (a change between entities, a uuid changed, a folder's children edited, a
top-level field edited, text that does not parse) returns None and the caller parses the
whole text, which stays the reference: the result of `reparse` is equal to a full parse
(tested property). Pure: texts in, values out.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]  # the C scanner, not in typeshed
from typing import Any, AnyStr

from ..errors import ValidationError
from .flatten import MAX_ENTITIES, MAX_UUID_LENGTH, EntityView, _view
from .jsfmt import finite_float, gc_paused, parse_json
from .schema import BUCKET, CALLBACK, FOLDER, LIST, RESPONSE, ROUTE

#: Characters compared per slice when looking for the common prefix and suffix: big enough
#: that the C comparison dominates, small enough that a slice copy is cheap.
COMPARE_CHUNK = 1 << 16
#: Most entity spans an index holds; an environment with more (far past the plans' 15 MB)
#: is parsed whole on every save.
MAX_INDEXED_ENTITIES = 500_000

_WS = frozenset(" \t\n\r")

#: Which top-level array holds which entity kind.
_TOP_ARRAYS = {"routes": ROUTE, "data": BUCKET, "callbacks": CALLBACK, "folders": FOLDER}

Path = tuple[Any, ...]  # ("routes", i) | ("routes", i, j) | ("data", i) | ...


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=finite_float, parse_constant=_no_constant)


# ---------------------------------------------------------------------------- span lists

#: Spans per block of a `SpanList`. An edit rebuilds the one or two blocks it touches and
#: moves every later block by changing its offset: a few hundred small objects for a 15 MB
#: environment's 100 000 entities, not a new tuple for each (issue 15, P15c).
SPAN_BLOCK = 256

Span = tuple[int, int, Path]  # (start, end, path) in the text's offsets


@dataclass(frozen=True)
class _Block:
    """Spans sorted by start; each real offset is the stored one plus `off` (shared
    lists: a block moved by an edit is a new `_Block` over the same lists)."""

    starts: list[int]
    ends: list[int]
    paths: list[Path]
    off: int
    max_end: int  # the largest stored end

    @classmethod
    def of(cls, spans: list[Span]) -> _Block:
        ends = [e for _s, e, _p in spans]
        return cls([s for s, _e, _p in spans], ends, [p for _s, _e, p in spans], 0, max(ends))

    def items(self) -> list[Span]:
        o = self.off
        return [(s + o, e + o, p) for s, e, p in zip(self.starts, self.ends, self.paths,
                                                      strict=True)]


class SpanList:
    """Disjoint entity spans sorted by start, in blocks with an offset each: `moved` and
    `replaced` (what one edit does to them) cost the touched blocks plus one step per
    block, not one per span. Immutable: every change makes a new list sharing the rest."""

    __slots__ = ("_blocks", "_firsts", "_count")

    def __init__(self, blocks: list[_Block]) -> None:
        self._blocks = blocks
        self._firsts = [b.starts[0] + b.off for b in blocks]
        self._count = sum(len(b.starts) for b in blocks)

    @classmethod
    def of(cls, spans: list[Span]) -> SpanList:
        """From (start, end, path) spans in any order."""
        spans = sorted(spans)
        return cls([_Block.of(spans[i:i + SPAN_BLOCK]) for i in range(0, len(spans), SPAN_BLOCK)])

    def __len__(self) -> int:
        return self._count

    def items(self) -> list[Span]:
        """Every span, sorted by start."""
        return [span for b in self._blocks for span in b.items()]

    def holding(self, lo: int, hi: int) -> Span | None:
        """The span that holds [lo, hi), if one does."""
        k = bisect.bisect_right(self._firsts, lo) - 1
        if k < 0:
            return None
        b = self._blocks[k]
        i = bisect.bisect_right(b.starts, lo - b.off) - 1
        s, e = b.starts[i] + b.off, b.ends[i] + b.off
        return (s, e, b.paths[i]) if s <= lo and hi <= e else None

    def moved(self, lo: int, hi: int, delta: int) -> SpanList:
        """The spans through one edit replacing [lo, hi) by `delta` more characters: those
        after it shift, one holding it grows, those it cuts into are dropped."""
        out: list[_Block] = []
        for b in self._blocks:
            if b.max_end + b.off <= lo:
                out.append(b)  # wholly before the edit
            elif b.starts[0] + b.off >= hi:
                out.append(_Block(b.starts, b.ends, b.paths, b.off + delta, b.max_end))
            else:
                kept = [(s, e if e <= lo else e + delta, p) if s < hi else
                        (s + delta, e + delta, p) for s, e, p in b.items()
                        if s >= hi or e <= lo or (s <= lo and e >= hi)]
                if kept:
                    out.append(_Block.of(kept))
        return SpanList(out)

    def replaced(self, lo: int, hi: int, new: list[Span]) -> SpanList:
        """These spans with every one starting in [lo, hi) replaced by `new` (spans within
        [lo, hi), e.g. a re-parsed route's responses)."""
        a = max(bisect.bisect_right(self._firsts, lo) - 1, 0)
        z = bisect.bisect_left(self._firsts, hi)
        run = [span for b in self._blocks[a:z] for span in b.items()
               if not lo <= span[0] < hi] + new
        run.sort()
        mid = [_Block.of(run[i:i + SPAN_BLOCK]) for i in range(0, len(run), SPAN_BLOCK)]
        return SpanList(self._blocks[:a] + mid + self._blocks[z:])


@dataclass(frozen=True)
class EnvSpans:
    """Where each entity's text lies in one version of the file (offsets in the text after
    any byte order mark): top-level entities (routes, buckets, callbacks, folders) and
    responses apart, since responses nest in routes."""

    top: SpanList = field(default_factory=lambda: SpanList([]))
    resp: SpanList = field(default_factory=lambda: SpanList([]))

    def __len__(self) -> int:
        return len(self.top) + len(self.resp)


# ---------------------------------------------------------------------------- text compare


def common_prefix(a: AnyStr, b: AnyStr) -> int:
    """Length of the longest common prefix of `a` and `b` (C comparisons of slices; text or
    bytes: the store compares a base with its anchor the same way)."""
    n = min(len(a), len(b))
    i = 0
    while i < n:
        j = min(i + COMPARE_CHUNK, n)
        if a[i:j] != b[i:j]:
            lo, hi = i, j  # a[i:lo] == b[i:lo]; a[i:hi] != b[i:hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[lo:mid] == b[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            return lo
        i = j
    return n


def common_suffix(a: AnyStr, b: AnyStr, limit: int) -> int:
    """Length of the longest common suffix of `a` and `b`, at most `limit`."""
    la, lb = len(a), len(b)
    i = 0
    while i < limit:
        j = min(i + COMPARE_CHUNK, limit)
        if a[la - j:la - i] != b[lb - j:lb - i]:
            lo, hi = i, j  # the last lo characters are equal; the last hi are not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
                    lo = mid
                else:
                    hi = mid
            return lo
        i = j
    return limit


# ---------------------------------------------------------------------------- indexing


class _Walker:
    """Steps through JSON text without building values, except where it must (scan_once)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def ws(self, pos: int) -> int:
        text = self.text
        n = len(text)
        while pos < n and text[pos] in _WS:
            pos += 1
        return pos

    def skip(self, pos: int) -> int:
        try:
            return _DECODER.scan_once(self.text, pos)[1]  # type: ignore[attr-defined]
        except StopIteration:
            raise ValidationError(f"not JSON at character {pos}") from None
        except (ValueError, RecursionError) as exc:
            raise ValidationError(f"not JSON at character {pos}: {exc}") from None

    def members(self, pos: int) -> list[tuple[str, int]]:
        """(key, value start) of the object at `pos`, stepping over each value."""
        text = self.text
        if text[pos] != "{":
            raise ValidationError(f"expected an object at character {pos}")
        out: list[tuple[str, int]] = []
        p = self.ws(pos + 1)
        if text[p] == "}":
            return out
        while True:
            if text[p] != '"':
                raise ValidationError(f"expected a key at character {p}")
            key, kend = scanstring(text, p + 1, True)
            c = self.ws(kend)
            if text[c] != ":":
                raise ValidationError(f"expected ':' at character {c}")
            v = self.ws(c + 1)
            out.append((key, v))
            p = self.ws(self.end_of(v))
            if text[p] == "}":
                return out
            if text[p] != ",":
                raise ValidationError(f"expected ',' or '}}' at character {p}")
            p = self.ws(p + 1)

    def elements(self, pos: int) -> list[tuple[int, int]]:
        """(start, end) of each element of the array at `pos`."""
        text = self.text
        if text[pos] != "[":
            raise ValidationError(f"expected an array at character {pos}")
        out: list[tuple[int, int]] = []
        p = self.ws(pos + 1)
        if text[p] == "]":
            return out
        while True:
            end = self.end_of(p)
            out.append((p, end))
            p = self.ws(end)
            if text[p] == "]":
                return out
            if text[p] != ",":
                raise ValidationError(f"expected ',' or ']' at character {p}")
            p = self.ws(p + 1)

    def end_of(self, pos: int) -> int:
        return self.skip(pos)


def _route_responses(w: _Walker, start: int, ri: int) -> list[tuple[int, int, Path]]:
    at = [v for key, v in w.members(start) if key == "responses"]
    if not at or w.text[at[-1]] != "[":  # (the parser keeps a repeated key's last value)
        return []
    return [(s, e, ("routes", ri, j)) for j, (s, e) in enumerate(w.elements(at[-1]))]


def index_text(body: str) -> EnvSpans:
    """The entity spans of an environment's text (one C scan of the text: done once per
    file, then kept up to date through each edit by `reparse`)."""
    w = _Walker(body)
    top: list[tuple[int, int, Path]] = []
    resp: list[tuple[int, int, Path]] = []
    start = w.ws(0)
    with gc_paused():
        members = w.members(start)
        if len({k for k, _v in members}) != len(members):
            raise ValidationError("a repeated key at the top level")  # parsed whole instead
        for key, v in members:
            if key not in _TOP_ARRAYS or body[v] != "[":
                continue
            for i, (s, e) in enumerate(w.elements(v)):
                top.append((s, e, (key, i)))
                if key == "routes" and body[s] == "{":
                    resp += _route_responses(w, s, i)
    return _spans(top, resp)


def _spans(top: list[tuple[int, int, Path]], resp: list[tuple[int, int, Path]]) -> EnvSpans:
    return EnvSpans(SpanList.of(top), SpanList.of(resp))


# ---------------------------------------------------------------------------- reparse


@dataclass(frozen=True)
class Reparsed:
    """A save parsed against the previous version: what `validate.parse_env` returns, and
    the index of the new text."""

    doc: dict[str, Any]
    views: dict[str, EntityView]
    spans: EnvSpans
    #: Whether the changed text holds a line break character ("\r" or "\n"), old or new:
    #: if not, the file's line ending is the previous version's.
    breaks_changed: bool = False


def _innermost(spans: EnvSpans, lo: int, hi: int) -> tuple[int, int, Path] | None:
    """The deepest indexed entity whose span holds [lo, hi)."""
    return spans.resp.holding(lo, hi) or spans.top.holding(lo, hi)


def _valid_uuid(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    u = obj.get("uuid")
    if not isinstance(u, str) or not u or len(u) > MAX_UUID_LENGTH:
        return None
    return u


def reparse(old_body: str, new_body: str, doc: dict[str, Any],
            views: dict[str, EntityView], spans: EnvSpans | None) -> Reparsed | None:
    """The new text's document and views, from the previous version's (`doc`, `views`,
    `spans` of `old_body`; None spans: indexed here first). None when the change is not
    inside one entity, or not one this can take (the caller then parses whole)."""
    if spans is None:
        try:
            spans = index_text(old_body)
        except (ValidationError, IndexError):
            return None
    if len(spans) > MAX_INDEXED_ENTITIES:
        return None
    p = common_prefix(old_body, new_body)
    if p == len(old_body) == len(new_body):
        return Reparsed(doc, views, spans)
    q = common_suffix(old_body, new_body, min(len(old_body), len(new_body)) - p)
    old_hi, new_hi = len(old_body) - q, len(new_body) - q
    hit = _innermost(spans, p, old_hi)
    if hit is None:
        return None
    s, e, path = hit
    delta = new_hi - old_hi
    try:
        obj = parse_json(new_body[s:e + delta])
    except ValidationError:
        return None
    got = _replace(doc, views, path, obj)
    if got is None:
        return None
    new_doc, new_views, resp_spans = got
    # The index of the new text: every span moved through the edit, the re-parsed route's
    # responses indexed afresh (their old spans were inside the edit).
    top = spans.top.moved(p, old_hi, delta)
    resp = spans.resp.moved(p, old_hi, delta)
    if resp_spans:
        try:
            fresh = _route_responses(_Walker(new_body), s, path[1])
        except (ValidationError, IndexError):
            return None
        resp = resp.replaced(s, e + delta, fresh)
    breaks = any(c in old_body[p:old_hi] or c in new_body[p:new_hi] for c in "\r\n")
    return Reparsed(new_doc, new_views, EnvSpans(top, resp), breaks)


def _replace(doc: dict[str, Any], views: dict[str, EntityView], path: Path, obj: Any,
             ) -> tuple[dict[str, Any], dict[str, EntityView], bool] | None:
    """`doc` with the entity at `path` replaced by `obj`, and the views to go with it; the
    bool says whether a route's responses were re-flattened. None when `obj` is not the same
    entity (its uuid changed) or the change is one only a full parse can judge."""
    u = _valid_uuid(obj)
    if u is None:
        return None
    key, i = path[0], path[1]
    top = doc.get(key)
    if not isinstance(top, list) or i >= len(top):
        return None
    if len(path) == 3:  # a response of route i
        route = top[i]
        rs = route.get("responses") if isinstance(route, dict) else None
        j = path[2]
        if not isinstance(rs, list) or j >= len(rs):
            return None
        old = rs[j]
        if _valid_uuid(old) != u:
            return None
        before = views.get(u)
        if before is None or before.kind != RESPONSE:
            return None
        view = _view(obj, RESPONSE, before.path)
        view.places = dict(before.places)
        new_rs = list(rs)
        new_rs[j] = obj
        new_route = dict(route)
        new_route["responses"] = new_rs
        new_top = list(top)
        new_top[i] = new_route
        new_doc = dict(doc)
        new_doc[key] = new_top
        new_views = dict(views)
        new_views[u] = view
        return new_doc, new_views, False
    old = top[i]
    if _valid_uuid(old) != u:
        return None
    before = views.get(u)
    kind = _TOP_ARRAYS[key]
    if before is None or before.kind != kind:
        return None
    new_views = dict(views)
    if kind == FOLDER:
        if obj.get("children") != old.get("children"):
            return None  # the tree changed: places are recomputed by a full parse
    elif kind == ROUTE:
        got = _route_views(obj, old, u, i, views, new_views)
        if not got:
            return None
    view = _view(obj, kind, before.path)
    view.places = dict(before.places)
    new_views[u] = view
    new_top = list(top)
    new_top[i] = obj
    new_doc = dict(doc)
    new_doc[key] = new_top
    return new_doc, new_views, kind == ROUTE


def _route_views(obj: dict[str, Any], old: Any, u: str, ri: int,
                 views: dict[str, EntityView], new_views: dict[str, EntityView]) -> bool:
    """Put route `u`'s response views for `obj` in `new_views`. False when a response is not
    a valid entity or its uuid is taken elsewhere (a full parse then says why)."""
    rs = obj.get("responses", [])
    if not isinstance(rs, list):
        return False
    old_rs = old.get("responses", []) if isinstance(old, dict) else []
    mine: set[str] = set()
    for r in old_rs if isinstance(old_rs, list) else []:
        ru = _valid_uuid(r)
        v = views.get(ru) if ru is not None else None
        if v is not None and v.kind == RESPONSE and v.places.get(LIST, ("",))[0] == u:
            mine.add(v.uuid)
    seen: set[str] = set()
    for j, r in enumerate(rs):
        ru = _valid_uuid(r)
        if ru is None or ru in seen or (ru in views and ru not in mine):
            return False
        seen.add(ru)
        v = _view(r, RESPONSE, f"routes[{ri}].responses[{j}]")
        v.places[LIST] = (u, j)
        before = views.get(ru)
        if before is not None and before.fields == v.fields and before.keys == v.keys \
                and before.places == v.places and before.path == v.path:
            v = before  # unchanged: the very same view, so `diff` skips it
        new_views[ru] = v
    for ru in mine - seen:
        del new_views[ru]
    return len(new_views) <= MAX_ENTITIES
