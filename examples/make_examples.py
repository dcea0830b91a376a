"""Regenerate examples/environments/large-catalog.json from the deterministic generator.

Why a script rather than a hand-written file: a 1.3 MB environment can only be reviewed as
the (seed, size, name) that produced it, and tests check that the committed file is exactly
what this script writes, so the generator cannot drift from it unnoticed. The other examples
(petstore, chat-websocket, payments-callbacks) are hand-designed and committed as they are.

    .venv/bin/python examples/make_examples.py           # rewrite the file
    .venv/bin/python examples/make_examples.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mocksync.devtools.envgen import dump_mockoon, generate_env

ENVIRONMENTS_DIR = Path(__file__).resolve().parent / "environments"
LARGE_CATALOG_FILE = "large-catalog.json"
#: Size of the 2-space layout the generator grows to: over 1 MB, under 1.5 MB.
LARGE_CATALOG_TARGET_BYTES = 1_300_000
LARGE_CATALOG_SEED = 33
LARGE_CATALOG_NAME = "Large catalog API"


def render_large_catalog() -> str:
    """The exact text of large-catalog.json."""
    env = generate_env(LARGE_CATALOG_TARGET_BYTES, seed=LARGE_CATALOG_SEED, name=LARGE_CATALOG_NAME)
    return dump_mockoon(env)


def _write_atomically(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the committed file differs")
    args = parser.parse_args(argv)
    path = ENVIRONMENTS_DIR / LARGE_CATALOG_FILE
    text = render_large_catalog()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            print(f"{path} is out of date: run `python examples/make_examples.py`", file=sys.stderr)
            return 1
        print(f"{path} is up to date ({len(text.encode('utf-8'))} bytes)")
        return 0
    _write_atomically(path, text)
    print(f"wrote {path} ({len(text.encode('utf-8'))} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
