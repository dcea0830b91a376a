"""Journey: a team with no server anywhere (issue 16), through the CLI only.

Ana, Ben, Cy and Dee sit in one office (here: daemons with mDNS on, all bound to 127.0.0.1)
and nobody runs a relay. Ana creates the space; the others join over the LAN with the token
she pastes them; an environment she shares reaches everyone and edits travel both ways. Ana
removes Cy: the key rotates, Ben learns of it from Ana, and Cy gets nothing new. Dee was off
meanwhile, and Ana also admitted Fay; Dee comes back when Ana has left and meets only Ben (and
Cy, whom Ben refuses): she learns of the removal, the new key and Fay from him, a non-admin,
and his edits reach her. Before all that, a join while Ana's daemon is off fails with the real
reason, quickly, without claiming a wait it did not make.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import Device, Team

LAN = {"mdns": True}
JOIN_TIMEOUT = "20"


@pytest.fixture
def office() -> Iterator[Team]:
    t = Team(start_relay=False)  # no relay process at all
    try:
        yield t
    finally:
        t.close()


def _join(office: Team, dev: Device, by: Device) -> Any:
    token = by.ms("invite", "team", "--json").json()["token"]
    return dev.ms("join", token, "--bind", "127.0.0.1", "--timeout", JOIN_TIMEOUT, timeout=60)


def _members(dev: Device) -> dict[str, Any]:
    return dev.ms("members", "team", "--json").json()


def _devices(doc: dict[str, Any]) -> set[str]:
    return {d["id"] for m in doc["members"] for d in m["devices"]}


def _generation(dev: Device) -> int:
    return next(r["key_generation"] for r in dev.ms("space", "list", "--json").json()
                if r["name"] == "team")


def _title(title: str):
    def edit(doc: dict[str, Any]) -> None:
        doc["routes"][0]["documentation"] = title
    return edit


def _has_title(title: str):
    return lambda doc: doc["routes"][0]["documentation"] == title


def _lan_peer(dev: Device, other: Device) -> dict[str, Any] | None:
    return next((p for p in dev.status()["peers"]
                 if p["device"] == other.id and p["via"] == "lan"
                 and p["state"] == "connected"), None)


def test_a_team_forms_and_lives_on_the_lan_with_no_server(office: Team) -> None:
    ana, ben, cy, dee, fay = office.devices_of({"ana": ["ana"], "ben": ["ben"], "cy": ["cy"],
                                                "dee": ["dee"], "fay": ["fay"]})
    ana.ms("space", "create", "team")

    # Ana's daemon is not running: join says what it tried and why it failed.
    token = ana.ms("invite", "team", "--json").json()["token"]
    res = ben.ms("join", token, "--bind", "127.0.0.1", "--timeout", "2", check=False)
    assert res.code == 1
    assert "names no relay" in res.err
    assert re.search(r"not found on the LAN within 2\.\d s", res.err), res.err
    assert "60 s" not in res.err

    office.start(ana, ben, cy, dee, relay=False, **LAN)

    # Joining with nothing but the token, over the LAN; join says what it does.
    res = _join(office, ben, ana)
    assert "looking on the LAN" in res.err and "admitted" in res.err
    assert "joined space 'team'" in res.out
    _join(office, cy, ana)
    _join(office, dee, ana)

    # Ana shares; every device gets the file; edits travel both ways.
    name = ana.add_example("petstore", "office-petstore.json")
    env = ana.share(name)["uuid"]
    for dev in (ben, cy, dee):
        dev.wait_doc(env, lambda _d: True, "the shared environment")
    ben.edit(env, _title("from ben"))
    ana.wait_doc(env, _has_title("from ben"), "ben's edit")
    ana.edit(env, _title("from ana"))
    for dev in (ben, cy, dee):
        dev.wait_doc(env, _has_title("from ana"), "ana's edit")

    # LAN-only peers are shown like relay ones: status, peers, who.
    office.wait(lambda: _lan_peer(ana, ben), "ana to list ben as a connected LAN peer")
    peer = _lan_peer(ana, ben)
    assert peer is not None and peer["member"] == "ben"
    peers = ana.ms("peers", "--json").json()
    assert ben.id in {p["device"] for p in peers}
    who = ana.ms("who", "--json").json()
    assert any(r["device"] == ben.id and r["online"] and r["via"] == "lan" for r in who)

    # Dee leaves for a while; Ana removes Cy: the key rotates and Ben learns both from Ana.
    dee.stop()
    ana.ms("remove", "team", cy.id)
    assert _generation(ana) == 2
    office.wait(lambda: cy.id not in _devices(_members(ben)) and _generation(ben) == 2,
                "ben to learn of cy's removal and the new key from ana over the LAN")
    _join(office, fay, ana)  # Fay's daemon never runs: Dee can only hear of her from Ben
    office.wait(lambda: fay.id in _devices(_members(ben)), "ben to learn of fay from ana")
    ben.edit(env, _title("after cy left"))
    ana.wait_doc(env, _has_title("after cy left"), "ben's edit after the removal")
    cy.edit(env, _title("cy was removed"))  # Cy's edits no longer count anywhere
    assert cy.doc(env)["routes"][0]["documentation"] == "cy was removed"

    # Ana leaves; Dee returns and meets only Ben: she learns the removal and the key from him.
    ana.stop()
    dee.start(relay=False, **LAN)
    office.wait(lambda: cy.id not in _devices(_members(dee)) and _generation(dee) == 2
                and fay.id in _devices(_members(dee)),
                "dee to learn of cy's removal, the new key and fay from ben")
    dee.wait_doc(env, _has_title("after cy left"), "ben's edit, relayed by nobody")
    assert _devices(_members(dee)) == _devices(_members(ben))
    ben.edit(env, _title("dee is back"))
    dee.wait_doc(env, _has_title("dee is back"), "ben's live edit")
    # Cy got nothing new after its removal, and its edit reached nobody.
    assert cy.doc(env)["routes"][0]["documentation"] == "cy was removed"
    assert ben.doc(env)["routes"][0]["documentation"] == "dee is back"

