"""Finding peers on the LAN with mDNS/DNS-SD (`_mocksync._tcp.local.`).

What a device announces is public to everyone on the LAN, so it carries nothing that names a
space, a member or a file (docs/design/security.md §5): only its device id, its signaling port, the sync
protocol version, a random nonce, and per space a short keyed hash of that nonce
(`space.keys.space_tag`) that only holders of the space key can recognise. A stranger learns
that a mocksync device exists and how many spaces it announces, nothing more. The nonce is
fresh each time the announcement is (re)made, so tags of one space cannot be linked across
restarts of the daemon. An admin device with unused invites also announces per invite a join
tag (`lan_join.join_tag`: a keyed hash of the nonce under a key derived from the invite's
secret), so only the holder of that token recognises the inviter; strangers learn nothing of
the space.

mDNS is only a hint: a peer that died without a goodbye stays "discovered" for up to ~19 min
(PTR TTL), so liveness comes from the sync session's heartbeat, and every connection is
authenticated by signed signaling against the verified membership log, never by what mDNS
said. Sockets follow the daemon's `--bind` addresses (`AsyncZeroconf(interfaces=[...])`), so
nothing is sent on other interfaces; addresses a peer announces outside our networks are
ignored.

The pure part (`Announcement`, `recognise`) builds and parses TXT records; `MdnsService` is
the thin asyncio adapter over zeroconf.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import PROTOCOL_VERSION
from ..errors import LimitError
from ..space.identity import is_device_id
from ..space.keys import SPACE_TAG_BYTES, space_tag, tag_matches
from .errors import AnnouncementError

log = logging.getLogger("mocksync.mdns")

SERVICE_TYPE = "_mocksync._tcp.local."
#: Most spaces announced (tags beyond this are not announced; members still meet via the relay).
MAX_ADVERTISED_SPACES = 48
#: Tags per TXT string (each string is limited to 255 bytes by DNS).
TAGS_PER_KEY = 14
#: Announcement nonce length.
NONCE_BYTES = 16
#: Largest TXT record we parse from a peer.
MAX_TXT_BYTES = 2048
#: Most addresses of one peer we keep.
MAX_PEER_ADDRESSES = 8
#: How long we wait for a peer's records when resolving it, in ms.
RESOLVE_TIMEOUT_MS = 3000
#: Highest protocol version number a TXT record may carry.
MAX_VERSION = 0xFFFF
#: Most invites one device announces join tags for (the newest; one TXT string holds them).
MAX_ADVERTISED_INVITES = 14

_TAG_RE = re.compile(rf"^[0-9a-f]{{{2 * SPACE_TAG_BYTES}}}$")
_NONCE_RE = re.compile(rf"^[0-9a-f]{{{2 * NONCE_BYTES}}}$")


@dataclass(frozen=True)
class Announcement:
    """What one device says about itself on mDNS."""

    device: str
    port: int
    protocol: int
    nonce: bytes
    tags: tuple[str, ...]
    #: Join tags of this device's unused invites (`lan_join.join_tag`).
    joins: tuple[str, ...] = ()

    @classmethod
    def make(cls, device: str, port: int, secrets: Iterable[bytes],
             nonce: bytes | None = None, protocol: int = PROTOCOL_VERSION,
             invites: Iterable[bytes] = ()) -> Announcement:
        """An announcement tagging each space whose current key is in `secrets`, and each
        invite whose secret is in `invites` (at most MAX_ADVERTISED_INVITES: give the newest)."""
        from .lan_join import join_tag

        invites = list(invites)
        if len(invites) > MAX_ADVERTISED_INVITES:
            raise LimitError(
                f"{len(invites)} invites to announce; only {MAX_ADVERTISED_INVITES} can be "
                "announced on the LAN at once"
            )
        secrets = list(secrets)
        if len(secrets) > MAX_ADVERTISED_SPACES:
            raise LimitError(
                f"this device belongs to {len(secrets)} spaces; only {MAX_ADVERTISED_SPACES} "
                "can be announced on the LAN"
            )
        nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        tags = tuple(sorted(space_tag(s, nonce) for s in secrets))
        joins = tuple(sorted(join_tag(s, nonce) for s in invites))
        return cls(device, port, protocol, nonce, tags, joins)

    def properties(self) -> dict[str, str]:
        props = {"id": self.device, "v": str(self.protocol), "n": self.nonce.hex()}
        for i in range(0, len(self.tags), TAGS_PER_KEY):
            props[f"t{i // TAGS_PER_KEY}"] = ",".join(self.tags[i : i + TAGS_PER_KEY])
        if self.joins:
            props["j"] = ",".join(self.joins)
        return props

    @classmethod
    def parse(cls, props: Mapping[Any, Any], port: int | None) -> Announcement:
        """Strictly parse a peer's TXT properties (bytes or str keys and values)."""
        def text(v: Any) -> str:
            if isinstance(v, bytes):
                try:
                    return v.decode("ascii")
                except UnicodeDecodeError:
                    raise AnnouncementError("non-ASCII value") from None
            if isinstance(v, str):
                return v
            raise AnnouncementError("missing value")

        d = {text(k): text(v) for k, v in props.items()}
        if sum(len(k) + len(v) for k, v in d.items()) > MAX_TXT_BYTES:
            raise AnnouncementError("TXT record too large")
        device = d.pop("id", "")
        if not is_device_id(device):
            raise AnnouncementError("no valid device id")
        v = d.pop("v", "")
        if not v.isdigit() or int(v) > MAX_VERSION:
            raise AnnouncementError("no valid protocol version")
        n = d.pop("n", "")
        if not _NONCE_RE.match(n):
            raise AnnouncementError("no valid nonce")
        tags: list[str] = []
        for i in range(len(d)):
            chunk = d.pop(f"t{i}", None)
            if chunk is None:
                break
            for t in chunk.split(","):
                if not _TAG_RE.match(t):
                    raise AnnouncementError("malformed space tag")
                tags.append(t)
        joins: list[str] = []
        j = d.pop("j", None)
        if j is not None:
            for t in j.split(","):
                if not _TAG_RE.match(t):
                    raise AnnouncementError("malformed join tag")
                joins.append(t)
        if d:
            raise AnnouncementError(f"unexpected keys {sorted(d)[:5]}")
        if len(tags) > MAX_ADVERTISED_SPACES:
            raise AnnouncementError("too many space tags")
        if len(joins) > MAX_ADVERTISED_INVITES:
            raise AnnouncementError("too many join tags")
        if port is None or not 0 < port < 65536:
            raise AnnouncementError("no valid port")
        return cls(device, port, int(v), bytes.fromhex(n), tuple(tags), tuple(joins))


def recognise(ann: Announcement, spaces: Mapping[str, Iterable[bytes]]) -> set[str]:
    """Ids of our spaces (`space id -> every key generation we hold`) that `ann` tags."""
    hits: set[str] = set()
    for space_id, keys in spaces.items():
        keys = list(keys)
        if any(tag_matches(k, ann.nonce, t) for t in ann.tags for k in keys):
            hits.add(space_id)
    return hits


@dataclass(frozen=True)
class Discovered:
    """A peer seen on mDNS: its announcement and the addresses we may reach it at."""

    announcement: Announcement
    addresses: tuple[str, ...]

    @property
    def device(self) -> str:
        return self.announcement.device


def usable_addresses(addresses: Iterable[str],
                     networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] | None
                     ) -> tuple[str, ...]:
    """Addresses inside our networks (any unicast address when bound to all)."""
    out: list[str] = []
    for a in addresses:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if ip.is_multicast or ip.is_unspecified or ip.is_link_local:
            continue
        if networks is not None and not any(ip.version == n.version and ip in n
                                            for n in networks):
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return tuple(out[:MAX_PEER_ADDRESSES])


def local_addresses(bind: Sequence[str]) -> list[str]:
    """Addresses to announce: the bind addresses, or every non-loopback IPv4 address."""
    if bind:
        return list(bind)
    import ifaddr

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                out.append(ip.ip)
    return out


class MdnsService:
    """Announce this device and report peers (thin adapter over zeroconf's asyncio API)."""

    def __init__(
        self,
        bind: Sequence[str],
        networks: Sequence[Any] | None,
        *,
        on_peer: Callable[[Discovered], None],
        on_gone: Callable[[str], None],
    ) -> None:
        self.bind = tuple(bind)
        self.networks = networks
        self.on_peer = on_peer
        self.on_gone = on_gone
        self.azc: Any = None
        self.browser: Any = None
        self.info: Any = None
        self.me: str | None = None
        self._names: dict[str, str] = {}  # service name -> device
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def _info(self, ann: Announcement) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{ann.device}.{SERVICE_TYPE}",
            port=ann.port,
            properties=ann.properties(),
            server=f"{ann.device}.local.",
            parsed_addresses=local_addresses(self.bind),
        )

    async def start(self, ann: Announcement | None) -> None:
        """Announce `ann` and browse; with None only browse (`mocksync join` looking for its
        inviter announces nothing)."""
        from zeroconf import InterfaceChoice, IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self.me = ann.device if ann is not None else None
        if self.bind:
            v6 = any(ipaddress.ip_address(a).version == 6 for a in self.bind)
            v4 = any(ipaddress.ip_address(a).version == 4 for a in self.bind)
            version = (IPVersion.All if v4 and v6 else
                       IPVersion.V6Only if v6 else IPVersion.V4Only)
            self.azc = AsyncZeroconf(interfaces=list(self.bind), ip_version=version)
        else:
            self.azc = AsyncZeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
        if ann is not None:
            self.info = self._info(ann)
            # The instance name embeds the device id (unique per key, one daemon per home by
            # the lock), so probing for a name conflict is skipped: announced in ms, not 1.5 s.
            await self.azc.async_register_service(self.info, cooperating_responders=True)
        self.browser = AsyncServiceBrowser(self.azc.zeroconf, [SERVICE_TYPE],
                                           handlers=[self._on_change])

    async def update(self, ann: Announcement) -> None:
        if self.azc is None or self._closing:
            return
        self.info = self._info(ann)
        await self.azc.async_update_service(self.info)

    async def stop(self) -> None:
        """Say goodbye (so peers forget us at once), then close the sockets."""
        self._closing = True
        for t in list(self._tasks):
            t.cancel()
        if self.azc is None:
            return
        with contextlib.suppress(Exception):
            if self.browser is not None:
                await self.browser.async_cancel()
        with contextlib.suppress(Exception):
            if self.info is not None:
                await (await self.azc.async_unregister_service(self.info))
        with contextlib.suppress(Exception):
            await self.azc.async_close()
        self.azc = None

    def refresh(self, device: str) -> None:
        """Ask the network again about a known peer (e.g. after a failed connection)."""
        for name, dev in list(self._names.items()):
            if dev == device:
                self._spawn(self._resolve(name))

    def _spawn(self, coro: Any) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            device = self._names.pop(name, None)
            if device is not None and device != self.me:
                self.on_gone(device)
            return
        self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        if self.azc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            if not await info.async_request(self.azc.zeroconf, RESOLVE_TIMEOUT_MS):
                return
            ann = Announcement.parse(info.properties or {}, info.port)
        except AnnouncementError as exc:
            log.debug("ignoring mDNS service %s: %s", name, exc)
            return
        except Exception as exc:  # zeroconf raises its own errors on closing
            log.debug("resolving %s failed: %s", name, exc)
            return
        if ann.device == self.me:
            return
        if not name.startswith(f"{ann.device}."):
            log.debug("ignoring mDNS service %s: its name does not match its id", name)
            return
        addresses = usable_addresses(info.parsed_addresses(), self.networks)
        if not addresses:
            return
        self._names[name] = ann.device
        self.on_peer(Discovered(ann, addresses))
