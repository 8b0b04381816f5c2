"""The compact encodings of the cap state, checked against values worked out by hand."""

from __future__ import annotations

from recsys.capping.engine import b36, bucket_ms, format_rolling, live_buckets, parse_rolling


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


def test_a_bucket_counts_until_its_end_plus_the_window() -> None:
    day = 86_400_000
    assert bucket_ms(day) == 3_600_000 and bucket_ms(7 * day) == 25_200_000 and bucket_ms(10_000) == 1000
    hour = 3_600_000
    # buckets 10 and 12 of one hour, 24h window: at 10:59:59.999 the next day bucket 10 still counts
    # (its last millisecond is inside the window), at 11:00 it does not.
    value = format_rolling(10, [2, 0, 1])
    assert live_buckets(value, 11 * hour + day - 1, day) == [(10, 2), (12, 1)]
    assert live_buckets(value, 11 * hour + day, day) == [(12, 1)]
