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
from typing import Literal

from redis.exceptions import LockError

from recsys.stores.member_store import MemberStore
from recsys.stores.redis import RedisClients

logger = logging.getLogger("serving.bootstrap")

LOCK_TTL_S = 900


def bootstrap_profiles(
    store: MemberStore | None,
    data_dir: Path | None,
    mode: Literal["auto", "always", "never"] = "auto",
    redis: RedisClients | None = None,
) -> str | None:
    """Publish profiles from ``data_dir`` when the store has none (``auto``) or unconditionally (``always``).
    With ``redis`` (the store's deployment), one worker publishes under a lock and the others skip it.

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
        # redis-py's Lock: released only by the worker holding it (its token), never another's.
        lock = (
            redis.lock(f"{getattr(store, 'prefix', 'members')}:bootstrap-lock", LOCK_TTL_S) if redis else None
        )
        if lock is not None and not lock.acquire():
            logger.info("another worker is publishing member profiles; not publishing here")
            return None
        try:
            from recsys.features.profiles import build_member_profiles
            from recsys.ranker.features import with_ranker_history

            started = time.perf_counter()
            profiles = with_ranker_history(build_member_profiles(data_dir), data_dir)
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
            if lock is not None:
                try:
                    lock.release()
                except (
                    LockError
                ):  # expired (a publish longer than LOCK_TTL_S): another worker may hold it now
                    logger.warning("the bootstrap lock expired before the publish ended")
    except Exception:
        logger.exception("could not publish member profiles from %s; members served as cold start", data_dir)
        return None
