"""The plan's size and count limits, applied to this device's environments.

The limits are the space's (`SpaceDirectory.check_size` / `check_share`, from
`space.quotas`), the sizes `model.envsize`; what this part adds is that the synced files an
environment links count toward its size (issue #7), measured on disk by `LinkedFiles`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from ..model.envsize import SizeMemo, compact_size, size_refusal
from ..model.files import quota_reason
from .errors import QuotaError

if TYPE_CHECKING:
    from .daemon import Agent

#: Environments whose last version's entity sizes are remembered (`SizeMemo`, one each);
#: past it the one checked longest ago is forgotten (its next save encodes whole once).
MAX_SIZE_MEMOS = 64


class QuotaCheck:
    """Size and share checks against the space's plan (owned by `Agent`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        #: Per environment uuid: the sizes of its last checked version's entities, so a
        #: one-property save of a big environment encodes one entity (issue 15).
        self.memos: dict[str, SizeMemo] = {}

    def _memo(self, doc: dict[str, Any]) -> SizeMemo | None:
        env = doc.get("uuid")
        if not isinstance(env, str):
            return None
        memo = self.memos.pop(env, None) or SizeMemo()
        self.memos[env] = memo  # (re)inserted last: the dict's order is the check order
        while len(self.memos) > MAX_SIZE_MEMOS:
            del self.memos[next(iter(self.memos))]
        return memo

    def size_problem(self, space: str, doc: dict[str, Any]) -> str | None:
        """The plan's refusal for an environment of this size, or None. Checked on every
        save, so the exact (slow) size is computed only when the fast bound is not enough.
        The synced files it links count toward the size (issue #7), and the refusal says so."""
        n_files, files_bytes = self.agent.linked.quota_bytes(doc)
        problem = size_refusal(partial(self.agent.spaces.check_size, space), doc, files_bytes,
                               memo=self._memo(doc))
        return None if problem is None else quota_reason(problem, n_files, files_bytes)

    def check_share(self, space_id: str, doc: dict[str, Any]) -> None:
        """Refuse sharing `doc` into a space over its plan (linked files count, issue #7)."""
        in_space = sum(1 for rt in self.agent.envs.values() if rt.space == space_id)
        n_files, files_bytes = self.agent.linked.quota_bytes(doc)
        problem = self.agent.spaces.check_share(space_id, in_space, compact_size(doc) + files_bytes)
        if problem:
            raise QuotaError(quota_reason(problem, n_files, files_bytes))
