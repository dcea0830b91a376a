"""Every error mocksync raises on purpose is a `MocksyncError` (one root, issue 14).

Why a test: callers (the CLI, the control API, the transports, the fuzzers) catch
`MocksyncError` to tell "refused, here is why" from a bug; an error class outside the tree
escapes them as a crash. Private classes (leading underscore) are control flow inside one
module and never leave it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import mocksync
from mocksync.errors import MocksyncError


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(mocksync.__path__, "mocksync."))


def test_every_public_error_class_is_a_mocksync_error() -> None:
    outside = []
    for name in _modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == name and not attr.startswith("_")
                    and not issubclass(obj, MocksyncError)):
                outside.append(f"{name}.{attr}")
    assert outside == [], f"error classes outside MocksyncError: {outside}"


def test_the_walk_sees_the_packages_it_guards() -> None:
    names = _modules()
    for pkg in ("mocksync.model.sharedname", "mocksync.net.mdns", "mocksync.relay.frames",
                "mocksync.agent.storeworker", "mocksync.space.errors"):
        assert pkg in names
