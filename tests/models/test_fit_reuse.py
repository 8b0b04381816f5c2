"""A training run reuses what it already computed: the same factorisation fitted twice (the hybrid's ALS and
LightFM parts, the ranker's base ALS) and the same interaction matrix built for every kind. Reuse must never
change a result, nor hand back something stale when the data or the parameters changed."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from contract import dataset
from taste_world import END, write_taste_world

from recsys.interactions import InteractionConfig, build_interactions
from recsys.models import base
from recsys.models.als import ALSRecommender
from recsys.models.base import RecDataset
from recsys.models.bundle import _interactions
from recsys.models.hybrid import HybridRecommender
from recsys.models.lightfm_model import LightFMRecommender

ALS = {"factors": 4, "iterations": 5, "num_threads": 1, "random_state": 7}
LFM = {"no_components": 4, "epochs": 3, "random_state": 7}


def _fresh_als(data: RecDataset, **cfg: object) -> base.Vectors:
    """A fit with nothing remembered: the reference every reuse is checked against."""
    base._FIT_MEMO.clear()
    return ALSRecommender(**{**ALS, **cfg})._fit(data)


def test_a_repeated_fit_returns_the_fresh_fits_vectors_as_its_own_copy() -> None:
    data, _ = dataset()
    fresh = _fresh_als(data)
    # prior_weight is applied after the fit: the same factorisation
    again = ALSRecommender(**ALS, prior_weight=2.0)._fit(data)
    np.testing.assert_array_equal(again.user, fresh.user)
    np.testing.assert_array_equal(again.item, fresh.item)
    again.user[:] = 0.0  # a caller changing its vectors does not change what the next fit gets
    np.testing.assert_array_equal(ALSRecommender(**ALS)._fit(data).user, fresh.user)


def test_other_data_or_other_parameters_are_fitted_anew() -> None:
    data, _ = dataset()
    before = _fresh_als(data)
    m = data.user_items.tolil()
    m[0, 0] = m[0, 0] + 3.0  # one cell more
    changed = RecDataset(
        sp.csr_matrix(m), data.member_ids, data.item_ids, data.member_groups, data.group_names
    )
    got = ALSRecommender(**ALS)._fit(changed)
    expected = _fresh_als(changed)
    np.testing.assert_array_equal(got.user, expected.user)
    assert not np.array_equal(got.user, before.user)
    _fresh_als(data)
    assert ALSRecommender(**{**ALS, "factors": 5})._fit(data).user.shape[1] == 5


def test_the_hybrid_after_its_parts_equals_the_hybrid_fitted_alone() -> None:
    data, _ = dataset()
    base._FIT_MEMO.clear()
    alone = HybridRecommender(als=ALS, lightfm=LFM, random_state=7).fit(data)
    base._FIT_MEMO.clear()
    ALSRecommender(**ALS).fit(data)
    LightFMRecommender(**LFM).fit(data)
    after = HybridRecommender(als=ALS, lightfm=LFM, random_state=7).fit(data)
    np.testing.assert_array_equal(after.vectors_.user, alone.vectors_.user)
    np.testing.assert_array_equal(after.vectors_.item, alone.vectors_.item)
    users = [f"M{i:02d}" for i in range(10)]
    assert (after.recommend(users, N=4)[0] == alone.recommend(users, N=4)[0]).all()


def test_the_interaction_matrix_is_built_once_per_dataset_configuration_and_cutoff(tmp_path: Path) -> None:
    world = write_taste_world(tmp_path / "world", seed=0)
    cfg = InteractionConfig()
    whole = _interactions(world, cfg, None, None, False)
    assert _interactions(world, cfg, None, None, False) is whole
    cut = END - timedelta(days=60)
    earlier = _interactions(world, cfg, cut, None, False)
    assert earlier is not whole
    assert (earlier.matrix != build_interactions(world, cfg, cut).matrix).nnz == 0
    assert earlier.matrix.sum() < whole.matrix.sum()
    other_cfg = cfg.model_copy(update={"min_weight": 1.5})
    assert _interactions(world, other_cfg, cut, None, False) is not earlier


def test_a_dataset_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    world = write_taste_world(tmp_path / "world", seed=0)
    first = _interactions(world, InteractionConfig(), None, None, False)
    shutil.rmtree(world)
    write_taste_world(world, seed=1)
    second = _interactions(world, InteractionConfig(), None, None, False)
    assert (second.matrix != build_interactions(world, InteractionConfig()).matrix).nnz == 0
    assert (second.matrix != first.matrix).nnz > 0


@pytest.fixture(autouse=True)
def _forget() -> None:
    base._FIT_MEMO.clear()
