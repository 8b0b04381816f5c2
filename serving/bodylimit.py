"""A request-body byte limit that answers in the service's error shape.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a body without
one (chunked) is counted as it arrives and refused once it passes the limit. Starlette's own limiter
replaces every response to an over-long declared body with a plain-text 413, which is not the documented
``{"error": ...}`` shape, hence this one.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_body
from serving.responses import OrjsonResponse


def too_large_message(limit: int) -> str:
    return f"request body larger than {limit} bytes"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > self.limit:
            body = error_body("payload_too_large", too_large_message(self.limit))
            # Connection: close — the unread body must not be taken for the next request.
            await OrjsonResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
            return
        limit = self.limit
        total = 0

        async def counted() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise HTTPException(413, too_large_message(limit))
            return message

        await self.app(scope, counted, send)
