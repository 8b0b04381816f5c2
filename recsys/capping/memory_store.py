"""In-process cap counters: the embedded default (no Redis configured) and the fail-open local limiter.

Same semantics as the Redis store — it runs the same plan with the same algorithm (:func:`engine.run_plan`)
under one lock — but the counts live in this process only: with several service processes each would count on
its own, so use Redis as soon as there is more than one process.

Memory is bounded two ways: every key expires (expiry is judged against the request's ``now``, so tests with
an injected clock behave like Redis), and at most ``max_members`` members are remembered (least recently seen
are forgotten first, which can only let an offer through, never block one wrongly).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from recsys.capping.engine import (
    KeySpace,
    Plan,
    PlanEnforcer,
    RawResult,
    StoreUnavailable,
    run_plan,
)
from recsys.capping.policy import PolicyHolder
from recsys.capping.types import (
    CapCandidate,
    CapDecision,
    CapMember,
)

DEFAULT_MAX_MEMBERS = 1_000_000


class _Hash:
    __slots__ = ("expire_ms", "fields")

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.expire_ms: int | None = None


def _member_of(key: str) -> str:
    return key[: key.index("}") + 1]


class MemoryKV:
    """Redis-like hash operations over per-member dicts (caller holds the lock and sets ``now_ms``).

    Keys expire against ``now_ms`` (the request's injected time), like Redis TTLs in real time.
    """

    def __init__(self, max_members: int) -> None:
        self.max_members = max_members
        self.now_ms = 0
        self._members: OrderedDict[str, dict[str, _Hash]] = OrderedDict()

    def touch(self, tag: str) -> None:
        """Mark a member recently used and drop its expired keys (once per operation)."""
        keys = self._members.get(tag)
        if keys is not None:
            self._members.move_to_end(tag)
            for k in [k for k, h in keys.items() if h.expire_ms is not None and h.expire_ms <= self.now_ms]:
                del keys[k]
            if not keys:
                del self._members[tag]

    def _get(self, key: str) -> _Hash | None:
        keys = self._members.get(_member_of(key))
        if keys is None:
            return None
        h = keys.get(key)
        if h is not None and h.expire_ms is not None and h.expire_ms <= self.now_ms:
            del keys[key]
            return None
        return h

    def _get_or_create(self, key: str) -> _Hash:
        tag = _member_of(key)
        keys = self._members.get(tag)
        if keys is None:
            keys = self._members[tag] = {}
            while len(self._members) > self.max_members:
                self._members.popitem(last=False)
        h = self._get(key)
        if h is None:
            h = keys[key] = _Hash()
        return h

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        h = self._get(key)
        if h is None:
            return [None] * len(fields)
        return [h.fields.get(f) for f in fields]

    def hset(self, key: str, field: str, value: str) -> None:
        self._get_or_create(key).fields[field] = value

    def hincrby(self, key: str, field: str, n: int) -> None:
        h = self._get_or_create(key)
        h.fields[field] = str(int(h.fields.get(field) or 0) + n)

    def hgetall(self, key: str) -> dict[str, str]:
        h = self._get(key)
        return dict(h.fields) if h is not None else {}

    def hdel(self, key: str, field: str) -> None:
        h = self._get(key)
        if h is not None:
            h.fields.pop(field, None)

    def pexpire(self, key: str, ttl_ms: int) -> None:
        h = self._get(key)
        if h is not None:
            h.expire_ms = self.now_ms + ttl_ms

    def set_cooldowns(self, key: str, fields: list[str], t: int, ttl_ms: int) -> None:
        """Each field to ``t`` unless later; drop fields older than ``ttl_ms``; extend the TTL (as Lua)."""
        h = self._get_or_create(key)
        for f in fields:
            old = h.fields.get(f)
            if old is None or int(old) <= t:
                h.fields[f] = str(t)
        for f in [f for f, old in h.fields.items() if int(old) + ttl_ms <= t]:
            del h.fields[f]
        if h.expire_ms is None or h.expire_ms < t + ttl_ms:
            h.expire_ms = t + ttl_ms

    def __len__(self) -> int:
        return len(self._members)


class EmbeddedCapEnforcer(PlanEnforcer):
    """Cap enforcement with in-process counters (thread-safe; one process only)."""

    store_name = "memory"

    def __init__(
        self, holder: PolicyHolder, key_prefix: str = "caps", max_members: int = DEFAULT_MAX_MEMBERS
    ) -> None:
        super().__init__(holder, key_prefix)
        self._lock = threading.Lock()
        self._kv = MemoryKV(max_members)

    def _execute(self, plan: Plan, k: int, mode: str) -> RawResult:
        with self._lock:
            self._kv.now_ms = plan.now_ms
            self._kv.touch(_member_of(plan.cooldown_key))
            return run_plan(self._kv, plan, k, mode)

    def _write_cooldowns(self, keys: KeySpace, fields: list[str], now_ms: int, ttl_ms: int) -> None:
        with self._lock:
            self._kv.now_ms = now_ms
            self._kv.touch(_member_of(keys.cooldowns))
            self._kv.set_cooldowns(keys.cooldowns, fields, now_ms, ttl_ms)

    def _read(self, names: list[str], now_ms: int) -> dict[str, dict[str, str]]:
        with self._lock:
            self._kv.now_ms = now_ms
            return {n: self._kv.hgetall(n) for n in names}

    def members_held(self) -> int:
        with self._lock:
            return len(self._kv)

    def _degraded(
        self,
        error: StoreUnavailable,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool,
    ) -> CapDecision:  # pragma: no cover - the in-process store is always available
        raise AssertionError("in-process store cannot be unavailable") from error

    def _degraded_event(
        self,
        error: StoreUnavailable,
        member: CapMember,
        offer: CapCandidate,
        event: str,
        placement: str,
        now: datetime,
    ) -> None:  # pragma: no cover
        raise AssertionError("in-process store cannot be unavailable") from error
