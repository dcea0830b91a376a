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

Every loop is bounded by count. Prints one line per measure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

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
    from mocksync.relay.protocol import RELAY, decode

    e = world["sealed"][0]
    frame = encode({"t": "env", "s": world["space"], "e": world["tag"],
                    "x": [[e.device, e.seq, e.gen, e.ct]]})
    one: Callable[[bytes], Any] | None = getattr(relay_gate, "decode_relay_frame", None)
    if one is None:  # before issue 17: the gate's scan, then the decoder's own pass
        def one(data: bytes) -> Any:
            relay_gate.check_relay_frame(data)
            return decode(data, sender=RELAY)
    frames = [frame] * N_FRAMES
    assert one is not None

    def run() -> None:
        for f in frames:
            one(f)
    return _best_cpu(run) / N_FRAMES * 1e6


def open_envelopes(world: dict[str, Any]) -> float:
    """CPU seconds to open and decode N_ENVELOPES envelopes of one catch-up."""
    from mocksync.net.relay_transport import _open_all

    def run() -> None:
        out = _open_all(world["space"], world["tag"], world["keys"], world["tagger"],
                        world["sealed"])
        assert not any(isinstance(o, Exception) for o in out)
    return _best_cpu(run)


def canonical_decode(world: dict[str, Any]) -> float:
    """CPU seconds of the gate alone: `canonical.decode` of N_ENVELOPES change-set wires."""
    from mocksync.changes.canonical import decode

    wires = world["wires"]

    def run() -> None:
        for w in wires:
            decode(w)
    return _best_cpu(run)


def main() -> None:
    world = _world(N_ENVELOPES)
    print(f"load average at start: {os.getloadavg()}")
    print(f"per delivered env frame (gate + decode): {per_frame(world):.1f} us CPU")
    print(f"open {N_ENVELOPES} envelopes (_open_all): {open_envelopes(world):.3f} s CPU")
    print(f"canonical.decode of {N_ENVELOPES} change-set wires: "
          f"{canonical_decode(world):.3f} s CPU")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
