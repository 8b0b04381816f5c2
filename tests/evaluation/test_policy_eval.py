"""Policy evaluation on a generated world: replayed requests, true values, estimates, refusals."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation import EvaluationError, time_split
from recsys.evaluation.policies import ArrayScorer, ConversionScorer, LoggingPolicy, UniformRandom
from recsys.evaluation.policy import RequestBatch, ScoredPolicy, top_k_inclusion
from recsys.evaluation.policy_eval import PolicyRefused, evaluate_policies, policy_table
from recsys.evaluation.replay import Replay, load_replay
from recsys.features.miles import BALANCE_AT_REQUEST
from recsys.schema import Col


@pytest.fixture(scope="module")
def replay(small_world: Path) -> Replay:
    split = time_split(small_world)
    return load_replay(small_world, split.cutoff, split.end)


def test_replay_holds_every_test_period_request_and_its_logged_slate(
    small_world: Path, replay: Replay
) -> None:
    req = pd.read_parquet(small_world / "requests")
    t = pd.to_datetime(req[Col.REQUEST_TIME])
    in_test = req[(t >= replay.cutoff) & (t < replay.end)]
    assert replay.batch.n_requests == len(in_test) > 100
    assert replay.batch.n_pairs == int(in_test[Col.CANDIDATES].map(len).sum())
    assert int(replay.logged.shown.sum()) == int(in_test[Col.SHOWN].map(len).sum())
    # the logging policy's inclusion of every candidate, recomputed from the truth's popularity weights,
    # equals the propensity the log recorded for the offers it showed
    shown = replay.logged.shown
    assert replay.logging_inclusion is not None
    np.testing.assert_allclose(replay.logging_inclusion[shown], replay.logged.propensity[shown], rtol=1e-9)
    per_request = np.bincount(replay.batch.request_row, weights=replay.logging_inclusion)
    n_cand = np.diff(replay.batch.starts)
    np.testing.assert_allclose(per_request, np.minimum(replay.batch.slots, n_cand), atol=1e-9)


def test_true_values_are_the_generator_s_response_model(replay: Replay) -> None:
    """Purchases logged for upsell, ancillary and redemption offers match the true probabilities with
    fatigue (the generator drew them from exactly these; redemptions the member could not afford at the
    request are none)."""
    assert replay.p_true is not None and replay.p_true_fatigue is not None
    shown = replay.logged.shown
    for family in ("upsell", "ancillary", "redemption"):
        m = shown & (replay.family == family)
        p = replay.p_true_fatigue[m]
        bought = replay.logged.reward[m].sum()
        assert abs(bought - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum()) + 1, family
    assert (replay.p_true_fatigue <= replay.p_true + 1e-12).all()  # fatigue only lowers acceptance


def _plain_balances(world: Path, members: pd.Series, times: pd.Series) -> np.ndarray:
    """Independently of the code under test: each (member, time)'s balance by a plain sum over the member's
    ledger entries before the time."""
    parts = [
        ("flights", Col.DEPARTURE_TIME, Col.MILES_EARNED, 1),
        ("partner_activities", Col.ACTIVITY_TIME, Col.MILES_EARNED, 1),
        ("redemptions", Col.REDEEM_TIME, Col.MILES_SPENT, -1),
    ]
    ledger = pd.concat(
        [
            pd.read_parquet(world / table, columns=[Col.MEMBER_ID, t, miles])
            .set_axis(["m", "t", "miles"], axis=1)
            .assign(miles=lambda d, sign=sign: sign * d["miles"].astype(np.int64))
            for table, t, miles, sign in parts
        ],
        ignore_index=True,
    ).astype({"m": str})
    ledger["t"] = pd.to_datetime(ledger["t"])
    by_member = dict(tuple(ledger.groupby("m")))
    empty = ledger.iloc[:0]
    return np.array(
        [
            by_member.get(str(m), empty).pipe(lambda d, t=t: d.loc[d["t"] < t, "miles"].sum())
            for m, t in zip(members, pd.to_datetime(times), strict=True)
        ],
        dtype=np.int64,
    )


def test_a_redemption_the_member_cannot_afford_at_the_request_is_never_bought(
    small_world: Path, replay: Replay
) -> None:
    """The world turns the purchase of a redemption the member cannot afford into a click: the truth gives
    it P(purchase) 0, fatigue-free, with fatigue and in the closed loop's responses (its click probability
    as the world's), so the oracles do not pick it."""
    req = replay.batch.requests
    balance = _plain_balances(small_world, req[Col.MEMBER_ID], req[Col.REQUEST_TIME])
    # the batch carries it, read once: every other reader of the balance takes it from there
    np.testing.assert_array_equal(req[BALANCE_AT_REQUEST].to_numpy(np.int64), balance)
    offers = pd.read_parquet(small_world / "offers.parquet").set_index(Col.OFFER_ID)
    oid = replay.batch.offer_id
    price = offers[Col.PRICE_MILES].fillna(0).reindex(oid).to_numpy(np.float64)
    redemption = (offers[Col.FAMILY].reindex(oid) == "redemption").to_numpy()
    blocked = redemption & (price > 0) & (price > balance[replay.batch.request_row])
    assert blocked.sum() > 20 and (redemption & ~blocked).sum() > 20

    assert replay.p_true is not None and replay.p_true_fatigue is not None and replay.responder is not None
    free = 1.0 / (1.0 + np.exp(-replay.responder.logit))
    assert (replay.p_true[blocked] == 0).all() and (replay.p_true_fatigue[blocked] == 0).all()
    np.testing.assert_allclose(replay.p_true[~blocked], free[~blocked])
    assert replay.p_no_taste is not None and (replay.p_no_taste[blocked] == 0).all()
    # the closed loop's responses: no purchase, the would-be purchase a click, dismissals unchanged
    pairs = np.flatnonzero(blocked)
    prior = replay.prior_exposures[pairs]
    buy, click, dismiss = replay.responder.probabilities(pairs, prior)
    world_buy, world_click, world_dismiss = dataclasses.replace(replay.responder, blocked=None).probabilities(
        pairs, prior
    )
    assert (buy == 0).all() and (world_buy > 0).all()
    np.testing.assert_allclose(click, world_buy + (1 - world_buy) * world_click)
    np.testing.assert_allclose(dismiss, world_dismiss)
    # the oracle shows a blocked offer only when every purchasable candidate of the request is shown
    shown = top_k_inclusion(replay.batch, replay.p_true).astype(bool)
    rows = replay.batch.request_row
    n = replay.batch.n_requests
    with_blocked = np.bincount(rows, weights=shown & blocked, minlength=n) > 0
    left_out = np.bincount(rows, weights=~shown & ~blocked, minlength=n) > 0
    assert with_blocked.any() and not (with_blocked & left_out).any()


def _policies(replay: Replay) -> list[ScoredPolicy | UniformRandom | LoggingPolicy]:
    assert replay.p_true is not None and replay.logging_inclusion is not None
    cutoff = replay.cutoff.to_pydatetime()
    return [
        UniformRandom(),
        LoggingPolicy(replay.logging_inclusion),
        ScoredPolicy(ConversionScorer(replay.rates, cutoff)),
        ScoredPolicy(ArrayScorer("oracle", replay.p_true)),
        ScoredPolicy(ArrayScorer("ev_oracle", replay.p_true * replay.margin)),
    ]


def test_the_policy_table_orders_policies_by_their_true_values(replay: Replay) -> None:
    report = evaluate_policies(replay, _policies(replay), baseline="uniform_random")
    by = {r.name: r for r in report.results}
    for r in report.results:
        assert r.true["purchases"] <= by["oracle"].true["purchases"] + 1e-12, r.name
        assert r.true["ev"] <= by["ev_oracle"].true["ev"] + 1e-9, r.name
    # the logging policy's on-policy IPS is the log's own purchases per request
    logging = by["legacy_logging"].purchases["ips"].value
    assert logging == pytest.approx(replay.logged.reward.sum() / replay.batch.n_requests)
    assert by["uniform_random"].vs_baseline["snips"].value == 0.0
    assert by["oracle"].vs_baseline["snips"].value > 0
    table = policy_table(report)
    assert list(table["policy"]) == [r.name for r in report.results]
    assert table.loc[table["policy"] == "oracle", "purchases / oracle"].item() == pytest.approx(1.0)
    assert {"IPS EV", "SNIPS EV", "DR EV", "SNIPS EV - base"} <= set(table.columns)
    assert "95 % CIs clustered by member" in report.markdown()
    flat = report.metrics()
    est = by["oracle"].purchases["snips"]
    assert flat["oracle.snips_purchases_per_request"] == est.value
    assert flat["oracle.snips_purchases_per_request_se"] == est.se > 0
    assert flat["policy_table.requests"] == replay.batch.n_requests
    assert flat["policy_table.members"] == len(set(replay.batch.requests[Col.MEMBER_ID]))


def test_the_oracle_without_taste_loses_the_taste_term(replay: Replay) -> None:
    assert replay.p_true is not None and replay.p_no_taste is not None
    # the taste-free probabilities differ from the truth only where the destination term acts
    differs = ~np.isclose(replay.p_no_taste, replay.p_true, rtol=1e-12, atol=0)
    assert differs.any() and (replay.family[differs] == "redemption").all()
    policies = [
        ScoredPolicy(ArrayScorer("oracle", replay.p_true)),
        ScoredPolicy(ArrayScorer("oracle_no_taste", replay.p_no_taste)),
    ]
    report = evaluate_policies(replay, policies, baseline="oracle")
    by = {r.name: r.true for r in report.results}
    n = replay.batch.n_requests
    for r in (by["oracle"], by["oracle_no_taste"]):  # redemptions alone, summed by hand
        assert 0 < r["purchases_redemption"] < r["purchases"]
    pi = ScoredPolicy(ArrayScorer("x", replay.p_no_taste)).inclusion(replay.batch)
    want = float((pi * (replay.family == "redemption")) @ replay.p_true) / n
    assert by["oracle_no_taste"]["purchases_redemption"] == pytest.approx(want)
    # ranking without taste is worse in this world, most of all on redemptions
    assert by["oracle_no_taste"]["purchases"] < by["oracle"]["purchases"]
    assert by["oracle_no_taste"]["purchases_redemption"] < by["oracle"]["purchases_redemption"]
    table = policy_table(report)
    assert "redemption purchases/req" in table.columns


class _Peeker:
    name = "peeker"

    def __init__(self, trained_before: datetime) -> None:
        self.trained_before = trained_before

    def score(self, batch: RequestBatch) -> np.ndarray:
        return np.zeros(batch.n_pairs)


def test_a_policy_trained_after_the_cut_off_is_refused(replay: Replay) -> None:
    late = (replay.cutoff + pd.Timedelta(days=10)).to_pydatetime()
    with pytest.raises(PolicyRefused, match=r"'peeker' was trained on data up to .* after the test period"):
        evaluate_policies(replay, [UniformRandom(), ScoredPolicy(_Peeker(late))], baseline="uniform_random")
    ok = (replay.cutoff - pd.Timedelta(days=1)).to_pydatetime()
    evaluate_policies(replay, [UniformRandom(), ScoredPolicy(_Peeker(ok))], baseline="uniform_random")


def test_a_test_period_without_requests_or_a_dataset_without_a_log_is_an_error(
    small_world: Path, tmp_path: Path
) -> None:
    split = time_split(small_world)
    later = split.end + pd.Timedelta(days=30)
    with pytest.raises(EvaluationError, match="no request in the test period"):
        load_replay(small_world, split.end, later)
    copy = tmp_path / "w"
    shutil.copytree(small_world, copy)
    shutil.rmtree(copy / "requests")
    with pytest.raises(EvaluationError, match="no request log"):
        load_replay(copy, split.cutoff, split.end)


def test_closed_loop_accumulates_the_policy_s_own_fatigue_and_caps_limit_exposure(
    small_world: Path, replay: Replay
) -> None:
    from recsys.capping.api import PolicyHolder, build_enforcer
    from recsys.data.layout import read_table
    from recsys.evaluation.closed_loop import closed_loop

    assert replay.p_true is not None
    offers = read_table(small_world, "offers")
    members = read_table(small_world, "members", columns=[Col.MEMBER_ID, Col.TIER, Col.TIME_ZONE])
    scores = replay.p_true  # the oracle's ranking shows the same offers again and again
    free = closed_loop(replay, scores, "oracle", offers, members, None)
    caps = build_enforcer(None, PolicyHolder(Path(__file__).parents[2] / "config" / "caps.yaml"))
    capped = closed_loop(replay, scores, "oracle", offers, members, caps, seed=1)
    caps.close()
    assert capped.impressions < free.impressions
    assert free.members == capped.members == len(set(replay.batch.requests[Col.MEMBER_ID]))
    # without caps the loop shows the oracle's slates; their repeats tire members: fewer purchases than the
    # fatigue-free value of the same slates
    from recsys.evaluation.policy import top_k_inclusion

    pi = top_k_inclusion(replay.batch, scores).astype(float)
    assert free.impressions == pytest.approx(pi.sum())
    assert 0 < free.purchases < pi @ replay.p_true
    assert free.dismissals > 0 and capped.dismissals < free.dismissals


def test_the_pipeline_policy_replays_the_slates_the_service_would_return(
    small_world: Path, replay: Replay
) -> None:
    """PipelinePolicy ranks through OfferPipeline.rank; each slate must be what recommend() — the service's
    path, explanations and all — returns for the same request, restricted to the request's candidates."""
    from datetime import UTC

    from recsys.evaluation.policies import pipeline_policy
    from recsys.features.profiles import build_member_profiles
    from recsys.models.bundle import ModelBundle
    from recsys.pipeline.types import MAX_LIMIT, RecommendRequest, TripContext

    split = time_split(small_world)
    bundle = ModelBundle.train(small_world, "als", None, before=split.before, seed=3)
    profiles = build_member_profiles(small_world, as_of=replay.cutoff.to_pydatetime())
    policy = pipeline_policy("als_pipeline", bundle, profiles)
    batch = replay.batch.take(np.arange(0, replay.batch.n_requests, 7))
    inclusion = policy.inclusion(batch)
    starts, req = batch.starts, batch.requests
    shown_any = 0
    for i in range(batch.n_requests):
        row = req.iloc[i]
        trip = None
        if isinstance(row[Col.ORIGIN], str):
            dep = pd.Timestamp(row[Col.DEPARTURE_TIME])
            trip = TripContext(
                origin=row[Col.ORIGIN],
                destination=row[Col.DESTINATION],
                departure_time=None if pd.isna(dep) else dep.tz_localize(UTC).to_pydatetime(),
                cabin=row[Col.CABIN],
                fare_class=row[Col.FARE_CLASS],
                flight_number=row[Col.FLIGHT_NUMBER],
            )
        now = pd.Timestamp(row[Col.REQUEST_TIME]).tz_localize(UTC).to_pydatetime()
        member, placement = str(row[Col.MEMBER_ID]), str(row[Col.PLACEMENT])
        full = policy.pipeline.recommend(
            RecommendRequest(member_id=member, placement=placement, trip=trip, limit=MAX_LIMIT, now=now)
        )
        served = [o.offer_id for o in full.offers]
        cand = set(batch.offer_id[starts[i] : starts[i + 1]])
        want = [o for o in served if o in cand][: int(row["slots"])]
        got = set(batch.offer_id[starts[i] : starts[i + 1]][inclusion[starts[i] : starts[i + 1]] > 0])
        assert got == set(want), (i, got, want)
        shown_any += bool(want)
        # and the ranking's head is exactly the slate the service returns for a short list
        k = int(row["slots"])
        short = policy.pipeline.recommend(
            RecommendRequest(member_id=member, placement=placement, trip=trip, limit=k, now=now)
        )
        assert list(policy.pipeline.rank(
            RecommendRequest(member_id=member, placement=placement, trip=trip, now=now)
        )[:k]) == [o.offer_id for o in short.offers]  # fmt: skip
    assert shown_any > batch.n_requests // 2


def test_replay_exposures_hold_every_event_from_the_horizon_before_the_period_to_its_end(
    small_world: Path, replay: Replay
) -> None:
    from recsys.data.layout import read_table
    from recsys.evaluation.policies import replay_exposures

    history = replay_exposures(small_world, replay)
    events = read_table(small_world, "interactions")
    t = pd.to_datetime(events[Col.EVENT_TIME])
    inside = events[(t >= replay.cutoff - pd.Timedelta(days=90)) & (t < replay.end)]
    want = inside.groupby(Col.MEMBER_ID).size()
    got = pd.Series({m: len(h["offer"]) for m, h in history.items()})
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    # a member's events come in time order, offers with their family
    member = str(want.idxmax())
    mine = inside[inside[Col.MEMBER_ID] == member].sort_values(Col.EVENT_TIME, kind="stable")
    assert sorted(history[member]["offer"]) == sorted(mine[Col.OFFER_ID].astype(str))
    assert history[member]["time"] == sorted(history[member]["time"])
    assert len(history[member]["family"]) == len(mine)


def test_the_pipeline_policy_reads_the_miles_balance_as_of_each_request(
    small_world: Path, replay: Replay
) -> None:
    """With the dataset's ledger, each replayed request's eligibility sees the member's balance at the
    request, not the profiles' as of the cut-off: each slate is the one the pipeline ranks for a member
    store holding that balance."""
    from recsys.evaluation.policies import pipeline_policy
    from recsys.features.profiles import build_member_profiles
    from recsys.models.bundle import ModelBundle
    from recsys.pipeline.types import RecommendRequest

    split = time_split(small_world)
    bundle = ModelBundle.train(small_world, "popularity", None, before=split.before, seed=3)
    profiles = build_member_profiles(small_world, as_of=replay.cutoff.to_pydatetime())
    # home requests (no trip) that have redemption candidates
    req = replay.batch.requests
    redeem = np.bincount(replay.batch.request_row, weights=replay.family == "redemption", minlength=len(req))
    rows = np.flatnonzero(req[Col.ORIGIN].isna().to_numpy() & (redeem > 0))[::3][:300]
    batch = replay.batch.take(rows)
    timed = pipeline_policy("timed", bundle, profiles, balance_at_request=True).inclusion(batch)
    at_cutoff = pipeline_policy("cutoff", bundle, profiles)
    cutoff_inclusion = at_cutoff.inclusion(batch)
    assert (timed != cutoff_inclusion).any()  # the balance moved for some members since the cut-off
    balances = _plain_balances(small_world, batch.requests[Col.MEMBER_ID], batch.requests[Col.REQUEST_TIME])
    assert at_cutoff.store is not None
    starts = batch.starts
    for i in range(batch.n_requests):
        row = batch.requests.iloc[i]
        record = at_cutoff.store.get(str(row[Col.MEMBER_ID]))
        assert record is not None
        record.profile[Col.MILES_BALANCE] = int(balances[i])
        now = pd.Timestamp(row[Col.REQUEST_TIME]).tz_localize("UTC").to_pydatetime()
        ranking = at_cutoff.pipeline.rank(
            RecommendRequest(member_id=str(row[Col.MEMBER_ID]), placement=str(row[Col.PLACEMENT]), now=now)
        )
        cand = list(batch.offer_id[starts[i] : starts[i + 1]])
        want = set([o for o in ranking if o in set(cand)][: int(row["slots"])])
        got = set(np.asarray(cand)[timed[starts[i] : starts[i + 1]] > 0])
        assert got == want, (i, got, want)
