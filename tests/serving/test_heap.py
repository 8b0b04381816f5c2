"""The served model is frozen out of the garbage collector's full collections, and a swap still frees the
previous model's reference cycles (serving/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from serving.app import create_app
from serving.config import Settings
from serving.model_holder import ModelHolder


@dataclass
class Info:
    name: str
    version: str
    alias: str = "champion"
    run_id: str | None = None


class Bundle:
    """A stand-in for a loaded model: a reference cycle (as real models have), so only the cyclic collector
    can free it."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it was


def holder(versions: list[str]) -> tuple[ModelHolder, list[weakref.ref[Bundle]]]:
    loaded: list[weakref.ref[Bundle]] = []

    def load() -> tuple[Any, Info]:
        bundle = Bundle(versions[len(loaded)])
        loaded.append(weakref.ref(bundle))
        return bundle, Info("m", bundle.version)

    return ModelHolder(load, lambda bundle: object()), loaded  # type: ignore[arg-type,return-value]


def walked_by_collections(obj: object) -> bool:
    """Whether a collection of any generation would walk ``obj`` (frozen objects are in none)."""
    return any(o is obj for g in range(3) for o in gc.get_objects(generation=g))


def test_a_loaded_model_is_frozen_out_of_full_collections() -> None:
    h, _ = holder(["1"])
    assert asyncio.run(h.reload(force=True)).status == "loaded"
    served = h.current
    assert served is not None
    assert gc.is_tracked(served.bundle)
    assert not walked_by_collections(served.bundle)
    assert gc.get_freeze_count() > 0
    fresh = Bundle("after")  # created after the load: collected as usual
    assert walked_by_collections(fresh)


def test_a_swap_frees_the_previous_models_cycles() -> None:
    h, loaded = holder(["1", "2"])
    assert asyncio.run(h.reload(force=True)).status == "loaded"
    assert loaded[0]() is not None
    assert asyncio.run(h.reload(force=True)).status == "loaded"
    assert loaded[0]() is None  # frozen with the first load, collected by the swap
    current = h.current
    assert current is not None and current.version == "2" and loaded[1]() is current.bundle
    assert not walked_by_collections(current.bundle)


def test_an_experiment_variants_own_model_is_frozen_too() -> None:
    from recsys.experiments.model import ModelRef
    from serving.app import reuse_served

    h, _ = holder(["1"])
    assert asyncio.run(h.reload(force=True)).status == "loaded"
    served = h.current
    assert served is not None

    def load(ref: ModelRef) -> tuple[Any, Info]:
        return Bundle(str(ref.version)), Info(ref.name, str(ref.version))

    loader = reuse_served(h, load)
    assert loader(ModelRef("m", version="1"))[0] is served.bundle  # the served version: shared, not loaded
    variant, info = loader(ModelRef("m", version="2"))
    assert isinstance(variant, Bundle) and info.version == "2"
    assert not walked_by_collections(variant)


def test_the_young_threshold_setting_reaches_the_collector() -> None:
    before = gc.get_threshold()
    try:
        create_app(Settings(gc_young_threshold=5000))
        assert gc.get_threshold() == (5000, before[1], before[2])
    finally:
        gc.set_threshold(*before)
