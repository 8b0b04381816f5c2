"""A request log created before the booking columns existed gains them on opening, on SQLite and on
PostgreSQL, and keeps the rows it holds (NULL in the new columns)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys.requestlog import SqlRequestLog
from recsys.requestlog.store import REQUESTS_TABLE, SHOWN_TABLE, requests_table, shown_table
from recsys.sqltables import add_missing_columns
from tests.requestlog.conftest import PG_URL, drop_schema, pg_schema_or_fail

BOOKING = ("booking_lead_days", "party_size", "children", "stay_nights")


def _old_metadata() -> sa.MetaData:
    """The two tables as the first release created them: no booking columns."""
    old = sa.MetaData()
    sa.Table(REQUESTS_TABLE, old, *(c.copy() for c in requests_table.columns if c.name not in BOOKING))
    sa.Table(SHOWN_TABLE, old, *(c.copy() for c in shown_table.columns))
    return old


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_old_log_gains_the_booking_columns_and_keeps_its_rows(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url, schema, engine = (
            f"sqlite:///{tmp_path}/old.db",
            None,
            sa.create_engine(f"sqlite:///{tmp_path}/old.db"),
        )
        old_engine = engine
    else:
        engine, schema = pg_schema_or_fail("test_reqlog_migrate")
        url = PG_URL
        old_engine = engine.execution_options(schema_translate_map={None: schema})
    try:
        _old_metadata().create_all(old_engine)
        now = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
        with old_engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {'' if schema is None else schema + '.'}{REQUESTS_TABLE} "
                    "(request_id, member_id, request_time, placement, candidates, policy_name, "
                    "policy_version, exploration, logged_at) "
                    "VALUES ('r-old', 'M1', :t, 'home', '[]', 'als', '1', false, :t)"
                ),
                {"t": now},
            )
        log = SqlRequestLog(url, schema=schema)
        try:
            cols = {c["name"] for c in sa.inspect(old_engine).get_columns(REQUESTS_TABLE, schema=schema)}
            assert set(BOOKING) <= cols
            old = log.get("r-old")
            assert old is not None and old.member_id == "M1" and old.request_time == now
            assert (old.trip.party_size, old.trip.stay_nights) == (None, None)
            # opening again (another worker, a restart) adds nothing
            assert add_missing_columns(sa.MetaData(), log.engine) == []
            assert add_missing_columns(requests_table.metadata, log.engine) == []
        finally:
            log.close()
    finally:
        if backend == "postgresql" and schema is not None:
            drop_schema(engine, schema)
        engine.dispose()
