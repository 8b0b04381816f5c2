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
  selected offer, atomically per member (Redis: the member's one cap hash is read — by the member store,
  with the profile, in the pipeline — and the writes are committed by one script only if the hash did not
  change meanwhile), so concurrent requests for one member can never together exceed a cap.
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

from recsys.capping.enforcer import CapStore, CoreCapEnforcer, ResilientCapEnforcer
from recsys.capping.memory_store import MemoryCapStore
from recsys.capping.policy import (
    CapPolicy,
    PolicyError,
    PolicyHolder,
    ReloadResult,
    load_policy,
    parse_policy,
)
from recsys.capping.redis_store import RedisCapStore
from recsys.capping.types import (
    REASON_COOLDOWN_DISMISS_CATEGORY,
    REASON_COOLDOWN_DISMISS_OFFER,
    REASON_OUTAGE_CLOSED,
    REASON_PURCHASED,
    REASON_PURCHASED_CATEGORY,
    CapCandidate,
    CapDecision,
    CapEnforcer,
    CapMember,
    CapState,
    Suppression,
    SuppressionCounters,
)
from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig
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
    "CapState",
    "PolicyError",
    "PolicyHolder",
    "ReloadResult",
    "Suppression",
    "SuppressionCounters",
    "build_enforcer",
    "load_policy",
    "parse_policy",
]


def build_enforcer(
    url: str | None,
    policy: CapPolicy | PolicyHolder,
    *,
    key_prefix: str = "caps",
    timeout_ms: float | None = None,
    clients: RedisClients | None = None,
    candidate_window: int | None = 50,
) -> CapEnforcer:
    """The enforcer for a store URL: a Redis URL (``redis://``, ``rediss://``, ``unix://``, cluster and
    sentinel URLs, see :mod:`recsys.stores.redis`) → Redis (shared by every process), ``None`` / ``""`` /
    ``memory://`` → in-process counters (same semantics, one process only).

    ``clients``: the process's Redis clients (shared with the member store: one timeout and circuit breaker
    for both). Without them the enforcer builds its own from ``url``, with ``timeout_ms`` (default: the
    policy's ``timeout_ms``) and the policy's breaker back-off.

    ``candidate_window``: ``select_and_record`` looks at the first ``max(candidate_window, 5 * k)`` ranked
    candidates only (the later ones are neither selected nor suppressed; the caller treats them as ranked
    below the answer); a request's cost grows with its candidates. ``None`` walks the whole list.
    """
    holder = policy if isinstance(policy, PolicyHolder) else PolicyHolder.static(policy)
    if candidate_window is not None and candidate_window < 1:
        raise ValueError(f"candidate_window must be at least 1 or None, got {candidate_window}")
    store: CapStore
    if not url or url.startswith("memory://"):
        store = MemoryCapStore(key_prefix=key_prefix)
    elif is_redis_url(url):
        own = clients is None
        if clients is None:
            p = holder.policy
            clients = RedisClients(
                RedisConfig(
                    url,
                    policy=RedisCallPolicy(
                        timeout_ms=timeout_ms if timeout_ms is not None else p.timeout_ms,
                        breaker_backoff_ms=p.outage.breaker_backoff_ms,
                        breaker_max_backoff_ms=p.outage.breaker_max_backoff_ms,
                    ),
                ),
                name="cap store",
            )
        store = RedisCapStore(clients, key_prefix=key_prefix, own_clients=own)
    else:
        raise ValueError(f"unsupported cap store URL {url!r}: use redis://host:port/db, memory:// or nothing")
    core = CoreCapEnforcer(holder, store, candidate_window=candidate_window)
    return ResilientCapEnforcer(core, local_store=lambda max_members: MemoryCapStore(max_members, key_prefix))
