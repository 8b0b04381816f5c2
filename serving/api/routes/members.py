"""GET /v1/members/{member_id}/profile and /caps."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path
from starlette.responses import Response

from serving.api.deps import ServicesDep
from serving.api.schemas import MEMBER_ID_PATTERN, CapsOut, ErrorResponse, ProfileOut
from serving.errors import ApiError
from serving.events import cap_member
from serving.members import profile_body
from serving.responses import OrjsonResponse

router = APIRouter(tags=["members"])

MemberId = Annotated[
    str, Path(pattern=MEMBER_ID_PATTERN, description="Loyalty member id.", examples=["M0000042"])
]


@router.get(
    "/v1/members/{member_id}/profile",
    response_model=ProfileOut,
    responses={
        404: {"model": ErrorResponse, "description": "Unknown member."},
        503: {"model": ErrorResponse, "description": "The member store did not answer."},
    },
    summary="Tier, progress to the next tier, segment and value score (the app's status screen)",
)
async def member_profile(member_id: MemberId, services: ServicesDep) -> Response:
    profile = None
    if services.member_store is not None:
        try:
            profile = (await services.member_store.aread(member_id, None)).record
        except Exception as exc:  # the store is down or slow: say so, not a 500
            raise ApiError(
                503,
                "member_store_unavailable",
                f"the member store did not answer ({type(exc).__name__}); retry shortly",
                headers={"Retry-After": "2"},
            ) from exc
    if profile is None:
        raise ApiError(
            404, "unknown_member", f"unknown member {member_id!r}", field="member_id", location="path"
        )
    return OrjsonResponse(profile_body(member_id, profile))


@router.get(
    "/v1/members/{member_id}/caps",
    response_model=CapsOut,
    responses={503: {"model": ErrorResponse, "description": "Capping is disabled."}},
    summary="A member's current cap counts, when each resets, and active cool-downs (support, marketers)",
)
async def member_caps(member_id: MemberId, services: ServicesDep) -> Response:
    enforcer = services.cap_enforcer
    if enforcer is None:
        raise ApiError(503, "capping_disabled", "frequency capping is disabled in this deployment")
    now = services.clock()
    member = cap_member(services.member_store, member_id)
    model = services.holder.current
    offer_ids = list(model.pipeline.offer_ids) if model is not None else []  # per-offer counters' names
    state = await anyio.to_thread.run_sync(enforcer.member_state, member, now, offer_ids)
    return OrjsonResponse({"member_id": member_id, "as_of": now, "state": state})
