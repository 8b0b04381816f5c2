"""LRFMC customer-value features, from flights or from per-member aggregates, and the textbook cleaning.

LRFMC (the classic airline customer-value model, see ``../shared/domain.md`` and the air-data README):

* ``L`` - length of membership in months: days from enrolment (``FFP_DATE``) to the observation end
  (``LOAD_TIME`` / ``as_of``) divided by 30.
* ``R`` - recency in months: days from the member's last flight to the observation end (``LAST_TO_END``) / 30.
  A member who never flew gets ``R = L`` (no flight since joining) - never NaN.
* ``F`` - frequency: flights flown in the observation window (``FLIGHT_COUNT``).
* ``M`` - mileage: kilometres flown in the observation window (``SEG_KM_SUM``).
* ``C`` - average discount / cabin level (``avg_discount``): the mean, over the window's flights, of the fare
  paid divided by the full Economy fare of the route. 1.0 is a full-fare Economy ticket, below 1 a discounted
  one, above 1 a premium cabin; capped at :data:`C_CAP` (the real data's maximum). A member with no flights
  has ``C = 0`` (as in the real data, where zero-fare members have ``avg_discount = 0``).

Two sources give the same five columns (:data:`LRFMC_COLUMNS`, plus ``member_id``):

* :func:`lrfmc_from_aggregates` - the ``member_aggregates`` table (``schema.MEMBER_AGGREGATES``) written by
  the air-data importer, with the README's derivation.
* :func:`lrfmc_from_flights` - a dataset's canonical members and flights. The observation window is the
  :data:`OBSERVATION_DAYS` (two years, like the real data: ``LAST_TO_END`` runs to 731) before ``as_of``.
  For ``C`` on generated data, the full-fare reference of a route is learned by :class:`FareReference` from
  the flights booked in the full-fare Economy class ``Y`` (median fare of the route, or a per-km rate times
  distance for routes with too few such tickets); a flight without a usable fare falls back to
  :data:`CABIN_LEVEL_FALLBACK`.

:func:`clean_textbook` is the textbook cleaning of the raw customer-value data, written out and tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.times import to_utc_naive
from recsys.ids import row_ids
from recsys.schema import MEMBER_AGGREGATES, Cabin, Col

DAYS_PER_MONTH = 30.0
OBSERVATION_DAYS = 730
C_CAP = 1.5
FULL_FARE_CLASS = "Y"
MIN_ROUTE_FULL_FARES = 5
# Fare level used when a flight's fare cannot be compared to a reference (documented fallback, cabin based).
CABIN_LEVEL_FALLBACK: dict[str, float] = {Cabin.Y: 0.75, Cabin.W: 1.0, Cabin.C: 1.3, Cabin.F: 1.5}


class LrfmcCol:
    """Column names of an LRFMC frame."""

    MEMBER_ID = Col.MEMBER_ID
    L = "L"
    R = "R"
    F = "F"
    M = "M"
    C = "C"


LRFMC_COLUMNS: tuple[str, ...] = (LrfmcCol.L, LrfmcCol.R, LrfmcCol.F, LrfmcCol.M, LrfmcCol.C)

# Columns of the raw air-data files (README) and the schema columns they become.
AIR_DATA_COLUMNS: dict[str, str] = {
    "FFP_DATE": Col.FFP_DATE,
    "LOAD_TIME": Col.LOAD_TIME,
    "FLIGHT_COUNT": Col.FLIGHT_COUNT,
    "SEG_KM_SUM": Col.SEG_KM_SUM,
    "LAST_TO_END": Col.LAST_TO_END,
    "avg_discount": Col.AVG_DISCOUNT,
}
FARE_COLUMNS: tuple[str, ...] = ("SUM_YR_1", "SUM_YR_2")


class LrfmcError(ValueError):
    """Input that LRFMC cannot be computed from (missing columns, null or negative values)."""


# ----------------------------------------------------------------------------------------------------
# From aggregates (the real customer-value data)
# ----------------------------------------------------------------------------------------------------


def read_air_data_csv(path: Path | str) -> pd.DataFrame:
    """Read an air-data CSV (``data_selected.csv`` or a raw part) into the ``member_aggregates`` shape.

    Handles the UTF-8 BOM and CRLF. Dates are parsed with the year-first (``2006/11/2``) or month-first
    (``11/2/2006``) format the files use. ``member_id`` is ``MEMBER_NO`` when present, else
    :func:`recsys.ids.row_ids` (``data_selected-000001``): the same id the air-data importer gives.
    The raw fare columns ``SUM_YR_1``/``SUM_YR_2`` are kept when present, for :func:`clean_textbook`.
    """
    raw = pd.read_csv(path, encoding="utf-8-sig")
    missing = [c for c in AIR_DATA_COLUMNS if c not in raw.columns]
    if missing:
        raise LrfmcError(f"{path}: missing air-data column(s) {missing}")
    out = pd.DataFrame(
        {
            Col.MEMBER_ID: (
                raw["MEMBER_NO"].astype("int64").astype(str)
                if "MEMBER_NO" in raw.columns
                else pd.Series(row_ids(path, np.arange(1, len(raw) + 1)), dtype=object)
            )
        }
    )
    for src, dst in AIR_DATA_COLUMNS.items():
        out[dst] = raw[src].to_numpy()
    for col in (Col.FFP_DATE, Col.LOAD_TIME):
        out[col] = _parse_air_date(out[col], col)
    for col in FARE_COLUMNS:
        if col in raw.columns:
            out[col] = raw[col].to_numpy()
    return out


def _parse_air_date(values: pd.Series, name: str) -> pd.Series:
    text = values.astype(str)
    year_first = text.str.match(r"^\d{4}/")
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if year_first.any():
        parsed[year_first] = pd.to_datetime(text[year_first], format="%Y/%m/%d", errors="coerce")
    if (~year_first).any():
        parsed[~year_first] = pd.to_datetime(text[~year_first], format="%m/%d/%Y", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LrfmcError(f"column {name}: unparseable date {text.iloc[row]!r} at row {row + 1}")
    return parsed


def clean_textbook(aggregates: pd.DataFrame) -> pd.DataFrame:
    """The textbook cleaning of the airline customer-value data, as an explicit rule.

    The textbook keeps a member when the fare paid in either year is non-zero, or when the fare is zero
    because the member genuinely flew nothing chargeable: ``avg_discount == 0`` *and*
    ``SEG_KM_SUM == 0``. Rows with a null fare are dropped. Every other zero-fare row (free tickets with flown
    kilometres) is dropped.

    * With the raw fare columns ``SUM_YR_1``/``SUM_YR_2`` present, the rule is applied as written.
    * Without them (``data_selected.csv`` and the ``member_aggregates`` table), null-fare rows are already
      gone and the upstream cleaning kept zero-fare rows only where ``avg_discount == 0``; so ``avg_discount
      == 0`` identifies the zero-fare rows, and the rule drops those with ``SEG_KM_SUM > 0``. On
      ``data_selected.csv`` this leaves 62,044 of 62,051 rows (README).

    Returns the kept rows (index preserved); the input is not modified.
    """
    _require(aggregates, (Col.SEG_KM_SUM, Col.AVG_DISCOUNT), "clean_textbook")
    km_zero = aggregates[Col.SEG_KM_SUM].to_numpy() == 0
    discount_zero = aggregates[Col.AVG_DISCOUNT].to_numpy() == 0
    if all(c in aggregates.columns for c in FARE_COLUMNS):
        fares = aggregates[list(FARE_COLUMNS)]
        has_fares = fares.notna().all(axis=1).to_numpy()
        fare_nonzero = (fares.fillna(0).to_numpy() != 0).any(axis=1)
        keep = has_fares & (fare_nonzero | (km_zero & discount_zero))
    else:
        zero_fare = discount_zero
        keep = ~zero_fare | km_zero
    return aggregates.loc[keep]


def lrfmc_from_aggregates(aggregates: pd.DataFrame) -> pd.DataFrame:
    """L, R, F, M, C from ``member_aggregates`` rows: L = days FFP_DATE→LOAD_TIME / 30, R = LAST_TO_END / 30,
    F = FLIGHT_COUNT, M = SEG_KM_SUM, C = avg_discount. Raises :class:`LrfmcError` on missing columns, nulls
    or negative values."""
    _require(aggregates, tuple(MEMBER_AGGREGATES.columns), "lrfmc_from_aggregates")
    ffp = datetime_values(aggregates[Col.FFP_DATE])
    load = datetime_values(aggregates[Col.LOAD_TIME])
    out = pd.DataFrame(
        {
            LrfmcCol.MEMBER_ID: aggregates[Col.MEMBER_ID].astype(str).to_numpy(),
            LrfmcCol.L: ((load - ffp).dt.days / DAYS_PER_MONTH).to_numpy(dtype=float),
            LrfmcCol.R: aggregates[Col.LAST_TO_END].to_numpy(dtype=float) / DAYS_PER_MONTH,
            LrfmcCol.F: aggregates[Col.FLIGHT_COUNT].to_numpy(dtype=float),
            LrfmcCol.M: aggregates[Col.SEG_KM_SUM].to_numpy(dtype=float),
            LrfmcCol.C: aggregates[Col.AVG_DISCOUNT].to_numpy(dtype=float),
        }
    )
    _check_lrfmc(out)
    return out


# ----------------------------------------------------------------------------------------------------
# From flights (generated or imported canonical datasets)
# ----------------------------------------------------------------------------------------------------


def factorize_sorted(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (-1 for missing) and the sorted vocabulary of a string or categorical column, without
    materialising millions of Python strings for categoricals."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = np.asarray(values.cat.categories.astype(str), dtype=object)
        order = np.argsort(cats, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        raw = values.cat.codes.to_numpy().astype(np.int64)
        codes = np.where(raw >= 0, rank[np.maximum(raw, 0)] if len(rank) else -1, -1)
        return codes, cats[order]
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray([str(u) for u in uniques], dtype=object)


def recode(codes: np.ndarray, uniques: np.ndarray, vocab: Any) -> np.ndarray:
    """Re-express codes over ``uniques`` as indices into ``vocab`` (-1 where absent or missing)."""
    pos = pd.Index(list(vocab), dtype=object).get_indexer(pd.Index(list(uniques), dtype=object))
    if len(pos) == 0:
        return np.full(len(codes), -1, dtype=np.int64)
    return np.where(codes >= 0, pos[np.maximum(codes, 0)], -1).astype(np.int64)


def map_values(values: pd.Series, mapping: Mapping[str, float], default: float) -> np.ndarray:
    """``mapping[value]`` for each value of a string or categorical column (``default`` if unmapped)."""
    codes, uniques = factorize_sorted(values)
    table = np.array([float(mapping.get(u, default)) for u in uniques] + [default], dtype=float)
    return table[np.where(codes >= 0, codes, len(uniques))]


@dataclass(frozen=True)
class RouteCodes:
    """Flights' airports and undirected routes as integers (fast on millions of flights).

    ``airports`` is sorted alphabetically; ``origin``/``destination`` index into it; an undirected route is
    ``lo * len(airports) + hi`` with ``lo <= hi`` so that PEK->CTU and CTU->PEK are the same
    route ``"CTU-PEK"``.
    """

    airports: np.ndarray
    origin: np.ndarray
    destination: np.ndarray

    @classmethod
    def of(cls, flights: pd.DataFrame) -> RouteCodes:
        o, o_uni = factorize_sorted(flights[Col.ORIGIN])
        d, d_uni = factorize_sorted(flights[Col.DESTINATION])
        airports = np.asarray(sorted(set(o_uni) | set(d_uni)), dtype=object)
        return cls(airports, recode(o, o_uni, airports), recode(d, d_uni, airports))

    @property
    def route(self) -> np.ndarray:
        lo = np.minimum(self.origin, self.destination)
        hi = np.maximum(self.origin, self.destination)
        return lo * len(self.airports) + hi

    def route_label(self, route: np.ndarray) -> np.ndarray:
        """``"AAA-BBB"`` labels (alphabetical order) of route codes."""
        a = len(self.airports)
        route = np.asarray(route, dtype=np.int64)
        lo, hi = self.airports[route // a], self.airports[route % a]
        return np.array([f"{x}-{y}" for x, y in zip(lo, hi, strict=True)], dtype=object)


def route_keys(origin: pd.Series, destination: pd.Series) -> pd.Series:
    """Undirected route key ``"AAA-BBB"`` (airports in alphabetical order) for each flight."""
    rc = RouteCodes.of(pd.DataFrame({Col.ORIGIN: origin.to_numpy(), Col.DESTINATION: destination.to_numpy()}))
    uniq, inverse = np.unique(rc.route, return_inverse=True)
    return pd.Series(rc.route_label(uniq)[inverse], index=origin.index)


@dataclass(frozen=True)
class FareReference:
    """Full Economy fare per route, learned from flights booked in the full-fare class ``Y``.

    ``route_fares`` maps an undirected route key (:func:`route_keys`) to the median ``Y``-class fare on it
    (routes with at least :data:`MIN_ROUTE_FULL_FARES` such tickets); other routes use
    ``per_km * distance_km`` where ``per_km`` is the median ``Y``-class fare per km over all routes.
    ``per_km`` is None when nothing could be learned; fare levels then come from :data:`CABIN_LEVEL_FALLBACK`.
    """

    per_km: float | None
    route_fares: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, flights: pd.DataFrame) -> FareReference:
        need = (Col.ORIGIN, Col.DESTINATION, Col.FARE_CLASS, Col.DISTANCE_KM, Col.FARE_PAID)
        if any(c not in flights.columns for c in need) or flights.empty:
            return cls(per_km=None)
        fare = pd.to_numeric(flights[Col.FARE_PAID], errors="coerce").to_numpy(dtype=float)
        km = pd.to_numeric(flights[Col.DISTANCE_KM], errors="coerce").to_numpy(dtype=float)
        full = (flights[Col.FARE_CLASS] == FULL_FARE_CLASS).to_numpy(dtype=bool) & (fare > 0) & (km > 0)
        if not full.any():
            # No full-fare tickets: take the 90th percentile of Economy fares per km as "full fare".
            econ = (flights[Col.CABIN] == str(Cabin.Y)).to_numpy(dtype=bool) & (fare > 0) & (km > 0)
            if not econ.any():
                return cls(per_km=None)
            return cls(per_km=float(np.quantile(fare[econ] / km[econ], 0.9)))
        per_km = float(np.median(fare[full] / km[full]))
        sub = flights.loc[full, [Col.ORIGIN, Col.DESTINATION]]
        keys = route_keys(sub[Col.ORIGIN], sub[Col.DESTINATION])
        stats = (
            pd.DataFrame({"k": keys.to_numpy(), "f": fare[full]}).groupby("k")["f"].agg(["median", "size"])
        )
        stats = stats[stats["size"] >= MIN_ROUTE_FULL_FARES]
        return cls(per_km=per_km, route_fares={str(k): float(v) for k, v in stats["median"].items()})

    def levels(self, flights: pd.DataFrame) -> np.ndarray:
        """Fare level of each flight: fare paid / full Economy fare of its route, capped at :data:`C_CAP`."""
        n = len(flights)
        if Col.CABIN in flights.columns:
            fallback = map_values(flights[Col.CABIN], CABIN_LEVEL_FALLBACK, CABIN_LEVEL_FALLBACK[Cabin.Y])
        else:
            fallback = np.full(n, CABIN_LEVEL_FALLBACK[Cabin.Y])
        if self.per_km is None or n == 0 or Col.FARE_PAID not in flights.columns:
            return fallback
        fare = pd.to_numeric(flights[Col.FARE_PAID], errors="coerce").to_numpy(dtype=float)
        km = pd.to_numeric(flights[Col.DISTANCE_KM], errors="coerce").to_numpy(dtype=float)
        ref = km * self.per_km
        if self.route_fares:
            rc = RouteCodes.of(flights)
            a = len(rc.airports)
            position = {code: i for i, code in enumerate(rc.airports)}
            table = np.full(a * a, np.nan)  # dense lookup by route code: no sort of millions of flights
            for key, fare_ref in self.route_fares.items():
                lo, _, hi = key.partition("-")
                if lo in position and hi in position:
                    table[position[lo] * a + position[hi]] = fare_ref
            by_route = table[rc.route]
            ref = np.where(np.isnan(by_route), ref, by_route)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = fare / ref
        ok = np.isfinite(level) & (level >= 0)
        return np.where(ok, np.minimum(level, C_CAP), fallback)

    def to_dict(self) -> dict[str, Any]:
        return {"per_km": self.per_km, "route_fares": dict(self.route_fares)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FareReference:
        per_km = data.get("per_km")
        return cls(
            per_km=None if per_km is None else float(per_km),
            route_fares={str(k): float(v) for k, v in dict(data.get("route_fares", {})).items()},
        )


def datetime_values(values: pd.Series) -> pd.Series:
    """A date/time column as naive UTC ``datetime64[ns]``; Arrow dates are cast in Arrow (``pd.to_datetime``
    iterates them element by element, seconds per million rows)."""
    if isinstance(values.dtype, pd.ArrowDtype):
        arr = pa.array(values)
        if pa.types.is_date(arr.type) or (pa.types.is_timestamp(arr.type) and arr.type.tz is None):
            cast = pc.cast(arr, pa.timestamp("ns"))
            return pd.Series(cast.to_numpy(zero_copy_only=False), index=values.index, name=values.name)
    t = values if pd.api.types.is_datetime64_any_dtype(values) else pd.to_datetime(values)
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t.astype("datetime64[ns]")


def departure_times(flights: pd.DataFrame) -> pd.Series:
    """Each flight's departure time as naive UTC ``datetime64`` (falls back to ``flight_date``)."""
    col = Col.DEPARTURE_TIME if Col.DEPARTURE_TIME in flights.columns else Col.FLIGHT_DATE
    if col not in flights.columns:
        raise LrfmcError(f"flights need a '{Col.DEPARTURE_TIME}' or '{Col.FLIGHT_DATE}' column")
    return datetime_values(flights[col])


def lrfmc_from_flights(
    members: pd.DataFrame,
    flights: pd.DataFrame,
    as_of: datetime | pd.Timestamp,
    fare_reference: FareReference | None = None,
    observation_days: int = OBSERVATION_DAYS,
) -> pd.DataFrame:
    """L, R, F, M, C for every member of ``members`` (in their order) from their flights up to ``as_of``.

    F, M and C count the flights in the ``observation_days`` before ``as_of``; R uses the last flight before
    ``as_of`` whenever it was (``R = L`` for a member who never flew); flights after ``as_of`` are ignored.
    ``fare_reference`` defaults to one fitted on ``flights`` (pass the training one for online consistency).
    """
    _require(members, (Col.MEMBER_ID, Col.ENROL_DATE), "lrfmc_from_flights (members)")
    ref = fare_reference if fare_reference is not None else FareReference.fit(flights)
    as_of_ts = to_utc_naive(as_of)
    idx = pd.Index(members[Col.MEMBER_ID].astype(str))
    n = len(idx)
    enrol = datetime_values(members[Col.ENROL_DATE]).to_numpy()
    membership_days = np.maximum((as_of_ts.to_datetime64() - enrol) / np.timedelta64(1, "D"), 0.0)

    has_flights = len(flights) > 0
    if has_flights:
        _require(flights, (Col.MEMBER_ID, Col.DISTANCE_KM), "lrfmc_from_flights (flights)")
    code = _member_codes(idx, flights) if has_flights else np.zeros(0, dtype=np.int64)
    t = departure_times(flights).to_numpy() if has_flights else np.array([], dtype="datetime64[ns]")
    flown = (code >= 0) & (t <= as_of_ts.to_datetime64())
    in_window = flown & (t > (as_of_ts - pd.Timedelta(days=observation_days)).to_datetime64())

    km = _numeric(flights, Col.DISTANCE_KM) if has_flights else np.zeros(0)
    f = np.bincount(code[in_window], minlength=n).astype(float)
    m = np.bincount(code[in_window], weights=km[in_window], minlength=n)
    level = ref.levels(flights) if has_flights else np.zeros(0)
    c_sum = np.bincount(code[in_window], weights=level[in_window], minlength=n)
    c = np.divide(c_sum, f, out=np.zeros(n), where=f > 0)

    last = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if flown.any():
        last_s = pd.Series(t[flown]).groupby(code[flown]).max()
        last[last_s.index.to_numpy()] = last_s.to_numpy()
    since_last = (as_of_ts.to_datetime64() - last) / np.timedelta64(1, "D")
    recency_days = np.where(np.isnan(since_last), membership_days, since_last)
    out = pd.DataFrame(
        {
            LrfmcCol.MEMBER_ID: idx.to_numpy(),
            LrfmcCol.L: membership_days / DAYS_PER_MONTH,
            LrfmcCol.R: recency_days / DAYS_PER_MONTH,
            LrfmcCol.F: f,
            LrfmcCol.M: m,
            LrfmcCol.C: c,
        }
    )
    return out


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").fillna(0).to_numpy(dtype=float)


def _member_codes(idx: pd.Index, flights: pd.DataFrame) -> np.ndarray:
    """Index of each flight's member in ``idx`` (-1 for flights of members not in it)."""
    if flights.empty:
        return np.zeros(0, dtype=np.int64)
    ids = flights[Col.MEMBER_ID]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        cat_codes = idx.get_indexer(pd.Index(ids.cat.categories.astype(str)))
        raw = ids.cat.codes.to_numpy()
        return np.where(raw >= 0, cat_codes[raw], -1).astype(np.int64)
    return idx.get_indexer(pd.Index(ids.astype(str))).astype(np.int64)


def _require(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LrfmcError(f"{what}: missing column(s) {missing}")


def _check_lrfmc(out: pd.DataFrame) -> None:
    for col in LRFMC_COLUMNS:
        values = out[col].to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise LrfmcError(
                f"LRFMC column {col}: {int(bad.sum())} null or negative value(s), first for member "
                f"{out[LrfmcCol.MEMBER_ID].iloc[row]!r} (row {row + 1}): {values[row]!r}"
            )
