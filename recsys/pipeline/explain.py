"""Explanations: one or more sentences per returned offer, built from the member's profile and the trip.

Every sentence states a fact the member can check — a route and cabin they flew, their miles balance, a
closing time, seats left — taken from the online profile (the features pipeline's columns, see
:class:`MemberFacts`) or the request's trip. Nothing comes from hidden generator truth or model internals.
Sentences are written in the request's locale (``en`` or ``zh-CN``, see
:func:`recsys.pipeline.messages.normalize_locale`): each sentence kind is a message id whose templates for
every locale sit side by side in :data:`recsys.pipeline.messages.MESSAGES`, with the cabin, meal, tier and
city names they quote. Offer titles stay as the catalogue writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recsys.features.profiles import CABIN_SHARE_COLUMNS, NONE, UNKNOWN, ProfileCol
from recsys.pipeline.catalogue import CatalogueOffer
from recsys.pipeline.eligibility import hours_to_departure
from recsys.pipeline.messages import (
    CABIN_NAMES,
    CITY_NAMES_ZH,
    DEFAULT_LOCALE,
    EN,
    MEAL_NAMES,
    SUPPORTED_LOCALES,
    TIER_NAMES,
    message,
    normalize_locale,
    term,
)
from recsys.pipeline.types import TripContext
from recsys.schema import TIER_ORDER, OfferCategory, Tier

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


@dataclass
class ExplainContext:
    """Per-request inputs of :func:`explain`: trip, time, a city name per airport code (English, from the
    network) and the locale of the sentences (an accepted spelling; :class:`ValueError` for another)."""

    trip: TripContext | None
    now: datetime
    city: Mapping[str, str] = field(default_factory=dict)
    locale: str = DEFAULT_LOCALE

    def __post_init__(self) -> None:
        canonical = normalize_locale(self.locale)
        if canonical is None:
            raise ValueError(f"unsupported locale {self.locale!r}; one of {list(SUPPORTED_LOCALES)}")
        self.locale = canonical

    def msg(self, msg_id: str, **fields: Any) -> str:
        return message(msg_id, self.locale, **fields)

    def _city(self, iata: str) -> str | None:
        if self.locale != EN and iata in CITY_NAMES_ZH:
            return CITY_NAMES_ZH[iata]
        return self.city.get(iata)

    def place(self, iata: str | None) -> str:
        """The city of an airport: English city (en); Chinese name, else English city with the code (zh-CN);
        the code if the network has no city."""
        if not iata:
            return self.msg("your_destination")
        name = self._city(iata)
        if not name or name == iata:
            return iata
        if self.locale != EN and iata not in CITY_NAMES_ZH:
            return self.msg("airport_with_code", place=name, code=iata)
        return name

    def airport(self, iata: str) -> str:
        """City and code of an airport, e.g. ``Beijing (PEK)``, ``北京首都（PEK）``."""
        name = self._city(iata)
        if not name or name == iata:
            return iata
        return self.msg("airport_with_code", place=name, code=iata)

    def cabin(self, code: str | None, default: str | None = None) -> str:
        """A cabin's name (``default``, else the code itself, for an unknown code)."""
        return term(CABIN_NAMES, code, self.locale, str(code or "") if default is None else default)

    def tier(self, tier: str) -> str:
        return term(TIER_NAMES, str(tier), self.locale, str(tier).capitalize())

    def meal(self, code: str) -> str:
        return term(MEAL_NAMES, code, self.locale, code)

    def times(self, n: int) -> str:
        return self.msg("times.1" if n == 1 else "times.2" if n == 2 else "times.n", n=n)

    def hours(self, h: float) -> str:
        if h >= 48:
            return self.msg("duration.days", days=h / 24)
        n = max(1, int(h))
        return self.msg("duration.hour") if n == 1 else self.msg("duration.hours", n=n)


_CLOSING: dict[str, str] = {
    OfferCategory.MEAL: "closes.meal",
    OfferCategory.UPGRADE_BID: "closes.upgrade_bid",
    OfferCategory.SEAT: "closes.seat",
    OfferCategory.BAGGAGE: "closes.baggage",
    OfferCategory.CABIN_UPGRADE: "closes.cabin_upgrade",
    OfferCategory.AWARD_UPGRADE: "closes.award_upgrade",
    OfferCategory.LOUNGE: "closes.lounge",
    OfferCategory.WIFI: "closes.wifi",
}


def explain(offer: CatalogueOffer, member: MemberFacts, ctx: ExplainContext, miles_gap: int = 0) -> list[str]:
    """Human-readable reasons for showing ``offer`` (at least one), in ``ctx.locale``."""
    reasons: list[str] = []
    msg = ctx.msg
    trip = ctx.trip
    cat = offer.category
    hours = hours_to_departure(trip, ctx.now)

    if offer.is_upgrade and offer.target_cabin:
        target = offer.target_cabin
        cabin_name = ctx.cabin(target)
        if member.top_route and member.top_route_cabin_flights > 0 and member.top_route_cabin == target:
            reasons.append(
                msg(
                    "flew_route_in_cabin",
                    route=_route(*member.top_route),
                    cabin=cabin_name,
                    times=ctx.times(member.top_route_cabin_flights),
                )
            )
        elif member.cabin_share.get(target, 0.0) > 0:
            pct = round(100 * member.cabin_share[target])
            reasons.append(msg("cabin_share", pct=pct, cabin=cabin_name))
        if trip is not None and trip.seats_left is not None and target in trip.seats_left:
            reasons.append(msg("seats_left", cabin=cabin_name, n=trip.seats_left[target]))

    if cat in (OfferCategory.AWARD_FLIGHT, OfferCategory.AWARD_UPGRADE, OfferCategory.HOTEL) or (
        offer.price_miles is not None and offer.price_cash is None
    ):
        what = _award_phrase(offer, ctx)
        if miles_gap > 0:
            reasons.append(msg("miles_short", miles=member.miles_balance, gap=miles_gap, what=what))
        elif offer.price_miles is not None:
            reasons.append(msg("miles_enough", miles=member.miles_balance, what=what))

    if cat in (OfferCategory.AWARD_FLIGHT, OfferCategory.HOTEL) and offer.destination:
        if trip is not None and trip.destination == offer.destination:
            reasons.append(msg("flying_to", place=ctx.place(offer.destination)))
        elif member.top_destination == offer.destination and member.top_destination_flights > 0:
            reasons.append(
                msg(
                    "flew_to",
                    place=ctx.place(offer.destination),
                    times=ctx.times(member.top_destination_flights),
                )
            )
        elif member.top_route and offer.destination in member.top_route and member.top_route_flights > 0:
            reasons.append(
                msg("flew_route", route=_route(*member.top_route), times=ctx.times(member.top_route_flights))
            )

    if cat == OfferCategory.MEAL and offer.meal and member.special_meal == offer.meal:
        reasons.append(msg("usual_meal", meal=ctx.meal(offer.meal)))

    if cat == OfferCategory.BAGGAGE and member.bags_per_flight >= 1.0:
        reasons.append(msg("bags_per_flight", bags=member.bags_per_flight))
    if cat == OfferCategory.LOUNGE and member.lounge_share >= 0.2:
        reasons.append(msg("lounge_share", pct=round(100 * member.lounge_share)))
    if offer.category == OfferCategory.LOUNGE and trip is not None and trip.origin:
        reasons.append(msg("lounge_at_origin", airport=ctx.airport(trip.origin)))

    if cat == OfferCategory.MILES_PROMOTION and member.next_tier and member.km_to_next_tier:
        reasons.append(msg("km_to_next_tier", km=member.km_to_next_tier, tier=ctx.tier(member.next_tier)))

    if offer.trip_bound and hours is not None and offer.window_close_hours is not None:
        left = hours - offer.window_close_hours
        if 0 < left <= 72:
            reasons.append(msg(_CLOSING.get(cat, "closes.other"), t=ctx.hours(left)))

    if not reasons and trip is not None and offer.trip_bound and trip.origin and trip.destination:
        on = msg("on_date", date=trip.departure_time) if trip.departure_time is not None else ""
        flight = msg("flight_number", number=trip.flight_number) if trip.flight_number else ""
        reasons.append(
            msg("for_your_flight", flight=flight, route=_route(trip.origin, trip.destination), on=on)
        )
    if not reasons:
        if member.known and member.tier != Tier.BASIC:
            reasons.append(msg("popular_with_tier", tier=ctx.tier(member.tier)))
        else:
            reasons.append(msg("popular"))
    return reasons


def _award_phrase(offer: CatalogueOffer, ctx: ExplainContext) -> str:
    if offer.category == OfferCategory.AWARD_FLIGHT:
        place = ctx.place(offer.destination)
        cabin = ctx.cabin(offer.target_cabin, default="") if offer.target_cabin else ""
        if not cabin:
            return ctx.msg("award_flight_any_cabin", place=place)
        article = "an" if cabin[:1] in ("E", "A") else "a"  # English only; other templates ignore it
        return ctx.msg("award_flight", article=article, cabin=cabin, place=place)
    if offer.category == OfferCategory.AWARD_UPGRADE:
        if offer.target_cabin in CABIN_NAMES:
            return ctx.msg("award_upgrade", cabin=ctx.cabin(offer.target_cabin))
        return ctx.msg("award_upgrade_next_cabin")
    if offer.category == OfferCategory.HOTEL:
        return (
            ctx.msg("hotel_in", place=ctx.place(offer.destination)) if offer.destination else ctx.msg("hotel")
        )
    return ctx.msg("this_offer")


def explain_all(
    offers: Sequence[CatalogueOffer], member: MemberFacts, ctx: ExplainContext, gaps: Mapping[int, int]
) -> list[list[str]]:
    """:func:`explain` for several offers."""
    return [explain(o, member, ctx, gaps.get(o.index, 0)) for o in offers]
