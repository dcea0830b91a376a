"""Per-environment runtime bookkeeping: which file, in what state, and why.

`status` reads these. States (docs/design/cli.md "`status --json`"): local, synced, syncing, held, invalid — plus `missing`
for a synced environment whose file was deleted on this device (not a deletion for the team),
and `skipped` for a `*.json` name in the folder that mocksync never reads (a FIFO, device,
socket, symlink leading out of the folder, unreadable file: issue 13, `folderread`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import MOCKOON_LAYOUT, Layout

LOCAL = "local"
SYNCED = "synced"
SYNCING = "syncing"
HELD = "held"
INVALID = "invalid"
MISSING = "missing"
SKIPPED = "skipped"


@dataclass
class EnvRuntime:
    uuid: str
    space: str
    path: Path
    name: str = ""
    state: str = SYNCED
    reason: str = ""
    layout: Layout = MOCKOON_LAYOUT
    write_handle: asyncio.TimerHandle | None = None
    write_due: float = 0.0
    last_local_edit: float = 0.0
    last_remote_edit: float = 0.0
    #: (inode, mtime ns, size) of the file as the daemon last read or wrote it: a different
    #: one at write time means an editor saved and the watcher has not reported it yet.
    file_sig: tuple[int, int, int] | None = None

    def to_json(self, conflicts: int) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "file": str(self.path),
            "space": self.space,
            "state": self.state,
            "reason": self.reason or None,
            "conflicts": conflicts,
        }


@dataclass
class LocalFile:
    """An environment file in the folder that no space syncs (or one that does not parse)."""

    path: Path
    uuid: str | None = None
    name: str = ""
    valid: bool = True
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Never read (`folderread.SkippedFile`); `reason` says what it is and what to do.
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "file": str(self.path),
            "space": None,
            "state": SKIPPED if self.skipped else LOCAL if self.valid else INVALID,
            "reason": self.reason or None,
            "conflicts": 0,
        }
