"""Fixtures for the capping tests: the same suite runs against the in-process store and the real Redis.

Redis tests use db 15 and a unique key prefix per test, and delete their keys afterwards. When Redis is not
running at 127.0.0.1:6379 they FAIL (never skip) with the command that starts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from recsys.capping.api import CapEnforcer, CapPolicy, build_enforcer, parse_policy
from tests.conftest import delete_prefix, redis_or_fail, unique_prefix

REDIS_URL = "redis://127.0.0.1:6379/15"


def require_redis(url: str = REDIS_URL) -> redis.Redis:
    return redis_or_fail(url)


def make_policy(text: str) -> CapPolicy:
    return parse_policy(text, source="<test policy>")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = require_redis()
    yield client
    client.close()


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to this test; its Redis keys are deleted afterwards."""
    prefix = unique_prefix("caps")
    yield prefix
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        delete_prefix(client, prefix)
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
