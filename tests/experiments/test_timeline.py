"""The report's cumulative-conversion timeline: bucket size from the window, counts at bucket ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recsys.experiments.attribution import MemberOutcome
from recsys.experiments.report import _timeline

T0 = datetime(2026, 12, 5, 12, 0, 30, tzinfo=UTC)


def member(i: int, arm: str, exposed_min: float, bought_min: float | None) -> MemberOutcome:
    return MemberOutcome(
        member_id=f"M{i}",
        variant=arm,
        first_exposure=T0 + timedelta(minutes=exposed_min),
        first_purchase=None if bought_min is None else T0 + timedelta(minutes=bought_min),
    )


def test_a_short_window_gets_minute_buckets_with_cumulative_counts() -> None:
    by_arm = {
        "control": [member(1, "control", 0.2, None), member(2, "control", 2.5, 3.2)],
        "b": [member(3, "b", 1.1, 1.4), member(4, "b", 1.2, 4.9), member(5, "b", 4.0, None)],
    }
    rows = _timeline(["control", "b"], by_arm, T0, T0 + timedelta(minutes=5))
    assert {r["bucket_s"] for r in rows} == {60}
    control = [
        (r["time"][11:16], r["exposed_members"], r["purchasers"]) for r in rows if r["variant"] == "control"
    ]
    # buckets aligned to the minute: 12:00 .. 12:05, each counted up to its end
    assert control == [
        ("12:00", 1, 0),
        ("12:01", 1, 0),
        ("12:02", 1, 0),  # member 2 is exposed at 12:03:00 sharp: in the bucket that starts then
        ("12:03", 2, 1),
        ("12:04", 2, 1),
        ("12:05", 2, 1),
    ]
    b = [(r["exposed_members"], r["purchasers"], r["conversion"]) for r in rows if r["variant"] == "b"]
    assert b[0] == (0, 0, None)
    assert b[1] == (2, 1, 0.5)
    assert b[-1] == (3, 2, 2 / 3)


def test_a_long_window_keeps_daily_buckets() -> None:
    rows = _timeline(["a"], {"a": [member(1, "a", 0, 60 * 30)]}, T0, T0 + timedelta(days=20))
    assert {r["bucket_s"] for r in rows} == {86_400}
    assert [r["date"] for r in rows][:3] == ["2026-12-05", "2026-12-06", "2026-12-07"]
    assert [r["purchasers"] for r in rows][:3] == [0, 1, 1]
    two_days = _timeline(["a"], {"a": []}, T0, T0 + timedelta(hours=40))
    assert {r["bucket_s"] for r in two_days} == {3_600}
