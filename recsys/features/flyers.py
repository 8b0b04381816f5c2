"""The flyer tables of a dataset as profiles and segments read them: members, flights and the time the
profile windows end. Below :mod:`recsys.features.profiles` and :mod:`recsys.features.segmentation`, which
both read them."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from recsys.data.layout import has_table, iter_table, read_manifest, read_table, table_path
from recsys.data.times import as_of_end
from recsys.features.lrfmc import datetime_values, departure_times
from recsys.schema import FLIGHTS, Col

# Flight columns the profiles read (optional ones may be missing; they then give the default).
FLIGHT_COLUMNS: tuple[str, ...] = (
    Col.MEMBER_ID,
    Col.DEPARTURE_TIME,
    Col.ORIGIN,
    Col.DESTINATION,
    Col.CABIN,
    Col.FARE_CLASS,
    Col.DISTANCE_KM,
    Col.FARE_PAID,
    Col.MEAL_CODE,
    Col.BAGS,
    Col.LOUNGE_USED,
)
MEMBER_COLUMNS: tuple[str, ...] = (
    Col.MEMBER_ID,
    Col.ENROL_DATE,
    Col.TIER,
    Col.HOME_AIRPORT,
    Col.TIME_ZONE,
    Col.MILES_BALANCE,
    Col.CHANNEL,
)
_CATEGORICAL_FLIGHT_COLUMNS = (
    Col.MEMBER_ID,
    Col.ORIGIN,
    Col.DESTINATION,
    Col.CABIN,
    Col.FARE_CLASS,
    Col.MEAL_CODE,
)


class ProfileError(ValueError):
    """Input profiles cannot be built from (unknown tier, missing columns, no time to anchor the windows)."""


def resolve_as_of(dataset_dir: Path | str, as_of: datetime | date | str | None = None) -> pd.Timestamp:
    """The end of the profile windows: ``as_of`` if given, else the manifest's ``as_of``, else the latest
    flight or interaction time (see :func:`recsys.data.times.as_of_end` for bare dates)."""
    if as_of is not None:
        return as_of_end(as_of)
    root = Path(dataset_dir)
    manifest = read_manifest(root)
    if manifest.get("as_of"):
        return as_of_end(manifest["as_of"])
    latest: pd.Timestamp | None = None
    for table, col in (("flights", Col.DEPARTURE_TIME), ("interactions", Col.EVENT_TIME)):
        if not has_table(root, table):
            continue
        for part in iter_table(root, table, columns=[col]):
            if len(part):
                tmax = departure_times(part.rename(columns={col: Col.DEPARTURE_TIME})).max()
                if pd.notna(tmax) and (latest is None or tmax > latest):
                    latest = tmax
    if latest is None and has_table(root, "member_aggregates"):
        load = datetime_values(read_table(root, "member_aggregates", columns=[Col.LOAD_TIME])[Col.LOAD_TIME])
        latest = load.max() if len(load) else None
    if latest is None:
        raise ProfileError(f"{root}: no as_of in the manifest and no flights or events to take it from")
    return latest


def load_members(dataset_dir: Path | str) -> pd.DataFrame:
    """The members table with the columns profiles use (missing optional columns are allowed)."""
    root = Path(dataset_dir)
    if not has_table(root, "members") and has_table(root, "member_aggregates"):
        return pd.DataFrame(
            {Col.MEMBER_ID: pd.Series(dtype=object), Col.ENROL_DATE: pd.Series(dtype="M8[ns]")}
        )
    members = read_table(root, "members")
    if Col.MEMBER_ID not in members.columns or Col.ENROL_DATE not in members.columns:
        raise ProfileError(f"{root}: members table lacks {Col.MEMBER_ID!r} or {Col.ENROL_DATE!r}")
    return members[[c for c in MEMBER_COLUMNS if c in members.columns]]


def load_flights(dataset_dir: Path | str) -> pd.DataFrame:
    """All flights with the columns profiles use, read part by part with string columns as categoricals."""
    root = Path(dataset_dir)
    if not has_table(root, "flights"):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FLIGHT_COLUMNS})
    first = next(iter(sorted(table_path(root, FLIGHTS).glob("part-*.parquet"))), None)
    present = set(pq.read_schema(first).names) if first is not None else set(FLIGHT_COLUMNS)
    cols = [c for c in FLIGHT_COLUMNS if c in present]
    if Col.DEPARTURE_TIME not in present and Col.FLIGHT_DATE in present:
        cols.append(Col.FLIGHT_DATE)
    parts: list[pd.DataFrame] = []
    # only the columns used (half the memory); strings straight from parquet's dictionaries, with the
    # categories astype("category") would give (the observed values, sorted), without a Python string per row
    for part in iter_table(root, "flights", columns=cols, categorical=True):
        for c in _CATEGORICAL_FLIGHT_COLUMNS:
            if c in part.columns:
                part[c] = _sorted_categories(part[c])
        parts.append(part)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FLIGHT_COLUMNS})
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {}
    for c in parts[0].columns:
        if c in _CATEGORICAL_FLIGHT_COLUMNS:
            merged[c] = union_categoricals([p[c] for p in parts])
        else:
            merged[c] = np.concatenate([p[c].to_numpy() for p in parts])
    return pd.DataFrame(merged)


def _sorted_categories(values: pd.Series) -> pd.Series:
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return values.astype("category")
    codes = values.cat.codes.to_numpy()
    if (np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)) == 0).any():
        values = values.cat.remove_unused_categories()  # a sort of every code: only when some are unused
    return values.cat.reorder_categories(values.cat.categories.sort_values())
