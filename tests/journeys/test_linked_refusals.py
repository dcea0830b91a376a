"""Journey (issue #12): files from teammates land only where the environment says.

Alice (laptop + desktop) and Bob share the payments environment with the files it links (a
FILE body, a FILE callback body, a TLS certificate and key). The legitimate files arrive on
every device, with safe modes (no exec bit, the key 0600). What never arrives: a hidden path
the environment links (`.git/hooks/pre-commit`, refused on Alice's own device and named in
her `status`), a file nothing links (`notes.txt`), and nothing replaces a local file Bob
never synced: his draft stays, `status` shows it as a conflict with what to do, and once he
moves it away the team's version arrives. Edits keep flowing after all that.

Everything is done as users do it: the `mocksync` command, files saved into the folders,
`status` (text and --json) read back. (A hostile member who forges file entities is in
tests/test_attack_linked_files.py: that needs the library's signing code, not the CLI.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .harness import EXAMPLES, Device, Team

HOOK = b"#!/bin/sh\necho from-alice-hooks\n"
RECEIPT = b"<p>receipt</p>\n"
WEBHOOK = b'{"event": "paid"}\n'
DRAFT = b"bob's own draft, never synced\n"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def linked(dev: Device, env: str) -> dict[str, dict[str, Any]]:
    row = dev.env(env)
    assert row is not None, f"{dev.name}'s status does not list {env}"
    return {lk["path"]: lk for lk in row.get("linked") or ()}


def with_hook_link(doc: dict[str, Any]) -> None:
    """The example plus one more FILE response, pointing at a git hook."""
    route = next(r for r in doc["routes"] if any(x["bodyType"] == "FILE"
                                                 for x in r["responses"]))
    extra = dict(route["responses"][0], uuid="6f1c2d3e-0000-4000-8000-0000000000aa",
                 label="hook", bodyType="FILE", filePath=".git/hooks/pre-commit", default=False)
    route["responses"].append(extra)


def test_teammates_files_land_only_where_the_environment_links_them(team: Team) -> None:
    laptop, desktop, bob = team.crew()
    bob.stop()  # Bob is away while Alice shares

    laptop.write_raw("fixtures/receipt.html", RECEIPT)
    os.chmod(laptop.folder / "fixtures/receipt.html", 0o755)
    laptop.write_raw("fixtures/webhook.json", WEBHOOK)
    laptop.write_raw("tls/cert.pem", b"CERT\n")
    laptop.write_raw("tls/key.pem", b"KEY\n")
    laptop.write_raw(".git/hooks/pre-commit", HOOK)
    os.chmod(laptop.folder / ".git/hooks/pre-commit", 0o755)
    laptop.write_raw("notes.txt", b"alice's notes, linked by nothing\n")
    assert (EXAMPLES / "payments-callbacks.json").exists()
    laptop.add_example("payments-callbacks", "payments.json", edit=with_hook_link)
    env = laptop.share("payments.json")["uuid"]

    # The linked files reach Alice's desktop, byte for byte, with safe modes.
    fd = desktop.folder
    team.wait(lambda: (fd / "fixtures/receipt.html").read_bytes() == RECEIPT
              and (fd / "fixtures/webhook.json").read_bytes() == WEBHOOK
              and (fd / "tls/key.pem").read_bytes() == b"KEY\n",
              "the linked files on Alice's desktop")
    assert mode(fd / "fixtures/receipt.html") == 0o644  # never an exec bit from a peer
    assert mode(fd / "tls/key.pem") == 0o600
    # The hook and the unlinked notes stay on the laptop.
    assert not (fd / ".git").exists() and not (fd / "notes.txt").exists()
    hook = team.wait(lambda: linked(laptop, env).get(".git/hooks/pre-commit"),
                     "the hook link in Alice's status")
    assert hook["state"] == "outside" and "(.git) starts with '.'" in hook["reason"]
    assert ".git/hooks/pre-commit: outside" in laptop.ms("status").out

    # Bob comes back with his own draft where the webhook body goes.
    bob.write_raw("fixtures/webhook.json", DRAFT)
    bob.start()
    fb = bob.folder
    team.wait(lambda: (fb / "fixtures/receipt.html").read_bytes() == RECEIPT,
              "the receipt on Bob's laptop")
    row = team.wait(lambda: (r := linked(bob, env).get("fixtures/webhook.json"))
                    and r["state"] == "conflict" and r, "Bob's draft shown as a conflict")
    assert "never synced" in row["reason"] and "Move or rename it" in row["reason"]
    text = bob.ms("status").out
    assert "fixtures/webhook.json: conflict" in text, text
    assert (fb / "fixtures/webhook.json").read_bytes() == DRAFT  # not overwritten
    assert (fd / "fixtures/webhook.json").read_bytes() == WEBHOOK  # and not sent
    assert not (fb / ".git").exists() and not (fb / "notes.txt").exists()
    assert mode(fb / "fixtures/receipt.html") == 0o644

    # He moves his draft away: the team's version arrives and the conflict is gone.
    os.rename(fb / "fixtures/webhook.json", fb / "fixtures/webhook.draft")
    team.wait(lambda: (fb / "fixtures/webhook.json").read_bytes() == WEBHOOK,
              "the team's webhook body on Bob's laptop")
    team.wait(lambda: linked(bob, env)["fixtures/webhook.json"]["state"] == "synced",
              "the webhook body synced on Bob's laptop")

    # Edits keep flowing: Alice's desktop changes the receipt, everyone gets it.
    desktop.write_raw("fixtures/receipt.html", b"<p>receipt v2</p>\n")
    for dev in (laptop, bob):
        team.wait(lambda d=dev: (d.folder / "fixtures/receipt.html").read_bytes()
                  == b"<p>receipt v2</p>\n", f"the new receipt on {dev.name}")
    assert bob.file_of(env) is not None and bob.file_of(env).parent == fb
    assert not (fb / ".git").exists() and not (fd / ".git").exists()
