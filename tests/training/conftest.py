"""Fixtures of the training tests: a small generated world, fast model configurations, a tmp MLflow store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Few factors and iterations: the tests check the plumbing, not the models' quality.
FAST_CONFIGS: dict[str, dict[str, Any]] = {
    "popularity": {"recall_queries": 50},
    "als": {"model": {"factors": 8, "iterations": 3}, "recall_queries": 50},
    "bpr": {"model": {"factors": 8, "iterations": 10}, "recall_queries": 50},
    "lightfm": {"model": {"no_components": 8, "epochs": 3}, "recall_queries": 50},
    "hybrid": {
        "model": {"als": {"factors": 8, "iterations": 3}, "lightfm": {"no_components": 8, "epochs": 3}},
        "recall_queries": 50,
    },
}


@pytest.fixture(scope="session")
def train_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's shared ``small_world`` when the root conftest provides it, else a 1,500-member world."""
    try:
        return Path(request.getfixturevalue("small_world"))
    except pytest.FixtureLookupError:
        from recsys.data.generator import generate_world

        return generate_world(tmp_path_factory.mktemp("train-world") / "world", 1500, 7, progress=False)


@pytest.fixture(scope="session")
def fast_configs() -> dict[str, dict[str, Any]]:
    return FAST_CONFIGS
