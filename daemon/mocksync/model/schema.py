"""What an environment is made of, as far as merging is concerned (docs/design/merge.md).

Entities are the objects with a `uuid`. Each kind lists its child collections: those are not
registers but are rebuilt from the children's places at render time. Everything else on an
entity is a register, including fields Mockoon adds in future versions.
"""

from __future__ import annotations

from dataclasses import dataclass

ENV = "env"
FOLDER = "folder"
ROUTE = "route"
RESPONSE = "response"
BUCKET = "bucket"
CALLBACK = "callback"
#: A file an environment links to (a FILE body, a TLS file): content travels as one register;
#: never rendered into the environment JSON (see `model.files`).
FILE = "file"
KINDS = (ENV, FOLDER, ROUTE, RESPONSE, BUCKET, CALLBACK, FILE)

#: Place names: an entity's spot in its kind's array ("list") and, for routes and folders,
#: in the folder tree ("tree").
LIST = "list"
TREE = "tree"
#: Container of a tree place at the top level (`rootChildren`).
ROOT = ""


@dataclass(frozen=True)
class Collection:
    key: str  # JSON key on the parent object
    kind: str | None  # kind of the children (None for the tree, which holds folders and routes)
    place: str  # which place of the child orders it


#: Child collections per kind. The env's `rootChildren` and a folder's `children` are the tree.
COLLECTIONS: dict[str, tuple[Collection, ...]] = {
    ENV: (
        Collection("folders", FOLDER, LIST),
        Collection("routes", ROUTE, LIST),
        Collection("rootChildren", None, TREE),
        Collection("data", BUCKET, LIST),
        Collection("callbacks", CALLBACK, LIST),
    ),
    FOLDER: (Collection("children", None, TREE),),
    ROUTE: (Collection("responses", RESPONSE, LIST),),
    RESPONSE: (),
    BUCKET: (),
    CALLBACK: (),
    FILE: (),
}
COLLECTION_KEYS: dict[str, frozenset[str]] = {
    k: frozenset(c.key for c in cs) for k, cs in COLLECTIONS.items()
}
TREE_KINDS = (FOLDER, ROUTE)

#: Mockoon's key order at lastMigration 33, used when we create objects ourselves
#: (`mocksync new`) and to check files. Files keep their own order (a register).
KEY_ORDER: dict[str, tuple[str, ...]] = {
    ENV: (
        "uuid", "lastMigration", "name", "endpointPrefix", "latency", "port", "hostname",
        "folders", "routes", "rootChildren", "proxyMode", "proxyHost", "proxyRemovePrefix",
        "tlsOptions", "cors", "headers", "proxyReqHeaders", "proxyResHeaders", "data", "callbacks",
    ),
    FOLDER: ("uuid", "name", "children"),
    ROUTE: (
        "uuid", "type", "documentation", "method", "endpoint", "responses", "responseMode",
        "streamingMode", "streamingInterval",
    ),
    RESPONSE: (
        "uuid", "body", "latency", "statusCode", "label", "headers", "bodyType", "filePath",
        "databucketID", "sendFileAsBody", "rules", "rulesOperator", "disableTemplating",
        "fallbackTo404", "default", "crudKey", "callbacks",
    ),
    BUCKET: ("uuid", "id", "name", "documentation", "value"),
    CALLBACK: (
        "uuid", "id", "uri", "name", "documentation", "method", "headers", "bodyType", "body",
        "databucketID", "filePath", "sendFileAsBody",
    ),
}

#: Where a kind's entities live in the document, for messages ("routes[3]").
ARRAY_OF = {FOLDER: "folders", ROUTE: "routes", BUCKET: "data", CALLBACK: "callbacks"}
