"""A team with no server (issue 16) between real hosts: three network namespaces on a bridge
(docs/design/testing.md), each running `mocksync daemon --bind 198.18.0.x` with mDNS on, and no relay
process anywhere.

The story: Ana (host 0) creates a space and invites; Ben (host 1), Cy and Dee (host 2) join
over the LAN with `mocksync join --bind ADDR`; an environment is shared and edited both ways.
Ana removes Cy: the key rotates, Ben learns it from Ana, Cy gets nothing new. While Dee is
off, Ana also admits Fay (host 1) and then leaves; Dee comes back and meets only Ben, a
non-admin: she learns the removal, the new key and the whole membership (Fay) from him.

Needs root and iproute2; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from mocksync.devtools.envgen import generate_env
from mocksync.space.store import get_space
from netns import (
    Daemon,
    Device,
    Host,
    Lab,
    edit,
    editor_save,
    env_file,
    make_device,
    mocksync_command,
    read_json,
    set_doc,
    short_tmp,
    skip_reason,
    wait_for,
)

pytestmark = pytest.mark.netns

REASON = skip_reason()
WAIT = 30.0


@pytest.fixture(autouse=True)
def _need_namespaces() -> None:
    if REASON is not None:
        pytest.skip(REASON)


def cli(dev: Device, *args: str, host: Host | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    argv = [*mocksync_command(), "--home", str(dev.home.root), *args]
    if host is not None:
        argv = ["ip", "netns", "exec", host.name, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def join(dev: Device, host: Host, by: Device, space: str) -> subprocess.CompletedProcess[str]:
    token = cli(by, "invite", space).stdout.strip()
    res = cli(dev, "join", token, "--bind", host.address, "--timeout", "20", host=host)
    assert res.returncode == 0, f"join of {dev.name} failed: {res.stderr}"
    return res


def log_state(dev: Device, space: str):  # noqa: ANN201
    return get_space(dev.home, space).state


def title(dev: Device) -> str | None:
    path = env_file(dev)
    doc = read_json(path) if path else None
    return doc["routes"][0]["documentation"] if doc else None


def test_a_team_without_a_server_on_three_hosts() -> None:
    with short_tmp("msns-") as root, Lab(3) as lb:
        h0, h1, h2 = lb.hosts
        ana, ben, cy, dee, fay = (make_device(root, n) for n in ("ana", "ben", "cy", "dee", "fay"))
        space = json.loads(cli(ana, "space", "create", "office", "--json").stdout)["id"]
        da, db, dd = Daemon(ana, h0), Daemon(ben, h1), Daemon(dee, h2)
        Daemon(cy, h2)

        # Joining over the LAN only: the token has no relay; join finds Ana by mDNS.
        res = join(ben, h1, ana, space)
        assert "looking on the LAN" in res.stderr and "admitted" in res.stderr
        join(cy, h2, ana, space)
        join(dee, h2, ana, space)
        wait_for(lambda: da.connected_to(ben, cy, dee) and db.connected_to(ana, cy, dee),
                 "every device to meet every other on the LAN", WAIT)

        env = generate_env(20_000, seed=5, name="Office API")
        env["hostname"] = "127.0.0.1"
        src = ana.folder / "office.json"
        editor_save(src, env)
        wait_for(lambda: any(e["file"] == str(src) for e in da.call("list")["environments"]),
                 "Ana to list the file", WAIT)
        da.call("share", file=str(src), space=space)
        for dev in (ben, cy, dee):
            wait_for(lambda dev=dev: env_file(dev), f"{dev.name} to receive the environment",
                     WAIT)
        edit(env_file(ben), set_doc(0, "from ben"))
        wait_for(lambda: title(ana) == "from ben", "Ana to get Ben's edit", WAIT)
        edit(src, set_doc(0, "from ana"))
        for dev in (ben, cy, dee):
            wait_for(lambda dev=dev: title(dev) == "from ana", f"{dev.name} to get Ana's edit",
                     WAIT)

        # Dee leaves; Ana removes Cy (the key rotates) and admits Fay while Dee is away.
        dd.proc.terminate()
        dd.proc.wait(timeout=30)
        res = cli(ana, "remove", space, cy.id)
        assert res.returncode == 0, res.stderr
        assert log_state(ana, space).key_generation == 2
        wait_for(lambda: not log_state(ben, space).is_member(cy.id)
                 and get_space(ben.home, space).keys.get(2) is not None,
                 "Ben to learn the removal and the new key from Ana", WAIT)
        join(fay, h1, ana, space)
        wait_for(lambda: log_state(ben, space).is_member(fay.id), "Ben to learn of Fay", WAIT)
        edit(env_file(ben), set_doc(0, "after cy"))
        wait_for(lambda: title(ana) == "after cy", "Ana to get Ben's edit", WAIT)
        time.sleep(1.0)
        assert title(cy) == "from ana", "the removed device got an edit made after its removal"

        # Ana leaves for good; Dee returns and meets Ben (and Cy, who knows nothing new and
        # is refused by Ben): everything she missed comes from a non-admin.
        da.proc.terminate()
        da.proc.wait(timeout=30)
        dd = Daemon(dee, h2)
        wait_for(lambda: not log_state(dee, space).is_member(cy.id)
                 and log_state(dee, space).is_member(fay.id)
                 and get_space(dee.home, space).keys.get(2) is not None,
                 "Dee to learn the removal, the new key and Fay from Ben", WAIT)
        assert set(log_state(dee, space).devices) == set(log_state(ben, space).devices)
        wait_for(lambda: title(dee) == "after cy", "Dee to get Ben's edit", WAIT)
        assert title(cy) == "from ana"
        assert Path(src).exists()
