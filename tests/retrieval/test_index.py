"""The faiss item index: exact below the size threshold, approximate above, recall measured against exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from recsys.retrieval import IndexConfig, ItemIndex, recall_at_k


def _random(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_exact_index_returns_the_brute_force_top_k():
    items = _random(300, 16, 0)
    queries = _random(20, 16, 1)
    ids = np.asarray([f"item{i}" for i in range(300)], dtype=object)
    index = ItemIndex.build(ids, items, IndexConfig())
    assert index.kind == "flat"
    got_ids, got_scores = index.search(queries, 5)
    truth = np.argsort(-(queries @ items.T), axis=1)[:, :5]
    assert (got_ids == ids[truth]).all()
    np.testing.assert_allclose(got_scores, np.take_along_axis(queries @ items.T, truth, axis=1), rtol=1e-5)
    assert recall_at_k(index, queries, 10) == 1.0


@pytest.mark.parametrize("approximate", ["hnsw", "ivf"])
def test_approximate_index_recall_is_reported_and_high_with_generous_parameters(approximate: str):
    items = _random(1500, 16, 2)
    queries = _random(100, 16, 3)
    ids = np.arange(1500).astype(str).astype(object)
    generous = IndexConfig(exact_max_items=500, approximate=approximate, hnsw_ef_search=256, ivf_nprobe=64)
    index = ItemIndex.build(ids, items, generous)
    assert index.kind == approximate
    recall = recall_at_k(index, queries, 10)
    assert 0.9 <= recall <= 1.0
    stingy = IndexConfig(
        exact_max_items=500, approximate=approximate, hnsw_ef_search=1, hnsw_m=4, ivf_nprobe=1
    )
    low = recall_at_k(ItemIndex.build(ids, items, stingy), queries, 10)
    assert 0.0 <= low < recall


def test_save_load_round_trip(tmp_path: Path):
    items = _random(50, 8, 4)
    ids = np.asarray([f"offer:{i}" for i in range(50)], dtype=object)
    index = ItemIndex.build(ids, items)
    index.save(tmp_path, "offers")
    loaded = ItemIndex.load(tmp_path, "offers")
    q = _random(3, 8, 5)
    assert (loaded.search(q, 7)[0] == index.search(q, 7)[0]).all()


def test_k_beyond_size_and_bad_input():
    index = ItemIndex.build(np.asarray(["a", "b"], dtype=object), _random(2, 4, 6))
    ids, _ = index.search(_random(1, 4, 7), 10)
    assert ids.shape == (1, 2)
    with pytest.raises(ValueError, match="dimension"):
        index.search(_random(1, 5, 7), 2)
    with pytest.raises(ValueError, match="one vector per id"):
        ItemIndex.build(np.asarray(["a"], dtype=object), _random(2, 4, 6))
    with pytest.raises(ValueError, match="NaN"):
        ItemIndex.build(np.asarray(["a"], dtype=object), np.full((1, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValidationError):
        IndexConfig(nprobe=3)
