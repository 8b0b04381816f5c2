"""The served artefact on a small hand-made world with planted tastes (see taste_world.write_taste_world)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.data.layout import DatasetWriter, read_table
from recsys.models.bundle import BundleError, CalibrationConfig, Calibrator, ModelBundle
from recsys.schema import Col

FAST = {
    "popularity": {},
    "als": {"factors": 8, "iterations": 8, "num_threads": 1},
    "bpr": {"factors": 8, "iterations": 60},
    "lightfm": {"no_components": 8, "epochs": 10},
    "hybrid": {
        "als": {"factors": 8, "iterations": 8, "num_threads": 1},
        "lightfm": {"no_components": 8, "epochs": 10},
    },
}
EATER, LOUNGER, NO_HISTORY = "M0000", "M0001", "M0117"  # M0116..M0119 have no history
EATER_OFFERS = {"MEAL-VGML", "MEAL-SIG", "AWD-CTU"}
LOUNGER_OFFERS = {"LOUNGE", "WIFI", "UPG-YW"}


_WORLDS: dict[int, Path] = {}


def bundle_world(bundle: ModelBundle) -> Path:
    return _WORLDS[id(bundle)]


@pytest.fixture(scope="module", params=list(FAST))
def bundle(request, taste_world: Path) -> ModelBundle:
    b = ModelBundle.train(taste_world, request.param, {"model": FAST[request.param]}, seed=3)
    _WORLDS[id(b)] = taste_world
    return b


def test_recommend_frame_shape_ranks_and_cold_members(bundle: ModelBundle):
    recs = bundle.recommend([EATER, LOUNGER, NO_HISTORY, "UNKNOWN"], k=3)
    assert list(recs.columns) == [Col.MEMBER_ID, Col.OFFER_ID, "score", "rank"]
    assert recs.groupby(Col.MEMBER_ID).size().to_dict() == {EATER: 3, LOUNGER: 3, NO_HISTORY: 3, "UNKNOWN": 3}
    assert recs[Col.MEMBER_ID].tolist()[:3] == [EATER] * 3  # input order kept
    assert recs["rank"].tolist() == [1, 2, 3] * 4
    assert set(recs[Col.OFFER_ID]) <= set(bundle.offers[Col.OFFER_ID])
    for _, g in recs.groupby(Col.MEMBER_ID):
        assert g["score"].is_monotonic_decreasing


def test_personalised_models_learn_the_planted_tastes(bundle: ModelBundle):
    recs = bundle.recommend([EATER, LOUNGER], k=3)
    top = recs.groupby(Col.MEMBER_ID)[Col.OFFER_ID].apply(set).to_dict()
    if bundle.kind == "popularity":  # per tier: the eater is gold, the lounger basic
        assert top[EATER] == EATER_OFFERS and top[LOUNGER] == LOUNGER_OFFERS
    else:
        assert len(top[EATER] & EATER_OFFERS) >= 2 and len(top[LOUNGER] & LOUNGER_OFFERS) >= 2


def test_score_matches_recommend_and_unknown_offers_score_minus_inf(bundle: ModelBundle):
    recs = bundle.recommend([EATER], k=7)
    scores = bundle.score(EATER, [*recs[Col.OFFER_ID], "NOT-AN-OFFER"])
    np.testing.assert_allclose(scores[:-1], recs["score"].to_numpy(), rtol=1e-5)
    assert np.isneginf(scores[-1])


def test_acceptance_probability_is_a_probability_and_calibrated_in_the_large(bundle: ModelBundle):
    offers = bundle.offers[Col.OFFER_ID].tolist()
    for member in (EATER, LOUNGER, "UNKNOWN"):
        p = bundle.acceptance_probability(member, offers)
        assert ((p >= 0) & (p <= 1)).all()
    assert bundle.acceptance_probability(EATER, ["NOT-AN-OFFER"])[0] == 0.0
    # On the training impressions, the mean predicted probability matches the observed purchase rate.
    events = read_table(bundle_world(bundle), "interactions").sort_values(Col.EVENT_TIME)
    imps = events[events[Col.EVENT_TYPE] == "impression"]
    buys = events.loc[events[Col.EVENT_TYPE] == "purchase", [Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TIME]]
    joined = pd.merge_asof(
        imps, buys.assign(_bought=1), on=Col.EVENT_TIME, by=[Col.MEMBER_ID, Col.OFFER_ID],
        direction="forward", tolerance=pd.Timedelta(days=7),
    )  # fmt: skip
    label = joined["_bought"].fillna(0).to_numpy()
    pairs = zip(joined[Col.MEMBER_ID], joined[Col.OFFER_ID], strict=True)
    p = np.concatenate([bundle.acceptance_probability(m, [o]) for m, o in pairs])
    assert abs(p.mean() - label.mean()) < 0.03
    assert bundle.info["stats"]["calibration_known"] == "offer_logistic"


def test_calibrators():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=4000)
    items = rng.integers(0, 4, size=4000)
    truth = 1 / (1 + np.exp(-(1.5 * scores + np.asarray([-3.0, -2.0, -1.0, 0.0])[items])))
    labels = (rng.random(4000) < truth).astype(int)
    cal = Calibrator.fit(scores, labels, CalibrationConfig(), items, 4)
    assert cal.kind == "offer_logistic" and cal.x[0] > 0 and cal.x[1] > 0
    p = cal(scores, items)
    assert abs(p.mean() - labels.mean()) < 0.01
    assert cal(np.asarray([0.0, -np.inf]), np.asarray([-1, 0])).tolist() == [
        0.0,
        0.0,
    ]  # unknown offer, no score
    iso = Calibrator.fit(scores, labels, CalibrationConfig(method="isotonic"))
    grid = np.linspace(-3, 3, 50)
    assert (np.diff(iso(grid)) >= 0).all()
    few = Calibrator.fit(scores[:10], labels[:10], CalibrationConfig())
    assert few.kind == "constant"


def test_retrieve_equals_exact_ranking(bundle: ModelBundle):
    ids, scores = bundle.retrieve(EATER, 4)
    recs = bundle.recommend([EATER], k=4)
    assert list(ids) == recs[Col.OFFER_ID].tolist()
    np.testing.assert_allclose(scores, recs["score"].to_numpy(), rtol=1e-5)
    assert bundle.info["index"]["offers_recall_at_10"] == 1.0


def test_exclude_purchased(bundle: ModelBundle):
    bought = set(bundle.item_ids.external_ids[bundle.purchased[bundle.member_ids.index_of(EATER)].indices])
    assert bought  # the eater bought something
    recs = bundle.recommend([EATER], k=7, exclude_purchased=True)
    assert not {f"offer:{o}" for o in recs[Col.OFFER_ID]} & bought
    assert len(recs) == 7 - len(bought)


def test_all_items_and_destinations(bundle: ModelBundle):
    recs = bundle.recommend([EATER], k=20, offers_only=False)
    assert any(str(i).startswith("dest:") for i in recs[Col.OFFER_ID])
    codes, vectors = bundle.destination_embeddings()
    assert set(codes) == {"CTU", "CAN"} and vectors.shape == (2, bundle.model.dim)
    dests, _ = bundle.similar_destinations(EATER, 2)
    if bundle.kind != "popularity" and bundle.kind != "bpr":
        assert dests[0] == "CTU"


def test_member_embedding_and_known(bundle: ModelBundle):
    assert bundle.is_known(EATER) and not bundle.is_known(NO_HISTORY) and not bundle.is_known("UNKNOWN")
    emb = bundle.member_embedding(EATER)
    assert emb is not None and emb.shape == (bundle.model.dim,)
    assert bundle.member_embedding("UNKNOWN") is None


def test_cold_start_from_member_features(bundle: ModelBundle):
    gold = {"tier": "gold", "home_airport": "PEK", "dominant_cabin": "C"}
    basic = {"tier": "basic", "home_airport": "SHA", "dominant_cabin": "Y"}
    gold = bundle.score("NEW-GOLD", ["MEAL-VGML", "LOUNGE"], gold)
    basic = bundle.score("NEW-BASIC", ["MEAL-VGML", "LOUNGE"], basic)
    assert np.isfinite(gold).all() and np.isfinite(basic).all()
    assert gold[0] > gold[1] and basic[1] > basic[0]  # group popularity or content: each group's taste
    assert np.isfinite(bundle.score("NEW", ["LOUNGE"])).all()  # nothing known: global popularity


def test_save_load_round_trip(bundle: ModelBundle, tmp_path: Path):
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    members = [EATER, LOUNGER, NO_HISTORY, "UNKNOWN"]
    pd.testing.assert_frame_equal(bundle.recommend(members, k=5), loaded.recommend(members, k=5))
    offers = bundle.offers[Col.OFFER_ID].tolist()
    for m in members:
        np.testing.assert_array_equal(
            bundle.acceptance_probability(m, offers), loaded.acceptance_probability(m, offers)
        )
        assert list(bundle.retrieve(m, 3)[0]) == list(loaded.retrieve(m, 3)[0])
    assert loaded.params == bundle.params and loaded.kind == bundle.kind
    pd.testing.assert_frame_equal(loaded.offers, bundle.offers)


def test_per_request_scoring_is_fast(bundle: ModelBundle):
    offers = (bundle.offers[Col.OFFER_ID].tolist() * 12)[:80]
    bundle.score(EATER, offers)
    t0 = time.perf_counter()
    for _ in range(200):
        bundle.score(EATER, offers)
        bundle.acceptance_probability(LOUNGER, offers)
    per_call = (time.perf_counter() - t0) / 400
    assert per_call < 1e-3, f"{per_call * 1e6:.0f} µs per call"


def test_params_are_flat(bundle: ModelBundle):
    assert bundle.params["kind"] == bundle.kind and bundle.params["seed"] == 3
    assert all(isinstance(v, str | int | float | bool) or v is None for v in bundle.params.values())


# -- training inputs ---------------------------------------------------------------------------------------
def test_seed_makes_training_deterministic(taste_world: Path):
    a = ModelBundle.train(taste_world, "als", {"model": FAST["als"]}, seed=5)
    b = ModelBundle.train(taste_world, "als", {"model": FAST["als"]}, seed=5)
    np.testing.assert_array_equal(a.model.vectors_.user, b.model.vectors_.user)


def test_cutoff_trains_on_the_earlier_period_only(taste_world: Path):
    full = ModelBundle.train(taste_world, "popularity")
    early = ModelBundle.train(taste_world, "popularity", before=datetime(2026, 1, 1))
    assert early.info["stats"]["interactions.used"] < full.info["stats"]["interactions.used"]
    assert early.params["before"] == "2026-01-01T00:00:00"


def test_bad_configuration_and_kind_are_clear_errors(taste_world: Path):
    with pytest.raises(BundleError, match="unknown model kind"):
        ModelBundle.train(taste_world, "svd")
    with pytest.raises(ValidationError):
        ModelBundle.train(taste_world, "als", {"modle": {}})
    with pytest.raises(ValidationError):
        ModelBundle.train(taste_world, "als", {"model": {"factorz": 3}})
    with pytest.raises(ValidationError, match="unknown group features"):
        ModelBundle.train(taste_world, "als", {"groups": ["shoe_size"]})
    with pytest.raises(ValueError, match="k must be"):
        ModelBundle.train(taste_world, "popularity").recommend(["M0000"], k=0)


def test_no_interactions_before_the_cutoff_is_a_clear_error(taste_world: Path):
    with pytest.raises(BundleError, match="no interactions before"):
        ModelBundle.train(taste_world, "popularity", before=datetime(2020, 1, 1))


def test_empty_catalogue_is_a_clear_error(tmp_path: Path):
    with DatasetWriter(tmp_path / "empty") as w:
        w.write_table(
            "members", pd.DataFrame({Col.MEMBER_ID: ["a"], Col.TIER: ["basic"], Col.HOME_AIRPORT: ["PEK"]})
        )
        w.write_table("offers", pd.DataFrame({Col.OFFER_ID: pd.Series([], dtype=object)}))
        w.commit({"source": "test"})
    with pytest.raises(BundleError, match="catalogue is empty"):
        ModelBundle.train(tmp_path / "empty", "popularity")


def test_loading_something_else_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BundleError, match="not a model bundle"):
        ModelBundle.load(tmp_path)


def test_similar_destinations_to(bundle: ModelBundle):
    codes, scores = bundle.similar_destinations_to("CTU", 3)
    if bundle.kind == "popularity":
        assert len(codes) == 0  # no learned item vectors
    else:
        assert list(codes) == ["CAN"] and len(scores) == 1
    assert len(bundle.similar_destinations_to("XXX")[0]) == 0
