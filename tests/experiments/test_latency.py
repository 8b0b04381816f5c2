"""Arm latencies in the experiment store (SQLite and the real PostgreSQL): every worker's histogram is kept,
the report's p99 is over all of them, and a worker storing again replaces its own row."""

from __future__ import annotations

import numpy as np

from recsys.experiments import ExperimentStore
from recsys.experiments.latency import LatencyHistogram
from tests.experiments.test_store import store_url  # noqa: F401 - the SQLite / PostgreSQL fixture


def histogram(seconds: np.ndarray) -> LatencyHistogram:
    h = LatencyHistogram()
    for s in seconds:
        h.record_seconds(float(s))
    return h


def test_p99_over_every_workers_requests(store_url: tuple[str, str | None]) -> None:  # noqa: F811
    url, schema = store_url
    rng = np.random.default_rng(7)
    fast = rng.lognormal(np.log(0.004), 0.3, 4000)  # one worker: ~4 ms
    slow = rng.lognormal(np.log(0.030), 0.3, 1000)  # another: ~30 ms, a fifth of the requests
    store = ExperimentStore(url, schema=schema)
    try:
        store.save_latency("worker-a", {("exp", "control"): histogram(fast)})
        store.save_latency(
            "worker-b", {("exp", "control"): histogram(slow), ("exp", "treat"): histogram(fast)}
        )
        store.save_latency("worker-c", {("other", "control"): histogram(slow)})
    finally:
        store.close()
    reopened = ExperimentStore(url, schema=schema)  # durable: a new process reads what the workers stored
    try:
        got = reopened.latency("exp")
        assert set(got) == {"control", "treat"}
        assert got["control"].count == 5000 and got["treat"].count == 4000
        want = float(np.percentile(np.concatenate([fast, slow]) * 1e3, 99))  # numpy, on the raw values
        p99 = got["control"].percentile_ms(99)
        assert p99 is not None and abs(p99 - want) / want < 0.02, (p99, want)
        # Either worker's own p99 is far off the pooled one: the pooled figure needs both.
        assert histogram(fast).percentile_ms(99) < 0.5 * want  # type: ignore[operator]

        # A worker storing again replaces its row (cumulative since it started), never adds it twice.
        reopened.save_latency("worker-a", {("exp", "control"): histogram(fast[:10])})
        assert reopened.latency("exp")["control"].count == 1010
        assert reopened.latency("nothing-served") == {}
    finally:
        reopened.close()
