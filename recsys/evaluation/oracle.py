"""The oracle: the ranking a model would produce if it knew each member's true acceptance probabilities.

The generator keeps the probabilities it sampled behaviour from in the dataset's hidden ``truth/``; only this
module reads them (through :func:`recsys.data.truth.true_acceptance`). Ranking offers by their true
probability is the best any model can hope to do *in expectation*, so it is the upper bound every model's
metrics are compared with. (A lucky model can beat it on a finite sample; a model far below it has room to
improve.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.evaluation.metrics import RANK, EvaluationError
from recsys.schema import Col


def has_oracle(dataset_dir: Path | str) -> bool:
    """Whether the dataset carries the generator's hidden truth (imported datasets do not)."""
    from recsys.data.truth import has_truth

    return bool(has_truth(dataset_dir))


class _TruthRanker:
    """What every oracle holds: the dataset whose hidden truth it reads and the offers it ranks."""

    def __init__(self, dataset_dir: Path | str, offer_ids: Sequence[str] | np.ndarray | pd.Series) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.offer_ids = np.asarray(offer_ids, dtype=object)
        if len(self.offer_ids) == 0:
            raise EvaluationError("the oracle needs at least one offer")


class OracleRecommender(_TruthRanker):
    """Recommends each member's ``k`` offers with the highest true acceptance probability.

    The truth gives the probability that a member accepts an offer *when shown it*; whether it is shown
    depends on eligibility (trip, cabin, timing) that the truth does not model. With ``candidates``
    (member_id, offer_id pairs: the offers each member was actually shown in the test period) the oracle
    ranks those first — the best ranking knowing both the true preferences and the future eligibility —
    and fills any remaining slots with the other offers by true probability. Without, it ranks the whole
    catalogue.
    """

    def __init__(
        self,
        dataset_dir: Path | str,
        offer_ids: Sequence[str] | np.ndarray | pd.Series,
        candidates: pd.DataFrame | None = None,
    ) -> None:
        super().__init__(dataset_dir, offer_ids)
        self.candidates = candidates

    def recommend(self, member_ids: Sequence[str] | np.ndarray, k: int = 10) -> pd.DataFrame:
        """member_id, offer_id, score (true acceptance probability), rank — like ``ModelBundle.recommend``."""
        members = np.asarray(member_ids, dtype=object)
        probs = _true_probabilities(self.dataset_dir, members, self.offer_ids)
        keys = probs
        if self.candidates is not None:
            cand = self.candidates[self.candidates[Col.MEMBER_ID].isin(members)]
            rows = pd.Index(members).get_indexer(cand[Col.MEMBER_ID])
            cols = pd.Index(self.offer_ids).get_indexer(cand[Col.OFFER_ID])
            ok = (rows >= 0) & (cols >= 0)
            keys = probs.copy()
            keys[rows[ok], cols[ok]] += 2.0  # probabilities are <= 1: shown offers rank first
        return _top_k(members, self.offer_ids, keys, probs, k)


def _true_probabilities(dataset_dir: Path, members: np.ndarray, offer_ids: np.ndarray) -> np.ndarray:
    from recsys.data.truth import true_acceptance  # the only reader of the hidden truth

    probs = np.asarray(true_acceptance(dataset_dir, list(members), list(offer_ids)), dtype=np.float64)
    if probs.shape != (len(members), len(offer_ids)):
        raise EvaluationError(
            f"true_acceptance returned shape {probs.shape}, expected {(len(members), len(offer_ids))}"
        )
    if np.isnan(probs).any():
        raise EvaluationError("the hidden truth has NaN acceptance probabilities")
    return probs


def _top_k(
    members: np.ndarray, offer_ids: np.ndarray, keys: np.ndarray, scores: np.ndarray, k: int
) -> pd.DataFrame:
    """member_id, offer_id, score, rank of each member's ``k`` offers with the highest ``keys``."""
    k = min(k, len(offer_ids))
    if k < keys.shape[1]:
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(keys.shape[1]), (len(members), 1))
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(scores, top, axis=1)
    return pd.DataFrame(
        {
            Col.MEMBER_ID: np.repeat(members, k),
            Col.OFFER_ID: offer_ids[top.ravel()],
            "score": top_scores.ravel(),
            RANK: np.tile(np.arange(1, k + 1), len(members)),
        }
    )


PriorFn = Callable[[np.ndarray], np.ndarray]


class PreferenceOracle(_TruthRanker):
    """What true preferences add on top of the popularity baseline's prior: a model that knows every member's
    true preferences but, like every model, not which offers the future will expose them to. It bounds
    re-rankings of *that* prior only: a model whose prior groups members better can score higher.

    Each member's offers are ranked by ``log(prior) + log(p / p̄)``: ``prior`` is the popularity baseline's
    score of the offer for the member (their group's recency-weighted popularity), ``p`` the member's true
    acceptance probability and ``p̄`` the offer's mean true probability over the members ranked together
    (one evaluation batch) — the prior re-weighted by how much more (or less) this member likes the offer
    than members in general. Offers the prior scores 0 keep a tiny floor so preferences still order them.

    The test period's purchases follow exposure (trips, eligibility, the legacy policy) as much as
    preference; a model ranking by preference alone (``oracle_all_offers``) can lose to popularity. This
    reference tells how much of the gap between popularity and the exposure-aware ``oracle`` preferences
    alone could close on top of the baseline's prior.
    """

    def __init__(
        self, dataset_dir: Path | str, offer_ids: Sequence[str] | np.ndarray, prior: PriorFn
    ) -> None:
        super().__init__(dataset_dir, offer_ids)
        self.prior = prior

    def recommend(self, member_ids: Sequence[str] | np.ndarray, k: int = 10) -> pd.DataFrame:
        members = np.asarray(member_ids, dtype=object)
        probs = _true_probabilities(self.dataset_dir, members, self.offer_ids)
        prior = np.asarray(self.prior(members), dtype=np.float64)
        if prior.shape != probs.shape:
            raise EvaluationError(f"the prior has shape {prior.shape}, expected {probs.shape}")
        floor = max(float(np.nanmax(prior, initial=0.0)), 1.0) * 1e-6
        lift = probs / np.maximum(probs.mean(axis=0, keepdims=True), 1e-12)
        keys = np.log(np.maximum(np.nan_to_num(prior, nan=0.0), floor)) + np.log(np.maximum(lift, 1e-12))
        return _top_k(members, self.offer_ids, keys, probs, k)
