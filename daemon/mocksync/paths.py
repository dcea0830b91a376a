"""Where a device keeps its things.

One `Home` per device. Tests and the demo run several devices on one machine by giving each its
own `--home` (env `MOCKSYNC_HOME`); the default is the platform's user data dir. The control
socket lives in the user runtime dir when there is one (so it vanishes at logout), else in the
home itself; a home-specific name keeps two devices on one machine apart.

Other local users (issue 13, docs/design/security.md §7): the home holds private keys and, in the log's WAL,
plaintext environments, so it is made 0700 and its files 0600 every time it is used
(`Home.ensure`), even when the directory already existed with looser modes. The control socket
only ever lives in a private directory: `XDG_RUNTIME_DIR` when it is ours and 0700, the home
when the path is short enough for AF_UNIX, else `$TMPDIR/mocksync-<uid>/` (TMPDIR defaulting
to /tmp), a 0700 directory the daemon creates and checks (a directory, not a symlink, ours, no
group/other bits); the CLI checks who answers on it (`agent.client`, SO_PEERCRED).
A shared name in /tmp that another user could create first (and then answer the CLI with
fake JSON) is never used; `private_dir_problem` is the pure check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import PrivateDirError

APP = "mocksync"

#: Mode of the home, its subfolders and the socket folder: the owner only.
PRIVATE_DIR_MODE = 0o700
#: Mode of every file the home holds.
PRIVATE_FILE_MODE = 0o600
#: Socket paths at most this long may go in the home (AF_UNIX sun_path is 108 bytes with NUL;
#: some room is kept for the kernel's and libraries' own limits).
MAX_HOME_SOCKET_PATH = 100
#: Where the private socket folder goes when neither the runtime dir nor the home can hold it
#: (`$TMPDIR` when set to an absolute path, as for any temporary file).
SOCKET_TMP_ROOT = Path("/tmp")


def private_dir_problem(st: os.stat_result, uid: int, *, fixable: bool = False) -> str | None:
    """What makes a directory (its `lstat`) unfit to hold private things for `uid`: None when
    fit. With `fixable`, loose mode bits on our own directory are not a problem (the caller
    chmods them away). Pure."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != uid:
        return f"belongs to another user (uid {st.st_uid}), not to you (uid {uid})"
    if st.st_mode & 0o077 and not fixable:
        return f"is open to other users (mode {stat.S_IMODE(st.st_mode):04o}, needs 0700)"
    return None


def ensure_private_dir(path: Path, *, what: str = "folder") -> Path:
    """Create `path` (mode 0700) or check the existing one is ours, a real directory, and
    tighten it to 0700. Raises `PrivateDirError` with the fix in one sentence."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
    st = os.lstat(path)
    problem = private_dir_problem(st, os.getuid(), fixable=True)
    if problem:
        raise PrivateDirError(
            f"the {what} {path} {problem}; another local user could read or impersonate "
            "mocksync through it: remove it (it may need root) or use another --home / "
            "XDG_RUNTIME_DIR")
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def foreign_entry_problem(path: Path, st: os.stat_result, uid: int) -> str | None:
    """Why an entry of the home (its `lstat`) must not be used by `uid`: None when it is ours.
    An entry another user owns in our home was planted while the home was open to them (a
    shared or group-writable folder given as `--home`): a `keys` symlink into their folder
    would receive our private keys, a log file of theirs our plaintext. Pure."""
    if st.st_uid == uid:
        return None
    return (f"the home holds {path}, which belongs to another user (uid {st.st_uid}), not to "
            f"you (uid {uid}): it may be there to read or redirect what mocksync keeps in the "
            "home (keys, the log); remove it (it may need root) and run the command again")


def _tighten_files(folder: Path) -> None:
    """Make the regular files directly in `folder` 0600 and its subfolders 0700 (symlinks are
    left alone, never followed). An entry of another user is refused (`PrivateDirError`)."""
    uid = os.getuid()
    with os.scandir(folder) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            problem = foreign_entry_problem(Path(entry.path), st, uid)
            if problem is not None:
                raise PrivateDirError(problem)
            if stat.S_ISLNK(st.st_mode):
                continue
            if (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) \
                    and stat.S_IMODE(st.st_mode) & 0o077:
                # Owner bits kept (0644 -> 0600, 0755 -> 0700): only other users lose access.
                os.chmod(entry.path, stat.S_IMODE(st.st_mode) & 0o700)


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
        """Create the home, or make an existing one private: the directory 0700 (refused when
        it is another user's or a symlink), its files 0600, `keys/` and `trash/` 0700 with
        0600 files. Runs on `init` and at every daemon start, so a home made 0755 (by hand,
        by an older mocksync, by `--home` on an existing directory) is tightened. An entry
        in it (or in `keys/`, `trash/`) owned by another user is refused, never used: it was
        planted while the folder was open to others."""
        ensure_private_dir(self.root, what="home")
        _tighten_files(self.root)  # first: a planted `keys` link is refused, never followed
        self.keys.mkdir(exist_ok=True, mode=PRIVATE_DIR_MODE)
        for sub in (self.keys, self.trash):
            if sub.is_dir() and not sub.is_symlink():
                _tighten_files(sub)
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
        """Control API socket (mode 0600), always in a private directory (module docstring).
        Unix socket paths are limited to ~107 bytes."""
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        uid = os.getuid()
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and os.path.isabs(runtime):
            try:
                st = os.lstat(runtime)
            except OSError:
                st = None
            if st is not None and private_dir_problem(st, uid) is None \
                    and os.access(runtime, os.W_OK):
                return Path(runtime) / f"mocksync-{tag}.sock"
        candidate = self.root / "control.sock"
        if len(os.fsencode(candidate)) < MAX_HOME_SOCKET_PATH:
            return candidate
        tmp = os.environ.get("TMPDIR")
        root = Path(tmp) if tmp and os.path.isabs(tmp) else SOCKET_TMP_ROOT
        return root / f"mocksync-{uid}" / f"{tag}.sock"
