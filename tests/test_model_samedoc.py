"""`model.samedoc`: the check after each save (does the file hold the merged state?) compares
only what is not the very same objects as in the last pair found equal (issue 15)."""

from __future__ import annotations

import copy
from typing import Any

from mocksync.model.samedoc import same_doc


def _doc() -> dict[str, Any]:
    return {"uuid": "e", "port": 3000,
            "routes": [{"uuid": f"r{i}", "responses": [{"uuid": f"p{i}", "label": "x"}]}
                       for i in range(50)],
            "data": [{"uuid": "b", "value": "[]"}]}


class _Loud(dict):  # type: ignore[type-arg]
    """A route that must not be compared (raises when it is)."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("compared a member that is the same object as before")

    __hash__ = None  # type: ignore[assignment]


def test_equal_and_different_documents_without_a_known_pair() -> None:
    assert same_doc(_doc(), _doc())
    other = _doc()
    other["routes"][3]["responses"][0]["label"] = "y"
    assert not same_doc(_doc(), other)


def test_only_members_that_changed_since_the_known_pair_are_compared() -> None:
    r0, p0 = _doc(), _doc()
    r0["routes"][7] = p0["routes"][7] = _Loud(r0["routes"][7])  # same object both sides
    # The next versions share every route object with their own last version but one.
    r1 = dict(r0, routes=list(r0["routes"]))
    p1 = dict(p0, routes=list(p0["routes"]))
    r1["routes"][2] = copy.deepcopy(dict(r0["routes"][2]))
    p1["routes"][2] = copy.deepcopy(dict(p0["routes"][2]))
    assert same_doc(r1, p1, (r0, p0))
    p1["routes"][2]["responses"][0]["label"] = "edited"
    assert not same_doc(r1, p1, (r0, p0))  # the changed route is compared
    p2 = dict(p0, port=3001)  # a top-level scalar
    assert not same_doc(dict(r0), p2, (r0, p0))
    p3 = dict(p0, routes=p0["routes"][:-1])  # a shorter list: compared whole
    assert not same_doc(dict(r0, routes=list(r0["routes"][:-1]) + [{"uuid": "zz"}]), p3,
                        (r0, p0))
    assert not same_doc(dict(r0, extra=1), dict(p0), (r0, p0))  # keys differ
