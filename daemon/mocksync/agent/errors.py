"""The refusals of `mocksync.agent`, in one place under `mocksync.errors.MocksyncError` (issue 14).

Why one module per package: callers catch `MocksyncError` to tell a refusal from a bug, and
a reader finds every way a package can say no in one file. The modules that raise these
import them from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MocksyncError, ValidationError

if TYPE_CHECKING:
    from .folderread import Skip


class DaemonNotRunning(MocksyncError):
    """No daemon answers on the control socket (the CLI exits with code 3)."""

    code = "daemon_not_running"


class ControlError(MocksyncError):
    """The daemon refused or failed a call; carries its error `code`, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class ForeignSocketError(ControlError):
    """The control socket is served by another user: refused before anything is sent."""

    def __init__(self, path: Path, uid: int, me: int) -> None:
        super().__init__("foreign_socket", foreign_socket_message(path, uid, me), 403)


def foreign_socket_message(path: Path, uid: int, me: int) -> str:
    return (f"refusing the control socket {path}: it is served by another user (uid {uid}), "
            f"not by your own daemon (uid {me}); someone may be impersonating mocksync. "
            "Remove it (it may need root) and start your daemon, or set XDG_RUNTIME_DIR")


class ControlSocketError(MocksyncError):
    """The control socket path cannot be used (not a socket, another user's, too long)."""

    code = "control_socket"


class SkippedFile(ValidationError):
    """A folder file that is not read (not a regular file, outside the folder, unreadable,
    too large). Carries the `Skip`."""

    code = "skipped_file"

    def __init__(self, skip: Skip) -> None:
        super().__init__(skip.reason)
        self.skip = skip


class QuotaRefusal(MocksyncError):
    """`adopt` would take the environment over its plan's size (linked files count)."""

    code = "quota"


class DaemonAlreadyRunning(MocksyncError):
    """Another mocksync daemon already serves this home."""

    code = "already_running"


class UnknownEnvironment(MocksyncError):
    code = "unknown_env"


class UnsupportedSystemError(ValidationError):
    code = "unsupported_system"


class WorkerClosedError(MocksyncError, RuntimeError):
    """A job was submitted after `close()`: the daemon is stopping."""


class WatchError(MocksyncError):
    """The folder (or an extra file's folder) cannot be watched."""

    code = "watch_failed"


class FileWriteError(MocksyncError):
    """Writing a file failed (disk full, permission, missing folder). Nothing was changed,
    unless `landed` names the version put in place (only the folder flush failed)."""

    code = "write_failed"
    #: `writer.Written` of the content in place despite the error (the folder could not be
    #: flushed after the rename): the write happened; its durability is in doubt.
    landed: Any = None


class FileChangedError(MocksyncError):
    """The file is no longer the version the caller read (an editor saved meanwhile): it was
    left as it is, nothing was written. Not a failure: take the new version in, then write."""

    code = "file_changed"


class UnsafePathError(FileWriteError):
    """A file from a teammate would go through a symlink, over something that is not a
    regular file, or to a path that is not plainly relative. Nothing was written."""

    code = "unsafe_path"


class QuotaError(MocksyncError):
    """Sharing or keeping an environment would take a space over its plan."""

    code = "quota"
