"""Taking in membership entries from a peer or the relay (`spaceio.learn`, issue 16): a removal
with its rotated key is stored with the key; anything that does not verify as a whole log is
refused and changes nothing."""

from __future__ import annotations

import pytest

from mocksync.devtools.pairing import pair
from mocksync.errors import MocksyncError
from mocksync.spaceio import actions
from mocksync.spaceio.learn import learn_entries
from mocksync.spaceio.store import get_space

from helpers.devices import make_device
from helpers.procs import short_tmp


def test_a_removal_and_its_key_are_learned_together_and_bad_batches_change_nothing() -> None:
    with short_tmp("mslearn-") as root:
        ana, ben, cy = (make_device(root, n) for n in ("ana", "ben", "cy"))
        space = actions.create_space(ana.home, ana.identity, "team").space_id
        pair(ana.home, ben.home, space)
        pair(ana.home, cy.home, space)
        actions.remove(ana.home, ana.identity, space, cy.id)
        theirs = get_space(ana.home, space)
        assert theirs.state.key_generation == 2

        before = get_space(ben.home, space)
        wires = [e.wire for e in theirs.entries]
        for bad in ([b"\xff\x00"], [*wires[:-1], wires[-1][:-1] + bytes([wires[-1][-1] ^ 1])]):
            with pytest.raises(MocksyncError):
                learn_entries(ben.home, ben.identity, space, before, bad)
            assert get_space(ben.home, space).entries == before.entries

        learned = learn_entries(ben.home, ben.identity, space, before, wires)
        assert learned.removals and sorted(learned.new_keys) == [2]
        after = get_space(ben.home, space)
        assert not after.state.is_member(cy.id)
        assert after.keys[2] == theirs.keys[2]
        # Again: nothing new, nothing written.
        assert learn_entries(ben.home, ben.identity, space, after, wires).fresh == []
