"""The asyncio path of the cap enforcer (what the service's event loop awaits): the same decisions as the
blocking path, atomic under concurrent coroutines, and the same timeout, breaker and outage policy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from recsys.capping.api import CapEnforcer, CapMember, build_enforcer
from recsys.capping.redis_store import RedisCapStore
from tests.capping.conftest import REDIS_URL, make_policy, require_redis
from tests.capping.test_concurrency import CANDIDATES, MEMBER, NOW, POLICY, check_caps_held


def test_async_and_blocking_calls_decide_alike(make_enforcer: Callable[..., CapEnforcer]) -> None:
    enforcer = make_enforcer(make_policy(POLICY))
    member = CapMember("M0000100", "basic", "Asia/Shanghai")

    async def both() -> list[list[str]]:
        first = await enforcer.aselect_and_record(member, CANDIDATES, 3, "home", NOW)
        second = enforcer.select_and_record(member, CANDIDATES, 3, "home", NOW)
        third = await enforcer.aselect_and_record(member, CANDIDATES, 3, "home", NOW)
        return [first.selected, second.selected, third.selected]

    picks = asyncio.run(both())
    # offer_weekly: each call moves on to offers not yet shown; seat_24h: two seats, then meals only
    assert picks[0] == ["S0", "S1", "M0"]
    assert picks[1] == ["M1", "M2", "M3"]
    assert picks[2] == ["M4"]  # member_daily (7) reached
    state = enforcer.member_state(member, NOW)
    daily = next(c for c in state["caps"] if c["cap"] == "member_daily")
    assert daily["count"] == 7


def test_concurrent_coroutines_never_exceed_a_cap(key_prefix: str) -> None:
    require_redis()
    enforcer = build_enforcer(REDIS_URL, make_policy(POLICY), key_prefix=key_prefix, timeout_ms=5_000)
    assert isinstance(enforcer.inner.store, RedisCapStore)  # type: ignore[attr-defined]

    async def burst() -> list[Any]:
        calls = [enforcer.aselect_and_record(MEMBER, CANDIDATES, 3, "home", NOW) for _ in range(200)]
        decisions = await asyncio.gather(*calls)
        await enforcer.aclose()
        return list(decisions)

    decisions = asyncio.run(burst())
    assert not any(d.degraded for d in decisions), [d.degraded for d in decisions if d.degraded][:3]
    check_caps_held([d.selected for d in decisions])
    enforcer.close()


def test_unreachable_redis_fails_closed_fast_and_opens_the_breaker() -> None:
    # A back-off far longer than the test: the second call must be answered by the open breaker.
    policy = make_policy(
        POLICY
        + "\ntimeout_ms: 50\n"
        + "outage: {mode: fail_closed, breaker_backoff_ms: 60000, breaker_max_backoff_ms: 60000}\n"
    )
    enforcer = build_enforcer("redis://127.0.0.1:1/0", policy, key_prefix="test-caps-dead")  # nothing there

    async def twice() -> tuple[Any, Any]:
        first = await enforcer.aselect_and_record(MEMBER, CANDIDATES, 3, "home", NOW)
        second = await enforcer.aselect_and_record(MEMBER, CANDIDATES, 3, "home", NOW)
        return first, second

    first, second = asyncio.run(twice())
    assert first.selected == [] and first.degraded and first.degraded.startswith("fail_closed")
    assert second.degraded and second.degraded.startswith("fail_closed")
    status = enforcer.status()
    # Fast without a wall-clock bound: one failed call opened the breaker, the second never tried Redis.
    assert status["breaker_open"] is True and status["failures"] == 1
    enforcer.close()


@pytest.mark.parametrize("mode", ["fail_open"])
def test_fail_open_uses_the_local_cap_on_the_async_path(mode: str) -> None:
    policy = make_policy(
        POLICY + f"\ntimeout_ms: 50\noutage: {{mode: {mode}, local_cap: {{limit: 1, window: 1h}}}}\n"
    )
    enforcer = build_enforcer("redis://127.0.0.1:1/0", policy, key_prefix="test-caps-dead")

    async def run() -> list[Any]:
        return [await enforcer.aselect_and_record(MEMBER, CANDIDATES, 3, "home", NOW) for _ in range(3)]

    decisions = asyncio.run(run())
    assert all(d.degraded and d.degraded.startswith("fail_open") for d in decisions)
    assert [len(d.selected) for d in decisions] == [1, 0, 0]  # local_cap: one offer an hour
    enforcer.close()
