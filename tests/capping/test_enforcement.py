"""Cap semantics, run identically against the in-process store and the real Redis (``make_enforcer``).

Times are injected; expected values are worked out by hand in each test (local midnights, DST days).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from recsys.capping.api import CapCandidate, CapEnforcer, CapMember
from recsys.schema import EventType, OfferCategory, OfferFamily, Placement, Tier
from tests.capping.conftest import make_policy

MakeEnforcer = Callable[..., CapEnforcer]

UP, ANC, RED = OfferFamily.UPSELL.value, OfferFamily.ANCILLARY.value, OfferFamily.REDEMPTION.value
HOME, BOOKING = Placement.HOME.value, Placement.BOOKING.value
MS = timedelta(milliseconds=1)


def offer(
    oid: str, family: str = ANC, category: str = OfferCategory.SEAT.value, exempt: bool = False
) -> CapCandidate:
    return CapCandidate(oid, family, category, exempt)


def member(mid: str = "M0000001", tier: str = Tier.BASIC.value, tz: str = "UTC") -> CapMember:
    return CapMember(mid, tier, tz)


def one_cap(scope: str, limit: int, window: str, extra: str = "") -> str:
    return f"""
cooldowns: {{dismiss: {{}}, purchase: {{}}}}
caps:
  - name: the_cap
    scope: {scope}
    limit: {limit}
    window: {window}
{extra}"""


def shown(e: CapEnforcer, m: CapMember, o: CapCandidate, at: datetime, placement: str = HOME) -> bool:
    return e.select_and_record(m, [o], 1, placement, at).selected == [o.offer_id]


# --------------------------------------------------------------------------------------------------------
# Rolling windows
# --------------------------------------------------------------------------------------------------------


def test_rolling_window_edge(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member_offer", 1, "7d")))
    m, o = member(), offer("O1")
    t0 = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
    assert shown(e, m, o, t0)
    d = e.select_and_record(m, [o], 1, HOME, t0 + timedelta(days=7) - MS)
    assert d.selected == []
    (s,) = d.suppressed
    assert s.reason == "cap:member_offer:rolling_7d"
    # A 7d window counts in 7 h buckets from the epoch: t0 falls in [02:00, 09:00), and the impression
    # counts until that bucket's end plus 7 days (conservative: never early, at most one bucket late).
    assert s.detail == (
        "this offer shown 1 time in the last 7 days (max 1, cap the_cap); next allowed 2026-11-23T09:00:00Z"
    )
    bucket_end = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    assert not shown(e, m, o, bucket_end + timedelta(days=7) - MS)
    assert shown(e, m, o, bucket_end + timedelta(days=7))
    assert not shown(e, m, o, t0 + timedelta(days=8))


def test_rolling_window_counts_several_impressions(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member", 3, "24h")))
    m = member()
    t0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert shown(e, m, offer("A"), t0)
    assert shown(e, m, offer("B"), t0 + timedelta(hours=1))
    assert shown(e, m, offer("C"), t0 + timedelta(hours=2))
    d = e.select_and_record(m, [offer("D")], 1, HOME, t0 + timedelta(hours=3))
    assert d.selected == []
    # The slot frees when the OLDEST of the three leaves the window: its 1 h bucket [10:00, 11:00) ends, +24h.
    assert d.suppressed[0].detail.endswith("next allowed 2026-05-02T11:00:00Z")
    assert not shown(e, m, offer("D"), t0 + timedelta(hours=25) - MS)
    assert shown(e, m, offer("D"), t0 + timedelta(hours=25))
    assert not shown(e, m, offer("E"), t0 + timedelta(hours=25, minutes=30))
    assert shown(e, m, offer("E"), t0 + timedelta(hours=26))


# --------------------------------------------------------------------------------------------------------
# Calendar windows in the member's time zone
# --------------------------------------------------------------------------------------------------------


def test_calendar_day_follows_member_time_zone(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member", 1, "day")))
    shanghai = member("M1", tz="Asia/Shanghai")  # UTC+8: local midnight is 16:00Z
    new_york = member("M2", tz="America/New_York")  # UTC-5 in November: local midnight is 05:00Z
    t = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai, 10:00 in New York
    assert shown(e, shanghai, offer("A"), t)
    assert shown(e, new_york, offer("A"), t)
    d = e.select_and_record(shanghai, [offer("B")], 1, HOME, datetime(2026, 11, 22, 15, 59, 59, tzinfo=UTC))
    assert d.selected == [] and d.suppressed[0].reason == "cap:member:day"
    assert (
        d.suppressed[0].detail
        == "offers shown 1 time today (max 1, cap the_cap); resets 2026-11-22T16:00:00Z"
    )
    # A new local day in Shanghai at 16:00Z; still the same day in New York until 05:00Z next morning.
    assert shown(e, shanghai, offer("B"), datetime(2026, 11, 22, 16, 0, tzinfo=UTC))
    assert not shown(e, new_york, offer("B"), datetime(2026, 11, 23, 4, 59, 59, tzinfo=UTC))
    assert shown(e, new_york, offer("B"), datetime(2026, 11, 23, 5, 0, tzinfo=UTC))


def test_calendar_day_across_spring_forward_new_york(make_enforcer: MakeEnforcer) -> None:
    # 2026-03-08 in New York is 23 hours long: it starts 05:00Z (EST) and ends 2026-03-09 04:00Z (EDT).
    e = make_enforcer(make_policy(one_cap("member", 1, "day")))
    m = member(tz="America/New_York")
    assert shown(e, m, offer("A"), datetime(2026, 3, 8, 5, 0, tzinfo=UTC))  # 00:00 local, first instant
    d = e.select_and_record(m, [offer("B")], 1, HOME, datetime(2026, 3, 9, 3, 59, 59, tzinfo=UTC))
    assert d.selected == []
    assert d.suppressed[0].detail.endswith("resets 2026-03-09T04:00:00Z")
    assert shown(e, m, offer("B"), datetime(2026, 3, 9, 4, 0, tzinfo=UTC))


def test_calendar_day_just_before_spring_forward_counts_in_previous_day(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member", 1, "day")))
    m = member(tz="America/New_York")
    # 2026-03-07 23:59:59 EST = 2026-03-08 04:59:59Z: the previous local day.
    assert shown(e, m, offer("A"), datetime(2026, 3, 8, 4, 59, 59, tzinfo=UTC))
    assert shown(e, m, offer("B"), datetime(2026, 3, 8, 5, 0, tzinfo=UTC))


def test_calendar_day_across_fall_back_london(make_enforcer: MakeEnforcer) -> None:
    # 2026-10-25 in London is 25 hours long: from 2026-10-24 23:00Z (BST) to 2026-10-26 00:00Z (GMT).
    e = make_enforcer(make_policy(one_cap("member", 1, "day")))
    m = member(tz="Europe/London")
    assert shown(e, m, offer("A"), datetime(2026, 10, 24, 23, 0, tzinfo=UTC))
    for t in (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 01:30 BST
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),  # 01:30 GMT, the repeated hour
        datetime(2026, 10, 25, 23, 59, 59, tzinfo=UTC),  # 23:59:59 GMT
    ):
        assert not shown(e, m, offer("B"), t)
    assert shown(e, m, offer("B"), datetime(2026, 10, 26, 0, 0, tzinfo=UTC))


def test_calendar_week_resets_on_local_monday(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member_category", 2, "week")))
    m = member(tz="Asia/Tokyo")  # UTC+9: Monday 2026-11-23 00:00 local = 2026-11-22 15:00Z
    seat = OfferCategory.SEAT.value
    assert shown(e, m, offer("A", category=seat), datetime(2026, 11, 16, 0, 0, tzinfo=UTC))  # Mon 09:00
    assert shown(e, m, offer("B", category=seat), datetime(2026, 11, 20, 0, 0, tzinfo=UTC))
    d = e.select_and_record(
        m, [offer("C", category=seat)], 1, HOME, datetime(2026, 11, 22, 14, 59, tzinfo=UTC)
    )
    assert d.suppressed[0].reason == "cap:member_category:week"
    assert d.suppressed[0].detail == (
        "seat offers shown 2 times this week (max 2, cap the_cap); resets 2026-11-22T15:00:00Z"
    )
    # Another category is counted separately.
    assert shown(
        e, m, offer("L", category=OfferCategory.LOUNGE.value), datetime(2026, 11, 22, 14, 59, tzinfo=UTC)
    )
    assert shown(e, m, offer("C", category=seat), datetime(2026, 11, 22, 15, 0, tzinfo=UTC))


def test_lifetime_cap(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member_offer", 2, "lifetime")))
    m, o = member(), offer("O1")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert shown(e, m, o, t0)
    assert shown(e, m, o, t0 + timedelta(days=100))
    d = e.select_and_record(m, [o], 1, HOME, t0 + timedelta(days=200))
    assert d.suppressed[0].reason == "cap:member_offer:lifetime"
    assert d.suppressed[0].detail.endswith("lifetime cap, does not reset")


# --------------------------------------------------------------------------------------------------------
# Scopes, filters, request accounting
# --------------------------------------------------------------------------------------------------------

DEFAULTISH = """
cooldowns:
  dismiss: {offer: 14d, category: 2d}
  purchase: {offer: 30d}
caps:
  - {name: member_daily, scope: member, limit: 4, window: day}
  - {name: upsell_daily, scope: member_family, families: [upsell], limit: 2, window: day}
  - {name: offer_weekly, scope: member_offer, limit: 1, window: 7d}
  - {name: home_hourly, scope: member_placement, placements: [home], limit: 3, window: 1h}
tiers:
  platinum:
    caps:
      upsell_daily: {limit: 1}
      member_daily: {limit: 2}
  gold:
    caps:
      home_hourly: {disabled: true}
"""


def test_selection_fills_from_next_candidates_and_counts_within_request(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m = member()
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    ranked = [
        offer("U1", UP, OfferCategory.CABIN_UPGRADE.value),
        offer("U2", UP, OfferCategory.UPGRADE_BID.value),
        offer("U3", UP, OfferCategory.EXTRA_LEGROOM.value),  # third upsell in one request: over upsell_daily
        offer("S1"),
        offer("S1"),  # the same offer twice: the second breaks offer_weekly
        offer("S2"),
        offer("S3"),
    ]
    d = e.select_and_record(m, ranked, 3, BOOKING, t)
    assert d.selected == ["U1", "U2", "S1"]
    assert [(s.offer_id, s.reason) for s in d.suppressed] == [("U3", "cap:member_family:day")]
    assert d.degraded is None
    # The next request sees those three: one member-wide slot left today, offer_weekly blocks repeats.
    d = e.select_and_record(m, ranked, 3, BOOKING, t + timedelta(minutes=1))
    assert d.selected == ["S2"]
    reasons = [(s.offer_id, s.reason) for s in d.suppressed]
    assert reasons == [
        ("U1", "cap:member_family:day"),
        ("U2", "cap:member_family:day"),
        ("U3", "cap:member_family:day"),
        ("S1", "cap:member_offer:rolling_7d"),
        ("S1", "cap:member_offer:rolling_7d"),
        ("S3", "cap:member:day"),  # S2 took the member's 4th and last slot of the day
    ]


def test_k_stops_the_walk(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    d = e.select_and_record(
        member(), [offer(f"S{i}") for i in range(6)], 2, BOOKING, datetime(2026, 6, 1, tzinfo=UTC)
    )
    assert d.selected == ["S0", "S1"] and d.suppressed == []
    assert (
        e.select_and_record(member(), [offer("X")], 0, BOOKING, datetime(2026, 6, 1, tzinfo=UTC)).selected
        == []
    )


def test_placement_scope_and_filter(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m = member()
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    assert e.select_and_record(m, [offer(f"H{i}") for i in range(5)], 5, HOME, t).selected == [
        "H0",
        "H1",
        "H2",
    ]
    d = e.select_and_record(m, [offer("H9")], 1, HOME, t + timedelta(minutes=59))
    assert d.suppressed[0].reason == "cap:member_placement:rolling_1h"
    assert "offers shown on home 3 times in the last 1 hour" in d.suppressed[0].detail
    # The cap only covers the home screen.
    assert shown(e, m, offer("B1"), t + timedelta(minutes=59), placement=BOOKING)
    # An hour later the home window has rolled on, but B1 was the member's 4th and last offer of the day.
    d = e.select_and_record(m, [offer("H9")], 1, HOME, t + timedelta(hours=1))
    assert [x.reason for x in d.suppressed] == ["cap:member:day"]


def test_tier_overrides(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    ups = [offer(f"U{i}", UP, OfferCategory.CABIN_UPGRADE.value) for i in range(3)]
    basic = member("M1", Tier.BASIC.value)
    plat = member("M2", Tier.PLATINUM.value)
    gold = member("M3", Tier.GOLD.value)
    assert e.select_and_record(basic, ups, 3, BOOKING, t).selected == ["U0", "U1"]
    d = e.select_and_record(plat, ups, 3, BOOKING, t)
    assert d.selected == ["U0"]
    assert "(max 1, cap upsell_daily)" in d.suppressed[0].detail
    # Platinum: at most 2 offers a day in all.
    assert e.select_and_record(plat, [offer("S1"), offer("S2")], 3, BOOKING, t).selected == ["S1"]
    # Gold: the home hourly cap is switched off, member_daily (4) still holds.
    assert e.select_and_record(gold, [offer(f"H{i}") for i in range(6)], 6, HOME, t).selected == [
        "H0",
        "H1",
        "H2",
        "H3",
    ]


def test_limit_zero_blocks_and_says_so(make_enforcer: MakeEnforcer) -> None:
    policy = make_policy(
        one_cap(
            "member_family",
            2,
            "day",
            extra="    families: [redemption]\ntiers:\n  platinum: {caps: {the_cap: {limit: 0}}}",
        )
    )
    e = make_enforcer(policy)
    d = e.select_and_record(
        member(tier="platinum"),
        [offer("R1", RED, OfferCategory.HOTEL.value)],
        1,
        HOME,
        datetime(2026, 6, 1, tzinfo=UTC),
    )
    assert d.selected == []
    assert d.suppressed[0].detail == "cap the_cap allows no redemption offers for platinum members"


def test_exempt_offers_are_never_capped_nor_counted(make_enforcer: MakeEnforcer) -> None:
    policy = make_policy(
        one_cap("member", 1, "day", extra="exempt:\n  offers: [SVC2]\n  categories: [insurance]\n")
    )
    e = make_enforcer(policy)
    m = member()
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    flagged = offer("SVC1", exempt=True)
    listed = offer("SVC2")
    by_category = offer("INS", category=OfferCategory.INSURANCE.value)
    for i in range(3):
        d = e.select_and_record(m, [flagged, listed, by_category], 3, HOME, t + timedelta(minutes=i))
        assert d.selected == ["SVC1", "SVC2", "INS"]
    # None of them used the member's one offer for the day.
    assert shown(e, m, offer("S1"), t + timedelta(minutes=5))
    assert not shown(e, m, offer("S2"), t + timedelta(minutes=6))


def test_record_false_does_not_count(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member", 1, "day")))
    m, t = member(), datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    for _ in range(3):
        assert e.select_and_record(m, [offer("A")], 1, HOME, t, record=False).selected == ["A"]
    assert shown(e, m, offer("A"), t)
    assert not shown(e, m, offer("A"), t)


def test_count_on_event(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy("count_on: event\n" + one_cap("member_offer", 1, "24h")))
    m, o, t = member(), offer("A"), datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    # Serving alone does not count...
    assert shown(e, m, o, t)
    assert shown(e, m, o, t + timedelta(minutes=1))
    # ...the app's impression event does.
    e.record_event(m, o, EventType.IMPRESSION.value, HOME, t + timedelta(minutes=2))
    d = e.select_and_record(m, [o], 1, HOME, t + timedelta(minutes=3))
    assert d.selected == [] and d.suppressed[0].reason == "cap:member_offer:rolling_24h"
    # The impression's 1 h bucket [09:00, 10:00) leaves the 24h window at 10:00 the next day.
    assert not shown(e, m, o, t + timedelta(hours=25) - MS)
    assert shown(e, m, o, t + timedelta(hours=25))


def test_impression_events_ignored_when_counting_on_serve(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member_offer", 1, "24h")))
    m, o, t = member(), offer("A"), datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.record_event(m, o, EventType.IMPRESSION.value, HOME, t)
    e.record_event(m, o, EventType.CLICK.value, HOME, t)
    assert shown(e, m, o, t + timedelta(minutes=1))


def test_unknown_event_type_is_an_error(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(one_cap("member", 1, "day")))
    with pytest.raises(ValueError, match="bogus"):
        e.record_event(member(), offer("A"), "bogus", HOME, datetime(2026, 6, 1, tzinfo=UTC))


# --------------------------------------------------------------------------------------------------------
# Cool-downs and purchases
# --------------------------------------------------------------------------------------------------------


def test_dismissal_cooldowns(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m = member()
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.record_event(m, offer("S1"), EventType.DISMISS.value, HOME, t)
    d = e.select_and_record(
        m, [offer("S1"), offer("S2"), offer("L1", category="lounge")], 3, BOOKING, t + timedelta(days=1)
    )
    assert d.selected == ["L1"]
    assert [(s.offer_id, s.reason) for s in d.suppressed] == [
        ("S1", "cooldown:dismiss:offer"),
        ("S2", "cooldown:dismiss:category"),
    ]
    assert d.suppressed[0].detail == "dismissed 2026-06-01T09:00:00Z; hidden until 2026-06-15T09:00:00Z"
    assert (
        d.suppressed[1].detail
        == "a seat offer was dismissed 2026-06-01T09:00:00Z; category hidden until 2026-06-03T09:00:00Z"
    )
    # Category cool-down (2 days) ends; the offer's own (14 days) does not.
    assert shown(e, m, offer("S2"), t + timedelta(days=2), placement=BOOKING)
    assert not shown(e, m, offer("S1"), t + timedelta(days=14) - MS, placement=BOOKING)
    assert shown(e, m, offer("S1"), t + timedelta(days=14), placement=BOOKING)


def test_purchase_suppresses_the_offer(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m = member()
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.record_event(m, offer("B1", category="baggage"), EventType.PURCHASE.value, HOME, t)
    d = e.select_and_record(m, [offer("B1", category="baggage"), offer("B2", category="baggage")], 2, HOME, t)
    assert d.selected == ["B2"]
    assert (d.suppressed[0].reason, d.suppressed[0].detail) == (
        "purchased",
        "bought 2026-06-01T09:00:00Z; not shown again until 2026-07-01T09:00:00Z",
    )
    assert shown(e, m, offer("B1", category="baggage"), t + timedelta(days=30), placement=BOOKING)


def test_out_of_order_events_keep_the_latest_time(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m, o = member(), offer("S1")
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.record_event(m, o, EventType.DISMISS.value, HOME, t + timedelta(days=5))
    e.record_event(m, o, EventType.DISMISS.value, HOME, t)  # a late retry of an older event
    assert not shown(e, m, o, t + timedelta(days=18), placement=BOOKING)  # 5 + 14 = day 19
    assert shown(e, m, o, t + timedelta(days=19), placement=BOOKING)


def test_exempt_offer_honours_the_members_dismissal(make_enforcer: MakeEnforcer) -> None:
    """Exempt means exempt from counting caps, not from a member's "no"."""
    e = make_enforcer(make_policy(DEFAULTISH))
    m, svc = member(), offer("SVC", exempt=True)
    other = offer("SVC2", category=OfferCategory.MEAL.value, exempt=True)
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.record_event(m, svc, EventType.DISMISS.value, HOME, t)
    assert not shown(e, m, svc, t + timedelta(hours=1))
    assert not shown(e, m, svc, t + timedelta(days=13, hours=23))
    assert shown(e, m, svc, t + timedelta(days=14, hours=1))
    for _ in range(20):  # never counted: any number of impressions leaves it (and its kind) shown
        e.record_event(m, other, EventType.IMPRESSION.value, HOME, t)
    e.record_event(m, other, EventType.PURCHASE.value, HOME, t)
    assert shown(e, m, other, t + timedelta(hours=1))


# --------------------------------------------------------------------------------------------------------
# member_state and counters
# --------------------------------------------------------------------------------------------------------


def test_member_state_reports_counts_limits_and_resets(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m = member(tz="Asia/Shanghai")
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai; local day ends 2026-06-01T16:00:00Z
    e.select_and_record(m, [offer("U1", UP, "cabin_upgrade"), offer("S1")], 2, HOME, t)
    e.select_and_record(m, [offer("S2")], 1, HOME, t + timedelta(minutes=10))
    e.record_event(m, offer("S3"), EventType.DISMISS.value, HOME, t + timedelta(minutes=20))
    # the catalogue names the per-offer counters (they store a code of the offer id)
    catalogue = ["U1", "S1", "S2", "S3"]
    state = e.member_state(m, t + timedelta(minutes=30), catalogue)
    assert state["member_id"] == "M0000001" and state["degraded"] is None
    caps = {(c["cap"], c["key"]): c for c in state["caps"]}
    assert caps[("member_daily", "-")] | {} == {
        "cap": "member_daily",
        "scope": "member",
        "key": "-",
        "window": "day",
        "limit": 4,
        "count": 3,
        "remaining": 1,
        "resets_at": "2026-06-01T16:00:00Z",
        "blocked_until": None,
        "reason_code": "cap:member:day",
    }
    assert caps[("upsell_daily", "upsell")]["count"] == 1
    assert caps[("home_hourly", "home")]["count"] == 3
    # 1h window: 2.5 min buckets, the 09:00 impressions count until 09:02:30 + 1h; 7d: 7 h buckets, the
    # 09:00 one is in [09:00, 16:00)
    assert caps[("home_hourly", "home")]["blocked_until"] == "2026-06-01T10:02:30Z"
    assert caps[("home_hourly", "home")]["resets_at"] == "2026-06-01T10:02:30Z"
    s1 = caps[("offer_weekly", "S1")]
    assert (s1["count"], s1["remaining"], s1["blocked_until"]) == (1, 0, "2026-06-08T16:00:00Z")
    assert ("offer_weekly", "S3") not in caps
    assert state["cooldowns"] == [
        {
            "reason_code": "cooldown:dismiss:category",
            "scope": "category",
            "target": "seat",
            "since": "2026-06-01T09:20:00Z",
            "until": "2026-06-03T09:20:00Z",
        },
        {
            "reason_code": "cooldown:dismiss:offer",
            "scope": "offer",
            "target": "S3",
            "since": "2026-06-01T09:20:00Z",
            "until": "2026-06-15T09:20:00Z",
        },
    ]
    # Next local day: day counters are back to zero, the weekly offer cap is not.
    later = e.member_state(m, datetime(2026, 6, 1, 16, 0, tzinfo=UTC), catalogue)
    caps = {(c["cap"], c["key"]): c for c in later["caps"]}
    assert caps[("member_daily", "-")]["count"] == 0
    assert caps[("member_daily", "-")]["resets_at"] == "2026-06-02T16:00:00Z"
    assert caps[("offer_weekly", "S1")]["count"] == 1


def test_suppression_counters(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(make_policy(DEFAULTISH))
    m, t = member(), datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.select_and_record(m, [offer("S1")], 1, BOOKING, t)
    e.select_and_record(m, [offer("S1"), offer("S1")], 1, BOOKING, t)
    e.record_event(m, offer("S9"), EventType.PURCHASE.value, HOME, t)
    e.select_and_record(m, [offer("S9")], 1, BOOKING, t)
    assert e.counters.snapshot() == {"cap:member_offer:rolling_7d": 2, "purchased": 1}


def test_policy_reload_applies_to_next_request(make_enforcer: MakeEnforcer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recsys.capping.api import PolicyHolder

    path = tmp_path / "caps.yaml"
    path.write_text(one_cap("member", 1, "day"))
    holder = PolicyHolder(path, poll_interval_s=0)
    e = make_enforcer(holder)
    m, t = member(), datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    assert shown(e, m, offer("A"), t)
    assert not shown(e, m, offer("B"), t)
    path.write_text(one_cap("member", 2, "day"))
    assert holder.reload().ok
    assert shown(e, m, offer("B"), t)


def test_very_long_candidate_list(make_enforcer: MakeEnforcer) -> None:
    # 3000 candidates in distinct categories: 9000 cool-down fields and 3000 counters in one script run.
    e = make_enforcer(make_policy(DEFAULTISH))
    cands = [offer(f"X{i}", category=f"c{i}") for i in range(3000)]
    d = e.select_and_record(member(), cands, 3000, BOOKING, datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    assert d.degraded is None
    assert d.selected == ["X0", "X1", "X2", "X3"]  # member_daily: 4
    assert len(d.suppressed) == 2996 and {s.reason for s in d.suppressed} == {"cap:member:day"}


def test_candidate_window(make_enforcer: MakeEnforcer) -> None:
    # 60 seat offers, then one lounge offer; seats are capped (2 a day), k = 3.
    policy = make_policy(one_cap("member_category", 2, "day"))
    cands = [offer(f"S{i}") for i in range(60)] + [offer("L1", category="lounge")]
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    windowed = make_enforcer(policy)  # default: the first max(50, 5k) = 50 candidates
    d = windowed.select_and_record(member("M1"), cands, 3, HOME, t)
    assert d.selected == ["S0", "S1"] and len(d.suppressed) == 48  # S2..S49; S50.. and L1 not looked at
    exhaustive = make_enforcer(policy, candidate_window=None)
    d = exhaustive.select_and_record(member("M2"), cands, 3, HOME, t)
    assert d.selected == ["S0", "S1", "L1"] and len(d.suppressed) == 58
    # A larger k widens the window (5 k).
    d = windowed.select_and_record(member("M3"), cands, 13, HOME, t)
    assert d.selected == ["S0", "S1", "L1"]
