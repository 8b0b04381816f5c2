"""Member profile features: one row per member, the same code offline (batch) and online (one member).

Offline, :func:`build_member_profiles` computes every member's row from a dataset directory (vectorised;
flights are read part by part as categoricals so a 1 M-member / 10 M-flight world fits in memory). Online,
the service reads the published rows (:func:`profile_records` gives JSON-safe dicts, :func:`decode_profile`
turns a Redis hash of strings back into typed values), or recomputes one member with
:func:`profile_for_member` and the saved :class:`ProfileContext` - both run :func:`compute_profiles`, so the
two paths cannot drift apart.

Windows, relative to ``as_of`` (the manifest's ``as_of`` - a bare date means the end of that day, the
generator's last day of history - else the latest flight or event time, else the aggregates' LOAD_TIME):
*12 months* = the :data:`QUALIFYING_DAYS` before ``as_of`` (tier qualification, value score, top route);
*window* = the :data:`~recsys.features.lrfmc.OBSERVATION_DAYS` (two years) before ``as_of`` (LRFMC,
habits). Flights after ``as_of`` are ignored. Members who never flew get the defaults listed (never NaN).

Columns (names are the :class:`ProfileCol` constants):

==============================  ======  ======================================================================
column                          type    meaning (default for a member with no flights)
==============================  ======  ======================================================================
``member_id``                   str     member id
``tier``                        str     card tier (:class:`~recsys.schema.Tier`); ``basic`` if missing
``home_airport``                str     IATA code; ``unknown`` if missing (imported air-data members)
``time_zone``                   str     IANA zone; ``UTC`` if missing
``miles_balance``               int     miles balance as of ``as_of`` from the miles ledger (miles earned
                                        by flights and partner activities before it, less redemptions, see
                                        miles.py); without a ledger (imported data) the members table's
                                        balance; 0 if missing
``channel``                     str     booking channel habit; ``unknown`` if missing
``as_of``                       str     ISO time the profile describes (same for every row of a build)
``qualifying_km_12m``           int     kilometres flown in the 12 months (0)
``qualifying_segments_12m``     int     flights (segments) in the 12 months (0)
``next_tier``                   str     the tier above, ``none`` for Platinum
``km_to_next_tier``             int     km still needed to qualify for ``next_tier`` (0 for
                                        Platinum/qualified)
``segments_to_next_tier``       int     segments still needed for ``next_tier`` - either threshold suffices
``km_to_retain``                int     km still needed to keep the current tier (0 for Basic)
``segments_to_retain``          int     segments still needed to keep the current tier (0 for Basic)
``lrfmc_l`` .. ``lrfmc_c``      float   L months of membership, R months since last flight (= L if never), F
                                        flights and M km in the window, C mean fare level (0) - see lrfmc.py
``segment``                     str     five-segment label (:class:`~recsys.schema.Segment`) from the fitted
                                        :class:`~recsys.features.segmentation.SegmentModel`; ``low_value``
                                        if no flight in the window
``value_score``                 float   0-100: 100 x (0.3 freq + 0.3 dist + 0.4 cabin), see
                                        :func:`value_score`
``value_band``                  str     ``v00_20`` .. ``v80_100`` (20-point bands of the value score)
``cabin_share_f|c|w|y``         float   share of the window's flights in each cabin (all 0)
``dominant_cabin``              str     most flown cabin in the window (ties: higher cabin); ``none``
``top_meal``                    str     most frequent meal code (``NONE`` excluded; ties alphabetical);
                                        ``none``
``special_meal``                str     most frequent special-meal code (VGML, MOML...); ``none``
``weekday_share``               float   share of flights departing Monday-Friday (0)
``short_stay_share``            float   share of flights that are a leg of a return trip within
                                        :data:`SHORT_STAY_DAYS` days (out and back on the same route) (0)
``business_hub_share``          float   share of flights between two :data:`BUSINESS_CENTRES` (0)
``lounge_share``                float   share of flights with lounge use (0)
``bags_per_flight``             float   mean checked bags per flight (0)
``has_flown``                   bool    any flight in the window
``flights_total``               int     all flights up to ``as_of`` (0)
``days_since_last_flight``      float   days since the last flight; days since enrolment if never flown
``recency_band``                str     ``d000_030``, ``d030_090``, ``d090_180``, ``d180_365``, ``d365_plus``,
                                        ``never``
``top_route``                   str     most flown route in the 12 months, undirected, home airport first when
                                        it is an end (``PEK-CTU``), else alphabetical; ties alphabetical;
                                        ``none``
``top_route_flights``           int     flights on ``top_route`` in the 12 months, any cabin (0)
``top_route_cabin``             str     the cabin most flown on ``top_route`` (ties: higher cabin); ``none``
``top_route_cabin_flights``     int     flights on ``top_route`` in ``top_route_cabin`` ("You flew PEK-CTU in
                                        Business 4 times this year") (0)
``top_destination``             str     most visited destination other than home in the window; ``none``
``top_destination_flights``     int     flights to it in the window (0)
==============================  ======  ======================================================================

Imported customer-value data (``member_aggregates``, no flights): LRFMC come from the aggregates and the
segments from a model fitted on the textbook-cleaned rows; ``has_flown``/``flights_total`` follow F and the
recency R. The columns that need flights (12-month km and segments, value score, cabin mix, meals, routes,
trip purpose) keep their no-flight defaults.

Categorical columns and their vocabularies (for one-hot encoding) are in :data:`PROFILE_VOCABULARIES`; open
vocabularies (airports, routes, time zones) are marked ``None``. Trip companions are not observable in the
data (no booking records), so there is no companion signal; nothing here reads the generator's hidden
``truth/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.layout import DatasetError, has_table, read_table
from recsys.data.times import to_utc_naive
from recsys.features.flyers import (
    ProfileError,
    load_flights,
    load_members,
    resolve_as_of,
)
from recsys.features.lrfmc import (
    DAYS_PER_MONTH,
    OBSERVATION_DAYS,
    FareReference,
    LrfmcCol,
    RouteCodes,
    clean_textbook,
    datetime_values,
    departure_times,
    factorize_sorted,
    lrfmc_from_aggregates,
    lrfmc_from_flights,
    recode,
)
from recsys.features.miles import balances_as_of
from recsys.features.segmentation import SegmentationError, SegmentModel, fit_segments
from recsys.schema import (
    CABIN_ORDER,
    SPECIAL_MEALS,
    TIER_ORDER,
    TIER_RULES,
    Cabin,
    Col,
    MealCode,
    Segment,
    Tier,
)

QUALIFYING_DAYS = 365
SHORT_STAY_DAYS = 4
NONE = "none"
UNKNOWN = "unknown"

# Major business centres (financial and government capitals) of the network: a flight between two of them is a
# business-trip signal. A domain constant, overridable per ProfileContext.
BUSINESS_CENTRES: frozenset[str] = frozenset(
    {
        "PEK", "PKX", "PVG", "SHA", "CAN", "SZX", "CTU", "TFU", "HGH", "CKG", "HKG", "TPE",
        "NRT", "HND", "ICN", "SIN", "FRA", "LHR", "CDG", "JFK", "SFO", "LAX", "SYD",
    }
)  # fmt: skip

# Value score (domain.md: frequency 30 %, distance 30 %, cabin 40 %). Each component is scaled to [0, 1]:
# frequency = log(1 + segments_12m) / log(1 + 90) and distance = log(1 + km_12m) / log(1 + 160,000), capped
# at 1 (90 segments / 160,000 km are the Platinum thresholds, so a Platinum-qualifying flyer scores full;
# the log keeps light flyers apart); cabin = mean cabin level of the 12 months' flights, Y 0, W 1/3, C 2/3, F
# 1.
VALUE_WEIGHTS: dict[str, float] = {"frequency": 0.30, "distance": 0.30, "cabin": 0.40}
VALUE_FULL_SEGMENTS = 90
VALUE_FULL_KM = 160_000
CABIN_VALUE_LEVEL: dict[str, float] = {Cabin.Y: 0.0, Cabin.W: 1 / 3, Cabin.C: 2 / 3, Cabin.F: 1.0}

VALUE_BANDS: tuple[str, ...] = ("v00_20", "v20_40", "v40_60", "v60_80", "v80_100")
RECENCY_BANDS: tuple[tuple[str, float], ...] = (
    ("d000_030", 30),
    ("d030_090", 90),
    ("d090_180", 180),
    ("d180_365", 365),
    ("d365_plus", float("inf")),
)
RECENCY_NEVER = "never"
# Cabins from the highest, for tie-breaks that prefer the higher cabin.
CABINS_HIGH_FIRST: tuple[str, ...] = tuple(str(c) for c in reversed(CABIN_ORDER))


class ProfileCol:
    """Column names of the member profile frame (documented in the module docstring)."""

    MEMBER_ID = Col.MEMBER_ID
    TIER = Col.TIER
    HOME_AIRPORT = Col.HOME_AIRPORT
    TIME_ZONE = Col.TIME_ZONE
    MILES_BALANCE = Col.MILES_BALANCE
    CHANNEL = Col.CHANNEL
    AS_OF = "as_of"
    QUALIFYING_KM_12M = "qualifying_km_12m"
    QUALIFYING_SEGMENTS_12M = "qualifying_segments_12m"
    NEXT_TIER = "next_tier"
    KM_TO_NEXT_TIER = "km_to_next_tier"
    SEGMENTS_TO_NEXT_TIER = "segments_to_next_tier"
    KM_TO_RETAIN = "km_to_retain"
    SEGMENTS_TO_RETAIN = "segments_to_retain"
    LRFMC_L = "lrfmc_l"
    LRFMC_R = "lrfmc_r"
    LRFMC_F = "lrfmc_f"
    LRFMC_M = "lrfmc_m"
    LRFMC_C = "lrfmc_c"
    SEGMENT = "segment"
    VALUE_SCORE = "value_score"
    VALUE_BAND = "value_band"
    CABIN_SHARE_F = "cabin_share_f"
    CABIN_SHARE_C = "cabin_share_c"
    CABIN_SHARE_W = "cabin_share_w"
    CABIN_SHARE_Y = "cabin_share_y"
    DOMINANT_CABIN = "dominant_cabin"
    TOP_MEAL = "top_meal"
    SPECIAL_MEAL = "special_meal"
    WEEKDAY_SHARE = "weekday_share"
    SHORT_STAY_SHARE = "short_stay_share"
    BUSINESS_HUB_SHARE = "business_hub_share"
    LOUNGE_SHARE = "lounge_share"
    BAGS_PER_FLIGHT = "bags_per_flight"
    HAS_FLOWN = "has_flown"
    FLIGHTS_TOTAL = "flights_total"
    DAYS_SINCE_LAST_FLIGHT = "days_since_last_flight"
    RECENCY_BAND = "recency_band"
    TOP_ROUTE = "top_route"
    TOP_ROUTE_FLIGHTS = "top_route_flights"
    TOP_ROUTE_CABIN = "top_route_cabin"
    TOP_ROUTE_CABIN_FLIGHTS = "top_route_cabin_flights"
    TOP_DESTINATION = "top_destination"
    TOP_DESTINATION_FLIGHTS = "top_destination_flights"


CABIN_SHARE_COLUMNS: dict[str, str] = {
    Cabin.F: ProfileCol.CABIN_SHARE_F,
    Cabin.C: ProfileCol.CABIN_SHARE_C,
    Cabin.W: ProfileCol.CABIN_SHARE_W,
    Cabin.Y: ProfileCol.CABIN_SHARE_Y,
}
LRFMC_PROFILE_COLUMNS: dict[str, str] = {
    LrfmcCol.L: ProfileCol.LRFMC_L,
    LrfmcCol.R: ProfileCol.LRFMC_R,
    LrfmcCol.F: ProfileCol.LRFMC_F,
    LrfmcCol.M: ProfileCol.LRFMC_M,
    LrfmcCol.C: ProfileCol.LRFMC_C,
}

# Every column in frame order, with its type: "str", "int", "float" or "bool".
PROFILE_COLUMNS: dict[str, str] = {
    ProfileCol.MEMBER_ID: "str",
    ProfileCol.TIER: "str",
    ProfileCol.HOME_AIRPORT: "str",
    ProfileCol.TIME_ZONE: "str",
    ProfileCol.MILES_BALANCE: "int",
    ProfileCol.CHANNEL: "str",
    ProfileCol.AS_OF: "str",
    ProfileCol.QUALIFYING_KM_12M: "int",
    ProfileCol.QUALIFYING_SEGMENTS_12M: "int",
    ProfileCol.NEXT_TIER: "str",
    ProfileCol.KM_TO_NEXT_TIER: "int",
    ProfileCol.SEGMENTS_TO_NEXT_TIER: "int",
    ProfileCol.KM_TO_RETAIN: "int",
    ProfileCol.SEGMENTS_TO_RETAIN: "int",
    ProfileCol.LRFMC_L: "float",
    ProfileCol.LRFMC_R: "float",
    ProfileCol.LRFMC_F: "float",
    ProfileCol.LRFMC_M: "float",
    ProfileCol.LRFMC_C: "float",
    ProfileCol.SEGMENT: "str",
    ProfileCol.VALUE_SCORE: "float",
    ProfileCol.VALUE_BAND: "str",
    ProfileCol.CABIN_SHARE_F: "float",
    ProfileCol.CABIN_SHARE_C: "float",
    ProfileCol.CABIN_SHARE_W: "float",
    ProfileCol.CABIN_SHARE_Y: "float",
    ProfileCol.DOMINANT_CABIN: "str",
    ProfileCol.TOP_MEAL: "str",
    ProfileCol.SPECIAL_MEAL: "str",
    ProfileCol.WEEKDAY_SHARE: "float",
    ProfileCol.SHORT_STAY_SHARE: "float",
    ProfileCol.BUSINESS_HUB_SHARE: "float",
    ProfileCol.LOUNGE_SHARE: "float",
    ProfileCol.BAGS_PER_FLIGHT: "float",
    ProfileCol.HAS_FLOWN: "bool",
    ProfileCol.FLIGHTS_TOTAL: "int",
    ProfileCol.DAYS_SINCE_LAST_FLIGHT: "float",
    ProfileCol.RECENCY_BAND: "str",
    ProfileCol.TOP_ROUTE: "str",
    ProfileCol.TOP_ROUTE_FLIGHTS: "int",
    ProfileCol.TOP_ROUTE_CABIN: "str",
    ProfileCol.TOP_ROUTE_CABIN_FLIGHTS: "int",
    ProfileCol.TOP_DESTINATION: "str",
    ProfileCol.TOP_DESTINATION_FLIGHTS: "int",
}

# Vocabularies of the categorical columns, for one-hot encoding; None = open vocabulary (from the data).
PROFILE_VOCABULARIES: dict[str, tuple[str, ...] | None] = {
    ProfileCol.TIER: tuple(str(t) for t in TIER_ORDER),
    ProfileCol.NEXT_TIER: (*(str(t) for t in TIER_ORDER[1:]), NONE),
    ProfileCol.SEGMENT: tuple(str(s) for s in Segment),
    ProfileCol.VALUE_BAND: VALUE_BANDS,
    ProfileCol.DOMINANT_CABIN: (*CABINS_HIGH_FIRST, NONE),
    ProfileCol.TOP_MEAL: (*(str(m) for m in MealCode if m != MealCode.NONE), NONE),
    ProfileCol.SPECIAL_MEAL: (*sorted(str(m) for m in SPECIAL_MEALS), NONE),
    ProfileCol.RECENCY_BAND: (*(b for b, _ in RECENCY_BANDS), RECENCY_NEVER),
    ProfileCol.TOP_ROUTE_CABIN: (*CABINS_HIGH_FIRST, NONE),
    ProfileCol.CHANNEL: None,
    ProfileCol.HOME_AIRPORT: None,
    ProfileCol.TIME_ZONE: None,
    ProfileCol.TOP_ROUTE: None,
    ProfileCol.TOP_DESTINATION: None,
}

# ----------------------------------------------------------------------------------------------------
# Pure per-member rules (also usable on their own by the service)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierProgress:
    """Where a member stands against the tier rules on their rolling-12-month km and segments."""

    next_tier: str  # a Tier value or "none"
    km_to_next_tier: int
    segments_to_next_tier: int
    km_to_retain: int
    segments_to_retain: int


def tier_progress(tier: Tier | str, km_12m: float, segments_12m: int) -> TierProgress:
    """Progress to the next tier and to retaining the current one (``schema.TIER_RULES``).

    Either threshold qualifies, so both remainders are reported: 30,000 km and 20 segments as Basic need
    10,000 km *or* 5 segments for Silver. Remainders never go below 0.
    """
    t = Tier(tier)
    rules = {r.tier: r for r in TIER_RULES}
    nxt = TIER_ORDER[t.rank + 1] if t.rank + 1 < len(TIER_ORDER) else None
    km, seg = round(km_12m), int(segments_12m)
    up = rules.get(nxt) if nxt is not None else None
    keep = rules.get(t)
    return TierProgress(
        next_tier=str(nxt) if nxt is not None else NONE,
        km_to_next_tier=max(0, up.qualify_km - km) if up else 0,
        segments_to_next_tier=max(0, up.qualify_segments - seg) if up else 0,
        km_to_retain=max(0, keep.retain_km - km) if keep else 0,
        segments_to_retain=max(0, keep.retain_segments - seg) if keep else 0,
    )


def value_score(segments_12m: Any, km_12m: Any, cabin_level: Any) -> Any:
    """Customer value 0-100: 100 x (0.3 frequency + 0.3 distance + 0.4 cabin), components in [0, 1].

    Works on scalars or numpy arrays. ``cabin_level`` is the mean of Y 0, W 1/3, C 2/3, F 1 over the flights.
    """
    seg = np.asarray(segments_12m, dtype=float)
    km = np.asarray(km_12m, dtype=float)
    cab = np.clip(np.asarray(cabin_level, dtype=float), 0.0, 1.0)
    freq = np.minimum(np.log1p(np.maximum(seg, 0)) / np.log1p(VALUE_FULL_SEGMENTS), 1.0)
    dist = np.minimum(np.log1p(np.maximum(km, 0)) / np.log1p(VALUE_FULL_KM), 1.0)
    w = VALUE_WEIGHTS
    score = 100.0 * (w["frequency"] * freq + w["distance"] * dist + w["cabin"] * cab)
    return float(score) if np.ndim(score) == 0 else score


def value_band(score: np.ndarray) -> np.ndarray:
    """20-point band label of value scores (``v00_20`` ... ``v80_100``)."""
    idx = np.clip((np.asarray(score, dtype=float) // 20).astype(int), 0, len(VALUE_BANDS) - 1)
    return np.asarray(VALUE_BANDS, dtype=object)[idx]


def recency_band(days: np.ndarray, has_flown: np.ndarray) -> np.ndarray:
    """Band label of days since the last flight; ``never`` for members who never flew."""
    days = np.asarray(days, dtype=float)
    edges = np.array([e for _, e in RECENCY_BANDS])
    idx = np.searchsorted(edges, days, side="left")
    labels = np.asarray([b for b, _ in RECENCY_BANDS], dtype=object)[np.clip(idx, 0, len(edges) - 1)]
    return np.where(np.asarray(has_flown, dtype=bool), labels, RECENCY_NEVER)


# ----------------------------------------------------------------------------------------------------
# The context that makes offline and online agree
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileContext:
    """Everything besides a member's own rows that a profile depends on; saved with the model artefact.

    ``as_of`` anchors the windows; ``fare_reference`` gives the C (fare level) of generated flights;
    ``segment_model`` labels segments (None: members with flights are ``general``, others ``low_value``).
    """

    as_of: pd.Timestamp
    fare_reference: FareReference
    segment_model: SegmentModel | None = None
    business_centres: frozenset[str] = field(default=BUSINESS_CENTRES)
    qualifying_days: int = QUALIFYING_DAYS
    observation_days: int = OBSERVATION_DAYS

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "fare_reference": self.fare_reference.to_dict(),
            "segment_model": self.segment_model.to_dict() if self.segment_model is not None else None,
            "business_centres": sorted(self.business_centres),
            "qualifying_days": self.qualifying_days,
            "observation_days": self.observation_days,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileContext:
        seg = data.get("segment_model")
        return cls(
            as_of=to_utc_naive(data["as_of"]),
            fare_reference=FareReference.from_dict(data["fare_reference"]),
            segment_model=SegmentModel.from_dict(seg) if seg is not None else None,
            business_centres=frozenset(data.get("business_centres", BUSINESS_CENTRES)),
            qualifying_days=int(data.get("qualifying_days", QUALIFYING_DAYS)),
            observation_days=int(data.get("observation_days", OBSERVATION_DAYS)),
        )

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> ProfileContext:
        return cls.from_dict(json.loads(Path(path).read_text()))


def fit_profile_context(
    members: pd.DataFrame,
    flights: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    *,
    segment_model: SegmentModel | None = None,
    seed: int = 0,
    business_centres: Iterable[str] = BUSINESS_CENTRES,
    lrfmc: pd.DataFrame | None = None,
) -> ProfileContext:
    """Learn the fare reference and (unless given) fit the segment model on the window's flyers.

    ``lrfmc`` gives the rows to fit the segments on when they do not come from flights (the cleaned
    ``member_aggregates`` of an imported air-data dataset)."""
    as_of_ts = to_utc_naive(as_of)
    ref = FareReference.fit(flights)
    model = segment_model
    if model is None:
        if lrfmc is None:
            lrfmc = lrfmc_from_flights(members, flights, as_of_ts, ref)
        flyers = lrfmc[lrfmc[LrfmcCol.F] > 0]
        try:
            model = fit_segments(flyers, seed=seed)
        except SegmentationError:
            model = None  # too few flyers to tell five segments apart
    return ProfileContext(as_of=as_of_ts, fare_reference=ref, segment_model=model,
                          business_centres=frozenset(business_centres))  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# The computation
# ----------------------------------------------------------------------------------------------------


def _count_matrix(member: np.ndarray, cat: np.ndarray, n: int, k: int, mask: np.ndarray) -> np.ndarray:
    """counts[member, category] over the rows in ``mask`` with a known category."""
    ok = mask & (cat >= 0)
    return np.bincount(member[ok] * k + cat[ok], minlength=n * k).reshape(n, k)


def _argmax_label(
    counts: np.ndarray, labels: tuple[str, ...] | np.ndarray, default: str = NONE
) -> np.ndarray:
    """Label of each row's largest count (first label wins ties), ``default`` where the row is all zero."""
    labels_arr = np.asarray(labels, dtype=object)
    if counts.shape[1] == 0:
        return np.full(counts.shape[0], default, dtype=object)
    best = labels_arr[np.argmax(counts, axis=1)]
    return np.where(counts.max(axis=1) > 0, best, default)


def compute_profiles(
    members: pd.DataFrame,
    flights: pd.DataFrame,
    context: ProfileContext,
    *,
    lrfmc: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Profile rows (:data:`PROFILE_COLUMNS`) of ``members`` (in their order) from ``flights``.

    ``flights`` may hold other members' flights too (they are ignored) and may use string or categorical
    columns. This is the one implementation behind both the batch build and :func:`profile_for_member`.

    ``lrfmc`` (one row per member, ``member_id`` + L, R, F, M, C) replaces the LRFMC derived from flights -
    for imported customer-value data, whose ``member_aggregates`` hold the LRFMC fields but no flights;
    ``has_flown`` and ``flights_total`` then follow its F, and the recency its R.
    """
    missing = [c for c in (Col.MEMBER_ID, Col.ENROL_DATE) if c not in members.columns]
    if missing:
        raise ProfileError(f"members: missing column(s) {missing}")
    as_of = context.as_of
    ids = members[Col.MEMBER_ID].astype(str).to_numpy(dtype=object)
    if len(pd.unique(ids)) != len(ids):
        raise ProfileError("members: duplicated member ids")
    n = len(ids)
    out: dict[str, Any] = {ProfileCol.MEMBER_ID: ids}

    # -- member attributes with defaults ---------------------------------------------------------------------
    tier = _str_col(members, Col.TIER, str(Tier.BASIC))
    unknown_tier = ~np.isin(tier, [str(t) for t in TIER_ORDER])
    if unknown_tier.any():
        i = int(np.flatnonzero(unknown_tier)[0])
        raise ProfileError(
            f"members: unknown tier {tier[i]!r} for member {ids[i]!r} (known: {list(TIER_ORDER)})"
        )
    home = _str_col(members, Col.HOME_AIRPORT, UNKNOWN)
    out[ProfileCol.TIER] = tier
    out[ProfileCol.HOME_AIRPORT] = home
    out[ProfileCol.TIME_ZONE] = _str_col(members, Col.TIME_ZONE, "UTC")
    out[ProfileCol.MILES_BALANCE] = _int_col(members, Col.MILES_BALANCE)
    out[ProfileCol.CHANNEL] = _str_col(members, Col.CHANNEL, UNKNOWN)
    out[ProfileCol.AS_OF] = np.full(n, as_of.isoformat(), dtype=object)

    # -- flights, as arrays ----------------------------------------------------------------------------------
    fl = flights
    if len(fl):
        needed = [Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION, Col.DISTANCE_KM]
        if Col.DEPARTURE_TIME not in fl.columns and Col.FLIGHT_DATE not in fl.columns:
            needed.append(Col.DEPARTURE_TIME)
        missing = [c for c in needed if c not in fl.columns]
        if missing:
            raise ProfileError(f"flights: missing column(s) {missing}")
    idx = pd.Index(ids)
    if lrfmc is None:
        lrfmc = lrfmc_from_flights(members, flights, as_of, context.fare_reference, context.observation_days)
    else:
        pos = pd.Index(lrfmc[LrfmcCol.MEMBER_ID].astype(str)).get_indexer(idx)
        if (pos < 0).any():
            raise ProfileError(f"lrfmc: no row for member {ids[int(np.flatnonzero(pos < 0)[0])]!r}")
        lrfmc = lrfmc.iloc[pos].reset_index(drop=True)
    m = _member_index(idx, fl)
    if len(fl):
        t = departure_times(fl).to_numpy()
        flown = (m >= 0) & (t <= as_of.to_datetime64())
        win = flown & (t > (as_of - pd.Timedelta(days=context.observation_days)).to_datetime64())
        y12 = flown & (t > (as_of - pd.Timedelta(days=context.qualifying_days)).to_datetime64())
    else:
        t = np.zeros(0, dtype="datetime64[ns]")
        flown = win = y12 = np.zeros(0, dtype=bool)
    mm = np.where(m >= 0, m, 0)
    km = _num(fl, Col.DISTANCE_KM)

    # -- tier progress ---------------------------------------------------------------------------------------
    km12 = np.rint(np.bincount(mm[y12], weights=km[y12], minlength=n)).astype(np.int64)
    seg12 = np.bincount(mm[y12], minlength=n).astype(np.int64)
    out[ProfileCol.QUALIFYING_KM_12M] = km12
    out[ProfileCol.QUALIFYING_SEGMENTS_12M] = seg12
    out.update(_tier_progress_arrays(tier, km12, seg12))

    # -- LRFMC and segment -----------------------------------------------------------------------------------
    for src, dst in LRFMC_PROFILE_COLUMNS.items():
        out[dst] = lrfmc[src].to_numpy(dtype=float)
    f_window = lrfmc[LrfmcCol.F].to_numpy()
    if context.segment_model is not None:
        seg_label = context.segment_model.predict(lrfmc).astype(object) if n else np.array([], dtype=object)
    else:
        seg_label = np.full(n, str(Segment.GENERAL), dtype=object)
    out[ProfileCol.SEGMENT] = np.where(f_window > 0, seg_label, str(Segment.LOW_VALUE))

    # -- cabins and value score ------------------------------------------------------------------------------
    cabin_vocab = CABINS_HIGH_FIRST
    if Col.CABIN in fl.columns and len(fl):
        c_codes, c_uni = factorize_sorted(fl[Col.CABIN])
        cabin = recode(c_codes, c_uni, cabin_vocab)
    else:
        cabin = np.full(len(fl), -1, dtype=np.int64)
    cab_win = _count_matrix(mm, cabin, n, len(cabin_vocab), win)
    n_win_all = np.bincount(mm[win], minlength=n)
    for j, c in enumerate(cabin_vocab):
        out[CABIN_SHARE_COLUMNS[c]] = _share(cab_win[:, j], n_win_all)
    out[ProfileCol.DOMINANT_CABIN] = _argmax_label(cab_win, cabin_vocab)
    level_of = np.array([CABIN_VALUE_LEVEL[c] for c in cabin_vocab])
    cab12 = _count_matrix(mm, cabin, n, len(cabin_vocab), y12)
    n12 = cab12.sum(axis=1)
    cabin_level = np.divide(cab12 @ level_of, n12, out=np.zeros(n), where=n12 > 0)
    score = np.asarray(value_score(seg12, km12, cabin_level), dtype=float).reshape(n)
    out[ProfileCol.VALUE_SCORE] = np.round(score, 4)
    out[ProfileCol.VALUE_BAND] = value_band(out[ProfileCol.VALUE_SCORE])

    # -- meals -----------------------------------------------------------------------------------------------
    if Col.MEAL_CODE in fl.columns and len(fl):
        meal_codes, meal_uni = factorize_sorted(fl[Col.MEAL_CODE])
        meal_vocab = tuple(u for u in meal_uni if u != str(MealCode.NONE))
        meal = recode(meal_codes, meal_uni, meal_vocab)
        meal_counts = _count_matrix(mm, meal, n, len(meal_vocab), win)
        out[ProfileCol.TOP_MEAL] = _argmax_label(meal_counts, meal_vocab)
        special_idx = [j for j, u in enumerate(meal_vocab) if u in {str(s) for s in SPECIAL_MEALS}]
        out[ProfileCol.SPECIAL_MEAL] = _argmax_label(
            meal_counts[:, special_idx], tuple(meal_vocab[j] for j in special_idx)
        )
    else:
        out[ProfileCol.TOP_MEAL] = np.full(n, NONE, dtype=object)
        out[ProfileCol.SPECIAL_MEAL] = np.full(n, NONE, dtype=object)

    # -- trip-purpose signals --------------------------------------------------------------------------------
    if len(fl):
        weekday = _weekday(fl) < 5
        rc = RouteCodes.of(fl)
        o_codes, d_codes, airports = rc.origin, rc.destination, rc.airports
        centre = np.isin(airports, list(context.business_centres))
        hub_pair = (
            (o_codes >= 0) & (d_codes >= 0) & centre[np.maximum(o_codes, 0)] & centre[np.maximum(d_codes, 0)]
        )
        short = _short_stay_legs(m, t, o_codes, d_codes, win)
        lounge = _num(fl, Col.LOUNGE_USED) > 0
        bags = _num(fl, Col.BAGS)
    else:
        weekday = hub_pair = short = lounge = np.zeros(0, dtype=bool)
        bags = np.zeros(0)
        o_codes = d_codes = np.zeros(0, dtype=np.int64)
        airports = np.zeros(0, dtype=object)
    out[ProfileCol.WEEKDAY_SHARE] = _share(np.bincount(mm[win & weekday], minlength=n), n_win_all)
    out[ProfileCol.SHORT_STAY_SHARE] = _share(np.bincount(mm[win & short], minlength=n), n_win_all)
    out[ProfileCol.BUSINESS_HUB_SHARE] = _share(np.bincount(mm[win & hub_pair], minlength=n), n_win_all)
    out[ProfileCol.LOUNGE_SHARE] = _share(np.bincount(mm[win & lounge], minlength=n), n_win_all)
    out[ProfileCol.BAGS_PER_FLIGHT] = _share(np.bincount(mm[win], weights=bags[win], minlength=n), n_win_all)

    # -- activity and recency --------------------------------------------------------------------------------
    has_flown = f_window > 0
    out[ProfileCol.HAS_FLOWN] = has_flown
    out[ProfileCol.FLIGHTS_TOTAL] = np.maximum(
        np.bincount(mm[flown], minlength=n), f_window.astype(np.int64)
    ).astype(np.int64)
    days_since = lrfmc[LrfmcCol.R].to_numpy(dtype=float) * DAYS_PER_MONTH
    out[ProfileCol.DAYS_SINCE_LAST_FLIGHT] = np.round(days_since, 4)
    ever_flown = out[ProfileCol.FLIGHTS_TOTAL] > 0
    out[ProfileCol.RECENCY_BAND] = recency_band(days_since, ever_flown)

    # -- top route (12 months) and destination (window) ------------------------------------------------------
    out.update(_top_routes(mm, o_codes, d_codes, airports, cabin, cabin_vocab, y12, home, n))
    out.update(_top_destination(mm, d_codes, airports, home, win, n))

    frame = pd.DataFrame(out, columns=list(PROFILE_COLUMNS))
    return _typed(frame)


def _str_col(df: pd.DataFrame, col: str, default: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), default, dtype=object)
    s = df[col]
    values = s.astype(object).to_numpy(dtype=object)
    missing = pd.isna(values) | (values == "")
    return np.where(missing, default, values).astype(object)


def _int_col(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    return pd.to_numeric(df[col], errors="coerce").fillna(0).to_numpy().astype(np.int64)


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns or df.empty:
        return np.zeros(len(df), dtype=float)
    s = df[col]
    if s.dtype == bool:
        return s.to_numpy(dtype=float)
    return pd.to_numeric(s, errors="coerce").fillna(0).to_numpy(dtype=float)


def _share(numer: np.ndarray, denom: np.ndarray) -> np.ndarray:
    numer = np.asarray(numer, dtype=float)
    return np.divide(numer, denom, out=np.zeros(len(numer)), where=np.asarray(denom) > 0)


def _member_index(idx: pd.Index, flights: pd.DataFrame) -> np.ndarray:
    if flights.empty:
        return np.zeros(0, dtype=np.int64)
    ids = flights[Col.MEMBER_ID]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        cat_pos = idx.get_indexer(pd.Index(np.asarray(ids.cat.categories.astype(str), dtype=object)))
        raw = ids.cat.codes.to_numpy().astype(np.int64)
        return np.where(raw >= 0, cat_pos[np.maximum(raw, 0)] if len(cat_pos) else -1, -1)
    return idx.get_indexer(pd.Index(ids.astype(str).to_numpy(dtype=object))).astype(np.int64)


def _weekday(flights: pd.DataFrame) -> np.ndarray:
    """Day of week (Mon 0) of each flight, in the time zone the departure is recorded in."""
    col = Col.DEPARTURE_TIME if Col.DEPARTURE_TIME in flights.columns else Col.FLIGHT_DATE
    t = flights[col]
    if not pd.api.types.is_datetime64_any_dtype(t):
        t = datetime_values(t)
    return t.dt.dayofweek.to_numpy()


def _short_stay_legs(
    m: np.ndarray, t: np.ndarray, o: np.ndarray, d: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Flags flights that are a leg of an out-and-back on the same route within SHORT_STAY_DAYS."""
    rows = np.flatnonzero(mask)
    flag = np.zeros(len(m), dtype=bool)
    if len(rows) < 2:
        return flag
    # sort by member, then time: rank the times once, then one argsort of a combined integer key
    t_rank = np.empty(len(rows), dtype=np.int64)
    t_rank[np.argsort(t[rows], kind="stable")] = np.arange(len(rows))
    order = rows[np.argsort(m[rows].astype(np.int64) * len(rows) + t_rank)]
    mo, to, oo, do = m[order], t[order], o[order], d[order]
    same = mo[1:] == mo[:-1]
    back = (oo[1:] == do[:-1]) & (do[1:] == oo[:-1]) & (oo[1:] != do[1:])
    close = (to[1:] - to[:-1]) <= np.timedelta64(SHORT_STAY_DAYS, "D")
    out_leg = same & back & close
    flag[order[:-1][out_leg]] = True
    flag[order[1:][out_leg]] = True
    return flag


def _top_routes(
    mm: np.ndarray,
    o: np.ndarray,
    d: np.ndarray,
    airports: np.ndarray,
    cabin: np.ndarray,
    cabin_vocab: tuple[str, ...],
    mask: np.ndarray,
    home: np.ndarray,
    n: int,
) -> dict[str, np.ndarray]:
    route_label = np.full(n, NONE, dtype=object)
    route_count = np.zeros(n, dtype=np.int64)
    cabin_label = np.full(n, NONE, dtype=object)
    cabin_count = np.zeros(n, dtype=np.int64)
    ok = mask & (o >= 0) & (d >= 0)
    if ok.any():
        a = len(airports)
        lo = np.minimum(o[ok], d[ok])
        hi = np.maximum(o[ok], d[ok])
        route = lo * a + hi
        member = mm[ok]
        # most flights first; ties to the alphabetically first route (codes follow alphabetical order)
        bm, br, bn = _most_frequent(member, route, a * a)
        lo_code, hi_code = airports[br // a], airports[br % a]
        home_hi = hi_code == home[bm]
        first = np.where(home_hi, hi_code, lo_code)
        second = np.where(home_hi, lo_code, hi_code)
        route_label[bm] = [f"{x}-{y}" for x, y in zip(first, second, strict=True)]
        route_count[bm] = bn
        # the cabin most flown on the member's top route
        top_of_member = np.full(n, -1, dtype=np.int64)
        top_of_member[bm] = br
        on_top = route == top_of_member[member]
        cab = cabin[ok][on_top]
        k = len(cabin_vocab)
        known = cab >= 0
        cab_counts = np.bincount(member[on_top][known] * k + cab[known], minlength=n * k).reshape(n, k)
        cabin_label = _argmax_label(cab_counts, cabin_vocab)
        cabin_count = cab_counts.max(axis=1).astype(np.int64) if k else cabin_count
    return {
        ProfileCol.TOP_ROUTE: route_label,
        ProfileCol.TOP_ROUTE_FLIGHTS: route_count,
        ProfileCol.TOP_ROUTE_CABIN: cabin_label,
        ProfileCol.TOP_ROUTE_CABIN_FLIGHTS: cabin_count,
    }


def _top_destination(
    mm: np.ndarray, d: np.ndarray, airports: np.ndarray, home: np.ndarray, mask: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    label = np.full(n, NONE, dtype=object)
    count = np.zeros(n, dtype=np.int64)
    ok = mask & (d >= 0)
    if ok.any():
        member, dest = mm[ok], d[ok]
        away = airports[dest] != home[member]
        bm, bd, bn = _most_frequent(member[away], dest[away], len(airports))
        label[bm] = airports[bd]
        count[bm] = bn
    return {ProfileCol.TOP_DESTINATION: label, ProfileCol.TOP_DESTINATION_FLIGHTS: count}


def _most_frequent(member: np.ndarray, value: np.ndarray, n_values: int) -> tuple[np.ndarray, ...]:
    """Per member (ascending): the value (a code in ``0..n_values-1``) with the most rows, ties to the
    lowest code, and its count - as arrays ``(members, values, counts)``. Integer keys and one sort."""
    keys, counts = np.unique(member.astype(np.int64) * n_values + value, return_counts=True)
    members, values = keys // n_values, keys % n_values
    order = np.lexsort((values, -counts, members))
    first = order[np.r_[True, members[order][1:] != members[order][:-1]]] if len(order) else order
    return members[first], values[first], counts[first].astype(np.int64)


def _tier_progress_arrays(tier: np.ndarray, km12: np.ndarray, seg12: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised :func:`tier_progress`."""
    rules = {str(r.tier): r for r in TIER_RULES}
    rank = pd.Index([str(t) for t in TIER_ORDER]).get_indexer(pd.Index(tier))
    names = np.array([str(t) for t in TIER_ORDER] + [NONE], dtype=object)
    nxt = names[np.minimum(rank + 1, len(TIER_ORDER))]

    def thresholds(labels: np.ndarray, attr: str) -> np.ndarray:
        keys = list(rules)
        table = np.array([getattr(rules[k], attr) for k in keys] + [0], dtype=np.int64)
        pos = pd.Index(keys).get_indexer(pd.Index(labels, dtype=object))
        return table[np.where(pos >= 0, pos, len(keys))]

    has_next = nxt != NONE
    has_rule = np.isin(tier, list(rules))
    return {
        ProfileCol.NEXT_TIER: nxt,
        ProfileCol.KM_TO_NEXT_TIER: np.where(
            has_next, np.maximum(thresholds(nxt, "qualify_km") - km12, 0), 0
        ),
        ProfileCol.SEGMENTS_TO_NEXT_TIER: np.where(
            has_next, np.maximum(thresholds(nxt, "qualify_segments") - seg12, 0), 0
        ),
        ProfileCol.KM_TO_RETAIN: np.where(has_rule, np.maximum(thresholds(tier, "retain_km") - km12, 0), 0),
        ProfileCol.SEGMENTS_TO_RETAIN: np.where(
            has_rule, np.maximum(thresholds(tier, "retain_segments") - seg12, 0), 0
        ),
    }


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col, kind in PROFILE_COLUMNS.items():
        if kind == "int":
            frame[col] = frame[col].astype(np.int64)
        elif kind == "float":
            frame[col] = frame[col].astype(np.float64)
        elif kind == "bool":
            frame[col] = frame[col].astype(bool)
        elif not pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].astype(str)
    return frame


# ----------------------------------------------------------------------------------------------------
# Dataset-level entry points
# ----------------------------------------------------------------------------------------------------


def build_member_profiles_with_context(
    dataset_dir: Path | str,
    as_of: datetime | None = None,
    *,
    context: ProfileContext | None = None,
    segment_model: SegmentModel | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, ProfileContext]:
    """Like :func:`build_member_profiles`, also returning the :class:`ProfileContext` (save it with the
    model so the service can recompute a member online). A given ``context`` is used as is (its ``as_of``
    wins)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    members = load_members(root)
    flights = load_flights(root)
    lrfmc = fit_rows = None
    if flights.empty and has_table(root, "member_aggregates"):
        # imported customer-value data: LRFMC from the aggregates, segments fitted on the textbook-cleaned
        # rows
        aggregates = read_table(root, "member_aggregates")
        lrfmc = lrfmc_from_aggregates(aggregates)
        fit_rows = lrfmc_from_aggregates(clean_textbook(aggregates))
        if members.empty:  # the cleaned file has no member profiles: members are the aggregates' rows
            members = pd.DataFrame(
                {
                    Col.MEMBER_ID: lrfmc[LrfmcCol.MEMBER_ID],
                    Col.ENROL_DATE: aggregates[Col.FFP_DATE].to_numpy(),
                }
            )
        else:
            members = members[members[Col.MEMBER_ID].astype(str).isin(set(lrfmc[LrfmcCol.MEMBER_ID]))]
    if context is None:
        as_of_ts = resolve_as_of(root, as_of)
        if lrfmc is None:  # computed once here, for the segment fit and the profiles alike
            lrfmc = fit_rows = lrfmc_from_flights(members, flights, as_of_ts, FareReference.fit(flights))
        context = fit_profile_context(members, flights, as_of_ts,
                                      segment_model=segment_model, seed=seed, lrfmc=fit_rows)  # fmt: skip
    # the balance as of the profiles' time, from the miles ledger (the members table holds the end balance)
    balance = balances_as_of(root, members[Col.MEMBER_ID].astype(str), context.as_of)
    if balance is not None:
        members = members.assign(**{Col.MILES_BALANCE: balance})
    return compute_profiles(members, flights, context, lrfmc=lrfmc), context


def build_member_profiles(
    dataset_dir: Path | str,
    as_of: datetime | None = None,
    *,
    context: ProfileContext | None = None,
    segment_model: SegmentModel | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One profile row per member of a dataset (columns :data:`PROFILE_COLUMNS`, documented above).

    ``as_of`` defaults to the manifest's ``as_of``, else the latest flight/event time. The segment labels come
    from ``segment_model`` if given, else from a model fitted (with ``seed``) on this dataset's flyers.
    """
    profiles, _ = build_member_profiles_with_context(
        dataset_dir, as_of, context=context, segment_model=segment_model, seed=seed
    )
    return profiles


# ----------------------------------------------------------------------------------------------------
# Online access
# ----------------------------------------------------------------------------------------------------


def profile_for_member(
    member: Mapping[str, Any] | pd.DataFrame, flights: pd.DataFrame, context: ProfileContext
) -> dict[str, Any]:
    """One member's profile, computed with the same code and context as the batch, as a JSON-safe dict.

    ``member`` is the member's row (a mapping or a one-row frame); ``flights`` the member's flights (others'
    are ignored).
    """
    frame = pd.DataFrame([dict(member)]) if isinstance(member, Mapping) else member
    if len(frame) != 1:
        raise ProfileError(f"profile_for_member needs exactly one member row (got {len(frame)})")
    return profile_records(compute_profiles(frame, flights, context))[0]


def profile_records(profiles: pd.DataFrame) -> list[dict[str, Any]]:
    """Profile rows as JSON-safe dicts of ``str``/``int``/``float``/``bool`` (what the online store holds)."""
    cols = list(PROFILE_COLUMNS)
    missing = [c for c in cols if c not in profiles.columns]
    if missing:
        raise ProfileError(f"not a profile frame: missing column(s) {missing}")
    converted = {c: _python_values(profiles[c], PROFILE_COLUMNS[c]) for c in cols}
    return [dict(zip(cols, row, strict=True)) for row in zip(*(converted[c] for c in cols), strict=True)]


def iter_profile_records(profiles: pd.DataFrame, batch_size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """:func:`profile_records` in batches (for pipelined bulk loads of a large frame)."""
    for start in range(0, len(profiles), batch_size):
        yield profile_records(profiles.iloc[start : start + batch_size])


def profile_row(profiles: pd.DataFrame, member_id: str) -> dict[str, Any]:
    """The row-dict view of one member of a batch frame (KeyError if the member is not in it)."""
    hit = profiles.loc[profiles[ProfileCol.MEMBER_ID] == str(member_id)]
    if hit.empty:
        raise KeyError(f"member {member_id!r} has no profile")
    return profile_records(hit)[0]


def decode_profile(mapping: Mapping[str | bytes, Any]) -> dict[str, Any]:
    """Typed profile dict from string/bytes values (e.g. a Redis hash written from :func:`profile_records`).

    Booleans are accepted as ``True/False``, ``true/false`` or ``1/0``. Unknown keys are ignored; missing
    columns raise :class:`ProfileError`.
    """
    clean = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in mapping.items()}
    out: dict[str, Any] = {}
    for col, kind in PROFILE_COLUMNS.items():
        if col not in clean:
            raise ProfileError(f"profile is missing column {col!r}")
        v = clean[col]
        text = v.decode() if isinstance(v, bytes) else v
        if kind == "int":
            out[col] = int(float(text))
        elif kind == "float":
            out[col] = float(text)
        elif kind == "bool":
            out[col] = text if isinstance(text, bool) else str(text).strip().lower() in {"true", "1"}
        else:
            out[col] = str(text)
    return out


def _python_values(series: pd.Series, kind: str) -> list[Any]:
    if kind == "int":
        return [int(v) for v in series.to_numpy()]
    if kind == "float":
        return [float(v) for v in series.to_numpy()]
    if kind == "bool":
        return [bool(v) for v in series.to_numpy()]
    return [str(v) for v in series.to_numpy()]
