"""Smoke test of the benchmarks: every bench module imports, and a tiny version of each
benchmark that speaks the relay protocol (or builds change sets in the store) runs against the
code as it is now.

Why: `make bench` is run by hand, now and then, so when the protocol moved on (PROTOCOL_VERSION
3, the relay challenge answer bound to the relay key and the dialled address) bench/relay.py's
fan-out client kept sending a protocol-1 hello and nobody noticed until a benchmark run. The
benchmark devices now are the library's own `RelayClient`, and this file makes any further
drift fail `make test`. Sizes are tiny and nothing here asserts a speed: the assertions are
that every row completes and counts what it claims (every put delivered, every change set
fetched and applied; the benchmarks check their own counts too).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from pgserver import pg_server  # noqa: F401  (fixture: a private PostgreSQL, or skip saying why)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.__main__ import MODULES, benchmarks, main  # noqa: E402

#: Sizes of the tiny runs (the real rows: 10,000 change sets, 1,000 and 2,000 devices).
TINY_CHANGESETS = 20
TINY_DEVICES = 4
TINY_PUTS = 3


def test_every_bench_module_imports_and_lists_its_rows() -> None:
    names: list[str] = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        rows = getattr(mod, "BENCHMARKS", None)
        assert rows, f"{modname} lists no BENCHMARKS"
        assert all(callable(fn) for fn in rows), modname
        names += [fn.__name__ for fn in rows]
    assert len(names) == len(set(names)), f"two benchmarks share a name: {sorted(names)}"
    assert [fn.__name__ for fn in benchmarks()] == names


def test_an_unknown_benchmark_name_is_refused_and_runs_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay_fanout", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark no_such_benchmark" in err and "relay_fanout" in err
    assert "running" not in err


def test_core_edit_and_apply_tiny() -> None:
    from bench.core import _edit_bench, apply_10k

    edit = _edit_bench(30_000, 2, 50.0, "tiny edit")
    assert len(edit.samples) == 2 and edit.baseline
    assert edit.extra["wire_bytes_median"] > 0
    applied = apply_10k(n=TINY_CHANGESETS)
    assert applied.name == f"apply {TINY_CHANGESETS:,} change sets" and len(applied.samples) == 3


def test_relay_catchup_tiny_fetches_opens_and_applies_every_change_set() -> None:
    from bench.relay import relay_catchup

    transfer, device = relay_catchup(runs=1, n_changesets=TINY_CHANGESETS)
    assert transfer.name == f"relay catch-up {TINY_CHANGESETS}: transfer + open"
    assert transfer.extra["change_sets"] == TINY_CHANGESETS and len(transfer.samples) == 1
    assert len(device.samples) == 1 and device.baseline


def _check_fanout(extra: dict[str, Any], subscribers: int) -> None:
    assert extra["puts"] == TINY_PUTS
    assert extra["deliveries"] == TINY_PUTS * subscribers, extra
    assert extra["missing"] == 0 and extra["put_errors"] == {} and extra["dropped"] == {}, extra


def test_relay_fanout_tiny_delivers_every_put_to_every_subscriber() -> None:
    from bench.relay import relay_fanout

    each, last = relay_fanout(n_devices=TINY_DEVICES, n_puts=TINY_PUTS)
    _check_fanout(each.extra, TINY_DEVICES - 1)
    assert len(each.samples) == TINY_PUTS * (TINY_DEVICES - 1)
    assert len(last.samples) == TINY_PUTS


def test_cluster_catchup_tiny(pg_server: Any) -> None:  # noqa: F811
    from bench.relay_cluster import cluster_catchup

    (row,) = cluster_catchup(runs=1, n_changesets=TINY_CHANGESETS, pg=pg_server)
    assert len(row.samples) == 1 and row.baseline and row.extra["change_sets"] == TINY_CHANGESETS


def test_cluster_fanout_tiny_reaches_subscribers_on_both_instances(pg_server: Any) -> None:  # noqa: F811
    from bench.relay_cluster import cluster_fanout

    (row,) = cluster_fanout(n_devices=TINY_DEVICES, n_puts=TINY_PUTS, pg=pg_server)
    _check_fanout(row.extra, TINY_DEVICES - 1)
    # Devices alternate between the instances: some subscribers are on the other one.
    assert row.extra["median_other_instance_ms"] is not None


def test_cluster_failover_tiny(pg_server: Any) -> None:  # noqa: F811
    from bench.relay_cluster import cluster_failover

    (row,) = cluster_failover(runs=1, pg=pg_server)
    assert row.extra["runs"] == 1 and len(row.samples) == 1
