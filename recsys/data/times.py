"""Times as the data layer stores them: naive UTC, and the end of a history a manifest's ``as_of`` names."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pandas as pd


def to_utc_naive(values: pd.Series | pd.DatetimeIndex | datetime | pd.Timestamp | str) -> Any:
    """Datetimes as naive UTC (tz-aware values are converted, naive values are taken as UTC already); a
    Series or index stays one, a scalar becomes a ``pd.Timestamp``."""
    if isinstance(values, datetime | pd.Timestamp | str):
        ts = pd.Timestamp(values)
        return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts
    # Already datetimes (what the tables store): no pd.to_datetime, which walks the values in Python to
    # decide whether to cache them (a tenth of building the interaction matrix)
    if isinstance(values, pd.Series | pd.DatetimeIndex) and pd.api.types.is_datetime64_any_dtype(values):
        s = values
    else:
        s = pd.to_datetime(values)
    if isinstance(s, pd.Series):
        if s.dt.tz is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return s
    return s.tz_convert("UTC").tz_localize(None) if s.tz is not None else s


def as_of_end(as_of: datetime | date | str) -> pd.Timestamp:
    """The instant an ``as_of`` stands for, as naive UTC: a bare date (``2026-06-30`` or a ``date``) names the
    last day of history — the history ends at the next midnight — and a time is the end itself."""
    if isinstance(as_of, date) and not isinstance(as_of, datetime):
        return pd.Timestamp(as_of) + pd.Timedelta(days=1)
    if isinstance(as_of, str) and len(as_of.strip()) == 10:
        return to_utc_naive(as_of.strip()) + pd.Timedelta(days=1)
    return to_utc_naive(as_of)
