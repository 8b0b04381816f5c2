"""Explanations: one or more sentences per returned offer, built from the member's profile and the trip.

Every sentence states a fact the member can check — a route and cabin they flew, their miles balance, a
closing time, seats left — taken from the online profile (the features pipeline's columns, see
:class:`MemberFacts`) or the request's trip. Nothing comes from hidden generator truth or model internals.
Only English is written for now; other locales get English (the app localises known phrasings later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recsys.features.profiles import CABIN_SHARE_COLUMNS, NONE, UNKNOWN, ProfileCol
from recsys.pipeline.catalogue import CatalogueOffer
from recsys.pipeline.eligibility import CABIN_NAMES, hours_to_departure
from recsys.pipeline.types import TripContext
from recsys.schema import TIER_ORDER, OfferCategory, Tier

MEAL_NAMES = {
    "STD": "the standard meal",
    "SIG": "the signature dish",
    "VGML": "a vegetarian meal",
    "AVML": "an Asian vegetarian meal",
    "MOML": "a Muslim meal",
    "KSML": "a kosher meal",
    "HNML": "a Hindu meal",
    "DBML": "a diabetic meal",
    "GFML": "a gluten-free meal",
    "LSML": "a low-salt meal",
    "CHML": "a child meal",
}


_NONE_VALUES = frozenset({"", NONE, UNKNOWN})


def _get(p: Mapping[str, Any], key: str, default: Any = None) -> Any:
    v = p.get(key, default)
    if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and v in _NONE_VALUES):
        return default
    return v


@dataclass(frozen=True)
class MemberFacts:
    """What the pipeline knows about the member, from the online profile (``recsys.features.profiles``
    columns, :class:`ProfileCol`); defaults for a brand-new member the store does not know."""

    tier: str
    miles_balance: int
    known: bool = False
    home_airport: str | None = None
    time_zone: str = "UTC"
    segment: str | None = None
    top_route: tuple[str, str] | None = None
    top_route_cabin: str | None = None
    top_route_cabin_flights: int = 0
    top_route_flights: int = 0
    top_destination: str | None = None
    top_destination_flights: int = 0
    special_meal: str | None = None
    next_tier: str | None = None
    km_to_next_tier: int | None = None
    segments_to_next_tier: int | None = None
    cabin_share: Mapping[str, float] = field(default_factory=dict)
    bags_per_flight: float = 0.0
    lounge_share: float = 0.0

    @property
    def likely_destinations(self) -> tuple[str, ...]:
        """Destinations the member is likely to want an award to: top destination, the far end of the top
        route (home excluded)."""
        out: list[str] = []
        for dest in (self.top_destination, *(self.top_route or ())):
            if dest and dest != self.home_airport and dest not in out:
                out.append(dest)
        return tuple(out)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any] | None, default_tier: str = Tier.BASIC) -> MemberFacts:
        """Facts from a profile dict (``None``: a brand-new member: default tier, no miles)."""
        if not profile:
            return cls(tier=str(default_tier), miles_balance=0)
        k = ProfileCol
        tier = str(_get(profile, k.TIER, default_tier))
        if tier not in {t.value for t in TIER_ORDER}:
            tier = str(default_tier)
        route = _get(profile, k.TOP_ROUTE)
        ends = str(route).split("-") if route else []
        top_route = (ends[0], ends[1]) if len(ends) == 2 and all(ends) else None
        share = {str(c): float(_get(profile, col, 0.0)) for c, col in CABIN_SHARE_COLUMNS.items()}
        return cls(
            tier=tier,
            miles_balance=int(_get(profile, k.MILES_BALANCE, 0)),
            known=True,
            home_airport=_get(profile, k.HOME_AIRPORT),
            time_zone=str(_get(profile, k.TIME_ZONE, "UTC")),
            segment=_get(profile, k.SEGMENT),
            top_route=top_route,
            top_route_cabin=_get(profile, k.TOP_ROUTE_CABIN),
            top_route_cabin_flights=int(_get(profile, k.TOP_ROUTE_CABIN_FLIGHTS, 0)),
            top_route_flights=int(_get(profile, k.TOP_ROUTE_FLIGHTS, 0)),
            top_destination=_get(profile, k.TOP_DESTINATION),
            top_destination_flights=int(_get(profile, k.TOP_DESTINATION_FLIGHTS, 0)),
            special_meal=_get(profile, k.SPECIAL_MEAL),
            next_tier=_get(profile, k.NEXT_TIER),
            km_to_next_tier=_opt_int(_get(profile, k.KM_TO_NEXT_TIER)),
            segments_to_next_tier=_opt_int(_get(profile, k.SEGMENTS_TO_NEXT_TIER)),
            cabin_share=share,
            bags_per_flight=float(_get(profile, k.BAGS_PER_FLIGHT, 0.0)),
            lounge_share=float(_get(profile, k.LOUNGE_SHARE, 0.0)),
        )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _route(a: str, b: str) -> str:
    return f"{a}–{b}"


def _hours(h: float) -> str:
    if h >= 48:
        return f"{h / 24:.0f} days"
    n = max(1, int(h))
    return f"{n} hour" if n == 1 else f"{n} hours"


@dataclass
class ExplainContext:
    """Per-request inputs of :func:`explain`: trip, time and a city name per airport code."""

    trip: TripContext | None
    now: datetime
    city: Mapping[str, str] = field(default_factory=dict)

    def place(self, iata: str | None) -> str:
        if not iata:
            return "your destination"
        return self.city.get(iata, iata)


_CLOSING: dict[str, str] = {
    OfferCategory.MEAL: "Meal orders close in {t}",
    OfferCategory.UPGRADE_BID: "Bidding closes in {t}",
    OfferCategory.SEAT: "Seat selection closes in {t}",
    OfferCategory.BAGGAGE: "Pre-paid baggage closes in {t}",
    OfferCategory.CABIN_UPGRADE: "Upgrades close in {t}",
    OfferCategory.AWARD_UPGRADE: "Upgrades with miles close in {t}",
    OfferCategory.LOUNGE: "Lounge passes on sale for {t} more",
    OfferCategory.WIFI: "Wi-Fi passes on sale for {t} more",
}


def explain(offer: CatalogueOffer, member: MemberFacts, ctx: ExplainContext, miles_gap: int = 0) -> list[str]:
    """Human-readable reasons for showing ``offer`` (at least one)."""
    reasons: list[str] = []
    trip = ctx.trip
    cat = offer.category
    hours = hours_to_departure(trip, ctx.now)

    if offer.is_upgrade and offer.target_cabin:
        target = offer.target_cabin
        cabin_name = CABIN_NAMES.get(target, target)
        if member.top_route and member.top_route_cabin_flights > 0 and member.top_route_cabin == target:
            reasons.append(
                f"You flew {_route(*member.top_route)} in {cabin_name} "
                f"{_times(member.top_route_cabin_flights)} in the last 12 months"
            )
        elif member.cabin_share.get(target, 0.0) > 0:
            pct = round(100 * member.cabin_share[target])
            reasons.append(f"{pct} % of your flights in the last two years were in {cabin_name}")
        if trip is not None and trip.seats_left is not None and target in trip.seats_left:
            reasons.append(f"Seats left in {cabin_name}: {trip.seats_left[target]}")

    if cat in (OfferCategory.AWARD_FLIGHT, OfferCategory.AWARD_UPGRADE, OfferCategory.HOTEL) or (
        offer.price_miles is not None and offer.price_cash is None
    ):
        what = _award_phrase(offer, ctx)
        if miles_gap > 0:
            reasons.append(f"You have {member.miles_balance:,} miles — {miles_gap:,} more for {what}")
        elif offer.price_miles is not None:
            reasons.append(f"You have {member.miles_balance:,} miles — enough for {what}")

    if cat in (OfferCategory.AWARD_FLIGHT, OfferCategory.HOTEL) and offer.destination:
        if trip is not None and trip.destination == offer.destination:
            reasons.append(f"You are flying to {ctx.place(offer.destination)}")
        elif member.top_destination == offer.destination and member.top_destination_flights > 0:
            reasons.append(
                f"You flew to {ctx.place(offer.destination)} "
                f"{_times(member.top_destination_flights)} in the last two years"
            )
        elif member.top_route and offer.destination in member.top_route and member.top_route_flights > 0:
            reasons.append(
                f"You flew {_route(*member.top_route)} "
                f"{_times(member.top_route_flights)} in the last 12 months"
            )

    if cat == OfferCategory.MEAL and offer.meal and member.special_meal == offer.meal:
        reasons.append(f"You usually order {MEAL_NAMES.get(offer.meal, offer.meal)} on your flights")

    if cat == OfferCategory.BAGGAGE and member.bags_per_flight >= 1.0:
        reasons.append(f"You check {member.bags_per_flight:.1f} bags per flight on average")
    if cat == OfferCategory.LOUNGE and member.lounge_share >= 0.2:
        reasons.append(f"You used a lounge on {round(100 * member.lounge_share)} % of your flights")
    if offer.category == OfferCategory.LOUNGE and trip is not None and trip.origin:
        reasons.append(
            f"There is a lounge at {ctx.place(trip.origin)} ({trip.origin}), where your flight departs"
        )

    if cat == OfferCategory.MILES_PROMOTION and member.next_tier and member.km_to_next_tier:
        reasons.append(
            f"You are {member.km_to_next_tier:,} km from {str(member.next_tier).capitalize()} status"
        )

    if offer.trip_bound and hours is not None and offer.window_close_hours is not None:
        left = hours - offer.window_close_hours
        if 0 < left <= 72:
            reasons.append(_CLOSING.get(cat, "This offer ends in {t}").format(t=_hours(left)))

    if not reasons and trip is not None and offer.trip_bound and trip.origin and trip.destination:
        when = trip.departure_time.strftime("%d %b") if trip.departure_time is not None else ""
        flight = f" {trip.flight_number}" if trip.flight_number else ""
        on = f" on {when}" if when else ""
        reasons.append(f"For your flight{flight} {_route(trip.origin, trip.destination)}{on}")
    if not reasons:
        if member.known and member.tier != Tier.BASIC:
            reasons.append(f"Popular with {str(member.tier).capitalize()} members")
        else:
            reasons.append("Popular with members like you")
    return reasons


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def _award_phrase(offer: CatalogueOffer, ctx: ExplainContext) -> str:
    if offer.category == OfferCategory.AWARD_FLIGHT:
        cabin = CABIN_NAMES.get(offer.target_cabin or "", "")
        cabin = f"{cabin} " if cabin else ""
        article = "an" if cabin[:1] in ("E", "A") or (not cabin) else "a"
        return f"{article} {cabin}award to {ctx.place(offer.destination)}"
    if offer.category == OfferCategory.AWARD_UPGRADE:
        return f"an upgrade to {CABIN_NAMES.get(offer.target_cabin or '', 'the next cabin')}"
    if offer.category == OfferCategory.HOTEL:
        return f"a hotel stay in {ctx.place(offer.destination)}" if offer.destination else "a hotel stay"
    return "this offer"


def explain_all(
    offers: Sequence[CatalogueOffer], member: MemberFacts, ctx: ExplainContext, gaps: Mapping[int, int]
) -> list[list[str]]:
    """:func:`explain` for several offers."""
    return [explain(o, member, ctx, gaps.get(o.index, 0)) for o in offers]
