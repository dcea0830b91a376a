"""Fixtures of the journeys: a `team` (a real relay plus devices made on demand), torn down
whatever happens, with every process's log tail attached to a failing test's report."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .harness import Crew, Team

#: Environments the shared crew's space may hold: every journey shares fresh ones into it.
CREW_MAX_ENVS = 200
#: Set to keep a failed journey's directory (homes, folders, logs) for a post-mortem.
KEEP_ENV = "MOCKSYNC_JOURNEY_KEEP"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, add the relay's and each daemon's log tail to the report: the sentence
    that explains a journey's failure is usually in a daemon's log, not in the assertion."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.stash[_FAILED] = True
        for value in getattr(item, "funcargs", {}).values():
            team = value.team if isinstance(value, Crew) else value
            if isinstance(team, Team):
                report.sections.append(("journey logs (tails)", team.logs()))
                break


_FAILED = pytest.StashKey[bool]()

#: A journey drives a relay and several daemons as real processes on a shared 2-core machine;
#: one that fails is run once more before it counts as failed. The rerun shows in pytest's
#: summary line ("N rerun"), so a flake stays visible; a real break fails both times.
JOURNEY_RERUNS = 1
_HERE = os.path.dirname(__file__)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(_HERE) and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=JOURNEY_RERUNS))


@pytest.fixture
def team(request: pytest.FixtureRequest) -> Iterator[Team]:
    """A relay on 127.0.0.1 and an empty team; every process is stopped at teardown."""
    t = Team()
    try:
        yield t
    finally:
        failed = request.node.stash.get(_FAILED, False)
        keep = failed and bool(os.environ.get(KEEP_ENV))
        t.close(keep=keep)
        if keep:
            print(f"journey files kept in {t.root}")


@pytest.fixture(scope="session")
def _session_crew() -> Iterator[Crew]:
    t = Team(max_envs=CREW_MAX_ENVS)
    try:
        laptop, desktop, bob = t.crew()
        yield Crew(t, laptop, desktop, bob)
    finally:
        t.close()


@pytest.fixture
def crew(_session_crew: Crew) -> Crew:
    """One running team for the whole journey run (starting daemons is the slow part):
    alice-laptop (admin, created space `team`), alice-desktop (Alice's second device) and
    bob-laptop (editor). Each journey works on its own environments (fresh uuids); a daemon or
    relay a previous journey left stopped, or running with other settings, is started again
    with the crew's defaults first. Journeys that change the crew's membership (remove,
    rotate keys, fill the device limit) or need a fresh space use `team` instead."""
    _session_crew.ensure_running()
    return _session_crew
