"""Small hand-built environments for model tests (the examples/ files are the realistic ones)."""

from __future__ import annotations

import copy
from typing import Any

ENV_UUID = "e0000000-0000-4000-8000-000000000000"


def u(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def response(n: int, *, default: bool = False, body: str = "{}", label: str = "") -> dict[str, Any]:
    return {
        "uuid": u(n), "body": body, "latency": 0, "statusCode": 200, "label": label,
        "headers": [], "bodyType": "INLINE", "filePath": "", "databucketID": "",
        "sendFileAsBody": False, "rules": [], "rulesOperator": "OR", "disableTemplating": False,
        "fallbackTo404": False, "default": default, "crudKey": "id", "callbacks": [],
    }


def route(n: int, endpoint: str, responses: list[dict[str, Any]], *, type_: str = "http",
          method: str = "get") -> dict[str, Any]:
    return {
        "uuid": u(n), "type": type_, "documentation": "", "method": method, "endpoint": endpoint,
        "responses": responses, "responseMode": None, "streamingMode": None,
        "streamingInterval": 0,
    }


def small_env() -> dict[str, Any]:
    """Root: folder f1 (route r10, folder f2 (route r20)), route r30. Bucket b1, callback c1."""
    routes = [
        route(10, "users", [response(11, default=True, body='{"users": []}'),
                            response(12, label="not found")]),
        route(20, "users/:id", [response(21, default=True)]),
        route(30, "health", [response(31, default=True, body="ok")]),
        route(40, "items", [response(41, default=True)], type_="crud", method=""),
    ]
    routes[3]["responses"][0]["bodyType"] = "DATABUCKET"
    routes[3]["responses"][0]["databucketID"] = "b1id"
    routes[0]["responses"][0]["callbacks"] = [{"uuid": u(60), "latency": 0}]
    return {
        "uuid": ENV_UUID, "lastMigration": 33, "name": "Small", "endpointPrefix": "",
        "latency": 0, "port": 3000, "hostname": "127.0.0.1",
        "folders": [
            {"uuid": u(1), "name": "api", "children": [
                {"type": "route", "uuid": u(10)}, {"type": "folder", "uuid": u(2)}]},
            {"uuid": u(2), "name": "nested", "children": [{"type": "route", "uuid": u(20)}]},
        ],
        "routes": routes,
        "rootChildren": [{"type": "folder", "uuid": u(1)}, {"type": "route", "uuid": u(30)},
                         {"type": "route", "uuid": u(40)}],
        "proxyMode": False, "proxyHost": "", "proxyRemovePrefix": False,
        "tlsOptions": {"enabled": False, "type": "CERT", "pfxPath": "", "certPath": "",
                       "keyPath": "", "caPath": "", "passphrase": ""},
        "cors": True, "headers": [{"key": "Content-Type", "value": "application/json"}],
        "proxyReqHeaders": [{"key": "", "value": ""}],
        "proxyResHeaders": [{"key": "", "value": ""}],
        "data": [{"uuid": u(50), "id": "b1id", "name": "Items", "documentation": "",
                  "value": "[]"}],
        "callbacks": [{"uuid": u(60), "id": "c1id", "uri": "http://127.0.0.1:9/hook",
                       "name": "Hook", "documentation": "", "method": "post", "headers": [],
                       "body": "", "bodyType": "INLINE", "filePath": "", "databucketID": "b1id",
                       "sendFileAsBody": False}],
    }


def clone(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)


def find(doc: dict[str, Any], uuid: str) -> dict[str, Any]:
    for key in ("folders", "routes", "data", "callbacks"):
        for obj in doc.get(key, []):
            if obj["uuid"] == uuid:
                return obj
            for r in obj.get("responses", []):
                if r["uuid"] == uuid:
                    return r
    raise KeyError(uuid)
