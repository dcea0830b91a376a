"""What every benchmark returns, and how the table and JSON are made.

A benchmark reports samples (seconds or bytes), its target, and where one exists a baseline
measured in the same run (Syncthing for the network figures, a plain parse+dump of the file
for the model figures), so the ratio printed is never against a number from another machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Every benchmark loop is bounded by count and by time.
DEFAULT_TIME_BUDGET_S = 60.0


class BenchSkipped(Exception):
    """A benchmark cannot run on this machine (a peer or server it needs is not installed).

    Why not an error: `make bench` must still print every row it could measure and exit 0
    when nothing is broken; the table lists the skipped rows with the reason instead."""


@dataclass
class Result:
    name: str
    unit: str  # "ms", "bytes", "s", "MB", "%"
    samples: list[float]
    target: float | None = None  # upper bound on the median unless target_on == "p99"
    target_on: str = "median"
    baseline_name: str | None = None
    baseline: list[float] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        if not self.samples:
            return float("nan")
        s = sorted(self.samples)
        return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.samples:
            return None
        v = self.p99 if self.target_on == "p99" else self.median
        return v <= self.target

    def to_json(self) -> dict[str, Any]:
        bm = self.baseline_median
        return {
            "name": self.name, "unit": self.unit, "n": len(self.samples),
            "median": self.median, "p99": self.p99, "target": self.target,
            "target_on": self.target_on, "met": self.met,
            "baseline_name": self.baseline_name, "baseline_median": bm,
            "ratio": (bm / self.median) if bm and self.median else None,
            "note": self.note, "extra": self.extra, "samples": self.samples,
        }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # The load average says how much else ran meanwhile (a shared machine skews every figure).
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat(fn: Callable[[int], Any], count: int, budget_s: float = DEFAULT_TIME_BUDGET_S) -> list[float]:
    """Run fn(i) up to `count` times or until `budget_s` passes; return ms per run."""
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for i in range(count):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
        if time.monotonic() > deadline:
            break
    return out
