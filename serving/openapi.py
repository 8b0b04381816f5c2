"""The OpenAPI document and its viewers, as an app team needs them.

* Every error is declared in the one shape the service answers (``ErrorResponse``): FastAPI's own 422
  (``HTTPValidationError``, with ``detail``) is replaced, and each operation lists the errors it can answer
  (413/415/422 for bodies, 422 for parameters, 500 everywhere).
* The examples use times relative to now (a departure in five days, an event a minute ago) and offers of
  the served catalogue, so each works verbatim against a running service. The document is rebuilt when the
  day changes.
* ``/docs`` (Swagger UI) and ``/redoc`` load their assets from the installed ``fastapi-offline`` package,
  served by the service itself: no CDN, so they work offline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.responses import HTMLResponse

from serving.api import experiment_schemas, schemas

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
STATIC_URL = "/static-docs"
STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"

# Example trip: a booking five days ahead, morning departure in Beijing time.
EXAMPLE_TZ = timezone(timedelta(hours=8))
EXAMPLE_DAYS_AHEAD = 5


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(ERROR_REF)}}}


def _replace_refs(node: Any) -> None:
    """Point every reference to FastAPI's validation error at the service's error shape."""
    if isinstance(node, dict):
        if node.get("$ref") == "#/components/schemas/HTTPValidationError":
            node["$ref"] = ERROR_REF["$ref"]
        for v in node.values():
            _replace_refs(v)
    elif isinstance(node, list):
        for v in node:
            _replace_refs(v)


def declare_errors(doc: dict[str, Any]) -> None:
    """Declare, on every operation, the error answers the service really gives, in its one shape."""
    _replace_refs(doc)
    schemas = doc.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if "requestBody" in op:
                responses.setdefault("413", _error("Request body or batch too large."))
                responses.setdefault("415", _error("Body is not JSON (`Content-Type` named)."))
                responses.setdefault("422", _error("Invalid body; the field is named in `error.fields`."))
            if op.get("parameters"):
                responses.setdefault("422", _error("Invalid parameter; named in `error.fields`."))
            for code, response in responses.items():
                if code.startswith(("4", "5")) and "content" not in response:
                    response["content"] = {"application/json": {"schema": dict(ERROR_REF)}}
            responses.setdefault(
                "500", _error("Unexpected server error (a bug: reported, never your input).")
            )


def model_examples(*modules: ModuleType) -> dict[str, Any]:
    """Schema name -> the ``example`` of each pydantic model of ``modules`` that has one, as written."""
    out: dict[str, Any] = {}
    for module in modules:
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__:
                extra = obj.model_config.get("json_schema_extra")
                if isinstance(extra, dict) and "example" in extra:
                    out[name] = extra["example"]
    return out


def restore_examples(doc: dict[str, Any], examples: dict[str, Any]) -> None:
    """Put the examples back as written: FastAPI drops every null from the document (exclude_none), and an
    example without its required nullable fields fails its own schema."""
    schemas = doc.get("components", {}).get("schemas", {})
    for name, example in examples.items():
        if name in schemas:
            schemas[name]["example"] = copy.deepcopy(example)


def relative_examples(doc: dict[str, Any], now: datetime) -> None:
    """Fill the request examples with times relative to ``now``, so they work verbatim."""
    schemas = doc.get("components", {}).get("schemas", {})
    day = (now.astimezone(EXAMPLE_TZ) + timedelta(days=EXAMPLE_DAYS_AHEAD)).date()
    departure = datetime.combine(day, time(8, 30), EXAMPLE_TZ)
    rec = schemas.get("RecommendationRequest", {}).get("example")
    if rec and rec.get("trip"):
        rec["trip"]["departure_time"] = departure.isoformat()
        rec["trip"]["arrival_time"] = (departure + timedelta(hours=2, minutes=50)).isoformat()
    batch = schemas.get("EventBatchIn", {}).get("example")
    if batch:
        event_time = (now - timedelta(minutes=1)).astimezone(EXAMPLE_TZ).replace(microsecond=0)
        for ev in batch.get("events", []):
            ev["event_time"] = event_time.isoformat()
            if ev.get("trip_key"):
                ev["trip_key"] = f"{ev['trip_key'].split('|', 1)[0]}|{day.isoformat()}"
    for name in ("ExperimentIn", "ExperimentUpdate"):
        experiment = schemas.get(name, {}).get("example")
        if experiment and experiment.get("end"):
            experiment["end"] = (now + timedelta(days=30)).replace(microsecond=0).isoformat()
    response = schemas.get("RecommendationResponse", {}).get("example")
    if response:
        for offer in response.get("offers", []):
            offer["expires_at"] = (departure - timedelta(hours=2)).isoformat()


def install_openapi(app: FastAPI, clock: Callable[[], datetime]) -> None:
    """Replace the app's OpenAPI generator (rebuilt once a day) and serve /docs and /redoc offline."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        now = clock()
        key = now.date().isoformat()
        if built.get("key") != key:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            declare_errors(doc)
            restore_examples(doc, model_examples(schemas, experiment_schemas))
            relative_examples(doc, now)
            built.update(key=key, doc=doc)
        app.openapi_schema = built["doc"]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static-docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
