"""One stable JSON error shape for every error, and the handlers that produce it.

``{"error": {"code": ..., "message": ..., "fields": [{"field", "location", "message", "type"}]}}``.
User input never produces a 500: validation errors are 422 naming the field; only genuine bugs reach the
catch-all, which logs the traceback and answers a JSON 500 without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.pipeline import InvalidRequest
from serving.responses import OrjsonResponse

logger = logging.getLogger("serving.errors")

_LOCATIONS = {"body", "query", "path", "header", "cookie"}


class ApiError(Exception):
    """An error answered as-is: status, code, message and optionally the fields at fault."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        location: str = "body",
        headers: dict[str, str] | None = None,
        fields: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = (
            list(fields)
            if fields is not None
            else [{"field": field, "location": location, "message": message, "type": code}]
            if field
            else []
        )
        self.headers = headers


def error_body(code: str, message: str, fields: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": list(fields)}}


def field_path(loc: Sequence[int | str]) -> tuple[str, str]:
    """(dotted field path, location) of a pydantic error location: ('body','events',3,'offer_id') →
    ('events[3].offer_id', 'body')."""
    parts = list(loc)
    location = "body"
    if parts and parts[0] in _LOCATIONS:
        location = str(parts.pop(0))
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return (out or location), location


def line_column(doc: str, pos: int) -> tuple[int, int]:
    """1-based line and column of character ``pos`` in ``doc``."""
    line = doc.count("\n", 0, pos) + 1
    return line, pos - (doc.rfind("\n", 0, pos) + 1) + 1


async def _validation_handler(_request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # FastAPI puts the character offset in loc
            loc = err.get("loc", ())
            pos = loc[-1] if loc and isinstance(loc[-1], int) else 0
            doc = exc.body if isinstance(exc.body, str) else ""
            line, column = line_column(doc, pos)
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            fields.append(
                {
                    "field": "body",
                    "location": "body",
                    "message": f"malformed JSON at line {line}, column {column}: {reason}",
                    "type": "json_invalid",
                }
            )
            continue
        path, location = field_path(err.get("loc", ()))
        fields.append(
            {
                "field": path,
                "location": location,
                "message": str(err.get("msg", "invalid")),
                "type": str(err.get("type", "invalid")),
            }
        )
    if not fields:
        fields = [{"field": "body", "location": "body", "message": "invalid request", "type": "invalid"}]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return OrjsonResponse(error_body("validation_error", message, fields), status_code=422)


async def _api_error_handler(_request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, ApiError)
    return OrjsonResponse(
        error_body(exc.code, exc.message, exc.fields), status_code=exc.status_code, headers=exc.headers
    )


async def _invalid_request_handler(_request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, InvalidRequest)
    fields = [{"field": exc.field, "location": "body", "message": exc.message, "type": "invalid_value"}]
    return OrjsonResponse(error_body("validation_error", str(exc), fields), status_code=422)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    401: "unauthorized",
    403: "forbidden",
    503: "unavailable",
}


async def _http_handler(_request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # the body could not even be decoded (e.g. not UTF-8): a bad body, named
        field = {"field": "body", "location": "body", "message": str(exc.detail), "type": "invalid_body"}
        return OrjsonResponse(error_body("validation_error", f"body: {exc.detail}", [field]), status_code=422)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    return OrjsonResponse(
        error_body(code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _unhandled_handler(request: Request, exc: Exception) -> OrjsonResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return OrjsonResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(InvalidRequest, _invalid_request_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
