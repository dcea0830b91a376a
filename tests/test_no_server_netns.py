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

import time
from pathlib import Path

from mocksync.devtools.envgen import generate_env
from mocksync.spaceio.store import get_space

from helpers.devices import Device, make_device
from helpers.files import edit_file, env_file, read_json, set_doc
from helpers.netns import NEEDS_NAMESPACES, Lab, cli_on, host_daemon, join_on, share_new
from helpers.netns import NETNS_WAIT_S as WAIT
from helpers.polling import wait_sync
from helpers.procs import short_tmp

pytestmark = NEEDS_NAMESPACES


def log_state(dev: Device, space: str):  # noqa: ANN201
    return get_space(dev.home, space).state


def title(dev: Device) -> str | None:
    path = env_file(dev.folder)
    doc = read_json(path) if path else None
    return doc["routes"][0]["documentation"] if doc else None


def test_a_team_without_a_server_on_three_hosts() -> None:
    with short_tmp("msns-") as root, Lab(3) as lb:
        h0, h1, h2 = lb.hosts
        ana, ben, cy, dee, fay = (make_device(root, n) for n in ("ana", "ben", "cy", "dee", "fay"))
        space = cli_on(ana, "space", "create", "office", "--json").json()["id"]
        da, db, dd = host_daemon(ana, h0), host_daemon(ben, h1), host_daemon(dee, h2)
        host_daemon(cy, h2)

        # Joining over the LAN only: the token has no relay; join finds Ana by mDNS.
        res = join_on(ben, h1, ana, space)
        assert "looking on the LAN" in res.err and "admitted" in res.err
        join_on(cy, h2, ana, space)
        join_on(dee, h2, ana, space)
        wait_sync(lambda: da.connected_to(ben, cy, dee) and db.connected_to(ana, cy, dee),
                  "every device to meet every other on the LAN", WAIT)

        env = generate_env(20_000, seed=5, name="Office API")
        env["hostname"] = "127.0.0.1"
        src = share_new(da, ana, "office.json", env, space, WAIT)
        for dev in (ben, cy, dee):
            wait_sync(lambda dev=dev: env_file(dev.folder), f"{dev.name} to receive the environment",
                      WAIT)
        edit_file(env_file(ben.folder), set_doc(0, "from ben"))
        wait_sync(lambda: title(ana) == "from ben", "Ana to get Ben's edit", WAIT)
        edit_file(src, set_doc(0, "from ana"))
        for dev in (ben, cy, dee):
            wait_sync(lambda dev=dev: title(dev) == "from ana", f"{dev.name} to get Ana's edit",
                      WAIT)

        # Dee leaves; Ana removes Cy (the key rotates) and admits Fay while Dee is away.
        dd.proc.terminate()
        dd.proc.wait(timeout=30)
        res = cli_on(ana, "remove", space, cy.id)
        assert res.code == 0, res.err
        assert log_state(ana, space).key_generation == 2
        wait_sync(lambda: not log_state(ben, space).is_member(cy.id)
                  and get_space(ben.home, space).keys.get(2) is not None,
                  "Ben to learn the removal and the new key from Ana", WAIT)
        join_on(fay, h1, ana, space)
        wait_sync(lambda: log_state(ben, space).is_member(fay.id), "Ben to learn of Fay", WAIT)
        edit_file(env_file(ben.folder), set_doc(0, "after cy"))
        wait_sync(lambda: title(ana) == "after cy", "Ana to get Ben's edit", WAIT)
        time.sleep(1.0)
        assert title(cy) == "from ana", "the removed device got an edit made after its removal"

        # Ana leaves for good; Dee returns and meets Ben (and Cy, who knows nothing new and
        # is refused by Ben): everything she missed comes from a non-admin.
        da.proc.terminate()
        da.proc.wait(timeout=30)
        dd = host_daemon(dee, h2)
        wait_sync(lambda: not log_state(dee, space).is_member(cy.id)
                  and log_state(dee, space).is_member(fay.id)
                  and get_space(dee.home, space).keys.get(2) is not None,
                  "Dee to learn the removal, the new key and Fay from Ben", WAIT)
        assert set(log_state(dee, space).devices) == set(log_state(ben, space).devices)
        wait_sync(lambda: title(dee) == "after cy", "Dee to get Ben's edit", WAIT)
        assert title(cy) == "from ana"
        assert Path(src).exists()
