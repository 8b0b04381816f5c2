"""The store-independent core of cap enforcement: the member's cap state, what a request decides from it, and
what it writes back.

**State: one hash per member** (``<prefix>:{M0000001}``, the member id as Redis Cluster hash tag, the same
tag as the member store's keys so one script reads the profile and the caps). Its fields, short on purpose
(a member's hash stays a Redis listpack, a few hundred bytes)::

    <code><window>|<sub>    a counter: <code> is 2 base-36 characters of a hash of the cap's name (unique in
                            the policy), <window> the window (``7d``, ``24h``; ``D`` day, ``W`` week, ``L``
                            lifetime), <sub> what it counts per: category, family, placement, ``-``
                            member-wide, or for per-offer calendar and lifetime caps 4 base-36 characters of
                            a hash of the offer id (its *offer code*)
    <code><window>|@<b>     a per-offer rolling cap's bucket ``b``: the offer codes shown in it (``.<part>``
                            appended for a 2nd and later field, so no value outgrows a listpack's)
    ~<d|p><o|c>|<target>    a cool-down: time of the last dismissal / purchase of an offer / category
    v                       the state's version, raised by every write (optimistic concurrency)

Values (numbers in base 36):

- **per-offer rolling** (bucket fields): the bucket's offer codes, sorted, each preceded by its impressions in
  base 26 (upper-case letters, ``A`` = 0) when more than one, at most 60 characters a field. A member sees
  a few dozen offers in a 7-day window but in only a few buckets: one field per bucket instead of one per
  offer keeps the hash a third smaller. Hashes written before (one rolling field per offer, ``<sub>`` = the
  offer code) are read as well, and the first write of the cap moves them into bucket fields.
- **rolling** ``<first bucket>;<n0>.<n1>...``: impression counts in consecutive buckets of ``window / 24``
  (``24h`` → 1 h buckets, ``7d`` → 7 h), the first counted from :data:`BUCKET_EPOCH_MS` (values written
  before counted from 1970, ``<first>:...``, are still read); an empty count is 0; or, when shorter, only the
  buckets with impressions, ``<first bucket>;<n0>,<gap>:<n>,...``. A bucket counts while any impression in it
  could still be inside the window, i.e. until its *end* plus the window: an impression stops counting
  between one window and one window plus one bucket after it was shown (conservative: a cap is never
  exceeded, an offer may come back up to one bucket later than an exact window would allow).
- **calendar** ``<period end, minutes>:<count>``: a count for the member's current local day or week; a
  field of an earlier period counts 0.
- **lifetime** ``<count>:<last impression, seconds>``: kept ``lifetime_ttl`` after the last impression.
- **cool-down** ``<time, ms>``.

Every write drops the fields whose life is over and sets the hash's TTL to the longest remaining life (+1
min), so every key expires and memory per member is bounded.

**Decisions** are made here, in Python, from a read of the hash (:func:`run_plan`); a store only reads the
hash and commits the writes :func:`writes` derives, *if the hash's version is still the one read* (one Lua
script; otherwise it returns the new state and the decision is made again). Concurrent requests of one member
therefore never together exceed a cap, and the decision logic exists once for every store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from recsys.capping.policy import CapPolicy, PlanEntry, ResolvedCap, ResolvedPolicy, Scope
from recsys.capping.types import (
    REASON_COOLDOWN_DISMISS_CATEGORY,
    REASON_COOLDOWN_DISMISS_OFFER,
    REASON_PURCHASED,
    REASON_PURCHASED_CATEGORY,
    CapCandidate,
    CapDecision,
    CapMember,
    Suppression,
)
from recsys.capping.windows import (
    WindowKind,
    current_period,
    from_ms,
    iso_z,
    parse_duration,
    parse_window,
    to_ms,
)

# Extra life given to the hash beyond its longest-living field (clock skew between service processes).
TTL_SLACK_MS = 60_000
# Rolling fields count their buckets from here (2026-01-01 UTC), which keeps the numbers short.
BUCKET_EPOCH_MS = 1_767_225_600_000
# A rolling window is counted in this many buckets (plus the one the window's start falls in).
BUCKETS_PER_WINDOW = 24
# select_and_record considers at most max(DEFAULT_CANDIDATE_WINDOW, 5 * k) ranked candidates: the cost of a
# request grows with the candidates, and a long tail of the ranking almost never reaches the answer.
DEFAULT_CANDIDATE_WINDOW = 50
# Name of the per-process conservative cap added while Redis is unavailable (fail_open).
LOCAL_CAP_NAME = "outage_local"
VERSION_FIELD = "v"
COOLDOWN_MARK = "~"
CODE_LEN = 2  # characters of a cap's code
OFFER_CODE_LEN = 4  # characters of an offer id's code in per-offer counters
BUCKET_MARK = "@"  # a per-offer rolling cap's bucket field: <head>@<bucket>[.<part>]
# The longest bucket field value: under Redis's default hash-max-listpack-value (64), above which the whole
# hash would be converted to a hash table (several times larger).
MAX_FIELD_VALUE = 60

KIND_COOLDOWN = 1
KIND_CAP = 2

_WINDOW_TAG = {"day": "D", "week": "W", "lifetime": "L"}


def b36(n: int) -> str:
    """``n`` (>= 0) in base 36, lower case."""
    if n < 0:
        raise ValueError(f"cannot encode negative {n}")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _i36(s: str) -> int:
    return int(s, 36) if s else 0


def bucket_ms(window_ms: int) -> int:
    """The bucket length of a rolling window (ms): a 24th of it, at least a second."""
    return max(1000, -(-window_ms // BUCKETS_PER_WINDOW))


def window_tag(cap: ResolvedCap) -> str:
    w = cap.window
    return w.spec if w.kind is WindowKind.ROLLING else _WINDOW_TAG[w.spec]


def _digest(name: str, n: int, salt: int = 0) -> str:
    data = name.encode() if not salt else f"{salt}:{name}".encode()
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
    return b36(h)[-n:].rjust(n, "0")


@lru_cache(maxsize=64)
def _name_codes(names: frozenset[str]) -> dict[str, str]:
    codes: dict[str, str] = {}
    taken: set[str] = set()
    # Sorted: the names that collide take the next salt in a fixed order, whatever the policy's order.
    for name in sorted(names):
        salt = 0
        while (code := _digest(name, CODE_LEN, salt)) in taken:
            salt += 1
        codes[name] = code
        taken.add(code)
    return codes


def cap_codes(policy: CapPolicy) -> dict[str, str]:
    """Cap name → the 2-character code its fields start with (unique within the policy)."""
    return _name_codes(frozenset(c.name for c in policy.caps) | {LOCAL_CAP_NAME})


def counter_prefix(policy: CapPolicy, cap: ResolvedCap) -> str:
    return f"{cap_codes(policy)[cap.name]}{window_tag(cap)}|"


@lru_cache(maxsize=8192)  # pure, and a plan asks for the same few offers' codes many times
def offer_code(offer_id: str) -> str:
    """What a per-offer counter stores for the offer id: 4 base-36 characters of its hash. Two offers of a
    catalogue may share one (about 1 in 160 for 150 offers): they then count together, which can only hold an
    offer back, never let one through."""
    return _digest(offer_id, OFFER_CODE_LEN)


def sub_field(cap: ResolvedCap, sub: str) -> str:
    return offer_code(sub) if cap.scope is Scope.MEMBER_OFFER else sub


def cooldown_field(event: str, scope: str, target: str) -> str:
    return f"{COOLDOWN_MARK}{event[0]}{scope[0]}|{target}"


# -- the values ---------------------------------------------------------------------------------------------


def parse_rolling(value: str | None, size_ms: int = 0) -> tuple[int, list[int]]:
    """(first bucket, counts of consecutive buckets) of a rolling field whose buckets last ``size_ms``
    (needed to read a head counted from :data:`BUCKET_EPOCH_MS`, ``;``)."""
    if not value:
        return 0, []
    if ";" in value:  # counted from the epoch (the sparse form has ':' after the head too)
        if not size_ms:
            raise ValueError(f"rolling value {value!r} counts from the epoch: its bucket size is needed")
        first_s, _, rest = value.partition(";")
        first = _i36(first_s) + BUCKET_EPOCH_MS // size_ms
    else:  # counted from 1970 (written before the epoch head)
        first_s, _, rest = value.partition(":")
        first = _i36(first_s)
    if "," not in rest:  # dense: "<first>:<n0>.<n1>..." (a single bucket: "<first>:<n0>")
        return first, [_i36(c) for c in rest.split(".")]
    counts: list[int] = []
    for i, part in enumerate(rest.split(",")):  # sparse: "<first>:<n0>,<gap>:<n>,..."
        if i:
            gap, _, n = part.partition(":")
            counts.extend([0] * (_i36(gap) - 1))
            counts.append(_i36(n))
        else:
            counts.append(_i36(part))
    return first, counts


def format_rolling(first: int, counts: list[int], size_ms: int = 0) -> str:
    """The shorter of the dense and the sparse form (values stay short: Redis keeps the hash compact). With
    ``size_ms``, the head counts buckets from :data:`BUCKET_EPOCH_MS` (``<first>;...``: 2 to 3 characters
    instead of 4 to 5 since the epoch of 1970)."""
    while counts and counts[-1] == 0:
        counts = counts[:-1]
    lead = 0
    while lead < len(counts) and counts[lead] == 0:
        lead += 1
    counts = counts[lead:]
    start = first + lead
    base = BUCKET_EPOCH_MS // size_ms if size_ms else 0
    head = f"{b36(start - base)};" if size_ms and start >= base else f"{b36(start)}:"
    dense = ".".join(b36(c) if c else "" for c in counts)
    parts, last = [b36(counts[0])] if counts else [], 0
    for i in range(1, len(counts)):
        if counts[i]:
            parts.append(f"{b36(i - last)}:{b36(counts[i])}")
            last = i
    sparse = ",".join(parts)
    return head + (sparse if len(parts) > 1 and len(sparse) < len(dense) else dense)


def live_buckets(value: str | None, now_ms: int, window_ms: int) -> list[tuple[int, int]]:
    """(bucket, count) of the rolling field's buckets that still count at ``now_ms``, oldest first."""
    size = bucket_ms(window_ms)
    first, counts = parse_rolling(value, size)
    lo = (now_ms - window_ms) // size  # the oldest bucket that may hold an impression inside the window
    return [(first + i, c) for i, c in enumerate(counts) if c and first + i >= lo]


def parse_pair(value: str | None) -> tuple[int, int]:
    """(a, b) of an ``a:b`` value (calendar: period end minute, count; lifetime: count, last second)."""
    if not value:
        return 0, 0
    a, _, b = value.partition(":")
    return _i36(a), _i36(b)


def field_expiry_ms(name: str, value: str, lifetime_ms: int, cooldown_ms: int) -> int:
    """When a field stops mattering (ms since the epoch); 0 for a field this code cannot read."""
    try:
        if name.startswith(COOLDOWN_MARK):
            return _i36(value) + cooldown_ms
        tag = name.partition("|")[0][CODE_LEN:]
        if tag == "D" or tag == "W":
            return parse_pair(value)[0] * 60_000
        if tag == "L":
            return parse_pair(value)[1] * 1000 + lifetime_ms
        w = parse_window(tag).seconds * 1000
        sub = name.partition("|")[2]
        if sub.startswith(BUCKET_MARK):
            size = bucket_ms(w)
            return (BUCKET_EPOCH_MS // size + _i36(sub[1:].partition(".")[0]) + 1) * size + w
        first, counts = parse_rolling(value, bucket_ms(w))
        return (first + len(counts)) * bucket_ms(w) + w
    except ValueError:
        return 0


# -- the plan -----------------------------------------------------------------------------------------------


@dataclass
class CounterRef:
    """One counter a request reads: field ``name`` of cap ``cap`` counting ``sub``."""

    name: str
    cap: ResolvedCap
    sub: str
    kind: str  # "r" | "c" | "l"
    window_ms: int  # rolling only
    limit: int
    period_end_ms: int | None  # calendar only
    # A per-offer rolling counter: its impressions are in the cap's bucket fields and in ``name`` (the cap's
    # head followed by the offer code: the field of the previous layout, still read).
    listed: bool = False


@dataclass
class CooldownRef:
    field: str
    reason: str
    target: str
    duration_ms: int


@dataclass
class Plan:
    now_ms: int
    lifetime_ms: int
    cooldown_ms: int  # the longest cool-down of any tier (+ slack): how long a cool-down field is kept
    counters: list[CounterRef] = field(default_factory=list)
    cooldowns: list[CooldownRef] = field(default_factory=list)
    # per candidate: (exempt, cool-down indices, counter indices)
    candidates: list[tuple[bool, list[int], list[int]]] = field(default_factory=list)
    # Only the first ``selectable`` candidates may be selected; the others are only checked on their own.
    selectable: int | None = None
    # Per-offer rolling counters are written in bucket fields (the policy's ``state_layout`` 2) or, as
    # before, one field per offer (1); both are read.
    offer_buckets: bool = True


@dataclass
class RawResult:
    """A decision by candidate index: selected (rank order) and suppressions ``(candidate, kind, ref, value,
    hint)`` — kind 1: cool-down ``ref`` with event time ``value``; kind 2: counter ``ref`` with count
    ``value`` and ``hint`` = the end (ms) of the bucket whose expiry frees a slot (rolling windows).
    ``added``: impressions to record per counter."""

    selected: list[int]
    suppressed: list[tuple[int, int, int, int, int]]
    # Candidates blocked on their own, by the state before this request (a cool-down, or a counter already
    # at its limit), whatever else the request selects: the rest are the request's capped candidate set.
    blocked: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)


# Which value a cap counts per, as an index into (offer_id, category, family, placement, "-").
_SUB_INDEX = {
    Scope.MEMBER_OFFER: 0,
    Scope.MEMBER_CATEGORY: 1,
    Scope.MEMBER_FAMILY: 2,
    Scope.MEMBER_PLACEMENT: 3,
    Scope.MEMBER: 4,
}


def lifetime_ms(policy: CapPolicy) -> int:
    return int(parse_duration(policy.lifetime_ttl).total_seconds() * 1000)


def max_cooldown_ms(policy: CapPolicy) -> int:
    """The longest cool-down of any kind and tier (+ slack): how long a cool-down field is kept."""
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
        cooldown_field(event, scope, offer.offer_id if scope == "offer" else offer.category)
        for scope in ("offer", "category")
        if any(getattr(policy.resolved(t).cooldowns, f"{event}_{scope}") for t in tiers)
    ]


def counter_of(
    policy: CapPolicy,
    cap: ResolvedCap,
    sub: str,
    member: CapMember,
    now: datetime,
    periods: dict[str, tuple[str, int]] | None = None,
    *,
    prefix: str | None = None,
) -> CounterRef:
    """The counter of ``cap`` for ``sub`` now (``periods`` caches the member's calendar periods; ``prefix``,
    when given, is ``counter_prefix(policy, cap)``)."""
    w = cap.window
    name = (counter_prefix(policy, cap) if prefix is None else prefix) + sub_field(cap, sub)
    if w.kind is WindowKind.CALENDAR:
        period = periods.get(w.unit) if periods is not None else None
        if period is None:
            period = current_period(w.unit, now, member.time_zone)
            if periods is not None:
                periods[w.unit] = period
        return CounterRef(name, cap, sub, "c", 0, cap.limit, period[1])
    if w.kind is WindowKind.ROLLING:
        listed = cap.scope is Scope.MEMBER_OFFER
        return CounterRef(name, cap, sub, "r", w.seconds * 1000, cap.limit, None, listed)
    return CounterRef(name, cap, sub, "l", 0, cap.limit, None)


def plan_entry(
    policy: CapPolicy, rp: ResolvedPolicy, cand: CapCandidate, placement: str, *, with_cooldowns: bool = True
) -> PlanEntry:
    """The cool-down fields and counters ``cand`` reads at ``placement`` under ``rp`` (a policy of
    ``policy``), in the order :func:`build_plan` lists them."""
    offer_id, category, family = cand.offer_id, cand.category, cand.family
    exempt = rp.is_exempt(offer_id, category, cand.exempt)
    cd = rp.cooldowns
    cds: list[tuple[str, str, str, int]] = []
    if with_cooldowns:
        for reason, event, scope, seconds in (
            (REASON_PURCHASED, "purchase", "offer", cd.purchase_offer),
            (REASON_COOLDOWN_DISMISS_OFFER, "dismiss", "offer", cd.dismiss_offer),
            (REASON_PURCHASED_CATEGORY, "purchase", "category", cd.purchase_category),
            (REASON_COOLDOWN_DISMISS_CATEGORY, "dismiss", "category", cd.dismiss_category),
        ):
            if not seconds or (exempt and event != "dismiss"):
                continue  # exempt from counting caps, not from a member's "no"
            target = offer_id if scope == "offer" else category
            cds.append((cooldown_field(event, scope, target), reason, target, seconds * 1000))
    if exempt:
        return PlanEntry(True, tuple(cds), ())
    cts: list[tuple[str, str, ResolvedCap, str]] = []
    subs = (offer_id, category, family, placement, "-")
    for cap in rp.caps_for(family, category, placement):
        if cap.offers is not None and offer_id not in cap.offers:
            continue
        prefix = counter_prefix(policy, cap)
        sub = subs[_SUB_INDEX[cap.scope]]
        cts.append(
            (prefix + sub_field(cap, sub), prefix, cap, sub)
        )  # the counter's name, as counter_of names it
    return PlanEntry(False, tuple(cds), tuple(cts))


def build_plan(
    policy: CapPolicy,
    rp: ResolvedPolicy,
    member: CapMember,
    candidates: Sequence[CapCandidate],
    placement: str,
    now: datetime,
    *,
    with_cooldowns: bool = True,
) -> Plan:
    """Compile a request into the counters and cool-downs it reads (deduplicated across candidates)."""
    plan = Plan(
        now_ms=to_ms(now),
        lifetime_ms=lifetime_ms(policy),
        cooldown_ms=max_cooldown_ms(policy),
        offer_buckets=policy.state_layout == 2,
    )
    periods: dict[str, tuple[str, int]] = {}
    counter_idx: dict[str, int] = {}
    cooldown_idx: dict[str, int] = {}
    memo = rp.plan_entries
    cooldowns, counters = plan.cooldowns, plan.counters
    for cand in candidates:
        key = (cand.offer_id, cand.category, cand.family, cand.exempt, placement, with_cooldowns)
        entry = memo.get(key)
        if entry is None:
            entry = plan_entry(policy, rp, cand, placement, with_cooldowns=with_cooldowns)
            if len(memo) < 10_000:  # bounded: offers × placements of one catalogue fit many times over
                memo[key] = entry
        cds: list[int] = []
        for spec in entry.cooldowns:
            j = cooldown_idx.get(spec[0])
            if j is None:
                j = cooldown_idx[spec[0]] = len(cooldowns)
                cooldowns.append(CooldownRef(*spec))
            cds.append(j)
        if entry.exempt:
            plan.candidates.append((not cds, cds, []))  # no cool-down to check: the fast path
            continue
        cts: list[int] = []
        for name, prefix, cap, sub in entry.counters:
            i = counter_idx.get(name)
            if i is None:  # the member, placement and category counters are shared by many candidates
                i = counter_idx[name] = len(counters)
                counters.append(counter_of(policy, cap, sub, member, now, periods, prefix=prefix))
            cts.append(i)
        plan.candidates.append((False, cds, cts))
    return plan


# -- the decision -------------------------------------------------------------------------------------------


def read_count(
    c: CounterRef, value: str | None, now_ms: int, lifetime: int
) -> tuple[int, list[tuple[int, int]]]:
    """The counter's count now, and (rolling) its live buckets."""
    if not value:
        return 0, []
    if c.kind == "r":
        live = live_buckets(value, now_ms, c.window_ms)
        return sum(n for _, n in live), live
    a, b = parse_pair(value)
    if c.kind == "c":
        assert c.period_end_ms is not None
        return (b if a * 60_000 == c.period_end_ms else 0), []
    return (a if b * 1000 + lifetime > now_ms else 0), []


def _b26(n: int) -> str:
    """``n`` (>= 0) in base 26, upper-case letters (``A`` = 0): never mistaken for an offer code's
    characters."""
    out = ""
    while True:
        n, r = divmod(n, 26)
        out = chr(65 + r) + out
        if n == 0:
            return out


def listed_tokens(counts: Iterable[tuple[str, int]]) -> list[str]:
    """A bucket field's tokens: each offer code, preceded by its count in :func:`_b26` when above 1."""
    return [code if n == 1 else _b26(n) + code for code, n in counts if n > 0]


def parse_listed(value: str) -> list[tuple[str, int]]:
    """(offer code, impressions) of a bucket field's value (:func:`listed_tokens` joined)."""
    out: list[tuple[str, int]] = []
    i, end = 0, len(value)
    while i < end:
        n, j = 0, i
        while j < end and "A" <= value[j] <= "Z":
            n = n * 26 + ord(value[j]) - 65
            j += 1
        out.append((value[j : j + OFFER_CODE_LEN], n if j > i else 1))
        i = j + OFFER_CODE_LEN
    return out


def listed_buckets(fields: dict[str, str], head: str, size_ms: int) -> dict[str, dict[int, int]]:
    """Offer code → {bucket: impressions} of the per-offer rolling cap whose fields start with ``head``:
    its bucket fields, and the one-field-per-offer counters of the previous layout."""
    base = BUCKET_EPOCH_MS // size_ms
    out: dict[str, dict[int, int]] = {}
    for name, value in fields.items():
        if not name.startswith(head):
            continue
        sub = name[len(head) :]
        if sub.startswith(BUCKET_MARK):
            b = base + _i36(sub[1:].partition(".")[0])
            for code, n in parse_listed(value):
                per = out.setdefault(code, {})
                per[b] = per.get(b, 0) + n
        else:
            try:
                first, counts = parse_rolling(value, size_ms)
            except ValueError:
                continue
            per = out.setdefault(sub, {})
            for i, n in enumerate(counts):
                if n:
                    per[first + i] = per.get(first + i, 0) + n
    return out


def count_of(
    c: CounterRef,
    fields: dict[str, str],
    now_ms: int,
    lifetime: int,
    cache: dict[str, dict[str, dict[int, int]]],
) -> tuple[int, list[tuple[int, int]]]:
    """:func:`read_count` of ``c`` in the member's ``fields`` (``cache``: the per-offer rolling caps' buckets
    already parsed, by head)."""
    if not c.listed:
        return read_count(c, fields.get(c.name), now_ms, lifetime)
    head, code = c.name[:-OFFER_CODE_LEN], c.name[-OFFER_CODE_LEN:]
    size = bucket_ms(c.window_ms)
    per = cache.get(head)
    if per is None:
        per = cache[head] = listed_buckets(fields, head, size)
    lo = (now_ms - c.window_ms) // size
    live = sorted((b, n) for b, n in per.get(code, {}).items() if n and b >= lo)
    return sum(n for _, n in live), live


def run_plan(plan: Plan, fields: dict[str, str], k: int, mode: str) -> RawResult:
    """Check (mode ``check`` / ``check_record``) or just count (mode ``force``) the candidates against the
    member's state ``fields``; ``RawResult.added`` says what to record (``check_record`` and ``force``)."""
    now = plan.now_ms
    record = mode in ("check_record", "force")
    check = mode != "force"
    n = len(plan.counters)
    count = [0] * n
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    listed: dict[str, dict[str, dict[int, int]]] = {}
    for i, c in enumerate(plan.counters):
        count[i], buckets[i] = count_of(c, fields, now, plan.lifetime_ms, listed)
    stored = list(count)
    added = [0] * n
    cd_time: list[int | None] = []
    for d in plan.cooldowns:
        v = fields.get(d.field)
        cd_time.append(_i36(v) if v else None)
    selected: list[int] = []
    suppressed: list[tuple[int, int, int, int, int]] = []

    def in_cooldown(j: int) -> bool:
        t = cd_time[j]
        return t is not None and now < t + plan.cooldowns[j].duration_ms

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
                if in_cooldown(j):
                    suppressed.append((ci, KIND_COOLDOWN, j, cd_time[j] or 0, 0))
                    blocked = True
                    break
            if not blocked:
                for i in cts:
                    c = plan.counters[i]
                    if count[i] + 1 > c.limit:
                        suppressed.append((ci, KIND_CAP, i, count[i], _free_at(c, count[i], buckets[i], now)))
                        blocked = True
                        break
        if not blocked:
            selected.append(ci)
            for i in cts:
                count[i] += 1
                added[i] += 1
    alone: list[int] = []
    if check:
        # Whether each counter and cool-down blocks on its own is worked out once, not per candidate (the
        # member-wide counters are shared by all of them); plain loops, as any() over a generator per
        # candidate cost more than the test.
        full = [stored[i] + 1 > c.limit for i, c in enumerate(plan.counters)]
        cooling = [in_cooldown(j) for j in range(len(plan.cooldowns))]
        for ci, (exempt, cds, cts) in enumerate(plan.candidates):
            if exempt:
                continue
            for j in cds:
                if cooling[j]:
                    alone.append(ci)
                    break
            else:
                for i in cts:
                    if full[i]:
                        alone.append(ci)
                        break
    return RawResult(selected, suppressed, alone, added if record else [0] * n)


def _free_at(c: CounterRef, count: int, live: list[tuple[int, int]], now: int) -> int:
    """Rolling: the end of the bucket whose leaving the window brings ``count`` below the limit (``now``'s
    bucket when the request's own picks are what fills the cap); 0 for other windows."""
    if c.kind != "r":
        return 0
    size = bucket_ms(c.window_ms)
    excess = count - c.limit + 1  # impressions that must leave the window
    for b, n in live:
        excess -= n
        if excess <= 0:
            return (b + 1) * size
    return (now // size + 1) * size


@dataclass
class Writes:
    """What a commit sets and deletes in the member's hash, and the hash's new TTL (ms)."""

    set: dict[str, str]
    delete: list[str]
    ttl_ms: int
    now_ms: int

    def __bool__(self) -> bool:
        return bool(self.set or self.delete)


def writes(
    plan: Plan, fields: dict[str, str], added: Sequence[int], cooldowns: Sequence[str] = ()
) -> Writes | None:
    """The hash writes that record ``added`` impressions per counter and set ``cooldowns`` to now, pruning
    every field whose life is over; None when there is nothing to record."""
    now = plan.now_ms
    out: dict[str, str] = {}
    dropped: list[str] = []
    listed: dict[str, tuple[int, int, dict[str, int]]] = {}  # head -> (bucket size, window, code -> added)
    for c, n in zip(plan.counters, added, strict=False):
        if not n:
            continue
        value = fields.get(c.name)
        if c.listed and plan.offer_buckets:
            head, code = c.name[:-OFFER_CODE_LEN], c.name[-OFFER_CODE_LEN:]
            adds = listed.setdefault(head, (bucket_ms(c.window_ms), c.window_ms, {}))[2]
            adds[code] = adds.get(code, 0) + n
        elif c.kind == "r":
            size = bucket_ms(c.window_ms)
            live = live_buckets(value, now, c.window_ms)
            b_now = now // size
            first = min([b for b, _ in live] + [b_now])
            counts = [0] * (max([b for b, _ in live] + [b_now]) - first + 1)
            for b, m in live:
                counts[b - first] += m
            counts[b_now - first] += n
            out[c.name] = format_rolling(first, counts, size)
        elif c.kind == "c":
            assert c.period_end_ms is not None
            count, _ = read_count(c, value, now, plan.lifetime_ms)
            out[c.name] = f"{b36(c.period_end_ms // 60_000)}:{b36(count + n)}"
        else:
            count, _ = read_count(c, value, now, plan.lifetime_ms)
            out[c.name] = f"{b36(count + n)}:{b36(now // 1000)}"
    for head, (size, window, adds) in listed.items():
        _write_buckets(fields, head, size, now, window, adds, out, dropped)
    for f in cooldowns:
        old = fields.get(f)
        if not old or _i36(old) <= now:
            out[f] = b36(now)
    if not out:
        return None
    merged = {**fields, **out}
    for f in dropped:
        merged.pop(f, None)
    delete: list[str] = list(dropped)
    longest = now
    for name, value in merged.items():
        if name == VERSION_FIELD:
            continue
        expiry = field_expiry_ms(name, value, plan.lifetime_ms, plan.cooldown_ms)
        if expiry <= now:
            delete.append(name)
            out.pop(name, None)
        else:
            longest = max(longest, expiry)
    return Writes(out, delete, longest - now + TTL_SLACK_MS, now)


def _write_buckets(
    fields: dict[str, str],
    head: str,
    size: int,
    now: int,
    window: int,
    adds: dict[str, int],
    out: dict[str, str],
    dropped: list[str],
) -> None:
    """Record ``adds`` (offer code → impressions) in the current bucket field of the per-offer rolling cap
    ``head``; fields of the previous layout are moved into bucket fields (their live buckets) and dropped."""
    per = listed_buckets(fields, head, size)
    b_now = now // size
    for code, n in adds.items():
        buckets = per.setdefault(code, {})
        buckets[b_now] = buckets.get(b_now, 0) + n
    old = [f for f in fields if f.startswith(head) and not f[len(head) :].startswith(BUCKET_MARK)]
    dirty = {b_now}
    if old:
        lo = (now - window) // size
        dirty |= {b for buckets in per.values() for b in buckets if b >= lo}
        dropped.extend(old)
    base = BUCKET_EPOCH_MS // size
    for b in dirty:
        tokens = listed_tokens((code, buckets.get(b, 0)) for code, buckets in sorted(per.items()))
        parts = [""]
        for t in tokens:
            if len(parts[-1]) + len(t) > MAX_FIELD_VALUE:
                parts.append("")
            parts[-1] += t
        name = f"{head}{BUCKET_MARK}{b36(b - base)}"
        for p, chunk in enumerate(parts):
            out[f"{name}.{b36(p)}" if p else name] = chunk


def apply_writes(fields: dict[str, str], w: Writes) -> dict[str, str]:
    """The state after a commit of ``w`` (the in-process store; the Redis script does the same)."""
    out = {f: v for f, v in fields.items() if f not in w.delete}
    out.update(w.set)
    out[VERSION_FIELD] = str(int(fields.get(VERSION_FIELD) or 0) + 1)
    return out


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


def state_view(
    policy: CapPolicy,
    member: CapMember,
    now: datetime,
    fields: dict[str, str],
    *,
    store: str,
    offer_ids: Iterable[str] = (),
) -> dict[str, Any]:
    """The support-staff view of one member: each cap's count, limit and reset, and active cool-downs,
    from the member's cap hash ``fields``. Per-offer counters are stored under a code of the offer id:
    ``offer_ids`` (the catalogue) names them; a code of no offer given is shown as ``#<code>``."""
    rp = policy.resolved(member.tier)
    now_ms = to_ms(now)
    life = lifetime_ms(policy)
    names = {offer_code(o): o for o in offer_ids}
    rows: list[dict[str, Any]] = []
    parsed: dict[str, dict[str, dict[int, int]]] = {}  # the per-offer rolling caps' buckets, by head
    for cap in rp.caps:
        head = counter_prefix(policy, cap)
        by_offer = cap.scope is Scope.MEMBER_OFFER
        if by_offer:
            names.update((offer_code(o), o) for o in cap.offers or ())
        if by_offer and cap.window.kind is WindowKind.ROLLING:
            stored = set(listed_buckets(fields, head, bucket_ms(cap.window.seconds * 1000)))
        else:
            stored = {f[len(head) :] for f in fields if f.startswith(head)}
        subs = {names.get(c, f"#{c}") for c in stored} if by_offer else stored
        # Member-wide caps and caps with an explicit filter list are always shown, even at zero.
        listed = {
            Scope.MEMBER: ["-"],
            Scope.MEMBER_FAMILY: cap.families,
            Scope.MEMBER_CATEGORY: cap.categories,
            Scope.MEMBER_PLACEMENT: cap.placements,
            Scope.MEMBER_OFFER: cap.offers,
        }[cap.scope]
        always = set(listed or ())
        for sub in sorted(subs | always):
            c = counter_of(policy, cap, sub, member, now)
            if sub.startswith("#") and by_offer:
                c.name = head + sub[1:]
            n, live = count_of(c, fields, now_ms, life, parsed)
            if n == 0 and sub not in always:
                continue  # nothing counted in the window any more
            resets: str | None = iso_z(from_ms(c.period_end_ms)) if c.period_end_ms is not None else None
            blocked: str | None = None
            if c.kind == "r":
                if live:
                    # the oldest counted bucket leaves the window: the count next goes down
                    resets = iso_z(from_ms((live[0][0] + 1) * bucket_ms(c.window_ms) + c.window_ms))
                    if n >= cap.limit > 0:
                        blocked = iso_z(from_ms(_free_at(c, n, live, now_ms) + c.window_ms))
            elif n >= cap.limit:
                blocked = resets if c.kind == "c" else "never"
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
        ("d", "o"): (REASON_COOLDOWN_DISMISS_OFFER, "offer", cd.dismiss_offer),
        ("d", "c"): (REASON_COOLDOWN_DISMISS_CATEGORY, "category", cd.dismiss_category),
        ("p", "o"): (REASON_PURCHASED, "offer", cd.purchase_offer),
        ("p", "c"): (REASON_PURCHASED_CATEGORY, "category", cd.purchase_category),
    }
    cooldowns: list[dict[str, Any]] = []
    for fname, value in fields.items():
        if not fname.startswith(COOLDOWN_MARK) or len(fname) < 4:
            continue
        reason, scope, seconds = durations.get((fname[1], fname[2]), ("", "", 0))
        t = _i36(value)
        if seconds and now_ms < t + seconds * 1000:
            cooldowns.append(
                {
                    "reason_code": reason,
                    "scope": scope,
                    "target": fname.partition("|")[2],
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


def aware(now: datetime) -> datetime:
    """Naive datetimes are taken as UTC (everywhere: counting, calendar periods, details)."""
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
