"""The candidate stage: model retrieval plus the trip's family-specific offers."""

from __future__ import annotations

from datetime import timedelta

from recsys.pipeline.candidates import (
    SOURCE_AFFINITY,
    SOURCE_ANCILLARY,
    SOURCE_DESTINATION,
    SOURCE_MODEL,
    SOURCE_ORIGIN,
    SOURCE_UPGRADE,
    gather_candidates,
)
from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.types import TripContext

from .fakes import NOW, catalogue_frame, offer

EVERY = ["F", "C", "W", "Y"]
CAT = Catalogue(
    catalogue_frame(
        [
            offer("UP_W", "upsell", "cabin_upgrade", target_cabin="W", eligible_cabins=["Y"]),
            offer("UP_C", "upsell", "cabin_upgrade", target_cabin="C", eligible_cabins=["W"]),
            offer("BID_W", "upsell", "upgrade_bid", target_cabin="W", eligible_cabins=["Y"]),
            offer("MEAL_Y", "ancillary", "meal", eligible_cabins=["Y", "W"]),
            offer("MEAL_C", "ancillary", "meal", eligible_cabins=["C"]),
            offer("BAG", "ancillary", "baggage", eligible_cabins=EVERY),
            offer(
                "LOUNGE_PEK",
                "ancillary",
                "lounge",
                eligible_cabins=EVERY,
                eligible_origins=["PEK"],
                requires_lounge=True,
            ),
            offer(
                "LOUNGE_CAN",
                "ancillary",
                "lounge",
                eligible_cabins=EVERY,
                eligible_origins=["CAN"],
                requires_lounge=True,
            ),
            offer("AWARD_CTU", "redemption", "award_flight", destination="CTU", price_miles=12_000),
            offer("AWARD_NRT", "redemption", "award_flight", destination="NRT", price_miles=30_000),
            offer("HOTEL_NRT", "redemption", "hotel", destination="NRT", price_miles=8_000),
            offer("MALL", "redemption", "merchandise", price_miles=3_000),
        ]
    )
)


def ids(indices: list[int]) -> list[str]:
    return [CAT[i].offer_id for i in indices]


def test_trip_brings_next_cabin_upgrades_cabin_ancillaries_origin_and_destination_offers() -> None:
    trip = TripContext(origin="PEK", destination="CTU", departure_time=NOW + timedelta(hours=40), cabin="Y")
    c = gather_candidates(CAT, retrieved=["MALL"], trip=trip)
    assert ids(c.indices) == ["MALL", "UP_W", "BID_W", "LOUNGE_PEK", "MEAL_Y", "BAG", "AWARD_CTU"]
    assert c.sources[CAT.index_of["MALL"]] == SOURCE_MODEL
    assert c.sources[CAT.index_of["UP_W"]] == SOURCE_UPGRADE
    assert c.sources[CAT.index_of["LOUNGE_PEK"]] == SOURCE_ORIGIN
    assert c.sources[CAT.index_of["MEAL_Y"]] == SOURCE_ANCILLARY
    assert c.sources[CAT.index_of["AWARD_CTU"]] == SOURCE_DESTINATION
    # the C upgrade (not the next cabin from Y), the Business meal and the lounge elsewhere are not proposed
    assert not {"UP_C", "MEAL_C", "LOUNGE_CAN"} & set(ids(c.indices))


def test_business_trip_gets_business_offers() -> None:
    trip = TripContext(origin="CAN", destination="PEK", cabin="C")
    names = set(ids(gather_candidates(CAT, [], trip).indices))
    assert {"MEAL_C", "BAG", "LOUNGE_CAN"} <= names
    assert not {"UP_W", "UP_C", "MEAL_Y"} & names  # nothing from C except to F, and none in the catalogue


def test_no_trip_model_and_affinity_only_first_source_wins() -> None:
    c = gather_candidates(CAT, retrieved=["AWARD_NRT", "UNKNOWN-ID"], trip=None, likely_destinations=["NRT"])
    assert ids(c.indices) == ["AWARD_NRT", "HOTEL_NRT"]
    assert c.sources[CAT.index_of["AWARD_NRT"]] == SOURCE_MODEL
    assert c.sources[CAT.index_of["HOTEL_NRT"]] == SOURCE_AFFINITY
    assert len(gather_candidates(CAT, [], None).indices) == 0
