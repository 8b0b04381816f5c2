"""Each eligibility rule shown to include AND exclude, on a hand-made catalogue."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.eligibility import EligibilityContext, Reason, check, filter_eligible
from recsys.pipeline.types import Stage, TripContext

from .fakes import NOW, catalogue_frame, offer


def trip(**kw: Any) -> TripContext:
    base: dict[str, Any] = dict(
        origin="PEK",
        destination="CTU",
        departure_time=NOW + timedelta(hours=48),
        cabin="Y",
        fare_class="Y",
        flight_number="CA4101",
        seats_left={"W": 3, "C": 2, "F": 1},
    )
    base.update(kw)
    return TripContext(**base)


def ctx(**kw: Any) -> EligibilityContext:
    base: dict[str, Any] = dict(
        placement="booking",
        now=NOW,
        tier="silver",
        miles_balance=50_000,
        trip=trip(),
        lounge_airports=frozenset({"PEK", "PVG"}),
    )
    base.update(kw)
    return EligibilityContext(**base)


ROWS = [
    offer("UP_W", "upsell", "cabin_upgrade", target_cabin="W", price_cash=800.0),
    offer("UP_C", "upsell", "cabin_upgrade", target_cabin="C", price_cash=3000.0),
    offer(
        "BID_W",
        "upsell",
        "upgrade_bid",
        target_cabin="W",
        window_close_hours=24.0,
        eligible_fare_classes=["Y", "B", "K"],
    ),
    offer("MEAL", "ancillary", "meal", meal="VGML", window_open_hours=720.0, window_close_hours=24.0),
    offer("LOUNGE", "ancillary", "lounge", requires_lounge=True, price_cash=200.0),
    offer("FLEX", "upsell", "flexible_fare", eligible_fare_classes=["Y", "B"]),
    offer(
        "AWARD",
        "redemption",
        "award_flight",
        destination="NRT",
        target_cabin="C",
        price_miles=40_000,
        min_miles=40_000,
        blackout_months=[1, 2],
    ),
    offer(
        "AWARD_PEK",
        "redemption",
        "award_flight",
        destination="FRA",
        price_miles=30_000,
        min_miles=30_000,
        eligible_origins=["PEK", "PVG"],
    ),
    offer("FAST", "ancillary", "fast_track", eligible_cabins=["Y", "W"], eligible_origins=["PEK"]),
    offer("AWUP", "redemption", "award_upgrade", target_cabin="W", price_miles=15_000, blackout_months=[12]),
    offer("GOLD", "ancillary", "fast_track", eligible_tiers=["gold", "platinum"]),
    offer("BOOKONLY", "ancillary", "insurance", placements=["booking"]),
    offer("LATER", "redemption", "merchandise", price_miles=1000, valid_from=NOW + timedelta(days=1)),
    offer("OLD", "redemption", "merchandise", price_miles=1000, valid_to=NOW - timedelta(seconds=1)),
    offer("RICH", "redemption", "miles_promotion", min_miles=100_000),
    offer("CSEAT", "ancillary", "seat", eligible_cabins=["C", "F"]),
    offer("HOTEL_NRT", "redemption", "hotel", destination="NRT", price_miles=15_000, min_miles=15_000),
    offer(
        "SPA",
        "ancillary",
        "lounge",
        requires_lounge=True,
        price_cash=500.0,
        eligible_cabins=["F", "C", "W", "Y"],
    ),
    offer(
        "GOLD_LOUNGE", "ancillary", "lounge", requires_lounge=True, price_cash=90.0, eligible_tiers=["gold"]
    ),
]
CAT = Catalogue(catalogue_frame(ROWS))


def verdict(offer_id: str, c: EligibilityContext) -> str | None:
    v = check(CAT[CAT.index_of[offer_id]], c)
    return None if v is None else v[0]


def test_upgrade_only_to_the_next_cabin() -> None:
    assert verdict("UP_W", ctx()) is None
    assert verdict("UP_C", ctx()) == Reason.NOT_NEXT_CABIN
    assert verdict("UP_C", ctx(trip=trip(cabin="W", fare_class="G"))) is None
    assert verdict("UP_W", ctx(trip=trip(cabin="C", fare_class="J"))) == Reason.NOT_NEXT_CABIN
    # the cabin is implied by the fare class when only the fare class is sent
    assert verdict("UP_W", ctx(trip=trip(cabin=None, fare_class="B"))) is None


def test_upgrade_needs_seats_left_in_the_target_cabin() -> None:
    assert verdict("UP_W", ctx(trip=trip(seats_left={"W": 1}))) is None
    assert verdict("UP_W", ctx(trip=trip(seats_left={"W": 0, "C": 5}))) == Reason.NO_SEATS_LEFT
    assert verdict("UP_W", ctx(trip=trip(seats_left=None))) == Reason.SEATS_UNKNOWN
    assert verdict("UP_W", ctx(trip=trip(seats_left=None), require_seat_inventory=False)) is None


def test_fare_class_rules() -> None:
    # K is an Economy class that is not upgrade-eligible
    assert verdict("UP_W", ctx(trip=trip(fare_class="K"))) == Reason.FARE_CLASS_NOT_ELIGIBLE
    assert verdict("UP_W", ctx(trip=trip(fare_class="M"))) is None
    assert verdict("UP_W", ctx(trip=trip(fare_class=None))) == Reason.FARE_CLASS_UNKNOWN
    # offer-specific fare classes
    assert verdict("FLEX", ctx(trip=trip(fare_class="B"))) is None
    assert verdict("FLEX", ctx(trip=trip(fare_class="Q"))) == Reason.FARE_CLASS_NOT_ELIGIBLE


def test_upgrade_bid_fare_classes_come_from_the_offer() -> None:
    # bids list their own fare classes (K included, although K is not upgrade-eligible by default)
    assert verdict("BID_W", ctx(trip=trip(fare_class="K"))) is None
    assert verdict("BID_W", ctx(trip=trip(fare_class="Q"))) == Reason.FARE_CLASS_NOT_ELIGIBLE


def test_origins_departure_airport_for_trip_offers_home_airport_for_others() -> None:
    assert verdict("FAST", ctx()) is None  # departs PEK
    assert verdict("FAST", ctx(trip=trip(origin="CTU", destination="PEK"))) == Reason.ORIGIN_NOT_ELIGIBLE
    # an award flight "from your airport": no trip needed, the member's home airport counts
    assert verdict("AWARD_PEK", ctx(trip=None, home_airport="PVG")) is None
    assert verdict("AWARD_PEK", ctx(trip=None, home_airport="CTU")) == Reason.ORIGIN_NOT_ELIGIBLE
    assert verdict("AWARD_PEK", ctx(trip=None, home_airport=None)) == Reason.ORIGIN_NOT_ELIGIBLE
    assert verdict("AWARD_PEK", ctx(home_airport="CTU")) is None  # the booked trip departs PEK


def test_a_hotel_is_offered_only_for_a_trip_to_its_city() -> None:
    assert verdict("HOTEL_NRT", ctx(trip=trip(destination="NRT"))) is None
    assert verdict("HOTEL_NRT", ctx()) == Reason.NOT_TRIP_DESTINATION  # the trip goes to CTU
    assert verdict("HOTEL_NRT", ctx(trip=None, home_airport="PEK")) == Reason.NOT_TRIP_DESTINATION
    v = check(CAT[CAT.index_of["HOTEL_NRT"]], ctx())
    assert v is not None and "NRT" in v[1] and "CTU" in v[1]


def test_meal_orders_close_24h_before_departure() -> None:
    assert verdict("MEAL", ctx(trip=trip(departure_time=NOW + timedelta(hours=30)))) is None
    assert verdict("MEAL", ctx(trip=trip(departure_time=NOW + timedelta(hours=23, minutes=59)))) == (
        Reason.WINDOW_CLOSED
    )
    # the window opens 720 h (30 days) before departure
    far = trip(departure_time=NOW + timedelta(hours=721))
    assert verdict("MEAL", ctx(trip=far)) == Reason.WINDOW_NOT_OPEN
    assert verdict("MEAL", ctx(trip=trip(departure_time=NOW - timedelta(hours=1)))) == Reason.DEPARTED
    assert verdict("MEAL", ctx(trip=trip(departure_time=None))) == Reason.DEPARTURE_UNKNOWN


def test_upgrade_bids_close_a_day_before() -> None:
    assert verdict("BID_W", ctx(trip=trip(departure_time=NOW + timedelta(hours=25)))) is None
    assert verdict("BID_W", ctx(trip=trip(departure_time=NOW + timedelta(hours=12)))) == Reason.WINDOW_CLOSED


def test_lounge_needs_a_lounge_at_the_departure_airport() -> None:
    assert verdict("LOUNGE", ctx()) is None  # PEK has one
    assert verdict("LOUNGE", ctx(trip=trip(origin="XIY"))) == Reason.NO_LOUNGE_AT_ORIGIN
    assert verdict("LOUNGE", ctx(trip=trip(origin="PVG"))) is None


def test_no_paid_lounge_pass_to_the_entitled_unless_the_catalogue_names_them() -> None:
    business = ctx(trip=trip(cabin="C", fare_class="J"))
    assert verdict("LOUNGE", business) == Reason.LOUNGE_ENTITLED  # a pass for any cabin
    assert verdict("SPA", business) is None  # lists Business by name
    assert verdict("SPA", ctx(trip=trip(cabin="F", fare_class="F"))) is None
    gold = ctx(tier="gold")
    assert verdict("LOUNGE", gold) == Reason.LOUNGE_ENTITLED
    assert verdict("SPA", gold) == Reason.LOUNGE_ENTITLED  # it names cabins, not the tier
    assert verdict("GOLD_LOUNGE", gold) is None  # names the tier
    assert verdict("GOLD_LOUNGE", ctx(tier="platinum")) == Reason.TIER_NOT_ELIGIBLE
    for o in ("LOUNGE", "SPA"):  # an economy passenger without status is not entitled
        assert verdict(o, ctx()) is None


def test_miles_balance_close_and_insufficient() -> None:
    award = CAT[CAT.index_of["AWARD"]]
    assert verdict("AWARD", ctx(miles_balance=40_000)) is None
    # 80 % of 40,000 = 32,000: still offered, as "you're close"
    res = filter_eligible([award.index], CAT, ctx(miles_balance=32_000))
    assert res.eligible == [award.index] and res.close == {award.index: 8_000}
    assert verdict("AWARD", ctx(miles_balance=31_999)) == Reason.INSUFFICIENT_MILES
    assert verdict("AWARD", ctx(miles_balance=0)) == Reason.INSUFFICIENT_MILES
    # affordable: not marked close
    assert filter_eligible([award.index], CAT, ctx(miles_balance=60_000)).close == {}
    # min_miles
    assert verdict("RICH", ctx(miles_balance=100_000)) is None
    assert verdict("RICH", ctx(miles_balance=99_999)) == Reason.BELOW_MIN_MILES


def test_already_bought_for_this_trip() -> None:
    assert verdict("MEAL", ctx()) is None
    assert verdict("MEAL", ctx(purchased=frozenset({"MEAL"}))) == Reason.ALREADY_PURCHASED


def test_validity_dates() -> None:
    assert verdict("LATER", ctx()) == Reason.NOT_YET_VALID
    assert verdict("LATER", ctx(now=NOW + timedelta(days=1))) is None
    assert verdict("OLD", ctx()) == Reason.EXPIRED
    assert verdict("OLD", ctx(now=NOW - timedelta(seconds=2))) is None


def test_blackout_months_for_award_seats() -> None:
    # award flights: the current month; NOW is November
    assert verdict("AWARD", ctx()) is None
    assert verdict("AWARD", ctx(now=NOW.replace(year=2027, month=1, day=10))) == Reason.BLACKOUT_MONTH
    # award upgrades: the month of the booked flight (December is blacked out)
    assert verdict("AWUP", ctx()) is None
    dec = trip(departure_time=NOW.replace(month=12, day=20))
    assert verdict("AWUP", ctx(trip=dec)) == Reason.BLACKOUT_MONTH


def test_tier() -> None:
    assert verdict("GOLD", ctx(tier="silver")) == Reason.TIER_NOT_ELIGIBLE
    assert verdict("GOLD", ctx(tier="gold")) is None
    assert verdict("GOLD", ctx(tier="platinum")) is None


def test_placement() -> None:
    assert verdict("BOOKONLY", ctx(placement="booking")) is None
    assert verdict("BOOKONLY", ctx(placement="home")) == Reason.PLACEMENT_NOT_ALLOWED


def test_trip_bound_offers_need_a_trip_and_an_eligible_cabin() -> None:
    assert verdict("MEAL", ctx(trip=None)) == Reason.REQUIRES_TRIP
    assert verdict("AWARD", ctx(trip=None)) is None  # an award flight is not tied to a booking
    assert verdict("CSEAT", ctx()) == Reason.CABIN_NOT_ELIGIBLE
    assert verdict("CSEAT", ctx(trip=trip(cabin="C", fare_class="J"))) is None


def test_families_filter() -> None:
    assert verdict("AWARD", ctx(families=frozenset({"ancillary"}))) == Reason.FAMILY_NOT_REQUESTED
    assert verdict("AWARD", ctx(families=frozenset({"redemption"}))) is None


def test_filter_eligible_records_every_dropped_candidate_with_stage_and_detail() -> None:
    c = ctx(placement="home", tier="basic", miles_balance=0)
    res = filter_eligible(range(len(CAT)), CAT, c)
    dropped = {s.offer_id: s for s in res.suppressed}
    assert set(dropped) | {CAT[i].offer_id for i in res.eligible} == {o.offer_id for o in CAT.offers}
    assert not set(dropped) & {CAT[i].offer_id for i in res.eligible}
    assert all(s.stage == Stage.ELIGIBILITY and s.detail for s in res.suppressed)
    assert dropped["BOOKONLY"].reason == Reason.PLACEMENT_NOT_ALLOWED
    assert dropped["GOLD"].reason == Reason.TIER_NOT_ELIGIBLE
    assert "basic" in dropped["GOLD"].detail


@pytest.mark.parametrize("fc", ["F", "J", "G", "Y", "H"])
def test_upgrade_eligible_fare_classes_from_schema(fc: str) -> None:
    from recsys.schema import FARE_CLASS_CABIN, next_cabin

    cabin = str(FARE_CLASS_CABIN[fc])
    t = trip(cabin=cabin, fare_class=fc)
    nxt = next_cabin(cabin)
    ids = {"Y": "UP_W", "W": "UP_C"}
    if nxt is None:
        assert all(verdict(i, ctx(trip=t)) == Reason.NOT_NEXT_CABIN for i in ("UP_W", "UP_C"))
    elif cabin in ids:
        assert verdict(ids[cabin], ctx(trip=t)) is None
    else:  # C -> F: no F upgrade offer in this catalogue; the W one is not the next cabin
        assert verdict("UP_W", ctx(trip=replace(t))) == Reason.NOT_NEXT_CABIN


def test_skipping_rules_that_cannot_apply_never_changes_a_verdict() -> None:
    """``filter_eligible`` runs only ``rules_for(offer)``: over the generator's whole catalogue and the
    hand-made one, and many request contexts, the verdict equals running every rule."""
    import random

    from recsys.data.generator import END, LOG_START
    from recsys.data.network import load_network
    from recsys.data.world.catalogue import build_catalogue
    from recsys.pipeline.eligibility import rules_for

    world = Catalogue(build_catalogue(load_network(), LOG_START, END))
    rng = random.Random(7)
    airports = ["PEK", "PVG", "CTU", "CAN", "SZX", "XIY", "LHR", "FRA", None]
    checked = differing = 0
    for _ in range(300):
        t = None
        if rng.random() < 0.8:
            t = trip(
                origin=rng.choice(airports),
                destination="URC",
                **rng.choice(
                    [{"cabin": c, "fare_class": None} for c in ("Y", "W", "C", "F", None)]
                    + [{"cabin": None, "fare_class": f} for f in ("Y", "B", "M", "J", "C", "F")]
                ),
                departure_time=rng.choice([None, NOW + timedelta(hours=rng.uniform(-5, 800))]),
                seats_left=rng.choice([None, {"W": 0, "C": 2, "F": 1}, {"W": 3, "C": 0}]),
            )
        c = ctx(
            placement=rng.choice(["home", "booking", "post_booking", "check_in", "in_trip"]),
            now=NOW + timedelta(days=rng.uniform(-400, 60)),
            tier=rng.choice(["basic", "silver", "gold", "platinum"]),
            miles_balance=rng.choice([-10, 0, 5_000, 40_000, 300_000]),
            trip=t,
            home_airport=rng.choice(airports),
            families=rng.choice([None, frozenset({"upsell"}), frozenset({"ancillary", "redemption"})]),
            purchased=frozenset(rng.sample(list(world.index_of), 3)),
        )
        for cat in (world, CAT):
            for o in cat.offers:
                checked += 1
                differing += check(o, c, rules_for(o)) != check(o, c)
    assert checked > 30_000 and differing == 0
