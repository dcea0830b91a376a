"""A remote edit's write does not read the file when it is still the version this device
wrote (issue 15: 5-15 MB read per write); an editor's change that kept the file's signature
(same inode, size and mtime) is still never overwritten (the compare before the rename reads
the bytes themselves)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import Two, two_devices
from helpers.files import edit_file, read_doc, response_by_uuid, responses
from helpers.polling import wait_until


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    async with two_devices(tmp_path, settled=True) as t:
        yield t


async def test_the_file_this_device_wrote_is_not_read_again(two: Two) -> None:
    uuid = responses(read_doc(two.file_a))[0]["uuid"]
    edit_file(two.file_a, lambda d: response_by_uuid(d, uuid).__setitem__("label", "one"))
    await wait_until(lambda: response_by_uuid(read_doc(two.file_b), uuid)["label"] == "one",
                     "B's file to get the first edit")
    rt = two.b.envs[two.env]
    await wait_until(lambda: two.b.writes.known_sig.get(two.env) == rt.file_sig,
                     "B's write noted")
    reads: list[Path] = []
    real = two.b.edits.read_sig

    def counted(path: Path) -> Any:
        reads.append(path)
        return real(path)

    two.b.edits.read_sig = counted  # type: ignore[method-assign]
    data, sig = two.b.writes.read_current(rt)
    assert data == two.file_b.read_bytes() and sig == rt.file_sig and reads == []
    os.utime(two.file_b, ns=(0, 10**9))  # another version (its mtime): read it
    data, _sig = two.b.writes.read_current(rt)
    assert reads == [two.file_b] and data == two.file_b.read_bytes()


async def test_an_edit_that_kept_the_signature_is_not_overwritten(two: Two) -> None:
    """Bob's tool rewrites a value in place, same size, and puts the mtime back: inode, size
    and mtime are the version the daemon wrote. Alice's edit that follows is written around
    it, never over it."""
    doc = read_doc(two.file_a)
    first, second = responses(doc)[0]["uuid"], responses(doc)[1]["uuid"]
    edit_file(two.file_a, lambda d: response_by_uuid(d, first).__setitem__("label", "aaaa"))
    await wait_until(lambda: response_by_uuid(read_doc(two.file_b), first)["label"] == "aaaa",
                     "B's file to get Alice's first edit")
    rt = two.b.envs[two.env]
    await wait_until(lambda: two.b.writes.known_sig.get(two.env) == rt.file_sig,
                     "B's write noted")
    st = os.stat(two.file_b)
    raw = two.file_b.read_bytes()
    assert raw.count(b'"aaaa"') == 1
    with open(two.file_b, "r+b") as f:  # in place: same inode, same size
        f.write(raw.replace(b'"aaaa"', b'"bbbb"'))
    os.utime(two.file_b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(two.file_b).st_mtime_ns == st.st_mtime_ns
    edit_file(two.file_a, lambda d: response_by_uuid(d, second).__setitem__("label", "alice"))
    await wait_until(lambda: response_by_uuid(read_doc(two.file_b), second)["label"] == "alice",
                     "B's file to get Alice's second edit")
    await wait_until(lambda: response_by_uuid(read_doc(two.file_a), first)["label"] == "bbbb",
                     "Bob's in-place edit to reach Alice")
    assert response_by_uuid(read_doc(two.file_b), first)["label"] == "bbbb"
