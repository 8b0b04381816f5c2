"""API schemas (request/response bodies), separate from the pipeline's domain objects.

Every model carries an OpenAPI example. Requests forbid unknown fields, so a misspelt field is a 422 naming it
instead of a silently ignored option.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from recsys.pipeline.messages import ACCEPTED_LOCALES, DEFAULT_LOCALE, SUPPORTED_LOCALES, normalize_locale
from recsys.schema import (
    FARE_CLASSES,
    MAX_BOOKING_LEAD_DAYS,
    MAX_PARTY_SIZE,
    MAX_STAY_NIGHTS,
    UPGRADE_ELIGIBLE_FARE_CLASSES,
    Cabin,
    EventType,
    OfferFamily,
    Placement,
)

MEMBER_ID_PATTERN = r"^[A-Za-z0-9_\-:.]{1,64}$"
# No control characters (PostgreSQL cannot store NUL; SQLite could, so both refuse it alike).
EVENT_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
TRIP_KEY_PATTERN = r"^(?:[A-Z0-9]{2}[0-9]{1,4}[A-Z]?|[A-Z]{3}-[A-Z]{3})\|[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_UPGRADE_FARE_CLASSES: list[JsonValue] = [*sorted(UPGRADE_ELIGIBLE_FARE_CLASSES)]
IATA_PATTERN = r"^[A-Z]{3}$"
# Placeholder times of the examples; the served document fills in times relative to now (serving.openapi).
EXAMPLE_TIME = "2026-11-23T09:40:00+08:00"
LOCALE_PATTERN = r"^([Ee][Nn]([-_]([Uu][Ss]|[Gg][Bb]))?|[Zz][Hh]([-_]([Hh][Aa][Nn][Ss]|[Cc][Nn]))?)$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(
        description="Dotted path of the offending field, e.g. `trip.origin` or `events[3].offer_id`."
    )
    location: str = Field(description="Where the field is: body, query, path or header.")
    message: str
    type: str = Field(description="Machine-readable error type.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "error": {
                    "code": "validation_error",
                    "message": "limit: Input should be less than or equal to 50",
                    "fields": [
                        {
                            "field": "limit",
                            "location": "body",
                            "message": "Input should be less than or equal to 50",
                            "type": "less_than_equal",
                        }
                    ],
                }
            }
        }
    )
    error: ErrorBody


# ----------------------------------------------------------------------------------------------------
# Recommendations
# ----------------------------------------------------------------------------------------------------


class TripIn(_Request):
    """The booked trip the offers are for (optional on the home screen)."""

    origin: str | None = Field(
        default=None, pattern=IATA_PATTERN, description="IATA code of the departure airport."
    )
    destination: str | None = Field(
        default=None, pattern=IATA_PATTERN, description="IATA code of the arrival airport."
    )
    departure_time: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 departure time with a UTC offset (a string), in the future and within the "
        "booking horizon (361 days); else a 422 naming `trip.departure_time`. A departed trip is accepted "
        "only at placement `in_trip` while it is in progress (until `arrival_time`).",
    )
    arrival_time: AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 arrival time with a UTC offset. In-trip offers are sold until then; without "
        "it a trip counts as in progress for 20 hours after departure.",
    )
    cabin: Cabin | None = Field(default=None, description="Booked cabin: F, C, W or Y.")
    fare_class: str | None = Field(
        default=None,
        pattern=r"^[A-Z]$",
        description="Booking class. It implies the cabin: "
        + "; ".join(
            f"{', '.join(f'`{fc}`' for fc in fcs)} → `{cabin.value}`" for cabin, fcs in FARE_CLASSES.items()
        )
        + ". Another letter is a 422; with `cabin` given, the two must agree (else a 422 naming "
        "`trip.fare_class`); without `cabin` the fare class gives it. Upgrades need an upgrade-eligible "
        "class: " + ", ".join(f"`{fc}`" for fc in sorted(UPGRADE_ELIGIBLE_FARE_CLASSES)) + ".",
        json_schema_extra={
            "x-fare-class-cabin": {fc: cabin.value for cabin, fcs in FARE_CLASSES.items() for fc in fcs},
            "x-upgrade-eligible-fare-classes": _UPGRADE_FARE_CLASSES,
        },
    )
    flight_number: str | None = Field(default=None, pattern=r"^[A-Z0-9]{2}[0-9]{1,4}[A-Z]?$")
    seats_left: dict[Cabin, Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="Seats still for sale per cabin. Upgrades need it: an upgrade is offered only when the "
        "next cabin up is listed with seats left; without it upgrades are withheld and counted in "
        "`withheld.not_eligible`.",
    )
    # What the booking (PNR) says of the trip; optional, each an integer in range (else a 422 naming it).
    booking_lead_days: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_BOOKING_LEAD_DAYS,
        description="Whole days between the booking and this flight's departure.",
    )
    party_size: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_PARTY_SIZE,
        description="Passengers on the booking, children included.",
    )
    children: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_PARTY_SIZE,
        description="Children on the booking; at most `party_size` (else a 422 naming `trip.children`).",
    )
    stay_nights: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_STAY_NIGHTS,
        description="Nights between the outbound flight and the return flight of the booking (omit for a "
        "one-way booking).",
    )

    @field_validator("departure_time", "arrival_time", mode="before")
    @classmethod
    def _times_are_strings(cls, value: object) -> object:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError(
                "must be an RFC 3339 date-time string with an offset, e.g. 2026-11-23T09:40:00+08:00"
            )
        return value


class RecommendationRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "member_id": "M0000042",
                "placement": "booking",
                "trip": {
                    "origin": "PEK",
                    "destination": "CTU",
                    "departure_time": EXAMPLE_TIME,
                    "cabin": "Y",
                    "fare_class": "B",
                    "flight_number": "CA1405",
                    "seats_left": {"F": 0, "C": 3, "W": 8, "Y": 40},
                    "booking_lead_days": 12,
                    "party_size": 1,
                    "children": 0,
                    "stay_nights": 2,
                },
                "limit": 5,
                "families": ["upsell", "ancillary"],
                "locale": "en",
            }
        }
    )

    member_id: str = Field(pattern=MEMBER_ID_PATTERN, description="Loyalty member id.")
    placement: Placement = Field(description="Where the app shows the offers.")
    trip: TripIn | None = None
    limit: int = Field(default=10, ge=1, le=50, description="How many offers at most (1–50).")
    families: list[OfferFamily] | None = Field(
        default=None, min_length=1, description="Only these offer families (omit for all)."
    )
    locale: str = Field(
        default=DEFAULT_LOCALE,
        max_length=16,
        description=(
            "Language of the offers' `reasons`: one of "
            + ", ".join(f"`{x}`" for x in ACCEPTED_LOCALES)
            + " (case-insensitive); the zh spellings mean Simplified Chinese, `zh-CN`. "
            "Anything else is a 422 naming `locale`. Offer titles are not translated."
        ),
        examples=["en", "zh-CN"],
        # documents what the validator below accepts (it checks, so its message names the supported list)
        json_schema_extra={"pattern": LOCALE_PATTERN, "x-supported-locales": list(SUPPORTED_LOCALES)},
    )
    debug: bool = Field(
        default=False,
        description="Also list every suppressed candidate and why (only with a valid X-Debug-Token header).",
    )

    @field_validator("locale")
    @classmethod
    def _supported_locale(cls, value: str) -> str:
        """An accepted spelling, normalised to ``en`` or ``zh-CN``."""
        locale = normalize_locale(value)
        if locale is None:
            raise ValueError(f"unsupported locale {value!r}; one of {', '.join(ACCEPTED_LOCALES)}")
        return locale


class ExperimentArmOut(BaseModel):
    key: str = Field(description="The experiment's key.")
    variant: str = Field(description="The member's variant (`holdout`: no personalised offers).")


class ModelOut(BaseModel):
    name: str
    version: str
    alias: str


class OfferOut(BaseModel):
    offer_id: str
    family: OfferFamily
    category: str
    title: str = Field(description="In the response's `locale`; cabins named in words.")
    price_cash: float | None = Field(description="Cash price in `currency`; null when not sold for cash.")
    currency: str | None = Field(
        description="ISO 4217 code of `price_cash` (`CNY`); null when there is no cash price.",
        examples=["CNY"],
    )
    price_miles: int | None = Field(description="Price in miles; null when not sold for miles.")
    score: float = Field(
        description="The model's raw relevance score of the offer for this member. Its scale depends on "
        "the model version and it is not comparable across requests: order by `rank`, not by `score`."
    )
    acceptance_probability: float = Field(
        ge=0, le=1, description="Estimated probability that the member accepts the offer."
    )
    expected_value: float = Field(
        description="acceptance_probability × the offer's value to the programme, CNY; what `rank` orders "
        "by (after diversity and caps)."
    )
    rank: int = Field(ge=1, description="Position to show the offer at: 1 first.")
    expires_at: datetime = Field(description="RFC 3339 with offset: when the app should stop showing it.")
    reasons: list[str] = Field(description="Sentences the app can show, in the response's `locale`.")
    tracking_token: str = Field(
        description="Send it back with events about this offer; bound to this member, offer and placement."
    )


class WithheldOut(BaseModel):
    """How many candidate offers were withheld, and why, in aggregate (no offer is named)."""

    frequency_cap: int = Field(ge=0, description="Over a frequency cap (docs/capping.md).")
    cooldown: int = Field(ge=0, description="In a cool-down after the member dismissed or bought them.")
    cap_store_unavailable: int = Field(ge=0, description="Left out by the cap store's outage policy.")
    already_purchased: int = Field(ge=0, description="Already bought for this trip.")
    needs_seats_left: int = Field(
        ge=0, description="Upgrades withheld because the request gave no `trip.seats_left` for the cabin."
    )
    not_eligible: int = Field(
        ge=0, description="Not for this member, trip, time or placement (tier, cabin, sale window...)."
    )
    low_value: int = Field(ge=0, description="The model gives them no chance with this member.")
    diversity: int = Field(ge=0, description="Too many of one category or family in one answer.")


class SuppressedOut(BaseModel):
    offer_id: str
    stage: str
    reason: str
    detail: str


class RecommendationResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "request_id": "5f0c6a1e9d7c4b1f8a2e3d4c5b6a7980",
                "member_id": "M0000042",
                "placement": "booking",
                "locale": "en",
                "model": {"name": "loyalty-offers", "version": "3", "alias": "champion"},
                "cold_start": False,
                "cap_degraded": None,
                "offers": [
                    {
                        "offer_id": "UP-CAB-Y2W-01",
                        "family": "upsell",
                        "category": "cabin_upgrade",
                        "title": "Upgrade to Premium Economy",
                        "price_cash": 900.0,
                        "currency": "CNY",
                        "price_miles": None,
                        "score": 0.83,
                        "acceptance_probability": 0.12,
                        "expected_value": 75.6,
                        "rank": 1,
                        "expires_at": "2026-11-28T06:30:00+00:00",
                        "reasons": ["You flew PEK–CTU in Business 4 times this year"],
                        "tracking_token": "djJ8NWYwYzZh.c2lnbmF0dXJl",
                    }
                ],
                "withheld": {
                    "frequency_cap": 1,
                    "cooldown": 0,
                    "cap_store_unavailable": 0,
                    "already_purchased": 0,
                    "needs_seats_left": 0,
                    "not_eligible": 12,
                    "low_value": 0,
                    "diversity": 1,
                },
                "suppressed": None,
            }
        }
    )

    request_id: str
    member_id: str
    placement: Placement
    locale: str = Field(description="Language of the `reasons`: `en` or `zh-CN` (the request's, normalised).")
    model: ModelOut
    cold_start: bool = Field(description="The member is unknown to the model: segment/content offers.")
    cap_degraded: str | None = Field(
        description="Set when the cap store was unreachable and the outage policy applied."
    )
    offers: list[OfferOut]
    withheld: WithheldOut | None = Field(
        description="Set when fewer than `limit` offers came back: why, in aggregate. Null otherwise."
    )
    suppressed: list[SuppressedOut] | None = Field(
        description="Debug only (X-Debug-Token): every dropped candidate and why."
    )
    experiment: ExperimentArmOut | None = Field(
        default=None, description="The running experiment and variant that served this member, if any."
    )


# ----------------------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------------------


class EventIn(_Request):
    event_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=EVENT_ID_PATTERN,
        description="Client-generated id (no control characters); retries reuse it.",
    )
    event_type: EventType
    member_id: str = Field(pattern=MEMBER_ID_PATTERN)
    offer_id: str = Field(min_length=1, max_length=64)
    placement: Placement
    event_time: AwareDatetime = Field(description="When it happened on the device (ISO-8601 with offset).")
    tracking_token: str | None = Field(
        default=None,
        max_length=512,
        description="From the recommendation: attributes the event to the request and model that showed "
        "the offer. Optional; when given it must be the one issued for this member, offer and placement.",
    )
    trip_key: str | None = Field(
        default=None,
        max_length=128,
        pattern=TRIP_KEY_PATTERN,
        description="The trip the event is about: `flight_number|YYYY-MM-DD` (local departure date), or "
        "`ORIGIN-DESTINATION|YYYY-MM-DD` when there is no flight number. Required for purchases of "
        "trip-bound offers (upgrades, seats, bags, meals, lounge...): a purchase is remembered for that "
        "trip only.",
    )

    @field_validator("trip_key")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date.fromisoformat(value.rsplit("|", 1)[1])
            except ValueError as exc:
                raise ValueError(f"{value!r} does not end in a real date (YYYY-MM-DD)") from exc
        return value


class EventBatchIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "events": [
                    {
                        "event_id": "3c1d8a52-6f0e-4d8e-9a51-0b7e1f2a9c11",
                        "event_type": "impression",
                        "member_id": "M0000042",
                        "offer_id": "UP-CAB-Y2W-01",
                        "placement": "booking",
                        "event_time": EXAMPLE_TIME,
                        "trip_key": "CA1405|2026-11-23",
                    }
                ]
            }
        }
    )

    events: list[EventIn] = Field(
        min_length=1, description="At most the configured batch size (default 500)."
    )


class EventBatchOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "received": 3,
                "accepted": 2,
                "duplicates": 1,
                "duplicate_ids": ["3c1d8a52-6f0e-4d8e-9a51-0b7e1f2a9c11"],
                "apply_errors": 0,
            }
        }
    )

    received: int
    accepted: int = Field(description="New events, appended to the log and applied to online state.")
    duplicates: int = Field(description="Events whose id was already logged (retries): ignored.")
    duplicate_ids: list[str]
    apply_errors: int = Field(description="New events logged durably but not applied to online state.")


# ----------------------------------------------------------------------------------------------------
# Members
# ----------------------------------------------------------------------------------------------------


class ProfileOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "member_id": "M0000042",
                "tier": "silver",
                "next_tier": "gold",
                "km_to_next_tier": 12500,
                "segments_to_next_tier": 9,
                "segment": "develop",
                "value_score": 64.2,
                "miles_balance": 48200,
            }
        }
    )

    member_id: str
    tier: str
    next_tier: str | None = Field(description="None at the top tier.")
    km_to_next_tier: int | None
    segments_to_next_tier: int | None
    segment: str | None
    value_score: float | None = Field(description="Customer value 0-100.")
    miles_balance: int | None


class CapRowOut(BaseModel):
    cap: str = Field(description="Cap name in the policy file.")
    scope: str = Field(description="What is counted: member, member_family, member_category, ...")
    key: str = Field(description="The family, category, placement or offer counted (`-` for member-wide).")
    window: str = Field(description="Window spec: `day`, `24h`, `7d`, `week`, `lifetime`...")
    limit: int
    count: int
    remaining: int
    resets_at: datetime | None = Field(description="RFC 3339: when the count next drops; null: never.")
    blocked_until: str | None = Field(
        description="RFC 3339 time until which the cap is full, `never` for a full lifetime cap, or null "
        "when not full."
    )
    reason_code: str = Field(description="The reason code the cap gives when it withholds an offer.")


class CooldownOut(BaseModel):
    reason_code: str = Field(description="cooldown:dismiss:offer, cooldown:dismiss:category, purchased...")
    scope: str = Field(description="`offer` or `category`.")
    target: str = Field(description="The offer id or category in the cool-down.")
    since: datetime
    until: datetime


class CapStateOut(BaseModel):
    member_id: str
    tier: str
    time_zone: str = Field(description="IANA zone of the member: calendar windows end at its midnight.")
    now: datetime
    policy_version: str
    count_on: str = Field(description="`event` (impressions the app reports) or `serve`.")
    store: str = Field(description="Which cap store answered: `redis` or `memory` (embedded, one process).")
    degraded: str | None = Field(description="Set when the cap store did not answer; counts are then empty.")
    caps: list[CapRowOut]
    cooldowns: list[CooldownOut]


class CapsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "member_id": "M0000042",
                "as_of": "2026-11-22T11:30:00+00:00",
                "state": {
                    "member_id": "M0000042",
                    "tier": "silver",
                    "time_zone": "Asia/Shanghai",
                    "now": "2026-11-22T11:30:00Z",
                    "policy_version": "2026-12-05.1",
                    "count_on": "event",
                    "store": "redis",
                    "degraded": None,
                    "caps": [
                        {
                            "cap": "member_daily",
                            "scope": "member",
                            "key": "-",
                            "window": "day",
                            "limit": 16,
                            "count": 3,
                            "remaining": 13,
                            "resets_at": "2026-11-22T16:00:00Z",
                            "blocked_until": None,
                            "reason_code": "cap:member:day",
                        }
                    ],
                    "cooldowns": [
                        {
                            "reason_code": "cooldown:dismiss:offer",
                            "scope": "offer",
                            "target": "AN-MEAL-VGML-01",
                            "since": "2026-11-22T10:00:00Z",
                            "until": "2026-12-06T10:00:00Z",
                        }
                    ],
                },
            }
        }
    )

    member_id: str
    as_of: datetime
    state: CapStateOut = Field(description="Current counts per cap and cool-downs, with reset times.")


class CatalogueOfferOut(BaseModel):
    offer_id: str
    title: str = Field(description="In the requested `locale`; cabins named in words.")
    family: OfferFamily
    category: str
    price_cash: float | None = Field(description="Cash price in `currency`; null when not sold for cash.")
    currency: str | None = Field(description="ISO 4217 code of `price_cash` (`CNY`); null without one.")
    price_miles: int | None = Field(description="Price in miles; null when not sold for miles.")


class OffersOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "locale": "en",
                "model": {"name": "loyalty-offers", "version": "3", "alias": "champion"},
                "offers": [
                    {
                        "offer_id": "UP-CAB-Y2W-01",
                        "title": "Upgrade to Premium Economy",
                        "family": "upsell",
                        "category": "cabin_upgrade",
                        "price_cash": 900.0,
                        "currency": "CNY",
                        "price_miles": None,
                    }
                ],
            }
        }
    )

    locale: str = Field(description="Language of the titles: `en` or `zh-CN`.")
    model: ModelOut = Field(description="The served model whose catalogue this is.")
    offers: list[CatalogueOfferOut]


# ----------------------------------------------------------------------------------------------------
# Operations
# ----------------------------------------------------------------------------------------------------


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"status": "ok"}})
    status: str


class ReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "status": "ready",
                "checks": {"model": "loyalty-offers v3 (champion)", "redis": "ok", "event_log": "ok"},
            }
        }
    )
    status: str
    checks: dict[str, str]


class ReloadOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "status": "loaded",
                "version": "4",
                "previous_version": "3",
                "error": None,
                "seconds": 1.9,
            }
        }
    )
    status: str = Field(description="loaded, unchanged or failed (the previous model keeps serving).")
    version: str | None
    previous_version: str | None
    error: str | None
    seconds: float


class PolicyReloadOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"ok": True, "changed": True, "version": "2026-11-22.2", "error": None}}
    )
    ok: bool
    changed: bool
    version: str = Field(description="Version of the policy in force after the call.")
    error: str | None = Field(description="Why the file was rejected (file, line and field).")
