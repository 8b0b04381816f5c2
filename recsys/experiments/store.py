"""The experiment store in SQL (SQLite by default, PostgreSQL in production), and its state machine.

One row per experiment: the key, its status, namespace and revision as columns, the whole definition as a JSON
document. Every change is one transaction that validates first, so a refused call writes nothing. Starting an
experiment checks it against the running ones under a lock (PostgreSQL: a transaction-scoped advisory lock;
SQLite: the database's single writer, taken up front with ``BEGIN IMMEDIATE``), so two concurrent starts can't
both pass the overlap check.

Transitions: draft → running (start) → stopped (stop). A running experiment's split cannot change (variants,
weights, traffic, holdout, placements, namespace, seed): stop it and start a new one. A stopped one never runs
again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from recsys.experiments.latency import LatencyHistogram, merged
from recsys.experiments.model import (
    Experiment,
    ExperimentError,
    ModelRef,
    Status,
    from_json,
    overlaps,
    to_json,
    validate,
)
from recsys.sqltables import create_tables, open_engine

TABLE_NAME = "experiments"
_LOCK_ID = 0x7EC5_0E1D  # pg_advisory_xact_lock key of experiment transitions

metadata = MetaData()

experiments_table = Table(
    TABLE_NAME,
    metadata,
    Column("key", String(64), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("namespace", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Serving latency per experiment arm and worker (recsys.experiments.latency): the report adds the workers'.
latency_table = Table(
    "experiment_latency",
    metadata,
    Column("experiment", String(64), primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("worker", String(64), primary_key=True),
    Column("requests", Integer, nullable=False),
    Column("histogram", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Fields a running experiment keeps: changing any of them would move members between arms.
SPLIT_FIELDS = ("variants", "traffic", "holdout", "placements", "namespace", "namespace_range", "seed")


@runtime_checkable
class ModelCatalog(Protocol):
    """What the registry can serve: used to refuse variants naming a model or alias that does not exist."""

    def check(self, ref: ModelRef) -> str | None:
        """None when ``ref`` resolves to a registered version; else why not (the message names it)."""
        ...

    def kind(self, ref: ModelRef) -> str | None:
        """The model kind (``popularity``, ``als`` …) of the version ``ref`` resolves to, when known."""
        ...

    def resolve(self, ref: ModelRef) -> str | None:
        """The version ``ref`` (an alias or a version) points to now, or None."""
        ...


# Extra checks of a variant's cap policy: path -> None, or why it cannot be used.
CapPolicyCheck = Callable[[str], str | None]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (IMMEDIATE for transitions)
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Transitions take the write lock before reading what they check; plain reads do not.
    immediate = conn.get_execution_options().get("immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class ExperimentStore:
    """Create, update, start, stop and read experiments.

    ``catalog`` checks that every model a variant names exists (None: not checked — tests of the state
    machine alone); ``cap_policy_check`` that a variant's cap policy file loads. ``schema`` puts the table in
    a PostgreSQL schema.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        catalog: ModelCatalog | None = None,
        cap_policy_check: CapPolicyCheck | None = None,
        create: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine, self.dialect = open_engine(
            url,
            what="experiment store",
            schema=schema,
            sqlite_listeners={"connect": _sqlite_pragmas, "begin": _sqlite_begin},
        )
        if create:
            create_tables(metadata, self.engine)  # several workers may start at once
        self.catalog = catalog
        self.cap_policy_check = cap_policy_check
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- checks
    def _check_models(self, exp: Experiment) -> None:
        for i, v in enumerate(exp.variants):
            if self.catalog is not None:
                problem = self.catalog.check(v.model)
                if problem is not None:
                    raise ExperimentError(f"variants[{i}].model", problem, code="unknown_model")
                if v.baseline is not None and self.catalog.kind(v.model) != v.baseline.value:
                    raise ExperimentError(
                        f"variants[{i}].baseline",
                        f"model {v.model} is a {self.catalog.kind(v.model)!r} model, "
                        f"not {v.baseline.value!r}",
                    )
            if v.cap_policy is not None and self.cap_policy_check is not None:
                problem = self.cap_policy_check(v.cap_policy)
                if problem is not None:
                    raise ExperimentError(f"variants[{i}].cap_policy", problem)
        if exp.holdout_model is not None and self.catalog is not None:
            problem = self.catalog.check(exp.holdout_model)
            if problem is not None:
                raise ExperimentError("holdout_model", problem, code="unknown_model")
            kind = self.catalog.kind(exp.holdout_model)
            if kind != "popularity":
                raise ExperimentError(
                    "holdout_model",
                    f"model {exp.holdout_model} is a {kind!r} model; the holdout gets no personalised "
                    "offers, so it may only serve a popularity model",
                )

    # ------------------------------------------------------------------------------------------- writes
    def _tx(self) -> Any:
        return self.engine.execution_options(immediate=True).begin()

    def _lock_tx(self, conn: Any) -> None:
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})

    def _row(self, exp: Experiment) -> dict[str, Any]:
        return {
            "key": exp.key,
            "status": exp.status.value,
            "namespace": exp.namespace,
            "revision": exp.revision,
            "definition": to_json(exp),
            "updated_at": exp.updated_at or self.clock(),
        }

    def _get(self, conn: Any, key: str) -> Experiment | None:
        row = conn.execute(
            select(experiments_table.c.definition).where(experiments_table.c.key == key)
        ).scalar_one_or_none()
        return from_json(row) if row is not None else None

    def _require(self, conn: Any, key: str) -> Experiment:
        exp = self._get(conn, key)
        if exp is None:
            raise ExperimentError(
                "key", f"unknown experiment {key!r}", kind="not_found", code="unknown_experiment"
            )
        return exp

    def _save(self, conn: Any, exp: Experiment) -> None:
        values = self._row(exp)
        conn.execute(experiments_table.update().where(experiments_table.c.key == exp.key).values(**values))

    def create(self, exp: Experiment) -> Experiment:
        """Store a new draft. Raises :class:`ExperimentError` (nothing stored) when it is invalid, names a
        model that does not exist, or the key is taken."""
        if exp.status is not Status.DRAFT:
            raise ExperimentError("status", "a new experiment is a draft; start it with the start call")
        validate(exp)
        self._check_models(exp)
        now = self.clock()
        exp = replace(exp, created_at=now, updated_at=now, started_at=None, stopped_at=None, revision=1)
        with self._lock, self._tx() as conn:
            self._lock_tx(conn)
            if self._get(conn, exp.key) is not None:
                raise ExperimentError(
                    "key", f"experiment {exp.key!r} already exists", kind="conflict", code="experiment_exists"
                )
            conn.execute(experiments_table.insert().values(**self._row(exp)))
        return exp

    def update(self, key: str, changes: dict[str, Any]) -> Experiment:
        """Apply ``changes`` (field → value, as :class:`Experiment` fields) to an experiment.

        A running experiment only takes changes that keep its split (description, end, metrics); a stopped one
        only its description."""
        if "key" in changes and changes["key"] != key:
            raise ExperimentError("key", "an experiment's key cannot change")
        for name in ("status", "created_at", "updated_at", "started_at", "stopped_at", "revision"):
            if name in changes:
                raise ExperimentError(name, "is set by the service (use start/stop for the status)")
        with self._lock, self._tx() as conn:
            self._lock_tx(conn)
            current = self._require(conn, key)
            try:
                updated = replace(current, **changes)
            except TypeError as exc:
                raise ExperimentError("body", str(exc)) from exc
            if current.status is Status.RUNNING:
                for name in SPLIT_FIELDS:
                    if getattr(updated, name) != getattr(current, name):
                        raise ExperimentError(
                            name,
                            f"experiment {key!r} is running: changing {name} would move members between "
                            "variants; stop it and start a new experiment",
                            kind="conflict",
                            code="running_experiment_split",
                        )
                if changes.get("start", current.start) != current.start:
                    raise ExperimentError("start", f"experiment {key!r} is running; its start is fixed")
            if current.status is Status.STOPPED and set(changes) - {"description"}:
                raise ExperimentError(
                    sorted(set(changes) - {"description"})[0],
                    f"experiment {key!r} is stopped; only its description can change",
                    kind="conflict",
                    code="stopped_experiment",
                )
            validate(updated)
            self._check_models(updated)
            if current.status is Status.RUNNING and updated.end is not None and updated.end <= self.clock():
                raise ExperimentError("end", "is in the past; stop the experiment instead", code="invalid")
            updated = replace(updated, updated_at=self.clock(), revision=current.revision + 1)
            self._save(conn, updated)
        return updated

    def start(self, key: str) -> Experiment:
        """draft → running. Refused when another running experiment could share a member on a placement,
        when its end has passed, or a model it names no longer exists."""
        now = self.clock()
        with self._lock, self._tx() as conn:
            self._lock_tx(conn)
            exp = self._require(conn, key)
            if exp.status is not Status.DRAFT:
                raise ExperimentError(
                    "status",
                    f"experiment {key!r} is {exp.status.value}; only a draft can start"
                    + ("" if exp.status is Status.RUNNING else " (create a new experiment)"),
                    kind="conflict",
                    code="not_a_draft",
                )
            if exp.end is not None and exp.end <= now:
                raise ExperimentError("end", f"end {exp.end.isoformat()} has passed")
            self._check_models(exp)
            for other in self._running(conn):
                if other.end is not None and other.end <= now:
                    continue  # past its end: it routes nobody any more
                problem = overlaps(exp, other)
                if problem is not None:
                    raise ExperimentError("placements", problem, kind="conflict", code="experiment_overlap")
            start = exp.start if exp.start is not None and exp.start > now else now
            started = replace(
                self._pinned(exp),
                status=Status.RUNNING,
                start=start,
                started_at=now,
                updated_at=now,
                revision=exp.revision + 1,
            )
            validate(started)
            self._save(conn, started)
        return started

    def _pinned(self, exp: Experiment) -> Experiment:
        """``exp`` with every alias pinned to the version it points to now (the policies stay fixed)."""
        if self.catalog is None:
            return exp

        def pin(ref: ModelRef) -> ModelRef:
            if ref.alias is None or self.catalog is None:
                return ref
            return replace(ref, pinned=self.catalog.resolve(ref))

        return replace(
            exp,
            variants=tuple(replace(v, model=pin(v.model)) for v in exp.variants),
            holdout_model=pin(exp.holdout_model) if exp.holdout_model is not None else None,
        )

    def stop(self, key: str) -> Experiment:
        """running → stopped (its members go back to the default model at once)."""
        now = self.clock()
        with self._lock, self._tx() as conn:
            self._lock_tx(conn)
            exp = self._require(conn, key)
            if exp.status is not Status.RUNNING:
                raise ExperimentError(
                    "status",
                    f"experiment {key!r} is {exp.status.value}, not running",
                    kind="conflict",
                    code="not_running",
                )
            end = exp.end if exp.end is not None and exp.end <= now else now
            stopped = replace(
                exp, status=Status.STOPPED, end=end, stopped_at=now, updated_at=now, revision=exp.revision + 1
            )
            self._save(conn, stopped)
        return stopped

    # -------------------------------------------------------------------------------------------- reads
    def _running(self, conn: Any) -> list[Experiment]:
        rows = conn.execute(
            select(experiments_table.c.definition).where(experiments_table.c.status == Status.RUNNING.value)
        ).scalars()
        return [from_json(r) for r in rows]

    def get(self, key: str) -> Experiment | None:
        with self.engine.connect() as conn:
            return self._get(conn, key)

    def require(self, key: str) -> Experiment:
        with self.engine.connect() as conn:
            return self._require(conn, key)

    def list_all(self, *, status: Status | None = None) -> list[Experiment]:
        stmt = select(experiments_table.c.definition).order_by(experiments_table.c.key)
        if status is not None:
            stmt = stmt.where(experiments_table.c.status == status.value)
        with self.engine.connect() as conn:
            return [from_json(r) for r in conn.execute(stmt).scalars()]

    def running(self) -> list[Experiment]:
        with self.engine.connect() as conn:
            return self._running(conn)

    def fingerprint(self) -> tuple[int, int]:
        """(number of experiments, sum of revisions): changes whenever any experiment changes (cheap poll)."""
        stmt = select(func.count(), func.coalesce(func.sum(experiments_table.c.revision), 0))
        with self.engine.connect() as conn:
            n, total = conn.execute(stmt).one()
        return int(n), int(total)

    # ------------------------------------------------------------------------------------------ latency
    def save_latency(self, worker: str, histograms: Mapping[tuple[str, str], LatencyHistogram]) -> None:
        """Store one worker's latency histograms ((experiment, arm) -> everything it served since it
        started), replacing what it stored before. Workers write their own rows, so they never contend."""
        if not histograms:
            return
        now = self.clock()
        rows = [
            {
                "experiment": experiment,
                "variant": variant,
                "worker": worker,
                "requests": h.count,
                "histogram": h.encode(),
                "updated_at": now,
            }
            for (experiment, variant), h in histograms.items()
        ]
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(latency_table)
        stmt = insert.on_conflict_do_update(
            index_elements=["experiment", "variant", "worker"],
            set_={c: insert.excluded[c] for c in ("requests", "histogram", "updated_at")},
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)

    def latency(self, experiment: str) -> dict[str, LatencyHistogram]:
        """arm -> the latencies every worker (past and present) served it, added up."""
        stmt = select(latency_table.c.variant, latency_table.c.histogram).where(
            latency_table.c.experiment == experiment
        )
        by_arm: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for variant, text_ in conn.execute(stmt):
                by_arm.setdefault(variant, []).append(text_)
        return {arm: merged(texts) for arm, texts in by_arm.items()}

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        self.engine.dispose()
