"""Linked files through the command line, against a real `mocksync daemon` (issue #7):
`status` names what is not synced and why, `adopt` fixes absolute paths, and the conflicts
listing never prints file contents."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.daemons import DaemonProcess, cli, status_env, write_config
from helpers.devices import make_device
from helpers.files import copy_example, read_doc
from helpers.polling import wait_sync
from helpers.procs import short_tmp

KEY = b"-----BEGIN PRIVATE KEY-----\nCLI-SECRET-KEY\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def root() -> Iterator[Path]:
    with short_tmp() as r:
        yield r


def test_status_and_adopt_from_the_command_line(root: Path) -> None:
    dev = make_device(root, "dev")
    write_config(dev.home, blind_window_s=0.3)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "server.key").write_bytes(KEY)
    os.chmod(elsewhere / "server.key", 0o644)
    src = copy_example("payments-callbacks.json", dev.folder, "payments.json")
    doc = read_doc(src)
    doc["tlsOptions"]["keyPath"] = str(elsewhere / "server.key")
    src.write_text(json.dumps(doc, indent=2))
    (dev.folder / "tls").mkdir()
    (dev.folder / "tls/cert.pem").write_bytes(b"CERT")
    with DaemonProcess(dev.home, dev.folder) as d:
        res = cli(dev.home, "share", str(src))
        assert res.code == 0, res.err
        client = d.client()
        row = wait_sync(lambda: status_env(client, src), "the shared env in status")
        by_path = {lk["path"]: lk for lk in row["linked"]}
        key = by_path[str(elsewhere / "server.key")]
        assert key["state"] == "outside" and "mocksync adopt payments.json" in key["reason"]
        assert by_path["tls/cert.pem"]["state"] == "synced"
        assert by_path["fixtures/receipt.html"]["state"] == "missing"
        human = cli(dev.home, "status")
        assert human.code == 0
        assert "payments.json: fixtures/receipt.html: missing" in human.out
        assert "is absolute" in human.out  # (the table may wrap; the sentence is printed whole)

        res = cli(dev.home, "adopt", "payments.json")
        assert res.code == 0, res.err
        assert f"adopted {elsewhere / 'server.key'} -> payments/server.key" in res.out
        copied = dev.folder / "payments/server.key"
        assert copied.read_bytes() == KEY and (copied.stat().st_mode & 0o777) == 0o600
        wait_sync(lambda: read_doc(src)["tlsOptions"]["keyPath"] == "payments/server.key",
                  "the environment file to point at the copy")
        row = wait_sync(lambda: (r := status_env(client, src)) and {
            lk["path"]: lk for lk in r["linked"]}.get("payments/server.key", {}).get(
            "state") == "synced" and r, "the adopted key synced")
        again = cli(dev.home, "adopt", "payments.json", "--json")
        assert again.code == 0 and again.json()["adopted"] == []
        missing = cli(dev.home, "adopt", "no-such-env")
        assert missing.code == 1 and missing.err.strip()
    log_text = d.log()
    assert "CLI-SECRET-KEY" not in log_text
