"""Request dependencies as ``Annotated`` aliases. Routes declare what they need; the app state provides it."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from serving.errors import ApiError
from serving.model_holder import ServedModel
from serving.services import Services


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_model(services: ServicesDep) -> ServedModel:
    """The model serving now (one snapshot for the whole request); 503 until one is loaded."""
    return current_model(services)


def current_model(services: Services) -> ServedModel:
    """:func:`get_model` as a plain call (for routes that skip the dependency machinery on the hot path)."""
    model = services.holder.current
    if model is None:
        raise ApiError(
            503, "model_not_loaded", "no model loaded yet; see /readyz", headers={"Retry-After": "5"}
        )
    return model


ModelDep = Annotated[ServedModel, Depends(get_model)]


async def is_internal_caller(
    services: ServicesDep,
    x_debug_token: Annotated[
        str | None, Header(description="Internal callers' token (enables debug).")
    ] = None,
) -> bool:
    """True when the caller sent the configured debug token (constant-time comparison)."""
    return internal_caller(services, x_debug_token)


def internal_caller(services: Services, x_debug_token: str | None) -> bool:
    """:func:`is_internal_caller` as a plain call."""
    expected = services.settings.debug_token
    if expected is None or x_debug_token is None:
        return False
    return hmac.compare_digest(x_debug_token.encode(), expected.get_secret_value().encode())


InternalCallerDep = Annotated[bool, Depends(is_internal_caller)]


async def require_json(request: Request) -> None:
    """Bodies must be JSON: anything else is 415 naming the Content-Type header.

    Reads the header from the request rather than as a ``Header`` parameter: FastAPI's per-request
    parameter extraction costs more than the check (the header is not documented either way).
    """
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {content_type or 'nothing'!r}",
            field="content-type",
            location="header",
        )


def admin_key_valid(services: Services, key: str | None) -> bool:
    """True when ``key`` is the configured admin API key (constant-time; False when none is configured)."""
    expected = services.settings.admin_api_key
    if expected is None or key is None:
        return False
    return hmac.compare_digest(key.encode(), expected.get_secret_value().encode())


async def require_admin_key(
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(description="The admin API key (RECSYS_ADMIN_API_KEY).")] = None,
) -> None:
    """Admin and marketer API paths: 401 without the right X-Api-Key (for everybody when none is set)."""
    if not admin_key_valid(services, x_api_key):
        raise ApiError(
            401,
            "unauthorized",
            "a valid X-Api-Key header is required"
            if services.settings.admin_api_key is not None
            else "the admin API is disabled: RECSYS_ADMIN_API_KEY is not set",
            field="x-api-key",
            location="header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
