"""Frequency capping: the interface the recommend pipeline, the events endpoint and the caps endpoint call.

Quick start (the whole surface a caller needs)::

    from recsys.capping.api import CapCandidate, CapMember, PolicyHolder, build_enforcer

    holder = PolicyHolder("config/caps.yaml")      # validated; polls the file's mtime; holder.reload()
    caps = build_enforcer(redis_url, holder)       # "redis://..." → Redis; None / "memory://" → in-process

    member = CapMember("M0000001", tier="gold", time_zone="Asia/Shanghai")
    ranked = [CapCandidate("OFF123", family="upsell", category="cabin_upgrade"), ...]   # best first
    decision = caps.select_and_record(member, ranked, k=5, placement="home", now=datetime.now(UTC))
    decision.selected        # offer ids to return, in rank order, at most k
    decision.suppressed      # [Suppression(offer_id, reason, detail)] for the debug response
    decision.degraded        # None, or e.g. "fail_closed: redis timeout" when the store was unavailable

    caps.record_event(member, offer, "dismiss", "home", now)   # POST /v1/events: impression/dismiss/purchase
    caps.member_state(member, now)         # JSON-able dict for GET /v1/members/{id}/caps
    caps.counters.snapshot()               # {"cap:member_offer:rolling_7d": 12, ...} for metrics
    caps.status()                          # {"store": "redis", "breaker_open": False, ...}; caps.ping()
    caps.close()                           # at shutdown (lifespan)

Semantics (docs/capping.md has the full policy format):

- ``select_and_record`` walks the candidates in rank order and drops every one that would break a cap or is
  in a cool-down, *taking into account the offers already selected in this request*, until ``k`` are
  selected (within the first ``max(candidate_window, 5 * k)`` candidates, 50 by default; later ones are
  left out of the decision — neither selected nor suppressed). Exempt offers are never capped nor counted.
  When ``record`` is true and the policy says ``count_on: serve`` one impression is recorded for every
  selected offer, atomically per member (Redis: one Lua script, one round trip, whatever the number of
  candidates), so concurrent requests for one member can never together exceed a cap.
- With ``count_on: event`` impressions are counted from ``record_event(..., "impression", ...)`` instead
  (impressions reported while ``count_on: serve`` are ignored, so nothing is counted twice). ``dismiss``
  starts the dismissal cool-downs, ``purchase`` the purchase suppression; ``click`` is ignored.
- Calls never raise on a store failure and never wait much longer than ``timeout_ms`` (the policy's, default
  20 ms): the outage policy applies (``fail_closed``: only exempt offers; ``fail_open``: the policy's caps
  plus a conservative per-process cap, counted in this process only) and a circuit breaker retries Redis
  after a short back-off.
- Time is always the ``now`` argument (aware; a naive one is taken as UTC); nothing reads the clock, so
  tests can test window edges.

``member_state`` returns ``{"member_id", "tier", "time_zone", "now", "policy_version", "count_on", "store",
"degraded", "caps": [{"cap", "scope", "key", "window", "limit", "count", "remaining", "resets_at",
"blocked_until", "reason_code"}, ...], "cooldowns": [{"reason_code", "scope", "target", "since", "until"}]}``
(times as ``2026-11-23T08:00Z`` strings); see docs/capping.md.

Reason codes (``Suppression.reason``, also the keys of ``counters``):
``cap:<scope>:<window>`` (e.g. ``cap:member_offer:rolling_7d``, ``cap:member_family:day``,
``cap:member:lifetime``),
``cooldown:dismiss:offer``, ``cooldown:dismiss:category``, ``purchased``, ``purchased:category``,
``outage:fail_closed``, ``outage:local_cap:<window>``. ``counters`` also counts ``degraded:fail_closed`` /
``degraded:fail_open`` (calls answered under the outage policy) and ``event_degraded:<event type>``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recsys.capping.policy import (
    CapPolicy,
    PolicyError,
    PolicyHolder,
    ReloadResult,
    load_policy,
    parse_policy,
)
from recsys.urls import is_redis_url

__all__ = [
    "REASON_COOLDOWN_DISMISS_CATEGORY",
    "REASON_COOLDOWN_DISMISS_OFFER",
    "REASON_OUTAGE_CLOSED",
    "REASON_PURCHASED",
    "REASON_PURCHASED_CATEGORY",
    "CapCandidate",
    "CapDecision",
    "CapEnforcer",
    "CapMember",
    "CapPolicy",
    "PolicyError",
    "PolicyHolder",
    "ReloadResult",
    "Suppression",
    "SuppressionCounters",
    "build_enforcer",
    "load_policy",
    "parse_policy",
]

REASON_COOLDOWN_DISMISS_OFFER = "cooldown:dismiss:offer"
REASON_COOLDOWN_DISMISS_CATEGORY = "cooldown:dismiss:category"
REASON_PURCHASED = "purchased"
REASON_PURCHASED_CATEGORY = "purchased:category"
REASON_OUTAGE_CLOSED = "outage:fail_closed"


@dataclass(frozen=True)
class CapMember:
    """Who is being capped. ``time_zone`` is an IANA name (calendar windows follow it; unknown → UTC)."""

    member_id: str
    tier: str
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        if not self.member_id or "{" in self.member_id or "}" in self.member_id:
            raise ValueError(f"member_id must be non-empty and contain no braces, got {self.member_id!r}")


@dataclass(frozen=True)
class CapCandidate:
    """One ranked candidate offer. ``family``/``category`` are OfferFamily/OfferCategory values."""

    offer_id: str
    family: str
    category: str
    exempt: bool = False


@dataclass(frozen=True)
class Suppression:
    """Why an offer was left out: a ``reason`` code and a human ``detail`` for marketers and support."""

    offer_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class CapDecision:
    """The offers to show (rank order, at most k), the ones dropped and why, and any store degradation."""

    selected: list[str]
    suppressed: list[Suppression]
    degraded: str | None = None
    # The considered candidates that break a cap or are in a cool-down on their own, before anything this
    # request selects counts (None: unknown, the store was unavailable). The others are the request's
    # candidate set after caps; ``suppressed`` also holds offers only this request's own picks crowded out.
    blocked: list[str] | None = None


class SuppressionCounters:
    """Thread-safe counts of suppressions by reason code (plus ``degraded:<mode>`` per degraded call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def add_many(self, reasons: Sequence[str]) -> None:
        if not reasons:
            return
        with self._lock:
            self._counts.update(reasons)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class CapEnforcer(ABC):
    """Frequency-cap enforcement over a counter store (Redis or in-process). Thread-safe."""

    counters: SuppressionCounters
    holder: PolicyHolder

    @property
    def policy(self) -> CapPolicy:
        """The policy in force now (may change on reload)."""
        return self.holder.policy

    @abstractmethod
    def select_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
    ) -> CapDecision:
        """Take up to ``k`` candidates in rank order that break no cap; record their impressions.

        ``also_check``: candidates never selected, only checked on their own (they appear in
        ``CapDecision.blocked`` when blocked): the rest of a candidate set the ranking left out."""

    async def aselect_and_record(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool = True,
        also_check: Sequence[CapCandidate] = (),
    ) -> CapDecision:
        """:meth:`select_and_record` for an event loop (stores without an asyncio client answer in place)."""
        return self.select_and_record(member, candidates, k, placement, now, record, also_check)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release asyncio connections (from the event loop that used them)."""

    @abstractmethod
    def record_event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> None:
        """Apply an app event: impression (count_on=event), dismiss (cool-downs), purchase (suppression)."""

    @abstractmethod
    def member_state(self, member: CapMember, now: datetime) -> dict[str, Any]:
        """A JSON-able view for support staff: each cap's count, limit and reset time; active cool-downs."""

    def ping(self) -> bool:
        """True when the counter store answers (always true in-process); for readiness checks."""
        return True

    def status(self) -> dict[str, Any]:
        """Store health for metrics and admin pages: store, breaker_open, last_error, failures."""
        return {"store": "memory", "breaker_open": False, "last_error": None, "failures": 0}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def build_enforcer(
    url: str | None,
    policy: CapPolicy | PolicyHolder,
    *,
    key_prefix: str = "caps",
    timeout_ms: float | None = None,
    client: Any = None,
    candidate_window: int | None = 50,
) -> CapEnforcer:
    """The enforcer for a store URL: ``redis://`` / ``rediss://`` / ``unix://`` → Redis (shared by every
    process), ``None`` / ``""`` / ``memory://`` → in-process counters (same semantics, one process only).

    ``timeout_ms`` overrides the policy's ``timeout_ms`` (socket timeout of every Redis call). ``client`` lets
    a caller pass a ready ``redis.Redis`` (it must use ``decode_responses=False``).

    ``candidate_window``: ``select_and_record`` looks at the first ``max(candidate_window, 5 * k)`` ranked
    candidates only (the later ones are neither selected nor suppressed; the caller treats them as ranked
    below the answer); a request's cost grows with its candidates. ``None`` walks the whole list.
    """
    holder = policy if isinstance(policy, PolicyHolder) else PolicyHolder.static(policy)
    if candidate_window is not None and candidate_window < 1:
        raise ValueError(f"candidate_window must be at least 1 or None, got {candidate_window}")
    enforcer: Any
    if not url or url.startswith("memory://"):
        from recsys.capping.memory_store import EmbeddedCapEnforcer

        enforcer = EmbeddedCapEnforcer(holder, key_prefix=key_prefix)
    elif is_redis_url(url):
        from recsys.capping.redis_store import RedisCapEnforcer

        enforcer = RedisCapEnforcer(url, holder, key_prefix=key_prefix, timeout_ms=timeout_ms, client=client)
    else:
        raise ValueError(f"unsupported cap store URL {url!r}: use redis://host:port/db, memory:// or nothing")
    enforcer.candidate_window = candidate_window
    return enforcer
