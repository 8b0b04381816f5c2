"""The durable request log in SQL (SQLite by default, PostgreSQL in production).

Two tables: ``request_log`` (one row per recommend decision: context, trip, candidate set, policy, exploration
flag, experiment and variant) and ``request_shown`` (one row per shown offer: slot and propensity), so that
events join to the request through their ``request_id`` and to the shown offer through ``(request_id,
offer_id)``. The candidate set is a JSON array on the request row: it is read whole, never queried by offer.

Appends are idempotent on the request id (``ON CONFLICT DO NOTHING``) and all-or-nothing: every record of a
batch is validated first (:meth:`RequestRecord.validate`), so a bad record refuses the whole batch with an
:class:`~recsys.requestlog.record.InvalidRequestRecord` naming the request and field, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from recsys.requestlog.record import PolicyRef, RequestRecord, ShownOffer, TripSnapshot
from recsys.sqltables import add_missing_columns, create_tables, open_engine

REQUESTS_TABLE = "request_log"
SHOWN_TABLE = "request_shown"

metadata = MetaData()

requests_table = Table(
    REQUESTS_TABLE,
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("member_id", String(64), nullable=False),
    Column("request_time", DateTime(timezone=True), nullable=False),
    Column("placement", String(16), nullable=False),
    Column("flight_id", String(64), nullable=True),
    Column("flight_number", String(16), nullable=True),
    Column("origin", String(8), nullable=True),
    Column("destination", String(8), nullable=True),
    Column("cabin", String(4), nullable=True),
    Column("fare_class", String(4), nullable=True),
    Column("departure_time", DateTime(timezone=True), nullable=True),
    Column("candidates", JSON, nullable=False),
    Column("policy_name", String(64), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("exploration", Boolean, nullable=False),
    Column("experiment", String(64), nullable=True),
    Column("variant", String(64), nullable=True),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    # added after the first release: nullable, so add_missing_columns adds them to an existing table and
    # the rows logged before keep NULL there
    Column("booking_lead_days", Integer, nullable=True),
    Column("party_size", Integer, nullable=True),
    Column("children", Integer, nullable=True),
    Column("stay_nights", Integer, nullable=True),
    Index("ix_request_log_member_time", "member_id", "request_time"),
    Index("ix_request_log_time", "request_time"),
    Index("ix_request_log_experiment", "experiment", "variant"),
)

shown_table = Table(
    SHOWN_TABLE,
    metadata,
    Column(
        "request_id",
        String(64),
        ForeignKey(f"{REQUESTS_TABLE}.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("slot", Integer, primary_key=True),
    Column("offer_id", String(64), nullable=False),
    Column("propensity", Float, nullable=False),
    Index("ix_request_shown_offer", "request_id", "offer_id", unique=True),
)


class ExposureRow(NamedTuple):
    """A request as experiment attribution needs it (:meth:`SqlRequestLog.exposures`)."""

    request_id: str
    member_id: str
    request_time: datetime
    variant: str | None
    shown: int


@runtime_checkable
class RequestLog(Protocol):
    """Where request records go and how they are read back (attribution, experiments, policy evaluation)."""

    def append(self, records: Sequence[RequestRecord]) -> int:
        """Validate and store a batch atomically; returns how many were new (ids already logged are skipped).
        Raises ``InvalidRequestRecord`` (nothing stored) when any record is invalid."""
        ...

    def get(self, request_id: str) -> RequestRecord | None:
        """The record of one request, or None."""
        ...

    def get_many(self, request_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """Records by request id (ids not logged are absent)."""
        ...

    def for_member(
        self, member_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[RequestRecord]:
        """A member's records in request-time order, optionally in ``[since, until)``."""
        ...

    def between(
        self,
        since: datetime,
        until: datetime,
        *,
        experiment: str | None = None,
        batch_size: int = 1000,
    ) -> Iterator[RequestRecord]:
        """Records with ``since <= request_time < until`` in time order (optionally of one experiment),
        read in batches."""
        ...

    def exposures(self, experiment: str, since: datetime, until: datetime) -> Iterator[ExposureRow]:
        """One experiment's requests in ``[since, until)`` in time order, without their candidate sets."""
        ...

    def count(self, *, member_id: str | None = None, experiment: str | None = None) -> int:
        """How many records (of one member and/or experiment)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer thread
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoint; WAL survives a process crash
    cur.execute("PRAGMA busy_timeout=5000")  # several service workers may append at once
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _utc(t: datetime) -> datetime:
    # SQLite keeps a datetime's wall time and drops its offset: store and compare in UTC everywhere.
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class SqlRequestLog:
    """:class:`RequestLog` over SQLAlchemy.

    ``url`` is any SQLAlchemy URL: ``sqlite:///path`` (the parent directory is created) or
    ``postgresql+psycopg://...``; ``schema`` puts the tables in a PostgreSQL schema (tests use their own).
    """

    def __init__(
        self, url: str, *, schema: str | None = None, create: bool = True, echo: bool = False
    ) -> None:
        self.engine, self.dialect = open_engine(
            url, what="request log", schema=schema, echo=echo, sqlite_listeners={"connect": _sqlite_pragmas}
        )
        if create:
            create_tables(metadata, self.engine)  # several workers may start at once
            add_missing_columns(metadata, self.engine)  # a log created by an earlier release

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # -------------------------------------------------------------------------------------------- write

    def append(self, records: Sequence[RequestRecord]) -> int:
        if not records:
            return 0
        unique: dict[str, RequestRecord] = {}
        for r in records:
            r.validate()
            unique.setdefault(r.request_id, r)
        now = datetime.now(UTC)
        ids = list(unique)
        with self.engine.begin() as conn:
            # The ids already logged (a retried batch), then one executemany per table: a multi-row VALUES
            # with RETURNING costs several times more CPU per record, and this runs in the service process.
            logged: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = select(requests_table.c.request_id).where(requests_table.c.request_id.in_(chunk))
                logged.update(conn.execute(q).scalars())
            fresh = [r for r in unique.values() if r.request_id not in logged]
            if fresh:
                # DO NOTHING still guards against another writer logging the same id meanwhile.
                conn.execute(
                    self._insert(requests_table).on_conflict_do_nothing(index_elements=["request_id"]),
                    [_request_row(r, now) for r in fresh],
                )
                shown = [
                    {
                        "request_id": r.request_id,
                        "slot": s.slot,
                        "offer_id": s.offer_id,
                        "propensity": s.propensity,
                    }
                    for r in fresh
                    for s in r.shown
                ]
                if shown:
                    conn.execute(
                        self._insert(shown_table).on_conflict_do_nothing(
                            index_elements=["request_id", "slot"]
                        ),
                        shown,
                    )
        new = fresh
        return len(new)

    # --------------------------------------------------------------------------------------------- read

    def _load(self, conn: Any, where: Any, order: bool = True) -> list[RequestRecord]:
        stmt = select(requests_table).where(where)
        if order:
            stmt = stmt.order_by(requests_table.c.request_time, requests_table.c.request_id)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        if not rows:
            return []
        ids = [r["request_id"] for r in rows]
        shown: dict[str, list[ShownOffer]] = {}
        for i in range(0, len(ids), 500):
            q = (
                select(shown_table)
                .where(shown_table.c.request_id.in_(ids[i : i + 500]))
                .order_by(shown_table.c.request_id, shown_table.c.slot)
            )
            for s in conn.execute(q):
                shown.setdefault(s.request_id, []).append(ShownOffer(s.offer_id, s.slot, float(s.propensity)))
        return [_record(r, shown.get(r["request_id"], [])) for r in rows]

    def get(self, request_id: str) -> RequestRecord | None:
        with self.engine.connect() as conn:
            found = self._load(conn, requests_table.c.request_id == request_id, order=False)
        return found[0] if found else None

    def get_many(self, request_ids: Sequence[str]) -> dict[str, RequestRecord]:
        ids = list(dict.fromkeys(request_ids))
        out: dict[str, RequestRecord] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                for r in self._load(conn, requests_table.c.request_id.in_(ids[i : i + 500]), order=False):
                    out[r.request_id] = r
        return out

    def for_member(
        self, member_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[RequestRecord]:
        c = requests_table.c
        where = c.member_id == member_id
        if since is not None:
            where = where & (c.request_time >= _utc(since))
        if until is not None:
            where = where & (c.request_time < _utc(until))
        with self.engine.connect() as conn:
            return self._load(conn, where)

    def between(
        self,
        since: datetime,
        until: datetime,
        *,
        experiment: str | None = None,
        batch_size: int = 1000,
    ) -> Iterator[RequestRecord]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        c = requests_table.c
        base = (c.request_time >= _utc(since)) & (c.request_time < _utc(until))
        if experiment is not None:
            base = base & (c.experiment == experiment)
        after: tuple[datetime, str] | None = None
        while True:  # keyset pagination on (request_time, request_id): stable while rows are appended
            where = base
            if after is not None:
                t, rid = after
                where = where & ((c.request_time > t) | ((c.request_time == t) & (c.request_id > rid)))
            with self.engine.connect() as conn:
                ids = list(
                    conn.execute(
                        select(c.request_id, c.request_time)
                        .where(where)
                        .order_by(c.request_time, c.request_id)
                        .limit(batch_size)
                    )
                )
                if not ids:
                    return
                batch = self._load(conn, c.request_id.in_([r.request_id for r in ids]))
            yield from batch
            after = (ids[-1].request_time, ids[-1].request_id)

    def exposures(self, experiment: str, since: datetime, until: datetime) -> Iterator[ExposureRow]:
        """One experiment's requests with ``since <= request_time < until`` in time order, as (request id,
        member, time, variant, number of offers shown): what attribution reads, without the candidate sets."""
        c, s = requests_table.c, shown_table.c
        shown = select(func.count()).where(s.request_id == c.request_id).scalar_subquery()
        stmt = (
            select(c.request_id, c.member_id, c.request_time, c.variant, shown.label("shown"))
            .where(c.experiment == experiment, c.request_time >= _utc(since), c.request_time < _utc(until))
            .order_by(c.request_time, c.request_id)
        )
        with self.engine.connect() as conn:
            for r in conn.execution_options(yield_per=5000).execute(stmt):
                yield ExposureRow(r.request_id, r.member_id, _utc(r.request_time), r.variant, int(r.shown))

    def count(self, *, member_id: str | None = None, experiment: str | None = None) -> int:
        stmt = select(func.count()).select_from(requests_table)
        if member_id is not None:
            stmt = stmt.where(requests_table.c.member_id == member_id)
        if experiment is not None:
            stmt = stmt.where(requests_table.c.experiment == experiment)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        self.engine.dispose()


def _request_row(r: RequestRecord, logged_at: datetime) -> dict[str, Any]:
    t = r.trip
    return {
        "request_id": r.request_id,
        "member_id": r.member_id,
        "request_time": _utc(r.request_time),
        "placement": r.placement,
        "flight_id": t.flight_id,
        "flight_number": t.flight_number,
        "origin": t.origin,
        "destination": t.destination,
        "cabin": t.cabin,
        "fare_class": t.fare_class,
        "departure_time": _utc(t.departure_time) if t.departure_time is not None else None,
        "booking_lead_days": t.booking_lead_days,
        "party_size": t.party_size,
        "children": t.children,
        "stay_nights": t.stay_nights,
        "candidates": list(r.candidates),
        "policy_name": r.policy.name,
        "policy_version": r.policy.version,
        "exploration": r.exploration,
        "experiment": r.experiment,
        "variant": r.variant,
        "logged_at": logged_at,
    }


def _record(row: dict[str, Any], shown: list[ShownOffer]) -> RequestRecord:
    request_time = _aware(row["request_time"])
    assert request_time is not None  # NOT NULL column
    return RequestRecord(
        request_id=row["request_id"],
        member_id=row["member_id"],
        request_time=request_time,
        placement=row["placement"],
        trip=TripSnapshot(
            flight_id=row["flight_id"],
            flight_number=row["flight_number"],
            origin=row["origin"],
            destination=row["destination"],
            cabin=row["cabin"],
            fare_class=row["fare_class"],
            departure_time=_aware(row["departure_time"]),
            booking_lead_days=row["booking_lead_days"],
            party_size=row["party_size"],
            children=row["children"],
            stay_nights=row["stay_nights"],
        ),
        candidates=tuple(row["candidates"]),
        shown=tuple(shown),
        policy=PolicyRef(row["policy_name"], row["policy_version"]),
        exploration=bool(row["exploration"]),
        experiment=row["experiment"],
        variant=row["variant"],
    )
