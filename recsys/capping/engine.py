"""The store-independent half of cap enforcement: which keys a request touches, and what the answer means.

A request is compiled into a :class:`Plan` — the counter keys (one per cap × sub-key × calendar period), the
cool-down keys, and for every candidate the indices of the keys that concern it. A store then runs the plan
atomically (Redis: one Lua script; in-process: the same algorithm under a lock, :func:`run_plan`) and
returns a :class:`RawResult`; :func:`decode` turns it into a :class:`~recsys.capping.api.CapDecision` with
reason codes and human details. Keeping this logic here means both stores share it, and it is pure
(testable without a server).

Key layout (every key of one member shares the ``{member_id}`` hash tag, so a Redis Cluster keeps a member
on one slot, and every key has a TTL)::

    <prefix>:{M0000001}:r:<cap>:<sub>            rolling window: sorted set of impression times (ms)
    <prefix>:{M0000001}:c:<cap>:<sub>:<period>   calendar window: counter for d2026-11-22 / w2026-W47
    <prefix>:{M0000001}:l:<cap>:<sub>            lifetime: counter (TTL = lifetime_ttl, refreshed on use)
    <prefix>:{M0000001}:cd                       cool-downs: hash <event>:<scope>:<id> → time (ms) of the
                                                 last dismissal / purchase (expired fields pruned on write)
    <prefix>:{M0000001}:idx                      sorted set of the member's keys by expiry (for member_state)

``<sub>`` is the offer id, category, family or placement the cap counts per, or ``-`` for member-wide caps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from recsys.capping.api import (
    REASON_COOLDOWN_DISMISS_CATEGORY,
    REASON_COOLDOWN_DISMISS_OFFER,
    REASON_PURCHASED,
    REASON_PURCHASED_CATEGORY,
    CapCandidate,
    CapDecision,
    CapEnforcer,
    CapMember,
    PolicyHolder,
    Suppression,
    SuppressionCounters,
)
from recsys.capping.policy import CapPolicy, ResolvedCap, ResolvedPolicy, Scope
from recsys.capping.windows import WindowKind, calendar_period, from_ms, iso_z, parse_duration, to_ms
from recsys.schema import EventType

# Extra life given to every key beyond the end of its window (clock skew between service processes).
TTL_SLACK_MS = 60_000
# Name of the per-process conservative cap added while Redis is unavailable (fail_open).
LOCAL_CAP_NAME = "outage_local"

KIND_COOLDOWN = 1
KIND_CAP = 2


class KeySpace:
    """Key names for one member."""

    def __init__(self, prefix: str, member_id: str) -> None:
        self.base = f"{prefix}:{{{member_id}}}"
        self.index = f"{self.base}:idx"
        self.cooldowns = f"{self.base}:cd"

    def counter(self, cap: ResolvedCap, sub: str, period: str | None) -> str:
        key = f"{self.base}:{cap.window.code}:{cap.name}:{sub}"
        return f"{key}:{period}" if period else key

    @staticmethod
    def cooldown_field(event: str, scope: str, target: str) -> str:
        return f"{event}:{scope}:{target}"


@dataclass
class CounterRef:
    key: str
    cap: ResolvedCap
    sub: str
    kind: str  # "r" | "c" | "l"
    window_ms: int  # rolling only
    limit: int
    keep: int  # rolling: entries kept (largest limit across tiers)
    ttl_ms: int
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
    index_key: str
    cooldown_key: str
    counters: list[CounterRef] = field(default_factory=list)
    cooldowns: list[CooldownRef] = field(default_factory=list)
    # per candidate: (exempt, cool-down indices, counter indices)
    candidates: list[tuple[bool, list[int], list[int]]] = field(default_factory=list)

    def lua_args(self, k: int, mode: str, nonce: str) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV for the check-and-record script (see redis_store.CHECK_AND_RECORD_LUA).

        The plan travels as one JSON argument (decoded by cjson inside Redis): packing hundreds of separate
        arguments costs more client CPU than the script itself.
        """
        keys = [c.key for c in self.counters] + [self.cooldown_key, self.index_key]
        spec = {
            "c": [[c.kind, c.window_ms, c.limit, c.keep, c.ttl_ms] for c in self.counters],
            "f": [d.field for d in self.cooldowns],
            "d": [d.duration_ms for d in self.cooldowns],
            "x": [
                [1 if e else 0, [j + 1 for j in cds], [i + 1 for i in cts]] for e, cds, cts in self.candidates
            ],
        }
        return keys, [self.now_ms, k, mode, nonce, json.dumps(spec, separators=(",", ":"))]


@dataclass
class RawResult:
    """What a store returns: selected candidate indices (rank order) and suppressions
    ``(candidate, kind, ref, value, hint)`` — kind 1: cool-down ``ref`` with event time ``value``; kind 2: cap
    counter ``ref`` with count ``value`` and ``hint`` = time (ms) of the entry whose expiry frees a slot."""

    selected: list[int]
    suppressed: list[tuple[int, int, int, int, int]]


def new_nonce() -> str:
    return os.urandom(6).hex()


def _cooldown_targets(rp: ResolvedPolicy, cand: CapCandidate) -> list[tuple[str, str, str, str, int]]:
    """(reason, event, scope, target, seconds) of every cool-down that can hide this candidate."""
    cd = rp.cooldowns
    out = []
    if cd.purchase_offer:
        out.append((REASON_PURCHASED, "purchase", "offer", cand.offer_id, cd.purchase_offer))
    if cd.dismiss_offer:
        out.append((REASON_COOLDOWN_DISMISS_OFFER, "dismiss", "offer", cand.offer_id, cd.dismiss_offer))
    if cd.purchase_category:
        out.append((REASON_PURCHASED_CATEGORY, "purchase", "category", cand.category, cd.purchase_category))
    if cd.dismiss_category:
        out.append(
            (REASON_COOLDOWN_DISMISS_CATEGORY, "dismiss", "category", cand.category, cd.dismiss_category)
        )
    return out


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
    """Compile a request into the keys it reads and writes (deduplicated across candidates)."""
    now_ms = to_ms(now)
    plan = Plan(now_ms=now_ms, index_key=keys.index, cooldown_key=keys.cooldowns)
    counter_idx: dict[str, int] = {}
    cooldown_idx: dict[str, int] = {}
    periods: dict[str, tuple[str, int]] = {}
    lifetime_ms = int(_lifetime_seconds(policy) * 1000)
    for cand in candidates:
        if rp.is_exempt(cand.offer_id, cand.category, cand.exempt):
            plan.candidates.append((True, [], []))
            continue
        cds: list[int] = []
        if with_cooldowns:
            for reason, event, scope, target, seconds in _cooldown_targets(rp, cand):
                fname = KeySpace.cooldown_field(event, scope, target)
                j = cooldown_idx.get(fname)
                if j is None:
                    j = cooldown_idx[fname] = len(plan.cooldowns)
                    plan.cooldowns.append(CooldownRef(fname, reason, target, seconds * 1000))
                cds.append(j)
        cts: list[int] = []
        for cap in rp.caps_for(cand.family, cand.category, placement):
            if cap.offers is not None and cand.offer_id not in cap.offers:
                continue
            sub = cap.subkey(cand.family, cand.category, cand.offer_id, placement)
            w = cap.window
            period: str | None = None
            end_ms: int | None = None
            if w.kind is WindowKind.CALENDAR:
                if w.unit not in periods:
                    label, _, end = calendar_period(w.unit, now, member.time_zone)
                    periods[w.unit] = (label, to_ms(end))
                period, end_ms = periods[w.unit]
            key = keys.counter(cap, sub, period)
            i = counter_idx.get(key)
            if i is None:
                i = counter_idx[key] = len(plan.counters)
                if w.kind is WindowKind.ROLLING:
                    ttl = w.seconds * 1000 + TTL_SLACK_MS
                elif w.kind is WindowKind.CALENDAR:
                    assert end_ms is not None
                    ttl = end_ms - now_ms + TTL_SLACK_MS
                else:
                    ttl = lifetime_ms
                plan.counters.append(
                    CounterRef(
                        key=key,
                        cap=cap,
                        sub=sub,
                        kind=w.code,
                        window_ms=w.seconds * 1000,
                        limit=cap.limit,
                        keep=max(cap.history_limit, 1),
                        ttl_ms=ttl,
                        period_end_ms=end_ms,
                    )
                )
            cts.append(i)
        plan.candidates.append((False, cds, cts))
    return plan


def _lifetime_seconds(policy: CapPolicy) -> float:
    return parse_duration(policy.lifetime_ttl).total_seconds()


# ---------------------------------------------------------------------------------------------------------
# The algorithm, over any key-value store with Redis-like operations (the in-process store uses it; the Lua
# script in redis_store.py is the same algorithm line for line).
# ---------------------------------------------------------------------------------------------------------


class KV(Protocol):
    def zremrangebyscore_upto(self, key: str, max_score: int) -> None: ...
    def zcard(self, key: str) -> int: ...
    def zscore_at(self, key: str, rank: int) -> int | None: ...
    def zadd(self, key: str, score: int, n: int) -> None: ...
    def ztrim_to(self, key: str, keep: int) -> None: ...
    def get_int(self, key: str) -> int | None: ...
    def hmget_ints(self, key: str, fields: list[str]) -> list[int | None]: ...
    def incrby(self, key: str, n: int) -> None: ...
    def set_int(self, key: str, value: int) -> None: ...
    def pexpire(self, key: str, ttl_ms: int) -> None: ...
    def index_add(self, index: str, key: str, expire_ms: int) -> None: ...


def run_plan(kv: KV, plan: Plan, k: int, mode: str) -> RawResult:
    """Check (mode ``check``/``check_record``) or just count (mode ``force``) — the Lua script in Python."""
    now = plan.now_ms
    record = mode in ("check_record", "force")
    count: list[int] = []
    stored: list[int] = []
    for c in plan.counters:
        if c.kind == "r":
            kv.zremrangebyscore_upto(c.key, now - c.window_ms)
            n = kv.zcard(c.key)
        else:
            n = kv.get_int(c.key) or 0
        count.append(n)
        stored.append(n)
    cd_time = kv.hmget_ints(plan.cooldown_key, [d.field for d in plan.cooldowns]) if plan.cooldowns else []
    selected: list[int] = []
    suppressed: list[tuple[int, int, int, int, int]] = []
    added = [0] * len(plan.counters)
    for ci, (exempt, cds, cts) in enumerate(plan.candidates):
        if mode != "force" and len(selected) >= k:
            break
        if exempt:
            selected.append(ci)
            continue
        blocked = False
        if mode != "force":
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
                            s = kv.zscore_at(c.key, rank) if rank < stored[i] else None
                            hint = s if s is not None else now
                        suppressed.append((ci, KIND_CAP, i, count[i], hint))
                        blocked = True
                        break
        if not blocked:
            selected.append(ci)
            for i in cts:
                count[i] += 1
                added[i] += 1
    if record:
        for i, c in enumerate(plan.counters):
            if added[i]:
                if c.kind == "r":
                    kv.zadd(c.key, now, added[i])
                    if stored[i] + added[i] > c.keep:
                        kv.ztrim_to(c.key, c.keep)
                else:
                    kv.incrby(c.key, added[i])
                kv.pexpire(c.key, c.ttl_ms)
                kv.index_add(plan.index_key, c.key, now + c.ttl_ms)
    return RawResult(selected, suppressed)


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
    for ci, kind, ref, value, hint in raw.suppressed:
        offer = candidates[ci].offer_id
        if kind == KIND_COOLDOWN:
            d = plan.cooldowns[ref]
            suppressed.append(Suppression(offer, d.reason, cooldown_detail(d, value)))
        else:
            c = plan.counters[ref]
            suppressed.append(Suppression(offer, cap_reason(c.cap), cap_detail(c, value, hint, tier)))
    return CapDecision(
        selected=[candidates[i].offer_id for i in raw.selected], suppressed=suppressed, degraded=degraded
    )


# ---------------------------------------------------------------------------------------------------------
# member_state
# ---------------------------------------------------------------------------------------------------------


@dataclass
class StoredKey:
    """A member key as read back: rolling → ``scores``; counters and cool-downs → ``value``."""

    scores: list[int] | None = None
    value: int | None = None
    fields: dict[str, int] | None = None


def state_view(
    policy: CapPolicy,
    member: CapMember,
    now: datetime,
    keys: KeySpace,
    stored: dict[str, StoredKey],
    *,
    store: str,
) -> dict[str, Any]:
    """The support-staff view of one member: each cap's count, limit and reset, and active cool-downs."""
    rp = policy.resolved(member.tier)
    now_ms = to_ms(now)
    base = keys.base + ":"
    caps_by_name = {c.name: c for c in rp.caps}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    cooldowns: list[dict[str, Any]] = []
    periods: dict[str, tuple[str, datetime]] = {}

    def period_of(unit: str) -> tuple[str, datetime]:
        if unit not in periods:
            label, _, end = calendar_period(unit, now, member.time_zone)
            periods[unit] = (label, end)
        return periods[unit]

    def row(cap: ResolvedCap, sub: str) -> dict[str, Any]:
        r = rows.get((cap.name, sub))
        if r is None:
            resets = None
            if cap.window.kind is WindowKind.CALENDAR:
                resets = iso_z(period_of(cap.window.unit)[1])
            r = rows[(cap.name, sub)] = {
                "cap": cap.name,
                "scope": cap.scope.value,
                "key": sub,
                "window": cap.window.spec,
                "limit": cap.limit,
                "count": 0,
                "remaining": cap.limit,
                "resets_at": resets,
                "blocked_until": None,
                "reason_code": cap_reason(cap),
            }
        return r

    # Member-wide caps and caps with an explicit filter list are always shown, even at zero.
    for cap in rp.caps:
        if cap.scope is Scope.MEMBER:
            row(cap, "-")
        else:
            listed = {
                Scope.MEMBER_FAMILY: cap.families,
                Scope.MEMBER_CATEGORY: cap.categories,
                Scope.MEMBER_PLACEMENT: cap.placements,
                Scope.MEMBER_OFFER: cap.offers,
            }[cap.scope]
            for sub in sorted(listed or ()):
                row(cap, sub)

    cd = rp.cooldowns
    durations = {
        ("dismiss", "offer"): (REASON_COOLDOWN_DISMISS_OFFER, cd.dismiss_offer),
        ("dismiss", "category"): (REASON_COOLDOWN_DISMISS_CATEGORY, cd.dismiss_category),
        ("purchase", "offer"): (REASON_PURCHASED, cd.purchase_offer),
        ("purchase", "category"): (REASON_PURCHASED_CATEGORY, cd.purchase_category),
    }
    for key, val in sorted(stored.items()):
        if not key.startswith(base):
            continue
        parts = key[len(base) :].split(":")
        code = parts[0]
        if code == "cd":
            for fname, t in (val.fields or {}).items():
                event, scope, target = [*fname.split(":", 2), "", ""][:3]
                reason, seconds = durations.get((event, scope), ("", 0))
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
            continue
        if code not in ("r", "c", "l") or len(parts) < 3:
            continue
        found = caps_by_name.get(parts[1])
        if found is None or found.window.code != code:
            continue  # a cap removed from the policy or whose window changed kind: not in force
        cap = found
        if code == "c":
            if len(parts) < 4 or cap.window.kind is not WindowKind.CALENDAR:
                continue
            sub, period = ":".join(parts[2:-1]), parts[-1]
            if period != period_of(cap.window.unit)[0]:
                continue  # an earlier day/week
            r = row(cap, sub)
            r["count"] = val.value or 0
        else:
            sub = ":".join(parts[2:])
            r = row(cap, sub)
            if code == "l":
                r["count"] = val.value or 0
            else:
                window_ms = cap.window.seconds * 1000
                live = sorted(s for s in (val.scores or []) if s > now_ms - window_ms)
                r["count"] = len(live)
                if live:
                    r["resets_at"] = iso_z(from_ms(live[0] + window_ms))
                    if len(live) >= cap.limit > 0:
                        r["blocked_until"] = iso_z(from_ms(live[len(live) - cap.limit] + window_ms))
        r["remaining"] = max(cap.limit - r["count"], 0)
        if code == "c" and r["count"] >= cap.limit:
            r["blocked_until"] = r["resets_at"]
    caps_out = [r for r in rows.values() if r["count"] > 0 or r["key"] == "-" or r["scope"] != "member_offer"]
    caps_out.sort(key=lambda r: (r["cap"], r["key"]))
    return {
        "member_id": member.member_id,
        "tier": member.tier,
        "time_zone": member.time_zone,
        "now": iso_z(now),
        "policy_version": policy.version,
        "count_on": policy.count_on,
        "store": store,
        "degraded": None,
        "caps": caps_out,
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


def cooldown_writes(
    policy: CapPolicy, member: CapMember, offer: CapCandidate, event: str
) -> list[tuple[str, str, int]]:
    """(event, scope, ttl_ms) of the cool-down keys an event sets — TTL is the longest duration of any
    tier."""
    tiers = [member.tier, *[t.value for t in policy.tiers]]
    out = []
    for scope in ("offer", "category"):
        seconds = max(getattr(policy.resolved(t).cooldowns, f"{event}_{scope}") for t in tiers)
        if seconds:
            out.append((event, scope, seconds * 1000 + TTL_SLACK_MS))
    return out


class PlanEnforcer(CapEnforcer):
    """select_and_record / record_event / member_state over a store that runs plans (see subclasses)."""

    store_name = "abstract"

    def __init__(self, holder: PolicyHolder, key_prefix: str) -> None:
        self.holder = holder
        self.key_prefix = key_prefix
        self.counters = SuppressionCounters()

    # -- store hooks ------------------------------------------------------------------------------------
    def _execute(self, plan: Plan, k: int, mode: str) -> RawResult:
        raise NotImplementedError

    def _write_cooldowns(self, keys: KeySpace, fields: list[str], now_ms: int, ttl_ms: int) -> None:
        """Set each cool-down field to ``now_ms`` (unless later), prune fields older than ``ttl_ms``."""
        raise NotImplementedError

    def _read(self, keys: KeySpace, now_ms: int) -> dict[str, StoredKey]:
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
    ) -> CapDecision:
        if k <= 0 or not candidates:
            return CapDecision(selected=[], suppressed=[], degraded=None)
        policy = self.holder.policy
        rp = policy.resolved(member.tier)
        keys = KeySpace(self.key_prefix, member.member_id)
        plan = build_plan(policy, rp, keys, member, candidates, placement, now)
        mode = "check_record" if record and policy.count_on == "serve" else "check"
        try:
            raw = self._execute(plan, k, mode)
        except StoreUnavailable as e:
            decision = self._degraded(e, member, candidates, k, placement, now, record)
        else:
            decision = decode(plan, raw, candidates, member.tier)
        self.counters.add_many([s.reason for s in decision.suppressed])
        if decision.degraded:
            self.counters.add(f"degraded:{decision.degraded.split(':', 1)[0]}")
        return decision

    def record_event(
        self, member: CapMember, offer: CapCandidate, event_type: str, placement: str, now: datetime
    ) -> None:
        event = EventType(event_type)  # ValueError names the bad type
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
                fields = [
                    KeySpace.cooldown_field(ev, scope, offer.offer_id if scope == "offer" else offer.category)
                    for ev, scope, _ in cooldown_writes(policy, member, offer, event.value)
                ]
                if fields:
                    self._write_cooldowns(keys, fields, to_ms(now), max_cooldown_ms(policy))
        except StoreUnavailable as e:
            self.counters.add(f"event_degraded:{event.value}")
            self._degraded_event(e, member, offer, event.value, placement, now)

    def member_state(self, member: CapMember, now: datetime) -> dict[str, Any]:
        policy = self.holder.policy
        keys = KeySpace(self.key_prefix, member.member_id)
        try:
            stored = self._read(keys, to_ms(now))
        except StoreUnavailable as e:
            view = state_view(policy, member, now, keys, {}, store=self.store_name)
            view.update(degraded=f"unavailable: {e}", caps=[], cooldowns=[])
            return view
        return state_view(policy, member, now, keys, stored, store=self.store_name)
