"""The daemon's events are typed records whose JSON is the stream's old dicts, key for key.

Why: `mocksync events`, the web page, the LAN transport's listener and the tests read the
stream by its keys; when the hand-built dicts became records (issue 14) not one key could
move. EXPECTED is the key list (in order) of each dict as the publish sites built it before.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest

from mocksync.agentevents import (
    ALL_EVENTS,
    OMIT,
    AgentEvent,
    LocalChange,
    Peer,
    RemoteBatch,
    Written,
)

from helpers.agents import make_agent
from helpers.devices import make_device

#: kind class -> the keys of its JSON object, in order, as published before the records.
EXPECTED: dict[str, list[str]] = {
    "LocalChange": ["event", "origin", "env", "device", "seq", "ops", "bytes", "commit_ms",
                    "conflicts"],
    "RemoteChange": ["event", "origin", "env", "device", "seq", "ops"],
    "RemoteBatch": ["event", "origin", "batch", "envs"],
    "Written": ["event", "env", "file", "bytes"],
    "WriteRaced": ["event", "env", "file"],
    "Renamed": ["event", "env", "file"],
    "Missing": ["event", "env", "file"],
    "Invalid": ["event", "env", "reason"],
    "Held": ["event", "env", "reason"],
    "LinkedWritten": ["event", "env", "path", "bytes"],
    "LinkedRemoved": ["event", "env", "path", "trash"],
    "Shared": ["event", "env", "file", "origin"],
    "Unshared": ["event", "env", "file"],
    "Deleted": ["event", "env", "trash"],
    "ConflictSeen": ["event", "env", "id", "entity", "field"],
    "Revoked": ["event", "env", "device", "seqs"],
    "ResolvedOffline": ["event", "env", "kept", "ops", "sent"],
    "Failed": ["event", "env", "what", "kind", "cause", "retry_s"],
    "Recovered": ["event", "env", "what"],
    "Relay": ["event", "state", "reason"],
    "Peer": ["event", "device", "via", "state", "reason"],
    "Presence": ["event", "device", "env", "entity", "editor"],
}

KINDS = {"LocalChange": "change", "RemoteChange": "change", "RemoteBatch": "change",
         "ConflictSeen": "conflict", "Failed": "error"}


def _sample(cls: type[AgentEvent]) -> AgentEvent:
    """An instance with a distinct, type-fitting value in every field."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        hint = str(hints[f.name])
        values[f.name] = (i if "int" in hint else i + 0.5 if "float" in hint
                          else [f"v{i}"] if "list" in hint else f"v{i}")
    return cls(**values)


def test_every_kind_is_listed_here() -> None:
    assert sorted(c.__name__ for c in ALL_EVENTS) == sorted(EXPECTED)


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_json_keys_are_the_old_ones(cls: type[AgentEvent]) -> None:
    event = _sample(cls)
    data = event.to_json()
    assert list(data) == EXPECTED[cls.__name__]
    assert data["event"] == KINDS.get(cls.__name__, cls.KIND) == cls.KIND
    if cls.__name__ not in KINDS:  # a snake_case of the class name, as the stream names it
        assert "".join(w.title() for w in cls.KIND.split("_")) == cls.__name__
    # every field's value is carried as it is, and the JSON goes through json as it is
    for f in dataclasses.fields(cls):
        assert data[f.name] == getattr(event, f.name)
    assert json.loads(json.dumps(data)) == data
    rebuilt = cls(**{k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}})
    assert rebuilt == event


def test_records_are_frozen_and_keyword_only() -> None:
    w = Written(env="e", file="f.json", bytes=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.env = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Written("e", "f.json", 3)  # type: ignore[call-arg]


def test_origin_is_written_right_after_the_kind() -> None:
    local = LocalChange(env="e", device="d", seq=1, ops=2, bytes=9, commit_ms=0.25, conflicts=0)
    assert local.to_json() == {"event": "change", "origin": "local", "env": "e", "device": "d",
                               "seq": 1, "ops": 2, "bytes": 9, "commit_ms": 0.25,
                               "conflicts": 0}
    assert RemoteBatch(batch=2, envs=["a", "b"]).to_json() == {
        "event": "change", "origin": "remote", "batch": 2, "envs": ["a", "b"]}


def test_a_connected_peer_has_no_reason_key() -> None:
    assert Peer(device="d", via="lan", state="connected").to_json() == {
        "event": "peer", "device": "d", "via": "lan", "state": "connected"}
    assert Peer(device="d", via="lan", state="closed", reason="bye").to_json()["reason"] == "bye"
    assert repr(OMIT) == "OMIT"


def test_the_agent_hands_listeners_the_json_with_time(tmp_path: Any) -> None:
    agent = make_agent(make_device(tmp_path, "A"))
    got: list[dict[str, Any]] = []
    agent.listeners.append(got.append)
    agent.publish(Written(env="e", file="f.json", bytes=3))
    assert got == [{"event": "written", "env": "e", "file": "f.json", "bytes": 3,
                    "time": got[0]["time"]}]
    assert isinstance(got[0]["time"], float | int)
