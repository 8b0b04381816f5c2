"""Store URLs: which ones name a Redis, and how to print one without its password."""

from __future__ import annotations

from urllib.parse import urlparse

# URL schemes of a Redis (TCP, TLS, Unix socket; a Cluster; Sentinels) for the stores and the CLI
# (recsys.stores.redis builds the clients).
REDIS_URL_SCHEMES: tuple[str, ...] = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


def is_redis_url(url: str) -> bool:
    """Whether ``url`` starts with one of :data:`REDIS_URL_SCHEMES` and ``://``."""
    return url.lower().startswith(tuple(f"{scheme}://" for scheme in REDIS_URL_SCHEMES))


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
