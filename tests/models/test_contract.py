"""Every model under the one contract suite (:mod:`tests.models.contract`): each class only says how to
build it."""

from __future__ import annotations

from contract import RecommenderContract

from recsys.models.als import ALSRecommender
from recsys.models.bpr import BPRRecommender
from recsys.models.hybrid import HybridRecommender
from recsys.models.lightfm_model import LightFMRecommender
from recsys.models.popularity import PopularityRecommender
from recsys.models.ranker import RankerRecommender


class TestPopularity(RecommenderContract):
    def make(self):
        return PopularityRecommender()


class TestALS(RecommenderContract):
    def make(self):
        return ALSRecommender(factors=4, iterations=10, regularization=0.01, num_threads=1, random_state=7)


class TestBPR(RecommenderContract):
    def make(self):
        return BPRRecommender(factors=4, iterations=200, learning_rate=0.05, random_state=7)


class TestLightFM(RecommenderContract):
    def make(self):
        return LightFMRecommender(no_components=4, epochs=30, random_state=7)


class TestHybrid(RecommenderContract):
    def make(self):
        return HybridRecommender(
            als={"factors": 4, "iterations": 10, "num_threads": 1},
            lightfm={"no_components": 4, "epochs": 30},
            random_state=7,
        )


class TestRanker(RecommenderContract):
    """Without a request context the ranker ranks by its base model's vectors (ALS here); its contextual
    scoring has its own tests (tests/ranker)."""

    def make(self):
        return RankerRecommender(
            base_model={"factors": 4, "iterations": 10, "regularization": 0.01, "num_threads": 1},
            random_state=7,
        )
