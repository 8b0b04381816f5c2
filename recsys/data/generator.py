"""The loyalty world generator: members with hidden traits, three years of flights, offers and responses.

``generate_world(out, n_members, seed)`` writes a dataset in the canonical layout (:mod:`recsys.data.layout`),
built member chunk by member chunk so memory stays bounded, fully vectorised with numpy, and deterministic for
a seed (chunk ``k`` draws from ``numpy.random.default_rng([seed, k])``; the chunk size is a constant, so a
world's first members are the same whatever its size).

What drives what (the hidden truth goes to ``truth/`` only):

* traits: an archetype (business / leisure / family) and a trip-purpose mix, comfort preference, price
  sensitivity, a special meal, a home airport weighted by hub size, destination-region affinities and
  favourite destinations, channel habits, a tolerance for repeated offers, a flying intensity band (domain.md:
  a quarter never fly; of flyers ~70 % fly 1-3 times a year, ~16 % 4-7, ~10 % 8+ with a heavy tail);
* flights: round trips from home to (mostly favourite) destinations over the network; cabin from comfort, trip
  purpose and price sensitivity; fare class from price sensitivity; fares, miles earned (distance x fare-class
  multiplier), meals (special-meal members order their code), seats, bags, lounge use; tiers COMPUTED from the
  rolling-12-month qualification and retention rules of ``schema.TIER_RULES``;
* organic ancillary purchases (extra bags, paid seats, lounge passes...) derived from the flights;
* an offer log over the last 12 months: requests at the app's placements (booking, post-booking, check-in,
  in-trip for each trip; home at random), impressions chosen by a legacy policy (popularity-weighted random
  among the eligible offers), responses drawn from the hidden acceptance model
  (:mod:`recsys.data.world.acceptance`) with fatigue; purchases land in ``ancillaries`` / ``redemptions``;
  redemptions never overdraw the miles balance.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from recsys.data.layout import NETWORK_DIR, TRUTH_DIR, DatasetWriter
from recsys.data.network import (
    DESTINATION,
    HAS_LOUNGE,
    HUB_SIZE,
    IATA,
    ORIGIN,
    REGION,
    REGIONS,
    TZ,
    Network,
    load_network,
)
from recsys.data.world import acceptance as acc
from recsys.data.world.catalogue import CONNECTING_HUBS, award_miles, build_catalogue, hotel_miles
from recsys.data.world.tastes import SettingsError, WorldSettings, loading_matrix, parse_settings
from recsys.requestlog.propensity import pair_inclusion
from recsys.schema import (
    ANCILLARIES,
    CABIN_ORDER,
    FARE_CLASS_CABIN,
    FARE_CLASSES,
    FLIGHTS,
    INTERACTIONS,
    MEMBERS,
    OFFERS,
    OPTIONAL_COLUMNS,
    PARTNER_ACTIVITIES,
    REDEMPTIONS,
    REQUESTS,
    TIER_ORDER,
    TIER_RULES,
    Cabin,
    Col,
    EventType,
    MealCode,
    OfferCategory,
    OfferFamily,
    PartnerKind,
    Placement,
    RedemptionKind,
    SeatType,
    TableSpec,
)

GENERATOR = "recsys.data.generator"
GENERATOR_VERSION = 1
AS_OF = datetime(2026, 6, 30)  # last day of history; the world ends at AS_OF + 1 day 00:00
HISTORY_YEARS = 3
LEGACY_POLICY = "legacy"  # the requests table's policy name for the world's logging policy
TRUTH_REQUESTS = "request_context"  # truth/request_context/: each request's hidden trip purpose
REQUEST_TRIP_COLUMNS = (
    Col.FLIGHT_ID,
    Col.FLIGHT_NUMBER,
    Col.ORIGIN,
    Col.DESTINATION,
    Col.CABIN,
    Col.FARE_CLASS,
)
OFFER_LOG_DAYS = 365  # the offer programme's log covers the last 12 months
CHUNK_MEMBERS = 25_000

END = AS_OF + timedelta(days=1)
START = END - timedelta(days=round(365.25 * HISTORY_YEARS))
LOG_START = END - timedelta(days=OFFER_LOG_DAYS)
_MIN = 60  # seconds per minute; times are int64 minutes since START inside the generator
_HORIZON_MIN = int((END - START).total_seconds() // _MIN)
_LOG_START_MIN = int((LOG_START - START).total_seconds() // _MIN)
_DAY_MIN = 24 * 60
_YEAR_MIN = 365.25 * _DAY_MIN

# Frequency bands: (share among all members, annual flights low, high). domain.md figures; 4 % of flyers fly
# less than once a year.
BANDS: tuple[tuple[str, float, float, float], ...] = (
    ("never", 0.25, 0.0, 0.0),
    ("occasional", 0.75 * 0.04, 0.3, 1.0),
    ("1-3", 0.75 * 0.70, 1.0, 4.0),
    ("4-7", 0.75 * 0.16, 4.0, 8.0),
    ("8+", 0.75 * 0.10, 8.0, 250.0),
)
ARCHETYPES = ("business", "leisure", "family")
# P(archetype | band): heavy flyers are mostly business travellers.
_ARCHETYPE_GIVEN_BAND = np.array(
    [
        [0.15, 0.57, 0.28],
        [0.15, 0.57, 0.28],
        [0.20, 0.53, 0.27],
        [0.40, 0.40, 0.20],
        [0.62, 0.28, 0.10],
    ]
)
_SPECIAL_MEAL_SHARE = 0.07
_SPECIAL_MEAL_WEIGHTS = {
    "VGML": 0.22,
    "AVML": 0.12,
    "MOML": 0.18,
    "KSML": 0.04,
    "HNML": 0.08,
    "DBML": 0.12,
    "GFML": 0.08,
    "LSML": 0.08,
    "CHML": 0.08,
}
_CHANNELS = ("app", "web", "call_centre", "agent")
_CHANNEL_BASE = np.array([2.5, 1.5, 0.5, 0.5])

# Monthly travel weights (Jan..Dec) per trip purpose (business, leisure, family).
_SEASON = np.array(
    [
        [0.8, 0.7, 1.05, 1.05, 1.05, 1.0, 0.9, 0.85, 1.05, 0.9, 1.1, 1.05],
        [1.2, 1.35, 0.85, 0.9, 1.0, 0.9, 1.3, 1.4, 0.85, 1.3, 0.75, 0.85],
        [1.3, 1.45, 0.7, 0.85, 0.95, 0.9, 1.5, 1.6, 0.7, 1.3, 0.6, 0.8],
    ]
)
_SEASON_DRAWS = 4

# The booking (PNR) per trip purpose (business, leisure, family). Lead time (days from booking to departure)
# is lognormal: business median 11 days, sigma 0.8, so a mean of 15 days and 29 % booked less than 7 days
# ahead (AirPlus Business Travel Index 2009: 13-17 days on average; Travel Leaders Corporate, Q3 2015: 27 %
# of business tickets booked less than a week out). Leisure and family medians (40 and 60 days) are assumed.
_LEAD_MEDIAN_DAYS = np.array([11.0, 40.0, 60.0])
_LEAD_SIGMA = np.array([0.8, 0.8, 0.7])
_LEAD_MAX_DAYS = 330  # within the 361-day booking horizon
# Adults on the booking (1, 2, 3, 4) and children (0, 1, 2, 3): assumed figures.
_ADULTS_P = np.array([[0.85, 0.12, 0.02, 0.01], [0.30, 0.55, 0.10, 0.05], [0.15, 0.75, 0.07, 0.03]])
_CHILDREN_P = np.array([[1.0, 0.0, 0.0, 0.0], [0.92, 0.06, 0.02, 0.0], [0.12, 0.45, 0.35, 0.08]])
# Departure weekday (assumed): business trips avoid weekends (a Saturday departure moves to Friday, a Sunday
# one to Monday, 80 % of the time); leisure and family trips starting Monday-Thursday move to the Friday
# 30 % of the time.
_BUSINESS_WEEKDAY_P, _LEISURE_FRIDAY_P = 0.8, 0.3
_START_WEEKDAY = START.weekday()  # 0 = Monday
_BOOKING_STREAM = 11  # the booking fields' own random stream (per chunk)

# Fare class -> miles multiplier (share of distance credited) and fare factor (share of full fare paid).
_FC_MILES = {
    "F": 1.5,
    "A": 1.25,
    "J": 1.5,
    "C": 1.25,
    "D": 1.25,
    "Z": 1.0,
    "R": 1.0,
    "G": 1.1,
    "E": 1.0,
    "Y": 1.0,
    "B": 1.0,
    "M": 0.75,
    "U": 0.75,
    "H": 0.75,
    "Q": 0.5,
    "V": 0.5,
    "W": 0.5,
    "S": 0.5,
    "T": 0.25,
    "L": 0.25,
    "P": 0.25,
    "N": 0.25,
    "K": 0.25,
}
_CABIN_FARE_MULT = {Cabin.Y: 1.0, Cabin.W: 1.6, Cabin.C: 3.2, Cabin.F: 5.5}
_LONG_HAUL_KM = 3000

# Requests per trip-linked placement: probability (times the member's digital share) and offers per request.
_PLACEMENT_PLAN = {
    Placement.BOOKING: (0.9, 3),
    Placement.POST_BOOKING: (0.6, 2),
    Placement.CHECK_IN: (0.8, 2),
    Placement.IN_TRIP: (0.4, 1),
    Placement.HOME: (0.0, 2),
}
_HOME_REQUESTS_PER_YEAR = 6.0  # times the app share, for an active member
# Partner earning (assumed figures; PhoenixMiles publishes per-partner rates, not averages): share of trips
# with a partner hotel stay or a car rental, and the miles they earn.
_HOTEL_STAY_BUSINESS, _HOTEL_STAY_LEISURE = 0.35, 0.25
_CAR_RENTAL_BUSINESS, _CAR_RENTAL_LEISURE = 0.04, 0.08
_HOTEL_MILES_BASE, _HOTEL_MILES_NIGHT = 500, 250
_CAR_MILES_BASE, _CAR_MILES_DAY = 300, 100
# Direct redemptions (not through an offer) per year, scaled by leisure share and flying: set so that award
# trips come to about 7 % of the legs members fly, within the 6-9 % of passengers on award tickets that
# US programmes report in their 10-K filings (docs/data_dictionary.md); whatever a member cannot afford at
# that moment does not happen.
_DIRECT_REDEMPTIONS = 0.9
# The population's mean leisure + family share of trips (members' purpose mixes): unflown stays per year are
# scaled by a member's share over it, so the setting is the rate of an average member.
_LEISURE_MEAN = 0.73
_PARTNER_KINDS = [k.value for k in (PartnerKind.HOTEL, PartnerKind.CAR_RENTAL, PartnerKind.CREDIT_CARD)]

_TIERS = [t.value for t in TIER_ORDER]
_CABINS = [c.value for c in CABIN_ORDER]  # Y W C F
_FARE_CLASS_LIST = sorted(FARE_CLASS_CABIN)
_PLACEMENTS = acc.PLACEMENTS
_CATEGORIES = acc.CATEGORIES
_REDEMPTION_KIND = {
    OfferCategory.AWARD_FLIGHT.value: RedemptionKind.AWARD_FLIGHT.value,
    OfferCategory.AWARD_UPGRADE.value: RedemptionKind.AWARD_UPGRADE.value,
    OfferCategory.HOTEL.value: RedemptionKind.HOTEL.value,
    OfferCategory.MERCHANDISE.value: RedemptionKind.MERCHANDISE.value,
    OfferCategory.MILES_DONATION.value: RedemptionKind.DONATION.value,
}


class GeneratorError(ValueError):
    """Bad arguments to the generator."""


# ------------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------------


def generate_world(
    out: Path | str,
    n_members: int,
    seed: int,
    *,
    overwrite: bool = False,
    progress: bool = True,
    settings: WorldSettings | dict[str, Any] | None = None,
) -> Path:
    """Generate a loyalty world of ``n_members`` members into ``out`` (atomically) and return its path.

    ``settings`` (:class:`~recsys.data.world.tastes.WorldSettings` or a mapping of its fields) shapes travel
    tastes and the international share; the defaults make the project's default world. Raises
    :class:`GeneratorError` on bad arguments or settings (naming them) and ``recsys.data.layout.DatasetError``
    if ``out`` exists and ``overwrite`` is false.
    """
    if isinstance(n_members, bool) or not isinstance(n_members, int | np.integer) or n_members <= 0:
        raise GeneratorError(f"n_members must be a positive integer, got {n_members!r}")
    if n_members > 9_999_999:
        raise GeneratorError(
            f"n_members must be at most 9,999,999 (member ids have 7 digits), got {n_members}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise GeneratorError(f"seed must be a non-negative integer, got {seed!r}")
    n_members, seed = int(n_members), int(seed)
    try:
        world_settings = parse_settings(settings)
    except SettingsError as exc:
        raise GeneratorError(str(exc)) from None
    network = load_network()
    world = _World(network, seed, world_settings)
    with DatasetWriter(out, overwrite=overwrite) as writer:
        writer.write_table(OFFERS.name, _conform(world.offers, OFFERS))
        writer.write_extra(f"{NETWORK_DIR}/airports.parquet", network.airports)
        writer.write_extra(f"{NETWORK_DIR}/routes.parquet", network.routes)
        members_parts: list[pd.DataFrame] = []
        n_chunks = math.ceil(n_members / CHUNK_MEMBERS)
        with tqdm(
            total=n_members, unit="member", desc="generating", disable=not progress, dynamic_ncols=True
        ) as bar:
            for k in range(n_chunks):
                first = k * CHUNK_MEMBERS
                size = min(CHUNK_MEMBERS, n_members - first)
                tables = world.chunk(k, first, size)
                members_parts.append(tables.pop(MEMBERS.name))
                for name, df in tables.items():
                    if name == "truth":
                        writer.write_extra(f"{TRUTH_DIR}/member_traits/part-{k:05d}.parquet", df)
                    elif name == TRUTH_REQUESTS:
                        writer.write_extra(f"{TRUTH_DIR}/{TRUTH_REQUESTS}/part-{k:05d}.parquet", df)
                    else:
                        writer.append_part(name, df)
                bar.update(size)
        writer.write_table(MEMBERS.name, pd.concat(members_parts, ignore_index=True))
        writer.write_json(f"{TRUTH_DIR}/acceptance.json", world.truth_parameters())
        manifest = {
            "generator": GENERATOR,
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "n_members": n_members,
            "as_of": AS_OF.date().isoformat(),
            "history_start": START.date().isoformat(),
            "offer_log_start": LOG_START.date().isoformat(),
            "chunk_members": CHUNK_MEMBERS,
            "settings": world_settings.model_dump(mode="json"),
            "timestamps": "naive, UTC",
            "network": "Air China routes derived from OpenFlights (ODbL); see network/ and recsys/resources",
        }
        return writer.commit(manifest)


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


def _ids(
    prefix: str, major: np.ndarray, major_width: int, minor: np.ndarray | None = None, minor_width: int = 0
) -> pa.Array:
    """Readable ids ``<prefix><major zero-padded>[-<minor zero-padded>]`` built with Arrow compute (fast)."""
    s = pc.utf8_lpad(pc.cast(pa.array(np.asarray(major, dtype=np.int64)), pa.string()), major_width, "0")
    parts = [pa.scalar(prefix), s]
    if minor is not None:
        m = pc.utf8_lpad(pc.cast(pa.array(np.asarray(minor, dtype=np.int64)), pa.string()), minor_width, "0")
        parts += [pa.scalar("-"), m]
    return pc.binary_join_element_wise(*parts, "")


def _strings(arr: pa.Array | np.ndarray) -> pd.Series:
    if isinstance(arr, pa.Array | pa.ChunkedArray):
        return arr.to_pandas()
    return pd.Series(arr, dtype=object)


def _timestamps(minutes: np.ndarray) -> pd.Series:
    """int64 minutes since START -> naive datetime64[s] Series."""
    base = np.datetime64(START, "s")
    return pd.Series(
        base + np.asarray(minutes, dtype=np.int64).astype("timedelta64[m]").astype("timedelta64[s]")
    )


def _dates(minutes: np.ndarray) -> pd.Series:
    days = np.datetime64(START, "D") + (np.asarray(minutes, dtype=np.int64) // _DAY_MIN).astype(
        "timedelta64[D]"
    )
    return pd.Series(pa.array(days, type=pa.date32()), dtype=pd.ArrowDtype(pa.date32()))


def _conform(df: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Exactly the spec's columns, in its order (a programming error if one is missing), then the table's
    optional columns the generator writes."""
    missing = [c for c in spec.columns if c not in df.columns]
    if missing:  # pragma: no cover - generator bug
        raise AssertionError(f"generator produced {spec.name} without columns {missing}")
    optional = [c for c in OPTIONAL_COLUMNS.get(spec.name, {}) if c in df.columns]
    return df[[*spec.columns, *optional]].reset_index(drop=True)


def _booking_columns(fl: dict[str, Any], rows: np.ndarray) -> dict[str, pd.Series]:
    """The booking columns (:data:`recsys.schema.BOOKING_COLUMNS`) of flight rows (-1: none, → null)."""
    ok = rows >= 0
    r = np.maximum(rows, 0)

    def col(values: np.ndarray) -> pd.Series:
        v = np.asarray(values, dtype=np.int64)[r] if len(values) else np.zeros(len(rows), dtype=np.int64)
        known = ok & (v >= 0)
        if known.all():  # ints without nulls as int64, as an import settles them
            return pd.Series(v)
        return pd.Series(pd.array(np.where(known, v, 0), dtype="Int64")).where(pd.Series(known), pd.NA)

    lead_days = np.floor(fl["lead_h"] / 24.0).astype(np.int64) if len(fl["lead_h"]) else fl["lead_h"]
    return {
        Col.BOOKING_LEAD_DAYS: col(lead_days),
        Col.PARTY_SIZE: col(fl["party"]),
        Col.CHILDREN: col(fl["children"]),
        Col.STAY_NIGHTS: col(fl["stay_nights"]),
    }


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """For a sorted key array: index within its run of equal keys (0, 1, 2, ..., restarting at each key)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.r_[True, keys[1:] != keys[:-1]]
    start_idx = np.flatnonzero(new)
    run_id = np.cumsum(new) - 1
    return np.arange(n) - start_idx[run_id]


def _gumbel_topk(rng: np.random.Generator, logw: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` draws without replacement per row, with probabilities ∝ exp(logw) (−inf excluded)."""
    g = logw + rng.gumbel(size=logw.shape)
    k = min(k, logw.shape[1])
    top = np.argpartition(-g, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(g, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def _tier_levels(segments: np.ndarray, km: np.ndarray, retain: bool) -> np.ndarray:
    level = np.zeros(len(segments), dtype=np.int64)
    for rule in TIER_RULES:
        seg, dist = (
            (rule.retain_segments, rule.retain_km) if retain else (rule.qualify_segments, rule.qualify_km)
        )
        ok = (segments >= seg) | (km >= dist)
        level = np.where(ok, TIER_ORDER.index(rule.tier), level)
    return level


def compute_tiers(
    prev_segments: np.ndarray, prev_km: np.ndarray, segments: np.ndarray, km: np.ndarray
) -> np.ndarray:
    """Tier level (index into TIER_ORDER) from the last 12 months' flying and the 12 months before.

    A member holds the highest tier they qualify for on the last 12 months, or keeps the tier they qualified
    for in the previous 12 months if the last 12 months meet that tier's retention thresholds (else the
    highest lower tier whose retention thresholds they meet).
    """
    qualified = _tier_levels(segments, km, retain=False)
    previous = _tier_levels(prev_segments, prev_km, retain=False)
    retained = np.minimum(previous, _tier_levels(segments, km, retain=True))
    return np.maximum(qualified, retained)


# ------------------------------------------------------------------------------------------------------------
# the world
# ------------------------------------------------------------------------------------------------------------


class _World:
    """Everything global to a world (network, catalogue, parameters); generates member chunks."""

    def __init__(self, network: Network, seed: int, settings: WorldSettings) -> None:
        self.net = network
        self.seed = seed
        self.settings = settings
        rng = np.random.default_rng([seed, 10**6])
        a = network.airports
        self.n_airports = len(a)
        self.iata = a[IATA].to_numpy(object)
        self.airport_index = {str(c): i for i, c in enumerate(self.iata)}
        self.tz = a[TZ].to_numpy(object)
        self.region = np.array([REGIONS.index(r) for r in a[REGION]], dtype=np.int64)
        self.has_lounge = a[HAS_LOUNGE].to_numpy(bool)
        routes = network.routes
        self.r_origin = network.index_of(routes[ORIGIN].to_numpy(object))
        self.r_dest = network.index_of(routes[DESTINATION].to_numpy(object))
        self.r_km = routes["distance_km"].to_numpy(np.int64)
        self.route_of = {
            (int(o), int(d)): i for i, (o, d) in enumerate(zip(self.r_origin, self.r_dest, strict=True))
        }
        # route lookup matrix origin x destination -> route index (-1 none); 188^2 is tiny
        self.route_idx = np.full((self.n_airports, self.n_airports), -1, dtype=np.int64)
        self.route_idx[self.r_origin, self.r_dest] = np.arange(len(routes))
        # padded destination lists per origin
        deg = np.bincount(self.r_origin, minlength=self.n_airports)
        self.max_deg = int(deg.max())
        self.dest_pad = np.full((self.n_airports, self.max_deg), -1, dtype=np.int64)
        order = np.lexsort((self.r_dest, self.r_origin))
        pos = _run_starts(self.r_origin[order])
        self.dest_pad[self.r_origin[order], pos] = self.r_dest[order]
        hub = a[HUB_SIZE].to_numpy(float)
        self.home_weight = np.where(deg > 0, hub, 0.0) ** 1.3
        self.home_weight /= self.home_weight.sum()
        self.dest_logw = np.log(hub + 1.0)
        self._paths(hub)
        self._tastes(hub)
        self.hotel_miles_at = np.array([hotel_miles(REGIONS[r]) for r in self.region], dtype=np.int64)
        # flight numbers and departure slots per route and slot (2 daily slots)
        self.route_dep_min = rng.integers(6 * 60 // 5, 22 * 60 // 5, size=(len(routes), 2)) * 5
        # offers
        self.offers = build_catalogue(network, LOG_START, END)
        self._offer_tables()
        self.params = acc.default_parameters()
        self.params["taste"]["names"] = list(self.taste_names)
        self.params["taste"]["loadings"] = {
            str(self.iata[i]): [round(float(v), 4) for v in self.taste_load[i]]
            for i in np.flatnonzero(self.taste_load.sum(axis=1) > 0)
        }
        appeal = rng.normal(0.0, 0.35, size=len(self.offers))
        self.params["offer_appeal"] = {
            str(o): round(float(v), 4) for o, v in zip(self.offers[Col.OFFER_ID], appeal, strict=True)
        }
        self.offer_arr = acc.offer_arrays(self.offers, self.params)
        # legacy policy: popularity weights (Zipf over a seeded order of offers)
        ranks = rng.permutation(len(self.offers)) + 1
        self.popularity = 1.0 / ranks**0.8
        self.log_popularity = np.log(self.popularity)

    # -- paths and tastes ------------------------------------------------------------------------------------
    def _paths(self, hub: np.ndarray) -> None:
        """How each (origin, destination) pair is flown: nonstop (-1), through a connecting hub (its airport
        index, the shortest of :data:`CONNECTING_HUBS` by distance) or not at all (-2)."""
        n = self.n_airports
        nonstop = self.route_idx >= 0
        km = np.where(nonstop, self.r_km[np.maximum(self.route_idx, 0)], np.iinfo(np.int64).max // 4)
        via = np.where(nonstop, -1, -2).astype(np.int64)
        best = np.full((n, n), np.iinfo(np.int64).max // 2, dtype=np.int64)
        for code in CONNECTING_HUBS:
            if code not in self.airport_index:
                continue
            h = self.airport_index[code]
            total = km[:, h][:, None] + km[h, :][None, :]
            better = ~nonstop & (total < best) & nonstop[:, h][:, None] & nonstop[h, :][None, :]
            better[h, :] = better[:, h] = False
            via = np.where(better, h, via)
            best = np.where(better, total, best)
        np.fill_diagonal(via, -2)
        self.via = via
        self.reach = via >= -1
        self.path_km = np.where(self.reach, np.minimum(km, best), 0)

    def _tastes(self, hub: np.ndarray) -> None:
        """Taste loadings over the airports, and the calibration of the international share of trips."""
        st = self.settings
        self.taste_names = st.names()
        self.taste_load = loading_matrix(self.iata, self.taste_names)  # airports x tastes, in [0, 1]
        col = self.taste_load.sum(axis=0)
        self.taste_dist = self.taste_load / np.where(col > 0, col, 1.0)  # each taste a distribution
        self.taste_alpha = st.taste_concentration * len(self.taste_names) * st.shares()
        self.hub_dist = hub / hub.sum()
        self.abroad = self.region != REGIONS.index("domestic")
        k_bus = self.taste_names.index("business_hubs") if "business_hubs" in self.taste_names else -1
        self.business_dist = (
            0.5 * self.taste_dist[:, k_bus] + 0.5 * self.hub_dist if k_bus >= 0 else self.hub_dist.copy()
        )
        # mean taste-implied international mass of leisure trips, on a fixed sample of members: members'
        # international probabilities are scaled by it so that the world's average follows the setting
        rng = np.random.default_rng([self.seed, 10**6 + 1])
        home = rng.choice(self.n_airports, size=4000, p=self.home_weight)
        theta = self._taste_mix(rng, 4000)
        self.leisure_abroad_mean = float(np.mean(self._abroad_mass(self._leisure_weights(home, theta))))

    def _taste_mix(self, rng: np.random.Generator, n: int) -> np.ndarray:
        theta = rng.gamma(self.taste_alpha[None, :] * np.ones((n, 1))) + 1e-12
        return np.asarray(theta / theta.sum(axis=1, keepdims=True))

    def _leisure_weights(self, home: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """(members x airports) destination weights of leisure and family trips: taste and hub size."""
        tw = self.settings.taste_weight
        w = tw * (theta @ self.taste_dist.T) + (1.0 - tw) * self.hub_dist[None, :]
        return np.asarray(np.where(self.reach[home], w, 0.0))

    def _stay_weights(self, home: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """(members x airports) place weights of hotel stays on trips not flown with the airline: taste and
        hub size as for leisure trips, any city but home (no route needed)."""
        tw = self.settings.taste_weight
        w = tw * (theta @ self.taste_dist.T) + (1.0 - tw) * self.hub_dist[None, :]
        w[np.arange(len(home)), home] = 0.0
        return np.asarray(w)

    def _abroad_mass(self, w: np.ndarray) -> np.ndarray:
        total = w.sum(axis=1)
        return np.asarray((w * self.abroad[None, :]).sum(axis=1) / np.where(total > 0, total, 1.0))

    # -- offers as arrays for eligibility --------------------------------------------------------------------
    def _offer_tables(self) -> None:
        o = self.offers
        m = len(o)
        tier_ix = {t: i for i, t in enumerate(_TIERS)}
        cabin_ix = {c: i for i, c in enumerate(_CABINS)}
        fc_ix = {f: i for i, f in enumerate(_FARE_CLASS_LIST)}
        place_ix = {p: i for i, p in enumerate(_PLACEMENTS)}
        self.o_tiers = np.ones((m, len(_TIERS)), dtype=bool)
        self.o_cabins = np.zeros((m, len(_CABINS)), dtype=bool)
        self.o_fc = np.ones((m, len(_FARE_CLASS_LIST)), dtype=bool)
        self.o_origins = np.ones((m, self.n_airports), dtype=bool)
        self.o_place = np.zeros((m, len(_PLACEMENTS)), dtype=bool)
        self.o_blackout = np.zeros((m, 13), dtype=bool)
        airport_ix = {c: i for i, c in enumerate(self.iata)}
        for j, row in enumerate(o.itertuples(index=False)):
            r = row._asdict()
            if r[Col.ELIGIBLE_TIERS]:
                self.o_tiers[j] = False
                self.o_tiers[j, [tier_ix[t] for t in r[Col.ELIGIBLE_TIERS]]] = True
            for c in r[Col.ELIGIBLE_CABINS]:
                self.o_cabins[j, cabin_ix[c]] = True
            if r[Col.ELIGIBLE_FARE_CLASSES]:
                self.o_fc[j] = False
                self.o_fc[j, [fc_ix[f] for f in r[Col.ELIGIBLE_FARE_CLASSES]]] = True
            if r[Col.ELIGIBLE_ORIGINS]:
                self.o_origins[j] = False
                self.o_origins[j, [airport_ix[a] for a in r[Col.ELIGIBLE_ORIGINS]]] = True
            for p in r[Col.PLACEMENTS]:
                self.o_place[j, place_ix[p]] = True
            for mo in r[Col.BLACKOUT_MONTHS]:
                self.o_blackout[j, int(mo)] = True
        self.o_trip = np.asarray(self.o_cabins.any(axis=1))
        self.o_open = o[Col.WINDOW_OPEN_HOURS].to_numpy(float)
        self.o_close = o[Col.WINDOW_CLOSE_HOURS].to_numpy(float)
        self.o_lounge = o[Col.REQUIRES_LOUNGE].to_numpy(bool)
        self.o_min_miles = o[Col.MIN_MILES].to_numpy(np.int64)
        self.o_price_miles = o[Col.PRICE_MILES].to_numpy(np.int64)
        self.o_price_cash = o[Col.PRICE_CASH].to_numpy(float)
        to_min = lambda ts: (ts - pd.Timestamp(START)).total_seconds() / 60  # noqa: E731
        self.o_from = np.array([to_min(t) for t in o[Col.VALID_FROM]])
        self.o_to = np.array([to_min(t) if pd.notna(t) else np.inf for t in o[Col.VALID_TO]])
        self.o_family = o[Col.FAMILY].to_numpy(object)
        self.o_category = o[Col.CATEGORY].to_numpy(object)
        self.o_dest = o[Col.DESTINATION].to_numpy(object)
        # hotels belong to a destination city and are offered for a trip there (airport index, -1 others)
        self.o_trip_dest = np.array(
            [
                airport_ix.get(d, -1) if c == OfferCategory.HOTEL.value and isinstance(d, str) else -1
                for c, d in zip(self.o_category, self.o_dest, strict=True)
            ],
            dtype=np.int64,
        )
        self.o_ids = o[Col.OFFER_ID].to_numpy(object)

    def truth_parameters(self) -> dict[str, Any]:
        return {
            "model": "recsys.data.world.acceptance",
            "as_of": AS_OF.date().isoformat(),
            "parameters": self.params,
            "legacy_policy": {
                "description": "impressions: per request, offers drawn without replacement among the "
                "eligible "
                "ones with probability proportional to popularity",
                "popularity": {str(o): float(p) for o, p in zip(self.o_ids, self.popularity, strict=True)},
            },
        }

    # -- a chunk of members ----------------------------------------------------------------------------------
    def chunk(self, k: int, first: int, n: int) -> dict[str, pd.DataFrame]:
        rng = np.random.default_rng([self.seed, k])
        m = self._members(rng, first, n)
        m["chunk"] = k
        m["ids"] = np.asarray(_ids("M", m["num"], 7).to_pylist(), dtype=object)
        m["truth"] = self._truth_frame(m, m["ids"])
        m["acc"] = acc.member_arrays(m["truth"])  # the acceptance model sees exactly what truth/ records
        fl = self._flights(rng, m)
        m["partner_activities"] = self._partner_activities(rng, m, fl)
        tiers = self._tiers(m, fl)
        m["tier"] = tiers
        anc_org = self._organic_ancillaries(rng, m, fl)
        log = self._offer_log(rng, m, fl)
        red = self._redemptions(rng, m, fl, log)
        return self._tables(m, fl, anc_org, log, red)

    def _members(self, rng: np.random.Generator, first: int, n: int) -> dict[str, Any]:
        m: dict[str, Any] = {"n": n, "num": np.arange(first + 1, first + n + 1)}
        band = rng.choice(len(BANDS), size=n, p=np.array([b[1] for b in BANDS]))
        cum = _ARCHETYPE_GIVEN_BAND[band].cumsum(axis=1)
        arche = (rng.random(n)[:, None] > cum).sum(axis=1)
        alpha = 1.0 + 5.0 * np.eye(3)[arche]
        mix = rng.gamma(alpha)
        mix /= mix.sum(axis=1, keepdims=True)
        comfort = np.clip(0.55 * rng.beta(2.0, 3.0, n) + 0.45 * mix[:, 0] + rng.normal(0, 0.08, n), 0, 1)
        price = np.clip(
            0.6 * rng.beta(2.0, 2.0, n) + 0.3 * mix[:, 2] - 0.35 * comfort + 0.25 + rng.normal(0, 0.08, n),
            0,
            1,
        )
        special = np.where(
            rng.random(n) < _SPECIAL_MEAL_SHARE,
            rng.choice(
                len(acc.SPECIAL_MEAL_CODES),
                size=n,
                p=np.array([_SPECIAL_MEAL_WEIGHTS[c] for c in acc.SPECIAL_MEAL_CODES]),
            ),
            -1,
        )
        home = rng.choice(self.n_airports, size=n, p=self.home_weight)
        # travel tastes: a mix per member; leisure and family trips follow it (and hub size), business trips
        # follow hub size and the business hubs; each purpose crosses a border with its own probability
        theta = self._taste_mix(rng, n)
        w_leisure = self._leisure_weights(home, theta)
        abroad_l = self._abroad_mass(w_leisure)
        p_abroad_l = np.clip(
            self.settings.international_leisure_share * abroad_l / max(self.leisure_abroad_mean, 1e-9), 0, 0.9
        )
        # business trips cross a border only from an airport with some route abroad
        abroad_b = (self.reach & self.abroad[None, :]).any(axis=1)[home]
        p_abroad_b = np.where(abroad_b, self.settings.international_business_share, 0.0)
        total_l = w_leisure.sum(axis=1, keepdims=True)
        affinity = np.column_stack(
            [(w_leisure * (self.region == r)[None, :]).sum(axis=1) for r in range(len(REGIONS))]
        ) / np.where(total_l > 0, total_l, 1.0)
        fav_order = np.argsort(-w_leisure, axis=1, kind="stable")[:, :3]
        fav_ok = np.take_along_axis(w_leisure, fav_order, axis=1) > 0
        channel = rng.gamma(_CHANNEL_BASE[None, :] * np.ones((n, 1)))
        channel /= channel.sum(axis=1, keepdims=True)
        tolerance = 1.0 + rng.lognormal(np.log(2.5), 0.5, n)
        # enrolment: 80 % before the window, the rest inside it
        before = rng.random(n) < 0.8
        enrol = np.where(
            before,
            -rng.integers(1, 18 * 365, n) * _DAY_MIN,
            rng.integers(0, _HORIZON_MIN - 30 * _DAY_MIN, n) // _DAY_MIN * _DAY_MIN,
        )
        active_from = np.maximum(enrol, 0)
        years = (_HORIZON_MIN - active_from) / _YEAR_MIN
        lo = np.array([b[2] for b in BANDS])[band]
        hi = np.array([b[3] for b in BANDS])[band]
        u = rng.random(n)
        rate = np.select(
            [band == 1, band == 2, band == 3, band == 4],
            [
                0.3 + 0.7 * u,
                1.0 + 3.0 * rng.beta(1.0, 1.6, n),
                4.0 + 4.0 * rng.beta(1.1, 1.6, n),
                np.minimum(8.0 * (1.0 + rng.pareto(3.3, n)), 250.0),
            ],
            0.0,
        )
        n_seg = np.round(rate * years).astype(np.int64)
        low_n = np.ceil(lo * years - 1e-9).astype(np.int64)
        high_n = np.maximum(np.ceil(hi * years - 1e-9).astype(np.int64) - 1, low_n)
        n_seg = np.where(band > 0, np.clip(n_seg, np.maximum(low_n, 1), np.maximum(high_n, 1)), 0)
        birth = rng.normal(1983, 11, n).round().clip(1940, 2008).astype(np.int64)
        # co-branded card holders earn about this many miles a month (assumed: ~8,000 CNY of monthly spend)
        partner = np.where(
            rng.random(n) < self.settings.card_holder_share, rng.lognormal(np.log(600), 0.7, n), 0.0
        )
        m.update(
            band=band,
            arche=arche,
            mix=mix,
            comfort=comfort,
            price=price,
            special=special,
            home=home,
            affinity=affinity,
            theta=theta,
            w_leisure=w_leisure,
            p_abroad=np.column_stack([p_abroad_b, p_abroad_l]),
            fav=fav_order,
            fav_ok=fav_ok,
            channel=channel,
            tolerance=tolerance,
            enrol=enrol,
            active_from=active_from,
            rate=rate,
            n_seg=n_seg,
            birth=birth,
            birth_known=rng.random(n) > 0.04,
            gender=rng.random(n) < 0.58,
            gender_known=rng.random(n) > 0.03,
            partner=partner,
        )
        return m

    def _flights(self, rng: np.random.Generator, m: dict[str, Any]) -> dict[str, Any]:
        n_seg = m["n_seg"]
        n_trips = (n_seg + 1) // 2
        t_member = np.repeat(np.arange(m["n"]), n_trips)
        nt = len(t_member)
        mix = m["mix"][t_member]
        purpose = (rng.random(nt)[:, None] > mix.cumsum(axis=1)).sum(axis=1).clip(0, 2)
        home = m["home"][t_member]
        leisure = purpose > 0
        abroad = rng.random(nt) < m["p_abroad"][t_member, leisure.astype(np.int64)]
        dest = self._destinations(rng, m, t_member, leisure, abroad)
        # a destination without a nonstop route is flown through a connecting hub (each way); trips are
        # taken in order until the member's legs reach their flying intensity (the last one may be one way)
        via_out = self.via[home, dest]
        via_ret = self.via[dest, home]
        via_ret = np.where(via_ret == -2, via_out, via_ret)  # not flown back that way: mirror the outbound
        n_out = 1 + (via_out >= 0)
        legs = n_out + 1 + (via_ret >= 0)
        before = np.cumsum(legs) - legs  # legs of the member's earlier trips (cumsum restarted per member)
        starts = np.r_[True, t_member[1:] != t_member[:-1]] if nt else np.zeros(0, dtype=bool)
        before -= np.maximum.accumulate(np.where(starts, before, 0)) if nt else before
        remaining = n_seg[t_member] - before
        keep = remaining > 0
        t_member, purpose, home, dest, via_out, via_ret, n_out, remaining = (
            x[keep] for x in (t_member, purpose, home, dest, via_out, via_ret, n_out, remaining)
        )
        nt = len(t_member)
        has_return = remaining > n_out
        length_days = np.select(
            [purpose == 0, purpose == 1],
            [1 + rng.geometric(0.45, nt), 2 + rng.geometric(0.18, nt)],
            3 + rng.geometric(0.11, nt),
        ).clip(1, 30)
        start = m["active_from"][t_member]
        span = np.maximum(_HORIZON_MIN - start - (length_days + 1) * _DAY_MIN, _DAY_MIN)
        # departure day: uniform over the member's window, thinned by the season of the trip's purpose
        # (Spring Festival, summer holidays and Golden Week for leisure and family trips): the first of a few
        # candidate days accepted with probability season weight / max weight
        cand = start[:, None] + (rng.random((nt, _SEASON_DRAWS)) * span[:, None]).astype(np.int64)
        weight = _SEASON[purpose][np.arange(nt)[:, None], _month_of(cand) - 1]
        accept = rng.random((nt, _SEASON_DRAWS)) * _SEASON.max() < weight
        pick = np.where(accept.any(axis=1), accept.argmax(axis=1), _SEASON_DRAWS - 1)
        day0 = cand[np.arange(nt), pick] // _DAY_MIN * _DAY_MIN
        # the booking (PNR): lead time, party, departure weekday. Drawn from a stream of their own so the
        # rest of the world keeps its draws.
        book = draw_bookings(np.random.default_rng([self.seed, m["chunk"], _BOOKING_STREAM]), purpose)
        shift = _weekday_shift(purpose, day0, book["u_shift"])
        day0 = np.clip(day0 + shift * _DAY_MIN, start, start + span) // _DAY_MIN * _DAY_MIN
        # legs: outbound for every trip, the way back for all but possibly the last one of a member
        n_ret = np.where(has_return, 1 + (via_ret >= 0), 0)
        s_trip = np.repeat(np.arange(nt), n_out + n_ret)
        k_leg = _run_starts(s_trip)
        is_ret = k_leg >= n_out[s_trip]
        j_leg = np.where(is_ret, k_leg - n_out[s_trip], k_leg)  # leg index within its direction
        hub_leg = np.where(is_ret, via_ret[s_trip], via_out[s_trip])
        two = hub_leg >= 0
        start = np.where(is_ret, dest[s_trip], home[s_trip])
        end = np.where(is_ret, home[s_trip], dest[s_trip])
        o = np.where(two & (j_leg == 1), hub_leg, start)
        d = np.where(two & (j_leg == 0), hub_leg, end)
        s_member = t_member[s_trip]
        route = self.route_idx[o, d]
        # a missing reverse route (rare) is flown on the outbound route's distance with its flight number
        missing = route < 0
        route = np.where(missing, self.route_idx[d, o], route)
        ns = len(s_trip)
        slot = rng.integers(0, 2, ns)
        dep = (
            day0[s_trip]
            + np.where(is_ret, length_days[s_trip] * _DAY_MIN, 0)
            + self.route_dep_min[route, slot]
        )
        # a connection leaves 1-3 hours after the first leg lands (block time ~ 30 min + 800 km/h)
        second = np.flatnonzero(j_leg == 1)
        block = 30 + self.r_km[route[second - 1]] * 60 // 800
        layover = rng.integers(12, 37, len(second)) * 5
        dep[second] = dep[second - 1] + block + layover
        dep = np.minimum(dep, _HORIZON_MIN - 1)
        km = self.r_km[route]
        trip_purpose = purpose[s_trip]
        business = trip_purpose == 0
        comfort = m["comfort"][s_member]
        price = m["price"][s_member]
        long_haul = km >= _LONG_HAUL_KM
        # cabin: ordered logit on a comfort / purpose / price score
        z = -2.9 + 3.2 * comfort + 1.3 * business - 1.6 * price + 0.3 * long_haul + rng.logistic(0.0, 0.7, ns)
        w_ok = km >= 1500
        f_ok = km >= 2500
        cabin = np.zeros(ns, dtype=np.int64)  # Y
        cabin = np.where(z > 0.0, np.where(w_ok, 1, 0), cabin)
        cabin = np.where(z > 0.9, 2, cabin)
        cabin = np.where((z > 1.9) & f_ok, 3, cabin)
        # fare class: position in the cabin's list (expensive first) from price sensitivity
        pos = np.clip(0.1 + 0.75 * price - 0.25 * business + rng.normal(0, 0.2, ns), 0, 0.999)
        fc_idx = np.empty(ns, dtype=np.int64)
        fare_factor = np.empty(ns)
        miles_mult = np.empty(ns)
        fc_global = {f: i for i, f in enumerate(_FARE_CLASS_LIST)}
        for ci, cab in enumerate(CABIN_ORDER):
            sel = cabin == ci
            classes = FARE_CLASSES[cab]
            local = (pos[sel] * len(classes)).astype(np.int64)
            fc_idx[sel] = np.array([fc_global[c] for c in classes])[local]
            fare_factor[sel] = 1.0 - 0.65 * local / max(len(classes) - 1, 1)
            miles_mult[sel] = np.array([_FC_MILES[c] for c in classes])[local]
        cabin_mult = np.array([_CABIN_FARE_MULT[c] for c in CABIN_ORDER])[cabin]
        fare = np.round((150 + 0.8 * km) * cabin_mult * fare_factor * rng.uniform(0.92, 1.08, ns) / 10) * 10
        miles = np.round(km * miles_mult).astype(np.int64)
        # meal
        special = m["special"][s_member]
        premium = cabin >= 2
        meal_codes = np.array(acc.MEAL_CODES, dtype=object)
        std, sig, none = (
            acc.MEAL_CODES.index(MealCode.STANDARD.value),
            acc.MEAL_CODES.index(MealCode.SIGNATURE.value),
            acc.MEAL_CODES.index(MealCode.NONE.value),
        )
        sp_code = np.array([acc.MEAL_CODES.index(c) for c in acc.SPECIAL_MEAL_CODES])
        u = rng.random(ns)
        meal = np.where(premium & (u < 0.35 + 0.5 * comfort), sig, std)
        meal = np.where(~premium & (km < 700) & (u < 0.4), none, meal)
        meal = np.where((special >= 0) & (rng.random(ns) < 0.88), sp_code[np.maximum(special, 0)], meal)
        # seat
        fam = trip_purpose == 2
        seat_logw = np.column_stack(
            [
                np.log(0.30 + 0.4 * fam),
                np.log(0.30 + 0.3 * business),
                np.full(ns, np.log(0.12)),
                np.log(0.03 + 0.08 * comfort * (cabin == 0)),
                np.log(0.02 + 0.15 * comfort * (cabin == 0)),
                np.full(ns, np.log(0.12)),
            ]
        )
        seat = np.argmax(seat_logw + rng.gumbel(size=seat_logw.shape), axis=1)  # 5 = no seat chosen (null)
        # bags
        lam = 0.25 + 0.6 * (trip_purpose == 1) + 1.3 * fam + 0.4 * long_haul + 0.3 * premium
        bags = np.minimum(rng.poisson(lam), 4)
        lounge_here = self.has_lounge[o]
        lounge = lounge_here & np.where(
            premium, rng.random(ns) < 0.85, rng.random(ns) < 0.05 + 0.15 * comfort
        )
        order = np.lexsort((dep, s_member))
        fl = {
            "member": s_member,
            "dep": dep,
            "origin": o,
            "dest": d,
            "route": route,
            "slot": slot,
            "cabin": cabin,
            "fc": fc_idx,
            "km": km,
            "fare": fare,
            "miles": miles,
            "meal": meal,
            "seat": seat,
            "bags": bags,
            "lounge": lounge,
            "purpose": trip_purpose,
            "trip": s_trip,
            "is_ret": is_ret,
            "long_haul": long_haul,
            "trip_len": length_days[s_trip],
            # booking: days from booking to this leg's departure, passengers and children on the PNR, nights
            # between the outbound and the return (-1: a one-way booking)
            "lead_h": book["lead_h"][s_trip] + np.where(is_ret, length_days[s_trip] * 24.0, 0.0),
            "party": book["party"][s_trip],
            "children": book["children"][s_trip],
            "stay_nights": np.where(has_return, length_days, -1)[s_trip],
            "trip_dest": dest[s_trip],
            # where this leg's direction ends (the trip's destination outbound, home on the way back): the
            # destination of the trip context a request on this leg carries
            "journey_dest": np.where(is_ret, home[s_trip], dest[s_trip]),
            "first": j_leg == 0,
        }
        fl = {k: v[order] for k, v in fl.items()}
        fl["seq"] = _run_starts(fl["member"])
        fl["meal_codes"] = meal_codes
        return fl

    def _destinations(
        self,
        rng: np.random.Generator,
        m: dict[str, Any],
        t_member: np.ndarray,
        leisure: np.ndarray,
        abroad: np.ndarray,
    ) -> np.ndarray:
        """Each trip's destination: drawn from the member's leisure or business weights, among the
        destinations abroad or at home as ``abroad`` says (any reachable one when that set is empty)."""
        out = np.empty(len(t_member), dtype=np.int64)
        block = 4096
        for s in range(0, len(t_member), block):
            tm, le, ab = t_member[s : s + block], leisure[s : s + block], abroad[s : s + block]
            business = np.where(self.reach[m["home"][tm]], self.business_dist[None, :], 0.0)
            w = np.where(le[:, None], m["w_leisure"][tm], business)
            side = np.where(ab[:, None], self.abroad[None, :], ~self.abroad[None, :])
            ws = w * side
            empty = ws.sum(axis=1) <= 0
            ws[empty] = w[empty]
            out[s : s + block] = _draw_rows(rng, ws)
        return out

    def _partner_activities(
        self, rng: np.random.Generator, m: dict[str, Any], fl: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Miles earned with partners, each with a place and a time: hotel stays and car rentals at a trip's
        destination (checked in on arrival), co-branded card statements at home (monthly). Sorted by member
        and time."""
        trip_start = np.flatnonzero(~fl["is_ret"] & fl["first"])  # one leg per trip: its first outbound
        business = fl["purpose"][trip_start] == 0
        nights = np.clip(fl["trip_len"][trip_start], 1, 14)
        stays = rng.random(len(trip_start)) < np.where(business, _HOTEL_STAY_BUSINESS, _HOTEL_STAY_LEISURE)
        cars = rng.random(len(trip_start)) < np.where(business, _CAR_RENTAL_BUSINESS, _CAR_RENTAL_LEISURE)
        arrive = fl["dep"][trip_start] + 6 * 60
        h, c = trip_start[stays], trip_start[cars]
        # card statements: one a month from the member's first month in the window
        holder = np.flatnonzero(m["partner"] > 0)
        month = _YEAR_MIN / 12
        n_stmt = np.floor((_HORIZON_MIN - m["active_from"][holder]) / month).astype(np.int64)
        s_member = np.repeat(holder, n_stmt)
        s_time = (m["active_from"][s_member] + (_run_starts(s_member) + 1) * month).astype(np.int64) - 1
        s_miles = np.round(m["partner"][s_member] * rng.gamma(4.0, 0.25, len(s_member)))
        # hotel stays on leisure trips the member did not fly with the airline (rail, other carriers): where
        # their tastes take them, more for members who travel for leisure; the airline sees only the stay
        years = (_HORIZON_MIN - m["active_from"]) / _YEAR_MIN
        lam = self.settings.unflown_stays_per_year * years * (m["mix"][:, 1] + m["mix"][:, 2]) / _LEISURE_MEAN
        u_member = np.repeat(np.arange(m["n"]), rng.poisson(lam))
        u_time = m["active_from"][u_member] + (
            rng.random(len(u_member)) * (_HORIZON_MIN - m["active_from"][u_member])
        ).astype(np.int64)
        u_place = _draw_rows(rng, self._stay_weights(m["home"], m["theta"])[u_member])
        u_nights = np.minimum(rng.geometric(0.5, len(u_member)), 14)  # two nights on average
        member = np.concatenate([fl["member"][h], fl["member"][c], s_member, u_member])
        time = np.concatenate([arrive[stays], arrive[cars] + 30, s_time, u_time])
        kind = np.concatenate(
            [
                np.zeros(len(h), np.int64),
                np.ones(len(c), np.int64),
                np.full(len(s_member), 2, np.int64),
                np.zeros(len(u_member), np.int64),
            ]
        )
        place = np.concatenate([fl["trip_dest"][h], fl["trip_dest"][c], m["home"][s_member], u_place])
        miles = np.concatenate(
            [
                _HOTEL_MILES_BASE + _HOTEL_MILES_NIGHT * nights[stays],
                _CAR_MILES_BASE + _CAR_MILES_DAY * np.minimum(nights[cars], 7),
                s_miles,
                _HOTEL_MILES_BASE + _HOTEL_MILES_NIGHT * u_nights,
            ]
        ).astype(np.int64)
        keep = time < _HORIZON_MIN
        order = np.lexsort((kind[keep], time[keep], member[keep]))
        out = {"member": member, "time": time, "kind": kind, "place": place, "miles": miles}
        return {k: v[keep][order] for k, v in out.items()}

    def _tiers(self, m: dict[str, Any], fl: dict[str, Any]) -> np.ndarray:
        n = m["n"]
        last = fl["dep"] >= _HORIZON_MIN - 365 * _DAY_MIN
        prev = (fl["dep"] >= _HORIZON_MIN - 730 * _DAY_MIN) & ~last
        seg1 = np.bincount(fl["member"][last], minlength=n)
        km1 = np.bincount(fl["member"][last], weights=fl["km"][last], minlength=n)
        seg0 = np.bincount(fl["member"][prev], minlength=n)
        km0 = np.bincount(fl["member"][prev], weights=fl["km"][prev], minlength=n)
        return compute_tiers(seg0, km0, seg1, km1)

    def _organic_ancillaries(
        self, rng: np.random.Generator, m: dict[str, Any], fl: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Extras bought directly (not through an offer): bags beyond the allowance, paid seats, lounge
        passes, Wi-Fi, insurance."""
        ns = len(fl["member"])
        econ = fl["cabin"] <= 1
        price_s = m["price"][fl["member"]]
        kinds = [
            (
                OfferCategory.BAGGAGE,
                econ & (fl["bags"] >= 2) & (rng.random(ns) < 0.7),
                200.0 + 0.05 * fl["km"],
            ),
            (
                OfferCategory.SEAT,
                econ & np.isin(fl["seat"], [3, 4]) & (rng.random(ns) < 0.8),
                np.full(ns, 120.0),
            ),
            (OfferCategory.LOUNGE, econ & fl["lounge"], np.full(ns, 300.0)),
            (
                OfferCategory.WIFI,
                (fl["purpose"] == 0) & fl["long_haul"] & (rng.random(ns) < 0.3),
                np.full(ns, 100.0),
            ),
            (
                OfferCategory.INSURANCE,
                (fl["purpose"] == 2) & ~fl["is_ret"] & (rng.random(ns) < 0.25 * (1.2 - price_s)),
                np.full(ns, 50.0),
            ),
        ]
        idx, cat, price = [], [], []
        for c, sel, p in kinds:
            w = np.flatnonzero(sel)
            idx.append(w)
            cat.append(np.full(len(w), _CATEGORIES.index(c.value)))
            price.append(np.round(p[w] / 10) * 10)
        flight = np.concatenate(idx)
        hours_before = rng.uniform(1, 72, len(flight))
        return {
            "flight": flight,
            "category": np.concatenate(cat),
            "price": np.concatenate(price),
            "time": np.maximum(fl["dep"][flight] - (hours_before * 60).astype(np.int64), 0),
        }

    # -- the offer log ---------------------------------------------------------------------------------------
    def _requests(
        self, rng: np.random.Generator, m: dict[str, Any], fl: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        digital = m["channel"][:, 0] + m["channel"][:, 1]
        in_log = fl["dep"] >= _LOG_START_MIN + 3 * _DAY_MIN
        outbound = in_log & ~fl["is_ret"] & fl["first"]  # one booking per trip, on its first leg
        parts: list[dict[str, np.ndarray]] = []

        def add(sel: np.ndarray, place: Placement, hours_to_dep: np.ndarray) -> None:
            p, _ = _PLACEMENT_PLAN[place]
            keep = sel & (rng.random(len(sel)) < p * digital[fl["member"]])
            w = np.flatnonzero(keep)
            t = fl["dep"][w] - (hours_to_dep[w] * 60).astype(np.int64)
            parts.append(
                {
                    "member": fl["member"][w],
                    "flight": w,
                    "time": t,
                    "place": np.full(len(w), _PLACEMENTS.index(place.value)),
                    "hours": hours_to_dep[w],
                }
            )

        ns = len(fl["member"])
        lead = fl["lead_h"]  # the booking request is the booking itself
        add(outbound, Placement.BOOKING, lead)
        add(outbound, Placement.POST_BOOKING, rng.uniform(0.05, 0.95, ns) * lead + 2)
        add(in_log, Placement.CHECK_IN, rng.uniform(1, 24, ns))
        add(in_log & fl["is_ret"], Placement.IN_TRIP, rng.uniform(2, 24, ns) * np.minimum(fl["trip_len"], 3))
        # home requests: not tied to a trip
        active_log = np.maximum(m["active_from"], _LOG_START_MIN)
        years = np.maximum(_HORIZON_MIN - active_log, 0) / _YEAR_MIN
        flyer = (m["n_seg"] > 0).astype(float)
        lam = _HOME_REQUESTS_PER_YEAR * m["channel"][:, 0] * years * (0.3 + 0.7 * flyer + 0.02 * m["rate"])
        k = rng.poisson(lam)
        hm = np.repeat(np.arange(m["n"]), k)
        ht = active_log[hm] + (rng.random(len(hm)) * (_HORIZON_MIN - active_log[hm])).astype(np.int64)
        parts.append(
            {
                "member": hm,
                "flight": np.full(len(hm), -1),
                "time": ht,
                "place": np.full(len(hm), _PLACEMENTS.index(Placement.HOME.value)),
                "hours": np.full(len(hm), np.nan),
            }
        )
        req = {k2: np.concatenate([p[k2] for p in parts]) for k2 in parts[0]}
        keep = req["time"] >= _LOG_START_MIN
        req = {k2: v[keep] for k2, v in req.items()}
        order = np.lexsort((req["place"], req["time"], req["member"]))
        return {k2: v[order] for k2, v in req.items()}

    def _balance_at(
        self, m: dict[str, Any], fl: dict[str, Any], member: np.ndarray, time: np.ndarray
    ) -> np.ndarray:
        """Miles earned by each (member, time): flights departed and partner activities before ``time``."""
        key_f = fl["member"].astype(np.int64) * (_HORIZON_MIN + 1) + fl["dep"]
        cum = np.r_[0, np.cumsum(fl["miles"])]
        first = np.searchsorted(key_f, member.astype(np.int64) * (_HORIZON_MIN + 1), side="left")
        upto = np.searchsorted(key_f, member.astype(np.int64) * (_HORIZON_MIN + 1) + time, side="left")
        flown = cum[upto] - cum[first]
        act = m["partner_activities"]
        key_p = act["member"].astype(np.int64) * (_HORIZON_MIN + 1) + act["time"]
        cum_p = np.r_[0, np.cumsum(act["miles"])]
        first_p = np.searchsorted(key_p, member.astype(np.int64) * (_HORIZON_MIN + 1), side="left")
        upto_p = np.searchsorted(key_p, member.astype(np.int64) * (_HORIZON_MIN + 1) + time, side="left")
        return np.asarray(flown + cum_p[upto_p] - cum_p[first_p])

    def _eligible(
        self,
        m: dict[str, Any],
        fl: dict[str, Any],
        req: dict[str, np.ndarray],
        tiers: np.ndarray,
        balance: np.ndarray,
    ) -> np.ndarray:
        """(requests x offers) eligibility by the catalogue's rules."""
        member = req["member"]
        has_trip = np.asarray(req["flight"] >= 0)
        f = np.maximum(req["flight"], 0)
        e: np.ndarray = self.o_place[:, req["place"]].T.copy()
        e &= self.o_tiers[:, tiers[member]].T
        if len(fl["cabin"]) == 0:  # nobody in this chunk flew: no trip-bound offer is eligible
            trip_ok = np.zeros((len(member), len(self.o_ids)), dtype=bool)
        else:
            trip_ok = (
                self.o_cabins[:, fl["cabin"][f]].T
                & self.o_fc[:, fl["fc"][f]].T
                & self.o_origins[:, fl["origin"][f]].T
            )
        hours = np.nan_to_num(req["hours"], nan=-1.0)
        trip_ok &= (hours[:, None] <= self.o_open[None, :]) & (hours[:, None] >= self.o_close[None, :])
        if len(fl["cabin"]):
            trip_ok &= ~self.o_lounge[None, :] | self.has_lounge[fl["origin"][f]][:, None]
        e &= np.where(self.o_trip[None, :], trip_ok & has_trip[:, None], True)
        trip_dest = fl["journey_dest"][f] if len(fl["cabin"]) else np.full(len(member), -1)
        at_dest = has_trip[:, None] & (trip_dest[:, None] == self.o_trip_dest[None, :])
        e &= np.where(self.o_trip_dest[None, :] >= 0, at_dest, True)
        # non-trip offers restricted to origins (award flights, route promotions): the member's home airport
        e &= np.where(self.o_trip[None, :], True, self.o_origins[:, m["home"][member]].T)
        e &= balance[:, None] >= self.o_min_miles[None, :]
        t = req["time"]
        e &= (t[:, None] >= self.o_from[None, :]) & (t[:, None] < self.o_to[None, :])
        e &= ~self.o_blackout[:, _month_of(t)].T
        return np.asarray(e)

    def _offer_log(self, rng: np.random.Generator, m: dict[str, Any], fl: dict[str, Any]) -> dict[str, Any]:
        req = self._requests(rng, m, fl)
        nr = len(req["member"])
        req["seq"] = _run_starts(req["member"])
        balance = self._balance_at(m, fl, req["member"], req["time"])
        tiers = m["tier"]
        shown_r: list[np.ndarray] = []
        shown_o: list[np.ndarray] = []
        shown_pos: list[np.ndarray] = []
        shown_p: list[np.ndarray] = []
        cand_r: list[np.ndarray] = []
        cand_o: list[np.ndarray] = []
        block = 50_000
        k_per_place = np.array([_PLACEMENT_PLAN[Placement(p)][1] for p in _PLACEMENTS])
        for s in range(0, nr, block):
            sub = {k2: v[s : s + block] for k2, v in req.items()}
            e = self._eligible(m, fl, sub, tiers, balance[s : s + block])
            logw = np.where(e, self.log_popularity[None, :], -np.inf)
            top = _gumbel_topk(rng, logw, 3)
            ok = np.take_along_axis(e, top, axis=1)
            k_sub = k_per_place[sub["place"]]
            ok &= np.arange(top.shape[1])[None, :] < k_sub[:, None]
            r_idx, pos = np.nonzero(ok)
            shown_r.append(r_idx + s)
            shown_o.append(top[r_idx, pos])
            shown_pos.append(pos)
            # the candidate set (row-major: grouped by request, catalogue order) and the exact inclusion
            # probability of each shown offer under this draw (the first k of a draw without replacement)
            c_r, c_o = np.nonzero(e)
            cand_r.append(c_r + s)
            cand_o.append(c_o)
            shown_p.append(self._inclusion(e, c_r, c_o, k_sub, r_idx, top[r_idx, pos]))
        empty = [np.zeros(0, dtype=np.int64)]
        imp_r = np.concatenate(shown_r or empty)
        imp_o = np.concatenate(shown_o or empty)
        imp_pos = np.concatenate(shown_pos or empty)
        imp_p = np.concatenate(shown_p or [np.zeros(0)])
        imp_member = req["member"][imp_r]
        imp_time = req["time"][imp_r]
        # prior exposures of the same offer to the same member
        order = np.lexsort((imp_pos, imp_time, imp_o, imp_member))
        prior = np.empty(len(order), dtype=np.int64)
        prior[order] = _run_starts(imp_member[order] * len(self.o_ids) + imp_o[order])
        # response
        f = req["flight"][imp_r]
        has_trip = f >= 0
        fs = np.maximum(f, 0)
        if len(fl["member"]):
            purpose = np.where(has_trip, fl["purpose"][fs], -1)
            long_haul = has_trip & fl["long_haul"][fs]
            premium = has_trip & (fl["cabin"][fs] >= 2)
        else:  # nobody in this chunk flew: home impressions only
            purpose = np.full(len(f), -1)
            long_haul = premium = np.zeros(len(f), dtype=bool)
        members = m["acc"]
        logit = acc.pair_logit(
            self.params,
            members,
            self.offer_arr,
            imp_member,
            imp_o,
            purpose=purpose,
            long_haul=long_haul,
            premium=premium,
            placement=req["place"][imp_r],
        )
        excess = acc.fatigue_excess(self.params, members.tolerance[imp_member], prior)
        p_buy, p_click, p_dismiss = acc.response_probabilities(
            self.params, logit, excess, members.price_sensitivity[imp_member]
        )
        u = rng.random(len(imp_r))
        buy = u < p_buy
        click = buy | (rng.random(len(imp_r)) < p_click)
        dismiss = ~click & (rng.random(len(imp_r)) < p_dismiss)
        # redemptions must be affordable: cumulative miles spent never exceeds miles earned at that time
        # (redemptions are checked against the miles balance in _redemptions)
        return {
            "req": req,
            "imp_r": imp_r,
            "imp_o": imp_o,
            "imp_pos": imp_pos,
            "imp_member": imp_member,
            "imp_time": imp_time,
            "click": click,
            "buy": buy,
            "dismiss": dismiss,
            "prior": prior,
            "flight": f,
            "propensity": imp_p,
            "cand_r": np.concatenate(cand_r or empty),
            "cand_o": np.concatenate(cand_o or empty),
        }

    def _inclusion(
        self,
        e: np.ndarray,
        c_r: np.ndarray,
        c_o: np.ndarray,
        k: np.ndarray,
        shown_r: np.ndarray,
        shown_o: np.ndarray,
    ) -> np.ndarray:
        """Inclusion probability of each shown (row, offer) of a block: Plackett-Luce in closed form over the
        popularity weights of the row's candidates."""
        incl = pair_inclusion(c_r, self.popularity[c_o], k)
        # each shown offer's place among its request's candidates (both in catalogue order)
        key = c_r.astype(np.int64) * e.shape[1] + c_o
        return np.asarray(incl[np.searchsorted(key, shown_r.astype(np.int64) * e.shape[1] + shown_o)])

    def _affordable(
        self,
        m: dict[str, Any],
        fl: dict[str, Any],
        member: np.ndarray,
        time: np.ndarray,
        spend: np.ndarray,
        buy: np.ndarray,
    ) -> np.ndarray:
        buy = buy.copy()
        rounds = 12
        for i in range(rounds):
            s = np.where(buy, spend, 0)
            w = np.flatnonzero(s > 0)
            if len(w) == 0:
                break
            order = w[np.lexsort((time[w], member[w]))]
            cum = np.cumsum(s[order])
            starts = np.r_[True, member[order][1:] != member[order][:-1]]
            base = np.maximum.accumulate(np.where(starts, cum - s[order], 0))
            spent_so_far = cum - base
            earned = self._balance_at(m, fl, member[order], time[order])
            bad = np.flatnonzero(spent_so_far > earned)
            if len(bad) == 0:
                break
            if i < rounds - 1:  # a member's first unaffordable spend goes; later ones may fit then
                _, first = np.unique(member[order][bad], return_index=True)
                bad = bad[first]
            buy[order[bad]] = False
        return buy

    def _redemptions(
        self, rng: np.random.Generator, m: dict[str, Any], fl: dict[str, Any], log: dict[str, Any]
    ) -> dict[str, np.ndarray]:
        """Miles spent: redemption offers bought from the log, and redemptions made directly (award flights to
        a favourite destination, merchandise, hotel nights) over the three years. Whatever the member cannot
        afford at that moment does not happen (an unaffordable offer purchase is turned back into a click)."""
        w = np.flatnonzero(
            log["buy"]
            & (self.o_family[log["imp_o"]] == OfferFamily.REDEMPTION.value)
            & (self.o_price_miles[log["imp_o"]] > 0)
        )
        n = m["n"]
        # direct redemptions: more for leisure/family members and for those who earn more
        years = (_HORIZON_MIN - m["active_from"]) / _YEAR_MIN
        flyer = m["n_seg"] > 0
        lam = np.where(
            flyer,
            _DIRECT_REDEMPTIONS * years * (0.4 + m["mix"][:, 1] + m["mix"][:, 2]) * np.sqrt(m["rate"] + 0.5),
            0,
        )
        lam = lam + 0.05 * years * (m["partner"] > 0)
        k = rng.poisson(lam)
        om = np.repeat(np.arange(n), k)
        ot = m["active_from"][om] + (rng.random(len(om)) * (_HORIZON_MIN - m["active_from"][om])).astype(
            np.int64
        )
        kind_draw = rng.random(len(om))
        place = _draw_rows(rng, m["w_leisure"][om])  # where to: the member's tastes
        km = self.path_km[m["home"][om], place]
        award = kind_draw < 0.7
        merch = (kind_draw >= 0.7) & (kind_draw < 0.9)
        hotel = self.hotel_miles_at[place]
        miles = np.where(
            award,
            award_miles(km, Cabin.Y),
            np.where(merch, rng.choice([3_000, 6_000, 12_000, 20_000], len(om)), hotel),
        ).astype(np.int64)
        kinds = np.where(
            award,
            RedemptionKind.AWARD_FLIGHT.value,
            np.where(merch, RedemptionKind.MERCHANDISE.value, RedemptionKind.HOTEL.value),
        ).astype(object)
        dest = _where_none(~merch, self.iata[place])
        # affordability over both kinds together, in time order
        member = np.concatenate([log["imp_member"][w], om])
        time = np.concatenate([log["imp_time"][w] + 3, ot])
        spend = np.concatenate([self.o_price_miles[log["imp_o"][w]], miles])
        ok = self._affordable(m, fl, member, time, spend, np.ones(len(member), dtype=bool))
        log["buy"][w[~ok[: len(w)]]] = False
        offer_kind = np.array([_REDEMPTION_KIND[c] for c in self.o_category[log["imp_o"][w]]], dtype=object)
        keep = ok
        return {
            "member": member[keep],
            "offer": np.concatenate([log["imp_o"][w], np.full(len(om), -1)])[keep],
            "time": time[keep],
            "miles": spend[keep],
            "kind": np.concatenate([offer_kind, kinds])[keep],
            "dest": np.concatenate([self.o_dest[log["imp_o"][w]], dest])[keep],
        }

    # -- assemble tables -------------------------------------------------------------------------------------
    def _tables(
        self,
        m: dict[str, Any],
        fl: dict[str, Any],
        anc: dict[str, np.ndarray],
        log: dict[str, Any],
        red: dict[str, np.ndarray],
    ) -> dict[str, pd.DataFrame]:
        num = m["num"]
        n = m["n"]
        mid_np = m["ids"]
        # flights
        fmem = fl["member"]
        flight_ids = _ids("F", num[fmem], 7, fl["seq"], 4)
        route_num = 1001 + 2 * fl["route"] + fl["slot"]
        flights = pd.DataFrame(
            {
                Col.FLIGHT_ID: _strings(flight_ids),
                Col.MEMBER_ID: pd.Series(mid_np[fmem]),
                Col.FLIGHT_DATE: _dates(fl["dep"]),
                Col.DEPARTURE_TIME: _timestamps(fl["dep"]),
                Col.FLIGHT_NUMBER: _strings(_ids("CA", route_num, 4)),
                Col.ORIGIN: pd.Series(self.iata[fl["origin"]]),
                Col.DESTINATION: pd.Series(self.iata[fl["dest"]]),
                Col.CABIN: pd.Series(np.array(_CABINS, dtype=object)[fl["cabin"]]),
                Col.FARE_CLASS: pd.Series(np.array(_FARE_CLASS_LIST, dtype=object)[fl["fc"]]),
                Col.DISTANCE_KM: fl["km"].astype(np.int64),
                Col.FARE_PAID: fl["fare"].astype(float),
                Col.MILES_EARNED: fl["miles"].astype(np.int64),
                Col.MEAL_CODE: pd.Series(fl["meal_codes"][fl["meal"]]),
                Col.SEAT_TYPE: pd.Series(
                    np.array([*(s.value for s in SeatType), None], dtype=object)[fl["seat"]]
                ),
                Col.BAGS: fl["bags"].astype(np.int64),
                Col.LOUNGE_USED: fl["lounge"].astype(bool),
                **_booking_columns(fl, np.arange(len(fmem))),
            }
        )
        # interactions
        req = log["req"]
        imp_r = log["imp_r"]
        req_ids = np.asarray(_ids("R", num[req["member"]], 7, req["seq"], 5).to_pylist(), dtype=object)
        ni = len(imp_r)
        ev_kind = [np.zeros(ni, np.int64)]
        ev_src = [np.arange(ni)]
        ev_dt = [np.zeros(ni, np.int64)]
        for code, sel, delay in ((1, log["click"], 1), (2, log["buy"], 4), (3, log["dismiss"], 1)):
            w = np.flatnonzero(sel)
            ev_kind.append(np.full(len(w), code))
            ev_src.append(w)
            ev_dt.append(np.full(len(w), delay))
        kind = np.concatenate(ev_kind)
        src = np.concatenate(ev_src)
        evt = log["imp_time"][src] + np.concatenate(ev_dt)
        emem = log["imp_member"][src]
        order = np.lexsort((kind, log["imp_pos"][src], evt - np.concatenate(ev_dt), emem))
        kind, src, evt, emem = kind[order], src[order], evt[order], emem[order]
        ev_seq = _run_starts(emem)
        event_types = np.array(
            [e.value for e in (EventType.IMPRESSION, EventType.CLICK, EventType.PURCHASE, EventType.DISMISS)],
            dtype=object,
        )
        flight_id_np = np.asarray(flight_ids.to_pylist(), dtype=object) if len(fmem) else np.zeros(0, object)
        f_of_ev = log["flight"][src]
        interactions = pd.DataFrame(
            {
                Col.EVENT_ID: _strings(_ids("E", num[emem], 7, ev_seq, 6)),
                Col.REQUEST_ID: pd.Series(req_ids[imp_r[src]]),
                Col.MEMBER_ID: pd.Series(mid_np[emem]),
                Col.OFFER_ID: pd.Series(self.o_ids[log["imp_o"][src]]),
                Col.FLIGHT_ID: pd.Series(_take_or_none(flight_id_np, f_of_ev)),
                Col.PLACEMENT: pd.Series(np.array(_PLACEMENTS, dtype=object)[req["place"][imp_r[src]]]),
                Col.EVENT_TYPE: pd.Series(event_types[kind]),
                Col.EVENT_TIME: _timestamps(evt),
            }
        )
        requests, request_truth = self._request_tables(m, fl, log, req_ids, flight_id_np)
        # ancillaries: organic + purchased through offers (upsell and ancillary families)
        buy = np.flatnonzero(
            log["buy"] & (self.o_family[log["imp_o"]] != OfferFamily.REDEMPTION.value) & (log["flight"] >= 0)
        )
        a_flight = np.concatenate([anc["flight"], log["flight"][buy]])
        a_member = fl["member"][a_flight]
        a_offer = np.concatenate([np.full(len(anc["flight"]), -1), log["imp_o"][buy]])
        a_cat = np.concatenate(
            [np.array(_CATEGORIES, dtype=object)[anc["category"]], self.o_category[log["imp_o"][buy]]]
        )
        a_price = np.concatenate([anc["price"], self.o_price_cash[log["imp_o"][buy]]])
        a_time = np.concatenate([anc["time"], log["imp_time"][buy] + 4])
        order = np.lexsort((a_offer, a_time, a_member))
        a_flight, a_member, a_offer, a_cat, a_price, a_time = (
            x[order] for x in (a_flight, a_member, a_offer, a_cat, a_price, a_time)
        )
        ancillaries = pd.DataFrame(
            {
                Col.PURCHASE_ID: _strings(_ids("A", num[a_member], 7, _run_starts(a_member), 5)),
                Col.MEMBER_ID: pd.Series(mid_np[a_member]),
                Col.FLIGHT_ID: pd.Series(flight_id_np[a_flight] if len(a_flight) else np.zeros(0, object)),
                Col.OFFER_ID: pd.Series(np.where(a_offer >= 0, self.o_ids[np.maximum(a_offer, 0)], None)),
                Col.PURCHASE_TIME: _timestamps(a_time),
                Col.CATEGORY: pd.Series(a_cat),
                Col.PRICE_CASH: a_price.astype(float),
            }
        )
        # redemptions
        r_order = np.lexsort((red["time"], red["member"]))
        r_member, r_offer, r_time, r_miles, r_kind, r_dest = (
            red[k][r_order] for k in ("member", "offer", "time", "miles", "kind", "dest")
        )
        redemptions = pd.DataFrame(
            {
                Col.REDEMPTION_ID: _strings(_ids("X", num[r_member], 7, _run_starts(r_member), 4)),
                Col.MEMBER_ID: pd.Series(mid_np[r_member]),
                Col.OFFER_ID: pd.Series(_take_or_none(self.o_ids, r_offer)),
                Col.REDEEM_TIME: _timestamps(r_time),
                Col.KIND: pd.Series(r_kind, dtype=object),
                Col.MILES_SPENT: r_miles.astype(np.int64),
                Col.DESTINATION: pd.Series(r_dest, dtype=object),
            }
        )
        # partner activities
        act = m["partner_activities"]
        partner_activities = pd.DataFrame(
            {
                Col.ACTIVITY_ID: _strings(_ids("P", num[act["member"]], 7, _run_starts(act["member"]), 5)),
                Col.MEMBER_ID: pd.Series(mid_np[act["member"]]),
                Col.KIND: pd.Series(np.array(_PARTNER_KINDS, dtype=object)[act["kind"]]),
                Col.ACTIVITY_TIME: _timestamps(act["time"]),
                Col.PLACE: pd.Series(self.iata[act["place"]]),
                Col.MILES_EARNED: act["miles"].astype(np.int64),
            }
        )
        # members
        earned = self._balance_at(m, fl, np.arange(n), np.full(n, _HORIZON_MIN))
        spent = np.bincount(r_member, weights=r_miles, minlength=n).astype(np.int64)
        enrol_days = np.datetime64(START, "D") + (m["enrol"] // _DAY_MIN).astype("timedelta64[D]")
        members = pd.DataFrame(
            {
                Col.MEMBER_ID: pd.Series(mid_np),
                Col.ENROL_DATE: pd.Series(
                    pa.array(enrol_days, type=pa.date32()), dtype=pd.ArrowDtype(pa.date32())
                ),
                Col.TIER: pd.Series(np.array(_TIERS, dtype=object)[m["tier"]]),
                Col.HOME_AIRPORT: pd.Series(self.iata[m["home"]]),
                Col.TIME_ZONE: pd.Series(self.tz[m["home"]]),
                Col.MILES_BALANCE: (earned - spent).astype(np.int64),  # >= 0: redemptions were affordable
                Col.BIRTH_YEAR: pd.array(np.where(m["birth_known"], m["birth"], 0), dtype="Int64"),
                Col.GENDER: pd.Series(
                    _where_none(m["gender_known"], np.where(m["gender"], "M", "F").astype(object)),
                    dtype=object,
                ),
                Col.CHANNEL: pd.Series(np.array(_CHANNELS, dtype=object)[np.argmax(m["channel"], axis=1)]),
            }
        )
        members.loc[~m["birth_known"], Col.BIRTH_YEAR] = pd.NA
        truth = m["truth"]
        return {
            MEMBERS.name: _conform(members, MEMBERS),
            FLIGHTS.name: _conform(flights, FLIGHTS),
            INTERACTIONS.name: _conform(interactions, INTERACTIONS),
            ANCILLARIES.name: _conform(ancillaries, ANCILLARIES),
            REDEMPTIONS.name: _conform(redemptions, REDEMPTIONS),
            REQUESTS.name: _conform(requests, REQUESTS),
            PARTNER_ACTIVITIES.name: _conform(partner_activities, PARTNER_ACTIVITIES),
            "truth": truth,
            TRUTH_REQUESTS: request_truth,
        }

    def _request_tables(
        self,
        m: dict[str, Any],
        fl: dict[str, Any],
        log: dict[str, Any],
        req_ids: np.ndarray,
        flight_id_np: np.ndarray,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The ``requests`` table (one row per request: context, candidates, shown slate, propensities) and
        its hidden trip context (the trip's purpose) for the evaluation's true values."""
        req = log["req"]
        nr = len(req["member"])
        f = req["flight"]
        has_trip = f >= 0
        fs = np.maximum(f, 0)
        bounds = np.arange(nr + 1)

        def lists(rows: np.ndarray, values: pa.Array) -> pd.Series:
            offsets = pa.array(np.searchsorted(rows, bounds, side="left").astype(np.int32))
            return pd.Series(pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(offsets, values)))

        offer_ids = pa.array(self.o_ids.astype(str))
        if len(fl["member"]):
            route_num = 1001 + 2 * fl["route"] + fl["slot"]
            flight_numbers = np.asarray(_ids("CA", route_num, 4).to_pylist(), dtype=object)
            cabins = np.array(_CABINS, dtype=object)[fl["cabin"]]
            fare_classes = np.array(_FARE_CLASS_LIST, dtype=object)[fl["fc"]]
            origin, dest = self.iata[fl["origin"]], self.iata[fl["journey_dest"]]
            trip = {
                Col.FLIGHT_ID: _take_or_none(flight_id_np, f),
                Col.FLIGHT_NUMBER: _take_or_none(flight_numbers, f),
                Col.ORIGIN: _take_or_none(origin, f),
                Col.DESTINATION: _take_or_none(dest, f),
                Col.CABIN: _take_or_none(cabins, f),
                Col.FARE_CLASS: _take_or_none(fare_classes, f),
            }
            dep = _timestamps(fl["dep"][fs]).where(pd.Series(has_trip))
            purpose = _where_none(has_trip, np.array(acc.PURPOSES, dtype=object)[fl["purpose"][fs]])
            long_haul = has_trip & fl["long_haul"][fs]
            premium = has_trip & (fl["cabin"][fs] >= 2)
        else:
            trip = {c: np.full(nr, None, dtype=object) for c in REQUEST_TRIP_COLUMNS}
            dep = pd.Series(np.full(nr, np.datetime64("NaT"), dtype="datetime64[s]"))
            purpose = np.full(nr, None, dtype=object)
            long_haul = premium = np.zeros(nr, dtype=bool)
        requests = pd.DataFrame(
            {
                Col.REQUEST_ID: pd.Series(req_ids),
                Col.MEMBER_ID: pd.Series(m["ids"][req["member"]]),
                Col.REQUEST_TIME: _timestamps(req["time"]),
                Col.PLACEMENT: pd.Series(np.array(_PLACEMENTS, dtype=object)[req["place"]]),
                **{c: pd.Series(v, dtype=object) for c, v in trip.items()},
                Col.DEPARTURE_TIME: dep,
                **_booking_columns(fl, f),
                Col.CANDIDATES: lists(log["cand_r"], offer_ids.take(pa.array(log["cand_o"]))),
                Col.SHOWN: lists(log["imp_r"], offer_ids.take(pa.array(log["imp_o"]))),
                Col.PROPENSITIES: lists(log["imp_r"], pa.array(log["propensity"], type=pa.float64())),
                Col.POLICY: LEGACY_POLICY,
                Col.POLICY_VERSION: str(GENERATOR_VERSION),
                Col.EXPLORATION: False,
                # typed as text though empty: Parquet keeps a string column, not a null-typed one
                Col.EXPERIMENT: pd.Series(np.full(nr, None, dtype=object), dtype="str"),
                Col.VARIANT: pd.Series(np.full(nr, None, dtype=object), dtype="str"),
            }
        )
        truth = pd.DataFrame(
            {
                Col.REQUEST_ID: pd.Series(req_ids),
                "trip_purpose": pd.Series(purpose, dtype=object),
                "long_haul": long_haul,
                "premium": premium,
            }
        )
        return requests, truth

    def _truth_frame(self, m: dict[str, Any], mid: np.ndarray) -> pd.DataFrame:
        fav = _where_none(m["fav_ok"], self.iata[m["fav"]])
        special = np.where(
            m["special"] >= 0,
            np.array(acc.SPECIAL_MEAL_CODES, dtype=object)[np.maximum(m["special"], 0)],
            None,
        )
        cols: dict[str, Any] = {
            Col.MEMBER_ID: mid,
            "archetype": np.array(ARCHETYPES, dtype=object)[m["arche"]],
            "business": m["mix"][:, 0],
            "leisure": m["mix"][:, 1],
            "family": m["mix"][:, 2],
            "comfort": m["comfort"],
            "price_sensitivity": m["price"],
            "special_meal": special,
            "home_airport": self.iata[m["home"]],
            **{f"affinity_{r}": m["affinity"][:, i] for i, r in enumerate(REGIONS)},
            **{f"taste_{t}": m["theta"][:, k] for k, t in enumerate(self.taste_names)},
            "favourite_1": fav[:, 0],
            "favourite_2": fav[:, 1],
            "favourite_3": fav[:, 2],
            **{f"channel_{c}": m["channel"][:, i] for i, c in enumerate(_CHANNELS)},
            "fatigue_tolerance": m["tolerance"],
            "flyer_band": np.array([b[0] for b in BANDS], dtype=object)[m["band"]],
            "annual_flights": m["rate"],
            "partner_miles_per_month": m["partner"],
        }
        df = pd.DataFrame(cols)
        return df[list(acc.trait_columns(self.taste_names))]


def draw_bookings(rng: np.random.Generator, purpose: np.ndarray) -> dict[str, np.ndarray]:
    """Per trip, from its purpose: lead time in hours, adults + children, children, and a uniform draw
    for the weekday shift (:func:`_weekday_shift`)."""
    n = len(purpose)
    lead_d = np.exp(np.log(_LEAD_MEDIAN_DAYS[purpose]) + _LEAD_SIGMA[purpose] * rng.standard_normal(n))
    lead_h = np.clip(lead_d * 24.0, 2.0, _LEAD_MAX_DAYS * 24.0)
    adults = 1 + (rng.random(n)[:, None] > _ADULTS_P[purpose].cumsum(axis=1)).sum(axis=1).clip(0, 3)
    children = (rng.random(n)[:, None] > _CHILDREN_P[purpose].cumsum(axis=1)).sum(axis=1).clip(0, 3)
    out = {"lead_h": lead_h, "party": adults + children, "children": children, "u_shift": rng.random(n)}
    return out


def _weekday_shift(purpose: np.ndarray, day0: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Days to move each trip's departure day (int64 minutes since START) to its purpose's usual weekday."""
    wd = (day0 // _DAY_MIN + _START_WEEKDAY) % 7
    business = purpose == 0
    shift = np.zeros(len(purpose), dtype=np.int64)
    shift = np.where(business & (wd == 5) & (u < _BUSINESS_WEEKDAY_P), -1, shift)
    shift = np.where(business & (wd == 6) & (u < _BUSINESS_WEEKDAY_P), 1, shift)
    return np.where(~business & (wd <= 3) & (u < _LEISURE_FRIDAY_P), 4 - wd, shift)


def _draw_rows(rng: np.random.Generator, weights: np.ndarray, block: int = 4096) -> np.ndarray:
    """One column index per row of non-negative ``weights``, with probability proportional to the weight
    (rows in blocks, so the cumulative sums stay small)."""
    out = np.empty(len(weights), dtype=np.int64)
    for s in range(0, len(weights), block):
        cum = np.cumsum(weights[s : s + block], axis=1)
        u = rng.random(len(cum)) * cum[:, -1]
        out[s : s + block] = np.minimum((cum < u[:, None]).sum(axis=1), weights.shape[1] - 1)
    return out


def _where_none(cond: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` where ``cond``, None elsewhere (object array of the same shape)."""
    out = np.full(np.shape(values), None, dtype=object)
    out[cond] = np.asarray(values, dtype=object)[cond]
    return out


def _take_or_none(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``values[idx]`` where ``idx >= 0``, None elsewhere (object array)."""
    out = np.full(len(idx), None, dtype=object)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def _month_of(minutes: np.ndarray) -> np.ndarray:
    """Calendar month (1-12) of int64 minutes since START."""
    days = np.datetime64(START, "D") + (np.asarray(minutes, dtype=np.int64) // _DAY_MIN).astype(
        "timedelta64[D]"
    )
    return np.asarray(days.astype("datetime64[M]").astype(np.int64) % 12 + 1)


def read_truth_parameters(dataset_dir: Path | str) -> dict[str, Any]:
    """The acceptance parameters recorded in ``truth/acceptance.json`` (evaluation only)."""
    return dict(json.loads((Path(dataset_dir) / TRUTH_DIR / "acceptance.json").read_text()))
