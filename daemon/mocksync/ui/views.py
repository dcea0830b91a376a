"""What each page of the local web page shows, shaped from the control API's documents.

Why a pure module: the page must say what the CLI says (same states, same sentences), and a
person reads it rather than a script, so values are turned into words here, once, and tested
without a daemon or a browser: who wrote a change, when and what; which side of a conflict is
ours; whether an environment is near its plan's size; which linked files need attention.
The templates only lay these models out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: Longest value text shown on one side of a conflict (the CLI's `conflicts --json` has all).
MAX_VALUE_CHARS = 2000
#: Newest change sets shown on an environment's timeline (`mocksync log` lists them all).
MAX_TIMELINE = 200
#: Share of a plan's size limit from which an environment is shown as near it.
NEAR_QUOTA = 0.8
#: Characters of a device id shown where a whole id would crowd the line.
SHORT_ID = 11

#: How each kind of operation in `log`'s summary ("2 set, 1 created") reads in a sentence.
_KIND_WORDS = {"created": ("created", "entity", "entities"),
               "set": ("changed", "property", "properties"),
               "unset": ("cleared", "property", "properties"),
               "deleted": ("deleted", "entity", "entities")}


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as plans are stated)."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def when_text(ts: float | None) -> str:
    """A timestamp in the local time of the daemon's machine, to the second."""
    if not isinstance(ts, int | float):
        return ""
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def value_text(value: Any, absent: bool = False) -> str:
    """A conflicting value as a person reads it: JSON, shortened when long."""
    if absent:
        return "(not set)"
    text = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def who_text(member: str | None, device: str, device_names: Mapping[str, str]) -> str:
    """'alice (alice-laptop)'; a device nobody named: its short id."""
    name = device_names.get(device) or device[:SHORT_ID]
    return f"{member} ({name})" if member else name


# ------------------------------------------------------------------------------ overview


def relay_view(relay: Mapping[str, Any], sentence: str) -> dict[str, Any]:
    """The relay line: its state, the CLI's sentence (why, when it retries, what happens to
    edits meanwhile) and whether a Reconnect button makes sense."""
    state = relay.get("state") or "none"
    return {"state": state, "url": relay.get("url"), "sentence": sentence,
            "connected": state == "connected",
            "can_reconnect": state not in ("none", "connected")}


def peer_rows(peers: Iterable[Mapping[str, Any]], who: Iterable[Mapping[str, Any]],
              device_names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per peer device with presence: online or not, how reached, and which
    environment (and route) its user is editing now. `device_names`: names from the spaces'
    membership logs, for peers whose row carries none."""
    device_names = device_names or {}
    looking = {r.get("device"): r for r in who if not r.get("you")}
    rows = []
    for p in peers:
        device = str(p.get("device") or "")
        w = looking.get(device) or {}
        editing = w.get("env_name") or w.get("env")
        if editing and (w.get("entity_name") or w.get("entity")):
            editing = f"{editing} / {w.get('entity_name') or w.get('entity')}"
        rows.append({"device": device,
                     "name": p.get("name") or w.get("name") or device_names.get(device) or "",
                     "member": p.get("member") or w.get("member") or "",
                     "via": p.get("via") or "", "state": p.get("state") or "",
                     "online": device in looking, "editing": editing or "",
                     "editor": w.get("editor") or "", "reason": p.get("reason") or ""})
    rows.sort(key=lambda r: (not r["online"], str(r["member"]).casefold(), r["device"]))
    return rows


def quota_view(size: int | None, max_bytes: int | None, plan: str | None) -> dict[str, Any] | None:
    """'120.0 kB of 10.0 MB (team plan)', with the share used and whether it is near."""
    if size is None or not max_bytes:
        return None
    share = size / max_bytes
    return {"text": f"{human_bytes(size)} of {human_bytes(max_bytes)}"
                    + (f" ({plan} plan)" if plan else ""),
            "percent": min(100, round(share * 100)), "near": share >= NEAR_QUOTA,
            "over": size > max_bytes}


def linked_problems(env: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Linked files of an environment that are not synced, each with its sentence."""
    return [{"path": row.get("rel") or row.get("path") or "", "state": row.get("state") or "",
             "reason": row.get("reason") or ""}
            for row in env.get("linked") or () if row.get("state") != "synced"]


def env_rows(envs: Iterable[Mapping[str, Any]],
             quotas: Mapping[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The overview's environment table: name, file, state and why, conflicts, size against
    the plan, linked-file problems. Environments no space syncs have no page of their own."""
    rows = []
    for e in envs:
        uuid = e.get("uuid")
        rows.append({"uuid": uuid, "name": e.get("name") or "",
                     "file": Path(str(e.get("file") or "")).name,
                     "space": e.get("space_name") or "", "state": e.get("state") or "",
                     "reason": e.get("reason") or "", "conflicts": int(e.get("conflicts") or 0),
                     "synced": bool(e.get("space")), "quota": quotas.get(uuid) if uuid else None,
                     "linked_problems": linked_problems(e)})
    return rows


# ------------------------------------------------------------------------------ environment


def summary_words(summary: str) -> str:
    """`log`'s summary in a sentence: '2 set, 1 created' -> 'changed 2 properties, created
    1 entity'. A summary of another shape is shown as it is."""
    parts = []
    for item in summary.split(", "):
        count, _, kind = item.partition(" ")
        if not count.isdigit() or kind not in _KIND_WORDS:
            return summary
        verb, one, many = _KIND_WORDS[kind]
        parts.append(f"{verb} {count} {one if count == '1' else many}")
    return ", ".join(parts)


def timeline(changesets: list[Mapping[str, Any]], device_names: Mapping[str, str],
             me: str) -> list[dict[str, Any]]:
    """The change log, newest first, in words: who, when, what changed."""
    out = []
    for r in reversed(changesets[-MAX_TIMELINE:]):
        device = str(r.get("device") or "")
        summary = str(r.get("summary") or "")
        ops = int(r.get("ops") or 0)
        what = summary_words(summary) if summary else f"{ops} change{'s' if ops != 1 else ''}"
        out.append({"who": who_text(r.get("member"), device, device_names)
                    + (" — this device" if device == me else ""),
                    "when": when_text(r.get("time")), "what": what, "seq": r.get("seq"),
                    "device": device})
    return out


def conflict_rows(conflicts: Iterable[Mapping[str, Any]], me: str,
                  members: Mapping[str, str], device_names: Mapping[str, str]
                  ) -> list[dict[str, Any]]:
    """Each open conflict side by side. "Ours" is the side this device wrote, or the value
    kept now when it wrote neither (the rule `mocksync resolve --take` applies)."""
    rows = []
    for c in conflicts:
        winner, loser = c.get("winner") or {}, c.get("loser") or {}
        ours_is_loser = loser.get("device") == me
        ours, theirs = (loser, winner) if ours_is_loser else (winner, loser)
        field = list(c.get("field") or [])
        field_text = ".".join(str(f) for f in field[1:]) or (str(field[0]) if field else "")
        deleted = bool(field) and field[0] == "#deleted"

        def side(s: Mapping[str, Any], kept: bool) -> dict[str, Any]:
            device = str(s.get("device") or "")
            return {"who": who_text(members.get(device), device, device_names),
                    "value": value_text(s.get("value"), bool(s.get("absent"))),
                    "kept": kept, "when": when_text(_hlc_seconds(s.get("hlc")))}

        rows.append({"id": c.get("id"), "where": c.get("where") or c.get("entity") or "",
                     "field": "deleted" if deleted else field_text,
                     "ours": side(ours, not ours_is_loser),
                     "theirs": side(theirs, ours_is_loser)})
    return rows


def _hlc_seconds(hlc: Any) -> float | None:
    """Wall-clock seconds of a hybrid logical clock value (ms in its high bits), if any."""
    if not isinstance(hlc, int):
        return None
    from ..changes import physical_ms

    try:
        return physical_ms(hlc) / 1000
    except Exception:  # not a clock value we know: show no time rather than a wrong one
        return None


def linked_rows(env: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every file the environment links to, with its state and why."""
    return [{"path": row.get("rel") or row.get("path") or "", "state": row.get("state") or "",
             "reason": row.get("reason") or ""} for row in env.get("linked") or ()]


# ------------------------------------------------------------------------------ space


def member_rows(state: Any, me: str, online: set[str] | None) -> list[dict[str, Any]]:
    """A space's members (from its verified membership log, a `SpaceState`) with roles and
    devices, each device marked online when the daemon knows (None: unknown)."""
    out = []
    for m in sorted(state.members.values(), key=lambda m: (m.name.casefold(), m.id)):
        devices = [{"id": d, "name": state.devices[d].name if d in state.devices else "",
                    "this_device": d == me, "online": None if online is None else d in online}
                   for d in m.devices]
        out.append({"id": m.id, "name": m.name, "role": m.role, "devices": devices,
                    "is_me": me in m.devices})
    return out


__all__ = [
    "MAX_TIMELINE",
    "MAX_VALUE_CHARS",
    "NEAR_QUOTA",
    "conflict_rows",
    "env_rows",
    "human_bytes",
    "linked_problems",
    "linked_rows",
    "member_rows",
    "peer_rows",
    "quota_view",
    "relay_view",
    "summary_words",
    "timeline",
    "value_text",
    "when_text",
    "who_text",
]
