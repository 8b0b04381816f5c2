"""Creating a store's tables when several service workers start at once."""

from __future__ import annotations

import time

from sqlalchemy import Engine, MetaData
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError


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
