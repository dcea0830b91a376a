"""LAN sync between real hosts: network namespaces on a bridge (docs/design/testing.md "Network namespaces" layout), each host
running `mocksync daemon --bind 198.18.0.x` as a subprocess, mDNS multicast crossing the
bridge, WebRTC over the 198.18.0.x candidates, and `ip link set eth0 down` as a real partition.

Needs root and iproute2 (CI runs as root); elsewhere every test here is skipped with the reason.
The lab lives in its own namespaces with no route out; it is torn down whatever happens.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mocksync.devtools.envgen import generate_env
from mocksync.devtools.pairing import pair

from helpers.devices import Device, make_device, share_log, team_space
from helpers.files import edit_file, env_file, read_json, set_doc
from helpers.netns import NEEDS_NAMESPACES, Lab, host_daemon, share_new
from helpers.netns import NETNS_WAIT_S as WAIT
from helpers.polling import wait_sync
from helpers.procs import short_tmp

pytestmark = NEEDS_NAMESPACES


def converged(*devs: Device) -> dict[str, Any] | None:
    docs = [read_json(p) if (p := env_file(d.folder)) else None for d in devs]
    if docs[0] is not None and all(doc == docs[0] for doc in docs):
        return docs[0]
    return None


def test_three_hosts_sync_late_join_partition_and_a_stranger() -> None:
    with short_tmp("msns-") as root, Lab(4) as lb:
        ha, hb, hc, hs = lb.hosts
        a, b, c = make_device(root, "a"), make_device(root, "b"), make_device(root, "c")
        stranger = make_device(root, "s")
        space = team_space(a, b, share_logs=True)
        da, db, ds = host_daemon(a, ha), host_daemon(b, hb), host_daemon(stranger, hs)

        # Two hosts find each other by mDNS and sync over WebRTC.
        wait_sync(lambda: da.connected_to(b) and db.connected_to(a), "A and B to connect", WAIT)
        env = generate_env(60_000, seed=11, name="Lab API")
        env["hostname"] = "127.0.0.1"
        share_new(da, a, "lab.json", env, space, WAIT)
        wait_sync(lambda: converged(a, b), "B to receive the environment", WAIT)
        assert da.peers()[b.id]["address"] == hb.address

        # A third device joins the space late and catches up from a peer.
        assert pair(a.home, c.home, space) == space
        share_log(a, b, space)  # B hears of C (as log gossip would tell it)
        dc = host_daemon(c, hc)
        wait_sync(lambda: converged(a, b, c), "C to catch up", WAIT)
        wait_sync(lambda: dc.connected_to(a, b), "C to connect to A and B", WAIT)

        # A's link goes down in the middle of a stream of edits; everyone keeps editing.
        fa, fb, fc = env_file(a.folder), env_file(b.folder), env_file(c.folder)
        for i in range(5):
            edit_file(fa, set_doc(0, f"A stream {i}"))
            time.sleep(0.1)
        ha.link(up=False)
        for i in range(5, 10):
            edit_file(fa, set_doc(0, f"A stream {i}"))
            time.sleep(0.1)
        edit_file(fb, set_doc(1, "B while A is cut off"))
        time.sleep(0.4)
        edit_file(fc, set_doc(2, "C while A is cut off"))
        time.sleep(0.4)
        edit_file(fa, set_doc(3, "A's take"))  # the same field on both sides of the partition
        time.sleep(0.4)
        edit_file(fb, set_doc(3, "B's take"))
        wait_sync(lambda: read_json(fc)["routes"][1]["documentation"] == "B while A is cut off",
                  "B's edit to reach C during the partition", WAIT)
        # Past the 10 s heartbeat limit the sessions with A are declared dead, on both sides
        # (polled rather than slept: the cut began a few seconds ago).
        wait_sync(lambda: not da.connected_to(b) and not db.connected_to(a),
                  "the sessions across the cut to be declared dead", WAIT)
        assert read_json(fb)["routes"][0]["documentation"] != "A stream 9"
        ha.link(up=True)

        final = wait_sync(lambda: converged(a, b, c), "all three devices to converge", WAIT)
        docs = [r["documentation"] for r in final["routes"][:4]]
        assert docs[0] == "A stream 9"
        assert docs[1] == "B while A is cut off"
        assert docs[2] == "C while A is cut off"
        assert docs[3] in ("A's take", "B's take")  # one register, one winner everywhere
        wait_sync(lambda: da.connected_to(b, c), "A to reconnect", WAIT)
        # The losing write of the concurrent pair is kept as a conflict, not dropped.
        conflicts = da.call("conflicts")["conflicts"]
        assert any(c_["field"][-1] == "documentation" for c_ in conflicts)

        # The stranger on the same LAN got nothing and is nobody's peer.
        assert list(stranger.folder.glob("*.json")) == []
        assert ds.peers() == {}
        for d in (da, db, dc):
            assert stranger.id not in d.peers()


@pytest.mark.long
def test_link_flaps_during_a_stream_of_edits_on_both_sides() -> None:
    """Extended: a 2 MB environment, edits streaming from two hosts while one host's link
    drops briefly (the session survives) and then for longer than the heartbeat limit (the
    session dies and is re-established); every device converges, no edit lost."""
    with short_tmp("msns-") as root, Lab(3) as lb:
        ha, hb, hc = lb.hosts
        a, b, c = make_device(root, "a"), make_device(root, "b"), make_device(root, "c")
        space = team_space(a, b, c, share_logs=True)
        from mocksync.agent.spacedir import SpaceDirectory

        for d in (a, b, c):
            SpaceDirectory(d.home).set_plan(space, "team")
        da, db, dc = host_daemon(a, ha), host_daemon(b, hb), host_daemon(c, hc)
        wait_sync(lambda: da.connected_to(b, c) and db.connected_to(c) and dc.connected_to(a),
                  "the mesh", WAIT)
        env = generate_env(2_000_000, seed=12, name="Big Lab API")
        share_new(da, a, "big.json", env, space, WAIT)
        wait_sync(lambda: converged(a, b, c), "the big env everywhere", 120)
        fa, fb = env_file(a.folder), env_file(b.folder)
        plan = [(3.0, "up"), (3.0, "down"), (5.0, "up"), (14.0, "down"), (3.0, "up")]
        last_a = last_b = None
        n = 0
        for seconds, state in plan:
            hb.link(up=state == "up")
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                last_a = f"A {n}"
                edit_file(fa, set_doc(0, last_a))
                last_b = f"B {n}"
                edit_file(fb, set_doc(1, last_b))
                n += 1
                time.sleep(0.25)
        hb.link(up=True)
        final = wait_sync(lambda: converged(a, b, c), "all devices to converge", 90)
        assert final["routes"][0]["documentation"] == last_a
        assert final["routes"][1]["documentation"] == last_b
        wait_sync(lambda: da.connected_to(b, c) and db.connected_to(a, c), "the mesh again", WAIT)
