"""The experiment store over SQLite and the real PostgreSQL: durable, all-or-nothing, the state machine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa

from recsys.experiments import (
    Experiment,
    ExperimentError,
    ExperimentStore,
    ModelRef,
    Status,
    Variant,
)
from tests.events.test_log import PG_URL, pg_schema_or_fail

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class Catalog:
    """The registry's answers for two models: ``m`` (champion, version 1 popularity, version 2 als)."""

    versions: ClassVar[dict[str, str]] = {"1": "popularity", "2": "als"}

    def _version(self, ref: ModelRef) -> str | None:
        if ref.name != "m":
            return None
        return "2" if ref.alias == "champion" else (ref.version if ref.version in self.versions else None)

    def check(self, ref: ModelRef) -> str | None:
        return None if self._version(ref) else f"model {ref} does not exist"

    def kind(self, ref: ModelRef) -> str | None:
        v = self._version(ref)
        return self.versions[v] if v else None

    def resolve(self, ref: ModelRef) -> str | None:
        return self._version(ref)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/sub/exp.db", None
        return
    engine, schema = pg_schema_or_fail()
    try:
        yield PG_URL, schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def make(url: tuple[str, str | None], now: list[datetime] | None = None) -> ExperimentStore:
    clock = (lambda: now[0]) if now is not None else (lambda: T0)
    return ExperimentStore(url[0], schema=url[1], catalog=Catalog(), clock=clock)


def exp(key: str, **over: object) -> Experiment:
    values: dict[str, object] = {
        "key": key,
        "placements": ("booking",),
        "variants": (
            Variant("control", 0.5, ModelRef("m", version="1")),
            Variant("treatment", 0.5, ModelRef("m", alias="champion")),
        ),
        "end": T0 + timedelta(days=14),
    }
    values.update(over)
    return Experiment(**values)  # type: ignore[arg-type]


def test_durable_across_store_instances(store_url: tuple[str, str | None]) -> None:
    s = make(store_url)
    created = s.create(exp("a", description="first", holdout=0.1))
    s.start("a")
    s.close()
    again = make(store_url)
    got = again.require("a")
    assert got.status is Status.RUNNING and got.description == "first" and got.holdout == 0.1
    assert got.start == T0 and got.revision == 2
    # Starting pins the alias to the version it points to now; a version stays as it is.
    assert got.variants[0] == created.variants[0] and got.variants[0].model.pinned is None
    assert got.variants[1].model == ModelRef("m", alias="champion", pinned="2")
    assert got.variants[1].model.served() == ModelRef("m", version="2")
    assert [e.key for e in again.running()] == ["a"]
    again.close()


def test_refused_calls_store_nothing(store_url: tuple[str, str | None]) -> None:
    s = make(store_url)
    bad = [
        (
            exp(
                "w",
                variants=(
                    Variant("c", 0.6, ModelRef("m", version="1")),
                    Variant("t", 0.6, ModelRef("m", version="1")),
                ),
            ),
            "variants.weight",
        ),
        (
            exp(
                "u",
                variants=(
                    Variant("c", 0.5, ModelRef("m", version="9")),
                    Variant("t", 0.5, ModelRef("m", version="1")),
                ),
            ),
            "variants[0].model",
        ),
        (
            exp(
                "n",
                variants=(
                    Variant("c", 0.5, ModelRef("x", alias="champion")),
                    Variant("t", 0.5, ModelRef("m", version="1")),
                ),
            ),
            "variants[0].model",
        ),
        (exp("e", start=T0 + timedelta(days=2), end=T0 + timedelta(days=1)), "end"),
        (exp("h", holdout=0.7), "holdout"),
        (exp("BAD KEY"), "key"),
        (
            exp(
                "b",
                variants=(
                    Variant("c", 0.5, ModelRef("m", version="2"), baseline="popularity"),
                    Variant("t", 0.5, ModelRef("m", version="1")),
                ),
            ),
            "variants[0].baseline",
        ),  # type: ignore[arg-type]
    ]
    for e, field in bad:
        with pytest.raises(ExperimentError) as err:
            s.create(e)
        assert err.value.field == field, (e.key, err.value)
    assert s.list_all() == [] and s.fingerprint() == (0, 0)
    s.close()


def test_state_machine(store_url: tuple[str, str | None]) -> None:
    now = [T0]
    s = make(store_url, now)
    s.create(exp("a"))
    with pytest.raises(ExperimentError) as err:
        s.create(exp("a"))
    assert err.value.kind == "conflict"
    with pytest.raises(ExperimentError) as err:
        s.stop("a")
    assert err.value.kind == "conflict"
    s.start("a")
    with pytest.raises(ExperimentError):
        s.start("a")
    # running: the split is fixed, other fields are not
    for change in (
        {"variants": tuple(reversed(s.require("a").variants))},
        {"traffic": 0.5},
        {"holdout": 0.1},
        {"placements": ("booking", "home")},
        {"seed": "x"},
    ):
        with pytest.raises(ExperimentError) as err:
            s.update("a", change)
        assert err.value.kind == "conflict" and err.value.field == next(iter(change))
    assert s.require("a").revision == 2
    s.update("a", {"description": "d", "end": T0 + timedelta(days=30)})
    assert s.require("a").end == T0 + timedelta(days=30)
    now[0] = T0 + timedelta(days=3)
    stopped = s.stop("a")
    assert stopped.status is Status.STOPPED and stopped.end == now[0] and stopped.stopped_at == now[0]
    with pytest.raises(ExperimentError):
        s.update("a", {"traffic": 0.3})
    with pytest.raises(ExperimentError) as err:
        s.start("a")
    assert err.value.kind == "conflict"
    with pytest.raises(ExperimentError) as err:
        s.start("nope")
    assert err.value.kind == "not_found"
    s.close()


def test_overlap_refused_and_namespace_ranges(store_url: tuple[str, str | None]) -> None:
    s = make(store_url)
    s.create(exp("a", placements=("booking", "home"), namespace="ns", namespace_range=(0.0, 0.5)))
    s.create(exp("b", placements=("home",), namespace="ns", namespace_range=(0.4, 1.0)))
    s.create(exp("c", placements=("home",), namespace="ns", namespace_range=(0.5, 1.0)))
    s.create(exp("d", placements=("home",), namespace="other", namespace_range=(0.5, 1.0)))
    s.create(exp("e", placements=("check_in",)))
    s.start("a")
    for key in ("b", "d"):
        with pytest.raises(ExperimentError) as err:
            s.start(key)
        assert err.value.kind == "conflict" and "'a'" in err.value.message
        assert s.require(key).status is Status.DRAFT
    s.start("c")  # disjoint range of the same namespace
    s.start("e")  # another placement
    assert sorted(e.key for e in s.running()) == ["a", "c", "e"]
    s.close()


def test_concurrent_starts_let_one_through(store_url: tuple[str, str | None]) -> None:
    """Two stores (two service workers) start overlapping experiments at once: exactly one runs."""
    stores = [make(store_url), make(store_url)]
    stores[0].create(exp("x"))
    stores[0].create(exp("y"))
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def start(store: ExperimentStore, key: str) -> None:
        barrier.wait()
        try:
            store.start(key)
            results[key] = "started"
        except ExperimentError as e:
            results[key] = e.code

    threads = [threading.Thread(target=start, args=(st, k)) for st, k in zip(stores, ("x", "y"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["experiment_overlap", "started"], results
    assert len(stores[0].running()) == 1
    for st in stores:
        st.close()


def test_a_running_experiment_past_its_end_does_not_block(store_url: tuple[str, str | None]) -> None:
    now = [T0]
    s = make(store_url, now)
    s.create(exp("old", end=T0 + timedelta(days=1)))
    s.create(exp("new", end=T0 + timedelta(days=10)))
    s.start("old")
    with pytest.raises(ExperimentError):
        s.start("new")
    now[0] = T0 + timedelta(days=2)
    assert s.start("new").status is Status.RUNNING
    s.close()
