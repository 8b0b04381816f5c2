"""Exact Plackett-Luce inclusion probabilities against brute-force enumeration of every ordered draw."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys.requestlog.propensity import plackett_luce_inclusion


def _enumerate(weights: np.ndarray, k: int) -> np.ndarray:
    """Sum of the probabilities of every ordered draw of k distinct candidates that contains each one."""
    cand = [i for i, w in enumerate(weights) if w > 0]
    out = np.zeros(len(weights))
    depth = min(k, len(cand))
    for seq in itertools.permutations(cand, depth):
        p, left = 1.0, float(sum(weights[cand]))
        for i in seq:
            p *= weights[i] / left
            left -= weights[i]
        for i in seq:
            out[i] += p
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_matches_enumeration_on_random_rows(k: int) -> None:
    rng = np.random.default_rng(7)
    rows = []
    for n in (1, 2, 3, 4, 6):
        w = rng.uniform(0.05, 3.0, size=7)
        w[n:] = 0.0  # padding: not candidates
        rows.append(rng.permutation(w))
    weights = np.array(rows)
    got = plackett_luce_inclusion(weights, k)
    want = np.array([_enumerate(r, k) for r in weights])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), np.minimum((weights > 0).sum(axis=1), k))
    assert (got[weights == 0] == 0).all()


def test_per_row_slot_counts_and_skewed_weights() -> None:
    weights = np.array([[100.0, 1.0, 0.01, 0.5], [1.0, 1.0, 1.0, 1.0], [0.2, 5.0, 0.0, 0.1]])
    ks = np.array([3, 2, 1])
    got = plackett_luce_inclusion(weights, ks)
    want = np.array([_enumerate(r, int(k)) for r, k in zip(weights, ks, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got[1], 0.5)  # uniform: k / n


def test_agrees_with_gumbel_top_k_sampling() -> None:
    # the generator draws slates as the top k of log w + Gumbel noise
    rng = np.random.default_rng(3)
    w = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    g = np.log(w)[None, :] + rng.gumbel(size=(200_000, len(w)))
    top = np.argsort(-g, axis=1)[:, :3]
    freq = np.bincount(top.ravel(), minlength=len(w)) / len(top)
    np.testing.assert_allclose(plackett_luce_inclusion(w[None, :], 3)[0], freq, atol=0.005)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"k must be in 1\.\.3"):
        plackett_luce_inclusion(np.ones((1, 4)), 4)
    with pytest.raises(ValueError, match=">= 0"):
        plackett_luce_inclusion(np.array([[1.0, -1.0]]), 1)
    with pytest.raises(ValueError, match="2-d"):
        plackett_luce_inclusion(np.ones(4), 1)
