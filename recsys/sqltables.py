"""Opening a SQL store (SQLite or PostgreSQL) and creating its tables when several workers start at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event
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
