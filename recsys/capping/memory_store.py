"""In-process cap state: the embedded default (no Redis configured) and the fail-open local limiter.

Same semantics as the Redis store — the same core decides (:mod:`recsys.capping.engine`); this store only
keeps each member's hash in a dict and commits under a lock — but the counts live in this process only: with
several service processes each would count on its own, so use Redis as soon as there is more than one
process.

Memory is bounded two ways: a hash expires with the TTL its last write gave it (judged against that write's
``now``, so tests with an injected clock behave like Redis), and at most ``max_members`` members are
remembered (least recently seen are forgotten first, which can only let an offer through, never block one
wrongly).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from recsys.capping.engine import Writes, apply_writes
from recsys.capping.types import CapState

DEFAULT_MAX_MEMBERS = 1_000_000


class MemoryCapStore:
    """Members' cap hashes in this process (thread-safe)."""

    name = "memory"

    def __init__(self, max_members: int = DEFAULT_MAX_MEMBERS, key_prefix: str = "caps") -> None:
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty and contain no braces, got {key_prefix!r}")
        self.max_members = max_members
        self.key_prefix = key_prefix
        self._lock = threading.Lock()
        # key -> (fields, expiry in ms of the writes' clock)
        self._hashes: OrderedDict[str, tuple[dict[str, str], int]] = OrderedDict()

    def key(self, member_id: str) -> str:
        return f"{self.key_prefix}:{{{member_id}}}"

    def read(self, key: str) -> CapState:
        with self._lock:
            found = self._hashes.get(key)
            if found is None:
                return CapState("", {})
            self._hashes.move_to_end(key)
            return CapState.of(dict(found[0]))

    async def aread(self, key: str) -> CapState:
        return self.read(key)

    def commit(self, key: str, state: CapState, w: Writes) -> CapState | None:
        with self._lock:
            found = self._hashes.get(key)
            fields = found[0] if found is not None and found[1] > w.now_ms else {}
            if fields.get("v", "") != state.version:
                return CapState.of(dict(fields))
            self._hashes[key] = (apply_writes(fields, w), w.now_ms + w.ttl_ms)
            self._hashes.move_to_end(key)
            while len(self._hashes) > self.max_members:
                self._hashes.popitem(last=False)
            return None

    async def acommit(self, key: str, state: CapState, w: Writes) -> CapState | None:
        return self.commit(key, state, w)

    def members_held(self) -> int:
        with self._lock:
            return len(self._hashes)

    def location(self) -> str | None:
        return None

    def ping(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"store": "memory", "breaker_open": False, "last_error": None, "failures": 0}

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""
