"""Start-up materialisation of member profiles into the online member store.

Training normally publishes profiles (and embeddings) to Redis. When the store has nothing yet — always
the case for the embedded single-process store, and for a fresh Redis — the service builds the profiles from
the dataset (``RECSYS_DATA_DIR``) with the same ``recsys.features`` code training uses, and publishes them.
With Redis a short lock makes sure only one worker process publishes; the others serve cold-start answers
meanwhile.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger("serving.bootstrap")

LOCK_TTL_S = 900


def bootstrap_profiles(
    store: Any, data_dir: Path | None, mode: Literal["auto", "always", "never"] = "auto"
) -> str | None:
    """Publish profiles from ``data_dir`` when the store has none (``auto``) or unconditionally (``always``).

    Returns the published version, or None when nothing was done. Never raises: a failure is logged and the
    service runs with cold-start answers for every member (and 404 profiles).
    """
    if mode == "never" or store is None:
        return None
    try:
        if mode == "auto" and store.active_version() is not None:
            return None
        if data_dir is None or not Path(data_dir).is_dir():
            logger.warning(
                "member store is empty and RECSYS_DATA_DIR (%s) is not a dataset: every member is served as "
                "cold start and profiles are 404 until training publishes profiles",
                data_dir,
            )
            return None
        client = getattr(store, "client", None)
        lock_key = f"{getattr(store, 'prefix', 'members')}:bootstrap-lock"
        if client is not None and not client.set(lock_key, b"1", nx=True, ex=LOCK_TTL_S):
            logger.info("another worker is publishing member profiles; not publishing here")
            return None
        try:
            from recsys.features.profiles import build_member_profiles
            from recsys.ranker.features import with_exposures

            started = time.perf_counter()
            profiles = with_exposures(build_member_profiles(data_dir), data_dir)
            version = f"svc{int(time.time())}"
            report = store.publish(profiles, None, version)
            logger.info(
                "published %d member profiles from %s as version %s in %.1fs",
                report.members,
                data_dir,
                version,
                time.perf_counter() - started,
            )
            return version
        finally:
            if client is not None:
                client.delete(lock_key)
    except Exception:
        logger.exception("could not publish member profiles from %s; members served as cold start", data_dir)
        return None
