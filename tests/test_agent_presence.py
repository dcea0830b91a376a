"""Presence decisions (issue 11 item 6): what a device reports it edits, how `who` merges LAN
and relay rows, and what `members` says is online. Pure: rows in, rows out; `now` passed."""

from __future__ import annotations

import pytest

from mocksync.agent.presence import (
    EDITING_TTL_S,
    NOWHERE,
    Looking,
    PresenceBook,
    mark_online,
    online_devices,
    who_rows,
)

ME = {"device": "DME", "you": True, "online": True, "env": None}


def names(env, entity):
    return (None if env is None else f"name-of-{env}",
            None if entity is None else f"entity-{entity}")


def test_a_save_is_what_the_device_edits_until_it_ages_out():
    book = PresenceBook()
    assert book.current(0.0) == NOWHERE
    book.saved("S", "E1", 100.0)
    assert book.current(100.0) == Looking("S", "E1")
    book.saved("S", "E2", 110.0)
    assert book.current(111.0).env == "E2"  # the latest save
    assert book.next_change(111.0) == 110.0 + EDITING_TTL_S
    assert book.current(110.0 + EDITING_TTL_S + 1) == NOWHERE
    assert book.next_change(110.0 + EDITING_TTL_S + 1) is None


def test_an_editor_plugin_overrides_older_saves_and_a_newer_save_overrides_it():
    book = PresenceBook()
    book.saved("S", "E1", 100.0)
    book.told(Looking("S", "E2", "route-1", "mockoon"), 101.0)
    assert book.current(102.0) == Looking("S", "E2", "route-1", "mockoon")
    assert book.next_change(102.0) is None  # the plugin's word holds until it says otherwise
    book.saved("S", "E3", 103.0)
    assert book.current(104.0) == Looking("S", "E3", None, "mockoon")


def test_update_reports_only_changes_and_forget_drops_an_environment():
    book = PresenceBook()
    book.saved("S", "E1", 1.0)
    assert book.update(2.0) == Looking("S", "E1")
    assert book.update(3.0) is None
    book.forget("E1")
    assert book.update(4.0) == NOWHERE


def test_bad_ttl_is_refused():
    with pytest.raises(ValueError):
        PresenceBook(ttl_s=0)


def test_who_lists_relay_and_lan_peers_once_each_with_what_they_edit():
    peers = [
        # relay rows: state "online", env/entity at the top (these were all dropped before)
        {"device": "DB", "member": "bob", "via": "relay", "state": "online", "env": "E1",
         "entity": None},
        {"device": "DA2", "member": "alice", "via": "relay", "state": "online", "env": None,
         "entity": None},
        # the same device by LAN, connected, saying nothing: one row, via both, env kept
        {"device": "DB", "member": "bob", "via": "lan", "state": "connected", "presence": None},
        # not online: left out
        {"device": "DX", "member": "eve", "via": "lan", "state": "connecting"},
        # ourselves, as the relay reports us: left out (we are the first row)
        {"device": "DME", "member": "me", "via": "relay", "state": "online"},
    ]
    rows = who_rows(dict(ME), peers, names)
    assert [r["device"] for r in rows] == ["DME", "DA2", "DB"]
    bob = rows[2]
    assert bob["via"] == "lan+relay" and bob["env"] == "E1" and bob["env_name"] == "name-of-E1"
    assert bob["online"] is True and bob["you"] is False and bob["member"] == "bob"
    assert rows[1]["env"] is None and rows[1]["env_name"] is None
    assert online_devices(rows) == {"DME", "DA2", "DB"}


def test_who_prefers_the_lan_row_presence_with_its_entity_and_editor():
    peers = [{"device": "DB", "member": "bob", "via": "relay", "state": "online", "env": "E1",
              "entity": None},
             {"device": "DB", "member": "bob", "via": "lan", "state": "connected",
              "presence": {"env": "E1", "entity": "R1", "editor": "mockoon"}}]
    [_me, bob] = who_rows(dict(ME), peers, names)
    assert (bob["entity"], bob["entity_name"], bob["editor"]) == ("R1", "entity-R1", "mockoon")


def members_doc():
    return {"members": [{"devices": [{"id": "DME", "this_device": True, "online": None},
                                     {"id": "DA2", "this_device": False, "online": None}]},
                        {"devices": [{"id": "DB", "this_device": False, "online": None}]}]}


def test_members_online_from_the_daemon_or_unknown_without_one():
    doc = mark_online(members_doc(), {"DME", "DB"})
    assert [d["online"] for m in doc["members"] for d in m["devices"]] == [True, False, True]
    doc = mark_online(members_doc(), None)
    assert [d["online"] for m in doc["members"] for d in m["devices"]] == [False, None, None]
