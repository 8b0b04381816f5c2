"""The oracle: the ranking a model would produce if it knew each member's true acceptance probabilities.

The generator keeps the probabilities it sampled behaviour from in the dataset's hidden ``truth/``; only this
module reads them (through :func:`recsys.data.truth.true_acceptance`). Ranking offers by their true
probability is the best any model can hope to do *in expectation*, so it is the upper bound every model's
metrics are compared with. (A lucky model can beat it on a finite sample; a model far below it has room to
improve.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.evaluation.metrics import RANK, EvaluationError
from recsys.schema import Col


def has_oracle(dataset_dir: Path | str) -> bool:
    """Whether the dataset carries the generator's hidden truth (imported datasets do not)."""
    from recsys.data.truth import has_truth

    return bool(has_truth(dataset_dir))


class OracleRecommender:
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
        self.dataset_dir = Path(dataset_dir)
        self.offer_ids = np.asarray(offer_ids, dtype=object)
        if len(self.offer_ids) == 0:
            raise EvaluationError("the oracle needs at least one offer")
        self.candidates = candidates

    def recommend(self, member_ids: Sequence[str] | np.ndarray, k: int = 10) -> pd.DataFrame:
        """member_id, offer_id, score (true acceptance probability), rank — like ``ModelBundle.recommend``."""
        from recsys.data.truth import true_acceptance  # the only reader of the hidden truth

        members = np.asarray(member_ids, dtype=object)
        probs = np.asarray(
            true_acceptance(self.dataset_dir, list(members), list(self.offer_ids)), dtype=np.float64
        )
        if probs.shape != (len(members), len(self.offer_ids)):
            raise EvaluationError(
                f"true_acceptance returned shape {probs.shape}, "
                f"expected {(len(members), len(self.offer_ids))}"
            )
        if np.isnan(probs).any():
            raise EvaluationError("the hidden truth has NaN acceptance probabilities")
        keys = probs
        if self.candidates is not None:
            cand = self.candidates[self.candidates[Col.MEMBER_ID].isin(members)]
            rows = pd.Index(members).get_indexer(cand[Col.MEMBER_ID])
            cols = pd.Index(self.offer_ids).get_indexer(cand[Col.OFFER_ID])
            ok = (rows >= 0) & (cols >= 0)
            keys = probs.copy()
            keys[rows[ok], cols[ok]] += 2.0  # probabilities are <= 1: shown offers rank first
        k = min(k, len(self.offer_ids))
        if k < keys.shape[1]:
            top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(keys.shape[1]), (len(members), 1))
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(probs, top, axis=1)
        return pd.DataFrame(
            {
                Col.MEMBER_ID: np.repeat(members, k),
                Col.OFFER_ID: self.offer_ids[top.ravel()],
                "score": top_scores.ravel(),
                RANK: np.tile(np.arange(1, k + 1), len(members)),
            }
        )
