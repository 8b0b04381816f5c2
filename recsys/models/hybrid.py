"""Hybrid: a weighted blend of ALS (collaborative) and LightFM (content-aware) scores.

Each part's scores are divided by their standard deviation over the training members' known items (so the
weights mean what they say whatever each model's scale) and summed with the configured weights. Because the
blend is linear, it is again an inner product — of the concatenated, weighted vectors — so top-k, faiss
retrieval and per-request scoring are the base's. Cold members have a zero ALS part and LightFM's content
vector; cold offers get LightFM's content score.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recsys.models.als import ALSConfig, ALSRecommender
from recsys.models.base import LearnedModelConfig, RecDataset, Recommender, Vectors, score_scale
from recsys.models.lightfm_model import LightFMConfig, LightFMRecommender


class HybridConfig(LearnedModelConfig):
    """Weights of the parts and each part's own configuration (its ``random_state`` is the hybrid's)."""

    als_weight: float = Field(default=0.5, ge=0)
    lightfm_weight: float = Field(default=0.5, ge=0)
    als: ALSConfig = ALSConfig()
    lightfm: LightFMConfig = LightFMConfig()
    scale_sample: int = Field(
        default=200_000, ge=100, description="interactions sampled to measure each part's scale"
    )

    def flat(self, prefix: str = "") -> dict[str, object]:
        out = {k: v for k, v in super().flat(prefix).items() if not isinstance(v, dict)}
        out.update(self.als.flat(f"{prefix}als."))
        out.update(self.lightfm.flat(f"{prefix}lightfm."))
        return out


class HybridRecommender(Recommender):
    """ALS + LightFM, blended on normalised scores."""

    kind = "hybrid"
    Config = HybridConfig
    config: HybridConfig
    uses_features = True

    def _fit(self, data: RecDataset) -> Vectors:
        c = self.config
        if c.als_weight == 0 and c.lightfm_weight == 0:
            raise ValueError("hybrid: als_weight and lightfm_weight are both 0")
        als = ALSRecommender(c.als.model_copy(update={"random_state": c.random_state}))._fit(data)
        lfm = LightFMRecommender(c.lightfm.model_copy(update={"random_state": c.random_state}))._fit(data)
        a = c.als_weight / score_scale(als.user, als.item, data, c.random_state, c.scale_sample)
        b = c.lightfm_weight / score_scale(lfm.user, lfm.item, data, c.random_state, c.scale_sample)
        assert lfm.feature is not None and lfm.feature_offset is not None
        d_als = als.user.shape[1]
        user = np.hstack([a * als.user, b * lfm.user]).astype(np.float32)
        item = np.hstack([als.item, lfm.item]).astype(np.float32)
        feature = np.hstack([np.zeros((len(lfm.feature), d_als), np.float32), b * lfm.feature])
        offset = np.concatenate([np.zeros(d_als, np.float32), b * lfm.feature_offset])
        return Vectors(
            user=user,
            item=item,
            group=np.zeros((0, user.shape[1]), dtype=np.float32),
            feature=feature.astype(np.float32),
            feature_offset=offset.astype(np.float32),
            extra={**lfm.extra, "scale": np.asarray([a, b], dtype=np.float64)},
        )
