"""The service as ``python -m serving`` serves it, plus a record of every garbage collection: ``python
bench/gc_probe.py`` (same environment, one worker). Benchmark scaffolding, not the product.

Each collection's generation, wall duration and the epoch time it started are kept in memory; at exit (the
launcher's SIGTERM) they are written as JSON to ``BENCH_GC_LOG`` (default ``gc-<pid>.json`` in the working
directory) and rewritten every second meanwhile, so a load generator's slow answers can be matched against
the collections that ran meanwhile. ``BENCH_GC_NO_FREEZE=1``: nothing is frozen after a model load (the
service before ``serving/heap.py``), for a side-by-side comparison.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn

from serving.__main__ import load_settings, prepare, server_options
from serving.app import create_app

_started: list[float] = [0.0, 0.0]
_records: list[tuple[int, float, float, int]] = []  # generation, epoch start, duration s, collected
# Young collections are many and short: counted per generation (n, total s, max s); only the older
# generations' and the long ones are kept one by one (the file is rewritten every second: keep it small).
_totals: dict[int, list[float]] = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0], _started[1] = time.time(), time.perf_counter()
    else:
        gen, took = int(info["generation"]), time.perf_counter() - _started[1]
        t = _totals[gen]
        t[0], t[1], t[2] = t[0] + 1, t[1] + took, max(t[2], took)
        if gen == 2 or took > 0.002:
            _records.append((gen, _started[0], took, int(info["collected"])))


# Never counted while serving: both counts walk every object (get_freeze_count() the frozen list), a stall of
# their own.
_tracked: list[int] = [-1]  # objects the collector tracks, at exit
_frozen: list[int] = [-1]  # objects frozen out of it, after each model load


def _dump() -> None:
    path = Path(os.environ.get("BENCH_GC_LOG") or f"gc-{os.getpid()}.json")
    summary = {
        "collections": [{"generation": g, "t": t, "ms": d * 1000, "collected": c} for g, t, d, c in _records],
        "per_generation": {
            str(g): {"n": int(n), "total_ms": tot * 1000, "max_ms": mx * 1000}
            for g, (n, tot, mx) in _totals.items()
        },
        "tracked_objects": _tracked[0],
        "frozen": _frozen[0],
        "threshold": gc.get_threshold(),
    }
    path.write_text(json.dumps(summary))


def _dump_every_second() -> None:
    while True:
        time.sleep(1.0)
        _dump()


def _at_exit() -> None:
    _tracked[0] = len(gc.get_objects())
    _dump()


def main() -> None:
    import serving.heap

    if os.environ.get("BENCH_GC_NO_FREEZE") == "1":  # the service before serving/heap.py, to compare
        serving.heap.settle = lambda: None
    else:
        settle = serving.heap.settle

        def settle_and_count() -> None:  # at a model load, off the request path
            settle()
            _frozen[0] = gc.get_freeze_count()

        serving.heap.settle = settle_and_count
    settings = load_settings()
    prepare(settings)
    gc.callbacks.append(_callback)
    atexit.register(_at_exit)
    threading.Thread(target=_dump_every_second, name="gc-probe", daemon=True).start()
    uvicorn.run(create_app(settings), **server_options(settings))


if __name__ == "__main__":
    main()
