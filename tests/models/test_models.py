"""Model-specific behaviour beyond the contract: hand-computed popularity, top-k ties, content cold start, the
hybrid's blend."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from contract import ITEMS, MEMBERS, dataset, item_features

from recsys.ids import IdMap
from recsys.models.als import ALSRecommender
from recsys.models.base import FeatureMatrix, RecDataset, topk
from recsys.models.hybrid import HybridRecommender
from recsys.models.lightfm_model import LightFMRecommender
from recsys.models.popularity import PopularityRecommender
from recsys.models.registry import MODEL_KINDS, create_model


def test_topk_orders_best_first_and_breaks_ties_by_index():
    scores = np.asarray([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, -np.inf, 5.0, 5.0, 1.0]], dtype=np.float32)
    top, values = topk(scores, 3)
    assert top.tolist() == [[1, 2, 4], [2, 3, 4]]
    assert values.tolist() == [[3.0, 3.0, 3.0], [5.0, 5.0, 1.0]]


def test_topk_matches_a_full_sort_and_is_the_same_row_by_row():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 20, size=(50, 40)).astype(np.float32)  # many ties
    top, _ = topk(scores, 7)
    for r in range(len(scores)):
        expected = np.lexsort((np.arange(40), -scores[r]))[:7]
        assert top[r].tolist() == expected.tolist()
        assert topk(scores[r : r + 1], 7)[0][0].tolist() == top[r].tolist()


def test_global_popularity_is_column_weight_over_the_maximum():
    m = sp.csr_matrix(np.asarray([[1, 0, 2], [0, 1, 2], [3, 0, 0]], dtype=np.float32))
    data = RecDataset(
        m, IdMap(np.asarray(["a", "b", "c"], dtype=object)), IdMap(np.asarray(["x", "y", "z"], dtype=object))
    )
    model = PopularityRecommender(by_group=False).fit(data)
    ids, scores = model.recommend("a", N=3, filter_already_liked_items=False)
    # column sums 4, 1, 4 -> 1.0, 0.25, 1.0; tie x/z broken by index
    assert ids.tolist() == ["x", "z", "y"]
    np.testing.assert_allclose(scores, [1.0, 1.0, 0.25])


def test_group_popularity_is_shrunk_toward_global():
    data, _ = dataset()
    model = PopularityRecommender(popularity_shrinkage=10.0).fit(data)
    # group "gold" (block A, 10 members with history): each block item has 7 or 8 of 30 weight units...
    m = data.user_items.toarray()
    share_a = m[:10].sum(axis=0) / m[:10].sum()
    share_all = m.sum(axis=0) / m.sum()
    mixed = (10 * share_a + 10 * share_all) / 20
    expected = mixed / mixed.max()
    ids, scores = model.recommend("M20", N=8)  # cold member of group gold
    order = np.lexsort((np.arange(8), -expected))
    assert ids.tolist() == ITEMS[order].tolist()
    np.testing.assert_allclose(scores, expected[order], rtol=1e-5)


def _with_cold_item() -> RecDataset:
    """The contract dataset plus item i8: block-A features, no interactions."""
    data, _ = dataset()
    items = IdMap(np.asarray([*ITEMS, "i8"], dtype=object))
    ui = sp.hstack([data.user_items, sp.csr_matrix((len(MEMBERS), 1))], format="csr")
    f = item_features()
    feats = FeatureMatrix(sp.vstack([f.matrix, f.matrix[0]], format="csr"), f.names)
    return RecDataset(
        ui, data.member_ids, items, data.member_groups, data.group_names, data.member_features, feats
    )


def test_lightfm_scores_a_cold_member_by_content():
    model = LightFMRecommender(no_components=4, epochs=30, random_state=7).fit(dataset()[0])
    vector = model.content_vector(["tier=basic", "home=SHA"])  # looks like block B
    scores = model.vectors_.item @ vector
    assert set(np.argsort(-scores)[:4]) == {4, 5, 6, 7}
    assert model.content_vector(["tier=unknown-tier"]) is None


def test_lightfm_scores_an_offer_without_interactions_by_content():
    # Without the popularity prior (an offer nobody touched has none, so the prior ranks it low).
    model = LightFMRecommender(no_components=4, epochs=30, random_state=7, prior_weight=0.0)
    model.fit(_with_cold_item())
    ids, _ = model.recommend("M01", N=9, filter_already_liked_items=False)
    ranked = list(ids)
    assert ranked.index("i8") < min(ranked.index(f"i{j}") for j in range(4, 8))


def test_cf_model_ranks_an_offer_without_interactions_last():
    model = ALSRecommender(factors=4, iterations=10, num_threads=1).fit(_with_cold_item())
    ids, scores = model.recommend("M01", N=9, filter_already_liked_items=False)
    assert scores[list(ids).index("i8")] == pytest.approx(0.0, abs=1e-6)


def test_hybrid_with_zero_lightfm_weight_ranks_like_als():
    data, _ = dataset()
    als = ALSRecommender(factors=4, iterations=10, num_threads=1, random_state=7).fit(data)
    hyb = HybridRecommender(
        als={"factors": 4, "iterations": 10, "num_threads": 1}, lightfm={"no_components": 4, "epochs": 5},
        lightfm_weight=0.0, random_state=7,
    ).fit(data)  # fmt: skip
    users = [f"M{i:02d}" for i in range(20)]
    assert (als.recommend(users, N=4)[0] == hyb.recommend(users, N=4)[0]).all()
    with pytest.raises(ValueError, match="both 0"):
        HybridRecommender(als_weight=0.0, lightfm_weight=0.0).fit(data)


def test_registry_knows_every_kind_and_rejects_others():
    assert set(MODEL_KINDS) == {"popularity", "als", "bpr", "lightfm", "hybrid", "ranker"}
    for kind in MODEL_KINDS:
        assert create_model(kind).kind == kind
    with pytest.raises(ValueError, match="unknown model kind"):
        create_model("svd")


def test_content_models_need_features():
    data, _ = dataset()
    bare = RecDataset(data.user_items, data.member_ids, data.item_ids)
    with pytest.raises(ValueError, match="member_features"):
        LightFMRecommender().fit(bare)


def test_dataset_validation_names_the_problem():
    ids = IdMap(np.asarray(["a"], dtype=object))
    with pytest.raises(ValueError, match="no interactions"):
        RecDataset(sp.csr_matrix((1, 1)), ids, ids)
    with pytest.raises(ValueError, match="negative"):
        RecDataset(sp.csr_matrix(np.asarray([[-1.0]])), ids, ids)
    with pytest.raises(ValueError, match="id maps"):
        RecDataset(sp.csr_matrix(np.ones((2, 1))), ids, ids)
