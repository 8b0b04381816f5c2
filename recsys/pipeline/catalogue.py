"""The offer catalogue, precomputed once into plain Python/numpy structures for the per-request stages.

The pipeline answers in a few milliseconds, so no pandas runs per request: :class:`Catalogue` turns
the ``offers`` table (``schema.OFFERS`` columns) into one immutable :class:`CatalogueOffer` per offer (sets
for the list columns, ``None`` for nulls, aware datetimes) plus lookup indexes used by the candidate stage.

Conventions of the columns (those of the world generator, ``recsys.data.world.catalogue``):

* empty eligibility lists mean "no restriction" (every tier, fare class, origin, placement);
* an offer is *trip-bound* (sold for a booked flight) when its ``eligible_cabins`` is non-empty or its
  category is one of :data:`TRIP_BOUND_CATEGORIES`; its sale window is ``window_open_hours`` ..
  ``window_close_hours`` before departure (an open of 0 or null means no opening limit). Offers that are not
  trip-bound have no timing rule;
* ``eligible_origins`` of a trip-bound offer is checked against the trip's departure airport; of any other
  offer (award flights "from your airport", route promotions) against the trip origin or the member's home;
* ``min_miles`` is the balance needed; for redemptions it equals the miles price;
* ``margin`` is the net value to the airline of one acceptance, CNY (see ``recsys.pipeline.value``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.schema import OFFERS, Cabin, Col, OfferCategory, Placement

# ISO 4217 code of every cash price in the catalogue (the programme sells in yuan).
CASH_CURRENCY = "CNY"

# Categories sold for a specific booked flight: they need a trip context to be eligible.
TRIP_BOUND_CATEGORIES: frozenset[str] = frozenset(
    {
        OfferCategory.CABIN_UPGRADE,
        OfferCategory.UPGRADE_BID,
        OfferCategory.EXTRA_LEGROOM,
        OfferCategory.FLEXIBLE_FARE,
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
        OfferCategory.AWARD_UPGRADE,
    }
)
# Categories that move the member to another cabin on the booked flight (next cabin only, seats needed).
UPGRADE_CATEGORIES: frozenset[str] = frozenset(
    {OfferCategory.CABIN_UPGRADE, OfferCategory.UPGRADE_BID, OfferCategory.AWARD_UPGRADE}
)
# Award seats: subject to blackout months.
AWARD_CATEGORIES: frozenset[str] = frozenset({OfferCategory.AWARD_FLIGHT, OfferCategory.AWARD_UPGRADE})


@dataclass(frozen=True, slots=True)
class CatalogueOffer:
    """One offer with its eligibility attributes in ready-to-test form."""

    index: int
    offer_id: str
    family: str
    category: str
    title: str
    price_cash: float | None
    price_miles: int | None
    margin: float | None
    eligible_tiers: frozenset[str]
    eligible_cabins: frozenset[str]
    eligible_fare_classes: frozenset[str]
    eligible_origins: frozenset[str]
    target_cabin: str | None
    destination: str | None
    region: str | None
    meal: str | None
    min_miles: int
    window_open_hours: float | None
    window_close_hours: float | None
    requires_lounge: bool
    placements: frozenset[str]
    blackout_months: frozenset[int]
    valid_from: datetime | None
    valid_to: datetime | None
    exempt: bool
    trip_bound: bool

    @property
    def is_upgrade(self) -> bool:
        return self.category in UPGRADE_CATEGORIES


def _none(v: Any) -> Any:
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str) and v == "":
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def _strset(v: Any) -> frozenset[str]:
    v = _none(v) if not isinstance(v, list | tuple | np.ndarray) else v
    if v is None:
        return frozenset()
    if isinstance(v, str):
        return frozenset(x for x in v.split(",") if x)
    return frozenset(str(x) for x in v if _none(x) is not None)


def _intset(v: Any) -> frozenset[int]:
    return frozenset(int(x) for x in _strset(v))


def _dt(v: Any) -> datetime | None:
    v = _none(v)
    if v is None:
        return None
    ts = pd.Timestamp(v)
    if ts.tzinfo is None:
        ts = ts.tz_localize(UTC)
    return ts.to_pydatetime()


def _float(v: Any) -> float | None:
    v = _none(v)
    return None if v is None else float(v)


def _int(v: Any) -> int | None:
    v = _none(v)
    return None if v is None else int(v)


class Catalogue:
    """Immutable, precomputed view of the offers table.

    ``offers[i]`` is the :class:`CatalogueOffer` at index ``i``; ``index_of[offer_id]`` its index. Indexes for
    the candidate stage: ``by_category``, ``upgrades_by_target`` (category-independent, keyed by target
    cabin), ``by_origin`` (offers restricted to origin airports), ``by_destination``.
    """

    def __init__(self, offers: pd.DataFrame) -> None:
        missing = [c for c in OFFERS.columns if c not in offers.columns]
        if missing:
            raise ValueError(f"offers catalogue is missing columns {missing}")
        if offers[Col.OFFER_ID].duplicated().any():
            dup = offers.loc[offers[Col.OFFER_ID].duplicated(), Col.OFFER_ID].head(5).tolist()
            raise ValueError(f"offers catalogue has duplicated offer ids {dup}")
        rows: list[CatalogueOffer] = []
        for i, r in enumerate(offers.to_dict("records")):
            cabins = _strset(r[Col.ELIGIBLE_CABINS])
            category = str(r[Col.CATEGORY])
            rows.append(
                CatalogueOffer(
                    index=i,
                    offer_id=str(r[Col.OFFER_ID]),
                    family=str(r[Col.FAMILY]),
                    category=category,
                    title=str(_none(r[Col.TITLE]) or r[Col.OFFER_ID]),
                    price_cash=_positive_or_none(_float(r[Col.PRICE_CASH])),
                    price_miles=_positive_int_or_none(_int(r[Col.PRICE_MILES])),
                    margin=_float(r[Col.MARGIN]),
                    eligible_tiers=_strset(r[Col.ELIGIBLE_TIERS]),
                    eligible_cabins=cabins,
                    eligible_fare_classes=_strset(r[Col.ELIGIBLE_FARE_CLASSES]),
                    eligible_origins=_strset(r[Col.ELIGIBLE_ORIGINS]),
                    target_cabin=_none(r[Col.TARGET_CABIN]),
                    destination=_none(r[Col.DESTINATION]),
                    region=_none(r[Col.REGION]),
                    meal=_none(r[Col.MEAL]),
                    min_miles=_int(r[Col.MIN_MILES]) or 0,
                    window_open_hours=_float(r[Col.WINDOW_OPEN_HOURS]),
                    window_close_hours=_float(r[Col.WINDOW_CLOSE_HOURS]),
                    requires_lounge=bool(_none(r[Col.REQUIRES_LOUNGE]) or False),
                    placements=_strset(r[Col.PLACEMENTS]),
                    blackout_months=_intset(r[Col.BLACKOUT_MONTHS]),
                    valid_from=_dt(r[Col.VALID_FROM]),
                    valid_to=_dt(r[Col.VALID_TO]),
                    exempt=bool(_none(r[Col.EXEMPT]) or False),
                    trip_bound=bool(cabins) or category in TRIP_BOUND_CATEGORIES,
                )
            )
        self.offers: tuple[CatalogueOffer, ...] = tuple(rows)
        self.index_of: dict[str, int] = {o.offer_id: o.index for o in rows}
        self.offer_ids: np.ndarray = np.array([o.offer_id for o in rows], dtype=object)
        by_category: dict[str, list[int]] = defaultdict(list)
        upgrades_by_target: dict[str, list[int]] = defaultdict(list)
        by_origin: dict[str, list[int]] = defaultdict(list)
        by_destination: dict[str, list[int]] = defaultdict(list)
        for o in rows:
            by_category[o.category].append(o.index)
            if o.is_upgrade and o.target_cabin:
                upgrades_by_target[o.target_cabin].append(o.index)
            for origin in o.eligible_origins:
                by_origin[origin].append(o.index)
            if o.destination:
                by_destination[o.destination].append(o.index)
        self.by_category: Mapping[str, tuple[int, ...]] = {k: tuple(v) for k, v in by_category.items()}
        # Offers each placement may show (empty ``placements`` = every placement).
        self.allowed_at: Mapping[str, frozenset[int]] = {
            str(p): frozenset(o.index for o in rows if not o.placements or p in o.placements)
            for p in Placement
        }
        self.upgrades_by_target: Mapping[str, tuple[int, ...]] = {
            k: tuple(v) for k, v in upgrades_by_target.items()
        }
        self.by_origin: Mapping[str, tuple[int, ...]] = {k: tuple(v) for k, v in by_origin.items()}
        self.by_destination: Mapping[str, tuple[int, ...]] = {k: tuple(v) for k, v in by_destination.items()}
        # Trip-bound offers open to any origin (meals, seats, bags, Wi-Fi...), per booked cabin they allow.
        generic = [o for o in rows if o.trip_bound and not o.is_upgrade and not o.eligible_origins]
        self.trip_generic_by_cabin: Mapping[str, tuple[int, ...]] = {
            str(c): tuple(o.index for o in generic if not o.eligible_cabins or c in o.eligible_cabins)
            for c in Cabin
        }

    def __len__(self) -> int:
        return len(self.offers)

    def __getitem__(self, index: int) -> CatalogueOffer:
        return self.offers[index]

    def indices(self, offer_ids: Iterable[str]) -> list[int]:
        """Catalogue indices of the known ids among ``offer_ids`` (unknown ids are skipped)."""
        idx = self.index_of
        return [idx[o] for o in offer_ids if o in idx]


def _positive_or_none(v: float | None) -> float | None:
    return v if v is not None and v > 0 else None


def _positive_int_or_none(v: int | None) -> int | None:
    return v if v is not None and v > 0 else None
