"""Store URLs: which ones name a Redis, and how to print one without its password."""

from __future__ import annotations

from urllib.parse import urlparse

# URL schemes of a Redis (TCP, TLS, Unix socket) for the member store, the cap store and the CLI.
REDIS_URL_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")


def is_redis_url(url: str) -> bool:
    """Whether ``url`` starts with ``redis://``, ``rediss://`` or ``unix://``."""
    return url.startswith(tuple(f"{scheme}://" for scheme in REDIS_URL_SCHEMES))


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
