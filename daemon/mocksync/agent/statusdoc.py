"""The documents `status`, `list` and `peers` answer with, shaped from the agent's raw view.

Why a pure module: what a person and a script read is decided here, once, for both the text
and the `--json` output, and tested without a daemon:
- peers: one row per device (`peerrows.one_row_per_device`);
- environments being caught up: state `syncing` with `progress` {done, total, percent} (an
  environment still shown `synced` while change sets stream in would be a lie), and the
  top-level `progress` list, which also covers an environment that has no file here yet;
- each synced environment's `shared_as`: the file name its sharer keeps it under, next to
  `file` (where it is on this device), so `list` shows the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .envfiles import SYNCED, SYNCING
from .peerrows import one_row_per_device


def _with_names(envs: list[dict[str, Any]], shared_names: Mapping[str, str | None]
                ) -> list[dict[str, Any]]:
    out = []
    for e in envs:
        e = dict(e)
        if e.get("uuid") in shared_names:
            e["shared_as"] = shared_names[e["uuid"]]
        out.append(e)
    return out


def _with_progress(envs: list[dict[str, Any]], progress: list[dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_env = {p["env"]: p for p in progress if p.get("env")}
    names = {e.get("uuid"): e.get("name") for e in envs}
    out = []
    for e in envs:
        p = by_env.get(e.get("uuid"))
        if p is not None:
            e = dict(e, progress={k: p[k] for k in ("done", "total", "percent")})
            if e.get("state") == SYNCED:
                e["state"] = SYNCING
                e["reason"] = e.get("reason") or (
                    f"catching up: {p['done']} of {p['total']} change sets")
        out.append(e)
    shown = [dict(p, name=names.get(p.get("env"))) for p in progress]
    return out, shown


def status_document(raw: Mapping[str, Any], shared_names: Mapping[str, str | None]
                    ) -> dict[str, Any]:
    """`status`: the agent's raw status with one row per peer, progress and file mapping."""
    doc = dict(raw)
    doc["peers"] = one_row_per_device(raw.get("peers") or [])
    envs = _with_names(list(raw.get("environments") or []), shared_names)
    doc["environments"], doc["progress"] = _with_progress(envs, list(raw.get("progress") or []))
    return doc


def list_document(envs: list[dict[str, Any]], shared_names: Mapping[str, str | None],
                  progress: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """`list`: every environment with `shared_as` (and `progress` while caught up)."""
    out, _ = _with_progress(_with_names(envs, shared_names), list(progress or []))
    return out


__all__ = ["list_document", "status_document"]
