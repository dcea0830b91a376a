"""Which file a teammate's environment gets on this device: the sharer's own name, when it can.

Why: scripts and docs name environment files (`mockoon-cli start --data petstore.json`); a
name made from the environment's title (`petstore-api.json`) differs per machine. So the
sharing device records its file name, relative to the synced folder, in the `["m", "file"]`
register of the environment entity (ops.FILE_NAME): an op of the encrypted change set like
any other, so the relay never sees it. A receiving device uses that name when it is safe and
free here, and otherwise falls back to the title's slug (`model.files.env_file_stem`).

"Safe" are the rules the title's slug already meets: one name directly in the folder (the
folder is watched flat), no separator, not `.`/`..`, not hidden (no leading `.`), printable,
ending in `.json`, at most MAX_SHARED_NAME_BYTES of UTF-8. "Free" (never over a local file
this device never synced, nor a dangling symlink, nor another environment's file) is for
the caller to say, through `free(name)`: the only look at the disk, kept out of this module.
Pure: no files, no clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import NoFreeNameError
from .files import env_file_stem

#: Longest file name recorded or used, in UTF-8 bytes (the usual filesystem name limit).
MAX_SHARED_NAME_BYTES = 255
#: Numbered fallbacks tried (`name-2.json` ...) before giving up on a folder this full.
MAX_FALLBACK_TRIES = 10_000
#: The ending every environment file name has.
ENV_SUFFIX = ".json"


def shared_name_problem(name: Any) -> str | None:
    """Why `name` cannot be a synced environment's file name on any device; None when it can."""
    if not isinstance(name, str) or not name:
        return "the file name is not a non-empty string"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_SHARED_NAME_BYTES:
        return f"the file name is longer than {MAX_SHARED_NAME_BYTES} bytes"
    if "/" in name or "\\" in name:
        return "the file name holds a path separator (environment files sit directly in the folder)"
    if name in (".", "..") or name.startswith("."):
        return "the file name is hidden or a dot name"
    if not name.isprintable():
        return "the file name holds control characters"
    if not name.lower().endswith(ENV_SUFFIX) or len(name) == len(ENV_SUFFIX):
        return f"the file name does not end in {ENV_SUFFIX}"
    return None


def choose_file_name(wanted: Any, title: Any, free: Callable[[str], bool]) -> str:
    """The file name for an environment arriving from a teammate.

    `wanted`: the sharer's file name (the FILE_NAME register; None when the sharer recorded
    none); used when it is safe (`shared_name_problem`) and `free`. Otherwise the slug of
    `title` as before: `slug.json`, then `slug-2.json`, `slug-3.json`, ... the first free one.
    """
    if shared_name_problem(wanted) is None and free(wanted):
        return str(wanted)
    slug = env_file_stem(title)
    for n in range(1, MAX_FALLBACK_TRIES + 1):
        candidate = f"{slug}{ENV_SUFFIX}" if n == 1 else f"{slug}-{n}{ENV_SUFFIX}"
        if free(candidate):
            return candidate
    raise NoFreeNameError(f"no free file name for {slug}{ENV_SUFFIX} after {MAX_FALLBACK_TRIES} "
                          "tries; tidy up the folder")


__all__ = ["ENV_SUFFIX", "MAX_FALLBACK_TRIES", "MAX_SHARED_NAME_BYTES", "NoFreeNameError",
           "choose_file_name", "shared_name_problem"]
