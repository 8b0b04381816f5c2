"""Keep the garbage collector's full collections off the request path.

A loaded model, its catalogue and the service's own state are millions of long-lived Python objects. CPython's
oldest generation is collected whenever the objects that survived into it since the last full collection
reach a quarter of it; under load each request's short-lived survivors (queued request records, caches) get
there every few seconds, and each full collection walks every object of the model: a stall of every
in-flight request (bench/README.md, ``make bench-serve``'s ranker section, measures it).

:func:`settle` collects once and then freezes what is left (:func:`gc.freeze`): frozen objects are never
walked again, so later full collections see only what requests allocated. The model holder runs it after
each model swap, the first load at start-up included. Frozen objects are still freed by reference counting;
only cycles wait, and a swap unfreezes first, so an old model's cycles are collected by the next swap at the
latest (by this one unless a request still held it).

:func:`set_young_threshold` sets how many allocations start a young collection. Each request allocates
thousands of objects, so at CPython's default (700) several young collections run during every request and
promote whatever is alive at that instant (the request's own working objects) into the older generations,
which then fill up and trigger full collections. A higher threshold lets those objects die by reference
counting first; a young collection costs what is alive, not what was allocated.
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger("serving.heap")


def set_young_threshold(allocations: int) -> None:
    """Start a young collection every ``allocations`` net allocations (the older generations' thresholds
    stay CPython's)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(allocations, older, oldest)


def settle() -> None:
    """Collect everything (the frozen objects included), then freeze the survivors."""
    started = time.perf_counter()
    gc.unfreeze()  # a previous model's objects become collectable again
    gc.collect()
    gc.freeze()
    logger.info(
        "heap settled: %d objects frozen in %.0f ms",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )
