"""CPU cost of the receiving side's decoding (issues 15 + 17): `python -m bench.canon_cpu`.

Why a separate, unregistered script: the relay benchmarks (bench/relay.py, relay_cluster.py)
measure latency end to end on a loaded machine, where a 30 % cut of the decoder's CPU is lost
in the noise; this one times the two paths the decoder dominates, in CPU seconds
(`time.process_time`, single thread), so a before/after comparison means something:

- one delivered frame: a relay `env` push carrying one sealed change set (what each fan-out
  subscriber receives per put), through the client's path (the per-kind gate, then the typed
  decode);
- opening 10,000 envelopes of a catch-up (AEAD, slot checks, change-set decode: what
  `net.relay_transport._open_all` does on its worker thread), then what the store would
  decode again (nothing, when `_open_all` hands it decoded change sets).

Every loop is bounded by count. Prints one line per measure. `--ab` first runs the same
measures with the gate of BEFORE_REV (`old_gate`), so before and after share one load.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The last commit before the one-pass gate (issues 15 + 17): what `--ab` compares against.
BEFORE_REV = "10af313"
N_FRAMES = 20_000
N_ENVELOPES = 10_000
ROUNDS = 3


def _best_cpu(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    """Least CPU seconds of `rounds` calls (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _world(n: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mocksync.changes.changeset import make_changeset
    from mocksync.relay.envelope import Tagger, seal_envelope

    key = Ed25519PrivateKey.generate()
    space = "ab" * 16
    env = "7f6e3c1a-0000-4000-8000-000000000001"
    device = "ABCDE-FGHJK-MNPQR-STVWX"
    keys = {1: os.urandom(32)}
    tagger = Tagger(space, keys)
    tag = tagger(env)
    prev = None
    wires = []
    for i in range(n):  # one-property edits, as a day of work makes them
        prev = make_changeset(key, space=space, env=env, device=device, hlc=(1 << 40) + i,
                              ops=[["s", f"resp-{i % 300:04d}", ["v", "label"], f"l{i}"]],
                              deps={"ZZZZZ-FGHJK-MNPQR-STVWX": 3}, prev=prev)
        wires.append(prev.encode())
    sealed = [seal_envelope(space, tag, keys, w) for w in wires]
    return {"space": space, "tag": tag, "keys": keys, "tagger": tagger, "wires": wires,
            "sealed": sealed}


def per_frame(world: dict[str, Any]) -> float:
    """CPU microseconds to admit and decode one relay `env` push of one envelope."""
    from mocksync.changes.canonical import encode
    from mocksync.net import relay_gate

    e = world["sealed"][0]
    frame = encode({"t": "env", "s": world["space"], "e": world["tag"],
                    "x": [[e.device, e.seq, e.gen, e.ct]]})
    frames = [frame] * N_FRAMES
    one = relay_gate.decode_relay_frame

    def run() -> None:
        for f in frames:
            one(f)
    return _best_cpu(run) / N_FRAMES * 1e6


def open_envelopes(world: dict[str, Any]) -> float:
    """CPU seconds to open and decode N_ENVELOPES envelopes of one catch-up."""
    from mocksync.net import relay_transport

    def run() -> None:
        out = relay_transport._open_all(world["space"], world["tag"], world["keys"],
                                        world["tagger"], world["sealed"])
        assert not any(isinstance(o, Exception) for o in out)
    return _best_cpu(run)


def canonical_decode(world: dict[str, Any]) -> float:
    """CPU seconds of the gate alone: `canonical.decode` of N_ENVELOPES change-set wires and
    of their bodies (the layer with the items: about 30 each)."""
    from mocksync.changes import canonical

    wires = world["wires"]
    bodies = [canonical.decode(w)[0] for w in wires]

    def run() -> None:
        for w, b in zip(wires, bodies, strict=True):
            canonical.decode(w)
            canonical.decode(b)
    return _best_cpu(run)


@contextlib.contextmanager
def old_gate(rev: str = BEFORE_REV) -> Iterator[None]:
    """The decoding gate of git revision `rev` (before issue 17: scan, build, re-encode) in
    place of today's, and the two-step paths it was used by, for an A/B in one process under
    the same load. Needs git and the repository; restores everything on exit."""
    from mocksync.changes import canonical
    from mocksync.net import relay_gate, relay_transport
    from mocksync.relay import envelope
    from mocksync.relay.protocol import RELAY, decode

    def load(name: str) -> Any:
        src = subprocess.run(["git", "show", f"{rev}:daemon/mocksync/changes/{name}.py"],
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout
        mod = types.ModuleType(f"mocksync.changes._{name}_before")
        mod.__package__ = "mocksync.changes"
        sys.modules[mod.__name__] = mod  # (dataclasses look their module up there)
        exec(compile(src, f"{rev}:{name}.py", "exec"), mod.__dict__)
        return mod

    old = load("canonical")
    old_cs = load("changeset")  # its `canonical.decode` is the old one while patched below

    def two_step_frame(data: bytes) -> Any:
        relay_gate.check_relay_frame(data)
        return decode(data, sender=RELAY)

    def two_step_open(space: str, tag: str, keys: Any, tagger: Any, items: Any) -> list[Any]:
        out: list[Any] = []
        for env in items:
            slot, wire = envelope.open_envelope(space, tag, keys, env, tagger)
            out.append((slot, old_cs.ChangeSet.decode(wire)))
        return out

    saved = [(canonical, "decode"), (canonical, "scan"), (envelope, "decode"),
             (relay_gate, "scan"), (relay_gate, "decode_relay_frame"),
             (relay_transport, "_open_all")]
    before = [(mod, name, getattr(mod, name)) for mod, name in saved]
    for (mod, name), value in zip(saved, [old.decode, old.scan, old.decode, old.scan,
                                          two_step_frame, two_step_open], strict=True):
        setattr(mod, name, value)
    try:
        yield
    finally:
        for mod, name, value in before:
            setattr(mod, name, value)


def _measure(world: dict[str, Any], label: str) -> None:
    print(f"[{label}] per delivered env frame (gate + decode): {per_frame(world):.1f} us CPU")
    print(f"[{label}] open {N_ENVELOPES} envelopes: {open_envelopes(world):.3f} s CPU")
    print(f"[{label}] canonical.decode of {N_ENVELOPES} wires + bodies: "
          f"{canonical_decode(world):.3f} s CPU")


def main(argv: list[str]) -> None:
    """`--ab [REV]`: the gate of git revision REV (default BEFORE_REV) first, then today's."""
    world = _world(N_ENVELOPES)
    print(f"load average at start: {os.getloadavg()}")
    if argv[:1] == ["--ab"]:
        rev = argv[1] if len(argv) > 1 else BEFORE_REV
        with old_gate(rev):
            _measure(world, f"before ({rev})")
    _measure(world, "now")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
