"""Fixtures of the feature tests: a small generated world (``data_selected`` comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def features_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's ``small_world`` when tests/conftest.py provides it, else a 1,500-member world."""
    try:
        return Path(request.getfixturevalue("small_world"))
    except pytest.FixtureLookupError:
        from recsys.data.generator import generate_world

        out = tmp_path_factory.mktemp("features-world") / "world"
        return generate_world(out, 1_500, seed=11, progress=False)
