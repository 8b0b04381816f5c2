"""The contextual acceptance ranker's features: one code path for training rows and for a request's
candidates.

A row describes one impression: (member, offer, request context, exposure history, CF score). Training builds
hundreds of thousands of rows at once (:func:`recsys.ranker.training.impression_table`), the service a few
dozen per request (:meth:`FeatureSpace.request_matrix`); both call the same block functions below on arrays,
so the two paths cannot drift apart.

Blocks (names in :attr:`FeatureSpace.names`):

- **member**: the online profile's numeric columns (``recsys.features.profiles``) and a few categoricals
  (tier, segment, channel, special meal, dominant cabin) as codes of the training vocabulary.
- **offer**: the offer's code (its identity: known offers learn their own appeal; an offer unseen in training
  gets code -1, which the learner treats as missing, so a new offer is scored from its other features),
  category, family, prices, margin, days it has been on sale.
- **cross**: the offer's special meal against the member's, its award destination against the member's top
  destination and the trip's, miles balance over its miles price, its upgrade target cabin against the
  booked one.
- **context**: placement, whether there is a trip, great-circle distance, booked cabin, hours to departure,
  departure weekday, business-centre route, departure from home, destination region.
- **exposure** (fatigue): impressions of this offer and of its family in the last 1/7/30/90 days, its
  dismissals, clicks and purchases in the last 90 days, days since it was last shown, and the member's
  impressions of anything in the last day and week — always counted strictly *before* the request time.
  The history reaches back :data:`EXPOSURE_HORIZON_DAYS`, the same in training and online (see
  :func:`member_exposures` for where the service gets it).
- **travel** (offers with a destination: award flights, hotels): the member's flights to the offer's
  destination, the share of their flights to its region, and their partner activities (hotel nights, car
  rentals) there — the observable side of their destination tastes, from the travel history
  (:func:`member_travel`) published with the profile.
- **booking** (a space built with ``booking=True``): what the booking (PNR) says of the trip's purpose: days
  from booking to departure, passengers and children on it, nights until the return flight and whether the
  stay spans a Saturday night (from the departure's UTC weekday). Missing (no trip, imported data without
  them, an app that does not send them) is NaN, which the learner treats as missing.
- **cf**: the collaborative model's scores of (member, offer) and of (member, the offer's destination as a
  flight and as a hotel token), and whether the member had a learned vector. A feature space built with
  ``cf=False`` has no CF block (the "without CF" ranker of the policy table).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd

from recsys.ranker.taste import DestinationFactors
from recsys.schema import CABIN_ORDER, Col, EventType, OfferFamily, Placement

EXPOSURE_HORIZON_DAYS = 90
EXPOSURES_KEY = "exposures"  # the profile key holding the member's recent exposure history online
_DAY_S = 86_400
_EPOCH = np.datetime64("2000-01-01T00:00:00", "s")

MEMBER_NUMERIC: tuple[str, ...] = (
    "miles_balance",
    "qualifying_km_12m",
    "qualifying_segments_12m",
    "lrfmc_l",
    "lrfmc_r",
    "lrfmc_f",
    "lrfmc_m",
    "lrfmc_c",
    "value_score",
    "cabin_share_f",
    "cabin_share_c",
    "cabin_share_w",
    "cabin_share_y",
    "weekday_share",
    "short_stay_share",
    "business_hub_share",
    "lounge_share",
    "bags_per_flight",
    "flights_total",
    "days_since_last_flight",
    "top_destination_flights",
)
MEMBER_CATEGORICAL: tuple[str, ...] = ("tier", "segment", "channel", "special_meal", "dominant_cabin")
OFFER_FEATURES: tuple[str, ...] = (
    "offer_code",
    "offer_category",
    "offer_family",
    "log_price_cash",
    "log_price_miles",
    "log_margin",
    "offer_days_on_sale",
)
CROSS_FEATURES: tuple[str, ...] = (
    "meal_match",
    "dest_is_top_destination",
    "dest_is_trip_destination",
    "miles_cover",
    "upgrade_gap",
    "dest_region_is_trip_region",
)
CONTEXT_FEATURES: tuple[str, ...] = (
    "placement",
    "has_trip",
    "trip_km",
    "trip_cabin",
    "hours_to_departure",
    "departure_weekday",
    "business_route",
    "from_home",
    "trip_region",
)
# (name, scope, event type, window days)
_EXPOSURE_SPECS: tuple[tuple[str, str, int, int], ...] = (
    ("offer_impressions_1d", "offer", 0, 1),
    ("offer_impressions_7d", "offer", 0, 7),
    ("offer_impressions_30d", "offer", 0, 30),
    ("offer_impressions_90d", "offer", 0, EXPOSURE_HORIZON_DAYS),
    ("family_impressions_7d", "family", 0, 7),
    ("family_impressions_30d", "family", 0, 30),
    ("offer_dismissals_90d", "offer", 1, EXPOSURE_HORIZON_DAYS),
    ("family_dismissals_30d", "family", 1, 30),
    ("offer_clicks_90d", "offer", 2, EXPOSURE_HORIZON_DAYS),
    ("offer_purchases_90d", "offer", 3, EXPOSURE_HORIZON_DAYS),
    ("member_impressions_1d", "member", 0, 1),
    ("member_impressions_7d", "member", 0, 7),
)
EXPOSURE_FEATURES: tuple[str, ...] = (*(s[0] for s in _EXPOSURE_SPECS), "days_since_offer_shown")
TRAVEL_FEATURES: tuple[str, ...] = ("dest_flights", "dest_region_share", "dest_partner_activities")
TRAVEL_KEY = "travel"  # the profile key holding the member's travel history (flights and partner places)
# Dot products of the member's CF vector with item vectors: the offer's own, and (offers with a destination:
# award flights, hotels) the destination's flight token, its lift over the member's mean destination score,
# and the destination's hotel token. Flights are far denser than redemptions, so the destination tokens carry
# the member's travel tastes to offers they never bought ("flies to X, redeems at Y").
CF_SCORES: tuple[str, ...] = ("cf_score", "cf_dest_score", "cf_dest_lift", "cf_hotel_score")
# The destination-taste factors' score of (member, the offer's destination) and its lift over the mean
# destination (recsys.ranker.taste): the member's vector folded in from their travel history.
TASTE_SCORES: tuple[str, ...] = ("cf_taste_score", "cf_taste_lift")
CF_FEATURES: tuple[str, ...] = (*CF_SCORES, *TASTE_SCORES, "cf_known")
BOOKING_INPUTS: tuple[str, ...] = (
    Col.BOOKING_LEAD_DAYS,
    Col.PARTY_SIZE,
    Col.CHILDREN,
    Col.STAY_NIGHTS,
)
BOOKING_FEATURES: tuple[str, ...] = (*BOOKING_INPUTS, "saturday_night")
EVENT_CODES: dict[str, int] = {
    EventType.IMPRESSION.value: 0,
    EventType.DISMISS.value: 1,
    EventType.CLICK.value: 2,
    EventType.PURCHASE.value: 3,
}
PLACEMENTS: tuple[str, ...] = tuple(p.value for p in Placement)
FAMILIES: tuple[str, ...] = tuple(f.value for f in OfferFamily)
CABIN_LEVEL: dict[str, int] = {str(c): i for i, c in enumerate(CABIN_ORDER)}
_PLACEMENT_POS: dict[str, int] = {p: i for i, p in enumerate(PLACEMENTS)}
_FAMILY_POS: dict[str, int] = {f: i for i, f in enumerate(FAMILIES)}
_NO_AIRPORT = (math.nan, math.nan, -1, False)

CATEGORICAL_FEATURES: tuple[str, ...] = (
    *MEMBER_CATEGORICAL,
    "offer_code",
    "offer_category",
    "offer_family",
    "placement",
    "trip_region",
)


_EPOCH_NAIVE = datetime(2000, 1, 1)
_EPOCH_AWARE = datetime(2000, 1, 1, tzinfo=UTC)


def to_seconds(times: Any) -> np.ndarray:
    """Seconds since 2000-01-01 UTC (float64; NaN for missing) of datetimes (aware → UTC; naive = UTC)."""
    if isinstance(times, datetime):  # the per-request path: plain datetime arithmetic
        epoch = _EPOCH_NAIVE if times.tzinfo is None or times.utcoffset() is None else _EPOCH_AWARE
        return np.asarray([(times - epoch).total_seconds()], dtype=np.float64)
    s = pd.Series(times)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    values = pd.to_datetime(s).to_numpy("datetime64[s]")
    out = (values - _EPOCH) / np.timedelta64(1, "s")
    return np.where(np.isnat(values), np.nan, out).astype(np.float64)


def _floats(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Numbers as float64 (None → NaN); anything else goes through pandas' coercion (bad → NaN)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)


def _codes(values: Sequence[Any] | np.ndarray, vocab: Mapping[str, int]) -> np.ndarray:
    """Codes of values in a vocabulary; unknown or missing → -1 (the learner's "missing")."""
    return np.fromiter(
        (vocab.get(v, -1) if isinstance(v, str) else -1 for v in values), dtype=np.float64, count=len(values)
    )


@dataclass(frozen=True)
class ExposureHistory:
    """Members' past events for the exposure block: per event its member code, offer code (catalogue index of
    the feature space; -1 unknown), family code, event code (:data:`EVENT_CODES`) and time (seconds).

    Training gives every member's events at once; a request gives one member's (member code 0)."""

    member: np.ndarray
    offer: np.ndarray
    family: np.ndarray
    event: np.ndarray
    time: np.ndarray

    @classmethod
    def empty(cls) -> ExposureHistory:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, np.zeros(0, dtype=np.float64))


# (key, time) pairs compare as one int64: key × 2**31 + whole seconds since 2000 (until 2068); keys stay below
# 2**32 (members × offers × event kinds: 1 M × 100 × 4 ≈ 2**29).
_SPAN = np.int64(2**31)
_N_EVENTS = len(EVENT_CODES)


def _sorted_keys(key: np.ndarray, time: np.ndarray) -> np.ndarray:
    """History (key, time) pairs as sorted int64 keys (one sort per scope, shared by every window)."""
    return np.sort(key.astype(np.int64) * _SPAN + np.floor(time).astype(np.int64))


def _count_before(comp: np.ndarray, key: np.ndarray, time: np.ndarray, days: int) -> np.ndarray:
    """Per query, sorted history pairs with the same key and a time in ``[time - days, time)``."""
    hi = key.astype(np.int64) * _SPAN + time
    lo = hi - np.int64(days * 86_400)
    return (np.searchsorted(comp, hi, side="left") - np.searchsorted(comp, lo, side="left")).astype(
        np.float64
    )


def exposure_block(
    hist: ExposureHistory,
    member: np.ndarray,
    offer: np.ndarray,
    family: np.ndarray,
    time: np.ndarray,
    n_offers: int,
) -> np.ndarray:
    """The exposure features (:data:`EXPOSURE_FEATURES`) of queries (member code, offer code, family code,
    time in seconds), counted from ``hist`` strictly before each query's time and within the horizon.

    Vectorised for any number of members: each scope's history is one sorted array of (member, target,
    event, time) keys, and every window is two binary searches per query."""
    n_fam = len(FAMILIES) + 1
    ev = np.where((hist.event >= 0) & (hist.event < _N_EVENTS), hist.event, 0)
    valid = (hist.event >= 0) & (hist.event < _N_EVENTS)
    h_member, h_offer, h_family, h_time = (
        hist.member[valid],
        hist.offer[valid],
        hist.family[valid],
        hist.time[valid],
    )
    ev = ev[valid]
    scopes = {
        "offer": (h_member * (n_offers + 1) + (h_offer + 1), member * (n_offers + 1) + (offer + 1)),
        "family": (h_member * n_fam + (h_family + 1), member * n_fam + (family + 1)),
        "member": (h_member, member),
    }
    sorted_keys = {name: _sorted_keys(hk * _N_EVENTS + ev, h_time) for name, (hk, _) in scopes.items()}
    out = np.zeros((len(member), len(EXPOSURE_FEATURES)), dtype=np.float64)
    t = np.floor(time).astype(np.int64)
    for j, (_, scope, event, days) in enumerate(_EXPOSURE_SPECS):
        out[:, j] = _count_before(sorted_keys[scope], scopes[scope][1] * _N_EVENTS + event, t, days)
    # Days since the offer was last shown: the latest impression key before the query's.
    comp = sorted_keys["offer"]
    base = scopes["offer"][1].astype(np.int64) * _N_EVENTS * _SPAN  # this (member, offer)'s impressions
    pos = np.searchsorted(comp, base + t, side="left") - 1
    last = comp[np.maximum(pos, 0)] if len(comp) else np.zeros(len(t), dtype=np.int64)
    same = (pos >= 0) & (last >= base)
    days_since = np.where(same, (base + t - last) / _DAY_S, np.inf)
    out[:, -1] = np.minimum(days_since, EXPOSURE_HORIZON_DAYS)
    # Offers unknown to the feature space have no per-offer history.
    out[offer < 0, : len(_EXPOSURE_SPECS)] *= np.asarray(
        [0.0 if s[1] == "offer" else 1.0 for s in _EXPOSURE_SPECS]
    )
    return out


_WINDOWS = np.asarray(sorted({s[3] for s in _EXPOSURE_SPECS}), dtype=np.int64)


# per scope: its exposure columns and their (event kind, window) slots in single_member_exposure's products
_SCOPE_COLUMNS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    scope: (
        np.asarray([j for j, spec in enumerate(_EXPOSURE_SPECS) if spec[1] == scope], dtype=np.int64),
        np.asarray(
            [
                spec[2] * len(_WINDOWS) + int(np.searchsorted(_WINDOWS, spec[3]))
                for spec in _EXPOSURE_SPECS
                if spec[1] == scope
            ],
            dtype=np.int64,
        ),
    )
    for scope in ("offer", "family", "member")
}
_OFFER_SCOPE = np.asarray([0.0 if s[1] == "offer" else 1.0 for s in _EXPOSURE_SPECS])


# Below this many events a member's history is counted in plain Python: a request's member has a few (half
# none), and there the matrix products' fixed cost is most of the request's feature rows.
_SMALL_HISTORY = 32
_WINDOW_S: tuple[int, ...] = tuple(int(w) * 86_400 for w in _WINDOWS)
_SCOPE_SLOTS: dict[str, tuple[list[int], list[int]]] = {
    scope: (cols.tolist(), slots.tolist()) for scope, (cols, slots) in _SCOPE_COLUMNS.items()
}


def single_member_exposure(
    hist: ExposureHistory, offer: np.ndarray, family: np.ndarray, time: float
) -> np.ndarray:
    """:func:`exposure_block` for one member's history and queries at one time (a request's candidates):
    loops over a short history, a few small matrix products over a long one, instead of sorts; the same
    counts (tests compare each with the batch path and a brute-force count)."""
    if len(hist.event) <= _SMALL_HISTORY:
        events = zip(
            hist.offer.tolist(), hist.family.tolist(), hist.event.tolist(), hist.time.tolist(), strict=True
        )
        return _exposure_loops(events, offer, family, time)
    return _exposure_products(hist, offer, family, time)


def _exposure_loops(
    events: Iterable[tuple[int, int, int, float | None]], offer: np.ndarray, family: np.ndarray, time: float
) -> np.ndarray:
    """:func:`single_member_exposure` by one pass over the history's (offer code, family code, event code,
    time) and one over the candidates."""
    out = np.zeros((len(offer), len(EXPOSURE_FEATURES)), dtype=np.float64)
    out[:, -1] = EXPOSURE_HORIZON_DAYS
    t = math.floor(time)
    n_slots = _N_EVENTS * len(_WINDOW_S)
    per_offer: dict[int, list[float]] = {}
    per_family: dict[int, list[float]] = {}
    member = [0.0] * n_slots
    last: dict[int, float] = {}  # per offer code, seconds since its latest impression
    for o, f, e, when in events:
        # another kind of event, or no time: counted nowhere
        if not 0 <= e < _N_EVENTS or when is None or not math.isfinite(when):
            continue
        dt = t - math.floor(when)
        if dt <= 0:  # not strictly before the request
            continue
        by_offer = per_offer.setdefault(o, [0.0] * n_slots)
        by_family = per_family.setdefault(f, [0.0] * n_slots)
        for w, limit in enumerate(_WINDOW_S):
            if dt <= limit:
                slot = int(e) * len(_WINDOW_S) + w
                by_offer[slot] += 1.0
                by_family[slot] += 1.0
                member[slot] += 1.0
        if e == 0 and dt < last.get(o, math.inf):
            last[o] = float(dt)
    if not per_offer:
        return out
    # per scope, a small table of the keys seen (and a zero row for the rest), read by every candidate
    zeros = [0.0] * n_slots
    known = [o for o in per_offer if o >= 0]  # offers unknown to the feature space have no per-offer history
    offer_row = {o: i for i, o in enumerate(known)}
    family_row = {f: i for i, f in enumerate(per_family)}
    offer_table = np.asarray([*(per_offer[o] for o in known), zeros])
    family_table = np.asarray([*per_family.values(), zeros])
    offers = offer.tolist()
    cols, slots = _SCOPE_SLOTS["offer"]
    out[:, cols] = offer_table[[offer_row.get(o, -1) for o in offers]][:, slots]
    cols, slots = _SCOPE_SLOTS["family"]
    out[:, cols] = family_table[[family_row.get(f, -1) for f in family.tolist()]][:, slots]
    cols, slots = _SCOPE_SLOTS["member"]
    out[:, cols] = [member[s] for s in slots]
    if last:
        since = np.asarray([last.get(o, math.inf) for o in offers])
        out[:, -1] = np.minimum(since / _DAY_S, EXPOSURE_HORIZON_DAYS)
    return out


def _exposure_products(
    hist: ExposureHistory, offer: np.ndarray, family: np.ndarray, time: float
) -> np.ndarray:
    """:func:`single_member_exposure` by a few small matrix products over the history's events."""
    n = len(offer)
    out = np.zeros((n, len(EXPOSURE_FEATURES)), dtype=np.float64)
    t = np.floor(time)
    valid = (hist.event >= 0) & (hist.event < _N_EVENTS)
    dt = t - np.floor(hist.time[valid])  # > 0: strictly before the request
    if len(dt) == 0:
        out[:, -1] = EXPOSURE_HORIZON_DAYS
        return out
    h_event, h_offer, h_family = hist.event[valid], hist.offer[valid], hist.family[valid]
    in_window = (dt > 0)[None, :] & (dt[None, :] <= _WINDOWS[:, None] * 86_400)  # windows × events
    is_event = h_event[None, :] == np.arange(_N_EVENTS)[:, None]  # event kinds × events
    weights = (is_event[:, None, :] & in_window[None, :, :]).reshape(-1, len(dt)).astype(np.float64)
    same_offer = offer[:, None] == h_offer[None, :]
    per_offer = same_offer.astype(np.float64) @ weights.T  # candidates × (event kind, window)
    per_family = (family[:, None] == h_family[None, :]).astype(np.float64) @ weights.T
    per_member = weights.sum(axis=1)
    cols, slots = _SCOPE_COLUMNS["offer"]
    out[:, cols] = per_offer[:, slots]
    cols, slots = _SCOPE_COLUMNS["family"]
    out[:, cols] = per_family[:, slots]
    cols, slots = _SCOPE_COLUMNS["member"]
    out[:, cols] = per_member[slots]
    shown = same_offer & (h_event == 0)[None, :] & (dt > 0)[None, :]
    last = np.where(shown, dt[None, :], np.inf).min(axis=1)
    out[:, -1] = np.minimum(last / _DAY_S, EXPOSURE_HORIZON_DAYS)
    out[offer < 0, : len(_EXPOSURE_SPECS)] *= _OFFER_SCOPE
    return out


def travel_block(
    travel: Sequence[Mapping[str, Any] | None],
    member: np.ndarray,
    offers: OfferArrays,
    rows: np.ndarray,
    airports: Mapping[str, tuple[float, float, int, bool]],
) -> np.ndarray:
    """The :data:`TRAVEL_FEATURES` of pairs: ``travel`` holds members' histories (:func:`member_travel`; None
    for none), ``member`` each pair's position in it (-1: none), ``rows`` its offer's row in ``offers``. NaN
    for offers without a destination; the region share is NaN for a member without flights."""
    n = len(rows)
    out = np.full((n, len(TRAVEL_FEATURES)), np.nan)
    has = offers.has_destination[rows]
    idx = np.flatnonzero(has)
    if len(idx) == 0:
        return out
    m = np.asarray(member, dtype=np.int64)[idx]
    dest = offers.destination[rows[idx]]
    region = offers.region[rows[idx]].astype(np.int64)
    # The histories of the members asked about, flattened: (member, place code, count) per part.
    codes = {c: i for i, c in enumerate(airports)}
    n_codes = len(codes) + 1  # + unknown places
    n_regions = 1 + max((a[2] for a in airports.values()), default=0) + 1  # + unknown region
    region_of = np.asarray([a[2] for a in airports.values()] + [-1], dtype=np.int64)
    uniq = np.unique(m[m >= 0])
    parts: dict[str, tuple[list[int], list[int], list[float]]] = {
        k: ([], [], []) for k in ("flights", "places")
    }
    for u in uniq.tolist():
        t = travel[u] or {}
        for part, (members, place_codes, counts) in parts.items():
            for place, k in (t.get(part) or {}).items():
                members.append(u)
                place_codes.append(codes.get(place, n_codes - 1))
                counts.append(float(k))

    def arrays(part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pm, pc, pk = parts[part]
        return np.asarray(pm, np.int64), np.asarray(pc, np.int64), np.asarray(pk, np.float64)

    dcode = np.fromiter((codes.get(d, n_codes - 1) for d in dest), np.int64, len(dest))
    query = np.maximum(m, 0) * n_codes + dcode
    fm, fc, fk = arrays("flights")
    flights = _count_at(fm * n_codes + fc, fk, query)
    pm, pc, pk = arrays("places")
    places = _count_at(pm * n_codes + pc, pk, query)
    # flights per (member, region) and in all
    per_region = np.zeros((len(travel) + 1, n_regions))
    np.add.at(per_region, (fm, region_of[fc]), fk)
    total = per_region.sum(axis=1)
    mm = np.where(m >= 0, m, len(travel))
    reg = np.where(region >= 0, region, n_regions - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total[mm] > 0, per_region[mm, reg] / total[mm], np.nan)
    known = m >= 0
    out[idx, 0] = np.where(known, flights, 0.0)
    out[idx, 1] = np.where(known, share, np.nan)
    out[idx, 2] = np.where(known, places, 0.0)
    return out


def _count_at(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The count of each query key among (key, count) pairs with unique keys; 0 where absent."""
    if len(keys) == 0:
        return np.zeros(len(query))
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[pos] == query, counts[pos], 0.0)


class ItemIds(Protocol):
    """What :class:`CFItems` needs of a CF model's item id map (:class:`recsys.ids.IdMap`)."""

    @property
    def external_ids(self) -> np.ndarray: ...

    def to_index(self, ids: Sequence[object] | np.ndarray, missing: int | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class CFItems:
    """Per catalogue offer, the rows of the CF model's item vectors that :data:`CF_SCORES` read (-1: none),
    and the mean destination-token vector (the lift's reference)."""

    offer: np.ndarray
    dest: np.ndarray
    hotel: np.ndarray
    dest_mean: np.ndarray
    # per offer, its CF_SCORES item vectors stacked (offers × 4 × d; NaN rows where an item is unknown):
    # a request's scores are one product with its member's vector
    stacked: np.ndarray

    @classmethod
    def build(
        cls,
        item_ids: ItemIds,
        items: np.ndarray,
        offer_ids: Sequence[str],
        destinations: Sequence[object] | np.ndarray,
    ) -> CFItems:
        """From the CF model's item ids and vectors, the offers' ids and destinations (None: none)."""
        from recsys.interactions import DEST_PREFIX, HOTEL_PREFIX, OFFER_PREFIX

        dests = np.asarray([d if isinstance(d, str) else "" for d in destinations], dtype=object)
        has = dests != ""

        def rows(prefix: str, keys: np.ndarray) -> np.ndarray:
            return item_ids.to_index(np.asarray([prefix + str(k) for k in keys], dtype=object), missing=-1)

        offer = rows(OFFER_PREFIX, np.asarray(offer_ids, dtype=object))
        dest = np.where(has, rows(DEST_PREFIX, dests), -1)
        hotel = np.where(has, rows(HOTEL_PREFIX, dests), -1)
        all_dest = np.flatnonzero([str(i).startswith(DEST_PREFIX) for i in item_ids.external_ids])
        dest_mean = (
            items[all_dest].astype(np.float64).mean(axis=0) if len(all_dest) else np.zeros(items.shape[1])
        )
        stacked = np.full((len(offer), len(CF_SCORES), items.shape[1]), np.nan)
        for j, (r, centre) in enumerate(((offer, 0.0), (dest, 0.0), (dest, dest_mean), (hotel, 0.0))):
            ok = r >= 0
            stacked[ok, j] = items[r[ok]].astype(np.float64) - centre
        return cls(offer.astype(np.int64), dest.astype(np.int64), hotel.astype(np.int64), dest_mean, stacked)


def cf_scores(users: np.ndarray, items: np.ndarray, cf_items: CFItems, rows: np.ndarray) -> np.ndarray:
    """The :data:`CF_SCORES` columns of pairs: ``users`` holds each pair's member vector (n × d, or one
    d-vector for every pair), ``rows`` each pair's offer row in ``cf_items``; NaN where an item is unknown."""
    n = len(rows)
    if users.ndim == 1:  # one member: one product (NaN item rows give NaN scores)
        return np.asarray(cf_items.stacked[rows] @ users.astype(np.float64))
    out = np.full((n, len(CF_SCORES)), np.nan)
    for j, (item_rows, centre) in enumerate(
        (
            (cf_items.offer[rows], None),
            (cf_items.dest[rows], None),
            (cf_items.dest[rows], cf_items.dest_mean),
            (cf_items.hotel[rows], None),
        )
    ):
        ok = item_rows >= 0
        if not ok.any():
            continue
        v = items[item_rows[ok]].astype(np.float64)
        if centre is not None:
            v = v - centre
        out[ok, j] = np.einsum("ij,ij->i", v, users[ok])
    return out


@dataclass(frozen=True)
class ScoringContext:
    """What the ranker needs from a request beyond the member and the offers: placement, time, the trip (all
    optional) and the member's profile as the online member store holds it (exposure history included,
    under :data:`EXPOSURES_KEY`; see :func:`member_exposures`)."""

    placement: str
    now: datetime
    origin: str | None = None
    destination: str | None = None
    departure_time: datetime | None = None
    cabin: str | None = None
    profile: Mapping[str, Any] | None = None
    booking_lead_days: int | None = None
    party_size: int | None = None
    children: int | None = None
    stay_nights: int | None = None


@dataclass
class FeatureSpace:
    """Vocabularies and per-offer arrays, fixed at training and saved with the ranker: the same columns, in
    the same order, for training rows and for requests.

    ``offer_ids``: the training catalogue (offer code = position); ``vocab``: member categorical values seen
    in training; ``airports``: IATA → (lat, lon, region code, business centre); ``regions``: region names;
    ``cf``: whether rows carry the CF block.
    """

    offer_ids: tuple[str, ...]
    vocab: dict[str, tuple[str, ...]]
    airports: dict[str, tuple[float, float, int, bool]]
    regions: tuple[str, ...]
    categories: tuple[str, ...]
    cf: bool = True  # with the CF block (CF_FEATURES)
    taste: DestinationFactors | None = None  # the destination-taste factors of the CF block
    booking: bool = False  # with the booking block (BOOKING_FEATURES); spaces saved before it have none
    _offer_pos: dict[str, int] = field(init=False, repr=False)
    _vocab_pos: dict[str, dict[str, int]] = field(init=False, repr=False)
    _offers: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)
    _width: int = field(init=False, repr=False)  # len(names), read per request
    _no_meal_code: float = field(init=False, repr=False)  # the special-meal code of "none" (-2: no such code)

    def __post_init__(self) -> None:
        self._offer_pos = {o: i for i, o in enumerate(self.offer_ids)}
        self._vocab_pos = {k: {v: i for i, v in enumerate(vs)} for k, vs in self.vocab.items()}
        self._width = len(self.names)
        meals = self.vocab.get("special_meal", ())
        self._no_meal_code = float(meals.index("none")) if "none" in meals else -2.0

    @property
    def names(self) -> tuple[str, ...]:
        return (
            *MEMBER_NUMERIC,
            *MEMBER_CATEGORICAL,
            *OFFER_FEATURES,
            *CROSS_FEATURES,
            *CONTEXT_FEATURES,
            *EXPOSURE_FEATURES,
            *TRAVEL_FEATURES,
            *(CF_FEATURES if self.cf else ()),
            *(BOOKING_FEATURES if self.booking else ()),
        )

    @property
    def n_offers(self) -> int:
        return len(self.offer_ids)

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        offers: pd.DataFrame,
        profiles: pd.DataFrame,
        network: Any,
        *,
        cf: bool = True,
        taste: DestinationFactors | None = None,
        booking: bool = False,
    ) -> FeatureSpace:
        """From the training catalogue, the training profiles (categorical vocabularies) and the network;
        ``cf=False`` leaves the CF block out; ``taste``: the destination-taste factors it uses."""
        from recsys.data.network import CITY, IATA, LAT, LON, REGION, REGIONS  # noqa: F401
        from recsys.features.profiles import BUSINESS_CENTRES

        vocab = {
            c: tuple(sorted({str(v) for v in profiles[c].dropna().unique()})) if c in profiles else ()
            for c in MEMBER_CATEGORICAL
        }
        a = network.airports
        region_pos = {r: i for i, r in enumerate(REGIONS)}
        airports = {
            str(code): (float(lat), float(lon), region_pos.get(str(reg), -1), str(code) in BUSINESS_CENTRES)
            for code, lat, lon, reg in zip(a[IATA], a[LAT], a[LON], a[REGION], strict=True)
        }
        categories = tuple(sorted({str(c) for c in offers[Col.CATEGORY]}))
        return cls(
            tuple(str(o) for o in offers[Col.OFFER_ID]),
            vocab,
            airports,
            tuple(REGIONS),
            categories,
            cf,
            taste if cf else None,
            booking,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "offer_ids": list(self.offer_ids),
            "vocab": {k: list(v) for k, v in self.vocab.items()},
            "airports": {k: list(v) for k, v in self.airports.items()},
            "regions": list(self.regions),
            "categories": list(self.categories),
            "cf": self.cf,
            "taste": self.taste.to_json() if self.taste is not None else None,
            "booking": self.booking,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FeatureSpace:
        return cls(
            tuple(obj["offer_ids"]),
            {k: tuple(v) for k, v in obj["vocab"].items()},
            {k: (float(v[0]), float(v[1]), int(v[2]), bool(v[3])) for k, v in obj["airports"].items()},
            tuple(obj["regions"]),
            tuple(obj["categories"]),
            bool(obj.get("cf", True)),
            DestinationFactors.from_json(obj["taste"]) if obj.get("taste") else None,
            bool(obj.get("booking", False)),
        )

    def taste_scores(
        self,
        travel: Sequence[Mapping[str, Any] | None],
        member: np.ndarray,
        destinations: Sequence[object] | np.ndarray,
    ) -> np.ndarray:
        """The :data:`TASTE_SCORES` of pairs (NaN without taste factors or a known destination)."""
        if self.taste is None:
            return np.full((len(member), len(TASTE_SCORES)), np.nan)
        return self.taste.scores(travel, member, destinations)

    def bind_offers(self, offers: pd.DataFrame) -> OfferArrays:
        """Per-offer arrays of a catalogue (the serving one may differ from the training one): rows follow
        ``offers``; each offer's code is its position in the training catalogue (-1 when new)."""
        return OfferArrays.build(self, offers)

    def offer_code(self, offer_ids: Sequence[str]) -> np.ndarray:
        pos = self._offer_pos
        return np.fromiter((pos.get(o, -1) for o in offer_ids), dtype=np.int64, count=len(offer_ids))

    # ------------------------------------------------------------------------------------------- blocks
    def member_block(self, column: Any, n: int) -> np.ndarray:
        """Member features of ``n`` rows; ``column(name)`` returns that profile column's values (length n),
        or None when the profiles do not have it (→ missing)."""
        out = np.full((n, len(MEMBER_NUMERIC) + len(MEMBER_CATEGORICAL)), np.nan)
        for j, name in enumerate(MEMBER_NUMERIC):
            values = column(name)
            if values is not None:
                out[:, j] = _floats(values)
        for j, name in enumerate(MEMBER_CATEGORICAL, start=len(MEMBER_NUMERIC)):
            values = column(name)
            if values is not None:
                out[:, j] = _codes(values, self._vocab_pos.get(name, {}))
        return out

    def context_block(
        self,
        placement: np.ndarray,
        origin: np.ndarray,
        destination: np.ndarray,
        departure_s: np.ndarray,
        cabin: np.ndarray,
        now_s: np.ndarray,
        home: np.ndarray,
    ) -> np.ndarray:
        """Context features of rows (object arrays of codes; None where there is no trip)."""
        n = len(placement)
        ap = self.airports
        nan4 = (np.nan, np.nan, -1, False)
        o = [ap.get(x, nan4) if isinstance(x, str) else nan4 for x in origin]
        d = [ap.get(x, nan4) if isinstance(x, str) else nan4 for x in destination]
        lat1 = np.fromiter((x[0] for x in o), np.float64, n)
        lon1 = np.fromiter((x[1] for x in o), np.float64, n)
        lat2 = np.fromiter((x[0] for x in d), np.float64, n)
        lon2 = np.fromiter((x[1] for x in d), np.float64, n)
        from recsys.data.network import haversine_km

        km = haversine_km(lat1, lon1, lat2, lon2)
        has_trip = np.fromiter((isinstance(x, str) for x in destination), np.float64, n)
        hours = (departure_s - now_s) / 3600.0
        weekday = np.where(
            np.isnan(departure_s), np.nan, np.floor(np.nan_to_num(departure_s) / _DAY_S + 5) % 7
        )  # 2000-01-01 was a Saturday: 0 = Monday
        business = np.fromiter((a[3] and b[3] for a, b in zip(o, d, strict=True)), np.float64, n)
        from_home = np.fromiter(
            (isinstance(a, str) and a == h for a, h in zip(origin, home, strict=True)), np.float64, n
        )
        region = np.fromiter((x[2] for x in d), np.float64, n)
        return np.column_stack(
            [
                _codes(placement, {p: i for i, p in enumerate(PLACEMENTS)}),
                has_trip,
                km,
                _codes(cabin, CABIN_LEVEL),
                hours,
                weekday,
                business,
                from_home,
                region,
            ]
        )

    def matrix(
        self,
        member: np.ndarray,
        offers: OfferArrays,
        rows: np.ndarray,
        context: np.ndarray,
        now_s: np.ndarray,
        trip_destination: np.ndarray,
        top_destination: np.ndarray,
        exposure: np.ndarray,
        travel: np.ndarray,
        cf: np.ndarray | None,
        cf_known: np.ndarray | None,
        taste: np.ndarray | None = None,
        booking: np.ndarray | None = None,
    ) -> np.ndarray:
        """The feature matrix (float32, columns :attr:`names`) of rows: member features (n or 1 rows),
        ``rows`` into ``offers``, context features, request times, trip destinations, the members' top
        destinations, exposure features, travel features, the base CF scores (n × :data:`CF_SCORES`) and the
        taste scores (n × :data:`TASTE_SCORES`; both ignored without the CF block) and the
        :func:`booking_block` (n × :data:`BOOKING_FEATURES`; ignored without the booking block)."""
        n = len(rows)
        if member.shape[0] == 1 and n != 1:
            member = np.broadcast_to(member, (n, member.shape[1]))
        off = offers.table[rows]
        # Cross features.
        member_meal = member[:, len(MEMBER_NUMERIC) + MEMBER_CATEGORICAL.index("special_meal")]
        meal_vocab = self.vocab.get("special_meal", ())
        offer_meal = offers.meal_vocab_code[rows]
        is_special = offers.special[rows]
        known_meal = ~np.isnan(member_meal) & (member_meal >= 0)
        none_code = float(meal_vocab.index("none")) if "none" in meal_vocab else -2.0
        meal_match = np.where(
            is_special,
            np.where(
                known_meal & (member_meal == offer_meal), 1.0, np.where(member_meal == none_code, -1.0, -0.5)
            ),
            0.0,
        )
        # Object arrays compare elementwise; offers without a destination (None) never match.
        dest, has_dest = offers.destination[rows], offers.has_destination[rows]
        dest_top = (has_dest & (dest == top_destination)).astype(np.float64)
        dest_trip = (has_dest & (dest == trip_destination)).astype(np.float64)
        miles = member[:, MEMBER_NUMERIC.index("miles_balance")]
        price_miles = offers.price_miles[rows]
        miles_cover = np.where(
            price_miles > 0, np.clip(miles / np.maximum(price_miles, 1.0), 0.0, 10.0), np.nan
        )
        trip_cabin = context[:, CONTEXT_FEATURES.index("trip_cabin")]
        target = offers.target_level[rows]
        upgrade_gap = np.where((target >= 0) & (trip_cabin >= 0), target - trip_cabin, np.nan)
        trip_region = context[:, CONTEXT_FEATURES.index("trip_region")]
        region_match = np.where(
            (offers.region[rows] >= 0) & (trip_region >= 0), offers.region[rows] == trip_region, np.nan
        ).astype(np.float64)
        days_on_sale = np.clip((now_s - offers.valid_from_s[rows]) / _DAY_S, 0.0, 365.0)
        out = np.empty((n, len(self.names)), dtype=np.float32)
        c = 0
        blocks = [
            member,
            off,
            days_on_sale[:, None],
            np.column_stack([meal_match, dest_top, dest_trip, miles_cover, upgrade_gap, region_match]),
            context,
            exposure,
            travel,
        ]
        if self.cf:
            assert cf is not None and cf_known is not None
            cf = np.asarray(cf, dtype=np.float64).reshape(n, len(CF_SCORES))
            t = np.full((n, len(TASTE_SCORES)), np.nan) if taste is None else taste
            blocks.append(np.column_stack([np.where(np.isfinite(cf), cf, np.nan), t, cf_known]))
        if self.booking:
            blocks.append(np.full((n, len(BOOKING_FEATURES)), np.nan) if booking is None else booking)
        for block in blocks:
            w = block.shape[1]
            out[:, c : c + w] = block
            c += w
        assert c == out.shape[1]
        return out

    # ----------------------------------------------------------------------------------------- requests
    def request_matrix(
        self,
        offers: OfferArrays,
        rows: np.ndarray,
        context: ScoringContext,
        cf: np.ndarray | None,
        cf_known: bool,
    ) -> np.ndarray:
        """Feature rows of one request's candidates (``rows`` into ``offers``): the per-request path. ``cf``:
        the candidates' :data:`CF_SCORES` (n × 4; ignored without the CF block)."""
        profile = context.profile or {}
        now_s = to_seconds(context.now)
        dep = to_seconds(context.departure_time)[0] if context.departure_time is not None else math.nan
        member = self._member_row(profile)[None, :]
        ctx = np.asarray([self._context_row(context, float(now_s[0]), dep, profile.get("home_airport"))])
        # One member and one context: their blocks are single rows, broadcast; only the offer-dependent
        # columns are computed per candidate. Equal to matrix() on the same inputs (tests/ranker checks a
        # request's rows against the rows training built for the same impressions).
        n = len(rows)
        now = float(now_s[0])
        m, c = member[0], ctx[0]
        # the offer block comes in place from the binding's template (one take); the rest is overwritten
        out = offers.template[rows] if offers.template.shape[1] == self._width else None
        w_m, w_o = len(MEMBER_NUMERIC) + len(MEMBER_CATEGORICAL), len(OFFER_FEATURES) - 1
        if out is None:  # OfferArrays built by hand, without a template
            out = np.empty((n, self._width), dtype=np.float32)
            out[:, w_m : w_m + w_o] = offers.table[rows]
        out[:, :w_m] = m
        # np.minimum/np.maximum: np.clip's values, without its Python-level call on a request's few rows
        out[:, w_m + w_o] = np.minimum(np.maximum((now - offers.valid_from_s[rows]) / _DAY_S, 0.0), 365.0)
        col = w_m + w_o + 1
        member_meal = m[len(MEMBER_NUMERIC) + MEMBER_CATEGORICAL.index("special_meal")]
        # a member without a special meal, or with another one
        miss = -1.0 if member_meal == self._no_meal_code else -0.5
        special = offers.special[rows]
        if member_meal >= 0:  # NaN compares False
            hit = special & (offers.meal_vocab_code[rows] == member_meal)
            out[:, col] = np.where(hit, 1.0, np.where(special, miss, 0.0))
        else:
            out[:, col] = np.where(special, miss, 0.0)
        # destinations compare as integer codes (offers without one: -1, never equal to a name's code)
        dest_code = offers.dest_code[rows]
        top = profile.get("top_destination")
        out[:, col + 1] = dest_code == offers.dest_pos.get(top, -2) if isinstance(top, str) else 0.0
        trip_dest = context.destination
        out[:, col + 2] = (
            dest_code == offers.dest_pos.get(trip_dest, -2) if isinstance(trip_dest, str) else 0.0
        )
        miles = m[MEMBER_NUMERIC.index("miles_balance")]
        with np.errstate(invalid="ignore"):
            out[:, col + 3] = np.where(
                offers.has_miles_price[rows],
                np.clip(miles / offers.miles_divisor[rows], 0.0, 10.0),
                np.nan,
            )
        trip_cabin = c[CONTEXT_FEATURES.index("trip_cabin")]
        target = offers.target_level[rows]
        if trip_cabin >= 0:
            out[:, col + 4] = np.where(target >= 0, target - trip_cabin, np.nan)
        else:
            out[:, col + 4] = np.nan
        trip_region = c[CONTEXT_FEATURES.index("trip_region")]
        region = offers.region[rows]
        if trip_region >= 0:
            out[:, col + 5] = np.where(region >= 0, region == trip_region, np.nan)
        else:
            out[:, col + 5] = np.nan
        col += len(CROSS_FEATURES)
        out[:, col : col + len(CONTEXT_FEATURES)] = c
        col += len(CONTEXT_FEATURES)
        out[:, col : col + len(EXPOSURE_FEATURES)] = self._member_exposure(
            profile, offers.code[rows], offers.family[rows], now
        )
        col += len(EXPOSURE_FEATURES)
        travel = profile.get(TRAVEL_KEY)
        out[:, col : col + len(TRAVEL_FEATURES)] = self._travel_rows(travel, offers, rows)
        col += len(TRAVEL_FEATURES)
        if self.cf:
            assert cf is not None
            cf = np.asarray(cf, dtype=np.float64).reshape(n, len(CF_SCORES))
            out[:, col : col + len(CF_SCORES)] = np.where(np.isfinite(cf), cf, np.nan)
            col += len(CF_SCORES)
            if self.taste is not None:
                out[:, col : col + len(TASTE_SCORES)] = self.taste.member_scores(
                    travel, offers.taste_row[rows]
                )
            else:
                out[:, col : col + len(TASTE_SCORES)] = np.nan
            out[:, col + len(TASTE_SCORES)] = 1.0 if cf_known else 0.0
            col += len(TASTE_SCORES) + 1
        if self.booking:
            out[:, col : col + len(BOOKING_FEATURES)] = _booking_row(context, dep)
        return out

    def _travel_rows(
        self, travel: Mapping[str, Any] | None, offers: OfferArrays, rows: np.ndarray
    ) -> np.ndarray:
        """:func:`travel_block` of one member's candidates, in plain Python (a member has a few destinations;
        the same formulas, checked against the batch path by the training/serving skew test)."""
        out = np.full((len(rows), len(TRAVEL_FEATURES)), np.nan)
        has = np.flatnonzero(offers.has_destination[rows])
        if len(has) == 0:
            return out
        flights = (travel or {}).get("flights") or {}
        places = (travel or {}).get("places") or {}
        by_region: dict[int, float] = {}
        for code, k in flights.items():
            r = self.airports.get(code, _NO_AIRPORT)[2]
            by_region[r] = by_region.get(r, 0.0) + float(k)
        total = sum(by_region.values())
        picked = rows[has]
        out[has] = [
            (
                float(flights.get(d, 0)),
                by_region.get(int(r), 0.0) / total if total > 0 else math.nan,
                float(places.get(d, 0)),
            )
            for d, r in zip(offers.destination[picked], offers.region[picked].tolist(), strict=True)
        ]
        return out

    def _member_row(self, profile: Mapping[str, Any]) -> np.ndarray:
        """:meth:`member_block` of one profile, in plain Python (a request has one member)."""
        out = np.empty(len(MEMBER_NUMERIC) + len(MEMBER_CATEGORICAL))
        values = [profile.get(name) for name in MEMBER_NUMERIC]
        try:  # one conversion (None → NaN) when every value is a number
            out[: len(MEMBER_NUMERIC)] = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            for j, v in enumerate(values):
                try:
                    out[j] = math.nan if v is None else float(v)
                except (TypeError, ValueError):
                    out[j] = math.nan
        for j, name in enumerate(MEMBER_CATEGORICAL, start=len(MEMBER_NUMERIC)):
            v = profile.get(name)
            out[j] = self._vocab_pos.get(name, {}).get(v, -1) if isinstance(v, str) else -1
        return out

    def _context_row(self, ctx: ScoringContext, now: float, dep: float, home: Any) -> list[float]:
        """:meth:`context_block` of one request, in plain Python (same formulas)."""
        from recsys.data.network import EARTH_RADIUS_KM

        ap = self.airports
        o = ap.get(ctx.origin, _NO_AIRPORT) if isinstance(ctx.origin, str) else _NO_AIRPORT
        d = ap.get(ctx.destination, _NO_AIRPORT) if isinstance(ctx.destination, str) else _NO_AIRPORT
        p1, p2 = math.radians(o[0]), math.radians(d[0])
        a = (
            math.sin((p2 - p1) / 2) ** 2
            + math.cos(p1) * math.cos(p2) * math.sin(math.radians(d[1] - o[1]) / 2) ** 2
        )
        km = math.nan if math.isnan(a) else 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(max(a, 0.0), 1.0)))
        return [
            _PLACEMENT_POS.get(ctx.placement, -1),
            1.0 if isinstance(ctx.destination, str) else 0.0,
            km,
            CABIN_LEVEL.get(ctx.cabin, -1) if isinstance(ctx.cabin, str) else -1,
            (dep - now) / 3600.0,
            math.nan if math.isnan(dep) else math.floor(dep / _DAY_S + 5) % 7,
            1.0 if (o[3] and d[3]) else 0.0,
            1.0 if isinstance(ctx.origin, str) and ctx.origin == home else 0.0,
            d[2],
        ]

    def _member_exposure(
        self, profile: Mapping[str, Any], offer: np.ndarray, family: np.ndarray, now: float
    ) -> np.ndarray:
        """:func:`single_member_exposure` of the history a member record carries; a short one is read as it
        is, without the arrays of :meth:`history_from_profile`."""
        exp = profile.get(EXPOSURES_KEY) or {}
        if len(exp.get("offer") or []) > _SMALL_HISTORY:
            return single_member_exposure(self.history_from_profile(profile), offer, family, now)
        codes, families = self._history_codes(exp)
        events = zip(codes, families, exp.get("event") or [], exp.get("time") or [], strict=True)
        return _exposure_loops(events, offer, family, now)

    def _history_codes(self, exp: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        """The offer codes (-1: unknown to this space) and family codes of a member record's history."""
        pos = self._offer_pos
        offers = [pos.get(o, -1) for o in exp.get("offer") or []]
        return offers, [_FAMILY_POS.get(f, -1) for f in exp.get("family") or []]

    def history_from_profile(self, profile: Mapping[str, Any]) -> ExposureHistory:
        """The exposure history a member record carries (:func:`member_exposures`), as arrays."""
        exp = profile.get(EXPOSURES_KEY)
        if not exp:
            return ExposureHistory.empty()
        codes, families = self._history_codes(exp)
        code = np.asarray(codes, dtype=np.int64)
        family = np.fromiter(families, np.int64, len(codes))
        event = np.asarray(exp.get("event") or [], dtype=np.int64)
        time = np.asarray(exp.get("time") or [], dtype=np.float64)
        return ExposureHistory(np.zeros(len(code), dtype=np.int64), code, family, event, time)


def booking_inputs(frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """:data:`BOOKING_INPUTS` of ``frame``'s rows ``rows`` (len(rows) × inputs): NaN where a row is -1, the
    value is missing or ``frame`` lacks the column (imported data may have no booking fields)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(rows), len(BOOKING_INPUTS)), np.nan)
    has = rows >= 0
    for j, c in enumerate(BOOKING_INPUTS):
        if c in frame:
            out[has, j] = pd.to_numeric(frame[c]).to_numpy(np.float64, na_value=np.nan)[rows[has]]
    return out


def booking_block(values: np.ndarray, departure_s: np.ndarray) -> np.ndarray:
    """:data:`BOOKING_FEATURES` of rows: ``values`` (n × :data:`BOOKING_INPUTS`, NaN where unknown) and
    whether the stay spans a Saturday night, from the departure's weekday (NaN without both)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(departure_s), len(BOOKING_INPUTS))
    nights = values[:, BOOKING_INPUTS.index(Col.STAY_NIGHTS)]
    weekday = np.floor(np.nan_to_num(departure_s) / _DAY_S + 5) % 7  # 0 = Monday
    known = ~np.isnan(nights) & ~np.isnan(departure_s)
    saturday = np.where(known, (5 - weekday) % 7 < np.nan_to_num(nights), np.nan)
    return np.column_stack([values, saturday])


def _number(value: Any) -> float:
    """A booking field as a float (None or not a number → NaN)."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _booking_row(ctx: ScoringContext, dep: float) -> list[float]:
    """:func:`booking_block` of one request, in plain Python (same formulas)."""
    nights = _number(ctx.stay_nights)
    saturday = math.nan
    if not (math.isnan(nights) or math.isnan(dep)):
        saturday = 1.0 if (5 - math.floor(dep / _DAY_S + 5) % 7) % 7 < nights else 0.0
    return [
        _number(ctx.booking_lead_days),
        _number(ctx.party_size),
        _number(ctx.children),
        nights,
        saturday,
    ]


@dataclass(frozen=True)
class OfferArrays:
    """Per-offer arrays of a catalogue, bound to a :class:`FeatureSpace` (rows follow the catalogue)."""

    offer_ids: tuple[str, ...]
    code: np.ndarray
    family: np.ndarray
    table: (
        np.ndarray
    )  # offer_code, category, family, log prices, log margin (the OFFER_FEATURES but the last)
    special: np.ndarray
    meal: np.ndarray
    destination: np.ndarray
    region: np.ndarray
    price_miles: np.ndarray
    target_level: np.ndarray
    valid_from_s: np.ndarray
    meal_vocab_code: np.ndarray  # the offer's meal as a code of the space's special-meal vocabulary
    has_destination: np.ndarray
    taste_row: np.ndarray  # the destination's row in the space's taste factors (-1: none)
    # Precomputed once per binding for the per-request path (request_matrix): the offer block in place in a
    # float32 row template, destinations as integer codes (-1: none), the miles price's divisor and mask.
    template: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    dest_pos: dict[str, int] = field(default_factory=dict)
    dest_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    miles_divisor: np.ndarray = field(default_factory=lambda: np.zeros(0))
    has_miles_price: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @classmethod
    def build(cls, space: FeatureSpace, offers: pd.DataFrame) -> OfferArrays:
        from recsys.schema import SPECIAL_MEALS

        ids = tuple(str(o) for o in offers[Col.OFFER_ID])
        code = space.offer_code(ids)
        fam_pos = {f: i for i, f in enumerate(FAMILIES)}
        family = np.fromiter((fam_pos.get(str(f), -1) for f in offers[Col.FAMILY]), np.int64, len(ids))
        cat = _codes([str(c) for c in offers[Col.CATEGORY]], {c: i for i, c in enumerate(space.categories)})
        cash = pd.to_numeric(offers[Col.PRICE_CASH], errors="coerce").fillna(0).to_numpy(np.float64)
        miles = pd.to_numeric(offers[Col.PRICE_MILES], errors="coerce").fillna(0).to_numpy(np.float64)
        margin = (
            pd.to_numeric(offers["margin"], errors="coerce").fillna(0).to_numpy(np.float64)
            if "margin" in offers
            else np.zeros(len(ids))
        )
        table = np.column_stack(
            [
                np.where(code >= 0, code, -1).astype(np.float64),
                cat,
                family.astype(np.float64),
                np.log1p(np.maximum(cash, 0)),
                np.log1p(np.maximum(miles, 0)),
                np.log1p(np.maximum(margin, 0)),
            ]
        )
        specials = {str(m) for m in SPECIAL_MEALS}
        meal = offers[Col.MEAL].to_numpy(object) if Col.MEAL in offers else np.full(len(ids), None, object)
        meal = np.asarray([m if isinstance(m, str) else None for m in meal], dtype=object)
        special = np.asarray([m in specials for m in meal], dtype=bool)
        dest_col = offers[Col.DESTINATION].to_numpy(object) if Col.DESTINATION in offers else meal
        destination = np.asarray([d if isinstance(d, str) else None for d in dest_col], dtype=object)
        reg_pos = {r: i for i, r in enumerate(space.regions)}
        reg_col = offers[Col.REGION].to_numpy(object) if Col.REGION in offers else meal
        region = np.asarray([reg_pos.get(r, -1) if isinstance(r, str) else -1 for r in reg_col], np.float64)
        tgt_col = offers["target_cabin"].to_numpy(object) if "target_cabin" in offers else meal
        target = np.asarray(
            [CABIN_LEVEL.get(t, -1) if isinstance(t, str) else -1 for t in tgt_col], np.float64
        )
        if "valid_from" in offers:
            valid_from = to_seconds(offers["valid_from"])
            valid_from = np.where(np.isnan(valid_from), -np.inf, valid_from)
        else:
            valid_from = np.full(len(ids), -np.inf)
        meal_vocab_code = _codes(meal, space._vocab_pos.get("special_meal", {}))
        has_destination = np.asarray([d is not None for d in destination], dtype=bool)
        taste_row = space.taste.rows(destination) if space.taste is not None else np.full(len(ids), -1)
        w_m = len(MEMBER_NUMERIC) + len(MEMBER_CATEGORICAL)
        template = np.full((len(ids), len(space.names)), np.nan, dtype=np.float32)
        template[:, w_m : w_m + table.shape[1]] = table
        dest_pos = {d: i for i, d in enumerate(sorted({d for d in destination if d is not None}))}
        dest_code = np.asarray([dest_pos[d] if d is not None else -1 for d in destination], dtype=np.int64)
        return cls(
            ids, code, family, table, special, meal, destination, region, miles, target, valid_from,
            meal_vocab_code, has_destination, taste_row, template, dest_pos, dest_code,
            np.maximum(miles, 1.0), miles > 0,
        )  # fmt: skip


def member_exposures(
    events: pd.DataFrame,
    offers: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    since: datetime | pd.Timestamp | None = None,
) -> dict[str, dict[str, list[Any]]]:
    """Each member's exposure history for the online profile (key :data:`EXPOSURES_KEY`): their impressions,
    dismissals, clicks and purchases of the :data:`EXPOSURE_HORIZON_DAYS` before ``as_of``, as
    ``{"offer": [...], "family": [...], "event": [...], "time": [...]}`` (times in seconds since 2000).

    The service scores with what the member store holds: the history is published with the profiles
    (:func:`with_exposures`), so events after the publish reach the features at the next publish (the
    frequency caps, counted live, bound repeated exposure meanwhile). Training counts the same events as
    of each impression's time (:func:`recsys.ranker.training.impression_table`).

    ``since`` reaches further back than the horizon: a replay of a whole period publishes the history from
    the horizon before its start to its end once, and each request's features count only what lies before
    it (:func:`single_member_exposure`).
    """
    t = to_seconds(events[Col.EVENT_TIME])
    end = to_seconds(as_of)[0]
    start = end - EXPOSURE_HORIZON_DAYS * _DAY_S if since is None else to_seconds(since)[0]
    keep = (t < end) & (t >= start)
    members = events[Col.MEMBER_ID].astype(str).to_numpy(object)[keep]
    offer_ids = events[Col.OFFER_ID].astype(str).to_numpy(object)[keep]
    kinds = events[Col.EVENT_TYPE].astype(str).map(EVENT_CODES).fillna(-1).to_numpy(np.int64)[keep]
    times = t[keep]
    fam = dict(zip(offers[Col.OFFER_ID].astype(str), offers[Col.FAMILY].astype(str), strict=True))
    families = np.asarray([fam.get(o) for o in offer_ids], dtype=object)
    order = np.lexsort((times, members))
    members, offer_ids, kinds, times, families = (
        a[order] for a in (members, offer_ids, kinds, times, families)
    )
    starts = np.flatnonzero(np.r_[True, members[1:] != members[:-1]]) if len(members) else np.zeros(0, int)
    bounds = np.r_[starts, len(members)]
    out: dict[str, dict[str, list[Any]]] = {}
    for a, b in itertools.pairwise(bounds):
        out[str(members[a])] = {
            "offer": offer_ids[a:b].tolist(),
            "family": families[a:b].tolist(),
            "event": kinds[a:b].tolist(),
            "time": times[a:b].tolist(),
        }
    return out


def member_travel(
    dataset_dir: Any, as_of: datetime | pd.Timestamp | None
) -> dict[str, dict[str, dict[str, int]]]:
    """Each member's travel history before ``as_of`` (all when None) for the online profile (key
    :data:`TRAVEL_KEY`): ``{"flights": {destination: flights}, "places": {place: partner activities},
    "awards": {destination: redemptions}}`` (award flights' destinations and redeemed hotels' cities), the
    places other than the member's home. Members without any are left out."""
    from pathlib import Path

    from recsys.data.layout import has_table, read_table

    root = Path(dataset_dir)
    end = to_seconds(pd.Timestamp(as_of))[0] if as_of is not None else np.inf
    out: dict[str, dict[str, dict[str, int]]] = {}
    parts = [("flights", "flights", Col.DEPARTURE_TIME, Col.DESTINATION)]
    if has_table(root, "partner_activities"):
        parts.append(("places", "partner_activities", Col.ACTIVITY_TIME, Col.PLACE))
    if has_table(root, "redemptions"):
        parts.append(("awards", "redemptions", Col.REDEEM_TIME, Col.DESTINATION))
    home = read_table(root, "members", columns=[Col.MEMBER_ID, Col.HOME_AIRPORT])
    home_of = dict(zip(home[Col.MEMBER_ID].astype(str), home[Col.HOME_AIRPORT].astype(str), strict=True))
    for key, table, time_col, place_col in parts:
        if not has_table(root, table):
            continue
        df = read_table(root, table, columns=[Col.MEMBER_ID, time_col, place_col])
        df = df.loc[(to_seconds(df[time_col]) < end) & df[place_col].notna()]
        members = df[Col.MEMBER_ID].astype(str)
        places = df[place_col].astype(str)
        away = places.to_numpy(object) != members.map(home_of).to_numpy(object)
        counts = pd.DataFrame({"m": members[away], "p": places[away]}).value_counts()
        for (m, place), k in counts.items():
            out.setdefault(str(m), {}).setdefault(key, {})[str(place)] = int(k)
    return out


def with_travel(
    profiles: pd.DataFrame, dataset_dir: Any, as_of: datetime | pd.Timestamp | None
) -> pd.DataFrame:
    """``profiles`` with each member's travel history (:func:`member_travel`) before ``as_of``, in column
    :data:`TRAVEL_KEY` (None for members without)."""
    if profiles.empty:
        return profiles
    hist = member_travel(dataset_dir, as_of)
    ids = profiles[Col.MEMBER_ID].astype(str)
    return profiles.assign(**{TRAVEL_KEY: [hist.get(m) for m in ids]})


def with_exposures(profiles: pd.DataFrame, dataset_dir: Any) -> pd.DataFrame:
    """``profiles`` with each member's exposure history (:func:`member_exposures`) as of the profiles'
    ``as_of``, in column :data:`EXPOSURES_KEY` (None for members without events); unchanged when the dataset
    has no interactions table."""
    from pathlib import Path

    from recsys.data.layout import has_table, read_table

    root = Path(dataset_dir)
    if not has_table(root, "interactions") or profiles.empty:
        return profiles
    as_of = pd.Timestamp(profiles["as_of"].iloc[0]) if "as_of" in profiles else pd.Timestamp.now("UTC")
    events = read_table(
        root, "interactions", columns=[Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME]
    )
    offers = read_table(root, "offers", columns=[Col.OFFER_ID, Col.FAMILY])
    hist = member_exposures(events, offers, as_of)
    ids = profiles[Col.MEMBER_ID].astype(str)
    return profiles.assign(**{EXPOSURES_KEY: [hist.get(m) for m in ids]})


def with_ranker_history(profiles: pd.DataFrame, dataset_dir: Any) -> pd.DataFrame:
    """``profiles`` with what the ranker reads online beyond the profile: the exposure history
    (:func:`with_exposures`) and the travel history (:func:`with_travel`), both as of the profiles'
    ``as_of``."""
    if profiles.empty:
        return profiles
    as_of = pd.Timestamp(profiles["as_of"].iloc[0]) if "as_of" in profiles else None
    return with_travel(with_exposures(profiles, dataset_dir), dataset_dir, as_of)
