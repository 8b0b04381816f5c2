"""The compact encodings of the cap state, checked against values worked out by hand."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsys.capping.api import parse_policy
from recsys.capping.engine import (
    BUCKET_EPOCH_MS,
    b36,
    bucket_ms,
    build_plan,
    format_rolling,
    live_buckets,
    parse_rolling,
)
from recsys.capping.types import CapCandidate, CapMember


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


def test_a_plan_from_the_policys_memo_equals_one_compiled_afresh() -> None:
    # The shipped policy (calendar, rolling and lifetime caps, cool-downs, offer-flag exemption); plans of a
    # warm memo (filled by other members, tiers, placements and slates first) against plans of a fresh parse.
    text = (Path(__file__).resolve().parents[2] / "config" / "caps.yaml").read_text()
    rng = random.Random(7)
    offers = [
        CapCandidate(f"OF{i:03d}", family, category, exempt=(i % 17 == 0))
        for i, (family, category) in enumerate(
            [("upsell", "cabin_upgrade"), ("ancillary", "seat"), ("ancillary", "lounge")]
            + [("redemption", "award_flight"), ("redemption", "miles_promotion"), ("ancillary", "baggage")]
            * 5
        )
    ]
    tiers = ["basic", "silver", "gold", "platinum", "unknown"]
    placements = ["home", "booking", "check_in", "post_booking", "in_trip"]
    now = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    work = [
        (
            CapMember(f"m{i}", rng.choice(tiers), rng.choice(["UTC", "Asia/Shanghai"])),
            rng.sample(offers, 8),
            rng.choice(placements),
            rng.random() < 0.2,
        )
        for i in range(60)
    ]
    warm = parse_policy(text, source="caps.yaml")
    for member, slate, placement, force in reversed(work):  # fills the memo in another order
        build_plan(warm, warm.resolved(member.tier), member, slate, placement, now, with_cooldowns=not force)
    assert any(warm.resolved(t).plan_entries for t in tiers)
    for member, slate, placement, force in work:
        fresh = parse_policy(text, source="caps.yaml")
        expected = build_plan(
            fresh, fresh.resolved(member.tier), member, slate, placement, now, with_cooldowns=not force
        )
        got = build_plan(
            warm, warm.resolved(member.tier), member, slate, placement, now, with_cooldowns=not force
        )
        assert got == expected
        assert expected.counters and (force or expected.cooldowns)
