"""Signed LAN signaling (docs/design/security.md §4 and §8): what a signed offer/answer proves, and every
way a bad one is refused with a sentence and no side effect."""

from __future__ import annotations

import hashlib

import pytest

from mocksync import PROTOCOL_VERSION
from mocksync.changes import canonical
from mocksync.net import handshake as hs
from mocksync.space.identity import Identity

NOW = 1_800_000_000_000
SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
    "a=fingerprint:sha-512 " + ":".join(["CD"] * 64) + "\r\n"
)


def ident(n: int) -> Identity:
    return Identity.from_seeds(f"dev{n}", bytes([n]) * 32, bytes([n + 100]) * 32)


ALICE, BOB, EVE = ident(1), ident(2), ident(3)
KEYS = {ALICE.device_id: ALICE.sign_public, BOB.device_id: BOB.sign_public}


def offer(sender: Identity = ALICE, recipient: Identity = BOB, sdp: str = SDP,
          now: int = NOW, **kw) -> bytes:
    return hs.build(sender.sign, kind=hs.OFFER, sender=sender.device_id,
                    recipient=recipient.device_id, sdp=sdp, now_ms=now, **kw)


def verify_offer(wire: bytes, *, me: Identity = BOB, now: int = NOW, **kw) -> hs.Signal:
    return hs.verify(wire, me=me.device_id, key_of=KEYS.get, now_ms=now,
                     expect_kind=hs.OFFER, **kw)


def resign(wire: bytes, signer: Identity, **changes) -> bytes:
    body_bytes, _ = canonical.decode(wire)
    body = canonical.decode(body_bytes)
    body.update(changes)
    nb = canonical.encode(body)
    return canonical.encode([nb, signer.sign(hs.SIGNING_CONTEXT + nb)])


def test_offer_and_answer_round_trip_bound_to_each_other() -> None:
    wire = offer()
    sig = verify_offer(wire)
    assert (sig.sender, sig.recipient, sig.sdp) == (ALICE.device_id, BOB.device_id, SDP)
    assert sig.fingerprints == hs.sdp_fingerprints(SDP) and len(sig.fingerprints) == 2
    answer = hs.build(BOB.sign, kind=hs.ANSWER, sender=BOB.device_id,
                      recipient=ALICE.device_id, sdp=SDP, now_ms=NOW, answers=sig.hash)
    got = hs.verify(answer, me=ALICE.device_id, key_of=KEYS.get, now_ms=NOW,
                    expect_kind=hs.ANSWER, expect_sender=BOB.device_id,
                    answers=hashlib.sha256(wire).digest())
    assert got.kind == hs.ANSWER and got.answers == sig.hash
    # The same answer does not answer another offer (no replay across handshakes).
    with pytest.raises(hs.SignalError, match="does not answer the offer"):
        hs.verify(answer, me=ALICE.device_id, key_of=KEYS.get, now_ms=NOW,
                  expect_kind=hs.ANSWER, answers=hashlib.sha256(offer()).digest())


def test_a_swapped_fingerprint_is_caught() -> None:
    """A relay or LAN neighbour that edits the SDP to put its own DTLS key in is refused."""
    wire = offer()
    forged_sdp = SDP.replace(":".join(["AB"] * 32), ":".join(["EE"] * 32))
    # Re-signing is impossible without Alice's key; keep her signature over the old body.
    body_bytes, sig = canonical.decode(wire)
    body = canonical.decode(body_bytes)
    body["sdp"] = forged_sdp
    tampered = canonical.encode([canonical.encode(body), sig])
    with pytest.raises(hs.SignalError, match="signature does not verify"):
        verify_offer(tampered)
    # Even a signer who lists fingerprints that are not the SDP's is refused.
    mismatched = resign(wire, ALICE, sdp=forged_sdp)
    with pytest.raises(hs.SignalError, match="not the signed one"):
        verify_offer(mismatched)


@pytest.mark.parametrize("case,match", [
    ("stranger", "not a member"),
    ("wrong_recipient", "addressed to device"),
    ("stale", "away from this device's clock"),
    ("future", "away from this device's clock"),
    ("bad_signature", "signature does not verify"),
    ("wrong_kind", "expected an offer"),
    ("from_self", "from this device itself"),
    ("protocol", "incompatible version"),
    ("extra_key", "not the expected"),
    ("no_fingerprint", "no DTLS fingerprint"),
    ("sha1_only", "no SHA-2"),
])
def test_bad_offers_are_refused_with_a_reason(case: str, match: str) -> None:
    wire = {
        "stranger": lambda: offer(sender=EVE),
        "wrong_recipient": lambda: offer(recipient=EVE),
        "stale": lambda: offer(now=NOW - hs.MAX_CLOCK_SKEW_MS - 1),
        "future": lambda: offer(now=NOW + hs.MAX_CLOCK_SKEW_MS + 1),
        "bad_signature": lambda: resign(offer(), EVE),
        "wrong_kind": lambda: resign(offer(), ALICE, k="answer", re=b"x" * 32),
        "from_self": lambda: offer(sender=BOB, recipient=BOB),
        "protocol": lambda: offer(protocol=PROTOCOL_VERSION + 1),
        "extra_key": lambda: resign(offer(), ALICE, zz=1),
        "no_fingerprint": lambda: resign(offer(), ALICE, sdp="v=0\r\n", fp=[]),
        "sha1_only": lambda: resign(offer(), ALICE, sdp="a=fingerprint:sha-1 " +
                                    ":".join(["AB"] * 20) + "\r\n",
                                    fp=["sha-1 " + ":".join(["AB"] * 20)]),
    }[case]()
    guard = hs.ReplayGuard()
    with pytest.raises(hs.SignalError, match=match):
        verify_offer(wire, guard=guard)
    assert len(guard) == 0  # a refused offer changes nothing


def test_incompatible_protocol_says_what_to_update() -> None:
    with pytest.raises(hs.IncompatibleSignal) as info:
        verify_offer(offer(protocol=PROTOCOL_VERSION + 1))
    assert "update mocksync on this device" in str(info.value)


def test_replayed_offer_is_refused() -> None:
    guard = hs.ReplayGuard()
    wire = offer()
    verify_offer(wire, guard=guard)
    with pytest.raises(hs.SignalError, match="replayed"):
        verify_offer(wire, guard=guard, now=NOW + 1000)
    # Once the nonce is older than the window, the timestamp check refuses it instead.
    with pytest.raises(hs.SignalError, match="clock"):
        verify_offer(wire, guard=guard, now=NOW + 2 * hs.MAX_CLOCK_SKEW_MS + 1)


def test_replay_guard_is_bounded_and_forgets_old_nonces() -> None:
    guard = hs.ReplayGuard(hold_ms=1000, capacity=3)
    for i in range(3):
        guard.check_and_remember("D", bytes([i]) * 16, 0)
    with pytest.raises(hs.SignalTooLarge):
        guard.check_and_remember("D", b"\x09" * 16, 10)
    guard.check_and_remember("D", b"\x09" * 16, 1000)  # the old ones expired
    assert len(guard) == 1


def test_malformed_and_oversized_messages() -> None:
    for junk in (b"", b"\xff\x00", canonical.encode([1, 2]), canonical.encode("x"),
                 canonical.encode([canonical.encode([1]), b"s"])):
        with pytest.raises(hs.SignalError):
            verify_offer(junk)
    with pytest.raises(hs.SignalTooLarge):
        verify_offer(b"\x00" * (hs.MAX_SIGNAL_BYTES + 1))
    with pytest.raises(hs.SignalTooLarge):
        offer(sdp=SDP + "a=x:" + "y" * hs.MAX_SDP_CHARS)


def test_signature_is_domain_separated() -> None:
    """A signaling signature is over SIGNING_CONTEXT + body: the same key signing the bare
    body (as for another kind of message) does not produce a valid offer."""
    wire = offer()
    body_bytes, _ = canonical.decode(wire)
    naked = canonical.encode([body_bytes, ALICE.sign(body_bytes)])
    with pytest.raises(hs.SignalError, match="signature"):
        verify_offer(naked)
