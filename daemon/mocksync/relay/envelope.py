"""What the relay may see of a change set: the envelope, and the env tag that names its chain.

Why envelopes: the relay must serve change sets by version vector (so it needs space, device
and seq in the clear) without learning anything about the environments they edit
(docs/design/security.md §3). So each change set's wire bytes are sealed whole with the space content key
(`space.keys.seal_payload`, ChaCha20-Poly1305) and travel as

    Envelope = (device, seq, gen, ciphertext)       inside a message naming (space, env tag)

with the AEAD's associated data binding `["mocksync/relay-envelope/v1", space, tag, device,
seq]`. A relay that moves a ciphertext to another slot, space or environment, or alters one
byte of it, makes it fail authentication on every member; after opening, the change set's own
space, device, seq and env (re-tagged) must match the envelope too, so a member that mislabels
what it uploads is caught the same way. Signatures inside the change set are still checked by
the receiving store: the envelope adds secrecy and slot binding, not authorship.

Env tag (derived in `space.envtags`, re-exported here; why not the env uuid: Mockoon env uuids are stable identifiers that would let the
relay link one environment across spaces and time, and they appear in the files people commit):

    tag_key = HKDF-SHA256(ikm = content key generation 1, salt = space id (16 bytes),
                          info = "mocksync/relay-env-tag/v1")
    tag     = hex(HMAC-SHA256(tag_key, env uuid as UTF-8)[:16])          (32 hex characters)

Generation 1 on purpose: a tag must not change when the key rotates (the relay indexes history
by tag, and old history stays under old tags otherwise). Every member holds generation 1: the
join handshake seals every generation to a joiner. A removed device knows generation 1 and can
still compute tags, but the relay refuses it, and tags reveal nothing about content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..changes.canonical import decode, encode
from ..changes.changeset import MAX_BODY_ITEMS, MAX_CHANGESET_BYTES, WIRE_ITEMS, ChangeSet
from ..changes.errors import ChangeSetTooLarge, DecodeLimit, MalformedChangeSet
from ..errors import ChangeSetError
from ..space.envtags import TAG_BYTES, TAG_INFO, TAG_KEY_GENERATION, Tagger, env_tag, tag_key
from ..space.errors import KeyMaterialError
from ..space.keys import open_payload, payload_generation, seal_payload
from .errors import EnvelopeMismatch

ENVELOPE_CONTEXT = "mocksync/relay-envelope/v1"


@dataclass(frozen=True, slots=True)
class Envelope:
    """One sealed change set as the relay stores and serves it."""

    device: str
    seq: int
    gen: int
    ct: bytes

    def __repr__(self) -> str:
        return f"Envelope({self.device}#{self.seq} gen {self.gen}, {len(self.ct)} bytes)"


def envelope_aad(space: str, tag: str, device: str, seq: int) -> bytes:
    """Associated data binding a ciphertext to its slot."""
    return encode([ENVELOPE_CONTEXT, space, tag, device, seq])


def seal_envelope(space: str, tag: str, keys_by_gen: Mapping[int, bytes], wire: bytes) -> Envelope:
    """Seal a change set's wire bytes under the newest content key generation we hold."""
    if not keys_by_gen:
        raise KeyMaterialError(f"this device holds no content key of space {space[:12]}")
    slot = peek_slot(wire)
    if slot.space != space:
        raise EnvelopeMismatch(f"change set {slot.device}#{slot.seq} belongs to another space")
    gen = max(keys_by_gen)
    ct = seal_payload(keys_by_gen[gen], gen, wire, envelope_aad(space, tag, slot.device, slot.seq))
    return Envelope(slot.device, slot.seq, gen, ct)


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a change set belongs, as its own signed body says."""

    space: str
    env: str
    device: str
    seq: int


def peek_slot(wire: bytes) -> Slot:
    """`(space, env, device, seq)` read from a change set's body without the full decode.

    Only what the envelope check needs; the receiving store decodes and verifies the whole
    change set anyway (signature, chain, ops), so doing it here too would double the cost of
    a catch-up. The two layers read here pass the decoding gate like every untrusted byte
    string (the body usually carries its ops compressed, as one byte string, so this is
    cheap). Anything that is not shaped like a change set is an EnvelopeMismatch."""
    try:  # through the decoding gate: these bytes come from another member
        outer = decode(wire, what="sealed change set")
        body = decode(outer[0], what="sealed change set body") if type(outer) is list \
            and len(outer) == 2 and type(outer[0]) is bytes else None
    except ChangeSetError:
        body = None
    return _slot_of(body)


def _slot_of(body: Any) -> Slot:
    """The slot a decoded change set body names (EnvelopeMismatch when it names none)."""
    if type(body) is not dict:
        raise EnvelopeMismatch("an envelope opened to something that is not a change set")
    space, env, device, seq = body.get("s"), body.get("e"), body.get("d"), body.get("n")
    if type(space) is not bytes or len(space) != 16 or type(env) is not str \
            or type(device) is not str or type(seq) is not int:
        raise EnvelopeMismatch("an envelope opened to a change set with a malformed header")
    return Slot(space.hex(), env, device, seq)


def _through_gate(data: bytes, what: str, max_items: int) -> tuple[Any, ChangeSetError | None]:
    """`data` decoded under the change set's own item cap, with no refusal; past that cap,
    decoded under the gate's generic cap (what `peek_slot` allows) only so the slot can be
    read, with the change set's refusal kept for the caller (so a flood is still reported
    against its slot, as an undecodable change set)."""
    try:
        return decode(data, what=what, max_items=max_items), None
    except DecodeLimit as exc:
        return decode(data, what=what), MalformedChangeSet(str(exc))


def read_changeset(wire: bytes) -> tuple[Slot, ChangeSet | ChangeSetError]:
    """The slot of an opened change set and the change set itself (or why it does not
    decode), from one pass of the decoding gate over each of its layers.

    Why (issue 17): `peek_slot` then `ChangeSet.decode` decoded the wire and its body twice
    per envelope, a third of the CPU of a 10,000-envelope catch-up. EnvelopeMismatch, as
    `peek_slot`, when the bytes are not shaped like a change set with a slot; the change set's
    own refusal (`ChangeSet.decode`'s, same sentence) when they are but it does not decode."""
    refusal: ChangeSetError | None = None
    more: ChangeSetError | None = None
    try:  # through the decoding gate: these bytes come from another member
        outer, refusal = _through_gate(wire, "change set", WIRE_ITEMS)
        body, more = _through_gate(outer[0], "change set body", MAX_BODY_ITEMS) \
            if type(outer) is list and len(outer) == 2 and type(outer[0]) is bytes \
            else (None, None)
    except ChangeSetError:
        body = None
    slot = _slot_of(body)
    if len(wire) > MAX_CHANGESET_BYTES:  # ChangeSet.decode's first check, and its sentence
        return slot, ChangeSetTooLarge(f"change set of {len(wire)} bytes is over the "
                                       f"{MAX_CHANGESET_BYTES} byte limit")
    refusal = refusal or more
    if refusal is not None:
        return slot, refusal
    try:
        return slot, ChangeSet.from_outer(wire, outer, body)
    except ChangeSetError as exc:
        return slot, exc


def open_changeset(space: str, tag: str, keys_by_gen: Mapping[int, bytes], env: Envelope,
                   tagger: Tagger) -> tuple[Slot, ChangeSet | ChangeSetError]:
    """`open_envelope`, handing on the decoded change set (or why it does not decode) instead
    of its wire bytes: what a receiver applies, at one decode per layer."""
    wire = _open_wire(space, tag, keys_by_gen, env)
    slot, cs = read_changeset(wire)
    _check_slot(space, tag, env, slot, tagger)
    return slot, cs


def _open_wire(space: str, tag: str, keys_by_gen: Mapping[int, bytes], env: Envelope) -> bytes:
    if payload_generation(env.ct) != env.gen:
        raise KeyMaterialError(
            f"envelope {env.device}#{env.seq} claims key generation {env.gen} but its ciphertext "
            "names another: it was altered"
        )
    return open_payload(keys_by_gen, env.ct, envelope_aad(space, tag, env.device, env.seq))


def open_envelope(space: str, tag: str, keys_by_gen: Mapping[int, bytes], env: Envelope,
                  tagger: Tagger) -> tuple[Slot, bytes]:
    """Open and check one envelope: the change set's slot and wire bytes, or a refusal.

    KeyMaterialError when the ciphertext fails authentication (altered, moved, or sealed with a
    generation we lack); EnvelopeMismatch when what is inside is not a change set of this very
    slot (space, env tag, device, seq). The change set itself is verified by the store."""
    wire = _open_wire(space, tag, keys_by_gen, env)
    slot = peek_slot(wire)
    _check_slot(space, tag, env, slot, tagger)
    return slot, wire


def _check_slot(space: str, tag: str, env: Envelope, slot: Slot, tagger: Tagger) -> None:
    if (slot.space, slot.device, slot.seq) != (space, env.device, env.seq) \
            or tagger(slot.env) != tag:
        raise EnvelopeMismatch(
            f"envelope {env.device}#{env.seq} holds change set {slot.device}#{slot.seq} of "
            "another environment or space: refused (a member uploaded a mislabelled envelope)"
        )


__all__ = [
    "ENVELOPE_CONTEXT",
    "Envelope",
    "EnvelopeMismatch",
    "TAG_BYTES",
    "TAG_INFO",
    "TAG_KEY_GENERATION",
    "Tagger",
    "env_tag",
    "envelope_aad",
    "Slot",
    "open_changeset",
    "open_envelope",
    "peek_slot",
    "read_changeset",
    "seal_envelope",
    "tag_key",
]
