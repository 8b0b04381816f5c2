"""Shared fixtures.

``small_world``: a generated loyalty world of 2,000 members (seed 20260630), built once per test session into
a temporary directory. Read-only for tests: copy it if a test must modify a dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_WORLD_MEMBERS = 2_000
SMALL_WORLD_SEED = 20260630


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a ~2,000-member generated world (fixed seed); treat it as read-only."""
    from recsys.data.generator import generate_world

    out = tmp_path_factory.mktemp("small_world") / "world"
    return generate_world(out, SMALL_WORLD_MEMBERS, SMALL_WORLD_SEED, progress=False)
