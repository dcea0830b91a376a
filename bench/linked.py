"""Issue #7 benchmarks: a 5 MB linked file (a FILE body) reaching the other device.

- linked_5mb_local: two in-process Agents on a LocalBus. Each sample rewrites the 5 MB
  fixture on device A with new random bytes (temp file + rename, as an editor saves) and
  times until device B's copy holds exactly those bytes: A's poll noticing the change (every
  0.5 s, the daemon's default), reading and hashing it, base64, signing and committing the
  change set, B verifying and applying it, decoding and checking the content, and the atomic
  write. No network: the floor of what the feature costs.
- linked_5mb_lan: the same edit between two real `mocksync daemon` processes over the LAN
  path on loopback (mDNS, signed signaling, WebRTC data channel, chunking), the way two
  teammates' machines sync. Plus one sample of sharing an environment that links the file,
  from `mocksync share` to B holding the whole file.

Target for both: the file complete on B in under 2 s (median). Random bytes: the worst case
for the change set's compression. Every loop is bounded in count and time; network traffic
stays on 127.0.0.1 (both daemons `--bind 127.0.0.1`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from mocksync.agent.bus import LocalBus
from mocksync.agent.daemon import Agent
from mocksync.agent.settings import Settings
from mocksync.agent.spacedir import SpaceDirectory
from mocksync.devtools.pairing import pair
from mocksync.paths import Home
from mocksync.space.quotas import MB
from mocksync.spaceio.actions import create_space, init_device

from .common import Result

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "environments" / \
    "payments-callbacks.json"
FILE_BYTES = 5 * 1000 * 1000
REL = "fixtures/receipt.html"  # the example's FILE response
SAMPLES = 8
#: Time budget per loop, and longest wait for one sample.
BUDGET_S = 120.0
WAIT_S = 30.0
TARGET_S = 2.0


def _env_doc() -> bytes:
    return EXAMPLE.read_bytes()


def _save(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _matches(path: Path, data: bytes) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_size == len(data) and path.read_bytes() == data


# ------------------------------------------------------------------------------ in-process


async def _local_run(root: Path) -> tuple[list[float], float]:
    devs = []
    for name in ("a", "b"):
        home = Home.resolve(root / name / "home")
        folder = root / name / "envs"
        folder.mkdir(parents=True)
        ident, _ = init_device(home, name=name, member_name=f"{name}-user")
        devs.append((home, folder, ident))
    (ha, fa, ia), (hb, fb, ib) = devs
    space = create_space(ha, ia, "bench").space_id
    pair(ha, hb, space)
    for h in (ha, hb):
        SpaceDirectory(h).set_plan(space, "enterprise", max_env_bytes=30 * MB)
    bus = LocalBus()
    agents = [Agent(h, Settings(folder=f, mdns=False).check(), i, SpaceDirectory(h),
                    transport=bus.port()) for h, f, i in devs]
    for ag in agents:
        await ag.start()
    try:
        src = fa / "payments.json"
        src.write_bytes(_env_doc())
        data = os.urandom(FILE_BYTES)
        (fa / REL).parent.mkdir(parents=True)
        (fa / REL).write_bytes(data)
        t0 = time.perf_counter()
        agents[0].share(str(src), space=space)
        await _until(lambda: _matches(fb / REL, data), "the shared file on B")
        share_s = time.perf_counter() - t0
        samples: list[float] = []
        deadline = time.monotonic() + BUDGET_S
        for _ in range(SAMPLES):
            data = os.urandom(FILE_BYTES)
            t0 = time.perf_counter()
            _save(fa / REL, data)
            await _until(lambda d=data: _matches(fb / REL, d), "the edited file on B")
            samples.append(time.perf_counter() - t0)
            await asyncio.sleep(0.2)
            if time.monotonic() > deadline:
                break
        return samples, share_s
    finally:
        for ag in reversed(agents):
            await ag.stop()


async def _until(pred, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def linked_5mb_local() -> list[Result]:
    root = Path(tempfile.mkdtemp(prefix="msb-linked-", dir="/tmp"))
    try:
        samples, share_s = asyncio.run(_local_run(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [Result(
        "5 MB linked file edit reaches B, in-process (LocalBus)", "s", samples, target=TARGET_S,
        note="rewrite of a 5 MB random FILE body on A until B's copy is byte-identical; "
             "includes A's 0.5 s poll", extra={"file_bytes": FILE_BYTES,
                                               "share_to_complete_s": round(share_s, 3)})]


# ------------------------------------------------------------------------------ real daemons


def linked_5mb_lan() -> list[Result]:
    from .network import _pair_of_daemons, _wait

    samples: list[float] = []
    with _pair_of_daemons() as (a, b, space, _root):
        a.start()
        b.start()
        _wait(lambda: a.connected(b) and b.connected(a), "the LAN link", timeout=60)
        src = a.folder / "payments.json"
        _save(src, _env_doc())
        data = os.urandom(FILE_BYTES)
        (a.folder / REL).parent.mkdir(parents=True)
        (a.folder / REL).write_bytes(data)
        _wait(lambda: any(e["file"] == str(src) for e in a.call("list")["environments"]),
              "A to see the file")
        t0 = time.perf_counter()
        a.call("share", file=str(src), space=space)
        _wait(lambda: _matches(b.folder / REL, data), "the shared file on B", timeout=WAIT_S,
              step=0.002)
        share_s = time.perf_counter() - t0
        deadline = time.monotonic() + BUDGET_S
        for _ in range(SAMPLES):
            data = os.urandom(FILE_BYTES)
            t0 = time.perf_counter()
            _save(a.folder / REL, data)
            _wait(lambda d=data: _matches(b.folder / REL, d), "the edited file on B",
                  timeout=WAIT_S, step=0.002)
            samples.append(time.perf_counter() - t0)
            time.sleep(0.3)
            if time.monotonic() > deadline:
                break
        status = b.call("status")
        rows = [lk for e in status["environments"] for lk in e.get("linked") or ()]
    return [Result(
        "5 MB linked file edit reaches B, two daemons over WebRTC on loopback", "s", samples,
        target=TARGET_S,
        note="rewrite of a 5 MB random FILE body on A until B's copy is byte-identical; "
             "includes A's 0.5 s poll, signing, chunked data channel, B's checks and write",
        extra={"file_bytes": FILE_BYTES, "share_to_complete_s": round(share_s, 3),
               "b_linked": json.loads(json.dumps(rows))})]


BENCHMARKS = [linked_5mb_local, linked_5mb_lan]


if __name__ == "__main__":  # `python -m bench.linked`
    for fn in BENCHMARKS:
        for r in fn():
            d = r.to_json()
            print(json.dumps({k: d[k] for k in ("name", "n", "median", "p99", "target", "met",
                                                "extra")}))
            print("  samples:", [round(x, 3) for x in r.samples])
