"""``python -m serving``: serve the champion with uvicorn on RECSYS_PORT (8000) with the embedded defaults."""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uvicorn
from pydantic import ValidationError

from recsys.stores.redis import RedisConfigError, check_startup
from serving.app import create_app
from serving.config import Settings
from serving.logs import configure_logging
from serving.metrics import multiprocess_dir


def build_app() -> object:
    """Factory for uvicorn's ``--factory`` mode (used when serving with several workers)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)  # a worker process configures its own
    return create_app(settings)


def load_settings() -> Settings:
    """The settings from the environment; a bad value exits with a message naming the variable (status 1).
    Only the messages are printed, never the values (they may be secrets)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  RECSYS_{field.upper()}: {message}" if field else f"  {message}")
        sys.exit("invalid service settings:\n" + "\n".join(lines))


def check_redis(settings: Settings) -> None:
    """Reach the configured Redis before serving; a setting that cannot work exits naming it (status 1)."""
    config = settings.redis_config()
    if config is None:
        return
    try:
        check_startup(config)
    except RedisConfigError as exc:
        sys.exit(f"invalid service settings:\n  {exc}")


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for serving these settings (also what the benchmark's floor app is served with)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Our handler formats uvicorn's records too; its access log names client addresses (personal
        # data), RequestIdMiddleware writes one without them (RECSYS_ACCESS_LOG).
        "log_config": None,
        "access_log": False,
        "loop": "uvloop" if _has("uvloop") else "asyncio",
        "http": "httptools" if _has("httptools") else "h11",
    }


def prepare(settings: Settings) -> None:
    """Logging and the start-up checks, before any server starts."""
    configure_logging(settings.log_level, settings.log_format)
    check_redis(settings)


def main() -> None:
    settings = load_settings()
    prepare(settings)
    common = server_options(settings)
    if settings.workers > 1:
        # Each worker process builds its own app (and its own model copy) from the same environment; the
        # workers write their metrics to one private directory that /metrics merges (set before they start).
        with multiprocess_dir():
            uvicorn.run("serving.__main__:build_app", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
