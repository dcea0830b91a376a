"""Journey: a direct link between two teammates editing the same environment closes once they
stop, and opens again with the next edit (issue 16, links on demand).

Six teammates' daemons find each other on the LAN (mDNS on 127.0.0.1); past five devices each
keeps links only to its few overlay neighbours, so two of them, Xavi and Yuki, have no link to
each other. Both edit the same environment: their daemons open a direct link (co-editors).
Then they stop editing: after `lan_link_idle_s` (short here) without a change the link is
closed, the overlay links stay, and `status` says why. Xavi edits again: the link opens again
and Yuki gets the edit.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .harness import Device, Team

#: The configured idle timeout of a link on demand (seconds; the default is 20).
IDLE_S = 6
#: Longest any step below may take on a loaded machine.
STEP_S = 60.0


def _lan(dev: Device, other: Device) -> dict[str, Any] | None:
    return next((p for p in dev.status()["peers"]
                 if p["device"] == other.id and p["via"] == "lan"), None)


def _linked(dev: Device, other: Device) -> bool:
    p = _lan(dev, other)
    return p is not None and p["state"] == "connected"


def _lan_connected(dev: Device) -> set[str]:
    return {p["device"] for p in dev.status()["peers"]
            if p["via"] == "lan" and p["state"] == "connected"}


def _title(title: str):
    def edit(doc: dict[str, Any]) -> None:
        doc["routes"][0]["documentation"] = title
    return edit


@pytest.mark.timeout(300)  # six daemons and a relay on a shared 2-core machine
def test_a_co_editor_link_closes_when_idle_and_reopens_on_the_next_edit(team: Team) -> None:
    devs = team.crew(members={f"m{i}": [f"dev{i}"] for i in range(6)}, mdns=True,
                     lan_link_idle_s=IDLE_S)
    admin = devs[0]
    env = admin.share(admin.add_example("petstore", "idle-petstore.json"))["uuid"]
    team.synced(env, *devs, timeout=STEP_S)

    # Once the overlay settled, some pair has no link: they become Xavi and Yuki.
    def unlinked_pair() -> tuple[Device, Device] | None:
        for x in devs:
            seen = [p for p in x.status()["peers"] if p["via"] == "lan"]
            if len(seen) < len(devs) - 1:
                return None  # not everyone discovered yet
            for y in devs:
                if y is not x and not _linked(x, y) and not _linked(y, x):
                    return x, y
        return None

    team.wait(unlinked_pair, "a pair of devices with no LAN link between them", STEP_S)
    time.sleep(IDLE_S + 2)  # links the share opened on demand have closed by now
    pair = team.wait(unlinked_pair, "a pair of devices with no LAN link between them", STEP_S)
    xavi, yuki = pair
    anchors_of_xavi = _lan_connected(xavi)
    assert anchors_of_xavi and yuki.id not in anchors_of_xavi

    # Both edit the same environment: a direct link opens between them.
    xavi.edit(env, _title("xavi was here"))
    yuki.wait_doc(env, lambda d: d["routes"][0]["documentation"] == "xavi was here",
                  "xavi's edit", STEP_S)
    yuki.edit(env, _title("yuki too"))
    team.wait(lambda: _linked(xavi, yuki) and _linked(yuki, xavi),
              "xavi and yuki, editing the same environment, to get a direct link", STEP_S)
    xavi.wait_doc(env, lambda d: d["routes"][0]["documentation"] == "yuki too",
                  "yuki's edit", STEP_S)

    # Nobody edits: the link closes after the idle timeout, the overlay links stay.
    opened = time.monotonic()
    team.wait(lambda: not _linked(xavi, yuki) and not _linked(yuki, xavi),
              f"the idle link to close after {IDLE_S} s without a change", STEP_S)
    assert time.monotonic() - opened >= IDLE_S - 2  # closed for idleness, not at once
    closed = _lan(xavi, yuki)
    assert closed is not None and closed["state"] != "connected"
    assert "idle" in f"{closed['state']} {closed['reason']}"
    assert _lan_connected(xavi) & anchors_of_xavi, "the overlay links must stay open"

    # Xavi edits again: the link to his co-editor opens again, and the edit arrives.
    xavi.edit(env, _title("xavi again"))
    team.wait(lambda: _linked(xavi, yuki),
              "the link between the co-editors to reopen on the next edit", STEP_S)
    yuki.wait_doc(env, lambda d: d["routes"][0]["documentation"] == "xavi again",
                  "xavi's next edit", STEP_S)
