"""Issue #3 benchmarks: the real daemon on one machine.

- save_to_commit_200kb: an editor-style save (temp file + rename) of a one-property edit of a
  200 KB environment, timed until the daemon's event stream (`ControlClient.iter_events`)
  reports the committed change set (event "change", origin "local"). That span holds the
  watcher's batching, reading and parsing the file, the diff against its base, signing, the
  SQLite commit and the event's trip over the control socket. Baseline, measured in the same
  run on the same folder: how long a bare `watchfiles` watch with the daemon's own settings
  (step 5 ms) takes to report the same kind of save, the floor any watcher-based daemon pays.
- idle_daemon: CPU (utime+stime from /proc/PID/stat) of a daemon holding 5 synced
  environments, over 60 s of nothing happening, sampled per 10 s window; and its RSS (VmRSS).

Both run `mocksync daemon` as a child process with its own temporary home (no network: the
daemon runs with `--no-mdns --bind 127.0.0.1` and no relay). Every loop is bounded by count
and time.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mocksync.agent.client import ControlClient
from mocksync.agent.errors import ControlError, DaemonNotRunning
from mocksync.devtools.envgen import dump_mockoon, generate_env
from mocksync.paths import Home
from mocksync.spaceio.actions import init_device

from .common import Result

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "environments"
#: Samples of the save->commit latency (and of the watcher baseline).
SAVE_SAMPLES = 60
#: Pause between two saves: longer than the watcher's batching, so each save is one batch.
SAVE_GAP_S = 0.05
#: Time budget of each loop.
SAVE_BUDGET_S = 120.0
#: Idle measurement: total span and window.
IDLE_SPAN_S = 60.0
IDLE_WINDOW_S = 10.0
#: How long a daemon may take to answer after start.
START_TIMEOUT_S = 30.0


def _mocksync() -> list[str]:
    script = Path(sys.executable).parent / "mocksync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mocksync"]


@contextlib.contextmanager
def _daemon(root: Path) -> Iterator[tuple[Home, Path, subprocess.Popen[bytes]]]:
    """A fresh device under `root` and its daemon, stopped (SIGTERM) on exit."""
    home = Home.resolve(root / "home")
    folder = root / "envs"
    folder.mkdir(parents=True)
    init_device(home, name="bench", member_name="bench")
    log = open(root / "daemon.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([*_mocksync(), "--home", str(home.root), "daemon", "--folder",
                             str(folder), "--no-mdns", "--bind", "127.0.0.1"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    log.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
            with contextlib.suppress(DaemonNotRunning, ControlError):
                if ControlClient(home.socket).call("status")["daemon"]["pid"] == proc.pid:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("daemon did not answer on its socket")
            time.sleep(0.02)
        yield home, folder, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _save(path: Path, data: bytes, n: int) -> None:
    tmp = path.with_name(f"{path.name}.{n:08x}")  # Mockoon-like temp name beside the file
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _watcher_baseline(folder: Path, path: Path, texts: list[bytes]) -> list[float]:
    """ms from rename to a bare watchfiles watch (step 5 ms, debounce 50 ms) reporting it."""
    import watchfiles

    seen: list[float] = []
    stop = threading.Event()
    ready = threading.Event()

    def watch() -> None:
        ready.set()
        for _changes in watchfiles.watch(folder, step=5, debounce=50, stop_event=stop,
                                         rust_timeout=200, yield_on_timeout=True):
            if _changes:
                seen.append(time.perf_counter())
            if stop.is_set():
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ready.wait(5)
    time.sleep(0.3)  # let the OS watch be built
    out: list[float] = []
    deadline = time.monotonic() + SAVE_BUDGET_S
    for i, data in enumerate(texts):
        before = len(seen)
        t0 = time.perf_counter()
        _save(path, data, 10_000 + i)
        limit = time.monotonic() + 5
        while len(seen) == before and time.monotonic() < limit:
            time.sleep(0.0005)
        if len(seen) > before:
            out.append((seen[before] - t0) * 1000)
        time.sleep(SAVE_GAP_S)
        if time.monotonic() > deadline:
            break
    stop.set()
    t.join(5)
    return out


class _EventReader(threading.Thread):
    """Reads the daemon's event stream, stamping each local commit as its line arrives."""

    def __init__(self, client: ControlClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.commits: queue.Queue[tuple[float, dict]] = queue.Queue()

    def run(self) -> None:
        with contextlib.suppress(ControlError, OSError):
            for ev in self.client.iter_events(timeout=None):
                if ev.get("event") == "change" and ev.get("origin") == "local":
                    self.commits.put((time.perf_counter(), ev))


def save_to_commit_200kb() -> Result:
    root = Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    try:
        doc = generate_env(200_000, seed=3)
        text = dump_mockoon(doc).encode("utf-8")
        resps = [r for route in doc["routes"] for r in route["responses"]]
        # Every save's bytes are made up front: the timed span starts at the write.
        texts: list[bytes] = []
        for i in range(SAVE_SAMPLES):
            resps[i % len(resps)]["label"] = f"bench edit {i}"
            texts.append(dump_mockoon(doc).encode("utf-8"))
        with _daemon(root) as (home, folder, _proc):
            path = folder / "catalog.json"
            path.write_bytes(text)
            client = ControlClient(home.socket)
            client.call("share", file=str(path))
            reader = _EventReader(client)
            reader.start()
            # The stream is live once a warm-up save's commit comes through it.
            for w in range(50):
                resps[0]["label"] = f"warm-up {w}"
                _save(path, dump_mockoon(doc).encode("utf-8"), 100_000 + w)
                with contextlib.suppress(queue.Empty):
                    reader.commits.get(timeout=0.2)
                    break
            else:
                raise RuntimeError("the daemon's event stream reported no commit")
            time.sleep(0.3)
            while not reader.commits.empty():
                reader.commits.get_nowait()
            samples: list[float] = []
            commit_ms: list[float] = []
            missed = 0
            deadline = time.monotonic() + SAVE_BUDGET_S
            for i, data in enumerate(texts):
                t0 = time.perf_counter()
                _save(path, data, i)
                try:
                    t1, ev = reader.commits.get(timeout=10)
                except queue.Empty:
                    missed += 1
                else:
                    samples.append((t1 - t0) * 1000)
                    commit_ms.append(float(ev.get("commit_ms", 0.0)))
                time.sleep(SAVE_GAP_S)
                if time.monotonic() > deadline:
                    break
        other = root / "baseline"
        other.mkdir()
        baseline = _watcher_baseline(other, other / "catalog.json", texts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    commit_ms.sort()
    return Result(
        "save -> change set committed, 200 KB env", "ms", samples, target=20.0,
        baseline_name="bare watchfiles (step 5 ms) sees the save", baseline=baseline,
        note="editor-style save (temp+rename) of a one-property edit, until the daemon's event "
             "stream reports the commit; ratio < 1 = the daemon's cost above the watcher floor",
        extra={"env_bytes": len(text), "missed": missed,
               "daemon_commit_ms_median": commit_ms[len(commit_ms) // 2] if commit_ms else None},
    )


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle_daemon() -> list[Result]:
    root = Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))
    hz = os.sysconf("SC_CLK_TCK")
    try:
        with _daemon(root) as (home, folder, proc):
            client = ControlClient(home.socket)
            for name in sorted(p.name for p in EXAMPLES.glob("*.json")):
                shutil.copyfile(EXAMPLES / name, folder / name)
                client.call("share", file=str(folder / name))
            client.call("new", name="Idle bench API")
            envs = client.call("status")["environments"]
            synced = sum(1 for e in envs if e["state"] == "synced")
            env_bytes = sum(Path(e["file"]).stat().st_size for e in envs)
            time.sleep(3.0)  # let start-up work and held writes finish
            cpu: list[float] = []
            rss: list[float] = [_rss_mb(proc.pid)]
            start = time.monotonic()
            while time.monotonic() - start < IDLE_SPAN_S:
                t0, c0 = time.monotonic(), _cpu_ticks(proc.pid)
                time.sleep(IDLE_WINDOW_S)
                t1, c1 = time.monotonic(), _cpu_ticks(proc.pid)
                cpu.append((c1 - c0) / hz / (t1 - t0) * 100)
                rss.append(_rss_mb(proc.pid))
            total_cpu_s = sum(c * IDLE_WINDOW_S / 100 for c in cpu)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    extra = {"synced_envs": synced, "env_bytes_total": env_bytes, "span_s": IDLE_SPAN_S,
             "cpu_seconds": round(total_cpu_s, 3), "clk_tck": hz}
    return [
        Result("idle daemon CPU, 5 synced envs", "%", cpu, target=1.0,
               note=f"per {IDLE_WINDOW_S:.0f} s window over {IDLE_SPAN_S:.0f} s; "
                    "/proc/PID/stat utime+stime", extra=extra),
        Result("idle daemon RSS, 5 synced envs", "MB", rss,
               note="VmRSS at the start and after each window (no target)", extra=extra),
    ]


BENCHMARKS = [save_to_commit_200kb, idle_daemon]


if __name__ == "__main__":  # pragma: no cover - `python -m bench.daemon` for a quick look
    for fn in BENCHMARKS:
        out = fn()
        for r in out if isinstance(out, list) else [out]:
            print(json.dumps({k: v for k, v in r.to_json().items() if k != "samples"}))
