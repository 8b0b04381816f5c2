"""The FastAPI application factory and its lifespan.

``create_app(settings)`` builds everything from settings; tests and benchmarks hand in what they want instead
(a bundle loader that needs no registry, their own event log, cap enforcer or member store). No module-level
app or settings: ``python -m serving`` and the tests each build their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from recsys.capping.types import CapEnforcer
from recsys.events import EventLog
from recsys.experiments import ExperimentStore, ModelRef
from recsys.experiments.report import OfflineEstimator
from recsys.requestlog.process_writer import ProcessRequestWriter
from recsys.requestlog.store import RequestLog, SqlRequestLog
from recsys.requestlog.writer import BatchingRequestWriter, BatchSettings, RequestWriter
from recsys.stores.member_store import MemberStore
from recsys.stores.redis import RedisClients, RedisUnavailable
from serving import heap
from serving.api.routes import admin, events, experiments, members, offers, ops, recommendations
from serving.bodylimit import BodyLimitMiddleware
from serving.bootstrap import bootstrap_profiles
from serving.config import Settings
from serving.errors import install_error_handlers
from serving.experiments import ExperimentRuntime, VariantLoader, with_objective
from serving.logs import RequestIdMiddleware
from serving.metrics import Metrics, MetricsMiddleware
from serving.model_holder import BundleLoader, ModelHolder, OfferIndexer, VersionResolver
from serving.offline import RegistryOfflineEstimator
from serving.openapi import install_openapi
from serving.pages import routes as pages
from serving.ratelimit import RateLimiter
from serving.services import Services
from serving.tracking import TrackingSigner

if TYPE_CHECKING:
    from recsys.pipeline.catalogue import CatalogueOffer
    from recsys.pipeline.pipeline import OfferPipeline
    from recsys.pipeline.scorer import Scorer
    from recsys.pipeline.types import PipelineConfig

logger = logging.getLogger("serving")

# (bundle, member_store, cap_enforcer) -> pipeline
PipelineFactory = Callable[["Scorer", MemberStore, CapEnforcer | None], "OfferPipeline"]

DESCRIPTION = """
Offers for an airline loyalty programme's members: upsell, ancillary and redemption offers that this
member can accept for this trip, ranked by expected value, explained, and frequency-capped.

* `POST /v1/recommendations` — what should this member see now?
* `POST /v1/events` — impressions, clicks, purchases and dismissals from the app (idempotent on
  `event_id`).
* `GET /v1/members/{id}/profile`, `GET /v1/members/{id}/caps` — status screen and cap state.
* `/healthz`, `/readyz`, `/metrics`, `POST /v1/admin/reload` — operations.

Every error has the shape
`{"error": {"code", "message", "fields": [{"field", "location", "message", "type"}]}}`.
"""


# ------------------------------------------------------------------------------------------------------------
# Default wiring from settings (each piece replaceable through create_app's keyword arguments)
# ------------------------------------------------------------------------------------------------------------


def registry_loader(settings: Settings) -> BundleLoader:
    def load() -> tuple[Any, Any]:
        import mlflow
        from recsys.registry import load_bundle

        # models:/ URIs are resolved against the process-wide registry URI: point it at ours.
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        return load_bundle(settings.mlflow_tracking_uri, settings.model_name, settings.model_alias)

    return load


def registry_resolver(settings: Settings) -> VersionResolver:
    def resolve() -> str | None:
        from recsys.registry import alias_version

        return alias_version(settings.mlflow_tracking_uri, settings.model_name, settings.model_alias)

    return resolve


def build_request_writer(
    settings: Settings, log: RequestLog, metrics: Metrics, *, log_handed_in: bool = False
) -> RequestWriter:
    """The request writer the settings choose. A log handed in to :func:`create_app` is an object a child
    process cannot open: it always gets the thread writer."""
    batch = BatchSettings(
        batch_size=settings.request_log_batch_size,
        flush_interval_s=settings.request_log_flush_interval_s,
        max_queue=max(settings.request_log_max_queue, settings.request_log_batch_size),
    )
    if settings.request_log_writer == "process" and not log_handed_in:
        url, schema = settings.request_log_target()
        return ProcessRequestWriter(url, batch, schema=schema, observer=metrics)
    return BatchingRequestWriter(log, batch, observer=metrics)


class RegistryCatalog:
    """:class:`recsys.experiments.ModelCatalog` over the MLflow registry."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def _info(self, ref: ModelRef) -> Any:
        from recsys.registry import get_version, version_info

        if ref.version is not None:
            return version_info(self.tracking_uri, ref.name, ref.version)
        return get_version(self.tracking_uri, ref.name, ref.alias or "")

    def check(self, ref: ModelRef) -> str | None:
        from recsys.registry import RegistryError

        try:
            info = self._info(ref)
        except RegistryError as exc:
            return f"cannot look up model {ref} in the registry: {exc}"
        if info is None:
            what = f"alias {ref.alias!r}" if ref.alias is not None else f"version {ref.version!r}"
            return f"model {ref.name!r} has no {what} in the registry"
        return None

    def kind(self, ref: ModelRef) -> str | None:
        info = self._info(ref)
        return info.kind if info is not None else None

    def resolve(self, ref: ModelRef) -> str | None:
        info = self._info(ref)
        return str(info.version) if info is not None else None


def registry_variant_loader(settings: Settings) -> VariantLoader:
    def load(ref: ModelRef) -> tuple[Any, Any]:
        import mlflow
        from recsys.registry import load_bundle

        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(settings.mlflow_tracking_uri)
        if ref.version is not None:
            return load_bundle(settings.mlflow_tracking_uri, ref.name, version=ref.version)
        return load_bundle(settings.mlflow_tracking_uri, ref.name, ref.alias or "")

    return load


def reuse_served(holder: ModelHolder, load: VariantLoader) -> VariantLoader:
    """A variant naming the version the service serves shares its loaded bundle (one copy in memory); another
    version is loaded and frozen out of full collections, as the served model is (serving/heap.py)."""

    def loader(ref: ModelRef) -> tuple[Any, Any]:
        current = holder.current
        if current is not None and (current.name, current.version) == (ref.name, ref.version):
            return current.bundle, current
        loaded = load(ref)
        heap.settle()
        return loaded

    return loader


def check_cap_policy(path: str) -> str | None:
    """None when the cap policy file loads; else what is wrong with it."""
    from recsys.capping.policy import PolicyError, load_policy

    if not Path(path).is_file():
        return f"cap policy file {path!r} not found"
    try:
        load_policy(path)
    except (PolicyError, OSError, ValueError) as exc:
        return f"cap policy {path!r} is invalid: {exc}"
    return None


def build_experiment_store(settings: Settings) -> ExperimentStore:
    return ExperimentStore(
        settings.experiments_database_url or settings.database_url,
        schema=settings.database_schema,
        catalog=RegistryCatalog(settings.mlflow_tracking_uri),
        cap_policy_check=check_cap_policy,
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The pipeline's configuration from the service settings (the ranking objective per placement, the
    exploration share)."""
    from recsys.pipeline.types import PipelineConfig, parse_ranking_objectives

    default, per_placement = parse_ranking_objectives(settings.ranking_objective)
    return PipelineConfig(
        objective=default,
        ranking_objectives=per_placement,
        blend_exponent=settings.ranking_blend_exponent,
        exploration_share=settings.exploration_share,
        exploration_seed=settings.exploration_seed,
    )


def settings_pipeline_factory(settings: Settings) -> PipelineFactory:
    config = pipeline_config(settings)

    def factory(bundle: Scorer, member_store: MemberStore, cap_enforcer: CapEnforcer | None) -> OfferPipeline:
        from recsys.data.network import load_network
        from recsys.pipeline.pipeline import OfferPipeline

        return OfferPipeline(
            bundle, member_store, cap_enforcer=cap_enforcer, config=config, network=load_network()
        )

    return factory


def catalogue_index(bundle: Scorer) -> dict[str, CatalogueOffer]:
    """offer id -> catalogue offer (family, category, exempt...) of a bundle."""
    from recsys.pipeline.catalogue import Catalogue

    catalogue = Catalogue(bundle.offers)
    return {o.offer_id: o for o in catalogue.offers}


def default_airports() -> frozenset[str]:
    from recsys.data.network import load_network

    return frozenset(load_network().iata.tolist())


def build_redis_clients(settings: Settings) -> RedisClients | None:
    """The worker's clients of ``RECSYS_REDIS_URL``, checked at start-up (an unknown scheme, a missing TLS
    file, an unreachable Redis or cluster, a cluster with uncovered slots: an error naming the setting)."""
    config = settings.redis_config()
    return RedisClients(config, check=True) if config is not None else None


def build_cap_enforcer(settings: Settings, redis: RedisClients | None = None) -> CapEnforcer:
    from recsys.capping.api import PolicyHolder, build_enforcer

    if not settings.capping_policy_path.exists():
        raise FileNotFoundError(
            f"cap policy {settings.capping_policy_path} not found (cwd {Path.cwd()}); "
            "set RECSYS_CAPPING_POLICY_PATH or RECSYS_CAPPING_ENABLED=false"
        )
    holder = PolicyHolder(settings.capping_policy_path, poll_interval_s=settings.capping_policy_poll_s)
    return build_enforcer(
        settings.redis_url,
        holder,
        key_prefix=settings.caps_key_prefix,
        timeout_ms=settings.redis_timeout_ms,
        clients=redis,
    )


def build_member_store(settings: Settings, redis: RedisClients | None = None) -> MemberStore:
    from recsys.stores.member_store import build_member_store as build

    return build(settings.redis_url, clients=redis, prefix=settings.members_key_prefix)


# ------------------------------------------------------------------------------------------------------------
# Factory
# ------------------------------------------------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    *,
    bundle_loader: BundleLoader | None = None,
    version_resolver: VersionResolver | None = None,
    pipeline_factory: PipelineFactory | None = None,
    index_offers: OfferIndexer | None = None,
    member_store: MemberStore | None = None,
    cap_enforcer: CapEnforcer | None = None,
    event_log: EventLog | None = None,
    request_log: RequestLog | None = None,
    airports: frozenset[str] | None = None,
    clock: Callable[[], datetime] | None = None,
    experiment_store: ExperimentStore | None = None,
    variant_loader: VariantLoader | None = None,
    offline_estimator: OfflineEstimator | None = None,
) -> FastAPI:
    """Build the service. Anything not handed in is built from ``settings`` in the lifespan.

    ``bundle_loader``/``version_resolver`` replace the MLflow registry (loader: ``() -> (bundle, info)``
    where ``info`` has ``name``, ``version``, ``alias``; resolver: ``() -> version | None``). Components
    handed in are not closed by the app (the request writer built around a handed-in ``request_log`` is
    drained at shutdown all the same).
    ``variant_loader`` (``ModelRef -> (bundle, info)``) loads the models experiments name (default: the
    registry).
    """
    settings = settings or Settings()
    metrics = Metrics()
    heap.set_young_threshold(settings.gc_young_threshold)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        closers: list[Callable[[], Any]] = []
        async_closers: list[Callable[[], Awaitable[None]]] = []
        log = event_log
        if log is None:
            log = EventLog(settings.database_url, schema=settings.database_schema)
            closers.append(log.close)
        writer: RequestWriter | None = None
        rlog: RequestLog | None = None
        if settings.request_log_enabled:
            rlog = request_log
            if rlog is None:
                url, schema = settings.request_log_target()
                rlog = SqlRequestLog(url, schema=schema)
                closers.append(rlog.close)
            writer = build_request_writer(settings, rlog, metrics, log_handed_in=request_log is not None)
            closers.append(writer.close)  # closers run in reverse: the writer drains before its log closes
        redis = build_redis_clients(settings)  # one set of clients per worker, checked before anything else
        if redis is not None:
            closers.append(redis.close)
            async_closers.append(redis.aclose)
            try:  # this loop's asyncio client, ready (a cluster's topology) before the first request's budget
                await redis.aconnect()
            except RedisUnavailable as exc:
                logger.error("Redis did not answer at start-up (%s); the stores' outage policy applies", exc)
        store = member_store
        if store is None:
            store = build_member_store(settings, redis)
            closers.append(store.close)
            async_closers.append(store.aclose)
        enforcer = cap_enforcer
        if enforcer is None and settings.capping_enabled:
            enforcer = build_cap_enforcer(settings, redis)
            closers.append(enforcer.close)
            async_closers.append(enforcer.aclose)
        factory = pipeline_factory or settings_pipeline_factory(settings)
        holder = ModelHolder(
            bundle_loader or registry_loader(settings),
            lambda bundle: factory(bundle, store, enforcer),
            resolver=version_resolver
            if bundle_loader is not None
            else (version_resolver or registry_resolver(settings)),
            index_offers=index_offers or catalogue_index,
            default_name=settings.model_name,
            default_alias=settings.model_alias,
        )
        if settings.tracking_secret is not None:
            key = settings.tracking_secret.get_secret_value().encode()
        else:
            key = secrets.token_bytes(32)
            if settings.workers > 1:
                logger.warning(
                    "RECSYS_TRACKING_SECRET is unset with %d workers: tracking tokens signed by one "
                    "worker will not verify in another; set it",
                    settings.workers,
                )
        limiter = None
        if settings.rate_limit is not None and redis is not None:
            limiter = RateLimiter(
                settings.rate_limit,
                redis,
                key_prefix=settings.rate_limit_key_prefix,
                client_header=settings.rate_limit_client_header,
            )
        services = Services(
            settings=settings,
            holder=holder,
            event_log=log,
            member_store=store,
            cap_enforcer=enforcer,
            airports=airports if airports is not None else default_airports(),
            signer=TrackingSigner(key),
            metrics=metrics,
            clock=clock or (lambda: datetime.now(UTC)),
            redis=redis,
            request_writer=writer,
            rate_limiter=limiter,
            closers=closers,
        )
        exp_store = experiment_store
        if exp_store is None:
            exp_store = build_experiment_store(settings)
            closers.append(exp_store.close)
        variant_enforcers: dict[str, CapEnforcer] = {}

        def enforcer_for(cap_policy: str | None) -> CapEnforcer | None:
            if cap_policy is None or not settings.capping_enabled or enforcer is None:
                return enforcer
            found = variant_enforcers.get(cap_policy)
            if found is None:
                from recsys.capping.api import PolicyHolder

                # The arm's policy over the default enforcer's counter store: both count the same events.
                found = variant_enforcers[cap_policy] = enforcer.with_policy(
                    PolicyHolder(Path(cap_policy), poll_interval_s=settings.capping_policy_poll_s)
                )
            return found

        def variant_pipeline(bundle: Scorer, objective: str, cap_policy: str | None) -> OfferPipeline:
            # A fresh pipeline per arm: its config (the objective) is its own.
            return with_objective(factory(bundle, store, enforcer_for(cap_policy)), objective)

        runtime = ExperimentRuntime(
            exp_store,
            reuse_served(holder, variant_loader or registry_variant_loader(settings)),
            variant_pipeline,
            index_offers=index_offers or catalogue_index,
        )
        closers.append(runtime.flush_latency)  # closers run in reverse: before the store closes
        services.experiment_store = exp_store
        services.experiments = runtime
        services.request_log = rlog if rlog is not None else request_log
        services.offline_estimator = offline_estimator or RegistryOfflineEstimator(
            settings.mlflow_tracking_uri
        )
        app.state.services = services
        if member_store is None:
            await anyio.to_thread.run_sync(
                bootstrap_profiles, store, settings.data_dir, settings.bootstrap_profiles, redis
            )
        outcome = await holder.reload(force=True)
        if outcome.status == "failed":
            logger.error("no model loaded at start-up (%s); /readyz is 503 until one loads", outcome.error)
        metrics.sync(holder, enforcer, writer)
        try:
            await runtime.refresh(force=True)
        except Exception:
            logger.exception("could not load the running experiments at start-up; the poll retries")
        tasks: list[asyncio.Task[None]] = []
        if settings.experiments_poll_s > 0:
            tasks.append(
                asyncio.create_task(
                    runtime.poll_forever(
                        settings.experiments_poll_s,
                        lambda _exc: metrics.record_dependency_error("database", "experiments"),
                    ),
                    name="experiments-poll",
                )
            )
        if settings.reload_interval_s > 0:
            tasks.append(
                asyncio.create_task(holder.poll_forever(settings.reload_interval_s), name="model-poll")
            )
        if metrics.multiprocess:
            # Scrapes answered by another worker read this worker's model and cap-store state from its files.
            tasks.append(
                asyncio.create_task(
                    metrics.sync_forever(holder, enforcer, writer, lambda: runtime.snapshot.arms),
                    name="metrics-sync",
                )
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for aclose in async_closers:
                try:
                    await aclose()
                except Exception:
                    logger.exception("error while closing %s", aclose)
            for close in reversed(closers):
                try:
                    close()
                except Exception:
                    logger.exception("error while closing %s", close)

    app = FastAPI(
        title="Loyalty offers",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by install_openapi
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(recommendations.router)
    app.include_router(events.router)
    app.include_router(members.router)
    app.include_router(offers.router)
    app.include_router(admin.router)
    app.include_router(experiments.router)
    app.include_router(pages.router)
    app.include_router(ops.router)
    install_openapi(app, clock or (lambda: datetime.now(UTC)))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # The request id is set before anything but CORS runs (a 413 is logged with its id too).
    app.add_middleware(RequestIdMiddleware, access_log=settings.access_log)
    if settings.cors_allow_origins:
        # Outermost, so that refusals (413, 429...) carry the headers too. No credentials: the API's keys
        # travel in headers, and the marketer pages' session cookie stays same-site.
        headers = ["content-type", "x-api-key", "x-debug-token", "x-request-id"]
        if settings.rate_limit_client_header:
            headers.append(settings.rate_limit_client_header.lower())
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=headers,
            expose_headers=["retry-after", "x-request-id"],
            max_age=600,
        )
    return app
