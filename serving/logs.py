"""Structured logs: one JSON object per line on stderr, each carrying the id of the request it belongs to.

Every HTTP request gets an id: the caller's ``X-Request-ID`` when it sends a well-formed one (letters, digits,
``._:-``, at most 128 characters), else a fresh one; it is echoed in the response's ``X-Request-ID`` and put
on every log line written while the request is handled (threadpool work included: the id lives in a context
variable, which Starlette copies into its worker threads). A recommendation's ``request_id`` (which keys the
request log and the tracking tokens) is always minted by the service: it is the same id when the caller sent
none.

What is logged about a request: method, route template (never the raw path), status, duration and the
request id. Never a body, a query string, a header or the client's address: the only personal datum a log
line may carry is a member id, which the service's own messages name where an operator needs it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from typing import Literal

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

access_logger = logging.getLogger("serving.access")

LogFormat = Literal["json", "text"]


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request)."""
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def configure_logging(level: str, fmt: LogFormat = "json") -> None:
    """Route every logger (uvicorn's included: serve with ``log_config=None``) to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestIdMiddleware:
    """Pure ASGI middleware: the request id (see the module docstring) and, with ``access_log``, one log line
    per request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER), None)
        minted = given is None or _VALID_ID.fullmatch(given) is None
        request_id = uuid.uuid4().hex if minted else given.decode()  # type: ignore[union-attr]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["request_id_minted"] = minted
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                access_logger.info(
                    "%s %s %d",
                    scope.get("method", ""),
                    route,
                    status,
                    extra={
                        "method": scope.get("method", ""),
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                    },
                )
            _request_id.reset(token)
