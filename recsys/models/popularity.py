"""Popularity: global, or per member group (segment or tier) shrunk toward the global popularity."""

from __future__ import annotations

import numpy as np

from recsys.models.base import ModelConfig, RecDataset, Recommender, Vectors


class PopularityConfig(ModelConfig):
    """``by_group``: rank by the member's group popularity (segment/tier given in the dataset) or globally."""

    by_group: bool = True


class PopularityRecommender(Recommender):
    """Recommends what the member's group (or everyone) interacted with most, recency-weighted.

    It learns nothing beyond the popularity block the base appends to every model
    (:func:`recsys.models.base.popularity_block`): every member — known or cold — is scored by the one-hot of
    their group on that block.
    """

    kind = "popularity"
    Config = PopularityConfig
    config: PopularityConfig
    known_members_use_popularity = True

    def _use_groups(self) -> bool:
        return self.config.by_group

    def _fit(self, data: RecDataset) -> Vectors:
        n_users, n_items = data.user_items.shape
        empty = np.zeros((0, 0), dtype=np.float32)
        return Vectors(
            user=np.zeros((n_users, 0), dtype=np.float32),
            item=np.zeros((n_items, 0), dtype=np.float32),
            group=empty,
        )
