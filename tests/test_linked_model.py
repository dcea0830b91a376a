"""Linked files, the pure part (issue #7): which paths an environment links, which may be
synced, the derived entity ids, the content register's checks, and the sync decision table."""

from __future__ import annotations

import base64
import copy
import json
import random
from pathlib import Path

import pytest

from mocksync.errors import LimitError
from mocksync.model import render, snapshot_ops, state_from_doc, to_wire, validate_ops
from mocksync.model.errors import LinkedFileError
from mocksync.model.files import (
    CONTENT_REG,
    DELETED,
    MAX_LINKED_FILE_BYTES,
    MAX_LINKED_FILES,
    NO_ENTITY,
    OUTSIDE,
    PATH_REG,
    SYNCED,
    TOO_MANY,
    Action,
    content_sha,
    content_value,
    create_op,
    decide,
    decode_content,
    file_entities,
    file_mode,
    file_uuid,
    linked_bytes,
    linked_paths,
    linked_paths_of_state,
    normalise,
    plan_links,
    quota_reason,
    set_op,
    summary,
)
from mocksync.model.state import State

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "environments" / \
    "payments-callbacks.json"


def payments() -> dict:
    return json.loads(EXAMPLE.read_bytes())


def file_response(doc: dict) -> dict:
    """The example's response with a FILE body (fixtures/receipt.html)."""
    return next(r for route in doc["routes"] for r in route["responses"]
                if r["bodyType"] == "FILE")


# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("path,rel", [
    ("fixtures/a.json", "fixtures/a.json"),
    ("./fixtures//a.json", "fixtures/a.json"),
    ("fixtures/x/../a.json", "fixtures/a.json"),
    ("fixtures\\win\\a.json", "fixtures/win/a.json"),
    ("a b/ü.txt", "a b/ü.txt"),
])
def test_relative_paths_inside_the_folder_are_synced(path: str, rel: str) -> None:
    assert normalise(path) == (rel, "")


@pytest.mark.parametrize("path,why", [
    ("/etc/ssl/key.pem", "absolute"),
    ("~/certs/key.pem", "absolute"),
    ("C:\\certs\\key.pem", "absolute"),
    ("\\\\server\\share\\a.json", "absolute"),
    ("../outside.json", "leaves the synced folder"),
    ("fixtures/../../outside.json", "leaves the synced folder"),
    ("..", "leaves the synced folder"),
    ("fixtures/{{urlParam 'id'}}.json", "template"),
    ("fixtures/a\x00.json", "control characters"),
    (".", "folder"),
    ("", "empty"),
    ("a" * 2000, "longer than"),
])
def test_paths_that_are_not_synced_say_why(path: str, why: str) -> None:
    rel, reason = normalise(path)
    assert rel is None and why in reason


def test_file_uuid_is_derived_from_env_and_normalised_path() -> None:
    env = payments()["uuid"]
    u = file_uuid(env, "fixtures/a.json")
    assert u == file_uuid(env, normalise("./fixtures\\a.json")[0])  # same file, same id
    assert u != file_uuid(env, "fixtures/b.json")
    assert u != file_uuid("another-env", "fixtures/a.json")
    assert len(u) == 36 and u.count("-") == 4


# ------------------------------------------------------------------------------ references


def test_linked_paths_finds_file_bodies_and_tls_files_only_where_mockoon_reads_them() -> None:
    doc = payments()
    refs = linked_paths(doc)
    assert [(r.kind, r.field, r.path) for r in refs] == [
        ("response", "filePath", "fixtures/receipt.html"),
        ("callback", "filePath", "fixtures/webhook.json"),
        ("tls", "certPath", "tls/cert.pem"),
        ("tls", "keyPath", "tls/key.pem"),
    ]
    assert [r.private for r in refs] == [False, False, False, True]
    # A filePath left behind on an INLINE body, or TLS switched off, links nothing.
    file_response(doc).update(bodyType="INLINE", filePath="stale.json")
    doc["tlsOptions"]["enabled"] = False
    assert [(r.kind, r.path) for r in linked_paths(doc)] == [
        ("callback", "fixtures/webhook.json")]
    doc["tlsOptions"].update(enabled=True, type="PFX", pfxPath="tls/all.pfx", caPath="tls/ca.pem")
    tls = [(r.field, r.private) for r in linked_paths(doc) if r.kind == "tls"]
    assert tls == [("pfxPath", True), ("caPath", False)]


def test_linked_paths_of_state_matches_the_rendered_document() -> None:
    doc = payments()
    doc["routes"][1]["responses"][0].update(bodyType="FILE", filePath="fixtures/second.json")
    doc["tlsOptions"].update(type="PFX", pfxPath="tls/x.pfx")
    state = state_from_doc(doc, rng=random.Random(1))
    assert linked_paths_of_state(state) == linked_paths(render(state))
    assert [r.path for r in linked_paths_of_state(state)][:2] == [
        r.path for r in linked_paths(doc)][:2]


def test_linked_paths_of_state_matches_the_render_of_a_generated_environment() -> None:
    from mocksync.devtools.envgen import generate_env

    doc = generate_env(300_000, seed=3)
    state = state_from_doc(doc, rng=random.Random(4))
    refs = linked_paths_of_state(state)
    assert len(refs) > 5  # the generator links files: the comparison means something
    assert refs == linked_paths(render(state)) == linked_paths(doc)
    # A response whose route was deleted is not rendered, so it links nothing.
    route = next(r for r in doc["routes"] if any(x.get("bodyType") == "FILE"
                                                 for x in r["responses"]))
    state.apply([("d", route["uuid"])], (10**12, "z"), ("z", 1), {})
    assert linked_paths_of_state(state) == linked_paths(render(state))
    assert len(linked_paths_of_state(state)) < len(refs)


def test_plan_groups_references_and_explains_what_is_not_synced() -> None:
    doc = payments()
    doc["routes"][1]["responses"][0].update(bodyType="FILE", filePath="./fixtures/receipt.html")
    doc["callbacks"][0].update(bodyType="FILE", filePath="/srv/shared/body.json")
    doc["callbacks"][1].update(bodyType="FILE", filePath="../elsewhere/body.json")
    links = plan_links(linked_paths(doc), "payments.json")
    by_path = {lk.path: lk for lk in links}
    receipt = next(lk for lk in links if lk.rel == "fixtures/receipt.html")
    assert len(receipt.refs) == 2 and receipt.state == SYNCED  # one file, two references
    assert {r.path for r in receipt.refs} == {"./fixtures/receipt.html", "fixtures/receipt.html"}
    for p in ("/srv/shared/body.json", "../elsewhere/body.json"):
        lk = by_path[p]
        assert lk.state == OUTSIDE and lk.rel is None and lk.adoptable
        assert "mocksync adopt payments.json" in lk.reason
    assert by_path["tls/key.pem"].private and not by_path["tls/cert.pem"].private


def test_at_most_max_linked_files_are_synced() -> None:
    doc = payments()
    base = file_response(doc)
    doc["routes"][0]["responses"] = [
        dict(copy.deepcopy(base), uuid=f"r-{i}", filePath=f"f/{i}.json")
        for i in range(MAX_LINKED_FILES + 3)]
    links = plan_links(linked_paths(doc))
    states = [lk.state for lk in links if lk.path.startswith("f/")]
    assert states.count(SYNCED) == MAX_LINKED_FILES
    assert states.count(TOO_MANY) == 3
    assert str(MAX_LINKED_FILES) in next(lk.reason for lk in links if lk.state == TOO_MANY)


# ------------------------------------------------------------------------------ content


def test_content_round_trips_binary_bytes() -> None:
    data = bytes(range(256)) * 10 + b"\x00\xff"
    v = content_value(data, 0o100640, private=False)
    assert v["size"] == len(data) and v["mode"] == 0o640 and content_sha(v) == v["sha256"]
    assert decode_content(v, "x.bin") == (data, 0o640)
    assert "b64" not in summary(v) and summary(v)["sha256"] == v["sha256"]


def test_modes_private_keys_are_0600_and_peers_cannot_set_dangerous_bits() -> None:
    assert file_mode(0o100644, private=True) == 0o600
    assert file_mode(0o100640, private=False) == 0o640
    assert file_mode(0o100755, private=False) == 0o644  # never an exec bit (issue #12)
    assert file_mode(0o104777, private=False) == 0o644  # no setuid, no group/other write
    assert file_mode(0o100444, private=False) == 0o644  # the owner can replace it later


@pytest.mark.parametrize("tamper,why", [
    (lambda v: v.update(b64=base64.b64encode(b"other").decode()), "does not match"),
    (lambda v: v.update(size=v["size"] + 1), "does not match"),
    (lambda v: v.update(b64="not base64!"), "not base64"),
    (lambda v: v.update(sha256="zz"), "no sha256"),
    (lambda v: v.update(size=MAX_LINKED_FILE_BYTES + 1), "size"),
    (lambda v: v.update(mode="0644"), "mode"),
    (lambda v: v.pop("b64"), "no content"),
])
def test_a_malformed_or_tampered_content_register_is_refused(tamper, why: str) -> None:
    v = content_value(b"hello", 0o644, private=False)
    tamper(v)
    with pytest.raises(LinkedFileError, match=why):
        decode_content(v, "x.json")
    with pytest.raises(LinkedFileError, match="malformed"):
        decode_content(["not", "a", "dict"], "x.json")


def test_content_over_the_limit_is_refused_with_a_limit_error() -> None:
    with pytest.raises(LimitError, match=str(MAX_LINKED_FILE_BYTES)):
        content_value(b"x" * (MAX_LINKED_FILE_BYTES + 1), 0o644, private=False)


# ------------------------------------------------------------------------------ the state


def _state_with_file(rel: str, data: bytes | None) -> tuple[State, str]:
    doc = payments()
    state = State(doc["uuid"])
    state.apply(validate_ops([to_wire(op) for op in snapshot_ops(doc, random.Random(2))]),
                (1, "dev-a"), ("dev-a", 1), {})
    value = None if data is None else content_value(data, 0o644, private=False)
    ops = validate_ops([to_wire(create_op(doc["uuid"], rel, value))])  # peers accept the kind
    state.apply(ops, (2, "dev-a"), ("dev-a", 2), {})
    return state, doc["uuid"]


def test_file_entities_travel_as_ordinary_ops_and_never_reach_the_environment_json() -> None:
    doc = payments()
    state, env = _state_with_file("fixtures/receipt.html", b"<p>receipt</p>")
    assert render(state) == doc  # render ignores the kind: the JSON is untouched
    ents = file_entities(state)
    assert list(ents) == ["fixtures/receipt.html"]
    assert ents["fixtures/receipt.html"].uuid == file_uuid(env, "fixtures/receipt.html")
    assert linked_bytes(state) == (1, len(b"<p>receipt</p>"))
    # An edit is one set of one register.
    new = content_value(b"<p>v2</p>", 0o644, private=False)
    op = set_op(env, "fixtures/receipt.html", new)
    assert op[2] == CONTENT_REG and validate_ops([to_wire(op)])[0][3] == new


def test_a_peer_cannot_aim_a_file_entity_outside_the_folder_or_at_another_id() -> None:
    state, env = _state_with_file("fixtures/receipt.html", b"ok")
    hostile = [
        ("c", file_uuid(env, "../evil.sh"), "file",
         [(PATH_REG, "../evil.sh"), (CONTENT_REG, content_value(b"x", 0o755, False))]),
        ("c", file_uuid(env, "/etc/passwd"), "file",
         [(PATH_REG, "/etc/passwd"), (CONTENT_REG, content_value(b"x", 0o644, False))]),
        # a valid path under an id derived from another path
        ("c", file_uuid(env, "fixtures/other.json"), "file",
         [(PATH_REG, "fixtures/receipt.html"), (CONTENT_REG, None)]),
        ("c", "not-derived", "file", [(PATH_REG, "fixtures/x.json"), (CONTENT_REG, None)]),
    ]
    state.apply(validate_ops([to_wire(op) for op in hostile]), (3, "dev-b"), ("dev-b", 1), {})
    assert list(file_entities(state)) == ["fixtures/receipt.html"]
    assert content_sha(file_entities(state)["fixtures/receipt.html"].get(CONTENT_REG))


def test_concurrent_writes_of_one_file_are_a_conflict_of_one_register() -> None:
    state, env = _state_with_file("f.json", b"base")
    a = set_op(env, "f.json", content_value(b"from a", 0o644, False))
    b = set_op(env, "f.json", content_value(b"from b", 0o644, False))
    state.apply(validate_ops([to_wire(a)]), (10, "dev-a"), ("dev-a", 3), {"dev-b": 0})
    res = state.apply(validate_ops([to_wire(b)]), (11, "dev-b"), ("dev-b", 1), {"dev-a": 2})
    assert len(res.conflicts) == 1
    c = res.conflicts[0]
    assert c.kind == "file" and c.field == CONTENT_REG
    assert decode_content(c.winner_value, "f.json")[0] == b"from b"
    assert decode_content(c.loser_value, "f.json")[0] == b"from a"


# ------------------------------------------------------------------------------ decisions

S1, S2, S3 = "1" * 64, "2" * 64, "3" * 64


@pytest.mark.parametrize("team,disk,seen,local,want", [
    # in sync
    (S1, S1, S1, True, Action.NOTHING),
    (S1, S1, None, False, Action.ADOPT),
    (NO_ENTITY, None, None, True, Action.NOTHING),
    (DELETED, None, S1, False, Action.FORGET),
    # a new local file: committed by a local trigger only (a catch-up never pushes it)
    (NO_ENTITY, S1, None, True, Action.COMMIT),
    (NO_ENTITY, S1, None, False, Action.NOTHING),
    # a teammate's new or changed version, disk untouched here: written
    (S1, None, None, False, Action.WRITE),
    (S2, S1, S1, False, Action.WRITE),
    (S2, S1, S1, True, Action.WRITE),
    # a teammate deleted it
    (DELETED, S1, S1, False, Action.REMOVE),
    # first contact with a different local copy: never overwritten, a conflict (issue #12)
    (S2, S1, None, False, Action.CLASH),
    (S2, S1, None, True, Action.CLASH),
    # edited here
    (S1, S2, S1, True, Action.COMMIT),
    (S1, S2, S1, False, Action.NOTHING),
    # edited here while a teammate's version was on its way: ours wins, theirs is a conflict
    (S3, S2, S1, True, Action.COMMIT_OVER),
    (DELETED, S2, S1, True, Action.COMMIT_OVER),
    # deleted here
    (S1, None, S1, True, Action.COMMIT),
    (S1, None, S1, False, Action.NOTHING),
    (S2, None, S1, True, Action.WRITE),  # changed by the team meanwhile: keep the newer bytes
])
def test_decide(team: str, disk: str | None, seen: str | None, local: bool,
                want: Action) -> None:
    assert decide(team, disk, seen, local=local) == want


def test_decide_for_a_file_no_longer_linked_only_propagates_its_deletion() -> None:
    assert decide(S1, None, S1, local=True, referenced=False) == Action.COMMIT  # a rename
    assert decide(S1, S2, S1, local=True, referenced=False) == Action.NOTHING
    assert decide(NO_ENTITY, S1, None, local=True, referenced=False) == Action.NOTHING
    # A teammate's file the environment does not link is never written (issue #12).
    assert decide(S1, None, None, local=False, referenced=False) == Action.NOTHING
    assert decide(S2, S1, S1, local=False, referenced=False) == Action.NOTHING
    assert decide(S2, S1, None, local=True, referenced=False) == Action.NOTHING
    assert decide(S2, None, S1, local=True, referenced=False) == Action.FORGET
    assert decide(DELETED, S1, S1, local=False, referenced=False) == Action.REMOVE


def test_quota_reason_says_linked_files_count() -> None:
    base = "quota exceeded: solo plan allows environments up to 5 MB; this one is 6 MB"
    assert quota_reason(base, 0, 0) == base
    msg = quota_reason(base, 2, 5_500_000)
    assert msg.startswith(base) and "linked files count" in msg and "2 linked files" in msg
    assert "5.5 MB" in msg
