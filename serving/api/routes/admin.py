"""The operators' admin paths (X-Api-Key: RECSYS_ADMIN_API_KEY): model and cap-policy reloads."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.api.deps import ServicesDep, require_admin_key
from serving.api.schemas import ErrorResponse, PolicyReloadOut, ReloadOut
from serving.errors import ApiError
from serving.responses import OrjsonResponse

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin_key)])


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong X-Api-Key."},
        502: {"model": ReloadOut, "description": "Loading failed; the previous model keeps serving."},
    },
    summary="Load the version the registry alias points to now and swap it in without dropping a request",
)
async def reload_model(
    services: ServicesDep,
    force: bool = Query(
        default=False, description="Reload even if the alias still points to the served version."
    ),
) -> Response:
    outcome = await services.holder.reload(force=force)
    body = {
        "status": outcome.status,
        "version": outcome.version,
        "previous_version": outcome.previous_version,
        "error": outcome.error,
        "seconds": round(outcome.seconds, 3),
    }
    return OrjsonResponse(body, status_code=502 if outcome.status == "failed" else 200)


@router.post(
    "/v1/admin/caps-policy/reload",
    response_model=PolicyReloadOut,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong X-Api-Key."},
        422: {
            "model": PolicyReloadOut,
            "description": "The file is invalid (line and field named); the running policy stays in force.",
        },
        503: {"model": ErrorResponse, "description": "Capping is disabled."},
    },
    summary="Re-read the cap policy file now (it is also re-read by itself when the file changes)",
)
async def reload_caps_policy(services: ServicesDep) -> Response:
    enforcer = services.cap_enforcer
    if enforcer is None:
        raise ApiError(503, "capping_disabled", "frequency capping is disabled in this deployment")
    result = await run_in_threadpool(enforcer.holder.reload)
    body = {"ok": result.ok, "changed": result.changed, "version": result.version, "error": result.error}
    return OrjsonResponse(body, status_code=200 if result.ok else 422)
