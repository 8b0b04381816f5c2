"""The request log over SQLite and the real PostgreSQL (in a schema of the test's own, dropped after)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys.requestlog import SqlRequestLog
from tests.conftest import PG_URL, drop_schema
from tests.conftest import pg_schema_or_fail as _pg_schema_or_fail


def pg_schema_or_fail(prefix: str = "test_reqlog") -> tuple[sa.Engine, str]:
    return _pg_schema_or_fail(prefix)


@pytest.fixture(params=["sqlite", "postgresql"])
def request_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlRequestLog]:
    if request.param == "sqlite":
        log = SqlRequestLog(f"sqlite:///{tmp_path}/sub/requests.db")
        yield log
        log.close()
        return
    engine, schema = pg_schema_or_fail()
    log = SqlRequestLog(PG_URL, schema=schema)
    try:
        yield log
    finally:
        log.close()
        drop_schema(engine, schema)
