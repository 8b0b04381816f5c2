"""An append-only, idempotent event log in SQL (SQLite by default, PostgreSQL in production).

Every event carries a client-generated event id; the id is the primary key and appends use
``INSERT ... ON CONFLICT (event_id) DO NOTHING ... RETURNING event_id``, so a retried batch never double
counts and the caller learns exactly which events are new (and so must be applied to online state) and which
were duplicates.

When the database cannot be reached, :meth:`EventLog.append` raises :class:`EventLogUnavailable`; nothing of
the batch is known to be stored: the service answers 503 and the client sends the same batch again (its ids
make the retry safe, even when the failed call had in fact committed).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from recsys.schema import Col
from recsys.sqltables import create_tables, open_engine

TABLE_NAME = "offer_events"
TRIP_KEY = "trip_key"
MODEL_VERSION = "model_version"
RECEIVED_AT = "received_at"

metadata = MetaData()


class EventLogUnavailable(Exception):
    """The event log's database could not be reached (or dropped the connection) during an append."""


events_table = Table(
    TABLE_NAME,
    metadata,
    Column(Col.EVENT_ID, String(128), primary_key=True),
    Column(Col.MEMBER_ID, String(64), nullable=False),
    Column(Col.OFFER_ID, String(64), nullable=False),
    Column(Col.EVENT_TYPE, String(16), nullable=False),
    Column(Col.PLACEMENT, String(16), nullable=False),
    Column(Col.EVENT_TIME, DateTime(timezone=True), nullable=False),
    Column(TRIP_KEY, String(128), nullable=True),
    Column(Col.REQUEST_ID, String(64), nullable=True),
    Column(MODEL_VERSION, String(32), nullable=True),
    Column(RECEIVED_AT, DateTime(timezone=True), nullable=False),
    Index("ix_offer_events_member_time", Col.MEMBER_ID, Col.EVENT_TIME),
    Index("ix_offer_events_request", Col.REQUEST_ID),
)


@dataclass(frozen=True)
class EventRecord:
    """One event as stored.

    ``request_id``/``model_version`` come from a verified tracking token when the event carried one.
    """

    event_id: str
    member_id: str
    offer_id: str
    event_type: str
    placement: str
    event_time: datetime
    trip_key: str | None = None
    request_id: str | None = None
    model_version: str | None = None

    def row(self, received_at: datetime) -> dict[str, Any]:
        return {
            Col.EVENT_ID: self.event_id,
            Col.MEMBER_ID: self.member_id,
            Col.OFFER_ID: self.offer_id,
            Col.EVENT_TYPE: self.event_type,
            Col.PLACEMENT: self.placement,
            Col.EVENT_TIME: self.event_time,
            TRIP_KEY: self.trip_key,
            Col.REQUEST_ID: self.request_id,
            MODEL_VERSION: self.model_version,
            RECEIVED_AT: received_at,
        }


class EventRow(NamedTuple):
    """An event as experiment attribution reads it (:meth:`EventLog.attribution_rows`)."""

    member_id: str
    offer_id: str
    event_type: str
    event_time: datetime
    request_id: str | None


@dataclass(frozen=True)
class AppendResult:
    """Which events of a batch were new (in batch order) and which were already logged."""

    accepted: list[EventRecord] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the appender
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoint; WAL survives a process crash
    cur.execute("PRAGMA busy_timeout=5000")  # several service workers may append at once
    cur.close()


class EventLog:
    """Idempotent append and simple counts over the event table.

    ``url`` is any SQLAlchemy URL; ``sqlite:///path`` creates the parent directory, ``postgresql+psycopg://...``
    is used in production. ``schema`` puts the table in a PostgreSQL schema (tests use their own).
    """

    def __init__(
        self, url: str, *, schema: str | None = None, create: bool = True, echo: bool = False
    ) -> None:
        self.engine, self.dialect = open_engine(
            url, what="event log", schema=schema, echo=echo, sqlite_listeners={"connect": _sqlite_pragmas}
        )
        if create:
            create_tables(metadata, self.engine)  # several workers may start at once

    def _insert(self) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(events_table)

    def append(self, events: Sequence[EventRecord], *, received_at: datetime | None = None) -> AppendResult:
        """Append a batch in one transaction; ids already logged (or repeated in the batch) are duplicates."""
        if not events:
            return AppendResult()
        now = received_at or datetime.now(UTC)
        unique: dict[str, EventRecord] = {}
        duplicate_ids: list[str] = []
        for ev in events:
            if ev.event_id in unique:
                duplicate_ids.append(ev.event_id)
            else:
                unique[ev.event_id] = ev
        stmt = (
            self._insert()
            .values([ev.row(now) for ev in unique.values()])
            .on_conflict_do_nothing(index_elements=[Col.EVENT_ID])
            .returning(events_table.c[Col.EVENT_ID])
        )
        try:
            with self.engine.begin() as conn:
                inserted = set(conn.execute(stmt).scalars())
        except (OperationalError, InterfaceError) as exc:
            raise EventLogUnavailable(f"event log unavailable: {type(exc.orig).__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise EventLogUnavailable(f"event log unavailable: {type(exc.orig).__name__}") from exc
            raise
        accepted = [ev for ev in unique.values() if ev.event_id in inserted]
        duplicate_ids.extend(eid for eid in unique if eid not in inserted)
        return AppendResult(accepted=accepted, duplicate_ids=duplicate_ids)

    def count(self, *, event_type: str | None = None, member_id: str | None = None) -> int:
        """Number of logged events, optionally of one type and/or member."""
        stmt = select(func.count()).select_from(events_table)
        if event_type is not None:
            stmt = stmt.where(events_table.c[Col.EVENT_TYPE] == event_type)
        if member_id is not None:
            stmt = stmt.where(events_table.c[Col.MEMBER_ID] == member_id)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get(self, event_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Stored rows for the given ids (any order)."""
        ids = list(event_ids)
        with self.engine.connect() as conn:
            rows = conn.execute(select(events_table).where(events_table.c[Col.EVENT_ID].in_(ids)))
            return [dict(r._mapping) for r in rows]

    def between(
        self,
        since: datetime,
        until: datetime,
        *,
        event_types: Collection[str] | None = None,
        batch_size: int = 5000,
    ) -> Iterator[EventRecord]:
        """Events with ``since <= event_time < until`` in event-time order (optionally of some types),
        streamed in batches. Times come back timezone-aware (UTC)."""
        c = events_table.c
        since, until = since.astimezone(UTC), until.astimezone(UTC)  # stored in UTC (SQLite keeps wall time)
        stmt = (
            select(events_table)
            .where(c[Col.EVENT_TIME] >= since, c[Col.EVENT_TIME] < until)
            .order_by(c[Col.EVENT_TIME], c[Col.EVENT_ID])
        )
        if event_types is not None:
            stmt = stmt.where(c[Col.EVENT_TYPE].in_(list(event_types)))
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch_size).execute(stmt)
            for row in result:
                t = row._mapping[Col.EVENT_TIME]
                yield EventRecord(
                    event_id=row._mapping[Col.EVENT_ID],
                    member_id=row._mapping[Col.MEMBER_ID],
                    offer_id=row._mapping[Col.OFFER_ID],
                    event_type=row._mapping[Col.EVENT_TYPE],
                    placement=row._mapping[Col.PLACEMENT],
                    event_time=t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC),
                    trip_key=row._mapping[TRIP_KEY],
                    request_id=row._mapping[Col.REQUEST_ID],
                    model_version=row._mapping[MODEL_VERSION],
                )

    def attribution_rows(self, since: datetime, until: datetime) -> Iterator[EventRow]:
        """Events with ``since <= event_time < until`` as the few columns attribution reads, in event-time
        order (cheaper than :meth:`between` over hundreds of thousands of events)."""
        c = events_table.c
        stmt = (
            select(c[Col.MEMBER_ID], c[Col.OFFER_ID], c[Col.EVENT_TYPE], c[Col.EVENT_TIME], c[Col.REQUEST_ID])
            .where(c[Col.EVENT_TIME] >= since.astimezone(UTC), c[Col.EVENT_TIME] < until.astimezone(UTC))
            .order_by(c[Col.EVENT_TIME])
        )
        with self.engine.connect() as conn:
            for r in conn.execution_options(yield_per=10_000).execute(stmt):
                t = r[3]
                yield EventRow(r[0], r[1], r[2], t.replace(tzinfo=UTC) if t.tzinfo is None else t, r[4])

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        self.engine.dispose()
