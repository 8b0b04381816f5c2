"""Health, readiness and metrics."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from starlette.responses import PlainTextResponse, Response

from serving.api.deps import ServicesDep
from serving.api.schemas import HealthOut, ReadyOut
from serving.metrics import CONTENT_TYPE
from serving.responses import OrjsonResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the process answers")
async def healthz() -> Response:
    return OrjsonResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready: a check failed (named in `checks`)."}},
    summary="Readiness: a model is loaded, Redis (when configured) and the event log answer",
)
async def readyz(services: ServicesDep) -> Response:
    checks: dict[str, str] = {}
    ready = True
    model = services.holder.current
    if model is None:
        ready = False
        checks["model"] = "not loaded" + (
            f" ({services.holder.last_error})" if services.holder.last_error else ""
        )
    else:
        checks["model"] = f"{model.name} v{model.version} ({model.alias})"
    if services.redis is not None:
        if await anyio.to_thread.run_sync(services.redis.ping):
            checks["redis"] = "ok"
        else:
            ready = False
            checks["redis"] = f"unreachable ({services.redis.config.describe()})"
            services.metrics.record_dependency_error("redis", "readiness")
    enforcer = services.cap_enforcer
    if enforcer is not None and hasattr(enforcer, "status"):
        # Informational: with the cap store down the outage policy answers, so the service stays ready.
        status = enforcer.status()
        checks["caps"] = f"{status.get('store')}: " + (
            f"degraded ({status.get('last_error')})" if status.get("breaker_open") else "ok"
        )
    try:
        await anyio.to_thread.run_sync(services.event_log.ping)
        checks["event_log"] = "ok"
    except Exception as exc:
        ready = False
        checks["event_log"] = f"unreachable: {type(exc).__name__}"
        services.metrics.record_dependency_error("database", "event_log")
    return OrjsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus text of the whole service (all workers): requests and latency, suppressions by "
    "reason, events, cap store, served model",
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": 'recsys_http_requests_total{method="POST",'
                    'route="/v1/recommendations",status="200"} 1042.0\n'
                }
            }
        }
    },
)
async def metrics(services: ServicesDep) -> Response:
    runtime = services.experiments
    services.metrics.sync(
        services.holder,
        services.cap_enforcer,
        services.request_writer,
        runtime.snapshot.arms if runtime is not None else None,
    )
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
