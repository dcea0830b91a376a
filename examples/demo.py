"""`make demo`: a relay and two devices on loopback, an environment shared and edited on both.

Everything lives in one temporary directory and only 127.0.0.1 is used. Every process this
script starts is stopped on exit, Ctrl-C included. Each claim printed is checked: the script
exits non-zero if an edit does not arrive (tests/test_demo.py runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: How long the demo waits at the step named by MOCKSYNC_DEMO_HOLD_AT (tests only).
HOLD_S = 60.0

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "environments" / "petstore.json"
#: Every wait in the demo is bounded.
WAIT_S = 20.0


def mocksync_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "mocksync"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mocksync"]


class Demo:
    def __init__(self, base: Path, quiet: bool = False) -> None:
        self.base = base
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.port = _free_port()
        self.relay_url = f"http://127.0.0.1:{self.port}"
        self.homes = {n: base / n / "home" for n in ("laptop-a", "laptop-b")}
        self.folders = {n: base / n / "mockoon" for n in ("laptop-a", "laptop-b")}
        self.claims: list[str] = []

    # ------------------------------------------------------------------ helpers
    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)
        hold = os.environ.get("MOCKSYNC_DEMO_HOLD_AT")
        if hold and text.startswith(f"{hold}."):
            # For tests/test_demo.py: wait here (at most HOLD_S) with everything running, so
            # an interrupt lands mid-run however fast the rest would go.
            time.sleep(HOLD_S)

    def run(self, device: str | None, *args: str, timeout: float = 60) -> str:
        cmd = mocksync_cmd() + (["--home", str(self.homes[device])] if device else []) + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def start(self, name: str, *args: str, device: str | None = None) -> None:
        cmd = mocksync_cmd() + (["--home", str(self.homes[device])] if device else []) + list(args)
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def wait_for(self, what: str, pred, timeout: float = WAIT_S) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return time.monotonic() - t0
            time.sleep(0.005)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")

    def daemon(self, device: str) -> None:
        self.start(device, "daemon", "--folder", str(self.folders[device]), "--relay",
                   self.relay_url, "--no-mdns", device=device)
        sock_ready = lambda: self._status(device) is not None  # noqa: E731
        self.wait_for(f"{device}'s daemon", sock_ready)

    def _status(self, device: str) -> dict[str, Any] | None:
        cmd = mocksync_cmd() + ["--home", str(self.homes[device]), "status", "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def env_file(self, device: str) -> Path | None:
        files = sorted(self.folders[device].glob("*.json"))
        return files[0] if files else None

    def read(self, device: str) -> dict[str, Any]:
        f = self.env_file(device)
        assert f is not None
        return json.loads(f.read_text())

    def edit(self, device: str, fn) -> None:
        """Save like Mockoon does: whole file, 2-space JSON, temp file then rename."""
        f = self.env_file(device)
        assert f is not None
        doc = json.loads(f.read_text())
        fn(doc)
        tmp = f.with_name(f.name + ".demo-save")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
        os.replace(tmp, f)

    def claim(self, text: str) -> None:
        self.claims.append(text)
        self.say(f"  ✓ {text}")

    # ------------------------------------------------------------------ the story
    def main(self) -> None:
        t_start = time.monotonic()
        self.say(f"mocksync demo in {self.base} (loopback only)\n")
        self.say(f"1. relay on {self.relay_url}")
        self.start("relay", "relay", "--host", "127.0.0.1", "--port", str(self.port),
                   "--data", str(self.base / "relay-data"), "--plan", "team")
        self.wait_for("the relay", lambda: _port_open(self.port))

        self.say("2. two devices: laptop-a and laptop-b")
        for dev in self.homes:
            self.folders[dev].mkdir(parents=True)
            member = "Ann" if dev == "laptop-a" else "Ben"  # two teammates: names differ
            out = self.run(dev, "init", "--name", dev, "--member", member)
            self.say("   " + out.strip().splitlines()[0] + f"  ({dev})")
        self.run("laptop-a", "space", "create", "team", "--relay", self.relay_url)
        self.daemon("laptop-a")
        self.daemon("laptop-b")

        self.say("3. laptop-a invites laptop-b into space 'team'; laptop-b joins through the relay")
        token = self.run("laptop-a", "invite", "team").strip().splitlines()[-1].strip()
        self.run("laptop-b", "join", token, "--timeout", "30", "--bind", "127.0.0.1")
        self.claim("laptop-b joined 'team'")

        self.say("4. laptop-a shares examples/environments/petstore.json")
        shutil.copy(EXAMPLE, self.folders["laptop-a"] / "petstore.json")
        self.wait_for("laptop-a to see the file",
                      lambda: any(e["file"].endswith("petstore.json") for e in
                                  (self._status("laptop-a") or {}).get("environments", [])))
        t0 = time.monotonic()
        self.run("laptop-a", "share", str(self.folders["laptop-a"] / "petstore.json"),
                 "--space", "team")
        self.wait_for("the environment on laptop-b", lambda: self.env_file("laptop-b"))
        self.claim(f"petstore.json arrived on laptop-b {(time.monotonic() - t0) * 1000:.0f} ms "
                   "after `mocksync share` was started")

        self.say("5. laptop-a edits a response's status code")
        first = self.read("laptop-a")["routes"][0]["responses"][0]["uuid"]
        t0 = time.monotonic()
        self.edit("laptop-a", lambda d: _resp(d, first).update(statusCode=418))
        self.wait_for("the edit on laptop-b",
                      lambda: _resp(self.read("laptop-b"), first)["statusCode"] == 418)
        self.claim(f"the edit was in laptop-b's file {(time.monotonic() - t0) * 1000:.0f} ms "
                   "after laptop-a saved it")

        self.say("6. at the same time: laptop-a edits a route, laptop-b edits a response\n"
                 "   (each daemon holds the other's edit until 3.5 s after its own editor saved:\n"
                 "   Mockoon ignores its file for 3 s after a save, so an earlier write would be lost)")
        route_uuid = self.read("laptop-a")["routes"][0]["uuid"]
        resp_uuid = self.read("laptop-a")["routes"][1]["responses"][0]["uuid"]
        self.edit("laptop-a", lambda d: _route(d, route_uuid).update(endpoint="v2/pets"))
        t_a = time.monotonic()
        self.edit("laptop-b", lambda d: _resp(d, resp_uuid).update(label="edited on laptop-b"))
        t_b = time.monotonic()
        la = self.wait_for("laptop-a's route edit on laptop-b",
                           lambda: _route(self.read("laptop-b"), route_uuid)["endpoint"] == "v2/pets")
        lb = self.wait_for("laptop-b's response edit on laptop-a",
                           lambda: _resp(self.read("laptop-a"), resp_uuid)["label"]
                           == "edited on laptop-b")
        now = time.monotonic()
        self.claim(f"route edit reached laptop-b ({(now - t_a) * 1000:.0f} ms after the save, "
                   f"{la * 1000:.0f} ms of waiting)")
        self.claim(f"response edit reached laptop-a ({(now - t_b) * 1000:.0f} ms after the save, "
                   f"{lb * 1000:.0f} ms of waiting)")
        self.wait_for("both files to be identical",
                      lambda: self.read("laptop-a") == self.read("laptop-b"))
        self.claim("both files hold both edits and are identical")

        self.say("7. laptop-b goes offline; laptop-a keeps editing")
        self.stop("laptop-b")
        self.edit("laptop-a", lambda d: d.update(name="Pet Store (edited offline)"))
        time.sleep(0.3)
        self.say("8. laptop-b comes back and catches up through the relay")
        t0 = time.monotonic()
        self.daemon("laptop-b")
        self.wait_for("the catch-up on laptop-b",
                      lambda: self.read("laptop-b").get("name") == "Pet Store (edited offline)")
        self.claim(f"laptop-b caught up in {(time.monotonic() - t0) * 1000:.0f} ms after restart")

        self.say("9. mocksync status on both\n")
        for dev in self.homes:
            self.say(f"--- {dev} ---")
            self.say(self.run(dev, "status"))
        self.stop_all()
        self.claim(f"everything stopped cleanly; the demo took {time.monotonic() - t_start:.1f} s")


def _route(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    return next(r for r in doc["routes"] if r["uuid"] == uuid)


def _resp(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    return next(x for r in doc["routes"] for x in r["responses"] if x["uuid"] == uuid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_demo(base: Path | None = None, quiet: bool = False) -> list[str]:
    owned = base is None
    base = base or Path(tempfile.mkdtemp(prefix="mocksync-demo-"))
    demo = Demo(base, quiet)

    def on_signal(signum: int, frame: Any) -> None:
        demo.stop_all()
        raise SystemExit(130)

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        demo.main()
        return demo.claims
    finally:
        demo.stop_all()  # Ctrl-C (KeyboardInterrupt) lands here too
        signal.signal(signal.SIGTERM, old)
        if owned and not os.environ.get("MOCKSYNC_DEMO_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    # Ctrl-C always stops the demo, even when it was started from something that ignores
    # SIGINT (a background job, a test runner's worker): an ignored signal is inherited.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_demo()
    except KeyboardInterrupt:
        print("\ndemo interrupted; everything stopped", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
