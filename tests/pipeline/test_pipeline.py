"""The orchestrator on a hand-made catalogue with a fake scorer, the embedded member store and the shipped
network: ranking, explanations from profile facts, suppression records, cold start, caps stage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from recsys.capping.api import build_enforcer, parse_policy
from recsys.features.profiles import ProfileCol as P
from recsys.pipeline import (
    InvalidRequest,
    OfferPipeline,
    PipelineConfig,
    RecommendRequest,
    Stage,
    TripContext,
)
from recsys.pipeline.eligibility import Reason
from recsys.stores.member_store import EmbeddedMemberStore

from .fakes import NOW, FakeBundle, catalogue_frame, offer

EVERY = ["F", "C", "W", "Y"]
ROWS = [
    offer(
        "UP_C",
        "upsell",
        "cabin_upgrade",
        target_cabin="C",
        eligible_cabins=["W"],
        price_cash=1800.0,
        margin=1260.0,
        window_open_hours=720.0,
        window_close_hours=2.0,
        placements=["post_booking"],
    ),
    offer(
        "UP_F",
        "upsell",
        "cabin_upgrade",
        target_cabin="F",
        eligible_cabins=["C"],
        price_cash=4500.0,
        margin=3000.0,
        placements=["post_booking"],
    ),
    offer(
        "MEAL_VGML",
        "ancillary",
        "meal",
        meal="VGML",
        eligible_cabins=EVERY,
        margin=5.0,
        window_open_hours=720.0,
        window_close_hours=24.0,
        placements=["post_booking"],
    ),
    offer(
        "MEAL_SIG",
        "ancillary",
        "meal",
        meal="SIG",
        eligible_cabins=["C"],
        margin=80.0,
        window_open_hours=720.0,
        window_close_hours=24.0,
        placements=["post_booking"],
    ),
    offer(
        "LOUNGE",
        "ancillary",
        "lounge",
        eligible_cabins=["Y", "W"],
        eligible_origins=["PEK", "CTU"],
        requires_lounge=True,
        margin=200.0,
        window_open_hours=72.0,
        window_close_hours=1.0,
        placements=["post_booking"],
    ),
    offer(
        "AWARD_NRT",
        "redemption",
        "award_flight",
        destination="NRT",
        target_cabin="C",
        price_miles=50_000,
        min_miles=50_000,
        margin=200.0,
        eligible_origins=["PEK", "PVG"],
        placements=["home", "post_booking"],
    ),
    offer(
        "AWARD_LHR",
        "redemption",
        "award_flight",
        destination="LHR",
        target_cabin="C",
        price_miles=70_000,
        min_miles=70_000,
        margin=240.0,
        eligible_origins=["PEK"],
        placements=["home", "post_booking"],
    ),
    offer(
        "GOLD_FAST",
        "ancillary",
        "fast_track",
        eligible_tiers=["gold", "platinum"],
        eligible_cabins=EVERY,
        margin=60.0,
        placements=["post_booking"],
    ),
    offer(
        "WIFI", "ancillary", "wifi", eligible_cabins=EVERY, margin=30.0, placements=["post_booking", "home"]
    ),
    offer(
        "MALL", "redemption", "merchandise", price_miles=3000, min_miles=3000, margin=6.0, placements=["home"]
    ),
    offer("PROMO", "redemption", "miles_promotion", margin=20.0, placements=["home"]),
]
OFFERS = catalogue_frame(ROWS)
PROBS = {
    "UP_C": 0.05,
    "MEAL_VGML": 0.5,
    "LOUNGE": 0.2,
    "AWARD_NRT": 0.1,
    "AWARD_LHR": 0.1,
    "WIFI": 0.3,
    "MALL": 0.2,
    "GOLD_FAST": 0.9,
    "UP_F": 0.9,
    "MEAL_SIG": 0.9,
}


def profile(member_id: str, **kw: Any) -> dict[str, Any]:
    base = {
        P.MEMBER_ID: member_id,
        P.TIER: "silver",
        P.HOME_AIRPORT: "PEK",
        P.TIME_ZONE: "Asia/Shanghai",
        P.MILES_BALANCE: 52_300,
        P.SEGMENT: "keep",
        P.TOP_ROUTE: "PEK-CTU",
        P.TOP_ROUTE_FLIGHTS: 6,
        P.TOP_ROUTE_CABIN: "C",
        P.TOP_ROUTE_CABIN_FLIGHTS: 4,
        P.TOP_DESTINATION: "CTU",
        P.TOP_DESTINATION_FLIGHTS: 6,
        P.SPECIAL_MEAL: "VGML",
        P.NEXT_TIER: "gold",
        P.KM_TO_NEXT_TIER: 12_000,
        P.SEGMENTS_TO_NEXT_TIER: 10,
        P.CABIN_SHARE_C: 0.4,
        P.CABIN_SHARE_W: 0.6,
        P.LOUNGE_SHARE: 0.25,
        P.BAGS_PER_FLIGHT: 0.5,
    }
    base.update(kw)
    return base


@pytest.fixture
def store() -> EmbeddedMemberStore:
    s = EmbeddedMemberStore()
    s.publish(pd.DataFrame([profile("M1"), profile("M2", **{P.MILES_BALANCE: 41_000})]), None, "v1")
    return s


def trip(**kw: Any) -> TripContext:
    base: dict[str, Any] = dict(
        origin="PEK",
        destination="CTU",
        departure_time=NOW + timedelta(hours=30),
        cabin="W",
        fare_class="G",
        flight_number="CA4101",
        seats_left={"C": 3},
    )
    base.update(kw)
    return TripContext(**base)


def request(member_id: str = "M1", **kw: Any) -> RecommendRequest:
    base: dict[str, Any] = dict(member_id=member_id, placement="post_booking", trip=trip(), now=NOW, limit=10)
    base.update(kw)
    return RecommendRequest(**base)


def pipeline(store: Any, cap_enforcer: Any = None, **cfg: Any) -> OfferPipeline:
    bundle = FakeBundle(OFFERS, PROBS, known=["M1", "M2"])
    return OfferPipeline(bundle, store, cap_enforcer=cap_enforcer, config=PipelineConfig(**cfg))


def test_ranked_eligible_offers_with_every_drop_recorded(store: EmbeddedMemberStore) -> None:
    res = pipeline(store).recommend(request(debug=True))
    ids = [o.offer_id for o in res.offers]
    assert set(ids) == {"UP_C", "MEAL_VGML", "LOUNGE", "AWARD_NRT", "WIFI"}
    assert [o.rank for o in res.offers] == list(range(1, len(ids) + 1))
    assert not res.cold_start and res.cap_degraded is None
    reasons = {s.offer_id: (s.stage, s.reason) for s in res.suppressed}
    assert reasons["UP_F"] == (Stage.ELIGIBILITY, Reason.CABIN_NOT_ELIGIBLE)  # C→F offer, booked W
    assert reasons["MEAL_SIG"] == (Stage.ELIGIBILITY, Reason.CABIN_NOT_ELIGIBLE)
    assert reasons["GOLD_FAST"] == (Stage.ELIGIBILITY, Reason.TIER_NOT_ELIGIBLE)
    assert reasons["AWARD_LHR"] == (Stage.ELIGIBILITY, Reason.INSUFFICIENT_MILES)  # 52,300 < 80 % of 70,000
    assert reasons["MALL"] == (Stage.ELIGIBILITY, Reason.PLACEMENT_NOT_ALLOWED)
    assert reasons["PROMO"] == (Stage.ELIGIBILITY, Reason.PLACEMENT_NOT_ALLOWED)
    assert set(reasons) | set(ids) == set(OFFERS["offer_id"])  # every candidate accounted for
    # without debug, offers never shown at this placement are left out of the list (not candidates here)
    quiet = pipeline(store).recommend(request())
    assert [o.offer_id for o in quiet.offers] == ids
    assert {s.offer_id for s in quiet.suppressed} == set(reasons) - {"MALL", "PROMO"}
    by_id = {o.offer_id: o for o in res.offers}
    # expected value = p × margin, and the list starts with the most valuable offer
    assert by_id["UP_C"].expected_value == pytest.approx(0.05 * 1260.0)
    assert res.offers[0].offer_id == "UP_C"
    # meal orders close 24 h before departure: the offer expires then
    assert by_id["MEAL_VGML"].expires_at == NOW + timedelta(hours=6)
    assert by_id["AWARD_NRT"].expires_at == NOW + timedelta(hours=24)  # default offer TTL
    assert by_id["UP_C"].price_cash == 1800.0 and by_id["UP_C"].price_miles is None
    assert by_id["AWARD_NRT"].price_miles == 50_000 and by_id["AWARD_NRT"].price_cash is None


def test_explanations_state_real_profile_and_trip_facts(store: EmbeddedMemberStore) -> None:
    res = pipeline(store).recommend(request())
    why = {o.offer_id: o.reasons for o in res.offers}
    assert "You flew PEK–CTU in Business 4 times in the last 12 months" in why["UP_C"]
    assert "Seats left in Business: 3" in why["UP_C"]
    assert "You have 52,300 miles — enough for a Business award to Tokyo" in why["AWARD_NRT"]
    assert "Meal orders close in 6 hours" in why["MEAL_VGML"]
    assert "You usually order a vegetarian meal on your flights" in why["MEAL_VGML"]
    assert any("lounge at Beijing (PEK)" in r for r in why["LOUNGE"])
    assert "You used a lounge on 25 % of your flights" in why["LOUNGE"]
    assert all(why[o] for o in why)


def test_youre_close_offer_names_the_missing_miles(store: EmbeddedMemberStore) -> None:
    res = pipeline(store).recommend(request("M2"))  # 41,000 miles: 82 % of the 50,000 award
    award = next(o for o in res.offers if o.offer_id == "AWARD_NRT")
    assert "You have 41,000 miles — 9,000 more for a Business award to Tokyo" in award.reasons
    assert award.expected_value == pytest.approx(0.1 * 200.0 * 0.5)


def test_limit_and_top_k_suppression(store: EmbeddedMemberStore) -> None:
    res = pipeline(store).recommend(request(limit=2))
    assert len(res.offers) == 2
    below = [s for s in res.suppressed if s.stage == Stage.TOP_K]
    assert len(below) == 3


def test_category_limit_applies_in_the_pipeline() -> None:
    # 80,000 miles: both award flights (one category) are eligible at home; the limit keeps one of them.
    rich = EmbeddedMemberStore()
    rich.publish(pd.DataFrame([profile("M1", **{P.MILES_BALANCE: 80_000})]), None, "v1")
    home = request(member_id="M1", placement="home", trip=None)
    unlimited = [o.category for o in pipeline(rich).recommend(home).offers]
    assert unlimited.count("award_flight") == 2
    res = pipeline(rich, max_per_category=1).recommend(home)
    cats = [o.category for o in res.offers]
    assert len(cats) == len(set(cats)) and "award_flight" in cats
    dropped = [s for s in res.suppressed if s.stage == Stage.DIVERSITY]
    assert [s.offer_id for s in dropped] == ["AWARD_NRT"]  # the lower-ranked of the two


def test_already_bought_for_this_trip_is_suppressed(store: EmbeddedMemberStore) -> None:
    t = trip()
    key = t.trip_key()
    assert key is not None
    store.add_purchase("M1", key, "MEAL_VGML", ttl=timedelta(days=3))
    res = pipeline(store).recommend(request(trip=t))
    assert "MEAL_VGML" not in {o.offer_id for o in res.offers}
    assert (Stage.ELIGIBILITY, Reason.ALREADY_PURCHASED) in {
        (s.stage, s.reason) for s in res.suppressed if s.offer_id == "MEAL_VGML"
    }
    # another trip: the meal is offered again
    other = trip(departure_time=NOW + timedelta(days=3))
    assert "MEAL_VGML" in {o.offer_id for o in pipeline(store).recommend(request(trip=other)).offers}


def test_cold_start_member_unknown_to_model_and_store_still_gets_offers(store: EmbeddedMemberStore) -> None:
    p = pipeline(store)
    res = p.recommend(request("NEW-1", placement="home", trip=None))
    assert res.cold_start
    assert res.offers, "a brand-new member gets offers"
    # default profile: basic tier, no miles: the promotion, not the merchandise it cannot pay for
    assert [o.offer_id for o in res.offers] == ["PROMO"]
    assert {s.offer_id: s.reason for s in res.suppressed}["MALL"] == Reason.INSUFFICIENT_MILES
    # with a trip: trip offers, still no tier-restricted ones
    res = p.recommend(request("NEW-1"))
    ids = {o.offer_id for o in res.offers}
    assert "MEAL_VGML" in ids and "GOLD_FAST" not in ids
    assert all(r for o in res.offers for r in o.reasons)


def test_families_filter(store: EmbeddedMemberStore) -> None:
    res = pipeline(store).recommend(request(families=frozenset({"redemption"})))
    assert {o.family for o in res.offers} == {"redemption"}
    assert not [s for s in res.suppressed if s.reason == Reason.FAMILY_NOT_REQUESTED]
    res = pipeline(store).recommend(request(families=frozenset({"redemption"}), debug=True))
    assert {s.offer_id for s in res.suppressed if s.reason == Reason.FAMILY_NOT_REQUESTED} == {
        "UP_C",
        "MEAL_VGML",
        "LOUNGE",
        "WIFI",
        "UP_F",
        "MEAL_SIG",
        "GOLD_FAST",
    }


def test_unknown_airport_is_a_request_error(store: EmbeddedMemberStore) -> None:
    with pytest.raises(InvalidRequest) as e:
        pipeline(store).recommend(request(trip=trip(origin="ZZZ")))
    assert e.value.field == "trip.origin"


def test_config_validation() -> None:
    for bad in (
        dict(max_per_category=0),
        dict(close_fraction=1.5),
        dict(family_repeat_penalty=0.0),
        dict(retrieval_k=-1),
        dict(offer_ttl_hours=0),
        dict(miles_liability_cost_cny=-1.0),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PipelineConfig(**bad)


def test_request_validation_names_the_field() -> None:
    cases = [
        (dict(placement="lobby"), "placement"),
        (dict(placement=["home"]), "placement"),  # library callers: a non-string is named, not a TypeError
        (dict(limit=0), "limit"),
        (dict(limit=51), "limit"),
        (dict(now=NOW.replace(tzinfo=None)), "now"),
        (dict(families=frozenset({"food"})), "families"),
        (dict(families=frozenset({"upsell", 3})), "families"),
        (dict(member_id=" "), "member_id"),
        (dict(member_id="M{1}"), "member_id"),
        (dict(member_id="x" * 65), "member_id"),
    ]
    for kw, field in cases:
        with pytest.raises(InvalidRequest) as e:
            request(**kw)
        assert e.value.field == field
    for kw, field in [
        (dict(cabin="X"), "trip.cabin"),
        (dict(cabin=("Y",)), "trip.cabin"),
        (dict(fare_class="J"), "trip.fare_class"),  # J is a Business class, the trip says W
        (dict(origin="pek"), "trip.origin"),
        (dict(departure_time=NOW.replace(tzinfo=None)), "trip.departure_time"),
        (dict(seats_left={"C": -1}), "trip.seats_left.C"),
    ]:
        with pytest.raises(InvalidRequest) as e:
            trip(**kw)
        assert e.value.field == field


POLICY = """
version: test
count_on: serve
caps:
  - name: offer_weekly
    scope: member_offer
    limit: 1
    window: 7d
"""


def test_caps_stage_suppresses_and_fills_from_the_next_candidates(store: EmbeddedMemberStore) -> None:
    caps = build_enforcer(None, parse_policy(POLICY))
    p = pipeline(store, cap_enforcer=caps)
    first = p.recommend(request(limit=2))
    shown = [o.offer_id for o in first.offers]
    assert len(shown) == 2
    second = p.recommend(request(limit=2, now=NOW + timedelta(minutes=5)))
    again = [o.offer_id for o in second.offers]
    assert len(again) == 2 and not set(again) & set(shown), "the cap fills the list from the next offers"
    capped = {s.offer_id: s for s in second.suppressed if s.stage == Stage.CAPS}
    assert set(capped) == set(shown)
    assert all(s.reason.startswith("cap:member_offer") for s in capped.values())
    # a week later the cap has reset (a 7d window counts in 7 h buckets: at most 7 h past the week)
    later = p.recommend(
        request(
            limit=2,
            now=NOW + timedelta(days=7, hours=7, minutes=1),
            trip=trip(departure_time=NOW + timedelta(days=7, hours=37)),
        )
    )
    assert not [s for s in later.suppressed if s.stage == Stage.CAPS and s.offer_id in shown]


def test_no_enforcer_means_no_caps_stage(store: EmbeddedMemberStore) -> None:
    p = pipeline(store)
    a = p.recommend(request(limit=2))
    b = p.recommend(request(limit=2))
    assert [o.offer_id for o in a.offers] == [o.offer_id for o in b.offers]
    assert not [s for s in b.suppressed if s.stage == Stage.CAPS]


def test_offers_worth_nothing_are_dropped_unless_exempt(store: EmbeddedMemberStore) -> None:
    rows = [
        offer(
            "FREE_NOBODY",
            "ancillary",
            "meal",
            meal="KSML",
            eligible_cabins=EVERY,
            margin=0.0,
            exempt=True,
            placements=["post_booking"],
        ),
        offer("ZERO_P", "ancillary", "wifi", eligible_cabins=EVERY, margin=30.0, placements=["post_booking"]),
        offer(
            "FREE_MEAL",
            "ancillary",
            "meal",
            meal="VGML",
            eligible_cabins=EVERY,
            margin=0.0,
            exempt=True,
            placements=["post_booking"],
        ),
        offer(
            "GOOD", "ancillary", "baggage", eligible_cabins=EVERY, margin=100.0, placements=["post_booking"]
        ),
    ]
    probs = {"ZERO_P": 0.0, "FREE_MEAL": 0.4, "GOOD": 0.2, "FREE_NOBODY": 0.0}
    bundle = FakeBundle(catalogue_frame(rows), probs, known=["M1"])
    res = OfferPipeline(bundle, store).recommend(request())
    assert [o.offer_id for o in res.offers] == ["GOOD", "FREE_MEAL"]
    dropped = {s.offer_id: (s.stage, s.reason) for s in res.suppressed}
    assert dropped == {
        "ZERO_P": (Stage.VALUE, "no_expected_value"),
        "FREE_NOBODY": (Stage.VALUE, "no_expected_value"),
    }
    res = OfferPipeline(bundle, store, config=PipelineConfig(drop_worthless=False)).recommend(request())
    assert [o.offer_id for o in res.offers][:2] == ["GOOD", "FREE_MEAL"]  # EV ties: by score
    assert len(res.offers) == 4


def test_member_store_outage_serves_the_member_as_unknown_without_failing() -> None:
    from recsys.stores.member_store import RedisMemberStore
    from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig

    dead = RedisMemberStore(
        RedisClients(RedisConfig("redis://127.0.0.1:1/0", policy=RedisCallPolicy(timeout_ms=200)))
    )  # nothing listens on port 1
    res = pipeline(dead).recommend(request("M1", placement="home", trip=None))
    assert res.store_degraded is not None and "RedisUnavailable" in res.store_degraded
    assert [o.offer_id for o in res.offers] == ["PROMO"]  # default profile: basic tier, no miles


def test_async_pipeline_gives_the_blocking_pipelines_answer(store: EmbeddedMemberStore) -> None:
    """``arecommend`` (awaited I/O, the service's path) and ``recommend`` run one code path: the same offers,
    order, scores, reasons and suppressions, with caps on fresh enforcers."""
    import asyncio

    for req in (request("M1", limit=3), request("M2", placement="home", trip=None), request("NEW")):
        blocking = pipeline(store, cap_enforcer=build_enforcer(None, parse_policy(POLICY))).recommend(req)
        awaited = asyncio.run(
            pipeline(store, cap_enforcer=build_enforcer(None, parse_policy(POLICY))).arecommend(req)
        )
        assert blocking.offers and awaited.offers == blocking.offers
        assert awaited.suppressed == blocking.suppressed
        assert (awaited.cold_start, awaited.cap_degraded) == (blocking.cold_start, blocking.cap_degraded)


def test_async_member_store_outage_serves_the_member_as_unknown() -> None:
    import asyncio

    from recsys.stores.member_store import RedisMemberStore
    from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig

    dead = RedisMemberStore(
        RedisClients(RedisConfig("redis://127.0.0.1:1/0", policy=RedisCallPolicy(timeout_ms=200)))
    )
    res = asyncio.run(pipeline(dead).arecommend(request("M1", placement="home", trip=None)))
    assert res.store_degraded is not None and "RedisUnavailable" in res.store_degraded
    assert [o.offer_id for o in res.offers] == ["PROMO"]


def test_acceptance_objective_ranks_by_probability(store: EmbeddedMemberStore) -> None:
    by_value = pipeline(store, max_per_category=10, family_repeat_penalty=1.0).recommend(request())
    by_p = pipeline(store, max_per_category=10, family_repeat_penalty=1.0, objective="acceptance").recommend(
        request()
    )
    assert {o.offer_id for o in by_p.offers} == {o.offer_id for o in by_value.offers}
    ev = [o.expected_value for o in by_value.offers]
    p = [o.acceptance_probability for o in by_p.offers]
    assert ev == sorted(ev, reverse=True) and p == sorted(p, reverse=True)
    assert [o.offer_id for o in by_p.offers] != [o.offer_id for o in by_value.offers]
    with pytest.raises(ValueError, match="objective"):
        PipelineConfig(objective="clicks")
