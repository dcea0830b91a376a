"""`python -m bench [NAME...]`: run the benchmarks, print one table, write JSON (and a PNG).

Results go to bench/results/results.json and bench/results/latency.png.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import BenchSkipped, Result, machine

MODULES = ["bench.core", "bench.firstsync", "bench.daemon", "bench.network", "bench.relay", "bench.relay_cluster",
           "bench.linked", "bench.team_scale"]
OUT = Path(__file__).parent / "results"


def _fmt(v: float | None, unit: str) -> str:
    if v is None or v != v:
        return "-"
    if unit == "bytes":
        return f"{v:,.0f} B"
    if unit == "ms":
        return f"{v:,.1f} ms"
    if unit == "s":
        return f"{v:,.2f} s"
    return f"{v:,.2f} {unit}"


def benchmarks() -> list[Callable[[], Any]]:
    """Every benchmark function, in table order (each module's BENCHMARKS)."""
    out: list[Callable[[], Any]] = []
    for modname in MODULES:
        out.extend(getattr(importlib.import_module(modname), "BENCHMARKS", []))
    return out


def main(argv: list[str]) -> int:
    wanted = set(argv)
    every = benchmarks()
    unknown = sorted(wanted - {fn.__name__ for fn in every})
    if unknown:  # a typo must not run nothing and report success
        print(f"unknown benchmark {', '.join(unknown)}; the benchmarks are: "
              f"{', '.join(fn.__name__ for fn in every)}", file=sys.stderr)
        return 2
    results: list[Result] = []
    errors: list[str] = []
    skipped: list[str] = []
    for fn in every:
        if wanted and fn.__name__ not in wanted:
            continue
        print(f"running {fn.__name__} ...", file=sys.stderr, flush=True)
        try:
            out = fn()
            results.extend(out if isinstance(out, list) else [out])
        except BenchSkipped as exc:  # nothing broken: this machine lacks what it needs
            skipped.append(f"{fn.__name__}: {exc}")
        except Exception as exc:  # report and go on: one broken benchmark hides no others
            errors.append(f"{fn.__name__}: {exc}")
            traceback.print_exc()
    m = machine()
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"mocksync benchmarks: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
                    f"load average {m['load_avg'][0]:.1f} (1 min) at the end",
              title_justify="left")
    for col in ("benchmark", "target", "median", "p99", "n", "met", "baseline", "ratio"):
        t.add_column(col)
    for r in results:
        bm = r.baseline_median
        ratio = f"{bm / r.median:,.1f}x" if bm and r.median else "-"
        target = "-" if r.target is None else ("<= " + _fmt(r.target, r.unit)
                                               + (" p99" if r.target_on == "p99" else ""))
        t.add_row(r.name, target, _fmt(r.median, r.unit), _fmt(r.p99, r.unit), str(len(r.samples)),
                  {True: "yes", False: "NO", None: "-"}[r.met],
                  f"{r.baseline_name}: {_fmt(bm, r.unit)}" if bm is not None else "-", ratio)
    Console(width=170).print(t)
    for s in skipped:
        print(f"benchmark skipped: {s}", file=sys.stderr)
    for e in errors:
        print(f"benchmark failed: {e}", file=sys.stderr)
    OUT.mkdir(exist_ok=True)
    rows = [r.to_json() for r in results]
    path = OUT / "results.json"
    if wanted and path.exists():
        # A partial run (`python -m bench NAME...`) updates its rows and keeps the others.
        try:
            old = json.loads(path.read_text())
            names = {r["name"] for r in rows}
            rows = [r for r in old.get("results", []) if r["name"] not in names] + rows
        except (ValueError, KeyError):
            pass
    path.write_text(json.dumps({"machine": m, "results": rows, "errors": errors,
                                "skipped": skipped}, indent=2))
    _plot(results)
    print(f"wrote {OUT / 'results.json'}", file=sys.stderr)
    return 1 if errors else 0


def _plot(results: list[Result]) -> None:
    lat = [r for r in results if r.unit == "ms" and len(r.samples) > 1]
    if not lat:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(lat) + 1.5))
    try:
        ax.boxplot([r.samples for r in lat], orientation="horizontal")  # matplotlib >= 3.10
    except TypeError:
        ax.boxplot([r.samples for r in lat], vert=False)  # older: the same, spelled the old way
    ax.set_yticks(range(1, len(lat) + 1), [r.name for r in lat])
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_title("mocksync latency distributions")
    fig.tight_layout()
    fig.savefig(OUT / "latency.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
