"""Fixtures shared by the whole suite, and the path to the plain helper modules.

Helpers live in tests/helpers/ (the one device/relay harness: see its __init__) and in the
plain modules next to the tests (envfactory, editor_standin, attack_tools, pgserver); test
modules never import each other.
"""

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

# Test helpers (envfactory, editor_standin, helpers/) are plain modules next to the tests.
sys.path.insert(0, str(Path(__file__).parent))

# The private PostgreSQL server, once per session for every module that asks (a module that
# imported these fixtures itself got a server of its own).
from pgserver import pg_server, pg_url  # noqa: E402, F401

#: Seconds a `long`-marked test may run (soaks, thousands of examples): `make test-long`'s
#: own --timeout. Carried by the marker itself, so a long test run any other way
#: (`MOCKSYNC_LONG=1 pytest -m long FILE`) is not cut at the suite's 120 s.
LONG_TEST_TIMEOUT_S = 1800


def pytest_sessionstart(session: pytest.Session) -> None:
    """Keep compiled bytecode between processes and runs, even under PYTHONDONTWRITEBYTECODE.

    Why: where that variable is set (as on the shared test machines) no process may write
    `__pycache__`, and the suite pays for it twice. (1) It starts thousands of Python
    processes (every `mocksync` CLI call of a journey, every daemon and relay), and each one
    compiled every mocksync module it imported from source again: about 0.13 s of CPU per
    CLI call, a third of it (measured). (2) Every xdist worker rewrote the asserts of all
    test modules again on every run (pytest caches that rewrite only where bytecode may be
    written): about 8 s of CPU per worker at collection. So the package is compiled here
    once, by the controller (or a plain run), before any test starts (bytecode written is
    still read under the variable by every child), and this process may write bytecode
    (the rewritten test modules are then reused by the next run). A module edited later is
    compiled in memory again, as before. `__pycache__` is git-ignored."""
    sys.dont_write_bytecode = False
    if hasattr(session.config, "workerinput"):
        return
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("mocksync")
    for where in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(where, quiet=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every `long` test without a timeout of its own `LONG_TEST_TIMEOUT_S`."""
    for item in items:
        if item.get_closest_marker("long") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(LONG_TEST_TIMEOUT_S))


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator["Lab"]:  # noqa: F821
    """Devices, agents and a relay on 127.0.0.1 (`helpers.relaylab.Lab`), all stopped at the end.
    Imported here, not at the top: most test runs never start a relay."""
    from helpers.relaylab import Lab

    the_lab = Lab(tmp_path)
    try:
        yield the_lab
    finally:
        await the_lab.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The relay's storage engine, opened, on SQLite (under tmp_path) and on a fresh
    PostgreSQL database (skipped with the reason when PostgreSQL is not installed)."""
    from mocksync.relay.engine import OnLoop
    from mocksync.relay.pgstorage import PgStorage
    from mocksync.relay.storage import SQLiteStorage

    if request.param == "sqlite":
        e: Any = OnLoop(SQLiteStorage(tmp_path))
    else:
        e = PgStorage(request.getfixturevalue("pg_url"))

    async def ignore(_ev: Any) -> None:
        return None

    await e.open(ignore)
    try:
        yield e
    finally:
        await e.close()
