"""Service workers start at once and each store creates its tables if missing: none may fail on the race
("table ... already exists" between one worker's existence check and its CREATE), on SQLite or PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recsys.events import EventLog
from recsys.experiments.store import ExperimentStore
from recsys.requestlog import SqlRequestLog
from tests.requestlog.conftest import PG_URL, drop_schema, pg_schema_or_fail

STORES: dict[str, Callable[..., Any]] = {
    "events": EventLog,
    "requests": SqlRequestLog,
    "experiments": ExperimentStore,
}


def open_together(n: int, open_one: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    opened: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def go() -> None:
        barrier.wait()
        try:
            opened.append(open_one())
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return opened, errors


@pytest.mark.parametrize("store", sorted(STORES))
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_starting_together_all_open_the_store(store: str, backend: str, tmp_path: Path) -> None:
    cls = STORES[store]
    if backend == "sqlite":
        opened, errors = open_together(6, lambda: cls(f"sqlite:///{tmp_path}/race.db"))
        for s in opened:
            s.engine.dispose()
    else:
        engine, schema = pg_schema_or_fail("test_race")
        opened, errors = open_together(6, lambda: cls(PG_URL, schema=schema))
        for s in opened:
            s.engine.dispose()
        drop_schema(engine, schema)
    assert errors == []
    assert len(opened) == 6
