"""implicit's Bayesian personalised ranking (CPU), wrapped."""

from __future__ import annotations

from implicit.cpu.bpr import BayesianPersonalizedRanking
from pydantic import Field

from recsys.models.als import factor_vectors
from recsys.models.base import LearnedModelConfig, RecDataset, Recommender, Vectors


class BPRConfig(LearnedModelConfig):
    """Parameters of :class:`implicit.cpu.bpr.BayesianPersonalizedRanking` (any positive weight is a
    positive)."""

    factors: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    regularization: float = Field(default=0.01, ge=0)
    iterations: int = Field(default=30, ge=1)
    num_threads: int = Field(default=1, ge=0, description="SGD is lock-free: only 1 thread is reproducible")


class BPRRecommender(Recommender):
    """Pairwise ranking factorisation (Rendle et al. 2009); item factors carry the item bias as a last
    column."""

    kind = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def _fit(self, data: RecDataset) -> Vectors:
        c = self.config
        est = BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            num_threads=c.num_threads,
            random_state=c.random_state,
        )
        return factor_vectors(est, data)
