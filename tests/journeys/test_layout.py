"""Journey: a team keeps its environment in git in Prettier's layout (short arrays and small
objects on one line, as the public mockoon/mock-samples files are), and mocksync never adds
layout noise to it (issue 15).

Alice shares the file from her laptop: not one byte of it changes, not at share and not when
her daemon restarts. Bob edits one property in Mockoon: on Alice's laptop exactly that line
changes. Alice then edits one value in her text editor while her desktop (Mockoon) edits
another: her file ends up with both lines changed and every other byte as it was.
"""

from __future__ import annotations

import difflib
import re
import uuid
from pathlib import Path

from .harness import Crew

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "prettier-petstore.json"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def fresh_sample() -> bytes:
    """The Prettier-style sample with fresh uuids (journeys share one team)."""
    text = SAMPLE.read_text("utf-8")
    new = {u: str(uuid.uuid4()) for u in dict.fromkeys(_UUID.findall(text))}
    return _UUID.sub(lambda m: new[m.group(0)], text).encode("utf-8")


def changed(a: bytes, b: bytes) -> list[str]:
    """The lines `git diff` would show between two versions (- old, + new)."""
    return [line for line in difflib.unified_diff(a.decode().splitlines(), b.decode().splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "-+" and line[:3] not in ("---", "+++")]


def test_a_prettier_file_keeps_its_layout_through_share_restart_and_edits(crew: Crew) -> None:
    team, (laptop, desktop, bob) = crew.team, crew.all
    original = fresh_sample()
    path = laptop.write_raw("pets-prettier.json", original)
    team.wait(lambda: laptop.env("pets-prettier.json"), "the laptop to list the file")
    ino = path.stat().st_ino

    env = laptop.share("pets-prettier.json")["uuid"]
    team.synced(env, laptop, desktop, bob)
    assert path.read_bytes() == original and path.stat().st_ino == ino  # never rewritten

    laptop.restart()
    team.wait(lambda: (laptop.env(env) or {}).get("state") == "synced", "laptop synced again")
    assert path.read_bytes() == original and path.stat().st_ino == ino

    # Bob (Mockoon, his own layout) changes one status code: one line changes at Alice's.
    def bob_edit(doc: dict) -> None:
        doc["routes"][1]["responses"][0]["statusCode"] = 503

    bob.edit(env, bob_edit)
    laptop.wait_doc(env, lambda d: d["routes"][1]["responses"][0]["statusCode"] == 503,
                    "Bob's status code")
    after_bob = path.read_bytes()
    assert changed(original, after_bob) == ['-          "statusCode": 200,',
                                            '+          "statusCode": 503,']

    # Alice edits the port in her text editor (Prettier layout kept) while her desktop's
    # Mockoon renames a response: both lines change on the laptop, nothing else.
    mine = after_bob.replace(b'"port": 3010,', b'"port": 4010,')
    assert mine != after_bob
    laptop.write_raw("pets-prettier.json", mine)
    desktop.edit(env, lambda d: d["routes"][0]["responses"][1].update(label="Gone"))
    merged = laptop.wait_doc(env, lambda d: d["routes"][0]["responses"][1]["label"] == "Gone"
                             and d["port"] == 4010, "both edits")
    team.synced(env, laptop, desktop, bob)
    assert merged["port"] == 4010
    assert changed(after_bob, path.read_bytes()) == [
        '-  "port": 3010,', '-          "label": "Not found",',
        '+  "port": 4010,', '+          "label": "Gone",'] or changed(
        after_bob, path.read_bytes()) == [
        '-  "port": 3010,', '+  "port": 4010,',
        '-          "label": "Not found",', '+          "label": "Gone",']
