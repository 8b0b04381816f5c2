"""The model kinds and their strict configurations, by name (one place; classes are imported lazily)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from recsys.models.base import ModelConfig, Recommender

# kind -> (module, class)
_KINDS: dict[str, tuple[str, str]] = {
    "popularity": ("recsys.models.popularity", "PopularityRecommender"),
    "als": ("recsys.models.als", "ALSRecommender"),
    "bpr": ("recsys.models.bpr", "BPRRecommender"),
    "lightfm": ("recsys.models.lightfm_model", "LightFMRecommender"),
    "hybrid": ("recsys.models.hybrid", "HybridRecommender"),
    "ranker": ("recsys.models.ranker", "RankerRecommender"),
}
MODEL_KINDS: tuple[str, ...] = tuple(_KINDS)


def model_class(kind: str) -> type[Recommender]:
    """The class of a model kind; an unknown kind is a clear error listing the known ones."""
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    module, name = _KINDS[kind]
    return getattr(importlib.import_module(module), name)


def config_class(kind: str) -> type[ModelConfig]:
    """The strict pydantic configuration class of a model kind."""
    return model_class(kind).Config


def create_model(kind: str, config: dict[str, Any] | None = None) -> Recommender:
    """A new, unfitted model of ``kind`` with a validated configuration (unknown keys raise)."""
    return model_class(kind)(config or {})


def load_model(path: Path | str, expected: type[Recommender] = Recommender) -> Recommender:
    """Load a model saved by :meth:`Recommender.save`, of whatever kind it was saved as; ``expected`` narrows
    the kinds accepted (a different one is a ``TypeError``)."""
    path = Path(path)
    meta = Recommender.saved_meta(path)
    klass = model_class(meta["kind"])
    if not issubclass(klass, expected):
        raise TypeError(f"{path} holds a {meta['kind']} model, not a {expected.kind}")
    return klass.restore(path, meta)
