"""Fixtures of the pipeline tests."""

from __future__ import annotations

from datetime import datetime

import pytest

from .fakes import NOW


@pytest.fixture
def now() -> datetime:
    return NOW
