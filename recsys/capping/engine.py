"""The store-independent half of cap enforcement: which keys a request touches, and what the answer means.

A request is compiled into a :class:`Plan` — the member's hash keys it reads (one per cap, per calendar period
for calendar caps), the fields in them (one per offer / category / family / placement the cap counts per), the
cool-down fields, and for every candidate the counters and cool-downs that concern it. A store runs the plan
atomically (Redis: one Lua script, one round trip; in-process: the same algorithm under a lock,
:func:`run_plan`) and returns a :class:`RawResult`; :func:`decode` turns it into a
:class:`~recsys.capping.api.CapDecision` with reason codes and human details. Both stores share this code, and
it is pure (testable without a server).

Key layout — a handful of hashes per member, all sharing the ``{member_id}`` hash tag (one Redis Cluster slot
per member), every one with a TTL::

    <prefix>:{M0000001}:r:<cap>            rolling window: field <sub> → "t1,t2,..." impression times (ms),
                                           ascending, at most the cap's largest limit; TTL window + 1 min
    <prefix>:{M0000001}:c:<cap>:<period>   calendar window (d2026-11-22 / w2026-W47, member's local time):
                                           field <sub> → count; TTL to the end of the period + 1 min
    <prefix>:{M0000001}:l:<cap>            lifetime: field <sub> → count; TTL lifetime_ttl (refreshed on use)
    <prefix>:{M0000001}:cd                 cool-downs: field <event>:<scope>:<id> → time (ms) of the last
                                           dismissal / purchase; TTL the longest cool-down + 1 min

``<sub>`` is the offer id, category, family or placement the cap counts per, or ``-`` for member-wide caps.
Fields of a rolling hash whose newest time has left the window are dropped when the hash has more than
``ROLLING_PRUNE_AT`` fields (and with the whole hash when its TTL runs out), so memory per member is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from recsys.capping.policy import CapPolicy, PolicyHolder, ResolvedCap, ResolvedPolicy, Scope
from recsys.capping.types import (
    REASON_COOLDOWN_DISMISS_CATEGORY,
    REASON_COOLDOWN_DISMISS_OFFER,
    REASON_PURCHASED,
    REASON_PURCHASED_CATEGORY,
    CapCandidate,
    CapDecision,
    CapEnforcer,
    CapMember,
    Suppression,
    SuppressionCounters,
)
from recsys.capping.windows import WindowKind, current_period, from_ms, iso_z, parse_duration, to_ms
from recsys.schema import EventType

# Extra life given to every key beyond the end of its window (clock skew between service processes).
TTL_SLACK_MS = 60_000
# A rolling hash with more fields than this is pruned of fields whose impressions have all left the window.
ROLLING_PRUNE_AT = 32
# select_and_record considers at most max(DEFAULT_CANDIDATE_WINDOW, 5 * k) ranked candidates: the cost of a
# request grows with the candidates, and a long tail of the ranking almost never reaches the answer.
DEFAULT_CANDIDATE_WINDOW = 50
# Name of the per-process conservative cap added while Redis is unavailable (fail_open).
LOCAL_CAP_NAME = "outage_local"

KIND_COOLDOWN = 1
KIND_CAP = 2


class KeySpace:
    """Key names for one member."""

    def __init__(self, prefix: str, member_id: str) -> None:
        self.base = f"{prefix}:{{{member_id}}}"
        self.cooldowns = f"{self.base}:cd"

    def counter(self, cap: ResolvedCap, period: str | None) -> str:
        key = f"{self.base}:{cap.window.code}:{cap.name}"
        return f"{key}:{period}" if period else key

    @staticmethod
    def cooldown_field(event: str, scope: str, target: str) -> str:
        return f"{event}:{scope}:{target}"


@dataclass
class HashKey:
    """One counter hash a plan reads: its name, window kind (r|c|l) and write parameters."""

    name: str
    kind: str
    window_ms: int  # rolling only
    keep: int  # rolling: times kept per field (largest limit across tiers)
    ttl_ms: int


@dataclass
class CounterRef:
    """One counter: field ``sub`` of hash ``key_idx``, limited to ``limit``."""

    key_idx: int
    cap: ResolvedCap
    sub: str
    kind: str  # "r" | "c" | "l"
    window_ms: int
    limit: int
    period_end_ms: int | None  # calendar only


@dataclass
class CooldownRef:
    field: str
    reason: str
    target: str
    duration_ms: int


@dataclass
class Plan:
    now_ms: int
    cooldown_key: str
    keys: list[HashKey] = field(default_factory=list)
    counters: list[CounterRef] = field(default_factory=list)
    cooldowns: list[CooldownRef] = field(default_factory=list)
    # per candidate: (exempt, cool-down indices, counter indices)
    candidates: list[tuple[bool, list[int], list[int]]] = field(default_factory=list)
    # Only the first ``selectable`` candidates may be selected; the others are only checked on their own.
    selectable: int | None = None

    def lua_args(self, k: int, mode: str) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV for the check-and-record script (see redis_store.CHECK_AND_RECORD_LUA).

        The plan travels as one JSON argument (decoded by cjson inside Redis): cheaper to pack than hundreds
        of separate arguments.
        """
        names = [h.name for h in self.keys] + [self.cooldown_key]
        spec = {
            "k": [[h.kind, h.window_ms, h.keep, h.ttl_ms] for h in self.keys],
            "c": [[c.key_idx + 1, c.sub, c.limit] for c in self.counters],
            "f": [d.field for d in self.cooldowns],
            "d": [d.duration_ms for d in self.cooldowns],
            "x": [
                [1 if e else 0, [j + 1 for j in cds], [i + 1 for i in cts]] for e, cds, cts in self.candidates
            ],
            "m": len(self.candidates) if self.selectable is None else self.selectable,
        }
        return names, [self.now_ms, k, mode, orjson.dumps(spec)]


@dataclass
class RawResult:
    """What a store returns: selected candidate indices (rank order) and suppressions
    ``(candidate, kind, ref, value, hint)`` — kind 1: cool-down ``ref`` with event time ``value``; kind 2:
    counter ``ref`` with count ``value`` and ``hint`` = time (ms) of the impression whose expiry frees a slot.
    """

    selected: list[int]
    suppressed: list[tuple[int, int, int, int, int]]
    # Candidates blocked on their own, by the state before this request (a cool-down, or a counter already
    # at its limit), whatever else the request selects: the rest are the request's capped candidate set.
    blocked: list[int] = field(default_factory=list)


# Which value a cap counts per, as an index into (offer_id, category, family, placement, "-").
_SUB_INDEX = {
    Scope.MEMBER_OFFER: 0,
    Scope.MEMBER_CATEGORY: 1,
    Scope.MEMBER_FAMILY: 2,
    Scope.MEMBER_PLACEMENT: 3,
    Scope.MEMBER: 4,
}


def _lifetime_ms(policy: CapPolicy) -> int:
    return int(parse_duration(policy.lifetime_ttl).total_seconds() * 1000)


def cap_key(
    policy: CapPolicy,
    cap: ResolvedCap,
    keys: KeySpace,
    member: CapMember,
    now: datetime,
    periods: dict[str, tuple[str, int]] | None = None,
) -> tuple[HashKey, int | None]:
    """The hash holding ``cap``'s counts for this member now, and (calendar) the period's end in ms.

    ``periods`` caches the member's current calendar periods across the caps of one request.
    """
    w = cap.window
    now_ms = to_ms(now)
    if w.kind is WindowKind.CALENDAR:
        period = periods.get(w.unit) if periods is not None else None
        if period is None:
            period = current_period(w.unit, now, member.time_zone)
            if periods is not None:
                periods[w.unit] = period
        label, end_ms = period
        return HashKey(keys.counter(cap, label), "c", 0, 0, end_ms - now_ms + TTL_SLACK_MS), end_ms
    if w.kind is WindowKind.ROLLING:
        ttl = w.seconds * 1000 + TTL_SLACK_MS
        return HashKey(keys.counter(cap, None), "r", w.seconds * 1000, max(cap.history_limit, 1), ttl), None
    return HashKey(keys.counter(cap, None), "l", 0, 0, _lifetime_ms(policy)), None


def build_plan(
    policy: CapPolicy,
    rp: ResolvedPolicy,
    keys: KeySpace,
    member: CapMember,
    candidates: Sequence[CapCandidate],
    placement: str,
    now: datetime,
    *,
    with_cooldowns: bool = True,
) -> Plan:
    """Compile a request into the hashes and fields it reads and writes (deduplicated across candidates)."""
    plan = Plan(now_ms=to_ms(now), cooldown_key=keys.cooldowns)
    periods: dict[str, tuple[str, int]] = {}
    # cap name → (hash index, calendar period end, sub-key index, counter index by sub-key)
    key_of_cap: dict[str, tuple[int, int | None, int, dict[str, int]]] = {}
    cooldown_idx: dict[str, int] = {}
    # (reason, field prefix, by offer (else category), duration ms) of each cool-down in force
    cd = rp.cooldowns
    cd_specs = [
        (reason, f"{event}:{scope}:", scope == "offer", seconds * 1000)
        for reason, event, scope, seconds in (
            (REASON_PURCHASED, "purchase", "offer", cd.purchase_offer),
            (REASON_COOLDOWN_DISMISS_OFFER, "dismiss", "offer", cd.dismiss_offer),
            (REASON_PURCHASED_CATEGORY, "purchase", "category", cd.purchase_category),
            (REASON_COOLDOWN_DISMISS_CATEGORY, "dismiss", "category", cd.dismiss_category),
        )
        if seconds and with_cooldowns
    ]
    caps_for = rp.caps_for
    cooldowns, counters, plan_keys = plan.cooldowns, plan.counters, plan.keys
    for cand in candidates:
        offer_id, category, family = cand.offer_id, cand.category, cand.family
        exempt = rp.is_exempt(offer_id, category, cand.exempt)
        cds: list[int] = []
        for reason, prefix, by_offer, ms in cd_specs:
            if exempt and not prefix.startswith("dismiss:"):
                continue  # exempt from counting caps, not from a member's "no"
            target = offer_id if by_offer else category
            fname = prefix + target
            j = cooldown_idx.get(fname)
            if j is None:
                j = cooldown_idx[fname] = len(cooldowns)
                cooldowns.append(CooldownRef(fname, reason, target, ms))
            cds.append(j)
        if exempt:
            plan.candidates.append((not cds, cds, []))  # no cool-down to check: the fast path
            continue
        cts: list[int] = []
        subs = (offer_id, category, family, placement, "-")
        for cap in caps_for(family, category, placement):
            if cap.offers is not None and offer_id not in cap.offers:
                continue
            found = key_of_cap.get(cap.name)
            if found is None:
                hk, end_ms = cap_key(policy, cap, keys, member, now, periods)
                found = key_of_cap[cap.name] = (len(plan_keys), end_ms, _SUB_INDEX[cap.scope], {})
                plan_keys.append(hk)
            ki, end_ms, si, by_sub = found
            sub = subs[si]
            i = by_sub.get(sub)
            if i is None:
                i = by_sub[sub] = len(counters)
                hk = plan_keys[ki]
                counters.append(CounterRef(ki, cap, sub, hk.kind, hk.window_ms, cap.limit, end_ms))
            cts.append(i)
        plan.candidates.append((False, cds, cts))
    return plan


# ---------------------------------------------------------------------------------------------------------
# The algorithm, over any store with Redis-like hash operations (the in-process store uses it; the Lua
# script in redis_store.py is the same algorithm, step for step).
# ---------------------------------------------------------------------------------------------------------


class KV(Protocol):
    def hmget(self, key: str, fields: list[str]) -> list[str | None]: ...
    def hset(self, key: str, field: str, value: str) -> None: ...
    def hincrby(self, key: str, field: str, n: int) -> None: ...
    def hgetall(self, key: str) -> dict[str, str]: ...
    def hdel(self, key: str, field: str) -> None: ...
    def pexpire(self, key: str, ttl_ms: int) -> None: ...


def parse_times(value: str | None, after_ms: int) -> list[int]:
    """The impression times (ms, ascending) of a rolling field that are later than ``after_ms``."""
    if not value:
        return []
    return [t for t in (int(x) for x in value.split(",")) if t > after_ms]


def run_plan(kv: KV, plan: Plan, k: int, mode: str) -> RawResult:
    """Check (mode ``check`` / ``check_record``) or just count (mode ``force``) — the Lua script in Python."""
    now = plan.now_ms
    record = mode in ("check_record", "force")
    check = mode != "force"
    n = len(plan.counters)
    count = [0] * n
    times: list[list[int]] = [[] for _ in range(n)]
    by_key: dict[int, list[int]] = {}
    for i, c in enumerate(plan.counters):
        by_key.setdefault(c.key_idx, []).append(i)
    for ki, idxs in by_key.items():
        hk = plan.keys[ki]
        values = kv.hmget(hk.name, [plan.counters[i].sub for i in idxs])
        for i, v in zip(idxs, values, strict=True):
            if hk.kind == "r":
                times[i] = parse_times(v, now - hk.window_ms)
                count[i] = len(times[i])
            else:
                count[i] = int(v) if v else 0
    stored = list(count)
    added = [0] * n
    cd_values = kv.hmget(plan.cooldown_key, [d.field for d in plan.cooldowns]) if plan.cooldowns else []
    cd_time = [int(v) if v else None for v in cd_values]
    selected: list[int] = []
    suppressed: list[tuple[int, int, int, int, int]] = []

    def _blocked(cds: list[int], cts: list[int]) -> bool:
        for j in cds:
            t = cd_time[j]
            if t is not None and now < t + plan.cooldowns[j].duration_ms:
                return True
        return any(stored[i] + 1 > plan.counters[i].limit for i in cts)

    selectable = len(plan.candidates) if plan.selectable is None else plan.selectable
    for ci, (exempt, cds, cts) in enumerate(plan.candidates[:selectable]):
        if check and len(selected) >= k:
            break
        if exempt:
            selected.append(ci)
            continue
        blocked = False
        if check:
            for j in cds:
                t = cd_time[j]
                if t is not None and now < t + plan.cooldowns[j].duration_ms:
                    suppressed.append((ci, KIND_COOLDOWN, j, t, 0))
                    blocked = True
                    break
            if not blocked:
                for i in cts:
                    c = plan.counters[i]
                    if count[i] + 1 > c.limit:
                        hint = 0
                        if c.kind == "r":
                            rank = count[i] - c.limit
                            hint = times[i][rank] if rank < stored[i] else now
                        suppressed.append((ci, KIND_CAP, i, count[i], hint))
                        blocked = True
                        break
        if not blocked:
            selected.append(ci)
            for i in cts:
                count[i] += 1
                added[i] += 1
    alone = (
        [ci for ci, (exempt, cds, cts) in enumerate(plan.candidates) if not exempt and _blocked(cds, cts)]
        if check
        else []
    )
    if record:
        touched: set[int] = set()
        for i, c in enumerate(plan.counters):
            if added[i]:
                hk = plan.keys[c.key_idx]
                if c.kind == "r":
                    ts = sorted(times[i] + [now] * added[i])[-hk.keep :]
                    kv.hset(hk.name, c.sub, ",".join(str(t) for t in ts))
                else:
                    kv.hincrby(hk.name, c.sub, added[i])
                touched.add(c.key_idx)
        for ki in sorted(touched):
            hk = plan.keys[ki]
            if hk.kind == "r":
                fields = kv.hgetall(hk.name)
                if len(fields) > ROLLING_PRUNE_AT:
                    for f, v in fields.items():
                        if int(v.rsplit(",", 1)[-1]) <= now - hk.window_ms:
                            kv.hdel(hk.name, f)
            kv.pexpire(hk.name, hk.ttl_ms)
    return RawResult(selected, suppressed, alone)


# ---------------------------------------------------------------------------------------------------------
# Decoding: reason codes and human details
# ---------------------------------------------------------------------------------------------------------


def _times(n: int) -> str:
    return f"{n} time{'s' if n != 1 else ''}"


def _subject(cap: ResolvedCap, sub: str) -> str:
    if cap.scope is Scope.MEMBER_OFFER:
        return "this offer shown"
    if cap.scope in (Scope.MEMBER_CATEGORY, Scope.MEMBER_FAMILY):
        return f"{sub} offers shown"
    if cap.scope is Scope.MEMBER_PLACEMENT:
        return f"offers shown on {sub}"
    return "offers shown"


def cap_reason(cap: ResolvedCap) -> str:
    if cap.name == LOCAL_CAP_NAME:
        return f"outage:local_cap:{cap.window.label}"
    return cap.reason


def cap_detail(c: CounterRef, count: int, hint_ms: int, tier: str) -> str:
    cap = c.cap
    if c.limit == 0:
        return f"cap {cap.name} allows no {_subject(cap, c.sub).removesuffix(' shown')} for {tier} members"
    head = f"{_subject(cap, c.sub)} {_times(count)} {cap.window.describe()} (max {c.limit}, cap {cap.name})"
    if c.kind == "r":
        return f"{head}; next allowed {iso_z(from_ms(hint_ms + c.window_ms))}"
    if c.kind == "c":
        assert c.period_end_ms is not None
        return f"{head}; resets {iso_z(from_ms(c.period_end_ms))}"
    return f"{head}; lifetime cap, does not reset"


def cooldown_detail(d: CooldownRef, t_ms: int) -> str:
    since = iso_z(from_ms(t_ms))
    until = iso_z(from_ms(t_ms + d.duration_ms))
    if d.reason == REASON_PURCHASED:
        return f"bought {since}; not shown again until {until}"
    if d.reason == REASON_PURCHASED_CATEGORY:
        return f"a {d.target} offer was bought {since}; category hidden until {until}"
    if d.reason == REASON_COOLDOWN_DISMISS_OFFER:
        return f"dismissed {since}; hidden until {until}"
    return f"a {d.target} offer was dismissed {since}; category hidden until {until}"


def decode(
    plan: Plan, raw: RawResult, candidates: Sequence[CapCandidate], tier: str, degraded: str | None = None
) -> CapDecision:
    suppressed: list[Suppression] = []
    # A member at a cap has most candidates suppressed by the same counter (or cool-down) with the same
    # count and time: each (reason, detail) is formatted once per request.
    texts: dict[tuple[int, int, int, int], tuple[str, str]] = {}
    for ci, kind, ref, value, hint in raw.suppressed:
        text = texts.get((kind, ref, value, hint))
        if text is None:
            if kind == KIND_COOLDOWN:
                d = plan.cooldowns[ref]
                text = (d.reason, cooldown_detail(d, value))
            else:
                c = plan.counters[ref]
                text = (cap_reason(c.cap), cap_detail(c, value, hint, tier))
            texts[(kind, ref, value, hint)] = text
        suppressed.append(Suppression(candidates[ci].offer_id, *text))
    return CapDecision(
        selected=[candidates[i].offer_id for i in raw.selected],
        suppressed=suppressed,
        degraded=degraded,
        blocked=[candidates[i].offer_id for i in raw.blocked],
    )


# ---------------------------------------------------------------------------------------------------------
# member_state
# ---------------------------------------------------------------------------------------------------------


def state_keys(policy: CapPolicy, member: CapMember, now: datetime, keys: KeySpace) -> list[str]:
    """The hashes member_state reads: each cap's current hash, and the cool-downs."""
    rp = policy.resolved(member.tier)
    return [cap_key(policy, cap, keys, member, now)[0].name for cap in rp.caps] + [keys.cooldowns]


def state_view(
    policy: CapPolicy,
    member: CapMember,
    now: datetime,
    keys: KeySpace,
    stored: dict[str, dict[str, str]],
    *,
    store: str,
) -> dict[str, Any]:
    """The support-staff view of one member: each cap's count, limit and reset, and active cool-downs.

    ``stored`` maps the names from :func:`state_keys` to their hash fields (missing = empty).
    """
    rp = policy.resolved(member.tier)
    now_ms = to_ms(now)
    rows: list[dict[str, Any]] = []
    for cap in rp.caps:
        hk, end_ms = cap_key(policy, cap, keys, member, now)
        fields = dict(stored.get(hk.name) or {})
        # Member-wide caps and caps with an explicit filter list are always shown, even at zero.
        listed = {
            Scope.MEMBER: ["-"],
            Scope.MEMBER_FAMILY: cap.families,
            Scope.MEMBER_CATEGORY: cap.categories,
            Scope.MEMBER_PLACEMENT: cap.placements,
            Scope.MEMBER_OFFER: cap.offers,
        }[cap.scope]
        for sub in listed or ():
            fields.setdefault(sub, "")
        for sub, value in sorted(fields.items()):
            resets: str | None = iso_z(from_ms(end_ms)) if end_ms is not None else None
            blocked: str | None = None
            if hk.kind == "r":
                live = parse_times(value, now_ms - hk.window_ms)
                n = len(live)
                if not live and value:
                    continue  # every impression has left the window
                if live:
                    resets = iso_z(from_ms(live[0] + hk.window_ms))
                    if n >= cap.limit > 0:
                        blocked = iso_z(from_ms(live[n - cap.limit] + hk.window_ms))
            else:
                n = int(value) if value else 0
                if n >= cap.limit:
                    blocked = resets if hk.kind == "c" else "never"
            rows.append(
                {
                    "cap": cap.name,
                    "scope": cap.scope.value,
                    "key": sub,
                    "window": cap.window.spec,
                    "limit": cap.limit,
                    "count": n,
                    "remaining": max(cap.limit - n, 0),
                    "resets_at": resets,
                    "blocked_until": blocked,
                    "reason_code": cap_reason(cap),
                }
            )
    cd = rp.cooldowns
    durations = {
        ("dismiss", "offer"): (REASON_COOLDOWN_DISMISS_OFFER, cd.dismiss_offer),
        ("dismiss", "category"): (REASON_COOLDOWN_DISMISS_CATEGORY, cd.dismiss_category),
        ("purchase", "offer"): (REASON_PURCHASED, cd.purchase_offer),
        ("purchase", "category"): (REASON_PURCHASED_CATEGORY, cd.purchase_category),
    }
    cooldowns: list[dict[str, Any]] = []
    for fname, value in (stored.get(keys.cooldowns) or {}).items():
        event, scope, target = [*fname.split(":", 2), "", ""][:3]
        reason, seconds = durations.get((event, scope), ("", 0))
        t = int(value)
        if seconds and now_ms < t + seconds * 1000:
            cooldowns.append(
                {
                    "reason_code": reason,
                    "scope": scope,
                    "target": target,
                    "since": iso_z(from_ms(t)),
                    "until": iso_z(from_ms(t + seconds * 1000)),
                }
            )
    return {
        "member_id": member.member_id,
        "tier": member.tier,
        "time_zone": member.time_zone,
        "now": iso_z(now),
        "policy_version": policy.version,
        "count_on": policy.count_on,
        "store": store,
        "degraded": None,
        "caps": sorted(rows, key=lambda r: (r["cap"], r["key"])),
        "cooldowns": sorted(cooldowns, key=lambda d: (d["reason_code"], d["target"])),
    }


# ---------------------------------------------------------------------------------------------------------
# The enforcer over a plan-running store
# ---------------------------------------------------------------------------------------------------------


class StoreUnavailable(Exception):
    """The counter store did not answer in time (or at all); the outage policy applies."""


def max_cooldown_ms(policy: CapPolicy) -> int:
    """The longest cool-down of any kind and tier (+ slack): the TTL of the cool-down hash and its pruning."""
    tiers = ["", *[t.value for t in policy.tiers]]
    longest = max(
        max(c.dismiss_offer, c.dismiss_category, c.purchase_offer, c.purchase_category)
        for c in (policy.resolved(t).cooldowns for t in tiers)
    )
    return longest * 1000 + TTL_SLACK_MS


def cooldown_fields(policy: CapPolicy, member: CapMember, offer: CapCandidate, event: str) -> list[str]:
    """The cool-down fields an event sets: those with a duration for this member's tier or any other (so a
    tier change does not lose a dismissal)."""
    tiers = [member.tier, *[t.value for t in policy.tiers]]
    return [
        KeySpace.cooldown_field(event, scope, offer.offer_id if scope == "offer" else offer.category)
        for scope in ("offer", "category")
        if any(getattr(policy.resolved(t).cooldowns, f"{event}_{scope}") for t in tiers)
    ]


def _aware(now: datetime) -> datetime:
    """Naive datetimes are taken as UTC (everywhere: counting, calendar periods, details)."""
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Selection:
    """One select-and-record call, planned: what the store runs and what the decision is decoded from."""

    member: CapMember
    candidates: Sequence[CapCandidate]  # the selectable ones (the outage policy sees only these)
    k: int
    placement: str
    now: datetime
    record: bool
    plan: Plan
    mode: str
    planned: Sequence[CapCandidate]  # what the plan indexes: the selectable ones, then ``also_check``


class PlanEnforcer(CapEnforcer):
    """select_and_record / record_event / member_state over a store that runs plans (see subclasses)."""

    store_name = "abstract"
    # Only the first max(candidate_window, 5 * k) ranked candidates are considered (None: all of them).
    candidate_window: int | None = DEFAULT_CANDIDATE_WINDOW

    def __init__(self, holder: PolicyHolder, key_prefix: str) -> None:
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty and contain no braces, got {key_prefix!r}")
        self.holder = holder
        self.key_prefix = key_prefix
        self.counters = SuppressionCounters()

    # -- store hooks ------------------------------------------------------------------------------------
    def _execute(self, plan: Plan, k: int, mode: str) -> RawResult:
        raise NotImplementedError

    def _write_cooldowns(self, keys: KeySpace, fields: list[str], now_ms: int, ttl_ms: int) -> None:
        """Set each cool-down field to ``now_ms`` (unless later), prune fields older than ``ttl_ms``."""
        raise NotImplementedError

    def _read(self, names: list[str], now_ms: int) -> dict[str, dict[str, str]]:
        """The fields of each hash (missing hashes may be left out)."""
        raise NotImplementedError

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
        raise NotImplementedError

    def _degraded_event(
        self,
        error: StoreUnavailable,
        member: CapMember,
        offer: CapCandidate,
        event: str,
        placement: str,
        now: datetime,
    ) -> None:
        raise NotImplementedError

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
    ) -> CapDecision:
        if k <= 0 or not candidates:
            return CapDecision(selected=[], suppressed=[], degraded=None)
        call = self._selection(member, candidates, k, placement, now, record, also_check)
        try:
            raw = self._execute(call.plan, k, call.mode)
        except StoreUnavailable as e:
            return self._decided(call, e)
        return self._decided(call, raw)

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
        """:meth:`select_and_record` for an event loop: the store's round trip is awaited (see
        :meth:`_aexecute`)."""
        if k <= 0 or not candidates:
            return CapDecision(selected=[], suppressed=[], degraded=None)
        call = self._selection(member, candidates, k, placement, now, record, also_check)
        try:
            raw = await self._aexecute(call.plan, k, call.mode)
        except StoreUnavailable as e:
            return self._decided(call, e)
        return self._decided(call, raw)

    async def _aexecute(self, plan: Plan, k: int, mode: str) -> RawResult:
        """:meth:`_execute` awaited; stores without an asyncio client run it in place."""
        return self._execute(plan, k, mode)

    def _selection(
        self,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool,
        also_check: Sequence[CapCandidate] = (),
    ) -> _Selection:
        now = _aware(now)
        if self.candidate_window is not None:
            candidates = candidates[: max(self.candidate_window, 5 * k)]
        planned = [*candidates, *also_check] if also_check else candidates
        policy = self.holder.policy
        rp = policy.resolved(member.tier)
        keys = KeySpace(self.key_prefix, member.member_id)
        plan = build_plan(policy, rp, keys, member, planned, placement, now)
        plan.selectable = len(candidates)
        mode = "check_record" if record and policy.count_on == "serve" else "check"
        return _Selection(member, candidates, k, placement, now, record, plan, mode, planned)

    def _decided(self, call: _Selection, outcome: RawResult | StoreUnavailable) -> CapDecision:
        """The decision from the store's result, or from the outage policy when the store was unavailable;
        counted either way."""
        if isinstance(outcome, StoreUnavailable):
            decision = self._degraded(
                outcome,
                call.member,
                call.candidates,
                call.k,
                call.placement,
                call.now,
                call.record,
            )
        else:
            decision = decode(call.plan, outcome, call.planned, call.member.tier)
        self.counters.add_many([s.reason for s in decision.suppressed])
        if decision.degraded:
            self.counters.add(f"degraded:{decision.degraded.split(':', 1)[0]}")
        return decision

    def record_event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> None:
        event = EventType(event_type)  # ValueError names the bad type
        now = _aware(now)
        policy = self.holder.policy
        keys = KeySpace(self.key_prefix, member.member_id)
        try:
            if event is EventType.IMPRESSION:
                if policy.count_on != "event":
                    return  # counted when served; counting again would double count
                rp = policy.resolved(member.tier)
                plan = build_plan(policy, rp, keys, member, [offer], placement, now, with_cooldowns=False)
                if plan.counters:
                    self._execute(plan, 1, "force")
            elif event in (EventType.DISMISS, EventType.PURCHASE):
                fields = cooldown_fields(policy, member, offer, event.value)
                if fields:
                    self._write_cooldowns(keys, fields, to_ms(now), max_cooldown_ms(policy))
        except StoreUnavailable as e:
            self.counters.add(f"event_degraded:{event.value}")
            self._degraded_event(e, member, offer, event.value, placement, now)

    def member_state(self, member: CapMember, now: datetime) -> dict[str, Any]:
        now = _aware(now)
        policy = self.holder.policy
        keys = KeySpace(self.key_prefix, member.member_id)
        try:
            stored = self._read(state_keys(policy, member, now, keys), to_ms(now))
        except StoreUnavailable as e:
            view = state_view(policy, member, now, keys, {}, store=self.store_name)
            view.update(degraded=f"unavailable: {e}", caps=[], cooldowns=[])
            return view
        return state_view(policy, member, now, keys, stored, store=self.store_name)
