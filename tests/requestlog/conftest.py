"""The request log over SQLite and the real PostgreSQL (in a schema of the test's own, dropped after)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys.requestlog import SqlRequestLog

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_schema_or_fail(prefix: str = "test_reqlog") -> tuple[sa.Engine, str]:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # never skip: the PostgreSQL path must be tested
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} ({type(exc).__name__}: {exc}). Start it, e.g. "
            "`service postgresql start` (trust auth for user postgres, database `test`)."
        )
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return engine, schema


def drop_schema(engine: sa.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


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
