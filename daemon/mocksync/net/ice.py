"""The one adapter between our "sync only over these addresses" setting and aioice.

Why this exists (measured, docs/design/testing.md): aiortc has no setting to choose
interfaces, aioice offers every non-loopback address it finds and never 127.0.0.1 or ::1, and
`RTCPeerConnection()` with the default configuration asks a public STUN server. A daemon told
`--bind 198.18.0.11` (or `127.0.0.1`) must offer exactly those addresses and talk to no one
else. aioice looks `aioice.ice.get_host_addresses` up at call time, so replacing that one
module-level function is enough. The replacement reads the addresses from a `ContextVar`, set
only around our own offer/answer work (`restrict`), so two transports in one process with
different bind addresses never see each other's, and code outside `restrict` gets aioice's
own behaviour unchanged.

The other direction matters as much: candidates a peer puts in its SDP are untrusted. We drop
any that is not an IP literal (an mDNS `.local` name would make aioice multicast on every
interface) or that lies outside the networks of our bind addresses (`filter_remote_sdp`).

Also here: the ICE server list (empty by default: never a public STUN server) and a byte
counter on the ICE transport, so `status` and the benchmarks can report bytes on the wire.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError

#: Most ICE servers a configuration may list.
MAX_ICE_SERVERS = 8
#: Most candidate lines we accept from one remote SDP (a LAN peer has a handful).
MAX_REMOTE_CANDIDATES = 32

_BIND: ContextVar[tuple[str, ...] | None] = ContextVar("mocksync_ice_bind", default=None)
_installed = False
_original: Any = None

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Drop-in for `aioice.ice.get_host_addresses` honouring `restrict`."""
    bind = _BIND.get()
    if bind is None:
        return list(_original(use_ipv4, use_ipv6))
    out = []
    for addr in bind:
        version = ipaddress.ip_address(addr).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            out.append(addr)
    return out


def install() -> None:
    """Replace `aioice.ice.get_host_addresses` once per process (idempotent)."""
    global _installed, _original
    if _installed:
        return
    import aioice.ice

    _original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = _host_addresses
    _installed = True


@contextlib.contextmanager
def restrict(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block (and tasks it starts), aioice offers only `addresses`.

    An empty sequence means "all interfaces": aioice's own choice.
    """
    install()
    token = _BIND.set(tuple(addresses) if addresses else None)
    try:
        yield
    finally:
        _BIND.reset(token)


def check_bind(addresses: Iterable[str]) -> tuple[str, ...]:
    """Bind addresses as given by the user, checked: IP literals, no wildcard, no duplicates."""
    out: list[str] = []
    for a in addresses:
        try:
            ip = ipaddress.ip_address(a.strip())
        except ValueError:
            raise ValidationError(
                f"bind address {a!r} is not an IP address; give one like 192.168.1.20 or "
                "127.0.0.1 (or leave --bind out to use all interfaces)"
            ) from None
        if ip.is_unspecified or ip.is_multicast:
            raise ValidationError(
                f"bind address {a} cannot be used: give the address of one interface "
                "(or leave --bind out to use all interfaces)"
            )
        if str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def bind_networks(addresses: Sequence[str]) -> list[Network]:
    """The networks peers must be on when we are bound to `addresses`.

    Loopback addresses allow their loopback range; others the prefix of the interface that
    holds them (from the OS), or only the address's own /24 (/64) if no interface holds it.
    """
    import ifaddr

    prefixes: dict[str, int] = {}
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            text = entry.ip if isinstance(entry.ip, str) else entry.ip[0]
            prefixes[text] = entry.network_prefix
    nets: list[Network] = []
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if ip.is_loopback:
            nets.append(ipaddress.ip_network("127.0.0.0/8" if ip.version == 4 else "::1/128"))
            continue
        prefix = prefixes.get(a, 24 if ip.version == 4 else 64)
        nets.append(ipaddress.ip_network(f"{a}/{prefix}", strict=False))
    return nets


def filter_remote_sdp(sdp: str, networks: Sequence[Network] | None) -> tuple[str, int]:
    """`sdp` without the candidates we must not contact; returns (sdp, candidates kept).

    Kept: UDP host candidates whose address is an IP literal inside `networks` (any IP
    literal when `networks` is None, i.e. bound to all interfaces).
    """
    lines = sdp.splitlines()
    out: list[str] = []
    kept = 0
    seen = 0
    for line in lines:
        if line.startswith("a=candidate:"):
            seen += 1
            if seen > MAX_REMOTE_CANDIDATES:
                continue
            if _candidate_allowed(line, networks):
                kept += 1
                out.append(line)
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n", kept


def _candidate_allowed(line: str, networks: Sequence[Network] | None) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>
    parts = line[len("a=candidate:"):].split()
    if len(parts) < 8 or parts[6] != "typ":
        return False
    transport, address, port, kind = parts[2].lower(), parts[4], parts[5], parts[7]
    if transport != "udp" or kind != "host":
        return False
    if not port.isdigit() or not 0 < int(port) < 65536:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a hostname (mDNS .local): resolving it would multicast
    if ip.is_multicast or ip.is_unspecified:
        return False
    if networks is None:
        return True
    return any(ip.version == n.version and ip in n for n in networks)


def check_ice_servers(ice_servers: Iterable[str]) -> tuple[str, ...]:
    """The configured ICE server URLs, checked (setting `ice_servers`)."""
    servers = tuple(ice_servers)
    if len(servers) > MAX_ICE_SERVERS:
        raise ValidationError(f"at most {MAX_ICE_SERVERS} ICE servers may be configured")
    for s in servers:
        if not isinstance(s, str) or not s.startswith(("stun:", "turn:", "turns:")):
            raise ValidationError(
                f"ICE server {s!r} must start with stun:, turn: or turns:"
            )
    return servers


def rtc_configuration(ice_servers: Sequence[str]) -> Any:
    """`RTCConfiguration` listing exactly the configured ICE servers (none by default).

    Never the library default: that asks a public STUN server and waits 5 s without network.
    """
    from aiortc import RTCConfiguration, RTCIceServer

    servers = check_ice_servers(ice_servers)
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s) for s in servers])


@dataclass
class WireCounter:
    """Bytes of UDP payload (DTLS records) sent and received on one ICE transport."""

    bytes_out: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    datagrams_in: int = 0


def count_wire(ice_transport: Any) -> WireCounter:
    """Wrap an `RTCIceTransport`'s send/receive (instance attributes that the DTLS transport
    calls at run time) to count the bytes that cross the network."""
    counter = WireCounter()
    send, recv = ice_transport._send, ice_transport._recv

    async def counted_send(data: bytes) -> None:
        counter.bytes_out += len(data)
        counter.datagrams_out += 1
        await send(data)

    async def counted_recv() -> bytes:
        data = await recv()
        counter.bytes_in += len(data)
        counter.datagrams_in += 1
        return data

    ice_transport._send = counted_send
    ice_transport._recv = counted_recv
    return counter
