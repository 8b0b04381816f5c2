"""The Lua script and the in-process algorithm make the same decisions: a seeded random sequence of requests
and events (several members, time zones, tiers, windows, cool-downs) replayed on both stores."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from recsys.capping.api import CapCandidate, CapMember, build_enforcer
from tests.capping.conftest import REDIS_URL, make_policy, require_redis

POLICY = """
cooldowns:
  dismiss: {offer: 3d, category: 1d}
  purchase: {offer: 10d}
caps:
  - {name: member_daily, scope: member, limit: 5, window: day}
  - {name: upsell_daily, scope: member_family, families: [upsell], limit: 2, window: day}
  - {name: offer_3d, scope: member_offer, limit: 2, window: 3d}
  - {name: category_6h, scope: member_category, limit: 2, window: 6h}
  - {name: placement_1h, scope: member_placement, limit: 3, window: 1h}
  - {name: weekly_promo, scope: member_category, categories: [miles_promotion], limit: 1, window: week}
  - {name: offer_ever, scope: member_offer, limit: 4, window: lifetime}
tiers:
  platinum:
    caps:
      member_daily: {limit: 3}
      category_6h: {disabled: true}
"""

CATS = [
    ("upsell", "cabin_upgrade"),
    ("upsell", "extra_legroom"),
    ("ancillary", "seat"),
    ("ancillary", "lounge"),
    ("redemption", "miles_promotion"),
]


@pytest.mark.parametrize("count_on", ["serve", "event"])
def test_redis_and_in_process_stores_agree(key_prefix: str, count_on: str) -> None:
    require_redis()
    policy = make_policy(f"count_on: {count_on}\n{POLICY}")
    mem = build_enforcer(None, policy)
    red = build_enforcer(REDIS_URL, policy, key_prefix=key_prefix, timeout_ms=2000)
    rng = random.Random(20261122)
    offers = [CapCandidate(f"O{i}", *CATS[i % len(CATS)], exempt=(i == 0)) for i in range(16)]
    members = [
        CapMember("M1", "basic", "America/New_York"),
        CapMember("M2", "platinum", "Europe/London"),
        CapMember("M3", "gold", "Asia/Shanghai"),
    ]
    t = datetime(2026, 3, 6, 0, 0, tzinfo=UTC)  # spans the New York DST change of 2026-03-08
    for step in range(400):
        t += timedelta(minutes=rng.choice([1, 7, 30, 95, 300]))
        m = rng.choice(members)
        placement = rng.choice(["home", "booking", "check_in"])
        if rng.random() < (0.15 if count_on == "serve" else 0.5):
            o = rng.choice(offers)
            ev = rng.choice(["dismiss", "purchase", "impression", "click"])
            mem.record_event(m, o, ev, placement, t)
            red.record_event(m, o, ev, placement, t)
            continue
        cands = rng.sample(offers, rng.randint(1, 10))
        k = rng.randint(1, 5)
        # Offers only checked on their own (the rest of a candidate set): never selected, maybe blocked.
        extra = rng.sample([o for o in offers if o not in cands], rng.randint(0, 4))
        a = mem.select_and_record(m, cands, k, placement, t, also_check=extra)
        b = red.select_and_record(m, cands, k, placement, t, also_check=extra)
        assert a == b, (step, a, b)
        assert not set(a.selected) & {o.offer_id for o in extra}
    for m in members:
        assert mem.member_state(m, t) | {"store": ""} == red.member_state(m, t) | {"store": ""}
    assert mem.counters.snapshot() == red.counters.snapshot()
    reasons = mem.counters.snapshot()
    assert len(reasons) >= 8 and sum(reasons.values()) > 100  # the sequence did exercise the rules
    red.close()
