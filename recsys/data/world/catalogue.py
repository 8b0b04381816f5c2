"""The offer catalogue of the loyalty world: upsell, ancillary and redemption offers with eligibility rules.

Conventions of the eligibility columns (see also the data dictionary):

* an empty ``eligible_tiers`` / ``eligible_fare_classes`` / ``eligible_origins`` list means "no restriction";
* trip-bound offers (upsell, ancillary, award upgrade) always list their ``eligible_cabins`` (the booked
  cabins they apply to) and a sale window: ``window_open_hours`` >= hours before departure >=
  ``window_close_hours`` (meals close 24 h before, upgrade bids 24 h, last-minute upgrades 1 h); offers not
  tied to a flight (award flights, hotels, merchandise, donations, promotions) leave ``eligible_cabins`` empty
  and their windows 0;
* ``target_cabin`` is the next cabin for upgrades (for award flights: the award's cabin); ``min_miles`` the
  balance needed (= the miles price of a redemption); ``requires_lounge`` needs a lounge at the departure
  airport (``network.has_lounge``);
* ``blackout_months`` (award flights): months (1-12) in which the award cannot be booked/shown;
* ``valid_from``/``valid_to`` bound when the offer can be shown (``valid_to`` null: open-ended);
* ``exempt``: service offers (free special meals, complimentary lounge reminders) exempt from frequency caps;
* ``margin`` (CNY per acceptance): the cash margin of paid offers; for miles offers the value to the airline
  of retiring that miles liability at below its booked cost (about 0.4 fen a mile for award flights).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from recsys.data.network import HAS_LOUNGE, IATA, LAT, LON, REGION, Network, haversine_km
from recsys.schema import (
    CATEGORY_FAMILY,
    FARE_CLASSES,
    SPECIAL_MEALS,
    UPGRADE_ELIGIBLE_FARE_CLASSES,
    Cabin,
    Col,
    MealCode,
    OfferCategory,
    Placement,
    Tier,
    next_cabin,
)

ALL_TIERS = [t.value for t in Tier]
ELITE = [Tier.GOLD.value, Tier.PLATINUM.value]
P = Placement

# Award destinations, if served by the network (domestic leisure, Greater China, Asia, long haul).
AWARD_DESTINATIONS: tuple[str, ...] = (
    "SYX",
    "KMG",
    "XMN",
    "CTU",
    "PVG",
    "SZX",
    "LJG",
    "HAK",
    "HKG",
    "TPE",
    "MFM",
    "NRT",
    "ICN",
    "BKK",
    "SIN",
    "KIX",
    "FRA",
    "LHR",
    "CDG",
    "JFK",
    "LAX",
    "YVR",
    "SYD",
    "MEL",
)
# ... and the signature places of the travel tastes (recsys.data.world.tastes)
AWARD_DESTINATIONS += (
    "HKT",
    "OKA",
    "HNL",
    "CUN",
    "CTS",
    "PUS",
    "FCO",
    "BCN",
    "VIE",
    "ATH",
    "JZH",
    "LXA",
    "DYG",
    "KWL",
    "ZUH",
    "AKL",
)
AWARD_PREMIUM_DESTINATIONS: tuple[str, ...] = ("NRT", "FRA", "LHR", "CDG", "JFK", "LAX", "SYD", "HKG")
# Hubs that connect a member's airport to a destination without a nonstop route (award flights are eligible
# from every airport that reaches the destination nonstop or through one of them).
CONNECTING_HUBS: tuple[str, ...] = ("PEK", "PVG", "CTU")
# Partner hotels by destination city, offered for a trip to that city (resort stays too in RESORT_CITIES).
HOTEL_CITIES: tuple[str, ...] = (
    "SYX",
    "HAK",
    "XMN",
    "HKT",
    "BKK",
    "OKA",
    "HNL",
    "NRT",
    "KIX",
    "ICN",
    "CTS",
    "CDG",
    "LHR",
    "FCO",
    "BCN",
    "PVG",
    "HKG",
    "SIN",
    "LAX",
    "ZUH",
    "LJG",
    "KMG",
    "LXA",
    "KWL",
    "JZH",
    "SYD",
    "PEK",
    "SZX",
    "FRA",
    "JFK",
    "XIY",
    "HGH",
)
RESORT_CITIES: frozenset[str] = frozenset({"SYX", "HAK", "HKT", "OKA", "HNL"})
# Miles price of two partner-hotel nights by the city's region (assumed: we found no published PhoenixMiles
# hotel chart); a resort stay costs double.
_HOTEL_MILES = {"domestic": 10_000, "greater_china": 15_000, "asia": 15_000}
_HOTEL_MILES_LONG_HAUL = 20_000


def hotel_miles(region: str) -> int:
    """Miles price of two partner-hotel nights in a city of ``region``."""
    return _HOTEL_MILES.get(region, _HOTEL_MILES_LONG_HAUL)


AWARD_BLACKOUT_DOMESTIC = [1, 2, 7, 8, 10]  # Spring Festival, summer, Golden Week
AWARD_BLACKOUT_INTERNATIONAL = [7, 8]
REFERENCE_HUB = "PEK"

# Award price (miles, economy) by great-circle distance band from the reference hub.
_AWARD_BANDS_KM = np.array([800, 2000, 3500, 6000, 9000])
_AWARD_BAND_MILES = np.array([8_000, 12_000, 20_000, 30_000, 50_000, 60_000])
_AWARD_CABIN_FACTOR = {Cabin.Y: 1.0, Cabin.W: 1.5, Cabin.C: 2.2, Cabin.F: 3.2}


def award_miles(distance_km: np.ndarray | float, cabin: Cabin = Cabin.Y) -> np.ndarray:
    """Miles price of an award flight by distance band and cabin."""
    band = np.searchsorted(_AWARD_BANDS_KM, np.asarray(distance_km, dtype=float), side="right")
    return np.asarray(_AWARD_BAND_MILES[band] * _AWARD_CABIN_FACTOR[Cabin(cabin)]).astype(np.int64)


def _fc(cabin: Cabin, upgrade_only: bool = False) -> list[str]:
    classes = FARE_CLASSES[cabin]
    return [c for c in classes if c in UPGRADE_ELIGIBLE_FARE_CLASSES] if upgrade_only else []


def build_catalogue(network: Network, valid_from: datetime, horizon_end: datetime) -> pd.DataFrame:
    """The offer catalogue (one row per offer, columns exactly as ``schema.OFFERS``)."""
    airports = network.airports.set_index(IATA)
    hubs = network.hubs(8)
    lounge_airports = sorted(airports.index[airports[HAS_LOUNGE]].tolist())
    rows: list[dict[str, object]] = []

    def add(
        offer_id: str,
        category: OfferCategory,
        title: str,
        *,
        cash: float = 0.0,
        miles: int = 0,
        margin: float | None = None,
        tiers: list[str] | None = None,
        cabins: list[str] | None = None,
        fare_classes: list[str] | None = None,
        origins: list[str] | None = None,
        target: str | None = None,
        destination: str | None = None,
        region: str | None = None,
        meal: str | None = None,
        min_miles: int = 0,
        window: tuple[float, float] = (0.0, 0.0),
        lounge: bool = False,
        placements: list[Placement] | None = None,
        blackout: list[int] | None = None,
        valid: tuple[datetime, datetime | None] | None = None,
        exempt: bool = False,
    ) -> None:
        start, end = valid if valid is not None else (valid_from, None)
        rows.append(
            {
                Col.OFFER_ID: offer_id,
                Col.FAMILY: CATEGORY_FAMILY[category].value,
                Col.CATEGORY: category.value,
                Col.TITLE: title,
                Col.PRICE_CASH: float(cash),
                Col.PRICE_MILES: int(miles),
                Col.MARGIN: float(round(margin if margin is not None else 0.5 * cash + 0.006 * miles, 2)),
                Col.ELIGIBLE_TIERS: list(tiers or []),
                Col.ELIGIBLE_CABINS: list(cabins or []),
                Col.ELIGIBLE_FARE_CLASSES: list(fare_classes or []),
                Col.ELIGIBLE_ORIGINS: list(origins or []),
                Col.TARGET_CABIN: target,
                Col.DESTINATION: destination,
                Col.REGION: region,
                Col.MEAL: meal,
                Col.MIN_MILES: int(min_miles),
                Col.WINDOW_OPEN_HOURS: float(window[0]),
                Col.WINDOW_CLOSE_HOURS: float(window[1]),
                Col.REQUIRES_LOUNGE: bool(lounge),
                Col.PLACEMENTS: [p.value for p in (placements or [P.HOME])],
                Col.BLACKOUT_MONTHS: list(blackout or []),
                Col.VALID_FROM: pd.Timestamp(start),
                Col.VALID_TO: pd.Timestamp(end) if end is not None else pd.NaT,
                Col.EXEMPT: bool(exempt),
            }
        )

    # ---- upsell ------------------------------------------------------------------------------------------
    up_prices = {Cabin.Y: (900.0, 600.0), Cabin.W: (1800.0, 1200.0), Cabin.C: (4500.0, 3000.0)}
    for src in (Cabin.Y, Cabin.W, Cabin.C):
        dst = next_cabin(src)
        assert dst is not None
        code = f"{src.value}2{dst.value}"
        book, last = up_prices[src]
        add(
            f"UP-CAB-{code}-01",
            OfferCategory.CABIN_UPGRADE,
            f"Upgrade to {dst.name} cabin",
            cash=book,
            margin=0.7 * book,
            cabins=[src.value],
            fare_classes=_fc(src, True),
            target=dst.value,
            window=(720, 2),
            placements=[P.BOOKING, P.POST_BOOKING],
        )
        add(
            f"UP-CAB-{code}-02",
            OfferCategory.CABIN_UPGRADE,
            f"Last-minute upgrade to {dst.name} cabin",
            cash=last,
            margin=0.8 * last,
            cabins=[src.value],
            fare_classes=_fc(src, True),
            target=dst.value,
            window=(48, 1),
            placements=[P.CHECK_IN],
        )
        add(
            f"UP-BID-{code}-01",
            OfferCategory.UPGRADE_BID,
            f"Bid for an upgrade to {dst.name} cabin",
            cash=round(book * 0.5),
            margin=0.8 * book * 0.5,
            cabins=[src.value],
            fare_classes=list(FARE_CLASSES[src]),
            target=dst.value,
            window=(168, 24),
            placements=[P.POST_BOOKING],
        )
    add(
        "UP-LEG-01",
        OfferCategory.EXTRA_LEGROOM,
        "Extra-legroom seat",
        cash=180,
        margin=160,
        cabins=[Cabin.Y.value],
        window=(720, 1),
        placements=[P.BOOKING, P.POST_BOOKING],
    )
    add(
        "UP-LEG-02",
        OfferCategory.EXTRA_LEGROOM,
        "Extra-legroom seat at check-in",
        cash=120,
        margin=110,
        cabins=[Cabin.Y.value],
        window=(48, 1),
        placements=[P.CHECK_IN],
    )
    add(
        "UP-FLEX-Y-01",
        OfferCategory.FLEXIBLE_FARE,
        "Make your fare flexible",
        cash=300,
        margin=240,
        cabins=[Cabin.Y.value],
        fare_classes=[c for c in FARE_CLASSES[Cabin.Y] if c not in "YBM"],
        window=(8760, 24),
        placements=[P.BOOKING],
    )
    add(
        "UP-FLEX-W-01",
        OfferCategory.FLEXIBLE_FARE,
        "Flexible Premium Economy fare",
        cash=500,
        margin=400,
        cabins=[Cabin.W.value],
        fare_classes=["E"],
        window=(8760, 24),
        placements=[P.BOOKING],
    )

    # ---- ancillary ---------------------------------------------------------------------------------------
    yw = [Cabin.Y.value, Cabin.W.value]
    every = [c.value for c in (Cabin.F, Cabin.C, Cabin.W, Cabin.Y)]
    premium = [Cabin.F.value, Cabin.C.value]
    seat_place = [P.BOOKING, P.POST_BOOKING, P.CHECK_IN]
    add(
        "AN-SEAT-EXIT-01",
        OfferCategory.SEAT,
        "Exit-row seat",
        cash=150,
        margin=140,
        cabins=[Cabin.Y.value],
        window=(720, 1),
        placements=seat_place,
    )
    add(
        "AN-SEAT-WIN-01",
        OfferCategory.SEAT,
        "Choose a window or aisle seat",
        cash=60,
        margin=55,
        cabins=yw,
        window=(720, 1),
        placements=seat_place,
    )
    add(
        "AN-SEAT-TOG-01",
        OfferCategory.SEAT,
        "Seats together for your party",
        cash=80,
        margin=70,
        cabins=yw,
        window=(720, 24),
        placements=[P.BOOKING, P.POST_BOOKING],
    )
    add(
        "AN-SEAT-FRONT-01",
        OfferCategory.SEAT,
        "Front-row seat, first off the plane",
        cash=100,
        margin=90,
        cabins=yw,
        window=(720, 1),
        placements=seat_place,
    )
    bag_place = [P.BOOKING, P.POST_BOOKING, P.CHECK_IN]
    add(
        "AN-BAG-23-01",
        OfferCategory.BAGGAGE,
        "Extra checked bag (23 kg)",
        cash=300,
        margin=250,
        cabins=every,
        window=(720, 3),
        placements=bag_place,
    )
    add(
        "AN-BAG-23-02",
        OfferCategory.BAGGAGE,
        "Two extra checked bags",
        cash=550,
        margin=450,
        cabins=every,
        window=(720, 3),
        placements=[P.BOOKING, P.POST_BOOKING],
    )
    add(
        "AN-BAG-32-01",
        OfferCategory.BAGGAGE,
        "Heavy bag upgrade to 32 kg",
        cash=200,
        margin=170,
        cabins=yw,
        window=(720, 3),
        placements=bag_place,
    )
    add(
        "AN-BAG-SPORT-01",
        OfferCategory.BAGGAGE,
        "Sports equipment",
        cash=400,
        margin=320,
        cabins=every,
        window=(720, 24),
        placements=[P.POST_BOOKING],
    )
    add(
        "AN-MEAL-SIG-C-01",
        OfferCategory.MEAL,
        "Pre-order a signature dish (Business)",
        cash=120,
        margin=80,
        cabins=[Cabin.C.value],
        meal=MealCode.SIGNATURE.value,
        window=(720, 24),
        placements=[P.POST_BOOKING, P.BOOKING],
    )
    add(
        "AN-MEAL-SIG-F-01",
        OfferCategory.MEAL,
        "Chef's signature menu (First)",
        cash=200,
        margin=130,
        cabins=[Cabin.F.value],
        meal=MealCode.SIGNATURE.value,
        window=(720, 24),
        placements=[P.POST_BOOKING, P.BOOKING],
    )
    add(
        "AN-MEAL-PLUS-01",
        OfferCategory.MEAL,
        "Premium meal in Economy",
        cash=90,
        margin=50,
        cabins=yw,
        meal=MealCode.SIGNATURE.value,
        window=(720, 24),
        placements=[P.POST_BOOKING, P.BOOKING],
    )
    for code in sorted(SPECIAL_MEALS, key=lambda m: m.value):
        add(
            f"AN-MEAL-{code.value}-01",
            OfferCategory.MEAL,
            f"Request a special meal ({code.value})",
            cash=0,
            margin=5,
            cabins=every,
            meal=code.value,
            window=(720, 24),
            placements=[P.POST_BOOKING, P.BOOKING],
            exempt=True,
        )
    add(
        "AN-LNG-PASS-01",
        OfferCategory.LOUNGE,
        "Lounge pass",
        cash=300,
        margin=200,
        cabins=yw,
        origins=lounge_airports,
        lounge=True,
        window=(72, 1),
        placements=[P.CHECK_IN, P.POST_BOOKING],
    )
    add(
        "AN-LNG-PASS-02",
        OfferCategory.LOUNGE,
        "Lounge pass with shower and spa",
        cash=500,
        margin=320,
        cabins=every,
        origins=lounge_airports,
        lounge=True,
        window=(72, 1),
        placements=[P.CHECK_IN],
    )
    add(
        "AN-LNG-ELITE-01",
        OfferCategory.LOUNGE,
        "Your lounge is open: complimentary access",
        cash=0,
        margin=0,
        tiers=ELITE,
        cabins=every,
        origins=lounge_airports,
        lounge=True,
        window=(24, 0.5),
        placements=[P.CHECK_IN],
        exempt=True,
    )
    add(
        "AN-WIFI-1H-01",
        OfferCategory.WIFI,
        "In-flight Wi-Fi, 1 hour",
        cash=40,
        margin=30,
        cabins=every,
        window=(168, 0.5),
        placements=[P.CHECK_IN, P.IN_TRIP],
    )
    add(
        "AN-WIFI-FULL-01",
        OfferCategory.WIFI,
        "In-flight Wi-Fi, whole flight",
        cash=100,
        margin=75,
        cabins=every,
        window=(168, 0.5),
        placements=[P.CHECK_IN, P.IN_TRIP, P.POST_BOOKING],
    )
    add(
        "AN-PRIO-01",
        OfferCategory.PRIORITY_BOARDING,
        "Priority boarding",
        cash=60,
        margin=55,
        cabins=yw,
        window=(72, 1),
        placements=[P.CHECK_IN],
    )
    add(
        "AN-FAST-01",
        OfferCategory.FAST_TRACK,
        "Fast-track security",
        cash=80,
        margin=60,
        cabins=yw,
        origins=hubs,
        window=(48, 2),
        placements=[P.CHECK_IN, P.IN_TRIP],
    )
    add(
        "AN-CHAUF-01",
        OfferCategory.CHAUFFEUR,
        "Chauffeur to the airport",
        cash=400,
        margin=150,
        cabins=premium,
        origins=hubs,
        window=(168, 12),
        placements=[P.POST_BOOKING, P.IN_TRIP],
    )
    add(
        "AN-CHAUF-02",
        OfferCategory.CHAUFFEUR,
        "Chauffeur pick-up at arrival",
        cash=450,
        margin=170,
        cabins=[*premium, Cabin.W.value],
        window=(168, 12),
        placements=[P.POST_BOOKING],
    )
    add(
        "AN-HOTEL-TRANSIT-01",
        OfferCategory.TRANSIT_HOTEL,
        "Transit hotel near the airport",
        cash=500,
        margin=120,
        cabins=every,
        origins=hubs,
        window=(336, 12),
        placements=[P.BOOKING, P.POST_BOOKING],
    )
    add(
        "AN-INS-TRIP-01",
        OfferCategory.INSURANCE,
        "Travel insurance",
        cash=50,
        margin=30,
        cabins=every,
        window=(8760, 24),
        placements=[P.BOOKING, P.POST_BOOKING],
    )
    add(
        "AN-INS-CANX-01",
        OfferCategory.INSURANCE,
        "Cancellation cover",
        cash=90,
        margin=50,
        cabins=every,
        window=(8760, 72),
        placements=[P.BOOKING],
    )

    # ---- redemption --------------------------------------------------------------------------------------
    routes = network.routes
    ref = airports.loc[REFERENCE_HUB] if REFERENCE_HUB in airports.index else airports.iloc[0]
    for dest in AWARD_DESTINATIONS:
        if dest not in airports.index:
            continue
        origins = _origins_reaching(routes, dest)
        if not origins:
            continue
        region = str(airports.at[dest, REGION])
        distance = _distance_from(ref, airports.loc[dest])
        blackout = AWARD_BLACKOUT_DOMESTIC if region == "domestic" else AWARD_BLACKOUT_INTERNATIONAL
        city = str(airports.at[dest, "city"])
        cabins = [Cabin.Y] + ([Cabin.C] if dest in AWARD_PREMIUM_DESTINATIONS else [])
        for cabin in cabins:
            miles = int(award_miles(distance, cabin))
            add(
                f"RD-AWD-{dest}-{cabin.value}",
                OfferCategory.AWARD_FLIGHT,
                f"Fly to {city} with miles ({cabin.name})",
                miles=miles,
                margin=round(0.004 * miles, 2),
                origins=origins,
                target=cabin.value,
                destination=dest,
                region=region,
                min_miles=miles,
                placements=[P.HOME, P.POST_BOOKING],
                blackout=blackout,
            )
    award_up = {Cabin.Y: 15_000, Cabin.W: 25_000, Cabin.C: 40_000}
    for src, miles in award_up.items():
        dst = next_cabin(src)
        assert dst is not None
        add(
            f"RD-UPG-{src.value}2{dst.value}-01",
            OfferCategory.AWARD_UPGRADE,
            f"Upgrade to {dst.name} cabin with miles",
            miles=miles,
            margin=round(0.005 * miles, 2),
            cabins=[src.value],
            fare_classes=_fc(src, True),
            target=dst.value,
            min_miles=miles,
            window=(336, 24),
            placements=[P.POST_BOOKING, P.CHECK_IN],
        )
    # miles plus cash: half the miles and a cash top-up
    add(
        "RD-UPG-Y2W-02",
        OfferCategory.AWARD_UPGRADE,
        "Upgrade to Premium Economy with miles plus cash",
        cash=300.0,
        miles=award_up[Cabin.Y] // 2,
        margin=round(0.5 * 300.0 + 0.005 * (award_up[Cabin.Y] // 2), 2),
        cabins=[Cabin.Y.value],
        fare_classes=_fc(Cabin.Y, True),
        target=Cabin.W.value,
        min_miles=award_up[Cabin.Y] // 2,
        window=(336, 24),
        placements=[P.POST_BOOKING, P.CHECK_IN],
    )
    # partner hotels belong to a destination city and are offered for a trip there
    for dest in HOTEL_CITIES:
        if dest not in airports.index:
            continue
        region = str(airports.at[dest, REGION])
        city = str(airports.at[dest, "city"])
        miles = hotel_miles(region)
        stays = [("01", f"Partner hotel in {city}, two nights", miles)]
        if dest in RESORT_CITIES:
            stays.append(("02", f"Resort stay in {city}, three nights", 2 * miles))
        for suffix, title, price in stays:
            add(
                f"RD-HOTEL-{dest}-{suffix}",
                OfferCategory.HOTEL,
                title,
                miles=price,
                margin=round(0.003 * price, 2),
                destination=dest,
                region=region,
                min_miles=price,
                placements=[P.BOOKING, P.POST_BOOKING],
            )
    for i, (title, miles) in enumerate(
        [("Travel adapter and amenity kit", 3_000), ("Model aircraft", 6_000), ("Carry-on suitcase", 20_000)],
        start=1,
    ):
        add(
            f"RD-MALL-{i:02d}",
            OfferCategory.MERCHANDISE,
            title,
            miles=miles,
            margin=round(0.002 * miles, 2),
            min_miles=miles,
            placements=[P.HOME],
        )
    add(
        "RD-DON-01",
        OfferCategory.MILES_DONATION,
        "Donate miles to charity",
        miles=1_000,
        margin=1.0,
        min_miles=1_000,
        placements=[P.HOME],
    )
    add(
        "RD-DON-02",
        OfferCategory.MILES_DONATION,
        "Share miles with family",
        miles=5_000,
        margin=10.0,
        min_miles=5_000,
        placements=[P.HOME],
    )
    promo_start = valid_from
    span = (horizon_end - promo_start) / 4
    for i, (title, hub) in enumerate(
        zip(
            [
                "Double miles on flights from Beijing",
                "Double miles on Chengdu flights",
                "Bonus miles on Shanghai routes",
                "Discounted award seats, autumn",
            ],
            [*hubs[:2], "PVG", None],
            strict=True,
        )
    ):
        add(
            f"RD-PROMO-{i + 1:02d}",
            OfferCategory.MILES_PROMOTION,
            title,
            margin=20.0,
            origins=[hub] if hub else [],
            placements=[P.HOME, P.POST_BOOKING],
            valid=(promo_start + i * span, promo_start + (i + 1) * span),
        )

    df = pd.DataFrame(rows)
    if df[Col.OFFER_ID].duplicated().any():  # pragma: no cover - catalogue bug
        raise AssertionError("duplicated offer ids in the catalogue")
    return df


def _origins_reaching(routes: pd.DataFrame, dest: str) -> list[str]:
    """Airports that reach ``dest`` nonstop or through one of :data:`CONNECTING_HUBS` (sorted)."""
    into = set(routes.loc[routes["destination"] == dest, "origin"])
    origins = set(into)
    for hub in CONNECTING_HUBS:
        if hub in into:
            origins |= set(routes.loc[routes["destination"] == hub, "origin"])
    origins.discard(dest)
    return sorted(origins)


def _distance_from(a: pd.Series, b: pd.Series) -> float:
    return float(haversine_km(a[LAT], a[LON], b[LAT], b[LON]))
