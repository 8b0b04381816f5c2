"""In-process store specifics: bounded memory (expiry against injected time, least-recently-seen eviction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recsys.capping.api import CapCandidate, CapMember, PolicyHolder, build_enforcer
from recsys.capping.enforcer import CoreCapEnforcer
from recsys.capping.engine import offer_code
from recsys.capping.memory_store import MemoryCapStore
from tests.capping.conftest import make_policy

POLICY = make_policy(
    """
caps:
  - {name: member_daily, scope: member, limit: 1, window: day}
  - {name: offer_hour, scope: member_offer, limit: 1, window: 1h}
"""
)
SEAT = CapCandidate("S1", "ancillary", "seat")


def test_least_recently_seen_members_are_forgotten() -> None:
    store = MemoryCapStore(max_members=3)
    e = CoreCapEnforcer(PolicyHolder.static(POLICY), store)
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    for i in range(5):
        assert e.select_and_record(CapMember(f"M{i}", "basic"), [SEAT], 1, "home", t).selected == ["S1"]
    assert store.members_held() == 3
    # M4 is remembered (capped), M0 was forgotten (its count is gone, so it may see an offer again).
    assert e.select_and_record(CapMember("M4", "basic"), [SEAT], 1, "home", t).selected == []
    assert e.select_and_record(CapMember("M0", "basic"), [SEAT], 1, "home", t).selected == ["S1"]


def test_fields_whose_life_is_over_are_dropped_on_the_next_write() -> None:
    store = MemoryCapStore()
    e = CoreCapEnforcer(PolicyHolder.static(POLICY), store)
    m = CapMember("M1", "basic", "UTC")
    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    e.select_and_record(m, [SEAT], 1, "home", t)
    first = store.read("caps:{M1}").fields
    assert len(first) == 3  # the day counter, the hour counter, the version
    e.select_and_record(m, [CapCandidate("S2", "ancillary", "seat")], 1, "home", t + timedelta(days=2))
    # S1's hour is over: its field is gone; the day counter holds the new day's count.
    later = store.read("caps:{M1}").fields
    assert len(later) == 3
    # A per-offer rolling counter is a bucket field listing the codes of the offers shown in it.
    (listed,) = [v for f, v in later.items() if "|@" in f]
    assert listed == offer_code("S2")


def test_naive_datetimes_are_utc() -> None:
    e = build_enforcer(None, POLICY)
    m = CapMember("M1", "basic", "Asia/Tokyo")  # local midnight = 15:00Z
    assert e.select_and_record(m, [SEAT], 1, "home", datetime(2026, 6, 1, 14, 0)).selected == ["S1"]
    assert (
        e.select_and_record(
            m, [CapCandidate("S2", "ancillary", "seat")], 1, "home", datetime(2026, 6, 1, 14, 59)
        ).selected
        == []
    )
    assert e.select_and_record(
        m, [CapCandidate("S2", "ancillary", "seat")], 1, "home", datetime(2026, 6, 1, 15, 0)
    ).selected == ["S2"]


def test_key_prefix_with_braces_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="braces"):
        build_enforcer(None, POLICY, key_prefix="caps{x}")
    with pytest.raises(ValueError, match="braces"):
        CapMember("M{1}", "basic")
