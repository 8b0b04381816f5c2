"""The contract every recommender honours — one suite, run for every model (like implicit's RecommenderBase
tests). A model's test class only says how to build the model (:meth:`RecommenderContract.make`).

The tiny dataset has two blocks: members M00–M09 interact with items i0–i3, members M10–M19 with items i4–i7;
each member has three of their block's four items, so the one item to recommend (already-liked filtered) is
the block's missing one. M20 is in the population without history; "NEW" is not known at all.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recsys.ids import IdMap
from recsys.models.base import FeatureMatrix, RecDataset, Recommender, UnsupportedOption
from recsys.models.registry import load_model

N_BLOCK = 10
ITEMS = np.asarray([f"i{j}" for j in range(8)], dtype=object)
MEMBERS = np.asarray([f"M{i:02d}" for i in range(2 * N_BLOCK + 1)], dtype=object)


def block_matrix(shift: int = 0) -> tuple[sp.csr_matrix, dict[str, str]]:
    """The two-block matrix; ``shift`` rotates which item each member misses. Returns it and, per member, the
    item they miss."""
    rows, cols, data = [], [], []
    missing = {}
    for i in range(2 * N_BLOCK):
        block = i // N_BLOCK
        items = [4 * block + j for j in range(4)]
        miss = items[(i + shift) % 4]
        missing[str(MEMBERS[i])] = str(ITEMS[miss])
        for j in items:
            if j != miss:
                rows.append(i)
                cols.append(j)
                data.append(1.0)
    m = sp.csr_matrix((data, (rows, cols)), shape=(len(MEMBERS), len(ITEMS)), dtype=np.float32)
    return m, missing


def member_features() -> FeatureMatrix:
    names = np.asarray(["tier=gold", "tier=basic", "home=PEK", "home=SHA"], dtype=object)
    rows, cols = [], []
    for i in range(len(MEMBERS)):
        block = 0 if i < N_BLOCK or i == 2 * N_BLOCK else 1  # M20 (no history) looks like block A
        rows += [i, i]
        cols += [0 + block, 2 + block]
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(MEMBERS), len(names)))
    return FeatureMatrix(m, names)


def item_features() -> FeatureMatrix:
    names = np.asarray(["family=ancillary", "family=upsell", "category=meal", "category=seat"], dtype=object)
    rows, cols = [], []
    for j in range(len(ITEMS)):
        block = j // 4
        rows += [j, j]
        cols += [0 + block, 2 + block]
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(ITEMS), len(names)))
    return FeatureMatrix(m, names)


def dataset(shift: int = 0) -> tuple[RecDataset, dict[str, str]]:
    m, missing = block_matrix(shift)
    groups = np.asarray([0] * N_BLOCK + [1] * N_BLOCK + [0], dtype=np.int64)
    data = RecDataset(
        user_items=m,
        member_ids=IdMap(MEMBERS),
        item_ids=IdMap(ITEMS),
        member_groups=groups,
        group_names=("gold", "basic"),
        member_features=member_features(),
        item_features=item_features(),
    )
    return data, missing


class RecommenderContract:
    """Mixin: subclasses set :meth:`make` (and may relax ``exact_answers``)."""

    exact_answers: ClassVar[bool] = True  # the model recovers each member's missing item as top-1

    def make(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self) -> tuple[Recommender, dict[str, str]]:
        data, missing = dataset()
        return self.make().fit(data), missing

    # -- shapes and batching ---------------------------------------------------------------------------------
    def test_shapes_single_and_batch(self, fitted):
        model, _ = fitted
        ids, scores = model.recommend("M00", N=3)
        assert ids.shape == (3,) and scores.shape == (3,)
        ids, scores = model.recommend(["M00", "M11", "M20", "NEW"], N=3)
        assert ids.shape == (4, 3) and scores.shape == (4, 3)
        assert scores.dtype == np.float32
        assert all(i in set(ITEMS) for i in ids.ravel())
        assert (np.diff(scores, axis=1) <= 0).all()  # best first

    def test_batch_equals_single(self, fitted):
        model, _ = fitted
        users = ["M03", "M15", "M20", "NEW", "M00"]
        batch_ids, batch_scores = model.recommend(users, N=5, batch_size=2)
        for row, user in enumerate(users):
            ids, scores = model.recommend(user, N=5)
            assert list(ids) == list(batch_ids[row])
            np.testing.assert_allclose(scores, batch_scores[row], rtol=1e-6)

    def test_n_larger_than_catalogue_is_capped(self, fitted):
        model, _ = fitted
        ids, _ = model.recommend("M00", N=100, filter_already_liked_items=False)
        assert len(ids) == len(ITEMS) and set(ids) == set(ITEMS)

    # -- known answers ---------------------------------------------------------------------------------------
    def test_recovers_each_members_missing_item(self, fitted):
        if not self.exact_answers:
            pytest.skip("this model is not expected to recover the planted answer exactly")
        model, missing = fitted
        users = sorted(missing)
        ids, _ = model.recommend(users, N=1)
        got = {u: ids[i, 0] for i, u in enumerate(users)}
        assert got == missing

    def test_block_items_rank_above_other_block(self, fitted):
        model, _ = fitted
        ids, _ = model.recommend(["M01", "M12"], N=4, filter_already_liked_items=False)
        assert set(ids[0]) == {"i0", "i1", "i2", "i3"}
        assert set(ids[1]) == {"i4", "i5", "i6", "i7"}

    # -- filters ---------------------------------------------------------------------------------------------
    def test_filter_already_liked(self, fitted):
        model, _ = fitted
        data, _ = dataset()
        ids, scores = model.recommend("M00", N=8)
        liked = set(ITEMS[data.user_items[0].indices])
        assert not liked & {i for i in ids if i is not None}
        assert sum(i is None for i in ids) == len(liked)  # filtered fill-ins are None / -inf
        assert np.isneginf(scores[[i is None for i in ids]]).all()
        ids_all, _ = model.recommend("M00", N=8, filter_already_liked_items=False)
        assert liked <= set(ids_all)

    def test_filter_with_given_user_items(self, fitted):
        model, _ = fitted
        given = sp.csr_matrix(([1.0], ([0], [4])), shape=(1, len(ITEMS)))
        ids, _ = model.recommend(["M12"], user_items=given, N=8)
        assert "i4" not in set(ids[0]) and "i5" in set(ids[0])

    def test_filter_items_and_candidate_items(self, fitted):
        model, _ = fitted
        ids, _ = model.recommend("M01", N=8, filter_items=["i0", "i5"], filter_already_liked_items=False)
        assert {"i0", "i5"}.isdisjoint(set(ids))
        ids, _ = model.recommend("M01", N=8, items=["i6", "i7", "i2"], filter_already_liked_items=False)
        assert set(ids) == {"i6", "i7", "i2"} and ids[0] == "i2"

    # -- cold start ------------------------------------------------------------------------------------------
    def test_cold_members_get_results(self, fitted):
        model, _ = fitted
        ids, scores = model.recommend(["M20", "NEW"], N=4)
        assert np.isfinite(scores).all()
        assert all(i is not None for i in ids.ravel())
        assert not model.is_known("M20") and not model.is_known("NEW") and model.is_known("M00")

    def test_cold_member_of_a_group_gets_that_groups_taste(self, fitted):
        model, _ = fitted
        # M20 is in group "gold" (block A) and has block-A features: either policy puts block A first.
        ids, _ = model.recommend("M20", N=4)
        assert set(ids) == {"i0", "i1", "i2", "i3"}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def test_refit_starts_clean(self):
        first, _ = dataset(shift=0)
        second, missing2 = dataset(shift=1)
        refit = self.make().fit(first).fit(second)
        fresh = self.make().fit(second)
        users = [*missing2, "M20", "NEW"]
        a_ids, a_scores = refit.recommend(users, N=4)
        b_ids, b_scores = fresh.recommend(users, N=4)
        assert (a_ids == b_ids).all()
        np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5)

    def test_deterministic_with_seed(self):
        data, _ = dataset()
        a = self.make().fit(data)
        b = self.make().fit(data)
        np.testing.assert_array_equal(a.vectors_.user, b.vectors_.user)
        np.testing.assert_array_equal(a.vectors_.item, b.vectors_.item)

    def test_save_load_round_trip(self, fitted, tmp_path):
        model, _ = fitted
        model.save(tmp_path / "m")
        loaded = load_model(tmp_path / "m")
        assert type(loaded) is type(model) and loaded.config == model.config
        users = [*MEMBERS.tolist(), "NEW"]
        a_ids, a_scores = model.recommend(users, N=5)
        b_ids, b_scores = loaded.recommend(users, N=5)
        assert (a_ids == b_ids).all()
        np.testing.assert_array_equal(a_scores, b_scores)

    # -- bad input -------------------------------------------------------------------------------------------
    def test_unsupported_options_raise(self, fitted):
        model, _ = fitted
        with pytest.raises(UnsupportedOption):
            model.recommend("M00", recalculate_user=True)
        with pytest.raises(ValidationError):
            type(model)({"no_such_parameter": 1})
        with pytest.raises(ValueError, match="N must be"):
            model.recommend("M00", N=0)
        with pytest.raises(KeyError):
            model.recommend("M00", filter_items=["not-an-item"])
        with pytest.raises(ValueError, match="user_items must be"):
            model.recommend(["M00", "M01"], user_items=sp.csr_matrix((1, len(ITEMS))))

    def test_unfitted_model_raises(self):
        from recsys.models.base import NotFittedError

        with pytest.raises(NotFittedError):
            self.make().recommend("M00")

    def test_params_are_flat_and_loggable(self, fitted):
        model, _ = fitted
        params = model.params()
        assert params["model.kind"] == model.kind
        assert all(isinstance(v, str | int | float | bool) or v is None for v in params.values())

    def test_similar_items(self, fitted):
        model, _ = fitted
        if model.kind == "popularity":
            with pytest.raises(UnsupportedOption):
                model.similar_items("i0")
            return
        ids, scores = model.similar_items("i0", N=3)
        assert len(ids) == 3 and "i0" not in set(ids)
        assert (np.diff(scores) <= 0).all()
        if self.exact_answers:
            assert set(ids) <= {"i1", "i2", "i3"}
