"""The contextual ranker trained on the small generated world: it learns, saves and loads, scores a request's
candidates with exactly the features training computed for the same impression, and is served by the
pipeline under each ranking objective."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.data.layout import read_table
from recsys.evaluation.policies import PipelinePolicy
from recsys.evaluation.policy import SLOTS, PairScorer, RequestBatch, ScoredPolicy
from recsys.evaluation.replay import unaffordable
from recsys.features.miles import BALANCE_AT_REQUEST, balances_column, with_balances_at
from recsys.features.profiles import build_member_profiles
from recsys.models.bundle import ModelBundle
from recsys.pipeline import OfferPipeline, PipelineConfig, RecommendRequest, TripContext
from recsys.ranker.evaluation import heldout_report
from recsys.ranker.features import (
    BOOKING_FEATURES,
    BOOKING_INPUTS,
    CF_FEATURES,
    CF_SCORES,
    EXPOSURES_KEY,
    TRAVEL_KEY,
    ScoringContext,
    cf_scores,
    member_exposures,
    with_exposures,
    with_travel,
)
from recsys.ranker.policy import RankerScorer
from recsys.ranker.training import impression_table, read_events, train_ranker_bundle
from recsys.stores.member_store import EmbeddedMemberStore, publish_profiles

CONFIG = {
    "model": {"base_model": {"factors": 8, "iterations": 5, "num_threads": 1}, "ranker": {"window_days": 150}}
}


def miles_ledger(world: Path) -> pd.DataFrame:
    """The miles ledger as plain rows (member, time, signed miles), read apart from the code under test."""
    parts = [
        ("flights", "departure_time", "miles_earned", 1),
        ("partner_activities", "activity_time", "miles_earned", 1),
        ("redemptions", "redeem_time", "miles_spent", -1),
    ]
    rows = []
    for table, time_col, miles_col, sign in parts:
        df = pd.read_parquet(world / table, columns=["member_id", time_col, miles_col])
        rows.append(
            pd.DataFrame(
                {"m": df["member_id"].astype(str), "t": pd.to_datetime(df[time_col]),
                 "miles": sign * df[miles_col].astype(np.int64)}
            )
        )  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def ledger_balance(ledger: pd.DataFrame, member: str, when: pd.Timestamp) -> int:
    """A member's balance from the ledger entries strictly before ``when``."""
    mine = ledger.loc[ledger["m"] == member]
    return int(mine.loc[mine["t"] < pd.Timestamp(when), "miles"].sum())


@dataclass
class Trained:
    bundle: ModelBundle
    cutoff: pd.Timestamp
    reference: object


@pytest.fixture(scope="module")
def trained(small_world: Path) -> Trained:
    end = pd.Timestamp(read_events(small_world, None)["event_time"].max())
    cutoff = (end - pd.Timedelta(days=60)).normalize()
    bundle, training = train_ranker_bundle(
        small_world, CONFIG, before=cutoff.to_pydatetime(), seed=7, with_reference=True
    )
    return Trained(bundle, cutoff, training.reference)


def test_learns_acceptance_better_than_chance_and_is_calibrated(trained: Trained, small_world: Path):
    report = heldout_report(
        small_world, trained.bundle, trained.cutoff.to_pydatetime(), reference=trained.reference
    )
    m = report.metrics.set_index("model")
    assert m.loc["ranker_lightgbm", "auc"] > 0.65
    assert m.loc["logistic_regression", "auc"] > 0.6
    # Calibrated: the mean prediction is near the observed purchase rate of the held-out impressions.
    row = m.loc["ranker_lightgbm"]
    assert abs(row["mean_predicted"] - row["observed_rate"]) < 0.35 * row["observed_rate"]


def test_save_load_round_trip(trained: Trained, tmp_path: Path):
    trained.bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    assert loaded.kind == "ranker" and loaded.context_ranker is not None
    ctx = ScoringContext("home", trained.cutoff.tz_localize(UTC).to_pydatetime())
    offers = [str(o) for o in trained.bundle.offers["offer_id"][:30]]
    member = str(trained.bundle.member_ids.external_ids[0])
    a = trained.bundle.for_member(member).score(offers, ctx)[1]
    b = loaded.for_member(member).score(offers, ctx)[1]
    np.testing.assert_array_equal(a, b)
    assert ((a > 0) & (a < 1)).all()


def test_batch_equals_single(trained: Trained):
    ctx = ScoringContext(
        "booking",
        trained.cutoff.tz_localize(UTC).to_pydatetime(),
        "PEK",
        "CTU",
        trained.cutoff.tz_localize(UTC).to_pydatetime() + timedelta(days=3),
        "Y",
    )
    offers = [str(o) for o in trained.bundle.offers["offer_id"][:20]]
    scoring = trained.bundle.for_member("NEW-MEMBER")  # cold: scored from its (absent) features
    together = scoring.score(offers, ctx)[1]
    alone = np.concatenate([scoring.score([o], ctx)[1] for o in offers])
    np.testing.assert_allclose(together, alone, rtol=1e-12)
    assert np.isfinite(together).all() and (together > 0).all()


def test_request_features_equal_training_features(trained: Trained, small_world: Path):
    """The per-request path, given what the member store would hold at the impression's time, builds the very
    row training built for that impression (no training/serving skew)."""
    bundle = trained.bundle
    ranker = bundle.context_ranker
    assert ranker is not None
    start = trained.cutoff
    as_of = start.to_pydatetime() - timedelta(microseconds=1)
    profiles = with_travel(build_member_profiles(small_world, as_of, seed=7), small_world, as_of)
    assert profiles[TRAVEL_KEY].notna().any()
    offers = read_table(small_world, "offers")
    events = read_events(small_world, start + pd.Timedelta(days=30))
    table = impression_table(
        small_world, ranker.space, offers, events, profiles, bundle, start, start + pd.Timedelta(days=30)
    )
    imps = events[(events["event_type"] == "impression") & (events["event_time"] >= start)].reset_index(
        drop=True
    )
    flights = read_table(small_world, "flights").set_index("flight_id")
    ledger = miles_ledger(small_world)
    rng = np.random.default_rng(0)
    by_id = profiles.set_index("member_id")
    checked = 0
    for i in rng.choice(len(table), 40, replace=False):
        imp = imps.iloc[i]
        assert imp["member_id"] == table.member_id[i] and imp["offer_id"] == table.offer_id[i]
        when = pd.Timestamp(imp["event_time"]).tz_localize(UTC)
        profile = by_id.loc[imp["member_id"]].to_dict()
        # what the service reads at the impression's time: the balance as of then (the replay sets it)
        profile["miles_balance"] = int(ledger_balance(ledger, imp["member_id"], imp["event_time"]))
        profile[EXPOSURES_KEY] = member_exposures(events, offers, when).get(imp["member_id"])
        trip = {}
        if isinstance(imp["flight_id"], str) and imp["flight_id"] in flights.index:
            f = flights.loc[imp["flight_id"]]
            trip = {
                "origin": f["origin"],
                "destination": f["destination"],
                "cabin": f["cabin"],
                "departure_time": pd.Timestamp(f["departure_time"]).tz_localize(UTC).to_pydatetime(),
            } | {c: None if pd.isna(f[c]) else int(f[c]) for c in BOOKING_INPUTS}
        ctx = ScoringContext(imp["placement"], when.to_pydatetime(), profile=profile, **trip)
        off = bundle._ranker_offers
        row = np.asarray([bundle._ranker_rows[imp["offer_id"]]])
        scoring = bundle.for_member(imp["member_id"], member_features=profile)
        cf = cf_scores(scoring.vector, bundle._vectors.item, bundle._ranker_cf, row)
        x = ranker.space.request_matrix(off, row, ctx, cf, scoring.known)[0]
        names = list(ranker.space.names)
        if not scoring.known:  # the cold vector comes from the profile's group online: compare the rest
            keep = [j for j, n in enumerate(names) if n not in CF_SCORES]
            x, want = x[keep], table.x[i][keep]
        else:
            want = table.x[i]
        np.testing.assert_allclose(x, want, rtol=1e-5, equal_nan=True, err_msg=str(imp.to_dict()))
        checked += 1
    assert checked == 40
    # the booking block was exercised: trip rows carry it, home rows leave it missing
    booking = table.x[:, [names.index(c) for c in BOOKING_FEATURES]]
    assert np.isfinite(booking).any(axis=1).mean() > 0.3 and np.isnan(booking).all(axis=1).any()


def test_training_rows_see_the_miles_balance_as_of_each_impression(trained: Trained, small_world: Path):
    """Not the profile build's balance: a row's miles balance (and its miles cover) is the ledger's sum before
    the impression's time, so miles earned and redeemed within the window reach the row."""
    bundle = trained.bundle
    space = bundle.context_ranker.space
    start, end = trained.cutoff, trained.cutoff + pd.Timedelta(days=30)
    as_of = start.to_pydatetime() - timedelta(microseconds=1)
    profiles = build_member_profiles(small_world, as_of, seed=7)
    events = read_events(small_world, end)
    table = impression_table(
        small_world, space, read_table(small_world, "offers"), events, profiles, bundle, start, end
    )
    ledger = miles_ledger(small_world)
    names = list(space.names)
    rng = np.random.default_rng(3)
    at_build = profiles.set_index("member_id")["miles_balance"]
    changed = 0
    for i in rng.choice(len(table), 150, replace=False):
        member, when = table.member_id[i], pd.Timestamp("2000-01-01") + pd.Timedelta(seconds=table.time[i])
        want = ledger_balance(ledger, member, when)
        assert table.x[i, names.index("miles_balance")] == want, (member, when)
        changed += int(at_build.loc[member] != want)
    assert changed > 0  # the window's miles moved some balances away from the profile build's


def test_new_offers_get_scores_from_their_features(trained: Trained):
    ranker = trained.bundle.context_ranker
    assert ranker is not None
    offers = trained.bundle.offers
    new = offers.iloc[[0]].assign(offer_id="BRAND-NEW-01")
    arrays = ranker.space.bind_offers(pd.concat([offers, new], ignore_index=True))
    assert arrays.code[-1] == -1
    ctx = ScoringContext("booking", trained.cutoff.tz_localize(UTC).to_pydatetime())
    p = ranker.predict(
        ranker.space.request_matrix(
            arrays, np.asarray([0, len(offers)]), ctx, np.full((2, len(CF_SCORES)), np.nan), False
        )
    )
    assert np.isfinite(p).all() and (p > 0).all() and (p < 1).all()


def test_pipeline_serves_the_rankers_probabilities_under_each_objective(trained: Trained, small_world: Path):
    bundle = trained.bundle
    profiles = with_exposures(
        build_member_profiles(small_world, trained.cutoff.to_pydatetime(), seed=7), small_world
    )
    assert profiles[EXPOSURES_KEY].notna().any()
    store = EmbeddedMemberStore()
    publish_profiles(store, profiles, bundle, "v1")
    now = trained.cutoff.tz_localize(UTC).to_pydatetime() + timedelta(hours=6)
    loose = {"family_repeat_penalty": 1.0, "max_per_category": 50}
    members = [*profiles["member_id"].astype(str).head(25), "NEW-1"]
    served = 0
    for objective in ("expected_value", "acceptance", "blend"):
        pipe = OfferPipeline(bundle, store, config=PipelineConfig(objective=objective, **loose))
        for i, member in enumerate(members):
            trip = TripContext(
                origin="PEK",
                destination="CTU",
                departure_time=now + timedelta(hours=30 + i),
                cabin="Y",
                fare_class="M",
                flight_number="CA4101",
                seats_left={"W": 3},
            )
            placement = ("booking", "check_in", "post_booking")[i % 3]
            result = pipe.recommend(
                RecommendRequest(member_id=member, placement=placement, trip=trip, limit=8, now=now)
            )
            offers = result.offers
            if not offers:
                continue
            served += 1
            profile = store.get(member).profile if store.get(member) else None
            ctx = ScoringContext(placement, now, "PEK", "CTU", trip.departure_time, "Y", profile)
            want = bundle.for_member(member, member_features=profile).score(
                [o.offer_id for o in offers], ctx
            )[1]
            np.testing.assert_allclose([o.acceptance_probability for o in offers], want, rtol=1e-9)
            p = np.asarray([o.acceptance_probability for o in offers])
            ev = np.asarray([o.expected_value for o in offers])
            key = {"expected_value": ev, "acceptance": p, "blend": np.sqrt(p * ev)}[objective]
            assert (np.diff(key) <= 1e-12).all(), (objective, key)
    assert served >= 3 * 20


def test_ranker_is_a_policy_of_the_policy_evaluation(trained: Trained, small_world: Path):
    """Replayed requests (here: the held-out impressions' requests, their shown offers as candidates) get the
    probabilities the held-out table computes for the same impressions, and a top-k slate by the objective."""
    bundle = trained.bundle
    start, end = trained.cutoff, trained.cutoff + pd.Timedelta(days=10)
    events = read_events(small_world, end)
    imps = events[(events["event_type"] == "impression") & (events["event_time"] >= start)]
    imps = imps.sort_values(["request_id", "offer_id"]).reset_index(drop=True)
    flights = read_table(small_world, "flights").set_index("flight_id")
    req = imps.drop_duplicates("request_id").reset_index(drop=True)
    trip = flights.reindex(req["flight_id"])
    requests = pd.DataFrame(
        {
            "request_id": req["request_id"],
            "member_id": req["member_id"],
            "request_time": req["event_time"],
            "placement": req["placement"],
            "flight_id": req["flight_id"],
            "flight_number": trip["flight_number"].to_numpy(),
            "origin": trip["origin"].to_numpy(),
            "destination": trip["destination"].to_numpy(),
            "cabin": trip["cabin"].to_numpy(),
            "fare_class": trip["fare_class"].to_numpy(),
            "departure_time": trip["departure_time"].to_numpy(),
            **{c: trip[c].to_numpy() for c in BOOKING_INPUTS},  # the request log's booking columns
            SLOTS: 1,
        }
    )
    rows = pd.Index(requests["request_id"]).get_indexer(imps["request_id"])
    requests = with_balances_at(small_world, requests)  # as load_replay reads it: as of each request
    batch = RequestBatch(requests, rows, imps["offer_id"].to_numpy(object))
    scorer = RankerScorer(bundle, small_world, objective="acceptance")
    assert isinstance(scorer, PairScorer)
    assert scorer.trained_before == trained.cutoff.to_pydatetime()
    p = scorer.probabilities(batch)
    as_of = start.to_pydatetime() - timedelta(microseconds=1)
    profiles = with_travel(build_member_profiles(small_world, as_of, seed=42), small_world, as_of)
    table = impression_table(
        small_world, bundle.context_ranker.space, read_table(small_world, "offers"), events, profiles, bundle,
        start, end,
    )  # fmt: skip
    want = pd.Series(bundle.context_ranker.predict(table.x), index=table.member_id + "|" + table.offer_id)
    got = pd.Series(p, index=(imps["member_id"] + "|" + imps["offer_id"]).to_numpy())
    want = want.groupby(level=0).mean()
    assert len(got) >= 50
    np.testing.assert_allclose(got.groupby(level=0).mean().loc[want.index], want, rtol=1e-9)
    inclusion = ScoredPolicy(scorer).inclusion(batch)
    per_request = np.bincount(batch.request_row, weights=inclusion)
    assert (per_request == 1).all()
    best = np.asarray([p[batch.request_row == r].max() for r in range(batch.n_requests)])
    np.testing.assert_allclose(p[inclusion == 1], best)
    ev = RankerScorer(bundle, small_world, objective="expected_value").score(batch)
    margin = np.asarray([scorer._value[o] for o in batch.offer_id])
    np.testing.assert_allclose(ev, p * margin, rtol=1e-9)


def test_cf_scores_are_dot_products_with_the_offer_and_its_destination_tokens(trained: Trained):
    bundle = trained.bundle
    offers = bundle.offers.reset_index(drop=True)
    award = int(offers.index[offers["category"] == "award_flight"][0])
    dest = str(offers.loc[award, "destination"])
    member = str(bundle.member_ids.external_ids[3])
    scoring = bundle.for_member(member)
    u = np.asarray(scoring.vector, dtype=np.float64)
    row = np.asarray([bundle._ranker_rows[offers.loc[award, "offer_id"]]])
    got = cf_scores(u, bundle._vectors.item, bundle._ranker_cf, row)[0]
    want_offer = bundle.item_embedding(f"offer:{offers.loc[award, 'offer_id']}") @ u
    want_dest = bundle.item_embedding(f"dest:{dest}") @ u
    dest_rows = [i for i in bundle.item_ids.external_ids if str(i).startswith("dest:")]
    mean = np.mean([bundle.item_embedding(str(i)) for i in dest_rows], axis=0)
    np.testing.assert_allclose(got[:3], [want_offer, want_dest, want_dest - mean @ u], rtol=1e-4)
    hotel = bundle.item_embedding(f"hotel:{dest}")
    assert np.isnan(got[3]) if hotel is None else np.isclose(got[3], hotel @ u, rtol=1e-4)


def test_the_ranker_without_cf_features(small_world: Path, trained: Trained, tmp_path: Path):
    config = {"model": {**CONFIG["model"], "ranker": {**CONFIG["model"]["ranker"], "cf_features": False}}}
    bundle, _ = train_ranker_bundle(small_world, config, before=trained.cutoff.to_pydatetime(), seed=7)
    ranker = bundle.context_ranker
    assert ranker is not None and not ranker.space.cf and ranker.space.taste is None
    assert not set(CF_FEATURES) & set(ranker.space.names)
    assert set(CF_FEATURES) <= set(trained.bundle.context_ranker.space.names)
    assert list(ranker.booster.feature_name()) == list(ranker.space.names)
    assert bundle.params["model.ranker.cf_features"] is False  # logged to MLflow with the bundle's params
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    assert loaded.context_ranker is not None and not loaded.context_ranker.space.cf
    ctx = ScoringContext("home", trained.cutoff.tz_localize(UTC).to_pydatetime())
    offers = [str(o) for o in bundle.offers["offer_id"][:30]]
    member = str(bundle.member_ids.external_ids[0])
    a = bundle.for_member(member).score(offers, ctx)[1]
    np.testing.assert_array_equal(a, loaded.for_member(member).score(offers, ctx)[1])
    assert ((a > 0) & (a < 1)).all()
    # the CF vector does not reach the ranker's answer: another member with the same profile scores the same
    other = str(bundle.member_ids.external_ids[1])
    np.testing.assert_array_equal(a, bundle.for_member(other).score(offers, ctx)[1])


def test_impression_rows_carry_their_request_and_click(trained: Trained, small_world: Path):
    bundle = trained.bundle
    start, end = trained.cutoff, trained.cutoff + pd.Timedelta(days=20)
    events = read_events(small_world, end)
    profiles = build_member_profiles(small_world, start.to_pydatetime(), seed=7)
    offers = read_table(small_world, "offers")
    table = impression_table(
        small_world, bundle.context_ranker.space, offers, events, profiles, bundle, start, end
    )
    clicks = events[events["event_type"] == "click"]
    clicked = set(zip(clicks["request_id"], clicks["offer_id"], strict=True))
    bought = events[events["event_type"] == "purchase"]
    purchased = set(zip(bought["request_id"], bought["offer_id"], strict=True))
    want_click = [(r, o) in clicked for r, o in zip(table.request_id, table.offer_id, strict=True)]
    want_buy = [(r, o) in purchased for r, o in zip(table.request_id, table.offer_id, strict=True)]
    np.testing.assert_array_equal(table.click.astype(bool), want_click)
    np.testing.assert_array_equal(table.y.astype(bool), want_buy)
    assert table.click.sum() > 0 and table.y.sum() > 0


def test_compiled_trees_predict_what_lightgbm_predicts(trained: Trained, small_world: Path):
    """The ranker serves its trees compiled (lleaves); on real feature rows (missing values, categoricals,
    unseen categories) they give LightGBM's own probabilities."""
    from recsys.ranker.model import _compiled

    ranker = trained.bundle.context_ranker
    assert ranker is not None
    start = trained.cutoff - pd.Timedelta(days=30)
    as_of = start.to_pydatetime() - timedelta(microseconds=1)
    profiles = with_travel(build_member_profiles(small_world, as_of, seed=42), small_world, as_of)
    events = read_events(small_world, trained.cutoff)
    table = impression_table(
        small_world, ranker.space, read_table(small_world, "offers"), events, profiles, trained.bundle,
        start, trained.cutoff,
    )  # fmt: skip
    x = table.x.astype(np.float32)
    assert len(x) > 500 and np.isnan(x).any()
    x[::7, list(ranker.space.names).index("offer_category")] = 999  # a category no tree has seen
    x[::11, list(ranker.space.names).index("placement")] = -1  # a missing one
    compiled = _compiled(ranker.booster)
    assert compiled is not None
    want = ranker.booster.predict(x, num_threads=1)
    np.testing.assert_allclose(compiled(x), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(compiled(x[:14]), want[:14], rtol=1e-9, atol=1e-12)  # a request's rows


def test_the_booking_block_is_optional_and_old_spaces_load_without_it(trained: Trained):
    ranker = trained.bundle.context_ranker
    assert ranker is not None and ranker.space.booking
    assert list(ranker.space.names[-len(BOOKING_FEATURES) :]) == list(BOOKING_FEATURES)
    saved = ranker.space.to_json()
    old = {k: v for k, v in saved.items() if k != "booking"}  # a space saved before the booking block
    space = type(ranker.space).from_json(old)
    assert not space.booking and not set(BOOKING_FEATURES) & set(space.names)
    # one request: a Friday departure, two nights (a Saturday night), a party with children
    friday = pd.Timestamp("2026-07-03 09:00", tz=UTC).to_pydatetime()
    ctx = ScoringContext(
        "booking", friday - timedelta(days=20), "PEK", "CTU", friday, "Y",
        booking_lead_days=20, party_size=4, children=2, stay_nights=2,
    )  # fmt: skip
    off = trained.bundle._ranker_offers
    rows = np.arange(3)
    x = ranker.space.request_matrix(off, rows, ctx, np.zeros((3, len(CF_SCORES))), False)
    np.testing.assert_array_equal(x[:, -len(BOOKING_FEATURES) :], [[20, 4, 2, 2, 1]] * 3)
    sunday_return = ScoringContext("booking", ctx.now, "PEK", "CTU", friday, "Y", stay_nights=0)
    x = ranker.space.request_matrix(off, rows, sunday_return, np.zeros((3, len(CF_SCORES))), False)
    assert np.isnan(x[0, -5:-2]).all() and list(x[0, -2:]) == [0, 0]  # no Saturday night in a day trip


def _write_ledger(
    root: Path, flights: list[tuple[str, pd.Timestamp, int]], spent: list[tuple[str, pd.Timestamp, int]]
) -> None:
    """A dataset holding only a miles ledger: flights (member, departure, miles earned) and redemptions."""
    for table, time_col, miles_col, rows in (
        ("flights", "departure_time", "miles_earned", flights),
        ("redemptions", "redeem_time", "miles_spent", spent),
    ):
        (root / table).mkdir(parents=True)
        frame = pd.DataFrame(rows, columns=["member_id", time_col, miles_col])
        frame[time_col] = pd.to_datetime(frame[time_col]).astype("datetime64[us]")
        frame.to_parquet(root / table / "part-00000.parquet", index=False)


class _RecordingRanker:
    """The trained context ranker, keeping every feature matrix it is asked to score."""

    def __init__(self, ranker: Any) -> None:
        self.space = ranker.space
        self._ranker = ranker
        self.seen: list[np.ndarray] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(x))
        return np.asarray(self._ranker.predict(x))


class _RecordingPipeline:
    """Ranks nothing; notes the miles balance in the member store's record at each request."""

    def __init__(self, store: EmbeddedMemberStore) -> None:
        self.store = store
        self.balances: list[int] = []

    def rank(self, request: RecommendRequest) -> list[str]:
        record = self.store.get(request.member_id)
        assert record is not None
        self.balances.append(int(record.profile["miles_balance"]))
        return []


def test_the_replay_s_balance_readers_all_see_the_balance_as_of_each_request(
    trained: Trained, small_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests of one member around a redemption: the balance is read once per request, and the replay's
    affordability, the replayed pipeline's member record and the ranker's miles_balance feature all see it
    (the first request affords the offer, the second does not); expected balances computed by hand."""
    offers = read_table(small_world, "offers")
    redeem = offers[(offers["family"] == "redemption") & (offers["price_miles"].fillna(0) >= 5000)]
    offer = redeem.iloc[0]
    price = int(offer["price_miles"])
    scorer = RankerScorer(trained.bundle, small_world, objective="acceptance")
    member = str(scorer._member_profiles()["member_id"].iloc[0])
    t0 = trained.cutoff + pd.Timedelta(days=5)
    first, second = t0, t0 + pd.Timedelta(days=1)
    ledger = tmp_path / "ledger"
    _write_ledger(
        ledger,
        flights=[
            (member, trained.cutoff - pd.Timedelta(days=30), price + 1000),
            (member, t0 + pd.Timedelta(days=10), 50_000),  # after both requests
            ("someone else", t0 - pd.Timedelta(days=1), 99_999),
        ],
        spent=[(member, t0 + pd.Timedelta(hours=12), 2000)],  # between the two requests
    )
    want = [price + 1000, price - 1000]  # by hand: earned before the first; less the redemption

    requests = pd.DataFrame(
        {
            "request_id": ["r1", "r2"],
            "member_id": [member, member],
            "request_time": [first, second],
            "placement": ["home", "home"],
            **{
                c: [None, None]
                for c in ("flight_id", "flight_number", "origin", "destination", "cabin", "fare_class")
            },
            "departure_time": pd.Series([pd.NaT, pd.NaT], dtype="datetime64[ns]"),
            SLOTS: 1,
        }
    )
    requests = with_balances_at(ledger, requests)
    assert requests[BALANCE_AT_REQUEST].tolist() == want
    batch = RequestBatch(requests, np.array([0, 1]), np.array([offer["offer_id"]] * 2, dtype=object))
    balances = balances_column(batch.requests)

    # the replay's truth: the redemption is affordable at the first request only
    ocode = pd.Index(offers["offer_id"]).get_indexer(batch.offer_id)
    assert unaffordable(offers, balances, batch.request_row, ocode).tolist() == [False, True]

    # the replayed pipeline: the member record holds each request's balance, not the published one
    profiles = scorer._member_profiles()
    store = EmbeddedMemberStore()
    store.publish(profiles[profiles["member_id"] == member].assign(miles_balance=123), None, "replay")
    pipeline = _RecordingPipeline(store)
    PipelinePolicy("p", pipeline, None, store=store, balance_at_request=True).inclusion(batch)
    assert pipeline.balances == want

    # the ranker: its miles_balance feature of each pair
    recorder = _RecordingRanker(trained.bundle.context_ranker)
    monkeypatch.setattr(trained.bundle, "context_ranker", recorder)
    scorer.probabilities(batch)
    (x,) = recorder.seen
    assert x[:, recorder.space.names.index("miles_balance")].tolist() == want

    # a batch without the column (e.g. a replay pickled by older code) is refused, not read another way
    bare = RequestBatch(requests.drop(columns=[BALANCE_AT_REQUEST]), batch.request_row, batch.offer_id)
    with pytest.raises(ValueError, match=BALANCE_AT_REQUEST):
        scorer.probabilities(bare)
    with pytest.raises(ValueError, match=BALANCE_AT_REQUEST):
        PipelinePolicy("p", pipeline, None, store=store, balance_at_request=True).inclusion(bare)
