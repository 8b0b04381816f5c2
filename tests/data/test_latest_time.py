"""latest_time: the footer statistics give the same answer as reading the column, and are not trusted where
they cannot tell (no statistics, not a timestamp, all-null groups, time zones)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.layout import _footer_max, latest_event_time, latest_time
from recsys.schema import Col

TABLE = "interactions"  # a partitioned table: a directory of part-*.parquet files


def write_part(root: Path, i: int, values: list[object], *, arrow_type: pa.DataType, **kw: object) -> Path:
    d = root / TABLE
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"part-{i:05d}.parquet"
    table = pa.table({Col.EVENT_TIME: pa.array(values, type=arrow_type), "x": list(range(len(values)))})
    pq.write_table(table, path, row_group_size=2, **kw)  # type: ignore[arg-type]
    return path


def by_reading(root: Path) -> pd.Timestamp:
    values = pd.concat(pd.read_parquet(p)[Col.EVENT_TIME] for p in sorted((root / TABLE).glob("*.parquet")))
    values = pd.to_datetime(values)
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.Timestamp(values.max())


def test_statistics_give_the_latest_time_over_parts_and_row_groups(tmp_path: Path) -> None:
    ts = pa.timestamp("ms")
    t = pd.Timestamp("2026-06-30 23:42:00")
    # the maximum sits in the middle row group of the second part
    write_part(tmp_path, 0, [t - pd.Timedelta(days=3), t - pd.Timedelta(days=1), None], arrow_type=ts)
    write_part(
        tmp_path, 1, [t - pd.Timedelta(days=9), None, t, t - pd.Timedelta(hours=1), None, None], arrow_type=ts
    )
    for part in (tmp_path / TABLE).glob("*.parquet"):
        assert _footer_max(part, Col.EVENT_TIME) is not None  # answered from the footers
    assert latest_time(tmp_path, TABLE, Col.EVENT_TIME) == t == by_reading(tmp_path)
    # over several tables: one the dataset lacks (flights) is skipped, none at all is None
    assert latest_event_time(tmp_path, [(TABLE, Col.EVENT_TIME), ("flights", Col.DEPARTURE_TIME)]) == t
    assert latest_event_time(tmp_path, [("flights", Col.DEPARTURE_TIME)]) is None


def test_time_zones_are_converted_to_naive_utc(tmp_path: Path) -> None:
    local = pd.Timestamp("2026-07-01 07:30", tz="Asia/Shanghai")  # 2026-06-30 23:30 UTC
    write_part(
        tmp_path, 0, [local, local - pd.Timedelta(days=1)], arrow_type=pa.timestamp("us", tz="Asia/Shanghai")
    )
    assert (
        latest_time(tmp_path, TABLE, Col.EVENT_TIME)
        == pd.Timestamp("2026-06-30 23:30")
        == by_reading(tmp_path)
    )


@pytest.mark.parametrize(
    ("values", "arrow_type", "kw"),
    [
        # no statistics written: the column is read
        (
            [pd.Timestamp("2026-01-02"), pd.Timestamp("2026-05-01")],
            pa.timestamp("ms"),
            {"write_statistics": False},
        ),
        # times stored as strings: statistics would compare text, so the column is read
        (["2026-01-02 10:00:00", "2026-05-01 09:00:00", "2026-04-30 23:00:00"], pa.string(), {}),
    ],
)
def test_falls_back_to_reading_when_statistics_cannot_tell(
    tmp_path: Path, values: list[object], arrow_type: pa.DataType, kw: dict[str, object]
) -> None:
    path = write_part(tmp_path, 0, values, arrow_type=arrow_type, **kw)
    assert _footer_max(path, Col.EVENT_TIME) is None
    assert latest_time(tmp_path, TABLE, Col.EVENT_TIME) == by_reading(tmp_path)


def test_no_value_at_all_is_none(tmp_path: Path) -> None:
    write_part(tmp_path, 0, [None, None, None], arrow_type=pa.timestamp("ms"))
    write_part(tmp_path, 1, [], arrow_type=pa.timestamp("ms"))
    assert latest_time(tmp_path, TABLE, Col.EVENT_TIME) is None
