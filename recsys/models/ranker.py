"""The contextual acceptance ranker behind the one recommender interface.

A ``ranker`` model is two things:

- a **base** collaborative model (ALS by default, any non-content kind), fitted by :meth:`fit` like every
  other model. Its vectors are this model's vectors: retrieval (the faiss index), the members' embeddings in
  the online store, the cold-start policy and the context-free
  :meth:`~recsys.models.base.Recommender.recommend`
  all use them, so everything written once in :mod:`recsys.models.base` holds for the ranker too;
- a **context ranker** (:class:`~recsys.ranker.model.ContextRanker`: LightGBM over member, offer, trip,
  placement, exposure and CF-score features), fitted on logged impressions by
  :func:`recsys.ranker.training.train_ranker_bundle` (it needs the event log, which a bare
  :class:`~recsys.models.base.RecDataset` does not have). The bundle's per-request scoring asks it for
  P(purchase) of each candidate in the request's context (:meth:`recsys.models.bundle.MemberScoring.score`).

Saved with the base vectors (``state.npz``, ``model.json``) plus ``ranker.lgb.txt`` and ``ranker.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from recsys.models.base import LearnedModelConfig, RecDataset, Recommender, Vectors
from recsys.models.registry import config_class, model_class
from recsys.ranker.model import ContextRanker, RankerConfig


class ContextualRankerConfig(LearnedModelConfig):
    """The base model's kind and parameters, and how the context ranker is trained."""

    base: Literal["als", "bpr"] = "als"
    base_model: dict[str, Any] = Field(default_factory=dict, description="the base kind's own parameters")
    ranker: RankerConfig = RankerConfig()

    def flat(self, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.model_dump(mode="json").items():
            if isinstance(value, dict):
                out.update({f"{prefix}{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{prefix}{key}"] = value
        return out


class RankerRecommender(Recommender):
    """Base CF vectors + a contextual acceptance ranker (see the module docstring)."""

    kind = "ranker"
    Config = ContextualRankerConfig
    config: ContextualRankerConfig

    def _reset(self) -> None:
        super()._reset()
        self.context_: ContextRanker | None = None

    def base_config(self) -> dict[str, Any]:
        """The base model's configuration (its own parameters, this model's seed and prior settings)."""
        return {
            **self.config.base_model,
            "random_state": self.config.random_state,
            "prior_weight": self.config.prior_weight,
            "popularity_shrinkage": self.config.popularity_shrinkage,
        }

    def _fit(self, data: RecDataset) -> Vectors:
        base_cfg = config_class(self.config.base).model_validate(self.base_config())
        return model_class(self.config.base)(base_cfg)._fit(data)

    def _save_extra(self, path: Path) -> None:
        if self.context_ is not None:
            self.context_.save(path)

    def _load_extra(self, path: Path) -> None:
        self.context_ = ContextRanker.load(path) if ContextRanker.exists(path) else None
