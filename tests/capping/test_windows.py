"""Window parsing and calendar periods in members' time zones (worked out by hand from tz rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recsys.capping.windows import (
    WindowKind,
    calendar_period,
    human_duration,
    iso_z,
    parse_duration,
    parse_window,
)


@pytest.mark.parametrize(
    ("spec", "kind", "seconds", "label"),
    [
        ("24h", WindowKind.ROLLING, 86_400, "rolling_24h"),
        ("7d", WindowKind.ROLLING, 604_800, "rolling_7d"),
        ("90m", WindowKind.ROLLING, 5_400, "rolling_90m"),
        ("2w", WindowKind.ROLLING, 1_209_600, "rolling_2w"),
        (" Day ", WindowKind.CALENDAR, 0, "day"),
        ("week", WindowKind.CALENDAR, 0, "week"),
        ("lifetime", WindowKind.LIFETIME, 0, "lifetime"),
    ],
)
def test_parse_window(spec: str, kind: WindowKind, seconds: int, label: str) -> None:
    w = parse_window(spec)
    assert (w.kind, w.seconds, w.label) == (kind, seconds, label)


@pytest.mark.parametrize("spec", ["", "7", "d7", "7y", "0h", "-3d", "month", "1000d", "7 d x"])
def test_parse_window_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_window(spec)


def test_parse_duration_and_human_text() -> None:
    assert parse_duration("14d").total_seconds() == 14 * 86_400
    with pytest.raises(ValueError):
        parse_duration("fortnight")
    assert human_duration(86_400) == "24 hours"
    assert human_duration(7 * 86_400) == "7 days"
    assert human_duration(5_400) == "90 minutes"
    assert human_duration(3_600) == "1 hour"
    assert parse_window("7d").describe() == "in the last 7 days"


def test_new_york_spring_forward_day_is_23_hours() -> None:
    label, start, end = calendar_period("day", datetime(2026, 3, 8, 12, 0, tzinfo=UTC), "America/New_York")
    assert label == "d2026-03-08"
    assert start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)
    assert (end - start).total_seconds() == 23 * 3600


def test_london_fall_back_day_is_25_hours() -> None:
    label, start, end = calendar_period("day", datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Europe/London")
    assert label == "d2026-10-25"
    assert (start, end) == (
        datetime(2026, 10, 24, 23, 0, tzinfo=UTC),
        datetime(2026, 10, 26, 0, 0, tzinfo=UTC),
    )


def test_london_spring_forward_and_week() -> None:
    # 2026-03-29: clocks go 01:00 GMT → 02:00 BST; the day is 23 h. ISO week 13 is Mon 23 – Sun 29 March.
    _, start, end = calendar_period("day", datetime(2026, 3, 29, 12, 0, tzinfo=UTC), "Europe/London")
    assert (end - start).total_seconds() == 23 * 3600
    label, wstart, wend = calendar_period("week", datetime(2026, 3, 29, 12, 0, tzinfo=UTC), "Europe/London")
    assert label == "w2026-W13"
    assert wstart == datetime(2026, 3, 23, 0, 0, tzinfo=UTC)
    assert wend == datetime(2026, 3, 29, 23, 0, tzinfo=UTC)  # Monday 30 March 00:00 BST


def test_same_instant_different_local_days() -> None:
    t = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
    assert calendar_period("day", t, "Asia/Tokyo")[0] == "d2026-11-23"
    assert calendar_period("day", t, "America/Los_Angeles")[0] == "d2026-11-22"
    assert calendar_period("week", t, "Asia/Tokyo")[0] == "w2026-W48"  # Monday 23 Nov in Tokyo
    assert calendar_period("week", t, "America/Los_Angeles")[0] == "w2026-W47"


def test_midnight_skipped_by_dst() -> None:
    # America/Santiago springs forward at 24:00 on 2026-09-05: local 2026-09-06 starts at 01:00 (-03).
    _, start, _ = calendar_period("day", datetime(2026, 9, 6, 12, 0, tzinfo=UTC), "America/Santiago")
    assert start == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)


def test_unknown_time_zone_falls_back_to_utc() -> None:
    label, start, _ = calendar_period("day", datetime(2026, 1, 1, 23, 0, tzinfo=UTC), "Mars/Olympus_Mons")
    assert label == "d2026-01-01" and start == datetime(2026, 1, 1, tzinfo=UTC)


def test_iso_z() -> None:
    assert iso_z(datetime(2026, 11, 23, 8, 0, tzinfo=UTC)) == "2026-11-23T08:00:00Z"
    assert iso_z(datetime(2026, 11, 23, 8, 0, 5, tzinfo=UTC)) == "2026-11-23T08:00:05Z"


def test_current_period_memo_agrees_with_calendar_period_across_boundaries() -> None:
    """The per-zone memo must hand out the period ``now`` is in: stepping 37 minutes at a time over three days
    that include a DST change, in zones east and west of UTC, it always equals the direct computation —
    including the instants just before and at each local midnight."""
    from recsys.capping.windows import current_period, to_ms

    zones = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe", ""]
    t = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)
    instants = [t + timedelta(minutes=37 * i) for i in range(3 * 24 * 60 // 37)]
    for zone in zones:
        _, _, end = calendar_period("day", t, zone)
        instants += [end - timedelta(milliseconds=1), end]  # both sides of a local midnight
    for now in sorted(instants):
        for zone in zones:
            for unit in ("day", "week"):
                label, _, end = calendar_period(unit, now, zone)
                assert current_period(unit, now, zone) == (label, to_ms(end)), (unit, zone, now)
