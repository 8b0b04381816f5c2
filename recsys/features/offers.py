"""Offer features for content models: one row per offer, each column categorical with a documented vocabulary.

================  =====================================================================================
column            values
================  =====================================================================================
``offer_id``      the offer id
``family``        :class:`~recsys.schema.OfferFamily` value (imported generic items keep their own)
``category``      :class:`~recsys.schema.OfferCategory` value (likewise)
``cabin``         ``target_cabin`` (F/C/W/Y) when set, else the single eligible cabin, else ``any``
``route_region``  the offer's ``region`` (network regions: domestic, greater_china, asia, europe, americas,
                  oceania_africa_me), else ``any``
``price_band``    cash price band, :data:`PRICE_BANDS`: ``cash_none`` (no cash price), ``cash_lt_100``,
                  ``cash_100_300``, ``cash_300_1k``, ``cash_1k_3k``, ``cash_3k_plus`` (CNY)
``miles_band``    miles price band, :data:`MILES_BANDS`: ``miles_none``, ``miles_lt_5k``, ``miles_5k_15k``,
                  ``miles_15k_40k``, ``miles_40k_80k``, ``miles_80k_plus``
================  =====================================================================================

Band edges are lower-inclusive (100 CNY is ``cash_100_300``). :data:`OFFER_VOCABULARIES` lists every column's
vocabulary so an encoder can one-hot without looking at the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys.schema import CABIN_ORDER, Col, OfferCategory, OfferFamily

ANY = "any"


class OfferFeatureCol:
    """Column names of the offer feature frame."""

    OFFER_ID = Col.OFFER_ID
    FAMILY = Col.FAMILY
    CATEGORY = Col.CATEGORY
    CABIN = Col.CABIN
    ROUTE_REGION = "route_region"
    PRICE_BAND = "price_band"
    MILES_BAND = "miles_band"


# (label, lower edge inclusive); the first band is for "no price".
PRICE_BANDS: tuple[tuple[str, float], ...] = (
    ("cash_lt_100", 0.0),
    ("cash_100_300", 100.0),
    ("cash_300_1k", 300.0),
    ("cash_1k_3k", 1_000.0),
    ("cash_3k_plus", 3_000.0),
)
PRICE_NONE = "cash_none"
MILES_BANDS: tuple[tuple[str, float], ...] = (
    ("miles_lt_5k", 0.0),
    ("miles_5k_15k", 5_000.0),
    ("miles_15k_40k", 15_000.0),
    ("miles_40k_80k", 40_000.0),
    ("miles_80k_plus", 80_000.0),
)
MILES_NONE = "miles_none"
ROUTE_REGIONS: tuple[str, ...] = (
    "domestic",
    "greater_china",
    "asia",
    "europe",
    "americas",
    "oceania_africa_me",
)

OFFER_FEATURE_COLUMNS: tuple[str, ...] = (
    OfferFeatureCol.OFFER_ID,
    OfferFeatureCol.FAMILY,
    OfferFeatureCol.CATEGORY,
    OfferFeatureCol.CABIN,
    OfferFeatureCol.ROUTE_REGION,
    OfferFeatureCol.PRICE_BAND,
    OfferFeatureCol.MILES_BAND,
)
OFFER_VOCABULARIES: dict[str, tuple[str, ...]] = {
    OfferFeatureCol.FAMILY: tuple(str(f) for f in OfferFamily),
    OfferFeatureCol.CATEGORY: tuple(str(c) for c in OfferCategory),
    OfferFeatureCol.CABIN: (*(str(c) for c in reversed(CABIN_ORDER)), ANY),
    OfferFeatureCol.ROUTE_REGION: (*ROUTE_REGIONS, ANY),
    OfferFeatureCol.PRICE_BAND: (PRICE_NONE, *(b for b, _ in PRICE_BANDS)),
    OfferFeatureCol.MILES_BAND: (MILES_NONE, *(b for b, _ in MILES_BANDS)),
}


class OfferFeatureError(ValueError):
    """Offers features cannot be built from (missing columns, negative prices)."""


def band(values: Any, bands: Sequence[tuple[str, float]], none_label: str) -> np.ndarray:
    """Band label of each value; ``none_label`` for missing or zero values. Negative values raise."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    if (v < 0).any():
        raise OfferFeatureError(f"negative price {v[v < 0][0]!r}")
    edges = np.array([e for _, e in bands])
    labels = np.array([b for b, _ in bands], dtype=object)
    idx = np.searchsorted(edges, np.nan_to_num(v), side="right") - 1
    out = labels[np.clip(idx, 0, len(labels) - 1)]
    return np.where(np.isnan(v) | (v == 0), none_label, out)


def _single_cabin(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ANY
    cabins = [str(c) for c in value] if not isinstance(value, str) else [value]
    return cabins[0] if len(cabins) == 1 else ANY


def _str_or(values: pd.Series, default: str) -> np.ndarray:
    raw = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
    return np.array([default if v is None or v == "" else str(v) for v in raw], dtype=object)


def build_offer_features(offers: pd.DataFrame) -> pd.DataFrame:
    """Offer features (:data:`OFFER_FEATURE_COLUMNS`) of an offer catalogue (the ``offers`` table).

    Requires ``offer_id``, ``family`` and ``category``; the other inputs are optional and default to
    ``any`` / ``*_none``. Raises :class:`OfferFeatureError` naming the problem on bad input.
    """
    missing = [c for c in (Col.OFFER_ID, Col.FAMILY, Col.CATEGORY) if c not in offers.columns]
    if missing:
        raise OfferFeatureError(f"offers: missing column(s) {missing}")
    ids = offers[Col.OFFER_ID].astype(str)
    if ids.duplicated().any():
        raise OfferFeatureError(f"offers: duplicated offer id {ids[ids.duplicated()].iloc[0]!r}")
    n = len(offers)
    target = _str_or(offers[Col.TARGET_CABIN], "") if Col.TARGET_CABIN in offers.columns else np.full(n, "")
    eligible = (
        np.array([_single_cabin(v) for v in offers[Col.ELIGIBLE_CABINS]], dtype=object)
        if Col.ELIGIBLE_CABINS in offers.columns
        else np.full(n, ANY, dtype=object)
    )
    cabin = np.where(target != "", target, eligible)
    has_region = Col.REGION in offers.columns
    region = _str_or(offers[Col.REGION], ANY) if has_region else np.full(n, ANY, dtype=object)
    try:
        price = (
            band(offers[Col.PRICE_CASH], PRICE_BANDS, PRICE_NONE)
            if Col.PRICE_CASH in offers.columns
            else np.full(n, PRICE_NONE, dtype=object)
        )
        miles = (
            band(offers[Col.PRICE_MILES], MILES_BANDS, MILES_NONE)
            if Col.PRICE_MILES in offers.columns
            else np.full(n, MILES_NONE, dtype=object)
        )
    except OfferFeatureError as exc:
        raise OfferFeatureError(f"offers: {exc}") from exc
    return pd.DataFrame(
        {
            OfferFeatureCol.OFFER_ID: ids.to_numpy(dtype=object),
            OfferFeatureCol.FAMILY: _str_or(offers[Col.FAMILY], "unknown"),
            OfferFeatureCol.CATEGORY: _str_or(offers[Col.CATEGORY], "unknown"),
            OfferFeatureCol.CABIN: cabin.astype(object),
            OfferFeatureCol.ROUTE_REGION: region,
            OfferFeatureCol.PRICE_BAND: price,
            OfferFeatureCol.MILES_BAND: miles,
        },
        columns=list(OFFER_FEATURE_COLUMNS),
    )
