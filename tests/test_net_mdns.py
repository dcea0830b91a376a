"""What a device says on mDNS (docs/design/security.md §5) and how strictly a peer's record is read."""

from __future__ import annotations

import ipaddress

import pytest

from mocksync import PROTOCOL_VERSION
from mocksync.errors import LimitError
from mocksync.net.errors import AnnouncementError
from mocksync.net.mdns import MAX_ADVERTISED_SPACES, Announcement, recognise, usable_addresses
from mocksync.space.identity import Identity
from mocksync.space.keys import new_content_key

DEV = Identity.from_seeds("laptop", b"\x01" * 32, b"\x02" * 32).device_id
K1, K2, K_OLD, K_OTHER = (new_content_key() for _ in range(4))


def test_announcement_round_trips_and_names_nothing() -> None:
    ann = Announcement.make(DEV, 4242, [K1, K2])
    props = ann.properties()
    assert set(props) == {"id", "v", "n", "t0"}
    assert props["id"] == DEV and props["v"] == str(PROTOCOL_VERSION)
    wire = {k.encode(): v.encode() for k, v in props.items()}
    assert Announcement.parse(wire, 4242) == ann


def test_only_key_holders_recognise_a_space() -> None:
    ann = Announcement.make(DEV, 1, [K1, K2])
    mine = {"s1": [K_OLD, K1], "s2": [K2], "s3": [K_OTHER]}
    assert recognise(ann, mine) == {"s1", "s2"}
    assert recognise(ann, {"s3": [K_OTHER]}) == set()


def test_tags_change_with_every_announcement() -> None:
    """A fresh nonce per announcement: an observer cannot link a space across restarts."""
    a, b = Announcement.make(DEV, 1, [K1]), Announcement.make(DEV, 1, [K1])
    assert a.nonce != b.nonce and set(a.tags).isdisjoint(b.tags)
    assert recognise(a, {"s": [K1]}) == recognise(b, {"s": [K1]}) == {"s"}


def test_many_spaces_span_several_txt_strings_up_to_the_limit() -> None:
    keys = [new_content_key() for _ in range(MAX_ADVERTISED_SPACES)]
    ann = Announcement.make(DEV, 1, keys)
    props = ann.properties()
    assert all(len(k) + len(v) + 1 <= 255 for k, v in props.items())
    assert Announcement.parse(props, 1) == ann
    with pytest.raises(LimitError, match="only"):
        Announcement.make(DEV, 1, keys + [K1])


@pytest.mark.parametrize("props,port", [
    ({"v": "1", "n": "00" * 16}, 1),  # no id
    ({"id": "not-an-id", "v": "1", "n": "00" * 16}, 1),
    ({"id": DEV, "v": "x", "n": "00" * 16}, 1),
    ({"id": DEV, "v": "1", "n": "zz"}, 1),
    ({"id": DEV, "v": "1", "n": "00" * 16, "t0": "nothex"}, 1),
    ({"id": DEV, "v": "1", "n": "00" * 16, "name": "Secret"}, 1),  # unknown key
    ({"id": DEV, "v": "1", "n": "00" * 16}, None),
    ({"id": DEV, "v": "1", "n": "00" * 16}, 70000),
    ({b"id": b"\xff\xfe", "v": "1", "n": "00" * 16}, 1),
])
def test_malformed_records_are_ignored(props: dict, port: int | None) -> None:
    with pytest.raises(AnnouncementError):
        Announcement.parse(props, port)


def test_peer_addresses_outside_our_networks_are_dropped() -> None:
    lab = [ipaddress.ip_network("198.18.0.0/24")]
    got = usable_addresses(["198.18.0.12", "10.0.0.5", "fe80::1", "224.0.0.1", "junk",
                            "198.18.0.12"], lab)
    assert got == ("198.18.0.12",)
    assert usable_addresses(["10.0.0.5", "fe80::1"], None) == ("10.0.0.5",)
