"""Cap enforcement as a core plus a decorator.

- :class:`CoreCapEnforcer` decides (with :mod:`recsys.capping.engine`) over a :class:`CapStore`, which only
  reads a member's cap hash and commits writes to it. Each call is one generator of store operations
  (:class:`ReadState`, :class:`Commit`): :meth:`~CoreCapEnforcer.select_and_record` runs them as blocking
  calls, :meth:`~CoreCapEnforcer.aselect_and_record` awaits them, so both paths are the same code. A store
  failure (:class:`~recsys.capping.types.StoreUnavailable`) propagates.
- :class:`ResilientCapEnforcer` wraps any enforcer and owns the outage policy, once: ``fail_closed`` (only
  exempt offers) or ``fail_open`` (an in-process limiter with the policy's caps plus ``outage.local_cap``).

A commit succeeds only if the member's hash is still at the version read; otherwise the store hands back the
new state and the decision is made again (at most :data:`MAX_ATTEMPTS` times).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from recsys.capping.engine import (
    DEFAULT_CANDIDATE_WINDOW,
    LOCAL_CAP_NAME,
    Plan,
    Writes,
    aware,
    build_plan,
    cooldown_fields,
    decode,
    lifetime_ms,
    max_cooldown_ms,
    run_plan,
    state_view,
    writes,
)
from recsys.capping.policy import CapPolicy, PolicyHolder
from recsys.capping.types import (
    REASON_OUTAGE_CLOSED,
    CapCandidate,
    CapDecision,
    CapMember,
    CapState,
    StoreUnavailable,
    Suppression,
    SuppressionCounters,
)
from recsys.capping.windows import to_ms
from recsys.schema import EventType

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Commits tried per call before the call counts as failed (concurrent writes to one member's hash).
MAX_ATTEMPTS = 25


class CapStore(Protocol):
    """Where members' cap hashes live: read one, commit writes to one if it is unchanged."""

    name: str

    def key(self, member_id: str) -> str:
        """The member's hash."""
        ...

    def read(self, key: str) -> CapState: ...

    async def aread(self, key: str) -> CapState: ...

    def commit(self, key: str, state: CapState, w: Writes) -> CapState | None:
        """Apply ``w`` if the hash is still at ``state.version``: None when applied, else the current
        state."""
        ...

    async def acommit(self, key: str, state: CapState, w: Writes) -> CapState | None: ...

    def location(self) -> str | None:
        """Which Redis (None: this process)."""
        ...

    def ping(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ReadState:
    key: str

    def run(self, store: CapStore) -> CapState:
        return store.read(self.key)

    async def arun(self, store: CapStore) -> CapState:
        return await store.aread(self.key)


@dataclass(frozen=True, slots=True)
class Commit:
    key: str
    state: CapState
    writes: Writes

    def run(self, store: CapStore) -> CapState | None:
        return store.commit(self.key, self.state, self.writes)

    async def arun(self, store: CapStore) -> CapState | None:
        return await store.acommit(self.key, self.state, self.writes)


StoreOp = ReadState | Commit
Steps = Generator[StoreOp, Any, T]


class CoreCapEnforcer:
    """Cap decisions over a :class:`CapStore` (no outage handling: :class:`ResilientCapEnforcer` wraps
    it)."""

    def __init__(
        self,
        holder: PolicyHolder,
        store: CapStore,
        *,
        candidate_window: int | None = DEFAULT_CANDIDATE_WINDOW,
        counters: SuppressionCounters | None = None,
    ) -> None:
        self.holder = holder
        self.store = store
        self.candidate_window = candidate_window
        self.counters = counters or SuppressionCounters()

    @property
    def policy(self) -> CapPolicy:
        return self.holder.policy

    # -- drivers ----------------------------------------------------------------------------------------
    def _run(self, steps: Steps[T]) -> T:
        value: Any = None
        while True:
            try:
                op = steps.send(value)
            except StopIteration as done:
                return done.value
            value = op.run(self.store)

    async def _arun(self, steps: Steps[T]) -> T:
        value: Any = None
        while True:
            try:
                op = steps.send(value)
            except StopIteration as done:
                return done.value
            value = await op.arun(self.store)

    # -- the interface ----------------------------------------------------------------------------------
    def select_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
        state: CapState | None = None,
    ) -> CapDecision:
        return self._run(self._select(member, candidates, k, placement, now, record, also_check, state))

    async def aselect_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
        state: CapState | None = None,
    ) -> CapDecision:
        return await self._arun(
            self._select(member, candidates, k, placement, now, record, also_check, state)
        )

    def record_event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> None:
        self._run(self._event(member, offer, event_type, placement, now))

    def member_state(self, member: CapMember, now: datetime, offer_ids: Iterable[str] = ()) -> dict[str, Any]:
        now = aware(now)
        state = ReadState(self.store.key(member.member_id)).run(self.store)
        return state_view(
            self.holder.policy, member, now, state.fields, store=self.store.name, offer_ids=offer_ids
        )

    def with_policy(self, holder: PolicyHolder) -> CoreCapEnforcer:
        return CoreCapEnforcer(
            holder, self.store, candidate_window=self.candidate_window, counters=self.counters
        )

    def state_key(self, member_id: str) -> str | None:
        return self.store.key(member_id) if self.store.location() is not None else None

    def location(self) -> str | None:
        return self.store.location()

    def ping(self) -> bool:
        return self.store.ping()

    def status(self) -> dict[str, Any]:
        return self.store.status()

    def close(self) -> None:
        self.store.close()

    async def aclose(self) -> None:
        await self.store.aclose()

    # -- the steps --------------------------------------------------------------------------------------
    def _select(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool,
        also_check: Sequence[CapCandidate],
        state: CapState | None,
    ) -> Steps[CapDecision]:
        if k <= 0 or not candidates:
            return CapDecision(selected=[], suppressed=[], degraded=None)
        now = aware(now)
        if self.candidate_window is not None:
            candidates = candidates[: max(self.candidate_window, 5 * k)]
        planned = [*candidates, *also_check] if also_check else candidates
        policy = self.holder.policy
        plan = build_plan(policy, policy.resolved(member.tier), member, planned, placement, now)
        plan.selectable = len(candidates)
        mode = "check_record" if record and policy.count_on == "serve" else "check"
        key = self.store.key(member.member_id)
        if state is None:
            state = yield ReadState(key)
        raw = yield from self._commit_loop(key, state, plan, lambda fields: run_plan(plan, fields, k, mode))
        decision = decode(plan, raw, planned, member.tier)
        self.counters.add_many([s.reason for s in decision.suppressed])
        return decision

    def _commit_loop(
        self, key: str, state: CapState, plan: Plan, decide: Any, cooldowns: Sequence[str] = ()
    ) -> Steps[Any]:
        """Decide on ``state`` and commit what the decision records, again on the fresh state after a
        conflicting write; the decision that was committed (or needed no write)."""
        for _ in range(MAX_ATTEMPTS):
            raw = decide(state.fields)
            w = writes(plan, state.fields, raw.added, cooldowns)
            if not w:
                return raw
            fresh = yield Commit(key, state, w)
            if fresh is None:
                return raw
            state = fresh
        raise StoreUnavailable("cap state contended")

    def _event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> Steps[None]:
        event = EventType(event_type)  # ValueError names the bad type
        now = aware(now)
        policy = self.holder.policy
        key = self.store.key(member.member_id)
        if event is EventType.IMPRESSION:
            if policy.count_on != "event":
                return None  # counted when served; counting again would double count
            plan = build_plan(
                policy, policy.resolved(member.tier), member, [offer], placement, now, with_cooldowns=False
            )
            if not plan.counters:
                return None
            state = yield ReadState(key)
            yield from self._commit_loop(key, state, plan, lambda fields: run_plan(plan, fields, 1, "force"))
        elif event in (EventType.DISMISS, EventType.PURCHASE):
            fields = cooldown_fields(policy, member, offer, event.value)
            if not fields:
                return None
            plan = Plan(
                now_ms=to_ms(now), lifetime_ms=lifetime_ms(policy), cooldown_ms=max_cooldown_ms(policy)
            )
            state = yield ReadState(key)
            yield from self._commit_loop(key, state, plan, lambda _: _NOTHING, fields)
        return None


@dataclass(frozen=True)
class _Nothing:
    added: tuple[int, ...] = ()


_NOTHING = _Nothing()


def local_policy(policy: CapPolicy) -> CapPolicy:
    """The policy's caps plus the outage.local_cap member-wide cap, for the fail-open local limiter.

    The limiter always counts what it serves (``count_on: serve``): app impression events reach only one of
    the service's processes, so counting them would not keep the per-process cap.
    """
    data = policy.model_dump(mode="json")
    data["count_on"] = "serve"
    lc = policy.outage.local_cap
    data["caps"] = [c for c in data["caps"] if c["name"] != LOCAL_CAP_NAME] + [
        {"name": LOCAL_CAP_NAME, "scope": "member", "limit": lc.limit, "window": lc.window}
    ]
    return CapPolicy.model_validate(data)


class ResilientCapEnforcer:
    """Any enforcer plus the policy's outage handling: a call the store cannot answer is decided by
    ``outage.mode`` instead of failing (``fail_closed``: only exempt offers; ``fail_open``: the in-process
    limiter). Nothing raises on a store failure."""

    def __init__(self, inner: CoreCapEnforcer, *, local_store: Any) -> None:
        self.inner = inner
        self._local_store_factory = local_store
        self._local_lock = threading.Lock()
        self._local: CoreCapEnforcer | None = None
        self._local_src: CapPolicy | None = None

    @property
    def holder(self) -> PolicyHolder:
        return self.inner.holder

    @property
    def policy(self) -> CapPolicy:
        return self.inner.holder.policy

    @property
    def counters(self) -> SuppressionCounters:
        return self.inner.counters

    @property
    def candidate_window(self) -> int | None:
        return self.inner.candidate_window

    @candidate_window.setter
    def candidate_window(self, value: int | None) -> None:
        self.inner.candidate_window = value

    def select_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
        state: CapState | None = None,
    ) -> CapDecision:
        try:
            return self.inner.select_and_record(
                member, candidates, k, placement, now, record, also_check, state
            )
        except StoreUnavailable as e:
            return self._degraded(e, member, candidates, k, placement, now, record)

    async def aselect_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
        state: CapState | None = None,
    ) -> CapDecision:
        try:
            return await self.inner.aselect_and_record(
                member, candidates, k, placement, now, record, also_check, state
            )
        except StoreUnavailable as e:
            return self._degraded(e, member, candidates, k, placement, now, record)

    def record_event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> None:
        try:
            self.inner.record_event(member, offer, event_type, placement, now)
        except StoreUnavailable as e:
            self.counters.add(f"event_degraded:{event_type}")
            if self.policy.outage.mode == "fail_open":
                self.local_enforcer().record_event(member, offer, event_type, placement, now)
            else:
                logger.warning(
                    "cap store unavailable (%s): %s event for %s not applied", e, event_type, member.member_id
                )

    def member_state(self, member: CapMember, now: datetime, offer_ids: Iterable[str] = ()) -> dict[str, Any]:
        try:
            return self.inner.member_state(member, now, offer_ids)
        except StoreUnavailable as e:
            view = state_view(self.policy, member, aware(now), {}, store=self.inner.store.name)
            view.update(degraded=f"unavailable: {e}", caps=[], cooldowns=[])
            return view

    def with_policy(self, holder: PolicyHolder) -> ResilientCapEnforcer:
        return ResilientCapEnforcer(self.inner.with_policy(holder), local_store=self._local_store_factory)

    def state_key(self, member_id: str) -> str | None:
        return self.inner.state_key(member_id)

    def location(self) -> str | None:
        return self.inner.location()

    def ping(self) -> bool:
        return self.inner.ping()

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- the outage policy --------------------------------------------------------------------------------
    def local_enforcer(self) -> CoreCapEnforcer:
        """The per-process limiter used while the store is unavailable under ``fail_open``."""
        policy = self.policy
        with self._local_lock:
            if self._local is None or self._local_src is not policy:
                local = local_policy(policy)
                if self._local is None:
                    self._local = CoreCapEnforcer(
                        PolicyHolder.static(local),
                        self._local_store_factory(policy.outage.local_cap.max_members),
                        candidate_window=None,
                    )
                else:
                    self._local.holder.replace(local)
                self._local_src = policy
            return self._local

    def _degraded(
        self,
        error: StoreUnavailable,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool,
    ) -> CapDecision:
        policy = self.policy
        if self.candidate_window is not None:
            candidates = candidates[: max(self.candidate_window, 5 * k)]
        if policy.outage.mode == "fail_open":
            d = self.local_enforcer().select_and_record(member, candidates, k, placement, now, record)
            decision = CapDecision(d.selected, d.suppressed, degraded=f"fail_open: {error}")
        else:
            rp = policy.resolved(member.tier)
            selected: list[str] = []
            suppressed: list[Suppression] = []
            detail = f"cap counters unavailable ({error}); the fail_closed policy shows only exempt offers"
            for c in candidates:
                if len(selected) >= k:
                    break
                if rp.is_exempt(c.offer_id, c.category, c.exempt):
                    selected.append(c.offer_id)
                else:
                    suppressed.append(Suppression(c.offer_id, REASON_OUTAGE_CLOSED, detail))
            decision = CapDecision(selected, suppressed, degraded=f"fail_closed: {error}")
        self.counters.add_many([s.reason for s in decision.suppressed])
        self.counters.add(f"degraded:{policy.outage.mode}")
        return decision
