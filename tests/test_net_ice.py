"""The ICE adapter: only the bind addresses are offered, untrusted remote candidates are
filtered, and no STUN server is ever configured by default."""

from __future__ import annotations

import asyncio
import ipaddress

import aioice.ice
import pytest

from mocksync.errors import ValidationError
from mocksync.net import ice

SDP = "\r\n".join([
    "v=0",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
    "a=candidate:2 1 udp 2130706431 198.18.0.12 40001 typ host",
    "a=candidate:3 1 udp 2130706431 10.1.2.3 40002 typ host",
    "a=candidate:4 1 udp 2130706431 3f1e.local 40003 typ host",
    "a=candidate:5 1 udp 1694498815 198.18.0.13 40004 typ srflx raddr 0.0.0.0 rport 0",
    "a=candidate:6 1 tcp 2130706431 198.18.0.14 40005 typ host",
    "a=candidate:7 1 udp 2130706431 224.0.0.251 5353 typ host",
    "a=candidate:8 1 udp 2130706431 198.18.0.15 0 typ host",
    "a=fingerprint:sha-256 AB:CD",
    "",
])


def kept(sdp: str) -> list[str]:
    return [ln.split()[4] for ln in sdp.splitlines() if ln.startswith("a=candidate:")]


def test_remote_candidates_are_limited_to_our_networks() -> None:
    lab = [ipaddress.ip_network("198.18.0.0/24")]
    out, n = ice.filter_remote_sdp(SDP, lab)
    assert kept(out) == ["198.18.0.12"] and n == 1
    assert "a=fingerprint:sha-256 AB:CD" in out  # everything else is left alone
    out, n = ice.filter_remote_sdp(SDP, ice.bind_networks(["127.0.0.1"]))
    assert kept(out) == ["127.0.0.1"]
    # Bound to all interfaces: any unicast IP literal, still never an mDNS name (resolving
    # it would multicast on every interface), a relay/srflx, TCP or multicast candidate.
    out, n = ice.filter_remote_sdp(SDP, None)
    assert kept(out) == ["127.0.0.1", "198.18.0.12", "10.1.2.3"]


def test_too_many_remote_candidates_are_cut() -> None:
    lines = [f"a=candidate:{i} 1 udp 1 127.0.0.{i % 250 + 1} {1000 + i} typ host"
             for i in range(100)]
    out, n = ice.filter_remote_sdp("\r\n".join(lines), None)
    assert n == ice.MAX_REMOTE_CANDIDATES


async def test_restrict_sets_host_addresses_for_this_context_only() -> None:
    ice.install()
    assert aioice.ice.get_host_addresses is ice._host_addresses
    default = aioice.ice.get_host_addresses(True, False)
    assert "127.0.0.1" not in default  # aioice's own rule outside `restrict`
    seen: dict[str, list[str]] = {}

    async def gather(tag: str, bind: list[str]) -> None:
        with ice.restrict(bind):
            await asyncio.sleep(0)
            seen[tag] = aioice.ice.get_host_addresses(True, True)
            seen[tag + "-v4"] = aioice.ice.get_host_addresses(True, False)

    await asyncio.gather(gather("a", ["127.0.0.1"]), gather("b", ["127.0.0.2", "::1"]))
    assert seen == {"a": ["127.0.0.1"], "a-v4": ["127.0.0.1"],
                    "b": ["127.0.0.2", "::1"], "b-v4": ["127.0.0.2"]}
    assert aioice.ice.get_host_addresses(True, False) == default


def test_bind_addresses_are_checked() -> None:
    assert ice.check_bind([" 127.0.0.1", "127.0.0.1", "::1"]) == ("127.0.0.1", "::1")
    for bad, match in (("eth0", "not an IP address"), ("0.0.0.0", "one interface"),
                       ("224.0.0.251", "one interface")):
        with pytest.raises(ValidationError, match=match):
            ice.check_bind([bad])


def test_no_stun_server_unless_configured() -> None:
    assert ice.rtc_configuration([]).iceServers == []
    conf = ice.rtc_configuration(["stun:198.18.0.1:3478"])
    assert [s.urls for s in conf.iceServers] == ["stun:198.18.0.1:3478"]
    with pytest.raises(ValidationError, match="must start with"):
        ice.rtc_configuration(["http://example.invalid"])
