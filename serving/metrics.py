"""Service metrics on ``prometheus_client``, exposed at ``/metrics`` for the whole service, not one worker.

One worker (the default): the metrics live in a :class:`CollectorRegistry` of the app's own (``create_app``
may run many times in one process; the global registry would refuse the second set of names).

Several workers (``RECSYS_WORKERS > 1``): ``python -m serving`` creates a private directory and sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start (see :func:`multiprocess_dir`); every worker then
writes its values to memory-mapped files there, and ``/metrics`` - whichever worker answers - merges all of
them with ``MultiProcessCollector``. Counters and histograms add up over the workers (including workers
that have exited); each gauge has a ``multiprocess_mode`` saying how the workers' values combine.

State owned by other components (the model holder's reload counts, the cap store's breaker and its
suppression counts) is copied into the metrics by :meth:`Metrics.sync`: at every scrape for the answering
worker and, with several workers, once a second in each worker (:meth:`Metrics.sync_forever`), so that a
scrape answered by one worker also sees the others' state.

Label values are bounded: route templates (never raw paths), stage and reason codes, offer families, event
types.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import shutil
import tempfile
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from recsys.capping.types import CapEnforcer
    from recsys.pipeline.types import SuppressedCandidate
    from recsys.requestlog.writer import RequestWriter
    from serving.model_holder import ModelHolder, ServedModel

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# The API answers in ~1-20 ms; the upper buckets catch stalls (Redis timeouts, a reload, GC).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# (dependency, component) of every failed call the service counts.
KNOWN_DEPENDENCY_ERRORS = (
    ("redis", "caps"),
    ("redis", "member_store"),
    ("redis", "readiness"),
    ("database", "event_log"),
    ("database", "request_log"),
    ("database", "experiments"),
)


def multiprocess_enabled() -> bool:
    """Whether prometheus_client stores values in the shared directory (decided when it was imported)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh private ``PROMETHEUS_MULTIPROC_DIR`` for the worker processes started inside the block.

    Must be entered before the workers are started (they read it when importing prometheus_client); the
    directory and its files are removed on exit. Fresh every time: files left by an earlier run would be
    added to this run's counts.
    """
    path = tempfile.mkdtemp(prefix="recsys-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


class Metrics:
    """The service's metrics (one instance per app)."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "recsys_http_requests_total",
            "HTTP requests by method, route template and status",
            ("method", "route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "recsys_http_request_seconds",
            "HTTP request latency (seconds) by method and route template",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.suppressions = Counter(
            "recsys_suppressed_candidates_total",
            "Candidates suppressed by pipeline stage and reason code",
            ("stage", "reason"),
            registry=r,
        )
        self.offers_served = Counter(
            "recsys_offers_served_total",
            "Offers served by family and placement",
            ("family", "placement"),
            registry=r,
        )
        self.experiment_requests = Counter(
            "recsys_experiment_requests_total",
            "Recommendations answered by a running experiment's arm",
            ("experiment", "variant"),
            registry=r,
        )
        self.experiment_events = Counter(
            "recsys_experiment_events_total",
            "New events (impression, click, purchase, dismiss) of members in a running experiment, by the "
            "arm they are assigned to",
            ("experiment", "variant", "event_type"),
            registry=r,
        )
        self.experiment_model_version = Gauge(
            "recsys_experiment_model_version",
            "Registry version each arm of a running experiment serves (0 once the arm is no longer served)",
            ("experiment", "variant", "model"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dependency_errors = Counter(
            "recsys_dependency_errors_total",
            "Failed calls to Redis or the database, by dependency and component (a cap-store call skipped "
            "by its open breaker counts too: the answer went without the store)",
            ("dependency", "component"),
            registry=r,
        )
        self.events = Counter(
            "recsys_events_total", "Events by type and outcome", ("event_type", "outcome"), registry=r
        )
        self.cap_degraded_total = Counter(
            "recsys_cap_degraded_total",
            "Recommendations answered by the cap-store outage policy, by mode",
            ("mode",),
            registry=r,
        )
        self.cold_start = Counter(
            "recsys_cold_start_total", "Recommendations for members without a profile", registry=r
        )
        self.start_time = Gauge(
            "recsys_start_time_seconds",
            "Unix time the worker process started serving (one series per live worker with several)",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.model_loaded = Gauge(
            "recsys_model_loaded",
            "1 when a model is loaded (with several workers: in every live worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_version = Gauge(
            "recsys_model_version",
            "Registry version of the served model (with several workers: the highest served)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_reloads = Counter("recsys_model_reloads_total", "Successful model loads", registry=r)
        self.model_reload_failures = Counter(
            "recsys_model_reload_failures_total", "Failed model loads", registry=r
        )
        self.cap_breaker_open = Gauge(
            "recsys_cap_store_breaker_open",
            "1 when the cap store's circuit breaker is open (with several workers: in any live worker)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cap_store_failures = Gauge(
            "recsys_cap_store_failures_total",
            "Consecutive failed cap-store calls (reset when the store answers; summed over live workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cap_suppressions = Counter(
            "recsys_cap_suppressions_total",
            "Frequency-cap suppressions by reason code (and degraded:<mode> per degraded call)",
            ("reason",),
            registry=r,
        )
        self.request_log_written = Counter(
            "recsys_request_log_written_total", "Request records committed to the request log", registry=r
        )
        self.request_log_dropped = Counter(
            "recsys_request_log_dropped_total",
            "Request records lost, by reason (queue_full, write_failed, closed, invalid, writer_died)",
            ("reason",),
            registry=r,
        )
        self.request_log_lag = Histogram(
            "recsys_request_log_write_lag_seconds",
            "Seconds from a recommend answer to its record's commit (oldest record of each batch)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.request_log_pending = Gauge(
            "recsys_request_log_pending",
            "Request records waiting in memory to be written (summed over live workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.start_time.set(time.time())
        # Known label sets exported at 0 from the start: an alert on rate() needs the series to exist.
        for dependency, component in KNOWN_DEPENDENCY_ERRORS:
            self.dependency_errors.labels(dependency, component)
        for mode in ("fail_open", "fail_closed"):
            self.cap_degraded_total.labels(mode)
        for reason in ("queue_full", "write_failed", "closed", "invalid", "writer_died"):
            self.request_log_dropped.labels(reason)
        # This worker's degraded answers by mode, readable in-process (bench/profile_recommend.py).
        self.cap_degraded: Tally[str] = Tally()
        # Label children cached by label values: ``labels()`` costs more than the increment itself.
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._suppression_children: dict[tuple[str, str], Any] = {}
        self._family_children: dict[tuple[str, str], Any] = {}
        self._arm_children: dict[tuple[str, str], Any] = {}
        self._exported_arms: set[tuple[str, str, str]] = set()
        # What sync() has already copied from the holder and the cap enforcer.
        self._synced_reloads = 0
        self._synced_failures = 0
        self._synced_cap_counts: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ hot path

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        _child(self._request_children, self.requests, (method, route, status)).inc()
        _child(self._latency_children, self.latency, (method, route)).observe(seconds)

    def record_suppressed(self, suppressed: Iterable[SuppressedCandidate]) -> None:
        """One increment per distinct (stage, reason) of a request's suppressed candidates."""
        for key, n in Tally((s.stage, s.reason) for s in suppressed).items():
            _child(self._suppression_children, self.suppressions, key).inc(n)

    def record_served(self, families: Iterable[str], placement: str) -> None:
        for family, n in Tally(families).items():
            _child(self._family_children, self.offers_served, (family, placement)).inc(n)

    def record_arm(self, experiment: str, variant: str) -> None:
        _child(self._arm_children, self.experiment_requests, (experiment, variant)).inc()

    def record_cap_degraded(self, mode: str) -> None:
        self.cap_degraded[mode] += 1
        self.cap_degraded_total.labels(mode).inc()
        self.dependency_errors.labels("redis", "caps").inc()

    def record_dependency_error(self, dependency: str, component: str) -> None:
        """One failed call to ``dependency`` (``redis``, ``database``) made by ``component``."""
        self.dependency_errors.labels(dependency, component).inc()

    def record_events(
        self,
        accepted: Iterable[tuple[str, tuple[str, str] | None]],
        duplicates: int,
    ) -> None:
        """``accepted``: each new event's type and its member's experiment arm (or None)."""
        by_type: Tally[str] = Tally()
        by_arm: Tally[tuple[str, str, str]] = Tally()
        for event_type, arm in accepted:
            by_type[event_type] += 1
            if arm is not None:
                by_arm[(*arm, event_type)] += 1
        for event_type, n in by_type.items():
            self.events.labels(event_type, "accepted").inc(n)
        for key, n in by_arm.items():
            self.experiment_events.labels(*key).inc(n)
        self.events.labels("any", "duplicate").inc(duplicates)

    # The request log writer's observer (called from its thread; prometheus_client is thread-safe).
    def written(self, n: int, lag_s: float) -> None:
        self.request_log_written.inc(n)
        self.request_log_lag.observe(lag_s)

    def failed(self, n: int) -> None:
        self.dependency_errors.labels("database", "request_log").inc()

    def dropped(self, n: int, reason: str) -> None:
        self.request_log_dropped.labels(reason).inc(n)

    # ---------------------------------------------------------------------------- state of other parts

    def sync(
        self,
        holder: ModelHolder,
        enforcer: CapEnforcer | None,
        request_writer: RequestWriter | None = None,
        arms: Mapping[tuple[str, str], ServedModel | None] | None = None,
    ) -> None:
        """Copy the model holder's, the cap enforcer's, the request writer's and the running experiments'
        state of this worker into the metrics (``arms``: (experiment, variant) -> served model or None)."""
        if request_writer is not None:
            self.request_log_pending.set(float(request_writer.pending))
        if arms is not None:
            self._sync_arms(arms)
        model = holder.current
        self.model_loaded.set(1.0 if model is not None else 0.0)
        if model is not None and str(model.version).isdigit():
            self.model_version.set(float(model.version))
        if holder.reloads > self._synced_reloads:
            self.model_reloads.inc(holder.reloads - self._synced_reloads)
            self._synced_reloads = holder.reloads
        if holder.failed_reloads > self._synced_failures:
            self.model_reload_failures.inc(holder.failed_reloads - self._synced_failures)
            self._synced_failures = holder.failed_reloads
        if enforcer is None:
            return
        status = enforcer.status() if hasattr(enforcer, "status") else {}
        self.cap_breaker_open.set(1.0 if status.get("breaker_open") else 0.0)
        self.cap_store_failures.set(float(status.get("failures") or 0))
        for reason, n in enforcer.counters.snapshot().items():
            done = self._synced_cap_counts.get(reason, 0)
            # Touch every reason (inc(0)) so that it is exported from the first suppression on.
            if n >= done:
                self.cap_suppressions.labels(reason).inc(n - done)
                self._synced_cap_counts[reason] = n

    def _sync_arms(self, arms: Mapping[tuple[str, str], ServedModel | None]) -> None:
        now: set[tuple[str, str, str]] = set()
        for (experiment, variant), served in arms.items():
            if served is None or not str(served.version).isdigit():
                continue  # the holdout without a model serves nothing
            key = (experiment, variant, str(served.name))
            self.experiment_model_version.labels(*key).set(float(served.version))
            now.add(key)
        for key in self._exported_arms - now:
            # An arm no longer served: 0 (a removed series would linger in the other workers' files).
            self.experiment_model_version.labels(*key).set(0.0)
        self._exported_arms |= now

    async def sync_forever(
        self,
        holder: ModelHolder,
        enforcer: CapEnforcer | None,
        request_writer: RequestWriter | None = None,
        arms: Callable[[], Mapping[tuple[str, str], ServedModel | None]] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        """With several workers: keep this worker's copied state fresh for scrapes other workers answer."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.sync(holder, enforcer, request_writer, arms() if arms is not None else None)
            except Exception:
                logger.exception("metrics sync failed")

    # -------------------------------------------------------------------------------------------- scrape

    def render(self) -> bytes:
        """Prometheus text of the whole service (all workers' files with several)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        path = os.environ[MULTIPROC_ENV]
        _forget_dead_workers(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        return generate_latest(registry)


def _child(cache: dict[Any, Any], metric: Any, key: tuple[Any, ...]) -> Any:
    """``metric.labels(*key)``, cached in ``cache`` (the lookup costs more than the increment itself)."""
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*key)
    return child


def _forget_dead_workers(path: str) -> None:
    """Drop the live-gauge files of workers that have exited (uvicorn restarts a dead worker but tells no
    one); their counters stay, they still count."""
    pids = set()
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        with contextlib.suppress(ValueError):
            pids.add(int(os.path.basename(f).rsplit("_", 1)[1].removesuffix(".db")))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)
        except PermissionError:
            pass


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task/stream overhead) counting requests by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.record_request(scope.get("method", ""), path, status, time.perf_counter() - started)
