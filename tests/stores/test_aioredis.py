"""LoopRedis, the pipelined hiredis connection the service awaits, against real Redis servers.

Every behaviour is checked on both event loops the service may run on: asyncio's and uvloop's (uvicorn's
default when installed, and the one whose transports differ).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import uvloop

from recsys.aioredis import LoopRedis
from tests.capping.test_outage import OwnRedis
from tests.conftest import REDIS_URL

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    return LOOPS[request.param]  # type: ignore[no-any-return]


def test_concurrent_calls_each_get_their_own_reply(
    run: Callable[[Any], Any], redis_client: redis.Redis, prefix: str
) -> None:
    """300 calls in flight on one connection, in a shuffled mix of commands: each gets its own reply."""
    for i in range(300):
        redis_client.set(f"{prefix}:k{i}", f"v{i}")

    async def burst() -> list[Any]:
        lr = LoopRedis(REDIS_URL, socket_timeout=2.0)
        calls = [
            lr.execute("GET", f"{prefix}:k{i}") if i % 3 else lr.execute("STRLEN", f"{prefix}:k{i}")
            for i in range(300)
        ]
        out = await asyncio.gather(*calls)
        await lr.aclose()
        return out

    replies = run(burst())
    assert replies == [f"v{i}".encode() if i % 3 else len(f"v{i}") for i in range(300)]


def test_the_database_comes_from_the_url(
    run: Callable[[Any], Any], redis_client: redis.Redis, prefix: str
) -> None:
    redis_client.set(f"{prefix}:db", "fourteen")  # the fixture's client is on db 14

    async def read(url: str) -> Any:
        lr = LoopRedis(url, socket_timeout=2.0)
        try:
            return await lr.execute("GET", f"{prefix}:db")
        finally:
            await lr.aclose()

    assert run(read(REDIS_URL)) == b"fourteen"
    assert run(read(REDIS_URL.rsplit("/", 1)[0] + "/13")) is None


def test_error_replies_raise_redis_py_exceptions_and_the_connection_goes_on(
    run: Callable[[Any], Any], redis_client: redis.Redis, prefix: str
) -> None:
    redis_client.rpush(f"{prefix}:list", "x")
    script = "return 'loaded: ' .. KEYS[1]"
    sha = redis_client.script_load(script)
    redis_client.script_flush()

    async def go() -> tuple[Any, ...]:
        lr = LoopRedis(REDIS_URL, socket_timeout=2.0)
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE") as wrong:
            await lr.execute("GET", f"{prefix}:list")
        with pytest.raises(redis.exceptions.NoScriptError):
            await lr.execute("EVALSHA", sha, 1, "k")
        after = await lr.execute("LLEN", f"{prefix}:list")  # the same connection still answers in order
        loaded = await lr.evalsha(script, sha, ["k"], [])  # loads the script the server forgot, then runs it
        await lr.aclose()
        return type(wrong.value), after, loaded

    kind, after, loaded = run(go())
    assert kind is redis.exceptions.ResponseError  # not mistaken for NOSCRIPT
    assert after == 1
    assert loaded == b"loaded: k"


def test_a_frozen_server_times_out_and_late_replies_never_reach_later_calls(
    run: Callable[[Any], Any],
) -> None:
    own = OwnRedis()
    own.start()
    try:
        redis.Redis.from_url(own.url).set("answer", "42")

        async def go() -> tuple[float, Any, Any]:
            lr = LoopRedis(own.url, socket_timeout=0.2, socket_connect_timeout=0.5)
            assert await lr.execute("GET", "answer") == b"42"
            own.freeze()
            t = time.perf_counter()
            with pytest.raises(redis.exceptions.TimeoutError):
                await lr.execute("ECHO", "sent while frozen")
            waited = time.perf_counter() - t
            own.thaw()
            # the frozen call's reply arrives now and is dropped: the next calls get their own replies
            first = await lr.execute("GET", "answer")
            second = await lr.execute("ECHO", "after")
            await lr.aclose()
            return waited, first, second

        waited, first, second = run(go())
        assert 0.15 <= waited < 1.0
        assert (first, second) == (b"42", b"after")
    finally:
        own.stop()


def test_a_lost_connection_fails_its_calls_and_the_next_call_reconnects(run: Callable[[Any], Any]) -> None:
    own = OwnRedis()
    own.start()
    try:

        async def go() -> tuple[Any, Any]:
            lr = LoopRedis(own.url, socket_timeout=1.0, socket_connect_timeout=0.5)
            assert await lr.execute("PING") == b"PONG"
            own.kill()
            with pytest.raises(redis.exceptions.ConnectionError):
                await lr.execute("PING")
            with pytest.raises(redis.exceptions.ConnectionError, match="cannot connect"):
                await lr.execute("PING")  # nothing listens: refused at once
            await asyncio.to_thread(own.start)  # the same port again
            back = await lr.execute("PING")
            await lr.aclose()
            return back, None

        back, _ = run(go())
        assert back == b"PONG"
    finally:
        own.stop()


def test_a_refused_set_up_is_a_connection_error_naming_it(run: Callable[[Any], Any]) -> None:
    async def go() -> None:
        lr = LoopRedis("redis://:not-the-password@127.0.0.1:6379/14", socket_connect_timeout=1.0)
        await lr.execute("PING")  # the server has no password: AUTH is refused

    with pytest.raises(redis.exceptions.ConnectionError, match=r"refused the set-up.*AUTH"):
        run(go())


def test_a_bad_url_is_rejected_when_made() -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        LoopRedis("http://127.0.0.1:6379/0")
