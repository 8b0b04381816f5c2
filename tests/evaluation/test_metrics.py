"""Ranking metrics against values computed by hand (see the arithmetic in each test)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from recsys.evaluation.metrics import EvaluationError, metrics_at, ranking_metrics


def _recs(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(m, o, r) for m, offers in rows.items() for r, o in enumerate(offers, start=1)],
        columns=["member_id", "offer_id", "rank"],
    )


def _rel(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(m, o) for m, offers in rows.items() for o in offers], columns=["member_id", "offer_id"]
    )


# A: hits at positions 2 and 4 of 4, |R| = 3.   B: hit at position 1, |R| = 1.   C: relevant but no list.
# D: a list but nothing relevant -> not evaluated.
RECS = _recs({"A": ["o1", "o2", "o3", "o4"], "B": ["o5", "o6"], "D": ["o7", "o8"]})
REL = _rel({"A": ["o2", "o4", "o9"], "B": ["o5"], "C": ["o1"]})
G2 = 0.6309297535714575  # 1 / log2(3)
G4 = 0.43067655807339306  # 1 / log2(5)


def test_metrics_at_4_match_hand_computation() -> None:
    m = ranking_metrics(RECS, REL, k=4, catalogue_size=10)
    assert m["n_members"] == 3
    assert m["precision_at_4"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert m["recall_at_4"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    ndcg_a = (G2 + G4) / (1 + G2 + 0.5)  # IDCG over min(|R|=3, k=4) = 3 positions
    assert m["ndcg_at_4"] == pytest.approx((ndcg_a + 1 + 0) / 3)
    ap_a = (1 / 2 + 2 / 4) / 3  # precision at each hit, over min(|R|, k) = 3
    assert m["map_at_4"] == pytest.approx((ap_a + 1 + 0) / 3)
    # evaluated members' top 4: o1..o4, o5, o6 (D is not evaluated)
    assert m["coverage_at_4"] == pytest.approx(6 / 10)


def test_metrics_at_2_truncate_lists_and_ideal() -> None:
    m = ranking_metrics(RECS, REL, k=2, catalogue_size=10)
    assert m["precision_at_2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert m["recall_at_2"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["ndcg_at_2"] == pytest.approx((G2 / (1 + G2) + 1 + 0) / 3)
    assert m["map_at_2"] == pytest.approx(((1 / 2) / 2 + 1 + 0) / 3)
    assert m["coverage_at_2"] == pytest.approx(4 / 10)


def test_perfect_ranking_scores_one_and_reversed_scores_less() -> None:
    rel = _rel({"A": ["x", "y"]})
    perfect = ranking_metrics(_recs({"A": ["x", "y", "z"]}), rel, k=3)
    assert perfect["ndcg_at_3"] == pytest.approx(1.0)
    assert perfect["map_at_3"] == pytest.approx(1.0)
    worse = ranking_metrics(_recs({"A": ["z", "x", "y"]}), rel, k=3)
    assert worse["ndcg_at_3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert worse["map_at_3"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_rank_gaps_are_positions_and_duplicate_relevance_is_ignored() -> None:
    recs = pd.DataFrame({"member_id": ["A", "A"], "offer_id": ["z", "x"], "rank": [3, 7]})
    rel = _rel({"A": ["x", "x"]})
    m = ranking_metrics(recs, rel, k=10)
    assert m["ndcg_at_10"] == pytest.approx(G2)  # x is second in the list
    assert m["recall_at_10"] == pytest.approx(1.0)


def test_metrics_at_merges_several_k() -> None:
    m = metrics_at(RECS, REL, [2, 4])
    assert {"ndcg_at_2", "ndcg_at_4", "map_at_2", "map_at_4"} <= set(m)


@pytest.mark.parametrize(
    ("recs", "rel", "match"),
    [
        (RECS, REL.iloc[0:0], "no member has a relevant offer"),
        (RECS.drop(columns="rank"), REL, "missing columns"),
        (pd.concat([RECS, RECS.iloc[:1]]), REL, "appears twice"),
        (RECS.assign(rank=0), REL, "positive integer"),
    ],
)
def test_bad_input_is_a_clear_error(recs: pd.DataFrame, rel: pd.DataFrame, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        ranking_metrics(recs, rel, k=3)


def test_k_must_be_positive() -> None:
    with pytest.raises(EvaluationError, match="k must be"):
        ranking_metrics(RECS, REL, k=0)
