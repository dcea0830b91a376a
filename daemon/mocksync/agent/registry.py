"""Which environment files this device syncs, and in which space (TinyDB table "envs").

Small, human-readable, rarely written: the right job for TinyDB. The change log and the merged
state live in SQLite (`mocksync.store`). `resolve` implements docs/design/cli.md "Naming environments" that ENV may be an
environment's uuid, its name, or its file path.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinydb import Query

from ..store.docs import open_docs
from .errors import UnknownEnvironment


@dataclass
class EnvRecord:
    uuid: str
    space: str
    file: str
    name: str = ""

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    def __init__(self, docs_path: Path) -> None:
        self.db = open_docs(docs_path)
        self.table = self.db.table("envs")

    def all(self) -> list[EnvRecord]:
        return [EnvRecord(**{k: d[k] for k in ("uuid", "space", "file", "name") if k in d})
                for d in self.table.all()]

    def get(self, uuid: str) -> EnvRecord | None:
        d = self.table.get(Query().uuid == uuid)
        return EnvRecord(**{k: d[k] for k in ("uuid", "space", "file", "name")}) if d else None

    def by_file(self, path: Path) -> EnvRecord | None:
        p = str(path)
        for r in self.all():
            if r.file == p:
                return r
        return None

    def put(self, rec: EnvRecord) -> None:
        self.table.upsert(rec.to_doc(), Query().uuid == rec.uuid)

    def remove(self, uuid: str) -> None:
        self.table.remove(Query().uuid == uuid)


def resolve_env(text: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Pick one environment by uuid, exact name, or file path; clear errors otherwise.

    `candidates` are dicts with at least uuid, name and file (synced and local environments).
    """
    by_uuid = [c for c in candidates if c.get("uuid") == text]
    if by_uuid:
        return by_uuid[0]
    try:
        as_path = os.path.realpath(os.path.expanduser(text))
    except (OSError, ValueError):
        as_path = None
    by_file = [c for c in candidates if c.get("file") and as_path
               and os.path.realpath(c["file"]) == as_path]
    if by_file:
        return by_file[0]
    by_base = [c for c in candidates if c.get("file") and os.path.basename(c["file"]) == text]
    if len(by_base) == 1:
        return by_base[0]
    by_name = [c for c in candidates if c.get("name") == text]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        files = ", ".join(c.get("file") or c["uuid"] for c in by_name)
        raise UnknownEnvironment(f"{len(by_name)} environments are named {text!r} ({files}); "
                                 "give the uuid or the file path instead")
    prefix = [c for c in candidates if text and c.get("uuid", "").startswith(text)]
    if len(prefix) == 1:
        return prefix[0]
    raise UnknownEnvironment(f"no environment matches {text!r} (try `mocksync list`)")
