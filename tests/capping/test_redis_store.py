"""Redis-specific guarantees: one hash per member under its hash tag, a TTL on every key, compact bucketed
counters, stale fields pruned, memory_report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from recsys.capping.api import CapCandidate, CapMember, build_enforcer
from recsys.capping.engine import offer_code
from recsys.capping.redis_store import memory_report
from tests.capping.conftest import REDIS_URL, make_policy

POLICY = """
count_on: {count_on}
lifetime_ttl: 400d
cooldowns:
  dismiss: {{offer: 14d, category: 2d}}
  purchase: {{offer: 30d}}
caps:
  - {{name: member_daily, scope: member, limit: 6, window: day}}
  - {{name: family_week, scope: member_family, limit: 4, window: week}}
  - {{name: offer_weekly, scope: member_offer, limit: 1, window: 7d}}
  - {{name: category_24h, scope: member_category, limit: 2, window: 24h}}
  - {{name: placement_1h, scope: member_placement, limit: 3, window: 1h}}
  - {{name: offer_ever, scope: member_offer, limit: 5, window: lifetime}}
tiers:
  platinum:
    caps:
      category_24h: {{limit: 3}}
"""


def candidates(n: int) -> list[CapCandidate]:
    cats = [
        ("ancillary", "seat"),
        ("ancillary", "meal"),
        ("upsell", "cabin_upgrade"),
        ("redemption", "hotel"),
    ]
    return [CapCandidate(f"O{i}", *cats[i % len(cats)]) for i in range(n)]


def test_one_hash_per_member_under_its_hash_tag_with_a_ttl(
    key_prefix: str, redis_client: redis.Redis
) -> None:
    e = build_enforcer(
        REDIS_URL, make_policy(POLICY.format(count_on="serve")), key_prefix=key_prefix, timeout_ms=2000
    )
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    for i in range(20):
        m = CapMember(f"M{i:07d}", "basic", "Asia/Shanghai")
        for j in range(5):
            e.select_and_record(
                m, candidates(12), 4, ["home", "booking"][j % 2], now + timedelta(hours=j * 5)
            )
        e.record_event(m, candidates(1)[0], "dismiss", "home", now)
        e.record_event(m, candidates(2)[1], "purchase", "home", now)
    names = sorted(n.decode() for n in redis_client.scan_iter(match=f"{key_prefix}:*", count=1000))
    # One key per member, named by the member id as hash tag (one cluster slot per member).
    assert names == [f"{key_prefix}:{{M{i:07d}}}" for i in range(20)]
    for n in names:
        assert redis_client.type(n) == b"hash"
        # The longest-living field is a lifetime counter: 400 days after its last impression (+1 min); the
        # TTL is relative to the injected time of the last write, which is up to 20 h before the last
        # impression.
        assert 400 * 86_400_000 <= redis_client.pttl(n) <= (400 * 86_400_000 + 20 * 3_600_000 + 60_000), n
    report = memory_report(redis_client, key_prefix)
    assert report["n_keys_without_ttl"] == 0 and report["members"] == 20
    assert report["keys"] == 20 and 0 < report["bytes_per_member"] < 1_500
    assert report["keys_by_kind"] == {"member_hash": 20} and report["encodings"] == {"listpack": 20}
    # The report does find a key without a TTL.
    redis_client.hset(f"{key_prefix}:{{M9999999}}", "x", "1")
    report = memory_report(redis_client, key_prefix)
    assert report["keys_without_ttl"] == [f"{key_prefix}:{{M9999999}}"]
    # A key of another shape under the prefix (the layout before the hash: a key per counter) is "other".
    redis_client.set(f"{key_prefix}:{{M0000001}}:r:x", "1", px=60_000)
    report = memory_report(redis_client, key_prefix)
    assert report["keys_by_kind"] == {"member_hash": 21, "other": 1} and report["members"] == 21


def test_a_rolling_counter_is_a_few_bytes_whatever_the_impressions(
    key_prefix: str, redis_client: redis.Redis
) -> None:
    # count_on=event: the app may report more impressions than the cap allows; they are counted, in buckets.
    e = build_enforcer(
        REDIS_URL, make_policy(POLICY.format(count_on="event")), key_prefix=key_prefix, timeout_ms=2000
    )
    m = CapMember("M0000001", "basic", "UTC")
    seat = CapCandidate("S1", "ancillary", "seat")
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    for i in range(30):
        e.record_event(m, seat, "impression", "home", now + timedelta(minutes=10 * i))
    fields = {f.decode(): v.decode() for f, v in redis_client.hgetall(f"{key_prefix}:{{M0000001}}").items()}
    # 30 impressions over 5 hours: one field per counter (+ the version), but the per-offer 7-day counter has
    # one per 7 h bucket: 10:00-11:50 (12 impressions) in the bucket of 05:00-12:00, the rest (18) in the
    # next; each value short enough for Redis to keep the hash as a compact listpack (values up to 64 bytes).
    assert len(fields) == 1 + 7 and max(len(v) for v in fields.values()) < 64, fields
    assert redis_client.object("encoding", f"{key_prefix}:{{M0000001}}") == b"listpack"
    # the buckets' numbers since 2026-01-01 (70,128 buckets of 7 h since 1970): 1,115 and 1,116; the counts
    # in base 26 (A = 0): 12 = "M", 18 = "S"
    weekly = {f.rpartition("@")[2]: v for f, v in fields.items() if "7d|@" in f}
    assert weekly == {"uz": f"M{offer_code('S1')}", "v0": f"S{offer_code('S1')}"}
    # 1 h buckets; the first is hour 7_810 (325 days and 10 hours) after 2026-01-01 (the buckets' epoch):
    # "60y" in base 36
    assert fields[next(f for f in fields if f.endswith("24h|seat"))] == "60y;6.6.6.6.6"
    state = e.member_state(m, now + timedelta(hours=5), ["S1"])
    cat = next(c for c in state["caps"] if c["cap"] == "category_24h" and c["key"] == "seat")
    assert cat["count"] == 30 and cat["remaining"] == 0
    ever = next(c for c in state["caps"] if c["cap"] == "offer_ever" and c["key"] == "S1")
    assert ever["count"] == 30 and ever["blocked_until"] == "never"


def test_fields_whose_window_is_over_are_dropped(key_prefix: str, redis_client: redis.Redis) -> None:
    policy = make_policy("caps: [{name: offer_weekly, scope: member_offer, limit: 1, window: 7d}]")
    e = build_enforcer(REDIS_URL, policy, key_prefix=key_prefix, timeout_ms=2000)
    m = CapMember("M0000001", "basic", "UTC")
    key = f"{key_prefix}:{{M0000001}}"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(9):  # 5 new offers a day
        for h in range(5):
            o = CapCandidate(f"N{day}-{h}", "ancillary", f"cat{h}")
            assert e.select_and_record(m, [o], 1, "home", t0 + timedelta(days=day, hours=h)).selected
    # A per-offer 7-day counter lists the codes of the offers shown in each bucket (4 characters each).
    values = [v.decode() for f, v in redis_client.hgetall(key).items() if b"|@" in f]
    subs = {v[i : i + 4] for v in values for i in range(0, len(v), 4)}
    # Day 0's offers left the window (7 days + one 7 h bucket) before day 8's writes; day 2's and later not.
    assert not subs & {offer_code(f"N0-{h}") for h in range(5)}
    assert {offer_code(f"N{d}-{h}") for d in range(2, 9) for h in range(5)} <= subs
