"""``with_policy``: one counter store read under two cap policies (an experiment arm's own policy), on the
in-process store and on the real Redis (``make_enforcer``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from recsys.capping.api import CapEnforcer, PolicyHolder
from recsys.schema import EventType
from tests.capping.conftest import make_policy
from tests.capping.test_enforcement import BOOKING, HOME, member, offer, shown

MakeEnforcer = Callable[..., CapEnforcer]

T0 = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)

# The service's policy: counts impressions from events, each offer at most 3 times a week.
SERVICE = """
count_on: event
cooldowns: {dismiss: {}, purchase: {}}
caps:
  - {name: offer_weekly, scope: member_offer, limit: 3, window: 7d}
"""
# An arm's policy: the same weekly cap, one offer a day for the whole member, a dismissal hides the offer.
ARM = """
count_on: event
cooldowns: {dismiss: {offer: 14d}, purchase: {}}
caps:
  - {name: offer_weekly, scope: member_offer, limit: 3, window: 7d}
  - {name: arm_daily, scope: member, limit: 1, window: day}
"""


def test_events_recorded_through_the_arm_are_seen_under_its_policy(make_enforcer: MakeEnforcer) -> None:
    service = make_enforcer(make_policy(SERVICE))
    arm = service.with_policy(PolicyHolder.static(make_policy(ARM)))
    m, o1, o2 = member(), offer("O1"), offer("O2")
    assert shown(arm, m, o1, T0) and shown(arm, m, o2, T0)  # count_on: event — serving counts nothing
    arm.record_event(m, o1, EventType.IMPRESSION.value, HOME, T0)
    # The arm's own member-wide daily cap now blocks every offer; the service's policy has no such cap.
    decision = arm.select_and_record(m, [o2], 1, HOME, T0 + timedelta(minutes=1))
    assert decision.selected == [] and [s.reason for s in decision.suppressed] == ["cap:member:day"]
    assert shown(service, m, o2, T0 + timedelta(minutes=1))
    # A dismissal through the arm starts the arm's cool-down (the service's policy has none).
    arm.record_event(m, o2, EventType.DISMISS.value, HOME, T0 + timedelta(minutes=2))
    later = T0 + timedelta(days=1, hours=1)  # past the daily cap
    assert shown(arm, m, o1, later) and not shown(arm, m, o2, later)
    assert shown(service, m, o2, later)


def test_a_cap_both_policies_name_is_one_counter(make_enforcer: MakeEnforcer) -> None:
    service = make_enforcer(make_policy(SERVICE))
    arm = service.with_policy(PolicyHolder.static(make_policy(ARM)))
    m, o = member(), offer("O1")
    for i in range(2):
        service.record_event(m, o, EventType.IMPRESSION.value, BOOKING, T0 + timedelta(days=i))
    arm.record_event(m, o, EventType.IMPRESSION.value, BOOKING, T0 + timedelta(days=2))
    at = T0 + timedelta(days=3)
    # 3 impressions in the week, counted once each: offer_weekly is full under both policies.
    for e in (service, arm):
        d = e.select_and_record(m, [o], 1, HOME, at)
        assert d.selected == [] and [s.reason for s in d.suppressed] == ["cap:member_offer:rolling_7d"]
    assert arm.counters is service.counters  # one store, one set of suppression counts for the metrics
