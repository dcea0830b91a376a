"""Small human-readable documents (TinyDB): identity metadata, spaces, settings, known peers.

TinyDB rewrites its whole file on each write, which is fine for a handful of documents and
would be ruinous for the change log (see docs/design/architecture.md "Storage": 1,000x slower than SQLite WAL), so the
log lives in SQLite. TinyDB's stock JSON storage is not crash safe; `AtomicJSONStorage` writes
through the project's one atomic writer (`mocksync.fsatomic`: temp file, fsync, rename, folder
fsync), so a kill -9 or a power cut leaves either the old or the new document.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from ..fsatomic import put_file


class AtomicJSONStorage(Storage):
    def __init__(self, path: str | os.PathLike[str], mode: int = 0o600) -> None:
        self.path = Path(path)
        self.mode = mode

    def read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        return json.loads(text)

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
        put_file(self.path, text.encode("utf-8"), self.mode)

    def close(self) -> None:
        pass


def open_docs(path: str | os.PathLike[str]) -> TinyDB:
    """Open the documents database at `path` (created on first write, mode 0600)."""
    return TinyDB(path, storage=AtomicJSONStorage)
