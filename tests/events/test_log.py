"""The event log over SQLite and the machine's real PostgreSQL: idempotent append, durable rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from recsys.events import EventLog, EventRecord
from tests.conftest import PG_URL
from tests.conftest import pg_schema_or_fail as _pg_schema_or_fail

T0 = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def pg_schema_or_fail() -> tuple[sa.Engine, str]:
    return _pg_schema_or_fail("test_events")


@pytest.fixture(params=["sqlite", "postgresql"])
def event_log(request: pytest.FixtureRequest, tmp_path) -> Iterator[EventLog]:
    if request.param == "sqlite":
        log = EventLog(f"sqlite:///{tmp_path}/sub/events.db")
        yield log
        log.close()
        return
    engine, schema = pg_schema_or_fail()
    log = EventLog(PG_URL, schema=schema)
    try:
        yield log
    finally:
        log.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def ev(i: int, event_type: str = "impression", member: str = "M1") -> EventRecord:
    return EventRecord(
        event_id=f"ev-{i}",
        member_id=member,
        offer_id=f"OFF{i % 3}",
        event_type=event_type,
        placement="home",
        event_time=T0 + timedelta(minutes=i),
        trip_key="CA1405|2026-11-23" if event_type == "purchase" else None,
    )


def test_retried_batch_is_counted_once(event_log: EventLog) -> None:
    batch = [ev(1), ev(2, "click"), ev(3, "purchase")]
    first = event_log.append(batch)
    assert [e.event_id for e in first.accepted] == ["ev-1", "ev-2", "ev-3"]
    assert first.duplicate_ids == []
    retry = event_log.append(batch)
    assert retry.accepted == []
    assert sorted(retry.duplicate_ids) == ["ev-1", "ev-2", "ev-3"]
    assert event_log.count() == 3
    assert event_log.count(event_type="purchase") == 1


def test_partly_new_batch_and_repeats_inside_a_batch(event_log: EventLog) -> None:
    event_log.append([ev(1), ev(2)])
    result = event_log.append([ev(2), ev(3), ev(3), ev(4)])
    assert [e.event_id for e in result.accepted] == ["ev-3", "ev-4"]
    assert sorted(result.duplicate_ids) == ["ev-2", "ev-3"]
    assert event_log.count() == 4


def test_rows_are_stored_as_sent(event_log: EventLog) -> None:
    record = EventRecord(
        "x-1",
        "M9",
        "OFF7",
        "purchase",
        "check_in",
        T0,
        trip_key="CA981|2026-11-23",
        request_id="req-1",
        model_version="4",
    )
    event_log.append([record])
    (row,) = event_log.get(["x-1"])
    assert row["member_id"] == "M9" and row["offer_id"] == "OFF7" and row["placement"] == "check_in"
    assert row["trip_key"] == "CA981|2026-11-23" and row["request_id"] == "req-1"
    assert row["model_version"] == "4"
    stored = row["event_time"]
    stored = stored if stored.tzinfo else stored.replace(tzinfo=UTC)
    assert stored == T0


def test_survives_reopening(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    log = EventLog(url)
    log.append([ev(1), ev(2)])
    log.close()
    reopened = EventLog(url)
    assert reopened.count() == 2
    assert reopened.append([ev(2)]).duplicate_ids == ["ev-2"]
    reopened.close()


def test_rejects_other_databases() -> None:
    with pytest.raises(ValueError, match="sqlite or postgresql"):
        EventLog("mysql+pymysql://u@localhost/db")


def test_plain_postgresql_url_uses_psycopg3() -> None:
    engine, schema = pg_schema_or_fail()
    try:
        log = EventLog("postgresql://postgres@127.0.0.1:5432/test", schema=schema)
        assert log.engine.dialect.driver == "psycopg"
        assert log.append([ev(1)]).accepted
        log.close()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_read_back_by_event_time(event_log: EventLog) -> None:
    batch = [ev(i, "purchase" if i % 3 == 0 else "impression", member=f"M{i % 2}") for i in range(10)]
    event_log.append(batch[::-1])
    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=8)
    got = list(event_log.between(since.astimezone(timezone(timedelta(hours=8))), until))
    assert [e.event_id for e in got] == [f"ev-{i}" for i in range(2, 8)]
    assert got[0] == batch[2] and got[0].event_time.tzinfo is not None
    purchases = list(event_log.between(T0, until, event_types=["purchase"]))
    assert [e.event_id for e in purchases] == ["ev-0", "ev-3", "ev-6"]
    rows = list(event_log.attribution_rows(since, until))
    assert rows == [(e.member_id, e.offer_id, e.event_type, e.event_time, e.request_id) for e in got]
