"""Candidates: what could be shown — the model's retrieval plus family-specific offers for the trip.

The model only knows offers members have interacted with in bulk; a trip makes other offers relevant right
now, whatever the model says. :func:`gather_candidates` unions, in this order (first source wins):

1. ``model``: the bundle's retrieval for the member (its cold-start path for members it does not know);
2. ``trip:upgrade``: upgrades to the cabin above the booked one (other cabins are never candidates);
3. ``trip:origin``: offers restricted to the departure airport (lounges, fast track, awards from there);
4. ``trip:ancillary``: trip-bound offers open to any airport whose eligible cabins include the booked one
   (meals, seats, bags, Wi-Fi, priority boarding, fast track, insurance...);
5. ``trip:destination``: offers at the trip's destination (partner hotels, which eligibility keeps for a trip
   to their city only; award flights there and back);
6. ``affinity``: award flights and hotels at destinations the member is likely to want (the profile's top
   destination and route, and the destinations the model scores highest for the member), so a member with
   the miles hears about them even when the offer retrieval does not rank them.

Eligibility comes next and decides; this stage only proposes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.types import TripContext
from recsys.schema import OfferCategory, next_cabin

SOURCE_MODEL = "model"
SOURCE_UPGRADE = "trip:upgrade"
SOURCE_ORIGIN = "trip:origin"
SOURCE_ANCILLARY = "trip:ancillary"
SOURCE_DESTINATION = "trip:destination"
SOURCE_AFFINITY = "affinity"

_DESTINATION_CATEGORIES = frozenset({OfferCategory.HOTEL, OfferCategory.AWARD_FLIGHT})


@dataclass
class Candidates:
    """Catalogue indices in proposal order, each with the source that proposed it first."""

    indices: list[int] = field(default_factory=list)
    sources: dict[int, str] = field(default_factory=dict)

    def add(self, idx: Iterable[int], source: str) -> None:
        for i in idx:
            if i not in self.sources:
                self.sources[i] = source
                self.indices.append(i)

    def __len__(self) -> int:
        return len(self.indices)


def gather_candidates(
    catalogue: Catalogue,
    retrieved: Sequence[str],
    trip: TripContext | None,
    likely_destinations: Sequence[str] = (),
) -> Candidates:
    """Union of retrieved offer ids and the trip's family-specific offers (see the module doc)."""
    cands = Candidates()
    cands.add(catalogue.indices(retrieved), SOURCE_MODEL)
    if trip is not None:
        booked = trip.booked_cabin
        if booked is not None:
            nxt = next_cabin(booked)
            if nxt is not None:
                cands.add(catalogue.upgrades_by_target.get(nxt, ()), SOURCE_UPGRADE)
        if trip.origin is not None:
            cands.add(catalogue.by_origin.get(trip.origin, ()), SOURCE_ORIGIN)
        if booked is not None:
            cands.add(catalogue.trip_generic_by_cabin.get(booked, ()), SOURCE_ANCILLARY)
        if trip.destination is not None:
            cands.add(catalogue.by_destination.get(trip.destination, ()), SOURCE_DESTINATION)
    offers = catalogue.offers
    for dest in likely_destinations:
        at_dest = catalogue.by_destination.get(dest, ())
        cands.add((i for i in at_dest if offers[i].category in _DESTINATION_CATEGORIES), SOURCE_AFFINITY)
    return cands
