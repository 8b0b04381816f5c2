"""The recommend endpoint's per-client rate limit: one count in Redis shared by two service processes, 429
with a JSON body and Retry-After over it, clients counted apart, and requests let through while Redis is
down."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from starlette.requests import Request

from bench.launcher import free_port, run_service
from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig
from serving.ratelimit import RateLimiter, parse_rate, retry_after_s
from tests.serving.conftest import Registry, redis_or_fail, service_env

LIMIT = 12


def test_two_processes_share_one_count_per_client(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    redis_prefix: str,
    world_members: list[str],
) -> None:
    # An hour's window: the test never straddles two windows in a way that lets a request more through.
    env = service_env(
        registry,
        serving_world,
        tmp_path,
        redis_prefix,
        RECSYS_RATE_LIMIT=f"{LIMIT}/hour",
        RECSYS_RATE_LIMIT_CLIENT_HEADER="X-Client-Id",
        RECSYS_RATE_LIMIT_KEY_PREFIX=f"{redis_prefix}:ratelimit",
        RECSYS_REQUEST_LOG_ENABLED="false",
    )
    body = {"member_id": world_members[0], "placement": "home"}
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(run_service(env, ready_timeout_s=180, log_path=tmp_path / "a.log"))
        second = stack.enter_context(run_service(env, ready_timeout_s=180, log_path=tmp_path / "b.log"))
        statuses = []
        refusal = None
        for i in range(2 * LIMIT):  # alternately to each process
            url = (first if i % 2 == 0 else second).url
            resp = httpx.post(
                f"{url}/v1/recommendations", json=body, headers={"X-Client-Id": "app-a"}, timeout=30
            )
            statuses.append(resp.status_code)
            if resp.status_code == 429 and refusal is None:
                refusal = resp
        # Counted once across both processes: each alone would have let 2 x LIMIT through.
        assert statuses == [200] * LIMIT + [429] * LIMIT, statuses
        assert refusal is not None
        assert refusal.headers["content-type"].startswith("application/json")
        error = refusal.json()["error"]
        assert error["code"] == "rate_limited" and f"more than {LIMIT} requests per hour" in error["message"]
        # The sliding count carries this window's requests into the next one: up to two windows, not one (a
        # refusal just after the hour's start said 3,793 s; the exact values: the unit test below).
        assert 1 <= int(refusal.headers["retry-after"]) < 2 * 3600
        # Another client has its own count, on either process.
        for svc in (first, second):
            other = httpx.post(
                f"{svc.url}/v1/recommendations", json=body, headers={"X-Client-Id": "app-b"}, timeout=30
            )
            assert other.status_code == 200
        # The limit guards the recommend endpoint only.
        assert httpx.get(f"{first.url}/v1/offers", headers={"X-Client-Id": "app-a"}, timeout=30).is_success
    # The counts live in Redis under the configured prefix, and the client header's value is not in a key.
    client = redis_or_fail()
    keys = [k.decode() for k in client.scan_iter(match=f"{redis_prefix}:ratelimit*")]
    client.close()
    assert keys and not any("app-a" in k for k in keys)


def test_redis_down_lets_requests_through() -> None:
    port = free_port()  # nothing listens there

    async def run() -> tuple[list[bool], bool]:
        config = RedisConfig(f"redis://127.0.0.1:{port}/0", policy=RedisCallPolicy(timeout_ms=200))
        limiter = RateLimiter("1/hour", RedisClients(config), key_prefix="unused")
        scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "client": ("10.0.0.1", 5)}
        allowed = []
        for _ in range(3):
            try:
                await limiter.enforce(Request(scope))
                allowed.append(True)
            except Exception:
                allowed.append(False)
        await limiter.redis.aclose()
        return allowed, limiter.failing

    # Over the 1/hour limit, were Redis counting; it is not, so every request passes and the outage is known.
    assert asyncio.run(asyncio.wait_for(run(), timeout=30)) == ([True, True, True], True)


def test_rate_notation() -> None:
    assert parse_rate("600/minute") == parse_rate("600 per minute")
    assert (parse_rate("20/second").limit, parse_rate("20/second").window_s) == (20, 1)
    five = parse_rate("1000/5 minutes")
    assert five.window_s == 300 and str(five) == "1000 requests per 5 minutes"
    for bad in ("lots", "0/minute", "10/fortnight", "-1/hour"):
        try:
            parse_rate(bad)
        except ValueError as exc:
            assert repr(bad) in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_retry_after_is_when_the_sliding_count_admits_one_more() -> None:
    rate = parse_rate("10/minute")
    # This window full at 15 s in: the next window starts in 45 s, where 10 x (60 - t) / 60 <= 9 from t = 6 s.
    assert retry_after_s(rate, current=10, previous=0, elapsed_ms=15_000) == 45 + 6
    # 6 now and 8 in the previous window, 30 s in: 6 + 8 x (30 - t) / 60 <= 9 from t = 7.5 s.
    assert retry_after_s(rate, current=6, previous=8, elapsed_ms=30_000) == 8
