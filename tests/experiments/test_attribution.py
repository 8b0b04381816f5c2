"""Attribution rules and the CUPED covariates on small hand-made inputs whose answers are counted by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from recsys.experiments.attribution import Price, attribute, exposures_of
from recsys.experiments.history import dataset_history, history_from_events, merge_history
from recsys.experiments.report import History
from recsys.requestlog import PolicyRef, RequestRecord, ShownOffer

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PRICES = {"A": Price(100.0, 0.0), "B": Price(0.0, 5000.0)}


@dataclass(frozen=True)
class Ev:
    member_id: str
    offer_id: str
    event_type: str
    event_time: datetime
    request_id: str | None


def rec(
    rid: str, member: str, minutes: float, variant: str, shown: tuple[str, ...] = ("A", "B")
) -> RequestRecord:
    return RequestRecord(
        request_id=rid,
        member_id=member,
        request_time=T0 + timedelta(minutes=minutes),
        placement="booking",
        candidates=("A", "B", "C"),
        shown=tuple(ShownOffer(o, i, 0.5) for i, o in enumerate(shown)),
        policy=PolicyRef("m", "1"),
        experiment="x",
        variant=variant,
    )


def test_events_count_only_through_the_experiment_after_first_exposure() -> None:
    records = [
        rec("r1", "M1", 0, "control"),
        rec("r2", "M1", 30, "control", shown=()),
        rec("r3", "M2", 10, "t"),
        rec("r4", "M3", 5, "t"),
        rec("r5", "M3", 50, "control"),  # a crossover: stays in "t"
    ]
    at = lambda m: T0 + timedelta(minutes=m)  # noqa: E731
    events = [
        Ev("M1", "A", "impression", at(1), "r1"),
        Ev("M1", "B", "impression", at(1), "r1"),
        Ev("M1", "A", "click", at(2), "r1"),
        Ev("M1", "A", "purchase", at(3), "r1"),
        Ev("M1", "A", "purchase", at(-5), "r1"),  # before M1's first exposure
        Ev("M2", "B", "purchase", at(11), "r3"),
        Ev("M2", "B", "purchase", at(12), "r3"),
        Ev("M2", "A", "dismiss", at(12), "r3"),
        Ev("M2", "A", "click", at(12), None),  # no token
        Ev("M2", "A", "click", at(12), "r-other"),  # a request outside the experiment
        Ev("M9", "A", "click", at(12), "r3"),  # someone else's token
        Ev("M3", "A", "impression", at(51), "r5"),  # crossover request: counts in M3's first arm
    ]
    a = attribute(exposures_of(records), events, PRICES)
    m1, m2, m3 = a.members["M1"], a.members["M2"], a.members["M3"]
    assert (m1.variant, m1.requests, m1.empty_requests) == ("control", 2, 1)
    assert (m1.impressions, m1.clicks, m1.purchases, m1.revenue, m1.miles) == (2, 1, 1, 100.0, 0.0)
    assert m1.first_exposure == T0 and m1.first_purchase == at(3)
    assert (m2.variant, m2.purchases, m2.dismissals, m2.revenue, m2.miles) == ("t", 2, 1, 0.0, 10000.0)
    assert (m3.variant, m3.crossover, m3.impressions) == ("t", True, 1)
    assert a.requests == 5 and a.crossovers == 1
    assert (a.events_attributed, a.events_before_exposure) == (8, 1)
    assert (a.events_unattributed, a.events_wrong_member) == (2, 1)
    assert {k: len(v) for k, v in a.by_variant().items()} == {"control": 1, "t": 2}


def test_history_from_events_and_dataset(tmp_path: Path) -> None:
    at = lambda d: T0 - timedelta(days=d)  # noqa: E731
    events = [
        Ev("M1", "A", "purchase", at(3), None),
        Ev("M1", "B", "purchase", at(2), None),
        Ev("M1", "A", "click", at(2), None),
        Ev("M2", "A", "purchase", at(1), None),
    ]
    got = history_from_events(events, PRICES, members={"M1"})
    assert got == {"M1": History(2, 100.0, 5000.0)}

    (tmp_path / "interactions").mkdir()
    pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3", "e4", "e5"],
            "request_id": [None] * 5,
            "member_id": ["M1", "M1", "M2", "M1", "M1"],
            "offer_id": ["A", "B", "A", "A", "A"],
            "flight_id": [None] * 5,
            "placement": ["booking"] * 5,
            "event_type": ["purchase", "purchase", "purchase", "impression", "purchase"],
            # e5 is after the start, e3 before the look-back: neither counts
            "event_time": pd.to_datetime(
                [
                    "2026-11-20 08:00",
                    "2026-11-25 08:00",
                    "2025-01-01 00:00",
                    "2026-11-20 08:00",
                    "2026-12-02 00:00",
                ]
            ),
        }
    ).to_parquet(tmp_path / "interactions" / "part-00000.parquet")
    from_data = dataset_history(tmp_path, T0, PRICES, since=T0 - timedelta(days=365))
    assert from_data == {"M1": History(2, 100.0, 5000.0)}
    assert merge_history(got, from_data) == {"M1": History(4, 200.0, 10000.0)}
