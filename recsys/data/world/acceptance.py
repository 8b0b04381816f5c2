"""The hidden acceptance model of the loyalty world.

A member's response to an impression is drawn from a logistic model of

* the member's hidden traits (comfort preference, price sensitivity, trip-purpose mix, channel habits, flying
  intensity, special meal, destination affinities),
* the offer's attributes (category, price, meal code, award destination and its region, a per-offer appeal),
* the trip context (this trip's purpose, long haul, premium cabin, placement), and
* fatigue: every exposure of the same offer beyond the member's tolerance lowers acceptance and raises
  dismissal.

The generator uses it to draw responses; :mod:`recsys.data.truth` uses it (context neutral, no fatigue) to
give the evaluation its oracle. The parameters are written to ``truth/acceptance.json`` of each generated
world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.network import REGIONS
from recsys.data.world.tastes import TASTE_NAMES
from recsys.schema import SPECIAL_MEALS, Col, MealCode, OfferCategory, Placement

# Member feature vector used by the acceptance model (all roughly centred on 0).
FEATURES: tuple[str, ...] = ("comfort", "price", "business", "leisure", "family", "app", "heavy")
PURPOSES: tuple[str, ...] = ("business", "leisure", "family")
CATEGORIES: tuple[str, ...] = tuple(c.value for c in OfferCategory)
PLACEMENTS: tuple[str, ...] = tuple(p.value for p in Placement)
MEAL_CODES: tuple[str, ...] = tuple(m.value for m in MealCode)
SPECIAL_MEAL_CODES: tuple[str, ...] = tuple(m.value for m in MealCode if m in SPECIAL_MEALS)


def trait_columns(tastes: tuple[str, ...] = TASTE_NAMES) -> tuple[str, ...]:
    """Truth table columns (truth/member_traits): the hidden traits of each member, for a world's tastes."""
    return (
        Col.MEMBER_ID,
        "archetype",
        "business",
        "leisure",
        "family",
        "comfort",
        "price_sensitivity",
        "special_meal",
        "home_airport",
        *(f"affinity_{r}" for r in REGIONS),
        *(f"taste_{t}" for t in tastes),
        "favourite_1",
        "favourite_2",
        "favourite_3",
        "channel_app",
        "channel_web",
        "channel_call_centre",
        "channel_agent",
        "fatigue_tolerance",
        "flyer_band",
        "annual_flights",
        "partner_miles_per_month",
    )


TRAIT_COLUMNS: tuple[str, ...] = trait_columns()
TASTE_PREFIX = "taste_"

# Base logit of a purchase per category (before traits, context, price).
_BASE: dict[str, float] = {
    "cabin_upgrade": -3.4,
    "upgrade_bid": -3.2,
    "extra_legroom": -3.0,
    "flexible_fare": -3.4,
    "seat": -2.7,
    "baggage": -2.8,
    "meal": -2.6,
    "lounge": -2.9,
    "wifi": -3.0,
    "priority_boarding": -3.2,
    "fast_track": -3.2,
    "chauffeur": -3.5,
    "transit_hotel": -3.7,
    "insurance": -3.2,
    "award_flight": -3.7,
    "award_upgrade": -3.0,
    "hotel": -3.6,
    "merchandise": -3.9,
    "miles_donation": -4.6,
    "miles_promotion": -3.1,
}
# Trait coefficients per category (features as in FEATURES, centred).
_TRAITS: dict[str, dict[str, float]] = {
    "cabin_upgrade": {"comfort": 4.5, "price": -2.0, "business": 1.2, "heavy": 0.3},
    "upgrade_bid": {"comfort": 3.0, "price": 0.8, "business": 0.6, "heavy": 0.4},
    "extra_legroom": {"comfort": 3.0, "price": -1.2, "business": 0.8},
    "flexible_fare": {"business": 2.5, "price": -1.0, "comfort": 0.5},
    "seat": {"family": 2.0, "comfort": 1.0, "price": -1.0},
    "baggage": {"family": 2.2, "leisure": 1.0, "business": -1.5},
    "meal": {"comfort": 2.0, "price": -1.0},
    "lounge": {"comfort": 2.5, "business": 1.5, "price": -1.5},
    "wifi": {"business": 2.5, "app": 1.0, "price": -0.8},
    "priority_boarding": {"business": 1.5, "comfort": 1.2, "price": -1.0},
    "fast_track": {"business": 2.0, "comfort": 1.0, "price": -1.0},
    "chauffeur": {"comfort": 3.0, "business": 1.5, "price": -2.0},
    "transit_hotel": {"leisure": 1.0, "family": 1.0, "comfort": 0.5},
    "insurance": {"family": 2.0, "leisure": 0.8, "price": 0.5, "business": -1.0},
    "award_flight": {"leisure": 1.5, "family": 1.0, "price": 0.8},
    "award_upgrade": {"comfort": 3.0, "business": 0.5, "heavy": 0.8},
    "hotel": {"leisure": 1.8, "family": 0.8, "comfort": 0.8},
    "merchandise": {"price": 1.5, "app": 1.0},
    "miles_donation": {"comfort": 0.3},
    "miles_promotion": {"price": 1.2, "heavy": 1.5, "app": 0.8},
}
# Trip-context coefficients per category: this trip's purpose (one-hot minus member mix), long haul, premium.
_CONTEXT: dict[str, dict[str, float]] = {
    "cabin_upgrade": {"business": 0.6, "long_haul": 0.8},
    "upgrade_bid": {"long_haul": 0.8},
    "extra_legroom": {"long_haul": 0.6},
    "flexible_fare": {"business": 1.2},
    "seat": {"family": 1.0},
    "baggage": {"family": 1.0, "leisure": 0.5, "long_haul": 0.5},
    "meal": {"long_haul": 0.6, "premium": 0.5},
    "lounge": {"business": 0.5, "long_haul": 0.4},
    "wifi": {"business": 1.0, "long_haul": 1.0},
    "priority_boarding": {"family": 0.6},
    "fast_track": {"business": 0.8},
    "chauffeur": {"premium": 1.5, "long_haul": 0.5},
    "transit_hotel": {"long_haul": 1.2},
    "insurance": {"family": 0.8, "long_haul": 0.6},
    "award_upgrade": {"long_haul": 0.8},
}
# Placement fit: small bonus where an offer naturally belongs.
_PLACEMENT: dict[str, dict[str, float]] = {
    "cabin_upgrade": {"check_in": 0.4},
    "seat": {"booking": 0.3, "check_in": 0.3},
    "lounge": {"check_in": 0.4},
    "wifi": {"in_trip": 0.4},
    "baggage": {"booking": 0.3},
    "meal": {"post_booking": 0.3},
    "award_flight": {"home": 0.3},
    "hotel": {"post_booking": 0.3},
    "insurance": {"booking": 0.4},
}


def default_parameters() -> dict[str, Any]:
    """The acceptance model's parameters (per-offer appeals are added by the generator)."""
    return {
        "features": list(FEATURES),
        "base": dict(_BASE),
        "traits": {k: dict(v) for k, v in _TRAITS.items()},
        "context": {k: dict(v) for k, v in _CONTEXT.items()},
        "placement": {k: dict(v) for k, v in _PLACEMENT.items()},
        "price_coefficient": 0.9,  # times price sensitivity times log price level
        "special_meal": {"base": -1.2, "match": 2.5, "mismatch": -4.0},
        # destination preference: mostly the shared tastes (below), which travel in one place reveals for
        # others; the member's own region affinity and favourite places add a little
        "award": {"affinity": 0.15, "favourite": 0.25},
        # destination tastes (award flights and hotels): coefficient x (member's taste mix . the destination's
        # taste loadings - centre); the generator records the world's taste names and loadings
        "taste": {"coefficient": 3.0, "centre": 0.2, "names": [], "loadings": {}},
        "fatigue": {"slope": 0.8, "dismiss_base": -2.6, "dismiss_slope": 0.7, "dismiss_price": 1.0},
        "click": {"scale": 0.5, "shift": 1.0},
        "offer_appeal": {},
    }


@dataclass(frozen=True)
class MemberArrays:
    """Per-member inputs of the acceptance model (row i = member i)."""

    features: np.ndarray  # (n, len(FEATURES))
    mix: np.ndarray  # (n, 3) business/leisure/family shares
    special_meal: np.ndarray  # (n,) index into SPECIAL_MEAL_CODES or -1
    affinity: np.ndarray  # (n, len(REGIONS)) sums to 1
    favourites: np.ndarray  # (n, 3) airport codes (object) of favourite destinations
    tolerance: np.ndarray  # (n,) exposures tolerated before fatigue
    price_sensitivity: np.ndarray  # (n,)
    taste: np.ndarray  # (n, tastes) the member's taste mix (rows sum to 1; zero columns without tastes)


@dataclass(frozen=True)
class OfferArrays:
    """Per-offer inputs of the acceptance model (row j = offer j)."""

    category: np.ndarray  # (m,) index into CATEGORIES
    appeal: np.ndarray  # (m,)
    price_level: np.ndarray  # (m,) log price level (cash or miles)
    special_meal: np.ndarray  # (m,) index into SPECIAL_MEAL_CODES or -1
    region: np.ndarray  # (m,) index into REGIONS or -1
    destination: np.ndarray  # (m,) airport code (object) or None
    taste_loading: np.ndarray  # (m, tastes) the destination's loading on each taste (0 without one)


def member_arrays(traits: pd.DataFrame) -> MemberArrays:
    """Model inputs from a ``truth/member_traits`` frame."""
    comfort = traits["comfort"].to_numpy(float)
    price = traits["price_sensitivity"].to_numpy(float)
    mix = traits[["business", "leisure", "family"]].to_numpy(float)
    app = traits["channel_app"].to_numpy(float)
    heavy = np.log1p(traits["annual_flights"].to_numpy(float)) / np.log(10.0)
    features = np.column_stack(
        [
            comfort - 0.5,
            price - 0.5,
            mix[:, 0] - 1 / 3,
            mix[:, 1] - 1 / 3,
            mix[:, 2] - 1 / 3,
            app - 0.4,
            heavy - 0.3,
        ]
    )
    meal_index = {code: i for i, code in enumerate(SPECIAL_MEAL_CODES)}
    special = np.array(
        [meal_index.get(str(v), -1) for v in traits["special_meal"].to_numpy(object)], dtype=np.int64
    )
    affinity = traits[[f"affinity_{r}" for r in REGIONS]].to_numpy(float)
    favourites = traits[["favourite_1", "favourite_2", "favourite_3"]].to_numpy(object)
    taste_cols = [c for c in traits.columns if str(c).startswith(TASTE_PREFIX)]
    taste = traits[taste_cols].to_numpy(float) if taste_cols else np.zeros((len(traits), 0))
    return MemberArrays(
        features,
        mix,
        special,
        affinity,
        favourites,
        traits["fatigue_tolerance"].to_numpy(float),
        price,
        taste,
    )


def offer_arrays(offers: pd.DataFrame, params: dict[str, Any]) -> OfferArrays:
    """Model inputs from the offers table and the model parameters (per-offer appeal)."""
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    category = np.array([cat_index[str(c)] for c in offers[Col.CATEGORY]], dtype=np.int64)
    appeal = np.array([float(params["offer_appeal"].get(str(o), 0.0)) for o in offers[Col.OFFER_ID]])
    cash = offers[Col.PRICE_CASH].to_numpy(float)
    miles = offers[Col.PRICE_MILES].to_numpy(float)
    price_level = np.where(cash > 0, np.log1p(cash / 200.0), np.log1p(miles / 20_000.0))
    meal_index = {code: i for i, code in enumerate(SPECIAL_MEAL_CODES)}
    meals = offers[Col.MEAL].to_numpy(object)
    special = np.array([meal_index.get(m, -1) if isinstance(m, str) else -1 for m in meals], dtype=np.int64)
    region_index = {r: i for i, r in enumerate(REGIONS)}
    regions = offers[Col.REGION].to_numpy(object)
    region = np.array(
        [region_index.get(r, -1) if isinstance(r, str) else -1 for r in regions], dtype=np.int64
    )
    dest = np.array(
        [d if isinstance(d, str) else None for d in offers[Col.DESTINATION].to_numpy(object)], dtype=object
    )
    loadings = params.get("taste", {}).get("loadings", {})
    n_tastes = len(params.get("taste", {}).get("names", []))
    taste_loading = np.array(
        [loadings.get(d, [0.0] * n_tastes) if d is not None else [0.0] * n_tastes for d in dest], dtype=float
    ).reshape(len(dest), n_tastes)
    return OfferArrays(category, appeal, price_level, special, region, dest, taste_loading)


def _category_tables(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    base = np.array([params["base"][c] for c in CATEGORIES])
    traits = np.array([[params["traits"].get(c, {}).get(f, 0.0) for f in FEATURES] for c in CATEGORIES])
    ctx_cols = (*PURPOSES, "long_haul", "premium")
    context = np.array([[params["context"].get(c, {}).get(k, 0.0) for k in ctx_cols] for c in CATEGORIES])
    placement = np.array(
        [[params["placement"].get(c, {}).get(p, 0.0) for p in PLACEMENTS] for c in CATEGORIES]
    )
    return base, traits, context, placement


def pair_logit(
    params: dict[str, Any],
    members: MemberArrays,
    offers: OfferArrays,
    member_idx: np.ndarray,
    offer_idx: np.ndarray,
    *,
    purpose: np.ndarray | None = None,
    long_haul: np.ndarray | None = None,
    premium: np.ndarray | None = None,
    placement: np.ndarray | None = None,
    destination_average: np.ndarray | None = None,
) -> np.ndarray:
    """Purchase logit of (member, offer) pairs, without fatigue.

    Context arguments are per pair; ``None`` means the generic context: the trip purpose is the member's mix,
    short haul, economy, no placement bonus. ``purpose`` holds 0/1/2 (business/leisure/family) or -1 (no trip:
    the member's mix). ``destination_average`` (per offer, see :func:`destination_term_average`) replaces the
    member-specific destination term by its offer average: the same model without destination taste.
    """
    base, trait_coef, ctx_coef, place_coef = _category_tables(params)
    cat = offers.category[offer_idx]
    x = members.features[member_idx]
    logit = base[cat] + offers.appeal[offer_idx] + np.einsum("ij,ij->i", x, trait_coef[cat])
    logit -= (
        params["price_coefficient"]
        * (members.price_sensitivity[member_idx] * 2.0)
        * offers.price_level[offer_idx]
    )
    mix = members.mix[member_idx]
    trip = mix if purpose is None else np.where(purpose[:, None] >= 0, np.eye(3)[np.maximum(purpose, 0)], mix)
    ctx = np.column_stack(
        [
            trip - mix,
            np.zeros(len(cat)) if long_haul is None else long_haul.astype(float),
            np.zeros(len(cat)) if premium is None else premium.astype(float),
        ]
    )
    logit += np.einsum("ij,ij->i", ctx, ctx_coef[cat])
    if placement is not None:
        logit += place_coef[cat, placement]
    # special meals: only members who need that meal want it
    off_meal = offers.special_meal[offer_idx]
    is_special = off_meal >= 0
    if is_special.any():
        sm = params["special_meal"]
        match = members.special_meal[member_idx] == off_meal
        special_logit = sm["base"] + offers.appeal[offer_idx] + np.where(match, sm["match"], sm["mismatch"])
        logit = np.where(is_special, special_logit, logit)
    # award flights and hotels: the member's destination preference (or its offer average, for comparison)
    if destination_average is not None:
        logit = logit + destination_average[offer_idx]
    else:
        logit = logit + destination_term(params, members, offers, member_idx, offer_idx)
    return np.asarray(logit)


def destination_term(
    params: dict[str, Any],
    members: MemberArrays,
    offers: OfferArrays,
    member_idx: np.ndarray,
    offer_idx: np.ndarray,
) -> np.ndarray:
    """The destination-preference term of (member, offer) pairs: region affinity, favourite destinations and
    taste (award flights and hotels at a destination; 0 for every other offer)."""
    region = offers.region[offer_idx]
    has_region = region >= 0
    out = np.zeros(len(offer_idx))
    if not has_region.any():
        return out
    w = np.flatnonzero(has_region)
    mi, oi = member_idx[w], offer_idx[w]
    aw = params["award"]
    aff = members.affinity[mi, region[w]]
    term = aw["affinity"] * np.log(np.clip(aff * len(REGIONS), 0.05, None))
    dest = offers.destination[oi]
    fav = (members.favourites[mi] == dest[:, None]).any(axis=1)
    term = term + aw["favourite"] * fav
    taste = params.get("taste")
    k = min(members.taste.shape[1], offers.taste_loading.shape[1])
    if taste and k:
        s = np.einsum("ij,ij->i", members.taste[mi, :k], offers.taste_loading[oi, :k])
        term = term + taste["coefficient"] * (s - taste["centre"])
    out[w] = term
    return out


def destination_term_average(
    params: dict[str, Any], members: MemberArrays, offers: OfferArrays
) -> np.ndarray:
    """Per offer, the mean of :func:`destination_term` over ``members`` (0 for offers without one)."""
    n, m = len(members.features), len(offers.category)
    out = np.zeros(m)
    if n == 0:
        return out
    for j in np.flatnonzero(offers.region >= 0):
        out[j] = float(
            destination_term(params, members, offers, np.arange(n), np.full(n, j, dtype=np.int64)).mean()
        )
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def fatigue_excess(params: dict[str, Any], tolerance: np.ndarray, prior_exposures: np.ndarray) -> np.ndarray:
    """Exposures of the same offer beyond the member's tolerance (0 while within it)."""
    return np.maximum(0.0, prior_exposures + 1.0 - tolerance)


def response_probabilities(
    params: dict[str, Any], logit: np.ndarray, excess: np.ndarray, price_sensitivity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(purchase), P(click without purchase | no purchase), P(dismiss | no click)) per impression."""
    fat = params["fatigue"]
    eff = logit - fat["slope"] * excess
    p_buy = sigmoid(eff)
    clk = params["click"]
    p_click = clk["scale"] * sigmoid(eff + clk["shift"])
    p_dismiss = sigmoid(
        fat["dismiss_base"] + fat["dismiss_slope"] * excess + fat["dismiss_price"] * (price_sensitivity - 0.5)
    )
    return p_buy, p_click, p_dismiss
