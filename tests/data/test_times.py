"""Times as the data layer stores them: naive UTC, whatever form they arrive in."""

from __future__ import annotations

import pandas as pd

from recsys.data.times import to_utc_naive


def test_datetime_columns_come_back_as_naive_utc() -> None:
    naive = pd.Series(pd.to_datetime(["2026-03-01 08:00", None]))
    aware = pd.Series(pd.to_datetime(["2026-03-01 16:00"]).tz_localize("Asia/Shanghai"))
    assert to_utc_naive(naive).tolist()[0] == pd.Timestamp("2026-03-01 08:00")
    assert to_utc_naive(naive).isna().tolist() == [False, True]
    assert to_utc_naive(aware).tolist() == [pd.Timestamp("2026-03-01 08:00")]
    assert to_utc_naive(aware).dt.tz is None
    index = pd.DatetimeIndex(["2026-03-01 16:00"]).tz_localize("Asia/Shanghai")
    assert list(to_utc_naive(index)) == [pd.Timestamp("2026-03-01 08:00")]


def test_strings_and_scalars_are_parsed() -> None:
    assert to_utc_naive(pd.Series(["2026-03-01T16:00:00+08:00"])).tolist() == [
        pd.Timestamp("2026-03-01 08:00")
    ]
    assert to_utc_naive("2026-03-01T16:00:00+08:00") == pd.Timestamp("2026-03-01 08:00")
    assert to_utc_naive(pd.Series(["2026-03-01 08:00"])).tolist() == [pd.Timestamp("2026-03-01 08:00")]
