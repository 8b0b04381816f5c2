"""The compact encodings of the cap state, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from recsys.capping.engine import (
    BUCKET_EPOCH_MS,
    b36,
    bucket_ms,
    format_rolling,
    live_buckets,
    parse_rolling,
)


def test_base36() -> None:
    assert [b36(0), b36(35), b36(36), b36(100), b36(1296)] == ["0", "z", "10", "2s", "100"]


def test_rolling_values_take_the_shorter_of_dense_and_sparse() -> None:
    # bucket 100 = "2s"; counts 1, 2, -, 3 in consecutive buckets: dense
    assert format_rolling(100, [1, 2, 0, 3]) == "2s:1.2..3"
    # one impression, then another 24 buckets later: sparse, the gap 24 = "o"
    assert format_rolling(100, [1] + [0] * 23 + [1]) == "2s:1,o:1"
    # leading and trailing empty buckets are dropped
    assert format_rolling(100, [0, 0, 5, 0]) == "2u:5"
    assert parse_rolling("2s:1.2..3") == (100, [1, 2, 0, 3])
    assert parse_rolling("2s:1,o:1") == (100, [1] + [0] * 23 + [1])
    assert parse_rolling("2u:5") == (102, [5])


def test_rolling_heads_count_from_the_epoch_and_old_values_still_read() -> None:
    week = 7 * 86_400_000
    size = bucket_ms(week)  # 7 h
    assert BUCKET_EPOCH_MS == 1_767_225_600_000  # 2026-01-01T00:00:00Z
    epoch_bucket = BUCKET_EPOCH_MS // size  # 70_128
    # 1_296 buckets (36**2) after the epoch's: "100", then ";" marks the epoch head
    assert format_rolling(epoch_bucket + 1_296, [1, 2, 0, 3], size) == "100;1.2..3"
    assert format_rolling(epoch_bucket + 35, [1] + [0] * 23 + [1], size) == "z;1,o:1"
    assert parse_rolling("100;1.2..3", size) == (epoch_bucket + 1_296, [1, 2, 0, 3])
    assert parse_rolling("z;1,o:1", size) == (epoch_bucket + 35, [1] + [0] * 23 + [1])
    # A value written before the epoch head (buckets from 1970) reads the same as before
    assert parse_rolling("1i3y:2", size) == (int("1i3y", 36), [2])
    # A bucket before the epoch keeps the 1970 head
    assert format_rolling(100, [1], size) == "2s:1"
    with pytest.raises(ValueError, match="bucket size"):
        parse_rolling("z;1")


def test_a_bucket_counts_until_its_end_plus_the_window() -> None:
    day = 86_400_000
    assert bucket_ms(day) == 3_600_000 and bucket_ms(7 * day) == 25_200_000 and bucket_ms(10_000) == 1000
    hour = 3_600_000
    # buckets 10 and 12 of one hour, 24h window: at 10:59:59.999 the next day bucket 10 still counts
    # (its last millisecond is inside the window), at 11:00 it does not.
    value = format_rolling(10, [2, 0, 1])
    assert live_buckets(value, 11 * hour + day - 1, day) == [(10, 2), (12, 1)]
    assert live_buckets(value, 11 * hour + day, day) == [(12, 1)]
