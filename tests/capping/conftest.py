"""Fixtures for the capping tests: the same suite runs against the in-process store and the real Redis.

Redis tests use db 15 and a unique key prefix per test, and delete their keys afterwards. When Redis is not
running at 127.0.0.1:6379 they FAIL (never skip) with the command that starts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from recsys.capping.api import CapEnforcer, CapPolicy, build_enforcer, parse_policy

REDIS_URL = "redis://127.0.0.1:6379/15"
START_REDIS = 'redis-server --daemonize yes --port 6379 --save "" --appendonly no'


def require_redis(url: str = REDIS_URL) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as e:
        pytest.fail(f"Redis is not reachable at {url} ({e}); start it with: {START_REDIS}", pytrace=False)
    return client


def make_policy(text: str) -> CapPolicy:
    return parse_policy(text, source="<test policy>")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = require_redis()
    yield client
    client.close()


def _cleanup(client: redis.Redis, prefix: str) -> None:
    names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if names:
        client.delete(*names)


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to this test; its Redis keys are deleted afterwards."""
    prefix = f"test-caps-{uuid.uuid4().hex[:10]}"
    yield prefix
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        _cleanup(client, prefix)
        client.close()
    except redis.exceptions.RedisError:
        pass


@pytest.fixture(params=["memory", "redis"])
def make_enforcer(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[Callable[..., CapEnforcer]]:
    """``make_enforcer(policy)`` → an enforcer on the parametrised store (in-process, then real Redis)."""
    made: list[CapEnforcer] = []
    if request.param == "redis":
        require_redis()

    def make(policy: CapPolicy, **kw: Any) -> CapEnforcer:
        url = REDIS_URL if request.param == "redis" else None
        # A generous timeout: these tests check semantics, not latency, on a shared machine.
        kw.setdefault("timeout_ms", 2000)
        e = build_enforcer(url, policy, key_prefix=key_prefix, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()
