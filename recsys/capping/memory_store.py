"""In-process cap counters: the embedded default (no Redis configured) and the fail-open local limiter.

Same semantics as the Redis store — it runs the same plan with the same algorithm (:func:`engine.run_plan`)
under one lock — but the counts live in this process only: with several service processes each would count
on its own, so use Redis as soon as there is more than one process.

Memory is bounded two ways: every key expires (expiry is judged against the request's ``now``, so tests
with an injected clock behave like Redis), and at most ``max_members`` members are remembered (least
recently seen are forgotten first, which can only let an offer through, never block one wrongly).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from recsys.capping.api import CapCandidate, CapDecision, CapMember, PolicyHolder
from recsys.capping.engine import (
    KeySpace,
    Plan,
    PlanEnforcer,
    RawResult,
    StoredKey,
    StoreUnavailable,
    run_plan,
)

DEFAULT_MAX_MEMBERS = 1_000_000


class _Entry:
    __slots__ = ("expire_ms", "fields", "scores", "value")

    def __init__(self) -> None:
        self.value: int = 0
        self.scores: list[int] | None = None
        self.fields: dict[str, int] | None = None
        self.expire_ms: int | None = None


def _member_of(key: str) -> str:
    return key[: key.index("}") + 1]


class MemoryKV:
    """Redis-like operations over per-member dicts (caller holds the lock and sets ``now_ms``)."""

    def __init__(self, max_members: int) -> None:
        self.max_members = max_members
        self.now_ms = 0
        self._members: OrderedDict[str, dict[str, _Entry]] = OrderedDict()

    def touch(self, tag: str) -> None:
        """Mark a member recently used and drop its expired keys (once per operation)."""
        keys = self._members.get(tag)
        if keys is not None:
            self._members.move_to_end(tag)
            expired = [k for k, e in keys.items() if e.expire_ms is not None and e.expire_ms <= self.now_ms]
            for k in expired:
                del keys[k]
            if not keys:
                del self._members[tag]

    def _get(self, key: str) -> _Entry | None:
        keys = self._members.get(_member_of(key))
        if keys is None:
            return None
        e = keys.get(key)
        if e is not None and e.expire_ms is not None and e.expire_ms <= self.now_ms:
            del keys[key]
            return None
        return e

    def _get_or_create(self, key: str, zset: bool = False) -> _Entry:
        tag = _member_of(key)
        keys = self._members.get(tag)
        if keys is None:
            keys = self._members[tag] = {}
            while len(self._members) > self.max_members:
                self._members.popitem(last=False)
        e = self._get(key)
        if e is None:
            e = keys[key] = _Entry()
            if zset:
                e.scores = []
        return e

    def zremrangebyscore_upto(self, key: str, max_score: int) -> None:
        e = self._get(key)
        if e is not None and e.scores:
            del e.scores[: bisect.bisect_right(e.scores, max_score)]

    def zcard(self, key: str) -> int:
        e = self._get(key)
        return len(e.scores) if e is not None and e.scores is not None else 0

    def zscore_at(self, key: str, rank: int) -> int | None:
        e = self._get(key)
        if e is None or e.scores is None or not 0 <= rank < len(e.scores):
            return None
        return e.scores[rank]

    def zadd(self, key: str, score: int, n: int) -> None:
        e = self._get_or_create(key, zset=True)
        assert e.scores is not None
        for _ in range(n):
            bisect.insort(e.scores, score)

    def ztrim_to(self, key: str, keep: int) -> None:
        e = self._get(key)
        if e is not None and e.scores is not None and len(e.scores) > keep:
            del e.scores[: len(e.scores) - keep]

    def get_int(self, key: str) -> int | None:
        e = self._get(key)
        return None if e is None else e.value

    def hmget_ints(self, key: str, fields: list[str]) -> list[int | None]:
        e = self._get(key)
        if e is None or e.fields is None:
            return [None] * len(fields)
        return [e.fields.get(f) for f in fields]

    def hset_latest(self, key: str, fields: list[str], t: int, ttl_ms: int) -> None:
        """Cool-down writes: each field to ``t`` unless later; prune fields older than ttl; extend the TTL."""
        e = self._get_or_create(key)
        if e.fields is None:
            e.fields = {}
        for f in fields:
            if e.fields.get(f, t) <= t:
                e.fields[f] = t
        for f in [f for f, old in e.fields.items() if old + ttl_ms <= t]:
            del e.fields[f]
        if e.expire_ms is None or e.expire_ms < t + ttl_ms:
            e.expire_ms = t + ttl_ms

    def incrby(self, key: str, n: int) -> None:
        self._get_or_create(key).value += n

    def set_int(self, key: str, value: int) -> None:
        self._get_or_create(key).value = value

    def pexpire(self, key: str, ttl_ms: int) -> None:
        e = self._get(key)
        if e is not None:
            e.expire_ms = self.now_ms + ttl_ms

    def index_add(self, index: str, key: str, expire_ms: int) -> None:
        """No index needed in-process: member_state reads the member's dict."""

    def dump(self, tag: str) -> dict[str, StoredKey]:
        self.touch(tag)
        keys = self._members.get(tag, {})
        out: dict[str, StoredKey] = {}
        for k, e in keys.items():
            if e.fields is not None:
                out[k] = StoredKey(fields=dict(e.fields))
            elif e.scores is not None:
                out[k] = StoredKey(scores=list(e.scores))
            else:
                out[k] = StoredKey(value=e.value)
        return out

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
            self._kv.touch(_member_of(plan.index_key))
            return run_plan(self._kv, plan, k, mode)

    def _write_cooldowns(self, keys: KeySpace, fields: list[str], now_ms: int, ttl_ms: int) -> None:
        with self._lock:
            self._kv.now_ms = now_ms
            self._kv.touch(_member_of(keys.index))
            self._kv.hset_latest(keys.cooldowns, fields, now_ms, ttl_ms)

    def _read(self, keys: KeySpace, now_ms: int) -> dict[str, StoredKey]:
        with self._lock:
            self._kv.now_ms = now_ms
            return self._kv.dump(keys.base)

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
