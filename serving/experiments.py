"""Running experiments inside the service: which arm a request belongs to and the pipeline that serves it.

:class:`ExperimentRuntime` keeps one immutable snapshot — the running experiments and, for every arm, the
model and pipeline that serve it — and swaps it whole when the store changes (a cheap fingerprint poll every
``experiments_poll_s``; the admin routes also refresh at once in the worker that took the call). Every model a
running experiment names is loaded before the snapshot that routes to it is swapped in; an arm whose model
cannot load keeps the experiment out of the snapshot (logged), so its members get the default model rather
than half an experiment.

The holdout is served by ``holdout_serving``: ``none`` answers an empty offer list, ``popularity`` serves
the experiment's ``holdout_model`` (a popularity-kind version: segment popularity, not personalised).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from recsys.experiments import (
    HOLDOUT,
    Assignment,
    Experiment,
    ExperimentStore,
    HoldoutServing,
    ModelRef,
    route,
)
from recsys.experiments.latency import LatencyHistogram
from serving.model_holder import OfferIndexer, ServedModel

if TYPE_CHECKING:
    from recsys.capping.types import CapEnforcer
    from recsys.pipeline.pipeline import OfferPipeline
    from recsys.pipeline.scorer import Scorer

logger = logging.getLogger("serving.experiments")

# ModelRef -> (bundle, version info with .name .version .alias .run_id)
VariantLoader = Callable[[ModelRef], tuple["Scorer", Any]]
# (bundle, objective, cap policy path or None) -> pipeline
VariantPipelineFactory = Callable[["Scorer", str, str | None], "OfferPipeline"]


@dataclass(frozen=True)
class Routed:
    """A request's experiment arm and what serves it (``model`` None: the holdout gets no offers)."""

    assignment: Assignment
    model: ServedModel | None


@dataclass(frozen=True)
class Snapshot:
    experiments: tuple[Experiment, ...] = ()
    arms: Mapping[tuple[str, str], ServedModel | None] = field(default_factory=dict)
    fingerprint: tuple[int, int] | None = None


class ExperimentRuntime:
    """See the module docstring. Thread-safe reads; refreshes run one at a time."""

    def __init__(
        self,
        store: ExperimentStore,
        load: VariantLoader,
        build_pipeline: VariantPipelineFactory,
        *,
        index_offers: OfferIndexer | None = None,
    ) -> None:
        self.store = store
        self._load = load
        self._build = build_pipeline
        self._index_offers = index_offers
        self._snapshot = Snapshot()
        self._lock = asyncio.Lock()
        self._bundles: dict[str, tuple[Scorer, Any]] = {}
        self._served: dict[tuple[str, str, str | None], ServedModel] = {}
        # Latency per (experiment, arm): recorded on the event loop, flushed from a thread.
        self.worker_id = uuid.uuid4().hex
        self._latency_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._latency_new: dict[tuple[str, str], LatencyHistogram] = {}
        self._latency_total: dict[tuple[str, str], LatencyHistogram] = {}
        self._latency_dirty: set[tuple[str, str]] = set()
        self.last_error: str | None = None

    def record_latency(self, experiment: str, variant: str, seconds: float) -> None:
        """Count one request's serving latency for its arm (stored by :meth:`flush_latency`)."""
        with self._latency_lock:
            h = self._latency_new.get((experiment, variant))
            if h is None:
                h = self._latency_new[(experiment, variant)] = LatencyHistogram()
            h.record_seconds(seconds)

    def flush_latency(self) -> None:
        """Store what this worker served since it started, per arm, in the experiment store (blocking: the
        poll calls it in a thread every ``experiments_poll_s``, the report before it reads, the shutdown)."""
        with self._flush_lock:
            with self._latency_lock:
                new, self._latency_new = self._latency_new, {}
            for key, h in new.items():
                self._latency_total.setdefault(key, LatencyHistogram()).add(h)
            self._latency_dirty.update(new)
            if not self._latency_dirty:
                return
            self.store.save_latency(
                self.worker_id, {k: self._latency_total[k] for k in self._latency_dirty}
            )  # on failure the arms stay dirty: the next flush stores them
            self._latency_dirty.clear()

    def latency_p99(self, experiment: str) -> dict[str, float | None]:
        """p99 latency (ms) per arm over every request any worker served it (blocking)."""
        try:
            self.flush_latency()
        except Exception:  # the stored figures (other workers', this one's last flush) still answer
            logger.exception("could not store this worker's latencies before the report")
        return {arm: h.percentile_ms(99) for arm, h in self.store.latency(experiment).items()}

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def route(self, placement: str, member_id: str, now: datetime) -> Routed | None:
        """The member's arm on this placement among the experiments running at ``now``, or None."""
        snap = self._snapshot
        if not snap.experiments:
            return None
        live = [
            e
            for e in snap.experiments
            if (e.start is None or e.start <= now) and (e.end is None or now < e.end)
        ]
        found = route(live, placement, member_id)
        if found is None:
            return None
        return Routed(found, snap.arms.get((found.experiment, found.variant)))

    def arm_enforcer(self, placement: str, member_id: str, at: datetime) -> CapEnforcer | None:
        """The cap enforcer of the experiment arm that serves this member on this placement at ``at``: an
        event is counted under the cap policy that chose the offer. None outside any arm (and for a holdout
        that serves nothing): the service's own enforcer applies."""
        routed = self.route(placement, member_id, at)
        if routed is None or routed.model is None:
            return None
        return routed.model.pipeline.cap_enforcer

    # --------------------------------------------------------------------------------------- loading
    def _served_model(self, ref: ModelRef, objective: str, cap_policy: str | None) -> ServedModel:
        key = (str(ref), objective, cap_policy)
        served = self._served.get(key)
        if served is not None:
            return served
        loaded = self._bundles.get(str(ref))
        if loaded is None:
            loaded = self._load(ref)
            self._bundles[str(ref)] = loaded
        bundle, info = loaded
        pipeline = self._build(bundle, objective, cap_policy)
        served = ServedModel(
            bundle=bundle,
            pipeline=pipeline,
            offers=self._index_offers(bundle) if self._index_offers is not None else {},
            name=str(getattr(info, "name", ref.name)),
            version=str(getattr(info, "version", ref.version or "")),
            alias=str(getattr(info, "alias", None) or ref.alias or ""),
            run_id=getattr(info, "run_id", None),
            loaded_at=time.time(),
        )
        self._served[key] = served
        return served

    def _build_snapshot(self, running: list[Experiment], fingerprint: tuple[int, int]) -> Snapshot:
        arms: dict[tuple[str, str], ServedModel | None] = {}
        kept: list[Experiment] = []
        used: set[tuple[str, str, str | None]] = set()
        for exp in running:
            try:
                exp_arms: dict[tuple[str, str], ServedModel | None] = {}
                for v in exp.variants:
                    exp_arms[(exp.key, v.key)] = self._served_model(
                        v.model.served(), v.objective.value, v.cap_policy
                    )
                    used.add((str(v.model.served()), v.objective.value, v.cap_policy))
                if exp.holdout > 0:
                    if exp.holdout_serving is HoldoutServing.POPULARITY and exp.holdout_model is not None:
                        exp_arms[(exp.key, HOLDOUT)] = self._served_model(
                            exp.holdout_model.served(), "expected_value", None
                        )
                        used.add((str(exp.holdout_model.served()), "expected_value", None))
                    else:
                        exp_arms[(exp.key, HOLDOUT)] = None
            except Exception as exc:
                self.last_error = f"experiment {exp.key}: {type(exc).__name__}: {exc}"
                logger.exception("experiment %s cannot be served; its members get the default model", exp.key)
                continue
            arms.update(exp_arms)
            kept.append(exp)
        # Forget pipelines and bundles no running experiment uses any more.
        self._served = {k: v for k, v in self._served.items() if k in used}
        refs = {k[0] for k in used}
        self._bundles = {k: v for k, v in self._bundles.items() if k in refs}
        return Snapshot(tuple(kept), arms, fingerprint)

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload the running experiments if the store changed; True when a new snapshot was swapped in."""
        async with self._lock:
            fingerprint = await anyio.to_thread.run_sync(self.store.fingerprint)
            if not force and fingerprint == self._snapshot.fingerprint:
                return False
            running = await anyio.to_thread.run_sync(self.store.running)
            snapshot = await anyio.to_thread.run_sync(self._build_snapshot, running, fingerprint)
            self._snapshot = snapshot
            logger.info("experiments: %s running", ", ".join(e.key for e in snapshot.experiments) or "none")
            return True

    async def poll_forever(
        self, interval_s: float, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        """Refresh every ``interval_s``; a failed poll is logged, told to ``on_error`` and retried."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
                await anyio.to_thread.run_sync(self.flush_latency)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll must never die
                logger.exception("experiment poll failed")
                if on_error is not None:
                    on_error(exc)


def with_objective(pipeline: OfferPipeline, objective: str) -> OfferPipeline:
    """The freshly built pipeline ranking by ``objective`` at every placement (its config is the only thing
    that differs; the service's per-placement objectives do not override a variant's)."""
    config = getattr(pipeline, "config", None)
    if config is not None and (
        getattr(config, "objective", objective) != objective or getattr(config, "ranking_objectives", None)
    ):
        pipeline.config = dataclasses.replace(config, objective=objective, ranking_objectives={})
    return pipeline
