"""Round-trip fidelity: an environment file that goes text -> registers -> text comes back
byte-identical, in Mockoon's layouts (2-space, compact) and in the other layouts we keep
(trailing newline, CRLF, tabs, 4 spaces); strings and numbers are written as JavaScript's
JSON.stringify writes them."""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocksync.model import (
    COMPACT_LAYOUT,
    MOCKOON_LAYOUT,
    Layout,
    detect_layout,
    dumps,
    parse_env,
    render,
    state_from_doc,
)
from mocksync.model.jsfmt import js_number, parse_json

from envfactory import ENV_UUID, clone, small_env

try:  # written concurrently by another engineer; the tests fall back when it is missing
    from mocksync.devtools.envgen import dump_mockoon, generate_env
except ImportError:  # pragma: no cover
    dump_mockoon = generate_env = None

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "environments"
NODE = shutil.which("node")


def mockoon_text(doc) -> str:
    """What Mockoon writes, computed independently of the model's own writer."""
    if dump_mockoon is not None:
        return dump_mockoon(doc)
    return json.dumps(doc, indent=2, ensure_ascii=False)  # small_env has no floats


def _sources() -> list[tuple[str, str]]:
    out = [(p.name, p.read_bytes().decode("utf-8")) for p in sorted(EXAMPLES.glob("*.json"))]
    out.append(("small_env", mockoon_text(small_env())))
    if generate_env is not None:
        out.append(("generated-300k", dump_mockoon(generate_env(300_000, seed=11))))
    return out


SOURCES = _sources()


def test_sources_are_not_vacuous():
    names = [n for n, _ in SOURCES]
    assert "small_env" in names
    assert len(SOURCES) >= 1
    for name, text in SOURCES:
        assert len(text) > 1000, name
        doc = json.loads(text)
        assert doc["routes"], f"{name} has no routes: the round trips would prove little"


def _reindent(text: str, unit: str) -> str:
    # In JSON text raw newlines only separate tokens, so leading spaces are always indentation.
    return re.sub(r"(?m)^((?:  )+)", lambda m: unit * (len(m.group(1)) // 2), text)


def _variants(text: str) -> dict[str, str]:
    doc = json.loads(text)
    compact = dump_mockoon(doc, compact=True) if dump_mockoon else json.dumps(
        doc, separators=(",", ":"), ensure_ascii=False)
    return {
        "mockoon": text,
        "trailing-newline": text + "\n",
        "crlf": text.replace("\n", "\r\n"),
        "crlf-trailing": text.replace("\n", "\r\n") + "\r\n",
        "tabs": _reindent(text, "\t"),
        "tabs-trailing": _reindent(text, "\t") + "\n",
        "4-space": _reindent(text, "    "),
        "compact": compact,
        "compact-trailing": compact + "\n",
    }


VARIANT_NAMES = list(_variants('{\n  "a": 1\n}'))


def _round_trip(text: str) -> str:
    parsed = parse_env(text.encode("utf-8"))
    state = state_from_doc(parsed.doc)
    return dumps(render(state), parsed.layout)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
@pytest.mark.parametrize("name,text", SOURCES, ids=[n for n, _ in SOURCES])
def test_round_trip_is_byte_identical(name, text, variant):
    source = _variants(text)[variant]
    assert _round_trip(source) == source


@pytest.mark.parametrize("name,text", SOURCES, ids=[n for n, _ in SOURCES])
def test_model_writer_matches_mockoon_layouts(name, text):
    doc = json.loads(text)
    assert dumps(doc) == text
    assert dumps(doc, MOCKOON_LAYOUT) == text
    assert dumps(doc, COMPACT_LAYOUT) == _variants(text)["compact"]
    # Nothing in the layout survives but what the Layout says: the detected layouts.
    v = _variants(text)
    assert detect_layout(v["mockoon"]) == Layout("  ", "\n", False)
    assert detect_layout(v["crlf-trailing"]) == Layout("  ", "\r\n", True)
    assert detect_layout(v["tabs"]) == Layout("\t", "\n", False)
    assert detect_layout(v["4-space"]) == Layout("    ", "\n", False)
    assert detect_layout(v["compact"]) == Layout(None, "\n", False)
    assert detect_layout(v["compact-trailing"]) == Layout(None, "\n", True)


def test_large_example_round_trips_when_present():
    big = [p for p in EXAMPLES.glob("*.json") if p.stat().st_size > 1_000_000]
    if not big:
        if generate_env is None:
            pytest.skip("no example over 1 MB and no generator yet")
        text = dump_mockoon(generate_env(1_100_000, seed=3))
    else:
        text = big[0].read_text("utf-8")
    assert len(text.encode("utf-8")) > 1_000_000
    assert _round_trip(text) == text
    assert _round_trip(text + "\n") == text + "\n"


# ---------------------------------------------------------------------------- strings


NON_ASCII = {
    "name": "Café ☕ — 日本語 ✓ Ωμέγα 😀 \u00a0nbsp",
    "quote": 'he said "hi" \\ back\\slash / slash',
    "controls": "tab\tnl\ncr\rbs\bff\f nul\x00 us\x1f del\x7f",
    "separators": "line\u2028para\u2029end",
    "astral": "𝄞 𓂀 🏳️‍🌈",
}


def test_non_ascii_strings_written_as_javascript_does():
    text = dumps(NON_ASCII)
    assert "Café ☕ — 日本語 ✓ Ωμέγα 😀 \u00a0nbsp" in text  # non-ASCII unescaped
    assert r'he said \"hi\" \\ back\\slash / slash' in text  # `/` not escaped
    assert r"tab\tnl\ncr\rbs\bff\f nul\u0000 us\u001f del" + "\x7f" in text
    assert "line\u2028para\u2029end" in text  # JSON.stringify leaves U+2028/9 as they are
    assert "𝄞 𓂀 🏳️‍🌈" in text
    assert json.loads(text) == NON_ASCII


def test_non_ascii_environment_round_trips():
    doc = small_env()
    doc["name"] = NON_ASCII["name"]
    doc["routes"][0]["documentation"] = NON_ASCII["controls"] + NON_ASCII["separators"]
    doc["routes"][0]["responses"][0]["body"] = NON_ASCII["astral"] + NON_ASCII["quote"]
    doc["data"][0]["value"] = json.dumps(NON_ASCII, ensure_ascii=False, indent=2)
    text = mockoon_text(doc)
    assert text == json.dumps(doc, indent=2, ensure_ascii=False)
    assert _round_trip(text) == text
    crlf = text.replace("\n", "\r\n")  # raw newlines in JSON text are only between tokens
    assert _round_trip(crlf) == crlf
    compact = dumps(doc, COMPACT_LAYOUT)
    assert compact == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert _round_trip(compact) == compact


def test_lone_surrogates_are_escaped_as_javascript_does():
    """JSON.stringify (ES2019) escapes an unpaired surrogate as \\udxxx, so the text is always
    valid UTF-8; a file holding one must still round-trip and be writable."""
    assert dumps("a\ud800b") == '"a\\ud800b"'
    assert dumps("\udfff") == '"\\udfff"'
    assert dumps({"k": ["\udc00x"]}, COMPACT_LAYOUT) == '{"k":["\\udc00x"]}'
    doc = small_env()
    doc["name"] = "half \ud83d of an emoji"
    text = ('{\n  "uuid": "' + ENV_UUID + '",\n  "lastMigration": 33,\n  "name": "x\\ud83dy",\n'
            '  "routes": []\n}')
    out = _round_trip(text)
    assert out == text
    out.encode("utf-8")  # writable
    dumps(doc).encode("utf-8")


# ---------------------------------------------------------------------------- numbers


JS_NUMBERS = [
    (5.0, "5"), (5, "5"), (-5.0, "-5"), (0, "0"), (0.0, "0"), (-0.0, "0"),
    (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (1e-6, "0.000001"), (1.23e-6, "0.00000123"),
    (1e21, "1e+21"), (1e20, "100000000000000000000"), (1.5e21, "1.5e+21"),
    (123456789012345680000.0, "123456789012345680000"), (1.2345678901234568e21, "1.2345678901234568e+21"),
    (0.1, "0.1"), (0.1 + 0.2, "0.30000000000000004"), (123.456, "123.456"), (-123.456, "-123.456"),
    (5e-324, "5e-324"), (-5e-324, "-5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
    (2.2250738585072014e-308, "2.2250738585072014e-308"), (100.0, "100"), (1e16, "10000000000000000"),
    (9007199254740993.0, "9007199254740992"), (25.5, "25.5"), (0.5, "0.5"), (1e100, "1e+100"),
    (float("nan"), "null"), (float("inf"), "null"), (float("-inf"), "null"),
    (2**53, "9007199254740992"), (-(2**31), "-2147483648"),
]


@pytest.mark.parametrize("x,expected", JS_NUMBERS, ids=[repr(x) for x, _ in JS_NUMBERS])
def test_js_number(x, expected):
    assert js_number(x) == expected


def test_js_number_refuses_bool_and_dumps_keeps_bools():
    with pytest.raises(TypeError):
        js_number(True)
    assert dumps([True, False, None, 1], COMPACT_LAYOUT) == "[true,false,null,1]"


def test_numbers_in_an_environment_round_trip():
    doc = small_env()
    doc["latency"] = 1.5
    doc["routes"][0]["responses"][0]["latency"] = 0.25
    doc["x-future"] = {"tiny": 1e-7, "huge": 1e21, "big": 1e20, "neg": -2.5e-9, "n": 42}
    text = ('{\n  "uuid": "' + ENV_UUID + '",\n  "lastMigration": 33,\n  "latency": 1.5,\n'
            '  "routes": [],\n  "x": [\n    1e-7,\n    1e+21,\n    100000000000000000000,\n'
            '    -2.5e-9,\n    0.1\n  ]\n}')
    assert _round_trip(text) == text
    out = dumps(doc)
    assert '"tiny": 1e-7' in out and '"huge": 1e+21' in out and '"big": 100000000000000000000' in out
    assert '"latency": 1.5' in out
    if dump_mockoon is not None:
        assert out == dump_mockoon(doc)


def _random_doubles(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if x == x and abs(x) != float("inf"):
            out.append(x)
    for e in range(-325, 309):
        for m in ("1", "1.5", "9.999", "5", "2.5", "1.2345678901234567"):
            x = float(f"{m}e{e}")
            if abs(x) != float("inf"):
                out.append(x)
    out += [rng.uniform(-1e6, 1e6) for _ in range(500)] + [round(rng.uniform(0, 1000), 2) for _ in range(500)]
    return out


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript cross-check needs it")
def test_js_number_agrees_with_node():
    xs = _random_doubles(5000, 1)
    hexes = [struct.pack(">d", x).hex() for x in xs]
    script = (
        "const h=JSON.parse(require('fs').readFileSync(0,'utf8'));"
        "process.stdout.write(JSON.stringify(h.map(x=>JSON.stringify(Buffer.from(x,'hex').readDoubleBE(0)))));"
    )
    res = subprocess.run([NODE, "-e", script], input=json.dumps(hexes), capture_output=True,
                         text=True, timeout=60, check=True)
    js = json.loads(res.stdout)
    bad = [(x, js_number(x), j) for x, j in zip(xs, js, strict=True) if js_number(x) != j]
    assert not bad, bad[:10]


@pytest.mark.skipif(NODE is None, reason="node is not installed: the JavaScript cross-check needs it")
def test_files_written_by_javascript_round_trip():
    """Texts made by node's JSON.stringify (2-space and compact) parse and re-render identically."""
    rng = random.Random(2)
    docs = []
    for i in range(40):
        doc = small_env()
        doc["latency"] = rng.choice(_random_doubles(0, i)[:50] + [0, 7])
        doc["x"] = {"v": [rng.uniform(-1e30, 1e30), rng.random() * 10 ** rng.randint(-30, 30)],
                    "s": "".join(chr(rng.randrange(1, 0x3000)) for _ in range(20))}
        docs.append(doc)
    script = (
        "const d=JSON.parse(require('fs').readFileSync(0,'utf8'));"
        "process.stdout.write(JSON.stringify(d.map(x=>[JSON.stringify(x,null,2),JSON.stringify(x)])));"
    )
    res = subprocess.run([NODE, "-e", script], input=json.dumps(docs), capture_output=True,
                         text=True, timeout=60, check=True)
    for pretty, compact in json.loads(res.stdout):
        assert _round_trip(pretty) == pretty
        assert _round_trip(compact) == compact
        assert dumps(parse_json(pretty)) == pretty


# ---------------------------------------------------------------------------- hypothesis

json_no_floats = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(v=json_no_floats)
def test_dumps_equals_python_json_without_floats(v):
    assert dumps(v, MOCKOON_LAYOUT) == json.dumps(v, indent=2, ensure_ascii=False)
    assert dumps(v, COMPACT_LAYOUT) == json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    assert dumps(v, Layout("\t", "\r\n", True)) == json.dumps(
        v, indent="\t", ensure_ascii=False).replace("\n", "\r\n") + "\r\n"
    assert parse_json(dumps(v)) == v


def _as_doubles(v):
    if isinstance(v, dict):
        return {k: _as_doubles(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_as_doubles(x) for x in v]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return v


@settings(max_examples=200, deadline=None)
@given(v=st.recursive(
    st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
    max_leaves=20,
))
def test_floats_survive_a_write_and_read(v):
    for layout in (MOCKOON_LAYOUT, COMPACT_LAYOUT):
        text = dumps(v, layout)
        back = parse_json(text)
        # Numbers keep their double value (5.0 reads back as int 5; 5.7e16 is written
        # "57474716149612020" as JavaScript does, which Python reads as an exact int).
        assert _as_doubles(back) == _as_doubles(v)
        assert dumps(back, layout) == text  # and the second write is a fixed point


def test_detect_layout_basics():
    assert detect_layout("{}") == Layout(None, "\n", False)
    assert detect_layout("{}\n") == Layout(None, "\n", True)
    assert detect_layout('{\n   "a": 1\n}') == Layout("   ", "\n", False)
    assert detect_layout('{\r\n\t"a": [\r\n\t\t1\r\n\t]\r\n}\r\n') == Layout("\t", "\r\n", True)


def test_dumps_does_not_mutate_and_is_stable():
    doc = small_env()
    before = clone(doc)
    assert dumps(doc) == dumps(doc)
    assert doc == before
