"""Version vectors: what each device has seen of one environment, as `{device id: seq}`.

Every device writes one hash-linked chain of change sets per environment, numbered 1, 2, 3...
and chains are applied in order, so "device D up to seq n" fully describes what we hold of D.
A vector of those numbers is then enough to answer the three questions sync and merge ask:
what does a peer have that I lack (`missing`), have I already got this change set (`covers`),
and did one edit happen before another or concurrently with it (`happened_before`, which is
what separates a conflict from an ordinary overwrite).

A device absent from a vector counts as 0 (nothing seen). Functions never mutate their
arguments and return plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping

VersionVector = Mapping[str, int]


def merge(a: VersionVector, b: VersionVector) -> dict[str, int]:
    """The element-wise maximum: everything seen by either side."""
    out = dict(a)
    for device, seq in b.items():
        if seq > out.get(device, 0):
            out[device] = seq
    return out


def dominates(a: VersionVector, b: VersionVector) -> bool:
    """True when `a` has seen everything `b` has (a >= b for every device)."""
    return all(a.get(device, 0) >= seq for device, seq in b.items())


def concurrent(a: VersionVector, b: VersionVector) -> bool:
    """True when each side has seen something the other has not."""
    return not dominates(a, b) and not dominates(b, a)


def missing(local: VersionVector, remote: VersionVector) -> dict[str, tuple[int, int]]:
    """What `remote` holds that `local` lacks: `{device: (have_seq, remote_seq)}`.

    The range is `have_seq` exclusive to `remote_seq` inclusive: ask for seqs
    `have_seq + 1 .. remote_seq`.
    """
    out: dict[str, tuple[int, int]] = {}
    for device, seq in remote.items():
        have = local.get(device, 0)
        if seq > have:
            out[device] = (have, seq)
    return out


def covers(vv: VersionVector, device: str, seq: int) -> bool:
    """True when `vv` already includes change set `(device, seq)`."""
    return vv.get(device, 0) >= seq


def happened_before(
    a_device: str, a_seq: int, b_device: str, b_seq: int, b_deps: VersionVector
) -> bool:
    """True when change set `a` was known to the author of `b` when `b` was made (a -> b)."""
    if a_device == b_device:
        return a_seq < b_seq
    return b_deps.get(a_device, 0) >= a_seq
