"""Mallory: a member of the space with no daemon, whose change sets are made and signed with
the library's own code (planted files, a clock ten days ahead, a value nested too deep, squats
in a teammate's slot). Shared by the soak and the item-flood attack tests (issue 14: it used
to live in test_attack_soak, imported by another test module)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from journeys.harness import Device
from mocksync.changes import ChangeSet
from mocksync.changes.hlc import pack
from mocksync.model.files import CONTENT_REG, PATH_REG, file_uuid
from mocksync.model.ops import enc_value
from mocksync.paths import Home
from mocksync.relay.envelope import Envelope, Tagger, seal_envelope
from mocksync.spaceio.identityfiles import load_identity
from mocksync.spaceio.store import get_space

#: Far-future stamp of mallory's quarantined change set.
AHEAD_MS = 10 * 24 * 3600 * 1000
#: Nesting of mallory's too-deep value (the model allows 32).
TOO_DEEP = 200
#: Where mallory plants files that no environment links.
PLANTED = (".git/hooks/pre-commit", "evil.sh", "node_modules/.bin/jest")


@dataclass
class Mallory:
    device: Device
    space: str
    env: str
    victim: str  # alice's device id

    def __post_init__(self) -> None:
        home = Home(self.device.home.resolve())
        self.identity = load_identity(home)
        self.home = home
        stored = get_space(home, self.space)  # by name; the relay knows it by id
        self.space = stored.space_id
        self.keys = stored.keys
        self.tag = Tagger(self.space, self.keys)(self.env)

    def logs(self) -> dict[str, list[bytes]]:
        return {self.space: [e.wire for e in get_space(self.home, self.space).entries]}

    def chain(self) -> list[Envelope]:
        """Mallory's own change sets, made and signed with the library's code: planted files,
        a clock ten days ahead, a value nested too deep."""
        me = self.identity.device_id
        now = int(time.time() * 1000)

        def raw(data: bytes, mode: int) -> dict[str, Any]:
            import base64
            import hashlib
            return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                    "mode": mode, "b64": base64.b64encode(data).decode("ascii")}

        script = raw(b"#!/bin/sh\necho owned\n", 0o755)
        plants = tuple(["c", file_uuid(self.env, rel), "file",
                        [[list(PATH_REG), enc_value(rel)], [list(CONTENT_REG), enc_value(script)]]]
                       for rel in PLANTED)
        deep: Any = "x"
        for _ in range(TOO_DEEP):
            deep = [deep]
        bodies = [
            (now, plants),
            (now + AHEAD_MS, (["s", self.env, ["v", "name"], enc_value("from the future")],)),
            (now + 1, (["s", self.env, ["v", "name"], enc_value(deep)],)),
        ]
        out, prev = [], b""
        for seq, (hlc_ms, ops) in enumerate(bodies, start=1):
            cs = ChangeSet(space=self.space, env=self.env, device=me, seq=seq,
                           hlc=pack(hlc_ms, 0), deps={}, prev_hash=prev, ops=ops
                           ).sign(self.identity.signing_key)
            prev = cs.hash
            out.append(seal_envelope(self.space, self.tag, self.keys, cs.encode()))
        return out

    def squat(self, seq: int) -> Envelope:
        """A change set in alice's slot, signed with mallory's key."""
        cs = ChangeSet(space=self.space, env=self.env, device=self.victim, seq=seq,
                       hlc=pack(int(time.time() * 1000), 0), deps={}, prev_hash=b"\x00" * 32,
                       ops=(["s", self.env, ["v", "name"], enc_value("owned by mallory")],)
                       ).sign(self.identity.signing_key)
        return seal_envelope(self.space, self.tag, self.keys, cs.encode())
