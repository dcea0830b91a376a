"""The agent's view of the spaces this device belongs to (adapter over `mocksync.space`).

Membership is re-verified from the signed log whenever the documents file changes (the CLI
adds spaces and members while the daemon runs), so a removal takes effect without a restart.
"""

from __future__ import annotations

from typing import Any

from tinydb import Query

from ..errors import MocksyncError
from ..paths import Home
from ..relay.envelope import Tagger
from ..space import quotas
from ..space.writers import NOT_A_DEVICE, Verdict, judge_change
from ..spaceio.store import StoredSpace, get_space, list_spaces, personal_space
from ..store.docs import open_docs

PLAN_TABLE = "space_plans"


class SpaceDirectory:
    def __init__(self, home: Home) -> None:
        self.home = home
        self._mtime: tuple[int, int, int] | None = None
        self._spaces: dict[str, StoredSpace] = {}
        self._taggers: dict[str, Tagger] = {}

    def _refresh(self) -> dict[str, StoredSpace]:
        # Inode and size as well as mtime: every write replaces the file (new inode), and two
        # writes within one timestamp tick (a key rotation, then its key) must not look alike.
        try:
            st = self.home.docs.stat()
            m: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            m = None
        if m != self._mtime or not self._spaces:
            self._spaces = {s.space_id: s for s in list_spaces(self.home)}
            self._mtime = m
        return self._spaces

    def spaces(self) -> list[StoredSpace]:
        return list(self._refresh().values())

    def get(self, space: str) -> StoredSpace | None:
        return self._refresh().get(space)

    def default_space(self) -> str:
        s = personal_space(self._refresh().values())
        if s is not None:
            return s.space_id
        raise MocksyncError("this device has no personal space; run `mocksync init` first")

    def resolve(self, text: str) -> str:
        return get_space(self.home, text).space_id

    def name(self, space: str) -> str:
        s = self.get(space)
        return s.name if s else space[:12]

    def judge(self, space: str, device: str, env: str, seq: int) -> Verdict:
        """May change set `(device, env, seq)` enter `space`? The relay's decision too
        (`space.writers.judge_change`, keyed by the env's relay tag)."""
        return self.judge_all(space, [(device, env, seq)])[0]

    def judge_all(self, space: str, slots: list[tuple[str, str, int]]) -> list[Verdict]:
        """`judge` of each `(device, env, seq)`, all against one reading of the membership.

        Why: a relay catch-up page holds 1,000 change sets, and judging each on its own
        looked at the documents file twice per change set (a stat and two path objects, a
        tenth of the device's CPU for the page); the page is one store transaction, so one
        view of who may write is what it is judged by anyway."""
        s = self.get(space)
        if s is None:
            no = Verdict(False, NOT_A_DEVICE, f"this device does not belong to space {space[:12]}")
            return [no for _ in slots]
        tagger = self._tagger(space, s)
        return [judge_change(s.state, device, tagger(env) if tagger is not None else "", seq)
                for device, env, seq in slots]

    def tag(self, space: str, env: str) -> str:
        """The relay tag of `env` in `space` (the key of removal cuts); memoised per space."""
        t = self._tagger(space, self.get(space))
        return t(env) if t is not None else ""

    def _tagger(self, space: str, s: StoredSpace | None) -> Tagger | None:
        """The memoised tagger of `space` (`s`: its stored state), None without a
        generation-1 key (no cut can name an env then)."""
        t = self._taggers.get(space)
        if t is None and s is not None:
            try:
                t = self._taggers[space] = Tagger(space, s.keys)
            except MocksyncError:
                return None
        return t

    def public_key(self, space: str, device: str, env: str, seq: int) -> bytes | None:
        return self.judge(space, device, env, seq).sign_key

    def member_name(self, space: str, device: str) -> str | None:
        s = self.get(space)
        if s is None:
            return None
        m = s.state.member_of(device)
        return m.name if m else None

    # ---- quotas (the relay enforces them too; checking here gives the sentence before sharing)
    def plan(self, space: str) -> quotas.Plan:
        """The plan this device holds the space to: the one its relay last announced (kept,
        so a save while the relay is down is judged by the same numbers), else a default."""
        with open_docs(self.home.docs) as db:
            row = db.table(PLAN_TABLE).get(Query().space == space)
        if row:
            return _plan_of_row(row)
        s = self.get(space)
        return quotas.PLANS["solo" if s is not None and s.state.kind == "personal" else "team"]

    def learn_plan(self, space: str, plan: quotas.Plan) -> bool:
        """Keep the plan the relay enforces on `space` (from its welcome); True when it
        changed. Written only on a change: the documents file is shared with the CLI."""
        if self.plan(space) == plan:
            return False
        with open_docs(self.home.docs) as db:
            db.table(PLAN_TABLE).upsert(
                {"space": space, "plan": plan.name, "max_envs": plan.max_envs,
                 "max_env_bytes": plan.max_env_bytes,
                 "max_devices_per_member": plan.max_devices_per_member},
                Query().space == space)
        return True

    def set_plan(self, space: str, plan: str, **limits: Any) -> None:
        quotas.get_plan(plan, **limits)  # validates
        with open_docs(self.home.docs) as db:
            db.table(PLAN_TABLE).upsert({"space": space, "plan": plan, **limits},
                                        Query().space == space)

    def check_share(self, space: str, env_count: int, env_bytes: int) -> str | None:
        d = quotas.check_share(self.plan(space), env_count, env_bytes)
        return None if d.ok else d.reason

    def check_size(self, space: str, env_bytes: int) -> str | None:
        d = quotas.check_env_size(self.plan(space), env_bytes)
        return None if d.ok else d.reason


def _plan_of_row(row: dict[str, Any]) -> quotas.Plan:
    """A stored plan row: the relay's full numbers when present (any plan name a relay
    announced), else a named plan with the limits the row overrides."""
    full = ("max_envs", "max_env_bytes", "max_devices_per_member")
    if all(isinstance(row.get(k), int) for k in full):
        return quotas.Plan(str(row["plan"]), row["max_envs"], row["max_env_bytes"],
                           row["max_devices_per_member"])
    return quotas.get_plan(row["plan"], max_envs=row.get("max_envs"),
                           max_env_bytes=row.get("max_env_bytes"))
