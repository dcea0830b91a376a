"""Every error mocksync raises on purpose is a `MocksyncError` (one root, issue 14).

Why a test: callers (the CLI, the control API, the transports, the fuzzers) catch
`MocksyncError` to tell "refused, here is why" from a bug; an error class outside the tree
escapes them as a crash. Private classes (leading underscore) are control flow inside one
module and never leave it.

Where they live: each package keeps its refusals in its own `errors.py` (the shared leaves
theirs in `mocksync/errors.py`), so one file per package lists every way it says no; the
modules that raise them import them from there.
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


#: Modules still defining their own error classes (issue 14 moved the last ones; keep it
#: empty: a new error class goes to its package's errors.py).
NOT_YET_IN_ERRORS_MODULE: frozenset[str] = frozenset()


def _defined_errors() -> dict[str, list[str]]:
    """Public error classes by the module that defines them."""
    out: dict[str, list[str]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == name and not attr.startswith("_")):
                out.setdefault(name, []).append(attr)
    return out


def test_error_classes_are_defined_only_in_errors_modules() -> None:
    elsewhere = {m: cls for m, cls in _defined_errors().items()
                 if not m.endswith(".errors") and m != "mocksync.errors"
                 and m not in NOT_YET_IN_ERRORS_MODULE}
    assert elsewhere == {}, (
        f"error classes defined outside a package's errors.py: {elsewhere}; move them there")


def test_the_exceptions_list_holds_only_modules_that_still_need_it() -> None:
    defined = _defined_errors()
    stale = sorted(m for m in NOT_YET_IN_ERRORS_MODULE if m not in defined)
    assert stale == [], f"no longer define error classes, drop from the list: {stale}"


def test_the_walk_sees_the_packages_it_guards() -> None:
    names = _modules()
    for pkg in ("mocksync.model.sharedname", "mocksync.net.mdns", "mocksync.relay.frames",
                "mocksync.agent.storeworker", "mocksync.space.errors", "mocksync.agent.errors",
                "mocksync.model.errors", "mocksync.net.errors", "mocksync.relay.errors"):
        assert pkg in names
