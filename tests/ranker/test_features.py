"""The ranker's feature blocks: exposure counts against a brute-force count, the online history, the objective
settings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from recsys.pipeline.types import PipelineConfig, parse_ranking_objectives
from recsys.pipeline.value import ranking_keys
from recsys.ranker.evaluation import acceptance_metrics, calibration_bins
from recsys.ranker.features import (
    EXPOSURE_FEATURES,
    EXPOSURE_HORIZON_DAYS,
    ExposureHistory,
    exposure_block,
    member_exposures,
    to_seconds,
)

DAY = 86_400.0


def brute_force(hist: ExposureHistory, m: int, o: int, f: int, t: float) -> dict[str, float]:
    """The counts written out as loops over the history (not the code under test)."""

    def count(scope: str, event: int, days: int) -> float:
        n = 0
        for hm, ho, hf, he, ht in zip(
            hist.member, hist.offer, hist.family, hist.event, hist.time, strict=True
        ):
            if hm != m or he != event or not (t - days * DAY <= ht < t):
                continue
            if scope == "offer" and ho != o:
                continue
            if scope == "family" and hf != f:
                continue
            n += 1
        return float(n)

    shown = [
        ht
        for hm, ho, he, ht in zip(hist.member, hist.offer, hist.event, hist.time, strict=True)
        if hm == m and ho == o and he == 0 and ht < t
    ]
    last = (t - max(shown)) / DAY if shown else np.inf
    return {
        "offer_impressions_1d": count("offer", 0, 1),
        "offer_impressions_7d": count("offer", 0, 7),
        "offer_impressions_30d": count("offer", 0, 30),
        "offer_impressions_90d": count("offer", 0, 90),
        "family_impressions_7d": count("family", 0, 7),
        "family_impressions_30d": count("family", 0, 30),
        "offer_dismissals_90d": count("offer", 1, 90),
        "family_dismissals_30d": count("family", 1, 30),
        "offer_clicks_90d": count("offer", 2, 90),
        "offer_purchases_90d": count("offer", 3, 90),
        "member_impressions_1d": count("member", 0, 1),
        "member_impressions_7d": count("member", 0, 7),
        "days_since_offer_shown": min(last, EXPOSURE_HORIZON_DAYS),
    }


def test_exposure_counts_match_a_brute_force_count():
    rng = np.random.default_rng(3)
    n = 600
    family_of = np.asarray([0, 0, 1, 1, 2, 2])
    offer = rng.integers(0, 6, n)
    hist = ExposureHistory(
        member=rng.integers(0, 4, n),
        offer=offer,
        family=family_of[offer],
        event=rng.choice([0, 0, 0, 1, 2, 3], n),
        time=np.round(rng.uniform(0, 200 * DAY, n)),
    )
    q = 80
    qm, qo = rng.integers(0, 5, q), rng.integers(0, 6, q)  # member 4 has no history
    qt = np.round(rng.uniform(0, 210 * DAY, q))
    qt[:10] = hist.time[:10]  # queries at an event's exact time: that event is not "before"
    qm[:10], qo[:10] = hist.member[:10], hist.offer[:10]
    got = exposure_block(hist, qm, qo, family_of[qo], qt, n_offers=6)
    for i in range(q):
        want = brute_force(hist, qm[i], qo[i], family_of[qo[i]], qt[i])
        assert dict(zip(EXPOSURE_FEATURES, got[i], strict=True)) == pytest.approx(want), i


def test_online_history_gives_the_same_counts_as_training():
    """The profile's history (one member, as of the request) counts what the training history counts."""
    events = pd.DataFrame(
        {
            "member_id": ["A", "A", "A", "B", "A", "A"],
            "offer_id": ["X", "X", "Y", "X", "X", "X"],
            "event_type": ["impression", "dismiss", "impression", "impression", "impression", "impression"],
            "event_time": pd.to_datetime(
                [
                    "2026-01-01 10:00",
                    "2026-01-01 10:01",
                    "2026-01-05 00:00",
                    "2026-01-06 00:00",
                    "2026-01-07 00:00",
                    "2026-04-20 00:00",
                ]
            ),
        }
    )
    offers = pd.DataFrame({"offer_id": ["X", "Y"], "family": ["upsell", "upsell"]})
    as_of = datetime(2026, 1, 8, tzinfo=UTC)
    hist = member_exposures(events, offers, as_of)
    assert set(hist) == {"A", "B"}
    assert hist["A"]["offer"] == ["X", "X", "Y", "X"]  # the April event is after as_of
    assert hist["A"]["event"] == [0, 1, 0, 0]
    assert hist["A"]["time"] == to_seconds(events["event_time"])[[0, 1, 2, 4]].tolist()


def test_to_seconds_treats_naive_as_utc():
    aware = to_seconds(datetime(2026, 1, 1, 8, tzinfo=UTC))[0]
    naive = to_seconds(pd.Series(pd.to_datetime(["2026-01-01 08:00"])))[0]
    assert aware == naive == (pd.Timestamp("2026-01-01 08:00") - pd.Timestamp("2000-01-01")).total_seconds()


def test_ranking_objectives():
    probs, ev = [0.5, 0.1, 0.2], [5.0, 20.0, 0.0]
    assert ranking_keys(probs, ev, 1.0) == ev
    assert ranking_keys(probs, ev, 0.0) == probs
    blend = ranking_keys(probs, ev, 0.5)
    assert blend == pytest.approx([np.sqrt(0.5 * 5.0), np.sqrt(0.1 * 20.0), 0.0])
    cfg = PipelineConfig(objective="acceptance", ranking_objectives={"booking": "blend"}, blend_exponent=0.3)
    assert cfg.objective_exponent("home") == 0.0
    assert cfg.objective_exponent("booking") == 0.3
    assert PipelineConfig().objective_exponent("home") == 1.0
    with pytest.raises(ValueError, match="objective must be"):
        PipelineConfig(objective="clicks")
    with pytest.raises(ValueError, match="unknown placement 'lobby'"):
        PipelineConfig(ranking_objectives={"lobby": "acceptance"})
    assert parse_ranking_objectives("acceptance, booking=blend") == ("acceptance", {"booking": "blend"})
    with pytest.raises(ValueError, match="unknown objective 'ctr'"):
        parse_ranking_objectives("home=ctr")


def test_acceptance_metrics_on_known_values():
    y = np.asarray([0, 0, 1, 1])
    m = acceptance_metrics(y, np.asarray([0.1, 0.2, 0.8, 0.9]), bins=2)
    assert m["auc"] == 1.0
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.8, 0.9])))
    assert m["brier"] == pytest.approx(np.mean([0.01, 0.04, 0.04, 0.01]))
    assert m["ece"] == pytest.approx(0.15)  # bins (0.15 vs 0) and (0.85 vs 1)
    table = calibration_bins(y.astype(float), np.asarray([0.1, 0.2, 0.8, 0.9]), bins=2)
    assert table["observed"].tolist() == [0.0, 1.0]


def _loops(hist: ExposureHistory, offer: np.ndarray, family: np.ndarray, time: float) -> np.ndarray:
    from recsys.ranker import features

    events = zip(
        hist.offer.tolist(), hist.family.tolist(), hist.event.tolist(), hist.time.tolist(), strict=True
    )
    return features._exposure_loops(events, offer, family, time)


@pytest.mark.parametrize("n", [0, 1, 4, 32, 120])
def test_single_member_exposure_matches_the_batch_path_and_a_brute_force_count(n: int):
    """Both ways of counting one member's history (loops for a short one, matrix products for a long one)
    against the batch path and a brute-force count, on histories of either length."""
    from recsys.ranker import features

    rng = np.random.default_rng(5 + n)
    family_of = np.asarray([0, 0, 1, 1, 2, 2])
    offer = rng.integers(-1, 6, n)  # -1: an offer the feature space does not know
    hist = ExposureHistory(
        member=np.zeros(n, dtype=np.int64),
        offer=offer,
        family=np.where(offer >= 0, family_of[np.maximum(offer, 0)], -1),
        event=rng.choice([0, 0, 0, 1, 2, 3, 7], n),  # 7: a kind of event the exposure block does not count
        time=np.round(rng.uniform(0, 120 * DAY, n)),
    )
    # times exactly 1 and 7 days after an event: the windows include their far end
    edges = (hist.time[0] + DAY, hist.time[0] + 7 * DAY) if n else ()
    for t in (hist.time[3] if n > 3 else 2 * DAY, 100 * DAY + 17.0, 5 * DAY, *edges):
        q = np.arange(-1, 6)
        fam = np.where(q >= 0, family_of[np.maximum(q, 0)], -1)
        batch = exposure_block(hist, np.zeros(len(q), dtype=np.int64), q, fam, np.full(len(q), t), n_offers=6)
        for count in (_loops, features._exposure_products, features.single_member_exposure):
            np.testing.assert_array_equal(count(hist, q, fam, float(t)), batch, err_msg=count.__name__)
        for i in range(1, len(q)):  # known offers against the loops
            want = brute_force(hist, 0, q[i], fam[i], t)
            assert dict(zip(EXPOSURE_FEATURES, batch[i], strict=True)) == pytest.approx(want)
    if n > 1:  # an event without a time (a member record's null) counts nowhere, either way
        untimed = dataclasses.replace(hist, time=np.where(np.arange(n) == 1, np.nan, hist.time))
        keep = np.arange(n) != 1
        rest = ExposureHistory(
            *(getattr(hist, a)[keep] for a in ("member", "offer", "family", "event", "time"))
        )
        without = features._exposure_products(rest, q, fam, 100 * DAY)
        for count in (_loops, features._exposure_products):
            np.testing.assert_array_equal(count(untimed, q, fam, 100 * DAY), without, err_msg=count.__name__)
