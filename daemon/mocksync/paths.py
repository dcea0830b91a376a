"""Where a device keeps its things.

One `Home` per device. Tests and the demo run several devices on one machine by giving each its
own `--home` (env `MOCKSYNC_HOME`); the default is the platform's user data dir. The control
socket lives in the user runtime dir when there is one (so it vanishes at logout), else in the
home itself; a home-specific name keeps two devices on one machine apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "mocksync"


def default_home() -> Path:
    env = os.environ.get("MOCKSYNC_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike[str] | None = None) -> Home:
        return cls(Path(path).expanduser().resolve() if path else default_home().resolve())

    def ensure(self) -> Home:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keys.mkdir(exist_ok=True, mode=0o700)
        return self

    @property
    def keys(self) -> Path:
        """Private key files (mode 0600 each, directory 0700)."""
        return self.root / "keys"

    @property
    def docs(self) -> Path:
        """TinyDB file: identity metadata, spaces, settings, known peers."""
        return self.root / "docs.json"

    @property
    def log_db(self) -> Path:
        """SQLite (WAL): change log and materialised registers."""
        return self.root / "log.sqlite3"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def socket(self) -> Path:
        """Control API socket (mode 0600). Unix socket paths are limited to ~107 bytes."""
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and Path(runtime).is_dir() and os.access(runtime, os.W_OK):
            return Path(runtime) / f"mocksync-{tag}.sock"
        candidate = self.root / "control.sock"
        if len(str(candidate)) < 100:
            return candidate
        return Path("/tmp") / f"mocksync-{os.getuid()}-{tag}.sock"
