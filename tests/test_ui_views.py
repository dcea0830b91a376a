"""What the web page shows (mocksync.ui.views), from control-API documents, without a daemon.

Why: the page must tell a person what the CLI tells a script: whose side of a conflict is
"ours" (the rule `resolve --take` applies), who changed what and when, how near the plan's
size an environment is, which linked files need attention, and whether to offer Reconnect.
"""

from __future__ import annotations

from types import SimpleNamespace

from mocksync.ui import views

ME, BOB = "AAAAA-AAAAA-AAAAA-AAAAA", "BBBBB-BBBBB-BBBBB-BBBBB"
NAMES = {ME: "alice-laptop", BOB: "bob-laptop"}


def conflict(loser: str, winner: str, field=("route", "endpoint")) -> dict:
    return {"id": "c1", "env": "e", "entity": "r1", "where": "route GET /users",
            "field": list(field),
            "winner": {"device": winner, "value": "users", "hlc": 0},
            "loser": {"device": loser, "value": "people", "hlc": 0}}


def test_ours_is_the_side_this_device_wrote() -> None:
    [row] = views.conflict_rows([conflict(loser=ME, winner=BOB)], ME, {ME: "alice", BOB: "bob"},
                                NAMES)
    assert row["ours"]["value"] == '"people"' and not row["ours"]["kept"]
    assert row["theirs"]["value"] == '"users"' and row["theirs"]["kept"]
    assert row["ours"]["who"] == "alice (alice-laptop)"
    assert row["theirs"]["who"] == "bob (bob-laptop)"
    assert row["field"] == "endpoint" and row["where"] == "route GET /users"


def test_ours_is_the_kept_value_when_this_device_wrote_neither() -> None:
    third = "CCCCC-CCCCC-CCCCC-CCCCC"
    [row] = views.conflict_rows([conflict(loser=third, winner=BOB)], ME, {}, NAMES)
    assert row["ours"]["kept"] and row["ours"]["value"] == '"users"'
    assert row["theirs"]["who"] == third[:views.SHORT_ID]


def test_long_and_absent_values_are_shown_readably() -> None:
    assert views.value_text(None, absent=True) == "(not set)"
    text = views.value_text("x" * (views.MAX_VALUE_CHARS * 2))
    assert len(text) == views.MAX_VALUE_CHARS and text.endswith("…")


def test_timeline_is_newest_first_in_words_and_bounded() -> None:
    rows = [{"device": BOB, "member": "bob", "seq": i, "time": 1_700_000_000 + i, "ops": 2,
             "summary": "2 set"} for i in range(views.MAX_TIMELINE + 5)]
    rows.append({"device": ME, "member": "alice", "seq": 1, "time": 1_800_000_000, "ops": 1,
                 "summary": ""})
    out = views.timeline(rows, NAMES, ME)
    assert len(out) == views.MAX_TIMELINE
    assert out[0]["who"] == "alice (alice-laptop) — this device" and out[0]["what"] == "1 change"
    assert out[1]["who"] == "bob (bob-laptop)" and out[1]["what"] == "changed 2 properties"
    assert out[0]["when"] > out[1]["when"]


def test_summaries_read_as_sentences() -> None:
    assert views.summary_words("2 set, 1 created") == "changed 2 properties, created 1 entity"
    assert views.summary_words("1 unset, 3 deleted") == "cleared 1 property, deleted 3 entities"
    assert views.summary_words("something else") == "something else"


def test_quota_view_says_how_near_the_plan() -> None:
    q = views.quota_view(9_000_000, 10_000_000, "team")
    assert q == {"text": "9.0 MB of 10.0 MB (team plan)", "percent": 90, "near": True,
                 "over": False}
    assert views.quota_view(11_000_000, 10_000_000, None)["over"]
    assert views.quota_view(11_000_000, 10_000_000, None)["percent"] == 100
    assert not views.quota_view(1_000, 10_000_000, "team")["near"]
    assert views.quota_view(None, 10, "team") is None


def test_env_rows_list_state_conflicts_and_linked_problems() -> None:
    envs = [{"uuid": "u1", "name": "Petstore", "file": "/f/petstore.json", "space": "s",
             "space_name": "team", "state": "synced", "reason": None, "conflicts": 2,
             "linked": [{"rel": "body.json", "state": "synced"},
                        {"rel": "big.bin", "state": "too_large", "reason": "too big"}]},
            {"uuid": None, "name": "", "file": "/f/notes.json", "space": None,
             "state": "invalid", "reason": "not JSON", "conflicts": 0}]
    rows = views.env_rows(envs, {"u1": {"text": "x"}})
    assert rows[0]["file"] == "petstore.json" and rows[0]["conflicts"] == 2
    assert rows[0]["linked_problems"] == [{"path": "big.bin", "state": "too_large",
                                           "reason": "too big"}]
    assert rows[0]["quota"] == {"text": "x"} and rows[0]["synced"]
    assert not rows[1]["synced"] and rows[1]["reason"] == "not JSON"


def test_relay_view_offers_reconnect_only_when_it_helps() -> None:
    assert views.relay_view({"state": "offline"}, "s")["can_reconnect"]
    assert not views.relay_view({"state": "connected"}, "s")["can_reconnect"]
    assert not views.relay_view({"state": "none"}, "s")["can_reconnect"]
    assert views.relay_view({}, "the sentence")["sentence"] == "the sentence"


def test_peer_rows_show_presence_online_first() -> None:
    peers = [{"device": "D1", "member": "carol", "via": "relay", "state": "offline"},
             {"device": BOB, "member": "bob", "via": "relay", "state": "online"}]
    who = [{"device": ME, "you": True, "env_name": "Mine"},
           {"device": BOB, "member": "bob", "env_name": "Petstore", "entity_name": "GET /users",
            "editor": "mockoon", "online": True}]
    rows = views.peer_rows(peers, who, {"D1": "carol-phone"})
    assert [r["device"] for r in rows] == [BOB, "D1"]
    assert rows[1]["name"] == "carol-phone"
    assert rows[0]["online"] and rows[0]["editing"] == "Petstore / GET /users"
    assert not rows[1]["online"] and rows[1]["editing"] == ""


def test_member_rows_mark_devices_online_and_this_device() -> None:
    dev = SimpleNamespace
    state = SimpleNamespace(
        members={"m1": dev(id="m1", name="bob", role="editor", devices=(BOB,)),
                 "m0": dev(id="m0", name="Alice", role="admin", devices=(ME,))},
        devices={ME: dev(name="alice-laptop"), BOB: dev(name="bob-laptop")})
    rows = views.member_rows(state, ME, {ME})
    assert [r["name"] for r in rows] == ["Alice", "bob"]
    assert rows[0]["is_me"] and rows[0]["devices"][0]["this_device"]
    assert rows[0]["devices"][0]["online"] is True and rows[1]["devices"][0]["online"] is False
    assert views.member_rows(state, ME, None)[1]["devices"][0]["online"] is None


def test_human_bytes() -> None:
    assert views.human_bytes(999) == "999 B"
    assert views.human_bytes(1_500) == "1.5 kB"
    assert views.human_bytes(15_000_000) == "15.0 MB"
