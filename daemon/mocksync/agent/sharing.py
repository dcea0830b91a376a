"""Making environments to share: a copy with fresh uuids (`share --copy`), a new empty one.

A copy must stay a valid environment: every uuid is replaced, and every reference to a uuid
(tree entries, response callback invocations) follows it, so the copy and the original can be
synced side by side without one entity ever being mistaken for the other.
"""

from __future__ import annotations

import copy
import random
import uuid as uuidlib
from typing import Any


def _new_uuid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


def fresh_copy(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    mapping: dict[str, str] = {}

    def remap(u: Any) -> Any:
        if not isinstance(u, str):
            return u
        if u not in mapping:
            mapping[u] = _new_uuid(rng)
        return mapping[u]

    out["uuid"] = remap(out["uuid"])
    for key in ("folders", "routes", "data", "callbacks"):
        for obj in out.get(key, []):
            obj["uuid"] = remap(obj["uuid"])
            for resp in obj.get("responses", []) if key == "routes" else []:
                resp["uuid"] = remap(resp["uuid"])
    known = set(mapping)

    def ref(u: Any) -> Any:
        return mapping[u] if isinstance(u, str) and u in known else u

    for item in out.get("rootChildren", []):
        item["uuid"] = ref(item.get("uuid"))
    for f in out.get("folders", []):
        for item in f.get("children", []):
            item["uuid"] = ref(item.get("uuid"))
    for r in out.get("routes", []):
        for resp in r.get("responses", []):
            for inv in resp.get("callbacks", []) or []:
                if isinstance(inv, dict):
                    inv["uuid"] = ref(inv.get("uuid"))
    if isinstance(out.get("name"), str):
        out["name"] = out["name"] + " (copy)"
    return out


def new_environment(name: str, rng: random.Random, used_ports: set[Any] | None = None) -> dict[str, Any]:
    """A valid, empty environment in Mockoon's own shape and key order (lastMigration 33)."""
    port = 3000
    while used_ports and port in used_ports:
        port += 1
    return {
        "uuid": _new_uuid(rng),
        "lastMigration": 33,
        "name": name,
        "endpointPrefix": "",
        "latency": 0,
        "port": port,
        "hostname": "",
        "folders": [],
        "routes": [],
        "rootChildren": [],
        "proxyMode": False,
        "proxyHost": "",
        "proxyRemovePrefix": False,
        "tlsOptions": {"enabled": False, "type": "CERT", "pfxPath": "", "certPath": "",
                       "keyPath": "", "caPath": "", "passphrase": ""},
        "cors": True,
        "headers": [{"key": "Content-Type", "value": "application/json"}],
        "proxyReqHeaders": [{"key": "", "value": ""}],
        "proxyResHeaders": [{"key": "", "value": ""}],
        "data": [],
        "callbacks": [],
    }
