"""Red team of issue 15's quota stat (`linked._stat_inside`: one `lstat` per linked file, the
folder's real path memoised): the same answer as `os.path.realpath` + `os.stat` + "inside
the folder?" for every way a relative reference can point (symlink escapes, `..`, absolute
paths, dangling links, loops, a symlinked sub-folder), with one memo shared by all."""

from __future__ import annotations

import os
from pathlib import Path

from mocksync.agent.linked import _inside, _stat_inside


def slow_answer(path: Path, folder: Path) -> tuple[int, int] | None:
    real = os.path.realpath(path)
    if not _inside(real, folder):
        return None
    try:
        st = os.stat(real)
    except OSError:
        return None
    return st.st_ino, st.st_size


def test_stat_inside_answers_as_realpath_and_stat(tmp_path: Path) -> None:
    folder = tmp_path / "envs"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"s" * 11)
    (folder / "a.txt").write_bytes(b"a" * 3)
    (folder / "sub" / "b.txt").write_bytes(b"b" * 5)
    (folder / "out").symlink_to(outside)
    (folder / "in").symlink_to(folder / "a.txt")
    (folder / "rel_in").symlink_to("sub/b.txt")
    (folder / "dangling").symlink_to(folder / "nope.txt")
    (folder / "loop1").symlink_to("loop2")
    (folder / "loop2").symlink_to("loop1")
    (folder / "subl").symlink_to(folder / "sub")
    (folder / "upl").symlink_to(tmp_path)
    (folder / "sub" / "back").symlink_to("../a.txt")
    (folder / "sub" / "esc").symlink_to("../../secret.txt")
    rels = ["a.txt", "sub/b.txt", "out", "in", "rel_in", "dangling", "loop1", "subl/b.txt",
            "upl/secret.txt", "upl/envs/a.txt", "sub/back", "sub/esc", "sub/../a.txt",
            "../secret.txt", "sub/../../secret.txt", str(outside), str(folder / "a.txt"),
            "nope.txt", "sub", ".", "..", "subl/../a.txt", "a.txt/x", "sub/", "./a.txt"]
    dirs: dict[Path, str] = {}
    for rel in rels * 2:  # the second round answers from the memo
        path = folder / rel
        st = _stat_inside(path, dirs, folder)
        got = (st.st_ino, st.st_size) if st is not None else None
        assert got == slow_answer(path, folder), rel
    assert slow_answer(folder / "out", folder) is None  # (the escapes are refused, not read)
    assert slow_answer(folder / "sub/esc", folder) is None
