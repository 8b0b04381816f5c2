"""POST /v1/admin/reload (internal callers only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from serving.api.deps import ServicesDep, require_internal_caller
from serving.api.schemas import ErrorResponse, ReloadOut
from serving.responses import OrjsonResponse

router = APIRouter(tags=["admin"], dependencies=[Depends(require_internal_caller)])


@router.post(
    "/v1/admin/reload",
    response_model=ReloadOut,
    responses={
        403: {"model": ErrorResponse, "description": "Missing or wrong X-Debug-Token."},
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
