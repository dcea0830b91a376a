"""The example environments, the generator, and the format helpers other tests rely on.

The examples are what users and benchmarks load first, so they must be exactly what Mockoon
writes (byte for byte) and valid to Mockoon itself; the generator must be deterministic and
hit the sizes benchmarks ask for; and `check_env_invariants` must catch each kind of breakage
it promises to, or tests built on it would pass on broken merges.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mocksync.devtools.envgen import (
    KEY_ORDERS,
    LAST_MIGRATION,
    MAX_STEP_BYTES,
    MAX_TARGET_BYTES,
    REQUIRED_KEYS,
    check_env_invariants,
    dump_mockoon,
    entity,
    generate_env,
    js_number_text,
)
from mocksync.errors import LimitError, ValidationError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "environments"
REQUIRED = ("petstore.json", "chat-websocket.json", "payments-callbacks.json", "large-catalog.json")
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
CLI_INSTALL_HINT = (
    "the Mockoon CLI is not installed; install it with "
    "`npm install --prefix .ci/node @mockoon/cli` (run from the repository root; .ci/run does this)"
)


def _load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _make_examples_module():
    spec = importlib.util.spec_from_file_location("make_examples", REPO / "examples" / "make_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _walk_routes_in_tree(env: dict) -> list[tuple[int, dict]]:
    """(folder depth, route) in tree order."""
    folders = {f["uuid"]: f for f in env["folders"]}
    routes = {r["uuid"]: r for r in env["routes"]}
    out: list[tuple[int, dict]] = []

    def visit(children: list, depth: int) -> None:
        for ref in children:
            if ref["type"] == "folder":
                visit(folders[ref["uuid"]]["children"], depth + 1)
            else:
                out.append((depth, routes[ref["uuid"]]))

    visit(env["rootChildren"], 0)
    return out


def _all_strings(obj) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _all_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _all_strings(v)]
    return [obj] if isinstance(obj, str) else []


# ---------------------------------------------------------------------------- every example


def test_required_examples_exist():
    names = {p.name for p in EXAMPLE_FILES}
    assert set(REQUIRED) <= names, f"missing: {set(REQUIRED) - names}"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_valid_and_byte_exact(path: Path):
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    env = json.loads(text)
    assert env["lastMigration"] == LAST_MIGRATION == 33
    assert env["hostname"] == "127.0.0.1"
    assert check_env_invariants(env) == []
    # Exactly Mockoon's layout: 2 spaces, ": ", unescaped non-ASCII, no trailing newline.
    assert dump_mockoon(env).encode("utf-8") == raw
    assert not raw.endswith(b"\n")
    assert b"\r" not in raw


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_callbacks_stay_on_loopback(path: Path):
    env = json.loads(path.read_text(encoding="utf-8"))
    for cb in env["callbacks"]:
        assert cb["uri"].startswith("http://127.0.0.1:"), cb["uri"]
    assert env["proxyMode"] is False


# ---------------------------------------------------------------------------- what each one shows


def test_petstore_shape():
    env = _load("petstore.json")
    assert 13 <= len(env["routes"]) <= 17
    assert len(env["data"]) >= 2
    depths = [d for d, _ in _walk_routes_in_tree(env)]
    assert max(depths) >= 3  # v1 > admin > audit
    assert 0 in depths
    crud = [r for r in env["routes"] if r["type"] == "crud"]
    bucket_ids = {b["id"] for b in env["data"]}
    assert len(crud) >= 2
    for r in crud:
        assert r["method"] == ""
        first = r["responses"][0]
        assert first["default"] and first["bodyType"] == "DATABUCKET"
        assert first["databucketID"] in bucket_ids
    assert sum(1 for r in env["routes"] for resp in r["responses"] if resp["rules"]) >= 5
    assert any(r["method"] == "all" for r in env["routes"])
    assert any("{{faker" in s for s in _all_strings(env))


def test_petstore_specific_routes_precede_crud_catch_all():
    # Mockoon matches routes depth-first in tree order and a CRUD route "v1/pets" also serves
    # "v1/pets/:id": a sibling like "v1/pets/findByStatus" must come first to be reachable.
    env = _load("petstore.json")
    order = [r["endpoint"] for _, r in _walk_routes_in_tree(env)]
    for r in env["routes"]:
        if r["type"] == "crud":
            for other in order:
                if other.startswith(r["endpoint"] + "/"):
                    assert order.index(other) < order.index(r["endpoint"]), other


def test_chat_websocket_shape():
    env = _load("chat-websocket.json")
    ws = [r for r in env["routes"] if r["type"] == "ws"]
    http = [r for r in env["routes"] if r["type"] == "http"]
    assert len(ws) >= 3 and len(http) >= 2
    streaming = [r for r in ws if r["streamingMode"] is not None]
    assert {r["streamingMode"] for r in streaming} == {"BROADCAST", "UNICAST"}
    assert all(r["streamingInterval"] > 0 for r in streaming)
    assert any(r["streamingMode"] is None for r in ws)  # a conversational socket too


def test_payments_callbacks_shape():
    env = _load("payments-callbacks.json")
    cbs = {cb["uuid"]: cb for cb in env["callbacks"]}
    bucket_ids = {b["id"] for b in env["data"]}
    assert len(cbs) >= 3
    assert any(cb["bodyType"] == "DATABUCKET" and cb["databucketID"] in bucket_ids for cb in cbs.values())
    file_cbs = [cb for cb in cbs.values() if cb["bodyType"] == "FILE"]
    assert file_cbs and all(not cb["filePath"].startswith("/") for cb in file_cbs)
    assert any(cb["filePath"] == "fixtures/webhook.json" for cb in file_cbs)
    responses = [resp for r in env["routes"] for resp in r["responses"]]
    invoked = {inv["uuid"] for resp in responses for inv in resp["callbacks"]}
    assert invoked == set(cbs)  # every callback is used somewhere
    assert {resp["rulesOperator"] for resp in responses if len(resp["rules"]) > 1} == {"AND", "OR"}
    modes = {r["responseMode"] for r in env["routes"]}
    assert {"RANDOM", "SEQUENTIAL", "FALLBACK", "DISABLE_RULES"} <= modes
    file_bodies = [resp for resp in responses if resp["bodyType"] == "FILE"]
    assert file_bodies and all(resp["filePath"] and not resp["filePath"].startswith("/") for resp in file_bodies)
    tls = env["tlsOptions"]
    assert tls["enabled"] is True and tls["type"] == "CERT"
    assert tls["certPath"] == "tls/cert.pem" and tls["keyPath"] == "tls/key.pem"
    text = (EXAMPLES / "payments-callbacks.json").read_text(encoding="utf-8")
    assert "Café" in text and "日本語" in text and "💳" in text


def test_large_catalog_is_over_a_megabyte_and_regenerates_exactly():
    raw = (EXAMPLES / "large-catalog.json").read_bytes()
    assert 1_200_000 <= len(raw) <= 1_500_000
    make_examples = _make_examples_module()
    assert make_examples.render_large_catalog().encode("utf-8") == raw, (
        "large-catalog.json is stale: run `.venv/bin/python examples/make_examples.py`"
    )


# ---------------------------------------------------------------------------- the generator


def test_generator_is_deterministic():
    a = dump_mockoon(generate_env(200_000, seed=7))
    b = dump_mockoon(generate_env(200_000, seed=7))
    c = dump_mockoon(generate_env(200_000, seed=8))
    assert a == b
    assert a != c
    assert generate_env(50_000, seed=7, name="Other")["name"] == "Other"


@pytest.mark.parametrize("target", [200_000, 1_000_000])
def test_generator_hits_size(target: int):
    env = generate_env(target, seed=1)
    size = len(dump_mockoon(env).encode("utf-8"))
    assert abs(size - target) <= target * 0.10
    # Documented promise: at least the target, less than one growth step over it.
    assert target <= size < target + MAX_STEP_BYTES
    assert check_env_invariants(env) == []


def test_generator_shape_is_realistic():
    env = generate_env(400_000, seed=3)
    types = {r["type"] for r in env["routes"]}
    assert types == {"http", "crud", "ws"}
    assert all(1 <= len(r["responses"]) <= 4 for r in env["routes"])
    depths = [d for d, _ in _walk_routes_in_tree(env)]
    assert 0 in depths and max(depths) >= 3
    responses = [resp for r in env["routes"] for resp in r["responses"]]
    assert any(resp["rules"] for resp in responses)
    assert {resp["rulesOperator"] for resp in responses if resp["rules"]} == {"AND", "OR"}
    assert any(resp["callbacks"] for resp in responses)
    assert any(resp["bodyType"] == "FILE" for resp in responses)
    assert any(resp["headers"] for resp in responses)
    assert len(env["data"]) >= 5 and len(env["callbacks"]) >= 2
    assert any(cb["bodyType"] == "DATABUCKET" for cb in env["callbacks"])
    assert {r["responseMode"] for r in env["routes"]} > {None}


def test_generator_tiny_target_still_gives_a_valid_environment():
    env = generate_env(0)
    assert len(env["routes"]) == 1
    assert check_env_invariants(env) == []


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_generator_refuses_bad_targets(bad):
    with pytest.raises(ValidationError):
        generate_env(bad)  # type: ignore[arg-type]


def test_generator_refuses_targets_over_its_limit():
    with pytest.raises(LimitError, match="limit"):
        generate_env(MAX_TARGET_BYTES + 1)


# ---------------------------------------------------------------------------- dump_mockoon


def test_dump_matches_json_stringify_layout():
    env = {"a": "Café 日本語 😀", "b": [], "c": {}, "d": [1, {"e": None, "f": True}], "g": "\u2028\x7f\x01\t"}
    assert dump_mockoon(env) == (
        '{\n  "a": "Café 日本語 😀",\n  "b": [],\n  "c": {},\n  "d": [\n    1,\n    {\n'
        '      "e": null,\n      "f": true\n    }\n  ],\n  "g": "\u2028\x7f\\u0001\\t"\n}'
    )
    assert dump_mockoon(env, compact=True) == (
        '{"a":"Café 日本語 😀","b":[],"c":{},"d":[1,{"e":null,"f":true}],"g":"\u2028\x7f\\u0001\\t"}'
    )


@pytest.mark.parametrize(
    ("value", "js"),
    [
        (5.0, "5"), (-0.0, "0"), (1.5, "1.5"), (1e-7, "1e-7"), (0.000001, "0.000001"),
        (0.00001, "0.00001"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"), (1.2345e-10, "1.2345e-10"),
        (2.5e25, "2.5e+25"), (0.1 + 0.2, "0.30000000000000004"), (-3.75, "-3.75"),
        (float("nan"), "null"), (float("inf"), "null"), (10**22, "1e+22"), (42, "42"),
    ],
)
def test_numbers_print_as_javascript_prints_them(value, js):
    assert js_number_text(value) == js
    assert dump_mockoon({"n": value}) == '{\n  "n": ' + js + "\n}"


def test_dump_escapes_lone_surrogates_and_joins_split_pairs():
    assert dump_mockoon(["\ud800x"], compact=True) == '["\\ud800x"]'
    assert dump_mockoon(["\ud83d\ude00"], compact=True) == '["😀"]'
    dump_mockoon(["\udfff"]).encode("utf-8")  # always encodable


def test_dump_with_floats_leaves_lookalike_strings_alone():
    env = {"s": "\x00jsnum", "n": 0.5}
    assert json.loads(dump_mockoon(env)) == env


# ---------------------------------------------------------------------------- entity


def test_entity_uses_mockoon_defaults_and_order():
    identities = {"uuid": "3f1c2b7a-9d4e-4f6a-8b2c-1d0e9f8a7b6c", "id": "ab12", "type": "route"}
    for kind, order in KEY_ORDERS.items():
        obj = entity(kind, **{k: identities[k] for k in REQUIRED_KEYS.get(kind, ())})
        assert tuple(obj) == order, kind
    cb = entity("callback", uuid="3f1c2b7a-9d4e-4f6a-8b2c-1d0e9f8a7b6c", id="x1y2")
    assert list(cb)[6:10] == ["headers", "bodyType", "body", "databucketID"]
    assert cb["method"] == "post" and cb["sendFileAsBody"] is True
    a = entity("response", uuid="3f1c2b7a-9d4e-4f6a-8b2c-1d0e9f8a7b6c")
    a["rules"].append("x")
    assert entity("response", uuid="3f1c2b7a-9d4e-4f6a-8b2c-1d0e9f8a7b6c")["rules"] == []


def test_entity_refuses_unknown_keys_kinds_and_missing_identity():
    with pytest.raises(ValidationError, match="no key"):
        entity("route", uuid="3f1c2b7a-9d4e-4f6a-8b2c-1d0e9f8a7b6c", verb="get")
    with pytest.raises(ValidationError, match="unknown kind"):
        entity("widget")
    with pytest.raises(ValidationError, match="needs"):
        entity("bucket", uuid="3f1c2b7a-9d4e-4f6a-8b2c-1d0e9f8a7b6c")


# ---------------------------------------------------------------------------- check_env_invariants

NEW_UUID = "0b5e8f3a-1c2d-4e5f-9a8b-7c6d5e4f3a2b"


def _route(env, endpoint):
    return next(r for r in env["routes"] if r["endpoint"] == endpoint)


def _dup_uuid(env):
    env["routes"][1]["responses"][0]["uuid"] = env["routes"][0]["uuid"]


def _orphan_route(env):
    env["rootChildren"] = [c for c in env["rootChildren"] if c["type"] != "route"]


def _route_twice(env):
    env["folders"][0]["children"].append(dict(env["rootChildren"][0]))


def _dangling_child(env):
    env["rootChildren"].append({"type": "route", "uuid": NEW_UUID})


def _folder_cycle(env):
    # v1 is at the root; put it inside its own child "admin" instead.
    v1 = next(f for f in env["folders"] if f["name"] == "v1")
    admin = next(f for f in env["folders"] if f["name"] == "admin")
    env["rootChildren"] = [c for c in env["rootChildren"] if c["uuid"] != v1["uuid"]]
    admin["children"].append({"type": "folder", "uuid": v1["uuid"]})


def _two_defaults(env):
    for resp in _route(env, "v1/pets/:petId/photos")["responses"]:
        resp["default"] = True


def _no_default(env):
    for resp in _route(env, "v1/pets/:petId/photos")["responses"]:
        resp["default"] = False


def _dangling_bucket(env):
    _route(env, "v1/pets")["responses"][0]["databucketID"] = "zzzz"


def _dangling_callback(env):
    env["routes"][0]["responses"][0]["callbacks"].append({"uuid": NEW_UUID, "latency": 0})


def _key_order(env):
    r = env["routes"][0]
    env["routes"][0] = {"type": r["type"], **{k: v for k, v in r.items() if k != "type"}}


def _missing_key(env):
    del env["routes"][0]["responses"][0]["crudKey"]


def _bad_enum(env):
    env["routes"][0]["responses"][0]["rules"] = [
        {"target": "body", "modifier": "", "value": "", "invert": False, "operator": "contains"}]


def _bad_type(env):
    env["cors"] = "yes"


def _upper_uuid(env):
    env["routes"][0]["uuid"] = env["routes"][0]["uuid"].upper()


def _dup_bucket_id(env):
    env["data"][1]["id"] = env["data"][0]["id"]


def _bad_status(env):
    env["routes"][0]["responses"][0]["statusCode"] = 42


def _empty_crud_key(env):
    _route(env, "v1/pets")["responses"][0]["crudKey"] = ""


BREAKAGES: list[tuple[Callable[[dict], None], str]] = [
    (_dup_uuid, "duplicate uuid"),
    (_orphan_route, "in no folder and not in rootChildren"),
    (_route_twice, "appears 2 times"),
    (_dangling_child, "does not exist"),
    (_folder_cycle, "not reachable"),
    (_two_defaults, "2 responses have default true"),
    (_no_default, "0 responses have default true"),
    (_dangling_bucket, "names no data bucket"),
    (_dangling_callback, "which does not exist"),
    (_key_order, "not in Mockoon's order"),
    (_missing_key, "missing key"),
    (_bad_enum, "operator is 'contains'"),
    (_bad_type, "cors must be true or false"),
    (_upper_uuid, "not a lowercase version-4 uuid"),
    (_dup_bucket_id, "used twice"),
    (_bad_status, "statusCode is 42"),
    (_empty_crud_key, "crudKey must be a non-empty string"),
]


@pytest.fixture(scope="module")
def petstore() -> dict:
    return _load("petstore.json")


@pytest.mark.parametrize(("breakage", "expected"), BREAKAGES, ids=[f.__name__ for f, _ in BREAKAGES])
def test_check_env_invariants_catches(petstore, breakage, expected):
    env = copy.deepcopy(petstore)
    breakage(env)
    problems = check_env_invariants(env)
    assert any(expected in p for p in problems), problems


def test_check_env_invariants_non_strict_allows_future_keys(petstore):
    env = copy.deepcopy(petstore)
    env["someFutureSetting"] = 1
    assert any("unexpected key" in p for p in check_env_invariants(env))
    assert check_env_invariants(env, strict_keys=False) == []


def test_check_env_invariants_never_raises_on_mangled_input(petstore):
    # Random deletions and wrong-typed values anywhere: always a list of sentences, no crash.
    rng = random.Random(1234)
    junk = [None, 1, "x", "", [], {}, True, 2.5, [1], {"uuid": 3}, {"uuid": []},
            {"type": "folder", "uuid": []}]

    def containers(obj, out):
        if isinstance(obj, dict | list):
            out.append(obj)
            for v in obj.values() if isinstance(obj, dict) else obj:
                containers(v, out)
        return out

    for _ in range(300):
        env = copy.deepcopy(petstore)
        for _ in range(rng.randint(1, 4)):
            target = rng.choice(containers(env, []))
            if isinstance(target, dict) and target:
                key = rng.choice(list(target))
                if rng.random() < 0.5:
                    del target[key]
                else:
                    target[key] = copy.deepcopy(rng.choice(junk))
            elif isinstance(target, list) and target:
                target[rng.randrange(len(target))] = copy.deepcopy(rng.choice(junk))
        problems = check_env_invariants(env)
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


def test_check_env_invariants_on_garbage():
    assert check_env_invariants([]) == ["environment: expected an object, got list"]
    problems = check_env_invariants({"uuid": "x"})
    assert any("missing key" in p for p in problems)


# ---------------------------------------------------------------------------- the real Mockoon CLI


def _mockoon_cli() -> str | None:
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "mockoon-cli"
    if local.exists():
        return str(local)
    return shutil.which("mockoon-cli")


def test_mockoon_cli_validates_examples_and_a_generated_env(tmp_path):
    cli = _mockoon_cli()
    if cli is None:
        pytest.skip(CLI_INSTALL_HINT)
    generated = tmp_path / "generated.json"
    generated.write_text(dump_mockoon(generate_env(300_000, seed=11)), encoding="utf-8")
    files = [str(p) for p in EXAMPLE_FILES] + [str(generated)]
    proc = subprocess.run([cli, "validate", "--data", *files], capture_output=True, text=True,
                          timeout=100, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for f in files:
        assert f"Valid environment: {f}" in proc.stdout, proc.stdout


def test_mockoon_cli_rejects_a_broken_file(tmp_path):
    # Guards the test above: a validator that accepted everything would make it meaningless.
    cli = _mockoon_cli()
    if cli is None:
        pytest.skip(CLI_INSTALL_HINT)
    env = _load("chat-websocket.json")
    del env["routes"][0]["responses"][0]["statusCode"]
    broken = tmp_path / "broken.json"
    broken.write_text(dump_mockoon(env), encoding="utf-8")
    proc = subprocess.run([cli, "validate", "--data", str(broken)], capture_output=True, text=True,
                          timeout=100, cwd=tmp_path)
    assert proc.returncode != 0
    assert "statusCode" in proc.stdout + proc.stderr
