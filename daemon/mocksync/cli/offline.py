"""Commands that need no daemon: validate, diff, merge (docs/design/cli.md "Groups of commands").

`merge` follows git's merge-driver convention (`mocksync merge %O %A %B`): it writes the result
over OURS unless `-o` is given, exits 0 when clean and 1 when conflicts remain (listed on
stderr, the preferred side applied). Any invalid input leaves every file untouched.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click

from ..errors import MocksyncError
from ..model import (
    ABSENT,
    Create,
    Delete,
    ParsedEnv,
    Set,
    diff,
    merge3,
    parse_env,
    state_from_doc,
)
from ..model.merge import describe, describe_entity
from ..model.spans import text_to_write
from .common import EXIT_FAILED, emit_json, examples, fail, main_group


def _load(path: str, max_migration: int | None = None) -> ParsedEnv:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or exc})", error="unreadable", file=path)
    try:
        return parse_env(data) if max_migration is None else parse_env(data, max_migration)
    except MocksyncError as exc:
        fail(f"{path}: {exc}", error="invalid", file=path)


def _summary(doc: dict[str, Any]) -> dict[str, int]:
    routes = doc.get("routes", [])
    return {
        "routes": len(routes),
        "responses": sum(len(r.get("responses", [])) for r in routes if isinstance(r, dict)),
        "folders": len(doc.get("folders", [])),
        "data_buckets": len(doc.get("data", [])),
        "callbacks": len(doc.get("callbacks", [])),
    }


@main_group.command("validate", epilog=examples("mocksync validate ~/mockoon/petstore.json",
                                                   "mocksync validate env.json --json"))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def validate_cmd(file: str, as_json: bool) -> None:
    """Check that FILE is a Mockoon environment this tool can sync, and say why not.

    Exit 0 when it is, 1 when it is not or cannot be read (with --json: a document saying
    `"valid": false` and why, or an `error` document).
    """
    try:
        parsed = parse_env(Path(file).read_bytes())
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror or exc})", error="unreadable", file=file)
    except MocksyncError as exc:
        if as_json:
            emit_json({"file": file, "valid": False, "reason": str(exc)})
            raise SystemExit(EXIT_FAILED) from None
        fail(f"{file}: {exc}")
    info = {
        "file": file,
        "valid": True,
        "uuid": parsed.uuid,
        "name": parsed.name,
        "lastMigration": parsed.doc["lastMigration"],
        "layout": "compact" if parsed.layout.indent is None else "indented",
        **_summary(parsed.doc),
    }
    if as_json:
        emit_json(info)
    else:
        click.echo(
            f"{file}: valid Mockoon environment '{parsed.name}' ({parsed.uuid}), "
            f"migration {info['lastMigration']}: {info['routes']} routes, "
            f"{info['responses']} responses, {info['folders']} folders, "
            f"{info['data_buckets']} data buckets, {info['callbacks']} callbacks"
        )


def _jsonable(v: Any) -> Any:
    return None if v is ABSENT else v


@main_group.command("diff", epilog=examples(
    "mocksync diff petstore.json.orig petstore.json",
    "mocksync diff --exit-code old.json new.json || echo changed",
    "git show HEAD:env.json > /tmp/old.json && mocksync diff /tmp/old.json env.json --json"))
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--exit-code", "exit_code", is_flag=True,
              help="Exit 1 when the versions differ semantically, 0 when not (like git diff).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def diff_cmd(old: str, new: str, exit_code: bool, as_json: bool) -> None:
    """Semantic diff of two versions of one environment: which entities and fields changed.

    OLD and NEW must be the same environment (the same uuid); two different environments are
    said to be so, exit 1. A difference in layout only (indentation, key order) is no change.
    """
    a, b = _load(old), _load(new)
    if a.uuid != b.uuid:
        fail(f"{old} and {new} are two different environments ({a.name!r}, uuid {a.uuid}; "
             f"{b.name!r}, uuid {b.uuid}): diff compares two versions of one environment",
             error="different_environments", old=old, new=new, old_uuid=a.uuid, new_uuid=b.uuid)
    try:
        state = state_from_doc(a.doc, rng=random.Random(0))
        ops = diff(a.doc, b.doc, state, random.Random(0))
    except MocksyncError as exc:
        fail(str(exc))
    from ..model import render  # local: keep the import list of the module short

    new_state = state.copy()
    new_state.apply(ops, (1, "new"))
    changes: list[dict[str, Any]] = []
    for op in ops:
        uuid = op.uuid
        if isinstance(op, Create):
            changes.append({"change": "added", "kind": op.kind, "entity": uuid,
                            "where": describe_entity(new_state, uuid)})
        elif isinstance(op, Delete):
            e = state.entity(uuid)
            changes.append({"change": "removed", "kind": e.kind if e else None, "entity": uuid,
                            "where": describe_entity(state, uuid)})
        else:
            rid = op.rid
            e = state.entity(uuid)
            if rid[0] == "k":
                continue  # key order only: not interesting to people
            old_v = e.get(rid) if e else ABSENT
            if rid[0] == "p":
                changes.append({"change": "moved", "kind": e.kind if e else None, "entity": uuid,
                                "where": describe_entity(new_state, uuid), "in": rid[1]})
            else:
                changes.append({
                    "change": "changed", "kind": e.kind if e else None, "entity": uuid,
                    "where": describe_entity(new_state, uuid), "field": ".".join(rid[1:]),
                    "old": _jsonable(old_v),
                    "new": _jsonable(op.value) if isinstance(op, Set) else None,
                })
    same_layout = a.layout == b.layout
    rendered_same = render(new_state) == b.doc
    differ = exit_code and bool(changes)
    if as_json:
        emit_json({"old": old, "new": new, "changes": changes, "ops": len(ops),
                   "identical": not changes and same_layout, "normalised": not rendered_same})
        if differ:
            raise SystemExit(EXIT_FAILED)
        return
    if not changes:
        click.echo("no semantic changes" + ("" if same_layout else " (only the layout differs)"))
        return
    for c in changes:
        if c["change"] == "changed":
            click.echo(f"~ {c['where']}: {c['field']}: {_short(c['old'])} -> {_short(c['new'])}")
        elif c["change"] == "moved":
            click.echo(f"> {c['where']}: moved ({c['in']})")
        elif c["change"] == "added":
            click.echo(f"+ {c['where']}")
        else:
            click.echo(f"- {c['where']}")
    if differ:
        raise SystemExit(EXIT_FAILED)


def _short(v: Any, limit: int = 60) -> str:
    s = "(absent)" if v is None else repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


@main_group.command("merge", epilog=examples(
    "mocksync merge base.json ours.json theirs.json -o merged.json",
    "mocksync merge base.json ours.json theirs.json --prefer theirs"))
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("ours", type=click.Path(dir_okay=False))
@click.argument("theirs", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the result here instead of over OURS.")
@click.option("--prefer", type=click.Choice(["ours", "theirs"]), default="ours", show_default=True,
              help="Which side wins a conflicting register.")
@click.option("--json", "as_json", is_flag=True, help="Print the conflicts as one JSON document.")
def merge_cmd(base: str, ours: str, theirs: str, output: str | None, prefer: str,
              as_json: bool) -> None:
    """Three-way merge of environment files by mocksync's merge rules.

    Usable as a git merge driver; in .git/config (or ~/.gitconfig):

    \b
      [merge "mocksync"]
          name = mocksync environment merge
          driver = mocksync merge %O %A %B
    and in .gitattributes:  *.json merge=mocksync   (or name the files)

    Exit 0 when clean; 1 when conflicts remain (listed on stderr; the --prefer side applied).
    When neither OURS nor THEIRS is a Mockoon environment (package.json under `*.json
    merge=mocksync`), the files are merged as text the way git does without a driver.
    """
    po_env, pt_env = _as_env(ours), _as_env(theirs)
    if po_env is None and pt_env is None:
        _text_merge(base, ours, theirs, output, as_json)
        return
    pb = _load(base, 10**9)
    po = po_env if po_env is not None else _load(ours, 10**9)
    pt = pt_env if pt_env is not None else _load(theirs, 10**9)
    try:
        result = merge3(pb.doc, po.doc, pt.doc, prefer)
    except MocksyncError as exc:
        fail(f"cannot merge: {exc}")
    # OURS keeps its own layout: only the spans of values that changed are replaced, and
    # when the merge changed nothing OURS is not rewritten at all (issue 15, model/spans.py).
    text = text_to_write(po.text, result.doc, po.layout)
    target = Path(output or ours)
    from ..agent.writer import atomic_write

    if text is not None or output is not None:
        try:
            atomic_write(target, (po.text if text is None else text).encode("utf-8"))
        except (OSError, MocksyncError) as exc:
            fail(f"{target}: cannot write ({exc})")
    lines = [describe(result.state, c) for c in result.conflicts]
    if as_json:
        emit_json({"output": str(target), "clean": not lines,
                   "conflicts": [dict(c.to_json(), description=d)
                                 for c, d in zip(result.conflicts, lines, strict=True)]})
    if lines:
        click.echo(f"mocksync merge: {len(lines)} conflict(s), {prefer} kept:", err=True)
        for line in lines:
            click.echo(f"  {line}", err=True)
        raise SystemExit(EXIT_FAILED)


#: What `merge` runs on files that are not Mockoon environments: git's own line-based merge,
#: so `*.json merge=mocksync` in .gitattributes (as the README suggests) leaves package.json,
#: tsconfig.json and the like merging exactly as they did without the driver.
TEXT_MERGE = ("git", "merge-file")
#: Longest that text merge of one file may take (seconds).
TEXT_MERGE_TIMEOUT_S = 60.0


def _as_env(path: str) -> ParsedEnv | None:
    """`path` parsed as a Mockoon environment, None when it is not one (an unreadable file
    fails here, naming why)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return _load(path, 10**9)
    try:
        return parse_env(data, 10**9)
    except MocksyncError:
        return None


def _text_merge(base: str, ours: str, theirs: str, output: str | None, as_json: bool) -> None:
    """Neither side is an environment: git's text merge, conflicts left as markers as git
    leaves them (--prefer is for environments' registers); the result over OURS or into
    --output. Nothing is written when the merge cannot run."""
    import shutil
    import subprocess

    if shutil.which(TEXT_MERGE[0]) is None:
        fail(f"{ours} and {theirs} are not Mockoon environments, and git (which merges other "
             "files as text) is not installed; merge them by hand", error="not_an_environment")
    cmd = [*TEXT_MERGE, "-p", "-L", "ours", "-L", "base", "-L", "theirs", ours, base, theirs]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=TEXT_MERGE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"cannot merge {ours} as text: {exc}", error="text_merge")
    if done.returncode < 0 or done.returncode > 127:
        fail(f"cannot merge {ours} as text: {done.stderr.decode(errors='replace').strip()}",
             error="text_merge")
    target = Path(output or ours)
    from ..agent.writer import atomic_write

    try:
        atomic_write(target, done.stdout)
    except (OSError, MocksyncError) as exc:
        fail(f"{target}: cannot write ({exc})")
    conflicts = done.returncode
    if as_json:
        emit_json({"output": str(target), "clean": conflicts == 0, "text": True,
                   "conflicts": conflicts})
    if conflicts:
        click.echo(f"mocksync merge: not Mockoon environments; merged as text (git merge-file): "
                   f"{conflicts} conflict(s) marked in {target}", err=True)
        raise SystemExit(EXIT_FAILED)

