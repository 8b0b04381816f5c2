"""Time split, slices, evaluator and comparison table on a tiny hand-made dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.layout import DatasetWriter
from recsys.evaluation import (
    EvaluationError,
    best_model,
    comparison_table,
    evaluate_recommender,
    time_split,
    to_markdown,
)

AS_OF = "2025-12-31"  # a date: the data ends at 2026-01-01 00:00
OFFERS = pd.DataFrame(
    {"offer_id": ["up1", "up2", "an1", "rd1"], "family": ["upsell", "upsell", "ancillary", "redemption"]}
)


def _event(member: str, offer: str, kind: str, when: str) -> dict[str, object]:
    return {
        "event_id": f"{member}-{offer}-{kind}-{when}",
        "request_id": None,
        "member_id": member,
        "offer_id": offer,
        "flight_id": None,
        "placement": "home",
        "event_type": kind,
        "event_time": pd.Timestamp(when, tz="UTC"),
    }


def _world(tmp_path: Path, events: list[dict[str, object]], name: str = "w") -> Path:
    with DatasetWriter(tmp_path / name) as w:
        w.write_table("offers", OFFERS)
        if events:
            w.write_table("interactions", pd.DataFrame(events))
        return w.commit({"as_of": AS_OF})


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    return _world(
        tmp_path,
        [
            # before the cut-off (2025-10-03): history of m1, m2
            _event("m1", "up1", "purchase", "2025-03-01"),
            _event("m2", "an1", "click", "2025-05-01"),
            # test period: m1 buys up2 and an1, m2 clicks rd1 only, m3 (cold) buys up1, m4 only sees an offer
            _event("m1", "up2", "purchase", "2025-11-01"),
            _event("m1", "an1", "purchase", "2025-12-01"),
            _event("m2", "rd1", "click", "2025-11-15"),
            _event("m3", "up1", "purchase", "2025-10-20"),
            _event("m4", "up1", "impression", "2025-10-20"),
        ],
    )


def test_default_split_is_last_90_days_with_purchases_relevant(world: Path) -> None:
    split = time_split(world)
    assert split.end == pd.Timestamp("2026-01-01")
    assert split.cutoff == pd.Timestamp("2025-10-03")
    pairs = set(map(tuple, split.relevant[["member_id", "offer_id"]].to_numpy()))
    assert pairs == {("m1", "up2"), ("m1", "an1"), ("m3", "up1")}
    assert set(split.test_members) == {"m1", "m3"}
    assert list(split.cold_members) == ["m3"]


def test_validation_split_ends_at_the_given_time_and_never_sees_later_events(world: Path) -> None:
    split = time_split(world, end="2025-11-10", test_days=30)
    assert split.end == pd.Timestamp("2025-11-10")
    assert split.cutoff == pd.Timestamp("2025-10-11")
    pairs = set(map(tuple, split.relevant[["member_id", "offer_id"]].to_numpy()))
    assert pairs == {("m1", "up2"), ("m3", "up1")}  # m1's purchase of an1 (2025-12-01) is after the end
    exposed = set(map(tuple, split.exposed[["member_id", "offer_id"]].to_numpy()))
    assert ("m1", "an1") not in exposed
    # an end after the data's end is the data's end
    assert time_split(world, end="2030-01-01").end == pd.Timestamp("2026-01-01")


def test_click_relevance_and_explicit_cutoff(world: Path) -> None:
    split = time_split(world, cutoff="2025-11-10", relevance="click")
    pairs = set(map(tuple, split.relevant[["member_id", "offer_id"]].to_numpy()))
    assert pairs == {("m1", "an1"), ("m2", "rd1")}
    assert list(split.cold_members) == []


def test_evaluator_slices_and_table(world: Path) -> None:
    split = time_split(world)

    def perfect(members: np.ndarray, k: int) -> pd.DataFrame:
        lists = {"m1": ["up2", "an1"], "m3": ["up1"]}
        rows = [(m, o, r) for m in members for r, o in enumerate(lists[m], start=1)]
        return pd.DataFrame(rows, columns=["member_id", "offer_id", "rank"])

    def popular(members: np.ndarray, k: int) -> pd.DataFrame:
        rows = [(m, o, r) for m in members for r, o in enumerate(["up1", "rd1", "up2", "an1"][:k], start=1)]
        return pd.DataFrame(rows, columns=["member_id", "offer_id", "rank"])

    best = evaluate_recommender("oracle", perfect, split, OFFERS)
    pop = evaluate_recommender("popularity", popular, split, OFFERS)
    assert best.primary == pytest.approx(1.0)
    # m1: hits at 3, 4 of |R|=2 -> (1/log2 4 + 1/log2 5) / (1 + 1/log2 3); m3: hit at 1 -> 1
    m1 = (0.5 + 0.43067655807339306) / (1 + 0.6309297535714575)
    assert pop.primary == pytest.approx((m1 + 1) / 2)
    assert pop.metrics["cold_start_ndcg_at_10"] == pytest.approx(1.0)
    assert pop.metrics["warm_ndcg_at_10"] == pytest.approx(m1)
    assert pop.metrics["family_upsell_n_members"] == 2
    # upsell slice: m1 relevant {up2} found at position 3; m3 {up1} at 1
    assert pop.metrics["family_upsell_ndcg_at_10"] == pytest.approx((0.5 + 1) / 2)
    assert pop.metrics["coverage_at_10"] == pytest.approx(1.0)

    table = comparison_table([pop], oracle=best)
    assert list(table["model"]) == ["popularity", "oracle"]
    assert table.loc[0, "frac_of_oracle"] == pytest.approx(pop.primary)
    assert table.loc[0, "vs_baseline"] == pytest.approx(1.0)
    assert best_model(table) == "popularity"
    md = to_markdown(table)
    assert md.splitlines()[0].startswith("| model | ndcg_at_10")
    assert "| popularity |" in md


def test_empty_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="no events"):
        time_split(_world(tmp_path, []))


def test_no_purchase_in_test_period_is_a_clear_error(tmp_path: Path) -> None:
    world = _world(tmp_path, [_event("m1", "up1", "purchase", "2025-01-01")])
    with pytest.raises(EvaluationError, match="no member accepted an offer"):
        time_split(world)


def test_cutoff_after_the_end_is_a_clear_error(world: Path) -> None:
    with pytest.raises(EvaluationError, match="test period is empty"):
        time_split(world, cutoff="2026-02-01")


def test_cutoff_before_any_history_is_a_clear_error(world: Path) -> None:
    with pytest.raises(EvaluationError, match="nothing to train on"):
        time_split(world, cutoff="2024-01-01")
