"""CPU per awaited Redis call: ``redis.asyncio`` against ``recsys.aioredis.LoopRedis`` (not a timed test).

Both run the same EVALSHA (a script returning a member-sized hash, ~1.8 kB) from 32 concurrent coroutines on
uvloop, the service's loop, against the machine's Redis (``REDIS_URL``, default redis://127.0.0.1:6379/0;
one key under ``bench-redis-client:`` is written and removed). Prints calls/s and the client process's CPU per
call — what each call costs the service's event loop.

    .venv/bin/python bench/bench_redis_client.py [--calls 12000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import redis.asyncio
import uvloop

from recsys.aioredis import LoopRedis

SCRIPT = "return redis.call('HGETALL', KEYS[1])"
KEY = "bench-redis-client:member"
CONCURRENCY = 32


async def drive(call: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    async def worker(k: int) -> None:
        for _ in range(k):
            await call()

    t, c = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
    return time.perf_counter() - t, time.process_time() - c


async def with_redis_asyncio(url: str, sha: str, n: int) -> tuple[float, float]:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=1.0)
    try:
        return await drive(lambda: client.evalsha(sha, 1, KEY), n)
    finally:
        await client.aclose()


async def with_loop_redis(url: str, sha: str, n: int) -> tuple[float, float]:
    lr = LoopRedis(url, socket_timeout=1.0)
    try:
        return await drive(lambda: lr.evalsha(SCRIPT, sha, [KEY], []), n)
    finally:
        await lr.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=12_000)
    args = p.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    sync = redis.Redis.from_url(url)
    sync.hset(KEY, mapping={"p": "x" * 1500, "e": b"\x00" * 256})
    sha = sync.script_load(SCRIPT)
    try:
        print(f"{'client':16}{'calls/s':>10}{'CPU µs/call':>14}")
        for name, fn in (("redis.asyncio", with_redis_asyncio), ("LoopRedis", with_loop_redis)) * 2:
            wall, cpu = uvloop.run(fn(url, sha, args.calls))
            print(f"{name:16}{args.calls / wall:>10.0f}{1e6 * cpu / args.calls:>14.1f}")
    finally:
        sync.delete(KEY)


if __name__ == "__main__":
    main()
