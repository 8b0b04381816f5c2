"""The served model: loaded by registry alias, swapped atomically on reload, never left empty by a bad reload.

A request reads :attr:`ModelHolder.current` once and uses that snapshot (bundle + pipeline + version) to
the end, so a reload that happens meanwhile cannot mix two models in one answer. A reload builds the new
bundle and pipeline completely in a worker thread, then replaces the single reference; a failure leaves the
previous model serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

from serving import heap

if TYPE_CHECKING:
    from recsys.pipeline.pipeline import OfferPipeline
    from recsys.pipeline.scorer import Scorer

logger = logging.getLogger("serving.models")

# Load whatever version the alias points to now: (bundle, version info with .name .version .alias .run_id).
BundleLoader = Callable[[], tuple["Scorer", Any]]
# The version the alias points to now, without loading it (cheap; used by the poll). None = alias not set.
VersionResolver = Callable[[], str | None]
# Build the request pipeline around a freshly loaded bundle.
PipelineFactory = Callable[["Scorer"], "OfferPipeline"]
# offer id -> offer attributes (``family``, ``category``, ``exempt``...) of a bundle's catalogue.
OfferIndexer = Callable[["Scorer"], Mapping[str, Any]]


@dataclass(frozen=True)
class ServedModel:
    """One immutable snapshot of what the service serves."""

    bundle: Scorer
    pipeline: OfferPipeline
    offers: Mapping[str, Any]
    name: str
    version: str
    alias: str
    run_id: str | None
    loaded_at: float


@dataclass(frozen=True)
class ReloadOutcome:
    status: Literal["loaded", "unchanged", "failed"]
    version: str | None
    previous_version: str | None
    error: str | None = None
    seconds: float = 0.0


class ModelHolder:
    """Holds the current :class:`ServedModel` and performs reloads one at a time."""

    def __init__(
        self,
        loader: BundleLoader,
        build_pipeline: PipelineFactory,
        *,
        resolver: VersionResolver | None = None,
        index_offers: OfferIndexer | None = None,
        default_name: str = "",
        default_alias: str = "",
    ) -> None:
        self._loader = loader
        self._build_pipeline = build_pipeline
        self._resolver = resolver
        self._index_offers = index_offers
        self._default_name = default_name
        self._default_alias = default_alias
        self._current: ServedModel | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None
        self.reloads = 0
        self.failed_reloads = 0

    @property
    def current(self) -> ServedModel | None:
        """The model serving now (None until the first successful load)."""
        return self._current

    def _load_sync(self) -> ServedModel:
        bundle, info = self._loader()
        pipeline = self._build_pipeline(bundle)
        offers = self._index_offers(bundle) if self._index_offers is not None else {}
        return ServedModel(
            bundle=bundle,
            pipeline=pipeline,
            offers=offers,
            name=str(getattr(info, "name", self._default_name)),
            version=str(getattr(info, "version", "")),
            alias=str(getattr(info, "alias", self._default_alias) or self._default_alias),
            run_id=getattr(info, "run_id", None),
            loaded_at=time.time(),
        )

    async def resolve_version(self) -> str | None:
        """The version the alias points to now (None if unknown); never raises."""
        if self._resolver is None:
            return None
        try:
            return await anyio.to_thread.run_sync(self._resolver)
        except Exception as exc:  # registry unreachable: keep serving, say so
            logger.warning("could not resolve the served alias: %s", exc)
            return None

    async def reload(self, *, force: bool = False) -> ReloadOutcome:
        """Load the alias's current version and swap it in; ``force`` reloads even an unchanged version."""
        async with self._lock:
            previous = self._current
            prev_version = previous.version if previous else None
            if not force and previous is not None and self._resolver is not None:
                target = await self.resolve_version()
                if target is not None and target == prev_version:
                    return ReloadOutcome("unchanged", prev_version, prev_version)
            started = time.perf_counter()
            try:
                served = await anyio.to_thread.run_sync(self._load_sync)
            except Exception as exc:
                self.failed_reloads += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception(
                    "model load failed; %s",
                    f"still serving version {prev_version}" if previous else "service stays not ready",
                )
                return ReloadOutcome(
                    "failed",
                    prev_version,
                    prev_version,
                    error=self.last_error,
                    seconds=time.perf_counter() - started,
                )
            self._current = served  # the one atomic swap
            changed = previous is None or served.version != prev_version
            previous = None  # no reference of ours keeps the old model from being collected
            heap.settle()  # the old model collected, the new one frozen: no full collection walks it
            self.reloads += 1
            self.last_error = None
            elapsed = time.perf_counter() - started
            if changed:
                logger.info(
                    "serving %s version %s (alias %s), loaded in %.2fs (previous: %s)",
                    served.name,
                    served.version,
                    served.alias,
                    elapsed,
                    prev_version,
                )
            return ReloadOutcome("loaded", served.version, prev_version, seconds=elapsed)

    async def poll_forever(self, interval_s: float) -> None:
        """Reload whenever the alias points to a different version (or nothing is loaded yet)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                current = self._current
                if current is None:
                    await self.reload(force=True)
                    continue
                target = await self.resolve_version()
                if target is not None and target != current.version:
                    logger.info("alias moved to version %s; reloading", target)
                    await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poll must never die
                logger.exception("model poll failed")
