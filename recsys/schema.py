"""Domain schema: table names, column names, codes and enumerations.

Every module refers to columns through these constants, never through string literals scattered in code.
The data dictionary in ``docs/data_dictionary.md`` documents the same tables for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    """Card tiers, low to high (domain.md: Basic 普通卡, Silver 银卡, Gold 金卡, Platinum 白金卡)."""

    BASIC = "basic"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"

    @property
    def rank(self) -> int:
        return TIER_ORDER.index(self)


TIER_ORDER: tuple[Tier, ...] = (Tier.BASIC, Tier.SILVER, Tier.GOLD, Tier.PLATINUM)


@dataclass(frozen=True)
class TierRule:
    """Qualification on a rolling 12 months: flown km OR segments; retention thresholds likewise."""

    tier: Tier
    qualify_km: int
    qualify_segments: int
    retain_km: int
    retain_segments: int


# Air China PhoenixMiles thresholds quoted in domain.md (third-party source).
TIER_RULES: tuple[TierRule, ...] = (
    TierRule(Tier.SILVER, 40_000, 25, 35_000, 23),
    TierRule(Tier.GOLD, 80_000, 40, 70_000, 36),
    TierRule(Tier.PLATINUM, 160_000, 90, 145_000, 80),
)
MILES_VALIDITY_MONTHS = 36


class Cabin(StrEnum):
    """Cabins, high to low: First, Business, Premium Economy, Economy."""

    F = "F"
    C = "C"
    W = "W"
    Y = "Y"


# Cabins ordered low to high; an upgrade goes to the next cabin only.
CABIN_ORDER: tuple[Cabin, ...] = (Cabin.Y, Cabin.W, Cabin.C, Cabin.F)


def next_cabin(cabin: Cabin | str) -> Cabin | None:
    """The cabin one step up, or None from First."""
    idx = CABIN_ORDER.index(Cabin(cabin))
    return CABIN_ORDER[idx + 1] if idx + 1 < len(CABIN_ORDER) else None


# Booking (fare) classes per cabin. Upgrade-eligible classes are the flexible/full-fare ones.
FARE_CLASSES: dict[Cabin, tuple[str, ...]] = {
    Cabin.F: ("F", "A"),
    Cabin.C: ("J", "C", "D", "Z", "R"),
    Cabin.W: ("G", "E"),
    Cabin.Y: ("Y", "B", "M", "U", "H", "Q", "V", "W", "S", "T", "L", "P", "N", "K"),
}
FARE_CLASS_CABIN: dict[str, Cabin] = {fc: cabin for cabin, fcs in FARE_CLASSES.items() for fc in fcs}
UPGRADE_ELIGIBLE_FARE_CLASSES: frozenset[str] = frozenset(
    {"F", "J", "C", "D", "G", "E", "Y", "B", "M", "U", "H"}
)


class OfferFamily(StrEnum):
    UPSELL = "upsell"
    ANCILLARY = "ancillary"
    REDEMPTION = "redemption"


class OfferCategory(StrEnum):
    """Offer categories (domain.md "Offer families"), each belonging to one family."""

    # upsell
    CABIN_UPGRADE = "cabin_upgrade"
    UPGRADE_BID = "upgrade_bid"
    EXTRA_LEGROOM = "extra_legroom"
    FLEXIBLE_FARE = "flexible_fare"
    # ancillary
    SEAT = "seat"
    BAGGAGE = "baggage"
    MEAL = "meal"
    LOUNGE = "lounge"
    WIFI = "wifi"
    PRIORITY_BOARDING = "priority_boarding"
    FAST_TRACK = "fast_track"
    CHAUFFEUR = "chauffeur"
    TRANSIT_HOTEL = "transit_hotel"
    INSURANCE = "insurance"
    # redemption
    AWARD_FLIGHT = "award_flight"
    AWARD_UPGRADE = "award_upgrade"
    HOTEL = "hotel"
    MERCHANDISE = "merchandise"
    MILES_DONATION = "miles_donation"
    MILES_PROMOTION = "miles_promotion"


CATEGORY_FAMILY: dict[OfferCategory, OfferFamily] = {
    **{
        c: OfferFamily.UPSELL
        for c in (
            OfferCategory.CABIN_UPGRADE,
            OfferCategory.UPGRADE_BID,
            OfferCategory.EXTRA_LEGROOM,
            OfferCategory.FLEXIBLE_FARE,
        )
    },
    **{
        c: OfferFamily.ANCILLARY
        for c in (
            OfferCategory.SEAT,
            OfferCategory.BAGGAGE,
            OfferCategory.MEAL,
            OfferCategory.LOUNGE,
            OfferCategory.WIFI,
            OfferCategory.PRIORITY_BOARDING,
            OfferCategory.FAST_TRACK,
            OfferCategory.CHAUFFEUR,
            OfferCategory.TRANSIT_HOTEL,
            OfferCategory.INSURANCE,
        )
    },
    **{
        c: OfferFamily.REDEMPTION
        for c in (
            OfferCategory.AWARD_FLIGHT,
            OfferCategory.AWARD_UPGRADE,
            OfferCategory.HOTEL,
            OfferCategory.MERCHANDISE,
            OfferCategory.MILES_DONATION,
            OfferCategory.MILES_PROMOTION,
        )
    },
}


class MealCode(StrEnum):
    """Meals: standard, premium signature dish, and IATA special-meal codes."""

    STANDARD = "STD"
    SIGNATURE = "SIG"
    VGML = "VGML"
    AVML = "AVML"
    MOML = "MOML"
    KSML = "KSML"
    HNML = "HNML"
    DBML = "DBML"
    GFML = "GFML"
    LSML = "LSML"
    CHML = "CHML"
    NONE = "NONE"  # no meal taken / not served on the sector


SPECIAL_MEALS: frozenset[MealCode] = frozenset(
    {
        MealCode.VGML,
        MealCode.AVML,
        MealCode.MOML,
        MealCode.KSML,
        MealCode.HNML,
        MealCode.DBML,
        MealCode.GFML,
        MealCode.LSML,
        MealCode.CHML,
    }
)


class SeatType(StrEnum):
    WINDOW = "window"
    AISLE = "aisle"
    MIDDLE = "middle"
    EXIT_ROW = "exit_row"
    EXTRA_LEGROOM = "extra_legroom"


class Placement(StrEnum):
    """Where the app asks for offers."""

    HOME = "home"
    BOOKING = "booking"
    CHECK_IN = "check_in"
    POST_BOOKING = "post_booking"
    IN_TRIP = "in_trip"


class EventType(StrEnum):
    IMPRESSION = "impression"
    CLICK = "click"
    PURCHASE = "purchase"
    DISMISS = "dismiss"


class Channel(StrEnum):
    APP = "app"
    WEB = "web"
    CALL_CENTRE = "call_centre"
    AGENT = "agent"


class Gender(StrEnum):
    """``members.gender`` (nullable: unknown). The air-data importer maps ``Male``/``Female`` to these."""

    MALE = "M"
    FEMALE = "F"


class RedemptionKind(StrEnum):
    AWARD_FLIGHT = "award_flight"
    AWARD_UPGRADE = "award_upgrade"
    HOTEL = "hotel"
    MERCHANDISE = "merchandise"
    DONATION = "donation"


class PartnerKind(StrEnum):
    """Kinds of partner earning (``partner_activities.kind``)."""

    HOTEL = "hotel"
    CAR_RENTAL = "car_rental"
    CREDIT_CARD = "credit_card"


class Segment(StrEnum):
    """Five LRFMC customer-value segments (重要保持 / 重要发展 / 重要挽留 / 一般 / 低价值)."""

    KEEP = "keep"
    DEVELOP = "develop"
    WIN_BACK = "win_back"
    GENERAL = "general"
    LOW_VALUE = "low_value"


# ----------------------------------------------------------------------------------------------------------
# Tables and columns. A dataset directory holds one Parquet file (or a directory of part files) per table.
# ----------------------------------------------------------------------------------------------------------


class Col:
    """Column names shared across tables."""

    MEMBER_ID = "member_id"
    OFFER_ID = "offer_id"
    FLIGHT_ID = "flight_id"

    # members
    ENROL_DATE = "enrol_date"
    TIER = "tier"
    HOME_AIRPORT = "home_airport"
    TIME_ZONE = "time_zone"
    MILES_BALANCE = "miles_balance"
    BIRTH_YEAR = "birth_year"
    GENDER = "gender"
    CHANNEL = "channel"

    # flights
    FLIGHT_DATE = "flight_date"
    DEPARTURE_TIME = "departure_time"
    FLIGHT_NUMBER = "flight_number"
    ORIGIN = "origin"
    DESTINATION = "destination"
    CABIN = "cabin"
    FARE_CLASS = "fare_class"
    DISTANCE_KM = "distance_km"
    FARE_PAID = "fare_paid"
    MILES_EARNED = "miles_earned"
    MEAL_CODE = "meal_code"
    SEAT_TYPE = "seat_type"
    BAGS = "bags"
    LOUNGE_USED = "lounge_used"
    # the booking (PNR) the flight belongs to; optional columns (BOOKING_COLUMNS)
    BOOKING_LEAD_DAYS = "booking_lead_days"
    PARTY_SIZE = "party_size"
    CHILDREN = "children"
    STAY_NIGHTS = "stay_nights"

    # ancillary purchases
    PURCHASE_ID = "purchase_id"
    PURCHASE_TIME = "purchase_time"
    CATEGORY = "category"
    PRICE_CASH = "price_cash"

    # redemptions
    REDEMPTION_ID = "redemption_id"
    REDEEM_TIME = "redeem_time"
    KIND = "kind"
    MILES_SPENT = "miles_spent"

    # offers
    FAMILY = "family"
    TITLE = "title"
    PRICE_MILES = "price_miles"
    MARGIN = "margin"
    ELIGIBLE_TIERS = "eligible_tiers"
    ELIGIBLE_CABINS = "eligible_cabins"
    ELIGIBLE_ORIGINS = "eligible_origins"
    ELIGIBLE_FARE_CLASSES = "eligible_fare_classes"
    TARGET_CABIN = "target_cabin"
    MIN_MILES = "min_miles"
    WINDOW_OPEN_HOURS = "window_open_hours"
    WINDOW_CLOSE_HOURS = "window_close_hours"
    REQUIRES_LOUNGE = "requires_lounge"
    PLACEMENTS = "placements"
    VALID_FROM = "valid_from"
    VALID_TO = "valid_to"
    EXEMPT = "exempt"
    REGION = "region"
    MEAL = "meal"
    BLACKOUT_MONTHS = "blackout_months"

    # interactions
    EVENT_ID = "event_id"
    REQUEST_ID = "request_id"
    PLACEMENT = "placement"
    EVENT_TYPE = "event_type"
    EVENT_TIME = "event_time"

    # request log (one row per recommend decision; recsys.requestlog)
    REQUEST_TIME = "request_time"
    CANDIDATES = "candidates"
    SHOWN = "shown"
    PROPENSITIES = "propensities"
    POLICY = "policy"
    POLICY_VERSION = "policy_version"
    EXPLORATION = "exploration"
    EXPERIMENT = "experiment"
    VARIANT = "variant"

    # partner activities
    ACTIVITY_ID = "activity_id"
    ACTIVITY_TIME = "activity_time"
    PLACE = "place"

    # member aggregates (LRFMC source fields, as in the airline customer-value data)
    FFP_DATE = "ffp_date"
    LOAD_TIME = "load_time"
    FLIGHT_COUNT = "flight_count"
    SEG_KM_SUM = "seg_km_sum"
    LAST_TO_END = "last_to_end"
    AVG_DISCOUNT = "avg_discount"

    # generic interactions import
    USER_ID = "user_id"
    ITEM_ID = "item_id"
    WEIGHT = "weight"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class TableSpec:
    """A table of the canonical layout: its file name, key and columns with their logical types."""

    name: str
    key: str | None
    columns: dict[str, str]  # column -> logical type: str, int, float, bool, date, datetime, list[str]
    partitioned: bool = False  # stored as a directory of part-*.parquet files (large tables)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.columns)


MEMBERS = TableSpec(
    "members",
    Col.MEMBER_ID,
    {
        Col.MEMBER_ID: "str",
        Col.ENROL_DATE: "date",
        Col.TIER: "str",
        Col.HOME_AIRPORT: "str",
        Col.TIME_ZONE: "str",
        Col.MILES_BALANCE: "int",
        Col.BIRTH_YEAR: "int",
        Col.GENDER: "str",
        Col.CHANNEL: "str",
    },
)

FLIGHTS = TableSpec(
    "flights",
    Col.FLIGHT_ID,
    {
        Col.FLIGHT_ID: "str",
        Col.MEMBER_ID: "str",
        Col.FLIGHT_DATE: "date",
        Col.DEPARTURE_TIME: "datetime",
        Col.FLIGHT_NUMBER: "str",
        Col.ORIGIN: "str",
        Col.DESTINATION: "str",
        Col.CABIN: "str",
        Col.FARE_CLASS: "str",
        Col.DISTANCE_KM: "int",
        Col.FARE_PAID: "float",
        Col.MILES_EARNED: "int",
        Col.MEAL_CODE: "str",
        Col.SEAT_TYPE: "str",
        Col.BAGS: "int",
        Col.LOUNGE_USED: "bool",
    },
    partitioned=True,
)

ANCILLARIES = TableSpec(
    "ancillaries",
    Col.PURCHASE_ID,
    {
        Col.PURCHASE_ID: "str",
        Col.MEMBER_ID: "str",
        Col.FLIGHT_ID: "str",
        Col.OFFER_ID: "str",
        Col.PURCHASE_TIME: "datetime",
        Col.CATEGORY: "str",
        Col.PRICE_CASH: "float",
    },
    partitioned=True,
)

REDEMPTIONS = TableSpec(
    "redemptions",
    Col.REDEMPTION_ID,
    {
        Col.REDEMPTION_ID: "str",
        Col.MEMBER_ID: "str",
        Col.OFFER_ID: "str",
        Col.REDEEM_TIME: "datetime",
        Col.KIND: "str",
        Col.MILES_SPENT: "int",
        Col.DESTINATION: "str",
    },
    partitioned=True,
)

OFFERS = TableSpec(
    "offers",
    Col.OFFER_ID,
    {
        Col.OFFER_ID: "str",
        Col.FAMILY: "str",
        Col.CATEGORY: "str",
        Col.TITLE: "str",
        Col.PRICE_CASH: "float",
        Col.PRICE_MILES: "int",
        Col.MARGIN: "float",
        Col.ELIGIBLE_TIERS: "list[str]",
        Col.ELIGIBLE_CABINS: "list[str]",
        Col.ELIGIBLE_FARE_CLASSES: "list[str]",
        Col.ELIGIBLE_ORIGINS: "list[str]",
        Col.TARGET_CABIN: "str",
        Col.DESTINATION: "str",
        Col.REGION: "str",
        Col.MEAL: "str",
        Col.MIN_MILES: "int",
        Col.WINDOW_OPEN_HOURS: "float",
        Col.WINDOW_CLOSE_HOURS: "float",
        Col.REQUIRES_LOUNGE: "bool",
        Col.PLACEMENTS: "list[str]",
        Col.BLACKOUT_MONTHS: "list[int]",
        Col.VALID_FROM: "datetime",
        Col.VALID_TO: "datetime",
        Col.EXEMPT: "bool",
    },
)

INTERACTIONS = TableSpec(
    "interactions",
    Col.EVENT_ID,
    {
        Col.EVENT_ID: "str",
        Col.REQUEST_ID: "str",
        Col.MEMBER_ID: "str",
        Col.OFFER_ID: "str",
        Col.FLIGHT_ID: "str",
        Col.PLACEMENT: "str",
        Col.EVENT_TYPE: "str",
        Col.EVENT_TIME: "datetime",
    },
    partitioned=True,
)

# Optional table: the request log. ``shown`` is in slot order and ``propensities[i]`` is the logging policy's
# inclusion probability of ``shown[i]``; ``candidates`` is the set it chose from (after eligibility and caps).
REQUESTS = TableSpec(
    "requests",
    Col.REQUEST_ID,
    {
        Col.REQUEST_ID: "str",
        Col.MEMBER_ID: "str",
        Col.REQUEST_TIME: "datetime",
        Col.PLACEMENT: "str",
        Col.FLIGHT_ID: "str",
        Col.FLIGHT_NUMBER: "str",
        Col.ORIGIN: "str",
        Col.DESTINATION: "str",
        Col.CABIN: "str",
        Col.FARE_CLASS: "str",
        Col.DEPARTURE_TIME: "datetime",
        Col.CANDIDATES: "list[str]",
        Col.SHOWN: "list[str]",
        Col.PROPENSITIES: "list[float]",
        Col.POLICY: "str",
        Col.POLICY_VERSION: "str",
        Col.EXPLORATION: "bool",
        Col.EXPERIMENT: "str",
        Col.VARIANT: "str",
    },
    partitioned=True,
)

# Optional table: miles earned with partners (hotel stays, car rentals, co-branded card statements), each
# with a place (an airport code standing for its city) and a time, so partner earning is observable history.
PARTNER_ACTIVITIES = TableSpec(
    "partner_activities",
    Col.ACTIVITY_ID,
    {
        Col.ACTIVITY_ID: "str",
        Col.MEMBER_ID: "str",
        Col.KIND: "str",
        Col.ACTIVITY_TIME: "datetime",
        Col.PLACE: "str",
        Col.MILES_EARNED: "int",
    },
    partitioned=True,
)

# Optional table: per-member aggregates when flights themselves are not available (the imported airline
# customer-value data). LRFMC features are computed from flights when present, from this table otherwise.
MEMBER_AGGREGATES = TableSpec(
    "member_aggregates",
    Col.MEMBER_ID,
    {
        Col.MEMBER_ID: "str",
        Col.FFP_DATE: "date",
        Col.LOAD_TIME: "date",
        Col.FLIGHT_COUNT: "int",
        Col.SEG_KM_SUM: "int",
        Col.LAST_TO_END: "int",
        Col.AVG_DISCOUNT: "float",
    },
)

# ``flights`` and ``requests``: what the booking (PNR) says about the trip: whole days from booking to this
# flight's departure, passengers on the booking (children included) and children, nights between the outbound
# and the return flight (null for a one-way booking). Null where unknown; data without them imports as is.
BOOKING_COLUMNS: dict[str, str] = {
    Col.BOOKING_LEAD_DAYS: "int",
    Col.PARTY_SIZE: "int",
    Col.CHILDREN: "int",
    Col.STAY_NIGHTS: "int",
}
MAX_PARTY_SIZE = 9  # passengers on one booking (the usual reservation-system limit)
MAX_BOOKING_LEAD_DAYS = 366
MAX_STAY_NIGHTS = 366

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (MEMBERS, FLIGHTS, ANCILLARIES, REDEMPTIONS, OFFERS, INTERACTIONS)
}
OPTIONAL_TABLES: dict[str, TableSpec] = {
    MEMBER_AGGREGATES.name: MEMBER_AGGREGATES,
    REQUESTS.name: REQUESTS,
    PARTNER_ACTIVITIES.name: PARTNER_ACTIVITIES,
}
ALL_TABLES: dict[str, TableSpec] = {**TABLES, **OPTIONAL_TABLES}

# Which columns may be null (empty string / NaN / None) per table; every other column is required.
NULLABLE: dict[str, frozenset[str]] = {
    MEMBERS.name: frozenset({Col.BIRTH_YEAR, Col.GENDER}),
    FLIGHTS.name: frozenset({Col.SEAT_TYPE, *BOOKING_COLUMNS}),
    ANCILLARIES.name: frozenset({Col.OFFER_ID, Col.FLIGHT_ID}),
    REDEMPTIONS.name: frozenset({Col.OFFER_ID, Col.DESTINATION}),
    OFFERS.name: frozenset({Col.TARGET_CABIN, Col.DESTINATION, Col.REGION, Col.MEAL, Col.VALID_TO}),
    INTERACTIONS.name: frozenset({Col.FLIGHT_ID, Col.REQUEST_ID}),
    MEMBER_AGGREGATES.name: frozenset(),
    # home-screen requests have no trip; experiments are optional
    REQUESTS.name: frozenset(
        {
            Col.FLIGHT_ID,
            Col.FLIGHT_NUMBER,
            Col.ORIGIN,
            Col.DESTINATION,
            Col.CABIN,
            Col.FARE_CLASS,
            Col.DEPARTURE_TIME,
            Col.EXPERIMENT,
            Col.VARIANT,
            *BOOKING_COLUMNS,
        }
    ),
    PARTNER_ACTIVITIES.name: frozenset(),
}

# ----------------------------------------------------------------------------------------------------------
# Imported data (``recsys data import``). Sources other than the generator do not carry every attribute.
# ----------------------------------------------------------------------------------------------------------

# Columns a table MAY have in addition to its spec; when present they are typed and validated like the others.
# ``interactions.weight``: the strength of an implicit-feedback event from the generic interactions format.
OPTIONAL_COLUMNS: dict[str, dict[str, str]] = {
    INTERACTIONS.name: {Col.WEIGHT: "float"},
    FLIGHTS.name: dict(BOOKING_COLUMNS),
    REQUESTS.name: dict(BOOKING_COLUMNS),
}

# Family and category of offers imported from the generic interactions format
# (items of any kind, not airline offers).
GENERIC_FAMILY = "generic"
GENERIC_CATEGORY = "generic"

# Import formats (the ``import_format`` recorded in the manifest) and the columns, per table, that such a
# dataset leaves null because the source has no such attribute — in addition to NULLABLE. Validation applies
# them by manifest.
IMPORT_FORMATS: tuple[str, ...] = ("canonical", "interactions", "air-data")
SOURCE_NULLABLE: dict[str, dict[str, frozenset[str]]] = {
    "air-data": {
        MEMBERS.name: frozenset({Col.HOME_AIRPORT, Col.TIME_ZONE, Col.MILES_BALANCE, Col.CHANNEL}),
    },
    "interactions": {
        MEMBERS.name: frozenset(
            {Col.ENROL_DATE, Col.TIER, Col.HOME_AIRPORT, Col.TIME_ZONE, Col.MILES_BALANCE, Col.CHANNEL}
        ),
        OFFERS.name: frozenset(
            {
                Col.PRICE_CASH,
                Col.PRICE_MILES,
                Col.MARGIN,
                Col.MIN_MILES,
                Col.WINDOW_OPEN_HOURS,
                Col.WINDOW_CLOSE_HOURS,
                Col.VALID_FROM,
            }
        ),
        # data without timestamps (the source file has no timestamp column)
        INTERACTIONS.name: frozenset({Col.EVENT_TIME}),
    },
}
