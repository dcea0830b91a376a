"""Environment files as an editor and a user see them: saves by write-and-rename, reads, and
the small document accessors the tests share.

Why here: every harness (in-process agents, daemon subprocesses, namespaces, journeys) saves
files the way Mockoon desktop does and reads them back; four copies of "write a temp file
beside it, rename over" had drifted (one without fsync, one named so the watcher saw it).
Nothing here imports `mocksync` (the journeys use it too).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The example environments (examples/environments/*.json) tests start from.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "environments"


def mockoon_bytes(doc: Any) -> bytes:
    """What Mockoon desktop writes: JSON.stringify(doc, null, 2), no trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def editor_write(path: Path, data: bytes, fsync: bool = False) -> None:
    """An editor save: the whole file to a hidden temp name beside it, then rename over
    (`fsync` first when the test cares about what survives a crash)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def editor_save(path: Path, data: bytes | bytearray | dict[str, Any] | list[Any]) -> None:
    """`editor_write` of raw bytes or of a document in Mockoon's format."""
    editor_write(path, bytes(data) if isinstance(data, bytes | bytearray) else mockoon_bytes(data))


def read_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def read_json(path: Path) -> Any:
    """The file's JSON, or None while it is missing or mid-write."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def edit_file(path: Path, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Read the file, apply `fn` to its document (in place, or return a replacement), save it
    editor-style; the saved document."""
    doc = read_doc(path)
    out = fn(doc)
    doc = doc if out is None else out
    editor_save(path, doc)
    return doc


def copy_example(name: str, folder: Path, as_name: str | None = None) -> Path:
    dest = folder / (as_name or name)
    shutil.copyfile(EXAMPLES / name, dest)
    return dest


def env_file(folder: Path) -> Path | None:
    """The folder's one environment file (hidden temp files excluded), None unless exactly one."""
    files = [p for p in folder.glob("*.json") if not p.name.startswith(".")]
    return files[0] if len(files) == 1 else None


# ------------------------------------------------------------------------------ documents


def responses(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for route in doc["routes"] for r in route["responses"]]


def response_by_uuid(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    for r in responses(doc):
        if r["uuid"] == uuid:
            return r
    raise KeyError(uuid)


def set_label(uuid: str, value: str) -> Callable[[dict[str, Any]], None]:
    def fn(doc: dict[str, Any]) -> None:
        response_by_uuid(doc, uuid)["label"] = value

    return fn


def set_doc(route: int, value: str) -> Callable[[dict[str, Any]], None]:
    """An edit setting route `route`'s documentation."""
    def fn(doc: dict[str, Any]) -> None:
        doc["routes"][route]["documentation"] = value

    return fn


def all_uuids(doc: dict[str, Any]) -> set[str]:
    out = {doc["uuid"]}
    for key in ("folders", "routes", "data", "callbacks"):
        for obj in doc.get(key, []):
            out.add(obj["uuid"])
            for r in obj.get("responses", []) if key == "routes" else []:
                out.add(r["uuid"])
    return out
