"""Opening a SQL store (SQLite or PostgreSQL) and creating its tables when several workers start at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError


def open_engine(
    url: str,
    *,
    what: str,
    schema: str | None = None,
    echo: bool = False,
    sqlite_listeners: Mapping[str, Callable[..., None]] | None = None,
) -> tuple[Engine, str]:
    """A store's engine and its dialect (``sqlite`` or ``postgresql``); ``what`` names the store in errors.

    A plain ``postgresql://`` URL gets the installed driver (psycopg 3); a SQLite file's directory is created;
    ``sqlite_listeners`` are engine events for SQLite only (event name -> listener: the store's pragmas on
    ``connect``, its own ``BEGIN``); ``schema`` puts the tables in a PostgreSQL schema (tests use their own).
    """
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"{what} URL must be sqlite or postgresql, got {dialect!r}")
    if dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, pool_pre_ping=True)
    if dialect == "sqlite":
        for name, listener in (sqlite_listeners or {}).items():
            event.listen(engine, name, listener)
    if schema is not None:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine, dialect


def add_missing_columns(metadata: MetaData, engine: Engine, *, attempts: int = 3) -> list[str]:
    """Add the metadata's columns an existing table lacks (a store created by an earlier release): the
    schema's only migration, additive. Such columns must be nullable, so the rows already stored keep NULL
    there. Another worker adding the same column meanwhile is fine: the columns are checked again. Returns
    the ``table.column`` names added."""
    schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
    prep = engine.dialect.identifier_preparer
    added: list[str] = []
    for attempt in range(attempts):
        try:
            present = inspect(engine)
            for table in metadata.sorted_tables:
                if not present.has_table(table.name, schema=schema):
                    continue
                have = {c["name"] for c in present.get_columns(table.name, schema=schema)}
                for col in table.columns:
                    if col.name in have:
                        continue
                    if not col.nullable:  # pragma: no cover - a schema change this function cannot make
                        raise ValueError(f"{table.name}.{col.name} is NOT NULL: it needs a migration")
                    name = prep.quote(table.name)
                    if schema is not None:
                        name = f"{prep.quote_schema(schema)}.{name}"
                    ddl = col.type.compile(dialect=engine.dialect)
                    with engine.begin() as conn:
                        conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {prep.quote(col.name)} {ddl}"))
                    added.append(f"{table.name}.{col.name}")
            return added
        except (OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return added


def create_tables(metadata: MetaData, engine: Engine, *, attempts: int = 3) -> None:
    """``metadata.create_all``, retried when another process created a table between this one's existence
    check and its CREATE ("table ... already exists"; on PostgreSQL a duplicate type): checking again then
    finds the table there. Other errors surface after the last attempt."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
