"""Redis-specific guarantees: one round trip per request, hash-tagged keys, a TTL on every key, bounded
history, memory_report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from recsys.capping.api import CapCandidate, CapMember, build_enforcer
from recsys.capping.redis_store import memory_report
from tests.capping.conftest import REDIS_URL, make_policy, require_redis

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


class CountingRedis(redis.Redis):
    """A real client that counts the commands it sends (instrumentation, not a fake)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


def candidates(n: int) -> list[CapCandidate]:
    cats = [
        ("ancillary", "seat"),
        ("ancillary", "meal"),
        ("upsell", "cabin_upgrade"),
        ("redemption", "hotel"),
    ]
    return [CapCandidate(f"O{i}", *cats[i % len(cats)]) for i in range(n)]


def test_one_round_trip_per_request_whatever_the_number_of_candidates(key_prefix: str) -> None:
    require_redis()
    client = CountingRedis.from_url(REDIS_URL)
    e = build_enforcer(
        REDIS_URL,
        make_policy(POLICY.format(count_on="serve")),
        key_prefix=key_prefix,
        client=client,
        timeout_ms=2000,
    )
    m = CapMember("M0000001", "gold", "Europe/London")
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    e.select_and_record(m, candidates(3), 3, "home", now)  # loads the script on first use (NOSCRIPT path)
    for n in (1, 20, 60):
        client.commands.clear()
        d = e.select_and_record(m, candidates(n), 5, "home", now)
        assert client.commands == ["EVALSHA"], (n, client.commands)
        assert d.degraded is None
    client.close()


def test_keys_carry_member_hash_tag_and_all_have_ttls(key_prefix: str, redis_client: redis.Redis) -> None:
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
    names = [n.decode() for n in redis_client.scan_iter(match=f"{key_prefix}:*", count=1000)]
    assert names
    kinds = {n.split("}:", 1)[1].split(":", 1)[0] for n in names}
    assert kinds == {"r", "c", "l", "cd"}
    for n in names:
        tag = n[n.index("{") + 1 : n.index("}")]
        assert tag.startswith("M") and len(tag) == 8, n  # the member id is the hash tag: one slot per member
        ttl = redis_client.pttl(n)
        assert ttl > 0, (n, ttl)
    # TTLs are the documented ones (real-time TTLs, relative to the injected time at the write).
    m0 = f"{key_prefix}:{{M0000000}}"
    # The local day 2026-11-23 (Shanghai) ends 2026-11-23T16:00Z; it was written at 20:00Z or later (injected
    # time), so its TTL is at most 20 h and at least 10 h (the last call, 06:00Z) plus the 1 min slack.
    day_ttl = redis_client.pttl(f"{m0}:c:member_daily:d2026-11-23")
    assert 10 * 3_600_000 < day_ttl <= 20 * 3_600_000 + 60_000
    assert abs(redis_client.pttl(f"{m0}:r:offer_weekly") - (7 * 86_400_000 + 60_000)) < 5_000
    assert abs(redis_client.pttl(f"{m0}:l:offer_ever") - 400 * 86_400_000) < 5_000
    assert abs(redis_client.pttl(f"{m0}:cd") - (30 * 86_400_000 + 60_000)) < 5_000
    report = memory_report(redis_client, key_prefix)
    assert report["n_keys_without_ttl"] == 0 and report["members"] == 20
    assert report["keys"] == len(names) and report["bytes_per_member"] > 0
    # The report does find a key without a TTL.
    redis_client.hset(f"{key_prefix}:{{M9999999}}:r:stray", "-", "1")
    report = memory_report(redis_client, key_prefix)
    assert report["keys_without_ttl"] == [f"{key_prefix}:{{M9999999}}:r:stray"]


def test_rolling_history_is_bounded_by_the_largest_limit(key_prefix: str, redis_client: redis.Redis) -> None:
    # count_on=event: the app may report more impressions than the cap allows; the sorted set keeps only as
    # many as the largest limit of any tier (3 for platinum's category_24h).
    e = build_enforcer(
        REDIS_URL, make_policy(POLICY.format(count_on="event")), key_prefix=key_prefix, timeout_ms=2000
    )
    m = CapMember("M0000001", "basic", "UTC")
    seat = CapCandidate("S1", "ancillary", "seat")
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    for i in range(30):
        e.record_event(m, seat, "impression", "home", now + timedelta(seconds=i))
    base = f"{key_prefix}:{{M0000001}}"
    seat_times = redis_client.hget(f"{base}:r:category_24h", "seat")
    assert seat_times is not None and seat_times.decode().split(",") == [
        str(int((now + timedelta(seconds=s)).timestamp() * 1000)) for s in (27, 28, 29)
    ]
    assert len((redis_client.hget(f"{base}:r:offer_weekly", "S1") or b"").split(b",")) == 1
    assert int(redis_client.hget(f"{base}:l:offer_ever", "S1") or 0) == 30
    state = e.member_state(m, now + timedelta(minutes=1))
    cat = next(c for c in state["caps"] if c["cap"] == "category_24h" and c["key"] == "seat")
    assert cat["count"] == 3 and cat["remaining"] == 0


def test_rolling_hash_drops_stale_fields(key_prefix: str, redis_client: redis.Redis) -> None:
    policy = make_policy("caps: [{name: offer_weekly, scope: member_offer, limit: 1, window: 7d}]")
    e = build_enforcer(REDIS_URL, policy, key_prefix=key_prefix, timeout_ms=2000)
    m = CapMember("M0000001", "basic", "UTC")
    key = f"{key_prefix}:{{M0000001}}:r:offer_weekly"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(8):  # 5 new offers a day
        for h in range(5):
            o = CapCandidate(f"N{day}-{h}", "ancillary", f"cat{h}")
            assert e.select_and_record(m, [o], 1, "home", t0 + timedelta(days=day, hours=h)).selected
    # Fields of offers last shown more than 7 days ago are dropped once the hash has more than 32.
    fields = {f.decode() for f in redis_client.hkeys(key)}
    assert len(fields) <= 35
    assert not any(f.startswith("N0-") for f in fields)
    assert {f"N7-{h}" for h in range(5)} <= fields
