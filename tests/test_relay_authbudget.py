"""The relay's pre-authentication work budget and its order (relay.authbudget), without sockets.

Each decision is checked on both sides: what an attacker sends is refused or bounded, and the
densest and longest things an honest device sends fit.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from attack_tools import cbor_head
from mocksync.changes import canonical
from mocksync.relay.authbudget import (
    MAX_AUTH_ENTRIES,
    MAX_AUTH_ITEMS,
    MAX_ENTRY_ITEMS,
    MAX_KEY_SEARCH_ENTRIES,
    NEW_SPACE_BURST,
    NEW_SPACES_PER_S,
    ItemBudget,
    NewSpaceRate,
    deferral,
    entry_items,
    frame_refusal,
    known_key,
    search_key,
    verify_order,
)
from mocksync.relay.errors import AuthBudgetExceeded
from mocksync.relay.frames import MAX_AUTH_FRAME_BYTES
from mocksync.space import membership as m
from mocksync.space.errors import MembershipError
from mocksync.space.identity import DevicePublic, Identity
from mocksync.space.membership import MAX_ENTRY_BYTES, MAX_LOG_ENTRIES

ADMIN = Identity.from_seeds("admin", b"a" * 32, b"b" * 32)
JOINER = Identity.from_seeds("joiner", b"c" * 32, b"d" * 32)
OTHER = Identity.from_seeds("other", b"e" * 32, b"f" * 32)
NAMES_KEY = b"n" * 32


def genesis(who: Identity = ADMIN, space: bytes = b"s" * 16) -> m.Entry:
    return m.new_genesis(who, name="team", member_name="ann", now_ms=1, space_id=space,
                         names_key=NAMES_KEY)


def team_with_joiner() -> tuple[list[m.Entry], m.SpaceState]:
    """ADMIN's space; JOINER added as a member's device (names sealed, as daemons do)."""
    g = genesis()
    st = m.verify_log([g])
    mid = m.new_member_id()
    e1 = m.add_member(ADMIN, st, member_id=mid, name="joe", role="editor", now_ms=2,
                      names_key=NAMES_KEY)
    st = m.extend_log([g], [e1])
    e2 = m.add_device(ADMIN, st, member_id=mid, device=JOINER.public, sealed_key=(1, b"k" * 90),
                      now_ms=3, names_key=NAMES_KEY)
    entries = [g, e1, e2]
    return entries, m.extend_log([g, e1], [e2])


def after(prev: m.Entry, signer: Identity, kind: str, data: dict) -> m.Entry:
    """An entry on top of `prev` without replaying the log (fast chains for the tests)."""
    fake = SimpleNamespace(space_id_bytes=prev.space, heads=(prev.hash,),
                           next_counter=prev.counter + 1)
    return m.sign_entry(signer, fake, kind, data, now_ms=prev.counter + 10)  # type: ignore[arg-type]


def dense(n_items: int) -> bytes:
    """An entry-sized CBOR list of zeros: one item per byte (what the attacker sent)."""
    return cbor_head(4, n_items - 1) + b"\x00" * (n_items - 1)


def items_of(e: m.Entry) -> int:
    return canonical.scan(e.wire) + canonical.scan(e.body_bytes)


# ------------------------------------------------------------------------------ entry_items


def test_entry_items_counts_outer_and_body_exactly() -> None:
    entries, _ = team_with_joiner()
    for e in entries:
        assert entry_items(e.wire) == items_of(e)


def test_entry_items_refuses_dense_and_foreign_bytes_before_building() -> None:
    # The attacker's entry: 96 KiB of list items. Refused at the scan's cap, in far less than
    # the 22 ms a full decode took.
    start = time.process_time()
    with pytest.raises(MembershipError, match="expected a map"):
        entry_items(dense(MAX_ENTRY_BYTES))
    # The same density inside a well-formed entry shape: over the per-entry item cap.
    body = dense(MAX_ENTRY_BYTES - 100)
    fake = canonical.encode({"body": body, "sig": bytes(64)})
    with pytest.raises(AuthBudgetExceeded, match=f"more than {MAX_ENTRY_ITEMS} CBOR items"):
        entry_items(fake)
    assert time.process_time() - start < 0.5
    with pytest.raises(MembershipError, match="sig: 64 bytes"):
        entry_items(canonical.encode({"body": b"x", "sig": bytes(63)}))
    with pytest.raises(MembershipError, match="not a byte string"):
        entry_items(canonical.encode({"body": "text", "sig": bytes(64)}))


def test_the_densest_honest_entry_fits_the_per_entry_cap() -> None:
    # A member's removal with a cut for 16 devices filling MAX_ENTRY_BYTES (1-byte seqs: the
    # most items per byte an honest entry has).
    g = genesis()
    devices = [Identity.from_seeds(f"d{n}", bytes([n]) * 32, b"x" * 32).device_id
               for n in range(16)]

    def removal(envs: int) -> m.Entry:
        covers: dict[str, dict[str, int]] = {}
        for n in range(envs):
            covers.setdefault(devices[n % 16], {})[f"{n:032x}"] = 1
        return after(g, ADMIN, "remove_member", {"member": "ab" * 8, "covers": covers})

    envs = MAX_ENTRY_BYTES // 35
    while True:
        try:
            e = removal(envs)
            break
        except MembershipError:  # over MAX_ENTRY_BYTES: a few fewer
            envs -= 20
    assert len(e.wire) > MAX_ENTRY_BYTES - 800
    assert len(e.wire) <= MAX_ENTRY_BYTES
    assert 4000 < entry_items(e.wire) <= MAX_ENTRY_ITEMS


# ------------------------------------------------------------------------------ ItemBudget


def test_item_budget_charges_each_entry_and_stays_spent() -> None:
    entries, _ = team_with_joiner()
    per = entry_items(entries[1].wire)
    budget = ItemBudget(items=per * 2 + 1, entries=10)
    assert budget.charge(entries[1].wire) == per
    assert budget.charge(entries[1].wire) == per
    with pytest.raises(AuthBudgetExceeded, match=f"more than {per * 2 + 1} CBOR items"):
        budget.charge(entries[1].wire)
    # Spent: even a tiny entry is refused now, without being scanned.
    with pytest.raises(AuthBudgetExceeded, match="CBOR items"):
        budget.charge(entries[0].wire)
    counted = ItemBudget(items=10**6, entries=2)
    counted.charge(entries[0].wire)
    counted.charge(entries[0].wire)
    with pytest.raises(AuthBudgetExceeded, match="more than 2 membership entries"):
        counted.charge(entries[0].wire)


def test_a_frame_of_dense_entries_costs_at_most_the_budget() -> None:
    # The split attack: the 8 MiB frame as 1,000 spaces of small dense entries. The budget
    # stops it after MAX_AUTH_ITEMS items, wherever they are.
    wire = canonical.encode({"body": dense(MAX_ENTRY_ITEMS - 10), "sig": bytes(64)})
    budget = ItemBudget()
    charged = 0
    with pytest.raises(AuthBudgetExceeded, match=f"more than {MAX_AUTH_ITEMS} CBOR items"):
        for _ in range(MAX_AUTH_FRAME_BYTES // len(wire)):
            charged += budget.charge(wire)
    assert charged <= MAX_AUTH_ITEMS


def test_frame_refusal_counts_entries_without_decoding() -> None:
    assert frame_refusal({"a": [b"x"] * 10, "b": [b"y"] * 5}, entries=15) is None
    sentence = frame_refusal({"a": [b"x"] * 10, "b": [b"y"] * 6}, entries=15)
    assert sentence is not None and "16 membership entries" in sentence and "15" in sentence
    assert frame_refusal({"a": [b"x"] * MAX_LOG_ENTRIES}) is None  # one whole honest log fits


def test_honest_frames_fit_the_frame_budget() -> None:
    """Every honest entry kind has at least 8 bytes per CBOR item and 200 bytes, so the
    largest auth frame of honest entries is within MAX_AUTH_ITEMS and MAX_AUTH_ENTRIES."""
    entries, st = team_with_joiner()
    g = entries[-1]
    member = next(iter(st.members))
    more = [after(g, ADMIN, "set_role", {"member": member, "role": "admin"}),
            after(g, ADMIN, "migrate", {"model": 2}),
            after(g, ADMIN, "remove_device", {"device": JOINER.device_id, "covers": {}}),
            after(g, ADMIN, "rotate_key", {"gen": 2, "sealed": {JOINER.device_id: b"k" * 90}})]
    for e in entries + more:
        assert len(e.wire) >= 8 * entry_items(e.wire), e.kind
        assert len(e.wire) >= 200, e.kind
    assert MAX_AUTH_FRAME_BYTES // 8 <= MAX_AUTH_ITEMS
    assert MAX_AUTH_FRAME_BYTES // 200 <= MAX_AUTH_ENTRIES
    assert MAX_LOG_ENTRIES <= MAX_AUTH_ENTRIES


# ------------------------------------------------------------------------------ the key first


def test_known_key_comes_from_the_verified_log() -> None:
    entries, st = team_with_joiner()
    found = known_key({"sp": st}, JOINER.device_id)
    assert found is not None and found.known and found.sign_key == JOINER.public.sign_key
    assert known_key({"sp": st}, OTHER.device_id) is None
    # A removed device still authenticates (to be told it was removed).
    rm = m.remove_device(ADMIN, st, device_id=JOINER.device_id, covers={}, now_ms=9)
    st2 = m.extend_log(entries, [rm])
    found = known_key({"sp": st2}, JOINER.device_id)
    assert found is not None and found.sign_key == JOINER.public.sign_key


def test_search_key_finds_the_creator_in_its_genesis_and_a_joiner_late_in_a_long_log() -> None:
    g = genesis(OTHER, space=b"o" * 16)
    found = search_key(OTHER.device_id, {"new": [g.wire]}, ["new"])
    assert found is not None and found.space == "new" and not found.known
    assert found.sign_key == OTHER.public.sign_key
    # A joiner whose add_device comes after a long run of entries that do not name it: only
    # entries holding its id's bytes are decoded.
    entries, _ = team_with_joiner()
    head = entries[1]
    chain = []
    for n in range(300):
        head = after(head, ADMIN, "migrate", {"model": 1 + n % 5})
        chain.append(head)
    wires = [entries[0].wire, entries[1].wire] + [e.wire for e in chain] + [entries[2].wire]
    found = search_key(JOINER.device_id, {"a": [], "b": wires}, ["a", "b"])
    assert found is not None and found.space == "b"
    assert found.sign_key == JOINER.public.sign_key


def test_search_key_takes_no_key_the_id_does_not_hash_to() -> None:
    # An entry claiming the joiner's id with the attacker's key: the record's id is not the
    # hash of its key, so the entry is unreadable and never gives a key.
    st = m.verify_log([genesis(OTHER, space=b"o" * 16)])
    forged = DevicePublic(JOINER.device_id, "x", OTHER.public.sign_key, OTHER.public.box_key)
    rec = forged.to_cbor()
    fake = SimpleNamespace(space_id_bytes=st.space_id_bytes, heads=st.heads,
                           next_counter=st.next_counter)
    body = {"v": 1, "space": st.space_id_bytes, "kind": "add_device", "author": OTHER.device_id,
            "parents": list(fake.heads), "counter": 1, "time": 1,
            "data": {"member": "m" * 16, "device": rec, "key": None}}
    body_bytes = canonical.encode(body)
    wire = canonical.encode({"body": body_bytes, "sig": OTHER.sign(body_bytes)})
    assert search_key(JOINER.device_id, {"x": [wire]}, ["x"]) is None


def test_search_key_of_garbage_decodes_at_most_a_few_entries() -> None:
    device = JOINER.device_id
    needle = canonical.encode(device)
    # Dense entries without the id: not decoded at all. With the id: at most
    # MAX_KEY_SEARCH_ENTRIES of them, each within MAX_ENTRY_ITEMS.
    without = [dense(MAX_ENTRY_BYTES)] * 80
    bait = canonical.encode({"body": needle + dense(MAX_ENTRY_BYTES - 200), "sig": bytes(64)})
    real = team_with_joiner()[0][2].wire
    logs = {f"{n:032x}": without for n in range(10)} | {"bait": [bait] * 40 + [real]}
    start = time.process_time()
    assert search_key(device, logs, list(logs)) is None  # the real one is past the budget
    assert time.process_time() - start < 0.5
    found = search_key(device, {"bait": [bait] * (MAX_KEY_SEARCH_ENTRIES - 1) + [real]},
                       ["bait"])
    assert found is not None and found.sign_key == JOINER.public.sign_key


# ------------------------------------------------------------------------------ order, rate


def test_verify_order_puts_known_spaces_first_then_the_key_space_and_defers_the_rest() -> None:
    order, deferred = verify_order(["k1", "k2"], ["n1", "n2", "n3", "n4"], "n3", 2)
    assert order == ["k1", "k2", "n3", "n1"] and deferred == ["n2", "n4"]
    order, deferred = verify_order(["k1"], ["n1"], None, 0)
    assert order == ["k1"] and deferred == ["n1"]
    assert "new to this relay" in deferral("ab" * 16, 32, by_rate=False)
    assert f"{NEW_SPACE_BURST} at once" in deferral("ab" * 16, 32, by_rate=True)


def test_new_space_rate_per_address() -> None:
    rate = NewSpaceRate(max_addresses=3)
    assert rate.allowance("1.1.1.1", 0.0) == NEW_SPACE_BURST
    rate.spend("1.1.1.1", NEW_SPACE_BURST, 0.0)
    assert rate.allowance("1.1.1.1", 0.0) == 0
    assert rate.allowance("2.2.2.2", 0.0) == NEW_SPACE_BURST  # other addresses unaffected
    assert rate.allowance("1.1.1.1", 1 / NEW_SPACES_PER_S) == 1
    assert rate.allowance("1.1.1.1", 10**6) == NEW_SPACE_BURST  # never above the burst
    for n, addr in enumerate(["a", "b", "c", "d"]):
        rate.spend(addr, 1, float(n))
    assert len(rate._buckets) <= 3  # bounded memory
    with pytest.raises(ValueError):
        NewSpaceRate(rate=0)
