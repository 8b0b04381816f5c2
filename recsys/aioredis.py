"""An asyncio Redis client per event loop, for the stores the service awaits on its loop.

``redis.asyncio`` clients belong to the event loop that first used them, and a process may run more than one
loop over its life (a test client runs each app in a loop of its own), so :class:`LoopRedis` makes its client
on first use in each loop. It also bounds the commands in flight from one loop: enough to overlap Redis with
the loop's other work, few enough that a reply never waits long for a busy loop to read it — a socket timeout
counts that wait against Redis, and with hundreds of unbounded concurrent calls healthy Redis calls timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

# Commands in flight at once from one event loop (bench-serve: 2, 4 and 8 gave the same throughput).
IN_FLIGHT = 4


class LoopRedis:
    """``client()`` → the running loop's ``redis.asyncio.Redis`` for ``url`` (made with ``client_kwargs`` on
    first use in each loop); ``slot`` → a semaphore to hold while a command is in flight."""

    def __init__(self, url: str, *, in_flight: int = IN_FLIGHT, **client_kwargs: Any) -> None:
        self.url = url
        self.in_flight = in_flight
        self.client_kwargs = client_kwargs
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.slot: asyncio.Semaphore = asyncio.Semaphore(in_flight)

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(self.url, **self.client_kwargs)
            self._loop = loop
            self.slot = asyncio.Semaphore(self.in_flight)
        return self._client

    async def evalsha(self, script: str, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``EVALSHA`` of ``script`` (whose SHA1 is ``sha``) in an in-flight slot, loading the script first
        when the server does not know it (restarted, or its script cache flushed)."""
        client = self.client()
        async with self.slot:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(script)
                return await client.evalsha(sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the client (from the loop that used it); the next ``client()`` makes a new one."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
