"""``CapDecision.blocked``: the candidates the stored state blocks on their own (the request log's candidate
set after caps is the rest), on the in-process store and on the real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recsys.capping.api import CapCandidate, CapEnforcer, CapMember, build_enforcer
from tests.capping.conftest import REDIS_URL, make_policy, require_redis

POLICY = """
count_on: serve
cooldowns:
  dismiss: {offer: 3d}
caps:
  - {name: upsell_daily, scope: member_family, families: [upsell], limit: 2, window: day}
  - {name: offer_week, scope: member_offer, limit: 1, window: 7d}
"""

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
M = CapMember("M1", "basic", "Asia/Shanghai")


def up(i: int) -> CapCandidate:
    return CapCandidate(f"U{i}", "upsell", "cabin_upgrade")


def an(i: int, exempt: bool = False) -> CapCandidate:
    return CapCandidate(f"A{i}", "ancillary", "seat", exempt=exempt)


@pytest.fixture(params=["memory", "redis"])
def caps(request: pytest.FixtureRequest, key_prefix: str) -> CapEnforcer:
    policy = make_policy(POLICY)
    if request.param == "memory":
        return build_enforcer(None, policy)
    require_redis()
    return build_enforcer(REDIS_URL, policy, key_prefix=key_prefix, timeout_ms=2000)


def test_blocked_on_their_own_versus_crowded_out_by_the_request(caps: CapEnforcer) -> None:
    first = caps.select_and_record(M, [up(1), an(1)], k=2, placement="home", now=T0)
    assert first.selected == ["U1", "A1"] and first.blocked == []
    caps.record_event(M, an(2), "dismiss", "home", T0)
    t = T0 + timedelta(minutes=5)
    d = caps.select_and_record(
        M, [up(1), up(2), up(3), an(1), an(2), an(3)], k=5, placement="home", now=t, also_check=[an(1), up(4)]
    )
    # U1 and A1 were shown this week, A2 was dismissed: blocked on their own. U3 is crowded out only by
    # this request's own pick of U2 (two upsells a day): suppressed, but a candidate.
    assert d.selected == ["U2", "A3"]
    assert sorted(s.offer_id for s in d.suppressed) == ["A1", "A2", "U1", "U3"]
    assert d.blocked == ["U1", "A1", "A2", "A1"]  # also_check's A1 is checked too; U4 is allowed
    # also_check offers are never selected, even with slots left.
    assert "U4" not in d.selected


def test_exempt_offers_are_never_blocked(caps: CapEnforcer) -> None:
    caps.select_and_record(M, [an(9, exempt=True)], k=1, placement="home", now=T0)
    d = caps.select_and_record(
        M, [an(9, exempt=True)], k=1, placement="home", now=T0, also_check=[an(9, True)]
    )
    assert d.selected == ["A9"] and d.blocked == []
