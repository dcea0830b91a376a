"""Format-preserving writes (issue 15 part 2): a write changes only the spans of the values,
entries and entities that changed, in whatever layout the file has; a file that already holds
the document is never rewritten; Mockoon's own layouts stay byte-exact."""

from __future__ import annotations

import copy
import difflib
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocksync.model import (
    COMPACT_LAYOUT,
    MOCKOON_LAYOUT,
    dumps,
    parse_env,
    render,
    same,
    state_from_doc,
)
from mocksync.model.errors import PatchError
from mocksync.model.spans import Style, detect_style, patch_text, render_fresh, text_to_write

from envfactory import clone, small_env

PRETTIER = Path(__file__).parent / "data" / "prettier-petstore.json"
MOCKSYNC = [sys.executable, "-m", "mocksync"]


def prettier_text() -> str:
    return PRETTIER.read_text("utf-8")


def changed_lines(a: str, b: str) -> tuple[list[str], list[str]]:
    """Lines removed from `a` and added in `b` (what `git diff` shows)."""
    gone, new = [], []
    for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0):
        if line.startswith("-") and not line.startswith("---"):
            gone.append(line[1:])
        elif line.startswith("+") and not line.startswith("+++"):
            new.append(line[1:])
    return gone, new


def written_after_sync(text: str, edit: Any = None) -> str | None:
    """What a device writes over `text` once the registers hold the file (edited by `edit`):
    the daemon's own path, text -> registers -> render -> text_to_write."""
    parsed = parse_env(text)
    doc = copy.deepcopy(parsed.doc)
    if edit is not None:
        edit(doc)
    return text_to_write(text, render(state_from_doc(doc)), parsed.layout)


# ---------------------------------------------------------------------------- the proof files


def test_a_prettier_file_is_never_rewritten_when_nothing_changed() -> None:
    text = prettier_text()
    assert '"children": [{ "type": "route"' in text  # the sample really is Prettier-style
    assert written_after_sync(text) is None
    assert patch_text(text, json.loads(text)) is None
    assert text_to_write(text.encode(), json.loads(text), MOCKOON_LAYOUT) is None


def test_one_remote_edit_changes_only_the_edited_line() -> None:
    text = prettier_text()

    def edit(d: dict[str, Any]) -> None:
        d["routes"][1]["responses"][0]["statusCode"] = 503

    out = written_after_sync(text, edit)
    assert out is not None
    assert changed_lines(text, out) == (['          "statusCode": 200,'],
                                        ['          "statusCode": 503,'])


def test_two_sided_merge_changes_both_edited_lines_only() -> None:
    text = prettier_text()

    def edit(d: dict[str, Any]) -> None:
        d["port"] = 4000
        d["routes"][0]["responses"][1]["label"] = "Gone"

    out = written_after_sync(text, edit)
    assert out is not None
    gone, new = changed_lines(text, out)
    assert gone == ['  "port": 3010,', '          "label": "Not found",']
    assert new == ['  "port": 4000,', '          "label": "Gone",']


def test_an_inserted_entity_follows_its_neighbours_layout() -> None:
    text = prettier_text()

    def edit(d: dict[str, Any]) -> None:
        r = copy.deepcopy(d["routes"][1])
        r["uuid"] = "2d3e4f50-0000-4000-8000-000000000030"
        r["endpoint"] = "status"
        r["responses"][0]["uuid"] = "3e4f5061-0000-4000-8000-000000000031"
        r["responses"][0]["headers"] = [{"key": "X-A", "value": "1"}]
        r["responses"][0]["tags"] = ["a", "b"]
        d["routes"].append(r)
        d["rootChildren"].append({"type": "route", "uuid": r["uuid"]})

    out = written_after_sync(text, edit)
    assert out is not None
    gone, new = changed_lines(text, out)
    # Nothing of the old text is touched but the separators the insertions need.
    assert gone and all(g + "," in new for g in gone)
    assert '    {' in new and '      "endpoint": "status",' in new  # the neighbours' indent
    assert '          "tags": ["a", "b"]' in new  # a short array on one line, as Prettier
    # A tree reference like its neighbours: on one line.
    assert '    { "type": "route", "uuid": "2d3e4f50-0000-4000-8000-000000000030" }' in new
    assert json.loads(out) == render(state_from_doc(json.loads(out)))


def test_a_deleted_entity_takes_only_its_own_lines() -> None:
    text = prettier_text()

    def edit(d: dict[str, Any]) -> None:
        del d["routes"][0]["responses"][1]

    out = written_after_sync(text, edit)
    assert out is not None
    gone, new = changed_lines(text, out)
    assert new == [] and len(gone) == 27  # the response's lines, nothing else
    cut = text.index(',\n        {\n          "uuid": "3e4f5061-0000-4000-8000-000000000012"')
    assert out == text[:cut] + text[text.index("\n      ],", cut):]  # its separator went too
    assert json.loads(out)["routes"][0]["responses"] == json.loads(text)["routes"][0][
        "responses"][:1]


# ---------------------------------------------------------------------------- Mockoon layouts


@pytest.mark.parametrize("layout", [MOCKOON_LAYOUT, COMPACT_LAYOUT])
def test_mockoon_layouts_stay_byte_exact(layout: Any) -> None:
    """For files Mockoon wrote, the patched text is what Mockoon would write after the edit."""
    doc = small_env()
    edits = [
        lambda d: d["routes"][0]["responses"].append(copy.deepcopy(d["routes"][1]["responses"][0])
                                                     | {"uuid": "new-response"}),
        lambda d: d["routes"][0]["responses"].pop(0),
        lambda d: d.update(port=1234, name="renamed"),
        lambda d: d["routes"][1].update(responses=[]),
        lambda d: d["routes"][1]["responses"][0]["headers"].append({"key": "a", "value": "b"}),
        lambda d: d.update(newKey={"x": [1, 2.5, "é"]}),
        lambda d: d["routes"].reverse(),
    ]
    for edit in edits:
        new = clone(doc)
        edit(new)
        assert patch_text(dumps(doc, layout), new) == dumps(new, layout)


# ---------------------------------------------------------------------------- properties

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32),
                     st.text(max_size=8))
_keys = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
_values = st.recursive(_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(_keys, kids, max_size=4)), max_leaves=20)
_docs = st.dictionaries(_keys, _values, min_size=1, max_size=5)


def scatter(value: Any, rng: random.Random, indent: str = "") -> str:
    """Some JSON text for `value` in a random layout (independent of the code under test):
    any whitespace between tokens, containers on one or many lines, \\u escapes, 1.0 for 1."""
    def ws() -> str:
        return rng.choice(["", " ", "  ", "\n" + indent + "  ", "\t", "\r\n "])

    if isinstance(value, dict):
        if not value:
            return "{" + ws() + "}"
        items = [json.dumps(k) + ws() + ":" + ws() + scatter(v, rng, indent + "  ")
                 for k, v in value.items()]
        return "{" + ws() + ("," + ws()).join(items) + ws() + "}"
    if isinstance(value, list):
        return "[" + ws() + ("," + ws()).join(scatter(v, rng, indent + "  ") for v in value) \
            + ws() + "]"
    if isinstance(value, str) and rng.random() < 0.5:
        return json.dumps(value, ensure_ascii=True)
    if type(value) is int and rng.random() < 0.2:
        return f"{value}.0"
    return json.dumps(value)


def mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """A random edit somewhere in `value` (a copy)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and value and rng.random() < 0.7:
        k = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.2:
            del value[k]
        elif roll < 0.35:
            value["zz" + k] = rng.choice([1, "new", [1, 2], {"q": None}])
        else:
            value[k] = mutate(value[k], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.2:
            value.pop(i)
        elif roll < 0.4:
            value.insert(i, rng.choice([7, "x", {"uuid": "n"}, []]))
        else:
            value[i] = mutate(value[i], rng, depth + 1)
        return value
    return rng.choice([None, True, 0, -3.25, "changed", [], {}, ["s", 1], {"k": [1]}])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_docs, st.randoms(use_true_random=False), st.integers(1, 3))
def test_patch_reads_back_as_the_new_document_and_is_idempotent(doc, rng, n) -> None:
    text = scatter(doc, rng)
    assert patch_text(text, json.loads(text)) is None  # unchanged: nothing to write
    new = doc
    for _ in range(n):
        new = mutate(new, rng)
    if not isinstance(new, dict):
        return
    out = patch_text(text, new)
    if out is None:
        assert js_numbers(json.loads(text)) == js_numbers(new)
        return
    assert js_numbers(json.loads(out)) == js_numbers(new)
    assert patch_text(out, new) is None  # idempotent


def js_numbers(v: Any) -> Any:
    """`v` as JavaScript reads it: every number a double (Mockoon writes the double
    6.72610175114281e16 as 67261017511428100, which Python reads as another int)."""
    if isinstance(v, dict):
        return {k: js_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [js_numbers(x) for x in v]
    return float(v) if type(v) is int else v


def test_numbers_are_compared_as_javascript_reads_them() -> None:
    """Found by the property above: a double beyond 2**53 written in JavaScript's spelling
    reads back as a Python int of another value, and `0.0` is not `0` to `json.dumps`; the
    file holds the document all the same, so nothing is rewritten for either."""
    big = 6.72610175114281e16
    text = '{"a": [67261017511428100], "b": [[], [0.0], {"x": 0.0, "y": [1]}]}'
    assert patch_text(text, {"a": [big], "b": [[], [0], {"x": 0, "y": [1]}]}) is None
    new = {"a": [big], "b": [[0], 7, {"x": 0, "y": [1]}]}  # one removed, one inserted
    out = patch_text(text, new)
    assert out == '{"a": [67261017511428100], "b": [[0.0], 7, {"x": 0.0, "y": [1]}]}'
    assert patch_text(out, new) is None


@settings(max_examples=150, deadline=None)
@given(_docs, st.randoms(use_true_random=False), st.text(max_size=6))
def test_untouched_spans_stay_byte_identical(doc, rng, replacement) -> None:
    """Change one value deep in a randomly laid out file: every other byte stays."""
    marker = "OLD-VALUE-MARKER"
    paths: list[list[Any]] = []

    def collect(v: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(v, dict):
            for k, x in v.items():
                collect(x, path + [k])
        elif isinstance(v, list):
            for i, x in enumerate(v):
                collect(x, path + [i])

    collect(doc, [])
    path = rng.choice(paths[1:])
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = marker
    text = scatter(doc, rng)
    new = copy.deepcopy(doc)
    parent = new
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = replacement
    out = patch_text(text, new)
    assert out == text.replace(json.dumps(marker), json.dumps(replacement, ensure_ascii=False))


@settings(max_examples=100, deadline=None)
@given(_docs, st.randoms(use_true_random=False))
def test_mockoon_layout_patches_equal_a_full_render(doc, rng) -> None:
    new = mutate(doc, rng)
    if not isinstance(new, dict) or (new == doc and not same(new, doc)):
        return  # a true/1 swap inside equal containers is not seen (as in `diff`): documented
    for layout in (MOCKOON_LAYOUT, COMPACT_LAYOUT):
        out = patch_text(dumps(doc, layout), new)
        assert (out if out is not None else dumps(doc, layout)) == dumps(new, layout)


# ---------------------------------------------------------------------------- edges


def test_text_to_write_renders_whole_when_there_is_nothing_to_patch() -> None:
    doc = small_env()
    assert text_to_write(None, doc, MOCKOON_LAYOUT) == dumps(doc)
    assert text_to_write(b"{not json", doc, MOCKOON_LAYOUT) == dumps(doc)
    assert text_to_write(b"\xff\xfe", doc, COMPACT_LAYOUT) == dumps(doc, COMPACT_LAYOUT)
    assert text_to_write("[1, 2]", doc, MOCKOON_LAYOUT) == dumps(doc)
    with pytest.raises(PatchError, match="not JSON"):
        patch_text("{", doc)


def test_a_bom_and_a_trailing_newline_are_kept() -> None:
    text = '\ufeff{\r\n  "a": 1,\r\n  "b": [1, 2]\r\n}\r\n'
    assert patch_text(text, {"a": 2, "b": [1, 2]}) == text.replace('"a": 1', '"a": 2')
    assert patch_text(text, {"a": 1, "b": [1, 2, 3]}) == text.replace("[1, 2]", "[1, 2, 3]")


def test_duplicate_keys_are_rewritten_as_the_parser_read_them() -> None:
    out = patch_text('{"a": 1, "a": 2, "b": 0}', {"a": 2, "b": 1})
    assert out is not None and json.loads(out) == {"a": 2, "b": 1} and out.count('"a"') == 1


def test_numbers_and_escapes_of_untouched_values_are_kept() -> None:
    text = '{"n": 1.0, "s": "caf\\u00e9", "e": 1E3, "x": true}'
    assert patch_text(text, {"n": 1, "s": "café", "e": 1000.0, "x": True}) is None
    # A member of an object that changed is compared strictly: true is not 1.
    assert patch_text(text, {"n": 1, "s": "café", "e": 1000.0, "x": 1, "y": 0}) == \
        text.replace("true}", '1, "y": 0}')


def test_new_content_follows_the_file_style() -> None:
    prettier = Style("  ", "\n", inline_arrays=True)
    assert render_fresh({"a": ["x", 1], "b": {}}, "", prettier) == \
        '{\n  "a": ["x", 1],\n  "b": {}\n}'
    long = ["x" * 30, "y" * 30, "z" * 30]
    assert "\n" in render_fresh(long, "", prettier)  # over Prettier's 80 columns: one per line
    assert render_fresh({"a": [1]}, "", Style(None)) == '{"a":[1]}'
    assert detect_style(prettier_text()).inline_arrays
    assert not detect_style(dumps(small_env())).inline_arrays
    # An array inside a string is not a short array of the layout.
    assert not detect_style('{\n  "body": "{\\"a\\": [1]}"\n}').inline_arrays


# ---------------------------------------------------------------------------- git merge driver


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_merge_driver_keeps_the_prettier_layout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    driver = " ".join(MOCKSYNC) + " --home " + str(tmp_path / "home") + " merge %O %A %B"
    _git(repo, "config", "merge.mocksync.driver", driver)
    (repo / ".gitattributes").write_text("*.json merge=mocksync\n")
    text = prettier_text()
    env = repo / "pets.json"
    env.write_text(text)
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    _git(repo, "checkout", "-qb", "other")
    env.write_text(text.replace('"port": 3010', '"port": 4000'))
    _git(repo, "commit", "-qam", "port")
    _git(repo, "checkout", "-q", "main")
    env.write_text(text.replace('"label": "Healthy"', '"label": "Up"'))
    _git(repo, "commit", "-qam", "label")
    _git(repo, "merge", "-q", "--no-edit", "other")  # fails (check=True) if the driver did
    merged = env.read_text()
    assert merged == text.replace('"port": 3010', '"port": 4000').replace(
        '"label": "Healthy"', '"label": "Up"')
    stat = _git(repo, "diff", "--stat", "HEAD~2", "HEAD", "--", "pets.json")
    assert "2 insertions(+), 2 deletions(-)" in stat


def test_merge_of_three_identical_files_rewrites_nothing(tmp_path: Path) -> None:
    f = tmp_path / "b.json"
    f.write_text(prettier_text())
    before = f.stat()
    r = subprocess.run([*MOCKSYNC, "--home", str(tmp_path / "home"), "merge", str(f), str(f),
                        str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    after = f.stat()
    assert f.read_text() == prettier_text()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    out = tmp_path / "out.json"
    r = subprocess.run([*MOCKSYNC, "--home", str(tmp_path / "home"), "merge", str(f), str(f),
                        str(f), "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and out.read_text() == prettier_text()


def test_a_writer_cache_never_renders_a_prettier_file_whole() -> None:
    """The whole-render shortcut is taken only for a file that is exactly the writer's own
    last whole render; a Prettier file is patched on every write."""
    cache: dict = {}
    text = prettier_text()
    doc = json.loads(text)
    doc["port"] = 1
    out = text_to_write(text, doc, MOCKOON_LAYOUT, cache)
    assert out == text.replace('"port": 3010', '"port": 1')
    doc["port"] = 2
    assert text_to_write(out, doc, MOCKOON_LAYOUT, cache) == text.replace('"port": 3010',
                                                                          '"port": 2')
    mine = text_to_write(None, doc, MOCKOON_LAYOUT, cache)  # a whole render: remembered
    assert mine == dumps(doc)
    doc["port"] = 3
    assert text_to_write(mine, doc, MOCKOON_LAYOUT, cache) == dumps(doc)
    assert text_to_write(dumps(doc), doc, MOCKOON_LAYOUT, cache) is None
