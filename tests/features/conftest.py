"""Fixtures of the feature tests: the real customer-value data and a small generated world."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA_SELECTED_CANDIDATES = (
    REPO / "data" / "reference" / "air_data_lrfmc" / "data_selected.csv",
    REPO.parent / "shared" / "data" / "air_data_lrfmc" / "data_selected.csv",
)


def find_data_selected() -> Path:
    """The project's ``data_selected.csv``, falling back to ``../shared``; fails the test if neither."""
    for path in DATA_SELECTED_CANDIDATES:
        if path.is_file():
            return path
    pytest.fail(f"data_selected.csv not found (looked in {[str(p) for p in DATA_SELECTED_CANDIDATES]})")


@pytest.fixture(scope="session")
def data_selected() -> Path:
    return find_data_selected()


@pytest.fixture(scope="session")
def features_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's ``small_world`` when tests/conftest.py provides it, else a 1,500-member world."""
    try:
        return Path(request.getfixturevalue("small_world"))
    except pytest.FixtureLookupError:
        from recsys.data.generator import generate_world

        out = tmp_path_factory.mktemp("features-world") / "world"
        return generate_world(out, 1_500, seed=11, progress=False)
