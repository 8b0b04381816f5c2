"""The closed loop (`recsys evaluate --closed-loop`) with the contextual ranker as the champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation import time_split
from recsys.evaluation.policy import top_k_inclusion
from recsys.evaluation.replay import load_replay
from recsys.schema import Col

CAPS = Path(__file__).parents[2] / "config" / "caps.yaml"
CONFIG = {
    "model": {"base_model": {"factors": 8, "iterations": 5, "num_threads": 1}, "ranker": {"window_days": 150}}
}


def test_the_closed_loop_shows_the_ranker_s_slates_and_tires_members_with_them(small_world: Path) -> None:
    """Without caps the loop shows exactly the ranker's expected-value slates (each request scored in its
    context, ``RankerScorer``) in time order; each earlier show of an offer tires the member for the next,
    recomputed here from the hidden response model. With today's caps it shows fewer offers."""
    from recsys.ranker.policy import RankerScorer
    from recsys.ranker.training import train_ranker_bundle
    from training.pipeline import EvaluationReport, closed_loop_report

    split = time_split(small_world)
    replay = load_replay(small_world, split.cutoff, split.end)
    bundle, _ = train_ranker_bundle(small_world, CONFIG, before=split.before, seed=7)
    report = EvaluationReport(
        split=split, evaluations=[], oracle=None, table=pd.DataFrame(), bundles={"ranker": bundle},
        replay=replay, split_dir=small_world,
    )  # fmt: skip
    table = closed_loop_report(report, "ranker", CAPS, seed=5).set_index("caps")
    off, on = table.loc["off"], table.loc["on"]
    assert (off["policy"], on["policy"]) == ("ranker", "ranker")

    batch = replay.batch
    assert replay.responder is not None and replay.prior_before_cutoff is not None
    assert replay.p_true is not None
    scores = RankerScorer(bundle, small_world, objective="expected_value").score(batch)
    shown = np.flatnonzero(top_k_inclusion(batch, scores))
    # in request-time order, the n-th show of an offer to a member follows n - 1 earlier ones of this loop
    when = batch.requests[Col.REQUEST_TIME].to_numpy("datetime64[s]")
    turn = np.empty(batch.n_requests, dtype=np.int64)
    turn[np.argsort(when, kind="stable")] = np.arange(batch.n_requests)
    pairs = pd.DataFrame(
        {
            "pair": shown,
            "turn": turn[batch.request_row[shown]],
            "member": batch.pair_column(Col.MEMBER_ID)[shown],
            "offer": batch.offer_id[shown],
        }
    ).sort_values("turn", kind="stable")
    earlier = pairs.groupby(["member", "offer"]).cumcount().to_numpy()
    idx = pairs["pair"].to_numpy()
    p_buy, p_click, p_dismiss = replay.responder.probabilities(idx, replay.prior_before_cutoff[idx] + earlier)
    members = batch.requests[Col.MEMBER_ID].nunique()
    assert off["impressions/member"] == pytest.approx(len(shown) / members)
    assert off["purchases/member"] == pytest.approx(p_buy.sum() / members)
    assert off["EV/member (CNY)"] == pytest.approx(p_buy @ replay.margin[idx] / members)
    assert off["dismissals/member"] == pytest.approx(
        ((1 - p_buy) * (1 - p_click) * p_dismiss).sum() / members
    )
    # repeats tire: the loop sells less than the same slates would fatigue-free
    assert (earlier > 0).any()
    assert off["purchases/member"] * members < replay.p_true[idx].sum()
    # today's caps withhold some of those shows, and the dismissals with them
    assert on["impressions/member"] < off["impressions/member"]
    assert on["dismissals/member"] < off["dismissals/member"]
