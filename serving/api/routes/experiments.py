"""The experiments admin API and report (X-Api-Key): create, update, start, stop, list, read, report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from recsys.experiments import ExperimentError, ExperimentStore, Status
from recsys.experiments.model import Experiment, to_json
from serving.api.deps import ServicesDep, require_admin_key, require_json
from serving.api.experiment_schemas import (
    ExperimentIn,
    ExperimentList,
    ExperimentOut,
    ExperimentReportOut,
    ExperimentUpdate,
    to_changes,
    to_domain,
)
from serving.api.schemas import ErrorResponse
from serving.errors import ApiError
from serving.experiment_report import experiment_report
from serving.responses import OrjsonResponse
from serving.services import Services

router = APIRouter(tags=["experiments"], dependencies=[Depends(require_admin_key)])

KeyPath = Path(
    min_length=1,
    max_length=64,
    description="The experiment's key.",
    openapi_examples={"key": {"value": "als-vs-popularity"}},
)
_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong X-Api-Key."},
    404: {"model": ErrorResponse, "description": "Unknown experiment."},
    409: {"model": ErrorResponse, "description": "Conflicts with the experiment's state or a running one."},
    422: {"model": ErrorResponse, "description": "Invalid field (named in `error.fields`)."},
}


def _api_error(exc: ExperimentError) -> ApiError:
    return ApiError(_STATUS.get(exc.kind, 422), exc.code, exc.message, field=exc.field)


def _store(services: Services) -> ExperimentStore:
    store = services.experiment_store
    if store is None:
        raise ApiError(503, "experiments_disabled", "no experiment store is configured")
    return store


async def _refresh(services: Services) -> None:
    # This worker takes effect at once; the others within experiments_poll_s.
    if services.experiments is not None:
        await services.experiments.refresh()


async def _transition(services: Services, change: Callable[..., Experiment], *args: Any) -> Response:
    """Apply a store change off the event loop, map a refusal to a 4xx, let this worker see it at once."""
    try:
        changed = await run_in_threadpool(change, *args)
    except ExperimentError as exc:
        raise _api_error(exc) from exc
    await _refresh(services)
    return OrjsonResponse(to_json(changed))


@router.get("/v1/experiments", response_model=ExperimentList, responses=ERRORS, summary="All experiments")
async def list_experiments(services: ServicesDep, status: Status | None = None) -> Response:
    store = _store(services)
    found = await run_in_threadpool(store.list_all, status=status)
    return OrjsonResponse({"experiments": [to_json(e) for e in found]})


@router.post(
    "/v1/experiments",
    status_code=201,
    response_model=ExperimentOut,
    responses=ERRORS,
    dependencies=[Depends(require_json)],
    summary="Create an experiment (a draft; every model it names must exist in the registry)",
)
async def create_experiment(body: ExperimentIn, services: ServicesDep) -> Response:
    store = _store(services)
    try:
        exp = to_domain(body, services.settings.model_name)
        created = await run_in_threadpool(store.create, exp)
    except ExperimentError as exc:
        raise _api_error(exc) from exc
    return OrjsonResponse(to_json(created), status_code=201)


@router.get(
    "/v1/experiments/{key}",
    response_model=ExperimentOut,
    responses=ERRORS,
    summary="One experiment",
)
async def get_experiment(services: ServicesDep, key: str = KeyPath) -> Response:
    store = _store(services)
    try:
        exp = await run_in_threadpool(store.require, key)
    except ExperimentError as exc:
        raise _api_error(exc) from exc
    return OrjsonResponse(to_json(exp))


@router.patch(
    "/v1/experiments/{key}",
    response_model=ExperimentOut,
    responses=ERRORS,
    dependencies=[Depends(require_json)],
    summary="Change an experiment (a running one keeps its split: re-weighting is refused)",
)
async def update_experiment(body: ExperimentUpdate, services: ServicesDep, key: str = KeyPath) -> Response:
    store = _store(services)
    try:
        changes = to_changes(body, services.settings.model_name)
    except ExperimentError as exc:
        raise _api_error(exc) from exc
    return await _transition(services, store.update, key, changes)


@router.post(
    "/v1/experiments/{key}/start",
    response_model=ExperimentOut,
    responses=ERRORS,
    summary="Start a draft (refused if it could share a member with a running experiment on a placement)",
)
async def start_experiment(services: ServicesDep, key: str = KeyPath) -> Response:
    return await _transition(services, _store(services).start, key)


@router.post(
    "/v1/experiments/{key}/stop",
    response_model=ExperimentOut,
    responses=ERRORS,
    summary="Stop a running experiment (its members return to the default model)",
)
async def stop_experiment(services: ServicesDep, key: str = KeyPath) -> Response:
    return await _transition(services, _store(services).stop, key)


@router.get(
    "/v1/experiments/{key}/report",
    response_model=ExperimentReportOut,
    responses=ERRORS,
    summary="The experiment's report: per-variant figures, lifts with CIs and p-values, CUPED, SRM, "
    "guardrails, cumulative conversion, and the offline estimate of the same policies",
)
async def experiment_report_route(services: ServicesDep, key: str = KeyPath) -> Response:
    store = _store(services)
    try:
        exp = await run_in_threadpool(store.require, key)
    except ExperimentError as exc:
        raise _api_error(exc) from exc
    report = await run_in_threadpool(experiment_report, services, exp)
    return OrjsonResponse(report)
