"""``python -m serving``: serve the champion with uvicorn on RECSYS_PORT (8000) with the embedded defaults."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uvicorn

from serving.app import create_app
from serving.config import Settings


def build_app() -> object:
    """Factory for uvicorn's ``--factory`` mode (used when serving with several workers)."""
    return create_app(Settings())


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "loop": "uvloop" if _has("uvloop") else "asyncio",
        "http": "httptools" if _has("httptools") else "h11",
    }
    if settings.workers > 1:
        # Each worker process builds its own app (and its own model copy) from the same environment.
        uvicorn.run("serving.__main__:build_app", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
