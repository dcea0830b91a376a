"""Journey (issue #12): a teammate's link never takes a local file you did not share.

Alice (laptop + desktop) and Bob share the payments environment. Alice's desktop keeps a
private token in its synced folder (`secrets/token.txt`), shared with nobody. Bob, with the
stock client, saves the environment with a response body pointing at that path (a typo, or
on purpose: the outcome must be the same). Alice's desktop then saves the environment and
edits the token, so its daemon looks at the path again and again: the token never reaches
Bob or Alice's laptop, and the desktop's `status` shows it as `unconfirmed` with the command
that shares it. Alice runs that command on the desktop: only then does it travel. A file Bob
links himself, and has, reaches everyone as before.

Everything through the `mocksync` command, editor saves and `status --json`.
"""

from __future__ import annotations

from typing import Any

from .harness import Device, Team

TOKEN = b"ghp_alice-desktop-token-not-for-the-team\n"
BOBS = b'{"from": "bob"}\n'


def linked(dev: Device, env: str) -> dict[str, dict[str, Any]]:
    row = dev.env(env)
    assert row is not None, f"{dev.name}'s status does not list {env}"
    return {lk["path"]: lk for lk in row.get("linked") or ()}


def first_response(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["routes"][0]["responses"][0]


def test_a_teammates_link_never_takes_a_local_file_until_you_share_it(team: Team) -> None:
    laptop, desktop, bob = team.crew()
    laptop.write_raw("fixtures/receipt.html", b"<p>receipt</p>\n")
    laptop.add_example("payments-callbacks", "payments.json")
    env = laptop.share("payments.json")["uuid"]
    team.synced(env, laptop, desktop, bob)
    desktop.write_raw("secrets/token.txt", TOKEN)

    def link_token(doc: dict[str, Any]) -> None:
        r = first_response(doc)
        r["bodyType"], r["filePath"] = "FILE", "secrets/token.txt"

    bob.save("payments.json", link_token)
    row = team.wait(lambda: linked(desktop, env).get("secrets/token.txt", {}).get("state")
                    == "unconfirmed" and linked(desktop, env)["secrets/token.txt"],
                    "the token shown as unconfirmed on Alice's desktop")
    assert "a teammate's edit linked secrets/token.txt" in row["reason"]
    assert "mocksync adopt payments.json secrets/token.txt" in row["reason"]
    text = desktop.ms("status").out
    assert "secrets/token.txt: unconfirmed: not read or sent" in text, text

    # The desktop looks again: a save of the environment, and an edit of the token.
    desktop.save("payments.json", lambda d: first_response(d).update(label="desktop saved"))
    desktop.write_raw("secrets/token.txt", TOKEN + b"rotated\n")
    team.everywhere(env, (laptop, bob), lambda d: first_response(d)["label"] == "desktop saved",
                    "the desktop's save")
    team.wait(lambda: linked(laptop, env).get("secrets/token.txt", {}).get("state") == "missing",
              "the token missing (never received) on Alice's laptop")
    for dev in (laptop, bob):
        assert not (dev.folder / "secrets").exists(), dev.name
        assert linked(dev, env)["secrets/token.txt"]["state"] == "missing"
    assert linked(desktop, env)["secrets/token.txt"]["state"] == "unconfirmed"

    # A path nothing links is refused and changes nothing; then Alice shares it on purpose.
    bad = desktop.ms("adopt", "payments.json", "nope.txt", check=False)
    assert bad.code == 1 and "nothing to adopt at nope.txt" in bad.err, bad
    out = desktop.ms("adopt", "payments.json", "secrets/token.txt").out
    assert "shared secrets/token.txt" in out, out
    for dev in (laptop, bob):
        team.wait(lambda d=dev: (d.folder / "secrets/token.txt").exists()
                  and (d.folder / "secrets/token.txt").read_bytes() == TOKEN + b"rotated\n",
                  f"the shared token on {dev.name}")
    team.wait(lambda: linked(desktop, env)["secrets/token.txt"]["state"] == "synced",
              "the token synced on the desktop")

    # The honest flow: Bob links a file he has; it reaches Alice's devices.
    bob.write_raw("fixtures/bob.json", BOBS)

    def link_bobs(doc: dict[str, Any]) -> None:
        cb = next(c for c in doc["callbacks"] if c["bodyType"] == "INLINE")
        cb["bodyType"], cb["filePath"] = "FILE", "fixtures/bob.json"

    bob.save("payments.json", link_bobs)
    for dev in (laptop, desktop):
        team.wait(lambda d=dev: (d.folder / "fixtures/bob.json").exists()
                  and (d.folder / "fixtures/bob.json").read_bytes() == BOBS,
                  f"Bob's linked file on {dev.name}")
