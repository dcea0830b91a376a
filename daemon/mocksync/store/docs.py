"""Small human-readable documents (TinyDB): identity metadata, spaces, settings, known peers.

TinyDB rewrites its whole file on each write, which is fine for a handful of documents and
would be ruinous for the change log (see docs/design/architecture.md "Storage": 1,000x slower than SQLite WAL), so the
log lives in SQLite. TinyDB's stock JSON storage is not crash safe; `AtomicJSONStorage` writes a
temp file, fsyncs and renames, so a kill -9 leaves either the old or the new document.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage


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
        fd, tmp = tempfile.mkstemp(prefix=".docs-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, self.mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        pass


def open_docs(path: str | os.PathLike[str]) -> TinyDB:
    """Open the documents database at `path` (created on first write, mode 0600)."""
    return TinyDB(path, storage=AtomicJSONStorage)
