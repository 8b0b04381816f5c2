"""Fixtures of the model tests: the small hand-made world of ``taste_world``."""

from __future__ import annotations

from pathlib import Path

import pytest
from taste_world import write_taste_world


@pytest.fixture(scope="session")
def taste_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_taste_world(tmp_path_factory.mktemp("taste") / "world")
