"""Eligibility: may this member accept this offer, for this trip, at this placement, now?

Each rule is a small pure function ``rule(offer, ctx) -> (reason, detail) | None``; :func:`check` runs them in
order and returns the first failure. :func:`filter_eligible` applies them to the candidates and records every
dropped offer with its reason code (stage ``eligibility``), so the debug response explains every absence.

Rules (reason codes in brackets):

- families filter of the request [``family_not_requested``]
- placement allowed by the offer [``placement_not_allowed``]
- validity dates: ``valid_from <= now < valid_to`` [``not_yet_valid``, ``expired``]
- tier among the offer's eligible tiers [``tier_not_eligible``]
- trip-bound offers (upgrades, ancillaries, award upgrades) need a trip with a booked cabin
  [``requires_trip``]
- booked cabin among the offer's eligible cabins [``cabin_not_eligible``]
- upgrades go to the NEXT cabin only [``not_next_cabin``], need seats left in it [``seats_unknown``,
  ``no_seats_left``] and a known fare class [``fare_class_unknown``]: the offer's eligible fare classes, or
  by default ``schema.UPGRADE_ELIGIBLE_FARE_CLASSES`` [``fare_class_not_eligible``]
- fare class among the offer's eligible fare classes [``fare_class_unknown``, ``fare_class_not_eligible``]
- origin among the offer's origins [``origin_not_eligible``]: the departure airport for trip-bound offers,
  the trip origin or the member's home airport for others (award flights from the member's airport); a
  lounge offer needs a lounge at the departure airport [``no_lounge_at_origin``]
- partner hotels belong to a destination city: offered only for a trip to that city
  [``not_trip_destination``]
- sale windows relative to departure: open ``window_open_hours`` before, close ``window_close_hours`` before
  (meal orders close 24 h before, upgrade bids about a day before) [``departure_unknown``, ``departed``,
  ``window_not_open``, ``window_closed``]
- award seats are not sold in blackout months (the trip's departure month for an award upgrade, the current
  month for an award flight) [``blackout_month``]
- miles: an offer paid in miles only needs its price in the balance [``insufficient_miles``] — except a
  redemption within reach (balance >= ``close_fraction`` of the price), which stays as a "you're close"
  offer; a ``min_miles`` above the price is a hard threshold [``below_min_miles``]
- already bought for this trip [``already_purchased``]; for the one-per-trip categories
  (:data:`ONE_PER_TRIP_CATEGORIES`: lounge passes, upgrades) any offer of the category bought for this trip
- no paid lounge pass for a member entitled to lounge access, by booked cabin (First, Business) or by tier
  (Gold, Platinum) [``lounge_entitled``], unless the offer lists that cabin (``eligible_cabins``) or tier
  (``eligible_tiers``) by name: then the catalogue sells it to them on purpose (a shower-and-spa pass)
- at placement ``in_trip`` a trip in progress (departed, not yet arrived) keeps its in-trip offers: their
  sale window runs until arrival
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from recsys.pipeline.catalogue import AWARD_CATEGORIES, Catalogue, CatalogueOffer
from recsys.pipeline.messages import CABIN_NAMES, EN, term
from recsys.pipeline.types import Stage, SuppressedCandidate, TripContext
from recsys.schema import UPGRADE_ELIGIBLE_FARE_CLASSES, OfferCategory, OfferFamily, next_cabin


class Reason:
    """Reason codes of the eligibility stage."""

    FAMILY_NOT_REQUESTED = "family_not_requested"
    PLACEMENT_NOT_ALLOWED = "placement_not_allowed"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    TIER_NOT_ELIGIBLE = "tier_not_eligible"
    REQUIRES_TRIP = "requires_trip"
    CABIN_NOT_ELIGIBLE = "cabin_not_eligible"
    NOT_NEXT_CABIN = "not_next_cabin"
    SEATS_UNKNOWN = "seats_unknown"
    NO_SEATS_LEFT = "no_seats_left"
    FARE_CLASS_UNKNOWN = "fare_class_unknown"
    FARE_CLASS_NOT_ELIGIBLE = "fare_class_not_eligible"
    ORIGIN_NOT_ELIGIBLE = "origin_not_eligible"
    NO_LOUNGE_AT_ORIGIN = "no_lounge_at_origin"
    NOT_TRIP_DESTINATION = "not_trip_destination"
    DEPARTURE_UNKNOWN = "departure_unknown"
    DEPARTED = "departed"
    WINDOW_NOT_OPEN = "window_not_open"
    WINDOW_CLOSED = "window_closed"
    BLACKOUT_MONTH = "blackout_month"
    BELOW_MIN_MILES = "below_min_miles"
    INSUFFICIENT_MILES = "insufficient_miles"
    ALREADY_PURCHASED = "already_purchased"
    LOUNGE_ENTITLED = "lounge_entitled"


# Members with lounge access of their own: by the cabin they fly, or by their card tier.
LOUNGE_ENTITLED_CABINS: frozenset[str] = frozenset({"F", "C"})
LOUNGE_ENTITLED_TIERS: frozenset[str] = frozenset({"gold", "platinum"})
# One bought for a trip is enough: buying one hides the category's other offers for that trip.
ONE_PER_TRIP_CATEGORIES: frozenset[str] = frozenset(
    {
        OfferCategory.LOUNGE,
        OfferCategory.CABIN_UPGRADE,
        OfferCategory.UPGRADE_BID,
        OfferCategory.AWARD_UPGRADE,
    }
)


@dataclass(frozen=True, slots=True)
class EligibilityContext:
    """Everything the rules look at besides the offer. Built once per request.

    ``lounge_airports``: airports with a lounge (from the network); ``None`` means unknown, and then a lounge
    offer is eligible only at the origins it lists itself.
    """

    placement: str
    now: datetime
    tier: str
    miles_balance: int
    trip: TripContext | None = None
    home_airport: str | None = None
    purchased: frozenset[str] = frozenset()
    families: frozenset[str] | None = None
    lounge_airports: frozenset[str] | None = None
    close_fraction: float = 0.8
    require_seat_inventory: bool = True
    purchased_categories: frozenset[str] = frozenset()
    max_trip_hours: float = 20.0


Verdict = tuple[str, str] | None
Rule = Callable[[CatalogueOffer, EligibilityContext], Verdict]


def _cabin(c: str | None) -> str:
    """The cabin's English name for suppression details (the code itself when unknown)."""
    return term(CABIN_NAMES, c, EN, str(c))


def rule_family(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if ctx.families is not None and o.family not in ctx.families:
        return Reason.FAMILY_NOT_REQUESTED, f"family {o.family} not among requested {sorted(ctx.families)}"
    return None


def rule_placement(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.placements and ctx.placement not in o.placements:
        return Reason.PLACEMENT_NOT_ALLOWED, f"placement {ctx.placement} not in {sorted(o.placements)}"
    return None


def rule_validity(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.valid_from is not None and ctx.now < o.valid_from:
        return Reason.NOT_YET_VALID, f"valid from {o.valid_from.isoformat()}"
    if o.valid_to is not None and ctx.now >= o.valid_to:
        return Reason.EXPIRED, f"expired at {o.valid_to.isoformat()}"
    return None


def rule_tier(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.eligible_tiers and ctx.tier not in o.eligible_tiers:
        return Reason.TIER_NOT_ELIGIBLE, f"tier {ctx.tier} not in {sorted(o.eligible_tiers)}"
    return None


def rule_trip(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.trip_bound and (ctx.trip is None or ctx.trip.booked_cabin is None):
        return Reason.REQUIRES_TRIP, f"{o.category} is sold for a booked flight; no trip cabin given"
    return None


def rule_cabin(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if not o.eligible_cabins or ctx.trip is None:
        return None
    cabin = ctx.trip.booked_cabin
    if cabin is not None and cabin not in o.eligible_cabins:
        return Reason.CABIN_NOT_ELIGIBLE, f"booked cabin {cabin} not in {sorted(o.eligible_cabins)}"
    return None


def rule_upgrade(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if not o.is_upgrade or ctx.trip is None or ctx.trip.booked_cabin is None:
        return None
    trip = ctx.trip
    booked = trip.booked_cabin
    nxt = next_cabin(booked) if booked else None
    if nxt is None or o.target_cabin != nxt:
        return Reason.NOT_NEXT_CABIN, (
            f"upgrade to {_cabin(o.target_cabin)} from {_cabin(booked)}; only the next cabin "
            f"({_cabin(nxt) if nxt else 'none above First'}) is allowed"
        )
    if trip.seats_left is None or nxt not in trip.seats_left:
        if ctx.require_seat_inventory:
            return Reason.SEATS_UNKNOWN, f"no seat inventory for {_cabin(nxt)} in the trip context"
    elif trip.seats_left[nxt] <= 0:
        return Reason.NO_SEATS_LEFT, f"no seats left in {_cabin(nxt)}"
    if trip.fare_class is None:
        return Reason.FARE_CLASS_UNKNOWN, "upgrades need the booked fare class"
    if not o.eligible_fare_classes and trip.fare_class not in UPGRADE_ELIGIBLE_FARE_CLASSES:
        return Reason.FARE_CLASS_NOT_ELIGIBLE, f"fare class {trip.fare_class} is not upgrade-eligible"
    return None  # offer-specific fare classes: rule_fare_class


def rule_fare_class(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if not o.eligible_fare_classes:
        return None
    fc = ctx.trip.fare_class if ctx.trip is not None else None
    if fc is None:
        return Reason.FARE_CLASS_UNKNOWN, f"needs one of fare classes {sorted(o.eligible_fare_classes)}"
    if fc not in o.eligible_fare_classes:
        return Reason.FARE_CLASS_NOT_ELIGIBLE, f"fare class {fc} not in {sorted(o.eligible_fare_classes)}"
    return None


@lru_cache(maxsize=4096)  # a few hundred offers' origin sets: sorted once, not on every rejection
def _origins_text(origins: frozenset[str]) -> str:
    listed = sorted(origins)
    return f"{listed[:8]}{' and others' if len(listed) > 8 else ''}"


def rule_origin(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    origin = ctx.trip.origin if ctx.trip is not None else None
    if o.eligible_origins:
        if o.trip_bound:
            if origin not in o.eligible_origins:
                return Reason.ORIGIN_NOT_ELIGIBLE, (
                    f"departure airport {origin} not in {_origins_text(o.eligible_origins)}"
                )
        elif origin not in o.eligible_origins and ctx.home_airport not in o.eligible_origins:
            return Reason.ORIGIN_NOT_ELIGIBLE, (
                f"neither trip origin {origin} nor home airport {ctx.home_airport} in "
                f"{_origins_text(o.eligible_origins)}"
            )
    if o.requires_lounge or o.category == OfferCategory.LOUNGE:
        if origin is None:
            return Reason.NO_LOUNGE_AT_ORIGIN, "no departure airport given"
        if ctx.lounge_airports is not None and origin not in ctx.lounge_airports:
            return Reason.NO_LOUNGE_AT_ORIGIN, f"no lounge at {origin}"
        if ctx.lounge_airports is None and not o.eligible_origins:
            return Reason.NO_LOUNGE_AT_ORIGIN, f"lounge availability at {origin} unknown"
    return None


def rule_destination(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.category != OfferCategory.HOTEL or o.destination is None:
        return None
    dest = ctx.trip.destination if ctx.trip is not None else None
    if dest != o.destination:
        where = "no trip destination given" if dest is None else f"the trip goes to {dest}"
        return Reason.NOT_TRIP_DESTINATION, f"a hotel in {o.destination} is offered for a trip there; {where}"
    return None


def hours_to_departure(trip: TripContext | None, now: datetime) -> float | None:
    """Hours from ``now`` to the trip's departure (negative once departed), or None without a departure."""
    if trip is None or trip.departure_time is None:
        return None
    return (trip.departure_time - now).total_seconds() / 3600.0


def arrival(trip: TripContext, max_trip_hours: float) -> datetime | None:
    """The trip's arrival: given, else departure + ``max_trip_hours`` (the longest flight), else None."""
    if trip.arrival_time is not None:
        return trip.arrival_time
    if trip.departure_time is None:
        return None
    return trip.departure_time + timedelta(hours=max_trip_hours)


def in_progress(trip: TripContext, now: datetime, max_trip_hours: float) -> bool:
    """Departed and not yet arrived."""
    end = arrival(trip, max_trip_hours)
    return trip.departure_time is not None and end is not None and trip.departure_time <= now < end


def rule_window(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.window_open_hours is None and o.window_close_hours is None:
        return None
    if not o.trip_bound:
        return None
    hours = hours_to_departure(ctx.trip, ctx.now)
    if hours is None:
        return Reason.DEPARTURE_UNKNOWN, f"{o.category} has a sale window; no departure time given"
    if hours <= 0:
        if (
            ctx.placement == "in_trip"
            and ctx.trip is not None
            and in_progress(ctx.trip, ctx.now, ctx.max_trip_hours)
        ):
            return None  # on board: in-trip offers are sold until arrival
        return Reason.DEPARTED, f"flight departed {-hours:.1f} h ago"
    if o.window_close_hours is not None and hours < o.window_close_hours:
        return Reason.WINDOW_CLOSED, (
            f"sales close {o.window_close_hours:g} h before departure; departure in {hours:.1f} h"
        )
    if o.window_open_hours is not None and o.window_open_hours > 0 and hours > o.window_open_hours:
        return Reason.WINDOW_NOT_OPEN, (
            f"sales open {o.window_open_hours:g} h before departure; departure in {hours:.1f} h"
        )
    return None


def rule_blackout(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if not o.blackout_months or o.category not in AWARD_CATEGORIES:
        return None
    when = ctx.now
    if o.trip_bound and ctx.trip is not None and ctx.trip.departure_time is not None:
        when = ctx.trip.departure_time
    if when.month in o.blackout_months:
        return Reason.BLACKOUT_MONTH, f"award seats blacked out in month {when.month}"
    return None


def miles_price(o: CatalogueOffer) -> int:
    """Miles the member must hold to accept ``o``: its miles price when paid in miles only, else 0."""
    if o.price_miles is None or o.price_cash is not None:
        return 0
    return o.price_miles


def miles_gap(o: CatalogueOffer, miles_balance: int) -> int:
    """Miles the member still lacks to pay for ``o`` in miles (0 when affordable or not paid in miles)."""
    return max(0, miles_price(o) - miles_balance)


def rule_miles(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    price = miles_price(o)
    if o.min_miles > price and ctx.miles_balance < o.min_miles:
        return Reason.BELOW_MIN_MILES, f"needs a balance of {o.min_miles:,} miles; has {ctx.miles_balance:,}"
    if ctx.miles_balance < price:
        close = o.family == OfferFamily.REDEMPTION and ctx.miles_balance >= ctx.close_fraction * price
        if not close:
            return Reason.INSUFFICIENT_MILES, f"costs {price:,} miles; has {ctx.miles_balance:,}"
    return None


def rule_purchased(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.offer_id in ctx.purchased:
        return Reason.ALREADY_PURCHASED, "already bought for this trip"
    if o.category in ONE_PER_TRIP_CATEGORIES and o.category in ctx.purchased_categories:
        return Reason.ALREADY_PURCHASED, f"another {o.category} offer is already bought for this trip"
    return None


def rule_lounge_entitled(o: CatalogueOffer, ctx: EligibilityContext) -> Verdict:
    if o.category != OfferCategory.LOUNGE or not (o.price_cash or o.price_miles):
        return None  # the complimentary-access notice is for the entitled
    # A pass the catalogue lists for the member's tier or booked cabin by name is sold to them: it sells
    # more than the access they have (a shower-and-spa pass, which such passengers do buy: bench/README.md).
    if ctx.tier in LOUNGE_ENTITLED_TIERS and ctx.tier not in o.eligible_tiers:
        return Reason.LOUNGE_ENTITLED, f"tier {ctx.tier} has lounge access; no pass is sold"
    cabin = ctx.trip.booked_cabin if ctx.trip is not None else None
    if cabin in LOUNGE_ENTITLED_CABINS and cabin not in o.eligible_cabins:
        return Reason.LOUNGE_ENTITLED, f"{_cabin(cabin)} passengers have lounge access; no pass is sold"
    return None


RULES: tuple[Rule, ...] = (
    rule_family,
    rule_placement,
    rule_validity,
    rule_tier,
    rule_trip,
    rule_cabin,
    rule_upgrade,
    rule_fare_class,
    rule_lounge_entitled,
    rule_origin,
    rule_destination,
    rule_window,
    rule_blackout,
    rule_miles,
    rule_purchased,
)


# Which rules can reject an offer at all, judged from its static attributes (the rule returns None for any
# other offer whatever the request). The per-request loop runs only these; the request-dependent rules
# (family, miles, purchased) apply to every offer.
APPLIES: dict[Rule, Callable[[CatalogueOffer], bool]] = {
    rule_family: lambda o: True,
    rule_placement: lambda o: bool(o.placements),
    rule_validity: lambda o: o.valid_from is not None or o.valid_to is not None,
    rule_tier: lambda o: bool(o.eligible_tiers),
    rule_trip: lambda o: o.trip_bound,
    rule_cabin: lambda o: bool(o.eligible_cabins),
    rule_upgrade: lambda o: o.is_upgrade,
    rule_fare_class: lambda o: bool(o.eligible_fare_classes),
    rule_lounge_entitled: lambda o: o.category == OfferCategory.LOUNGE,
    rule_origin: lambda o: (
        bool(o.eligible_origins) or o.requires_lounge or o.category == OfferCategory.LOUNGE
    ),
    rule_destination: lambda o: o.category == OfferCategory.HOTEL and o.destination is not None,
    rule_window: lambda o: (
        o.trip_bound and (o.window_open_hours is not None or o.window_close_hours is not None)
    ),
    rule_blackout: lambda o: bool(o.blackout_months) and o.category in AWARD_CATEGORIES,
    rule_miles: lambda o: True,
    rule_purchased: lambda o: True,
}


def rules_for(offer: CatalogueOffer) -> tuple[Rule, ...]:
    """The rules (in :data:`RULES` order) that can reject ``offer``."""
    return tuple(rule for rule in RULES if APPLIES[rule](offer))


def check(offer: CatalogueOffer, ctx: EligibilityContext, rules: Iterable[Rule] = RULES) -> Verdict:
    """The first rule of ``rules`` that ``offer`` fails, as ``(reason, detail)``; None when eligible."""
    for rule in rules:
        verdict = rule(offer, ctx)
        if verdict is not None:
            return verdict
    return None


@dataclass
class EligibilityResult:
    """Eligible catalogue indices (candidate order kept), "you're close" ones with the miles they lack."""

    eligible: list[int]
    close: dict[int, int] = field(default_factory=dict)
    suppressed: list[SuppressedCandidate] = field(default_factory=list)


def filter_eligible(
    candidates: Iterable[int],
    catalogue: Catalogue,
    ctx: EligibilityContext,
    rules: Sequence[tuple[Rule, ...]] | None = None,
) -> EligibilityResult:
    """Apply the rules to each candidate index; keep the eligible, record the others.

    ``rules[i]`` (``rules_for`` of every catalogue offer, precomputed once by the caller) limits offer ``i``
    to the rules that can reject it; without, every rule runs."""
    result = EligibilityResult(eligible=[])
    offers = catalogue.offers
    for i in candidates:
        o = offers[i]
        verdict = check(o, ctx, RULES if rules is None else rules[i])
        if verdict is None:
            result.eligible.append(i)
            gap = miles_gap(o, ctx.miles_balance)
            if gap > 0:
                result.close[i] = gap
        else:
            result.suppressed.append(
                SuppressedCandidate(o.offer_id, Stage.ELIGIBILITY, verdict[0], verdict[1])
            )
    return result
