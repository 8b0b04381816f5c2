"""The optional per-client rate limit of ``POST /v1/recommendations``, counted in Redis so that every worker
and replica shares one count.

A sliding-window counter: the current fixed window's count plus the previous window's, weighted by how much
of it still overlaps the sliding window. Two counters per client, no burst of twice the limit at a window
boundary, one Lua script (check and count atomically, so concurrent workers cannot both take the last
slot). It runs on the process's shared Redis clients (:mod:`recsys.stores.redis`: standalone, Cluster or
Sentinel, TLS and ACL alike, one timeout and circuit breaker); a client's two keys share a hash tag, so one
Cluster slot holds both.

A client is the value of a configured header (one a trusted gateway sets, or the caller's API key), hashed
so that no credential names a key, or else the peer's address. A Redis error or an open breaker lets the
request through (logged when it starts and when it ends): the limit guards capacity, and a Redis outage
must not refuse every member their offers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import NoScriptError
from starlette.requests import Request

from recsys.stores.redis import RedisClients, RedisUnavailable
from serving.errors import ApiError

logger = logging.getLogger("serving.ratelimit")

UNITS_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)

# KEYS: current window's counter, previous window's. ARGV: limit, window (ms), elapsed in the current window
# (ms). Returns {1 allowed | 0 refused, current count, previous count}.
SLIDING_WINDOW_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
if previous * (window - elapsed) / window + current + 1 > limit then
  return {0, current, previous}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then
  redis.call('PEXPIRE', KEYS[1], 2 * window)
end
return {1, current, previous}
"""
SCRIPT_SHA = hashlib.sha1(SLIDING_WINDOW_LUA.encode()).hexdigest()


@dataclass(frozen=True)
class Rate:
    limit: int
    window_s: int
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rate(spec: str) -> Rate:
    """'600/minute', '20 per second', '1000/5 minutes'; ValueError naming the problem."""
    found = _RATE.match(spec)
    if found is None or int(found.group(1)) < 1:
        raise ValueError(f"{spec!r} is not a rate such as '600/minute', '20/second' or '1000/5 minutes'")
    count, multiple, unit = int(found.group(1)), int(found.group(2) or 1), found.group(3).lower()
    per = f"{multiple} {unit}s" if multiple > 1 else unit
    return Rate(count, multiple * UNITS_S[unit], f"{count} requests per {per}")


def retry_after_s(rate: Rate, current: int, previous: int, elapsed_ms: int) -> int:
    """Whole seconds until the sliding count leaves room for one more request (at least 1)."""
    window = rate.window_s * 1000
    room = rate.limit - 1  # the weighted count that admits one more
    if current > room:
        # Not in this window: in the next one, this window's count weighs (window - t) / window.
        wait_ms = (window - elapsed_ms) + window * (1 - room / current)
    else:
        wait_ms = (window - elapsed_ms) - (room - current) * window / previous if previous else 0
    return max(1, math.ceil(wait_ms / 1000))


class RateLimiter:
    def __init__(
        self,
        rate: str,
        redis: RedisClients,
        *,
        key_prefix: str,
        client_header: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rate = parse_rate(rate)
        self.redis = redis
        self.key_prefix = key_prefix
        self.client_header = client_header.lower() if client_header else None
        self.clock = clock
        self.failing = False

    def client(self, request: Request) -> str:
        if self.client_header is not None:
            value = request.headers.get(self.client_header)
            if value:
                return "h:" + hashlib.sha256(value.encode()).hexdigest()[:32]
        return "ip:" + (request.client.host if request.client is not None else "unknown")

    def keys(self, client: str, window_index: int) -> list[str]:
        tag = f"{self.key_prefix}:{{{client}}}"  # one hash tag: one Cluster slot for both counters
        return [f"{tag}:{window_index}", f"{tag}:{window_index - 1}"]

    async def enforce(self, request: Request) -> None:
        """Count this request against its client; raise a 429 ApiError (with Retry-After) over the limit."""
        now_ms = int(self.clock() * 1000)
        window_ms = self.rate.window_s * 1000
        elapsed_ms = now_ms % window_ms
        keys = self.keys(self.client(request), now_ms // window_ms)
        args = [self.rate.limit, window_ms, elapsed_ms]
        try:
            reply = await self.redis.guard.acall(lambda: self._run(keys, args), key=keys[0])
        except RedisUnavailable as exc:
            if not self.failing:
                logger.warning("rate limit not checked, requests let through until Redis answers: %s", exc)
            self.failing = True
            return
        if self.failing:
            logger.warning("rate limit checked again: Redis answers")
            self.failing = False
        allowed, current, previous = (int(v) for v in reply)
        if allowed:
            return
        retry = retry_after_s(self.rate, current, previous, elapsed_ms)
        raise ApiError(
            429,
            "rate_limited",
            f"more than {self.rate} from this client; retry after {retry} s",
            headers={"Retry-After": str(retry)},
        )

    async def _run(self, keys: list[str], args: list[int]) -> list[int]:
        client = self.redis.aio
        try:
            return await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis, or a node that has not seen it yet
            return await client.eval(SLIDING_WINDOW_LUA, len(keys), *keys, *args)
