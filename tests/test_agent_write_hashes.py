"""A remote edit's write hashes the file once (issue 15): the daemon keeps the bytes it last
wrote, so it neither hashes nor decodes the file it finds there again, and the writer's
compare-before-replace compares bytes instead of hashing the file twice more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mocksync.agent import envwrites, writer

from helpers.agents import Two, two_devices
from helpers.files import editor_save, read_doc, response_by_uuid, responses
from helpers.polling import wait_until


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    async with two_devices(tmp_path, settled=True) as t:
        yield t


async def test_each_remote_write_hashes_once_and_reads_back_nothing_to_hash(
        two: Two, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    real = envwrites.content_hash

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return real(data)

    def no_file_hash(*_a: Any) -> Any:
        raise AssertionError("the writer hashed the file it was about to replace")

    monkeypatch.setattr(envwrites, "content_hash", counting)
    monkeypatch.setattr(writer, "content_hash", counting)  # (`hash_beside`, beside the write)
    monkeypatch.setattr(writer, "_hash_if_same", no_file_hash)
    written: list[dict[str, Any]] = []
    two.b.listeners.append(lambda ev: ev.get("event") == "written" and written.append(ev))
    uuid = responses(read_doc(two.file_a))[0]["uuid"]
    for i in range(2):
        doc = read_doc(two.file_a)
        response_by_uuid(doc, uuid)["label"] = f"edit {i}"
        editor_save(two.file_a, doc)
        await wait_until(lambda i=i: response_by_uuid(read_doc(two.file_b), uuid)["label"]
                         == f"edit {i}", "B's file to get the edit")
        await wait_until(lambda i=i: len(written) == i + 1, "the write's event")
    assert len(hashed) == 2  # one per write: what was written, never what was there
    assert hashed[-1] == len(two.file_b.read_bytes())
