"""Outage behaviour against a real redis-server of our own: killed mid-traffic, frozen (slow), restarted.

No exception escapes, every call returns within a bound, the configured policy applies (fail_closed: only
exempt offers; fail_open: the per-process conservative cap), and service recovers by itself.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from recsys.capping.api import CapCandidate, CapDecision, CapEnforcer, CapMember, build_enforcer
from tests.capping.conftest import make_policy
from tests.conftest import RedisProcess, spare_ports

TIMEOUT_MS = 20
# "Never hangs": a call takes the 20 ms socket timeout at most, plus scheduling noise — which on the shared
# 2-core test machine (load average above 10 while other suites run) reaches a few hundred ms. The bound
# below separates that from a hang (a default client would block for seconds); medians are checked too.
MAX_CALL_S = 1.0

POLICY = """
timeout_ms: 20
outage:
  mode: {mode}
  breaker_backoff_ms: 100
  breaker_max_backoff_ms: 400
  local_cap: {{limit: 1, window: 1h}}
caps:
  - {{name: member_daily, scope: member, limit: 1000, window: day}}
"""

EXEMPT = CapCandidate("SVC", "ancillary", "insurance", exempt=True)
CANDS = [CapCandidate(f"O{i}", "ancillary", "seat") for i in range(5)] + [EXEMPT]
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


class Traffic:
    """Background threads calling select_and_record for many members, recording every outcome."""

    def __init__(self, e: CapEnforcer, threads: int = 3) -> None:
        self.e = e
        self.results: list[tuple[float, float, CapDecision]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            m = CapMember(f"T{worker}{i:06d}", "basic", "UTC")
            t0 = time.monotonic()
            try:
                d = self.e.select_and_record(m, CANDS, 3, "home", NOW)
            except BaseException as exc:
                self.errors.append(exc)
                return
            with self._lock:
                self.results.append((t0, time.monotonic() - t0, d))
            time.sleep(0.002)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def since(self, t: float) -> list[tuple[float, float, CapDecision]]:
        with self._lock:
            return [r for r in self.results if r[0] >= t]


def wait_for(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def assert_mostly_healthy(decisions: list[CapDecision]) -> None:
    """Redis up: answers come from Redis. On the loaded shared test machine a call now and then misses the
    20 ms timeout (and is then correctly degraded), so 'healthy' means at least 80 % of the calls."""
    ok = [d for d in decisions if d.degraded is None]
    assert decisions and len(ok) >= 0.8 * len(decisions), [d.degraded for d in decisions]
    assert all(len(d.selected) == 3 for d in ok)


def test_fail_closed_kill_mid_traffic_and_recover(fresh_redis: RedisProcess) -> None:
    e = build_enforcer(fresh_redis.url, make_policy(POLICY.format(mode="fail_closed")), key_prefix="caps")
    assert wait_for(
        lambda: e.select_and_record(CapMember("W", "basic"), CANDS, 3, "home", NOW).degraded is None
    )
    with Traffic(e) as traffic:
        assert wait_for(lambda: len(traffic.results) >= 30)
        healthy = [d for _, _, d in traffic.results]
        assert_mostly_healthy(healthy)

        killed_at = time.monotonic()
        fresh_redis.kill()
        assert wait_for(lambda: len(traffic.since(killed_at)) >= 60)
        time.sleep(0.6)  # long enough for the back-off to grow (100 → 200 → 400 ms)
        during = traffic.since(killed_at + 0.05)
        degraded = [d for _, _, d in during if d.degraded]
        assert degraded, "no call saw the outage"
        for d in degraded:
            assert d.degraded is not None and d.degraded.startswith("fail_closed: redis")
            assert d.selected == ["SVC"]  # only the exempt offer
            assert {s.reason for s in d.suppressed} == {"outage:fail_closed"}
        outage_latencies = sorted(lat for _, lat, _ in traffic.since(killed_at))
        assert outage_latencies[-1] < MAX_CALL_S
        assert outage_latencies[len(outage_latencies) // 2] < TIMEOUT_MS / 1000
        # The breaker is open most of the time: most calls do not even try Redis.
        status = e.status()
        assert (
            status["breaker_open"] and status["last_error"] == "redis unreachable" and status["failures"] >= 1
        )

        restarted_at = time.monotonic()
        fresh_redis.start()
        assert wait_for(lambda: any(d.degraded is None for _, _, d in traffic.since(restarted_at)), timeout=5)
        time.sleep(0.2)
        assert_mostly_healthy([d for _, _, d in traffic.since(time.monotonic() - 0.15)])
    assert traffic.errors == []
    assert e.status()["breaker_open"] is False
    assert max(lat for _, lat, _ in traffic.results) < MAX_CALL_S
    all_degraded = [d for _, _, d in traffic.results if d.degraded]
    snap = e.counters.snapshot()
    assert snap["degraded:fail_closed"] == len(all_degraded)
    assert snap["outage:fail_closed"] == sum(len(d.suppressed) for d in all_degraded)
    e.close()


def test_slow_redis_times_out_and_recovers(fresh_redis: RedisProcess) -> None:
    e = build_enforcer(fresh_redis.url, make_policy(POLICY.format(mode="fail_closed")), key_prefix="caps")
    m = CapMember("M0000001", "basic", "UTC")
    assert wait_for(lambda: e.select_and_record(m, CANDS, 3, "home", NOW).degraded is None)
    fresh_redis.freeze()  # connections stay open; Redis just stops answering
    try:
        latencies = []
        for i in range(20):
            t0 = time.monotonic()
            d = e.select_and_record(m, CANDS, 3, "home", NOW + timedelta(seconds=i))
            latencies.append(time.monotonic() - t0)
            assert d.degraded == "fail_closed: redis timeout" and d.selected == ["SVC"]
            time.sleep(0.03)
        assert latencies[0] >= TIMEOUT_MS / 1000 * 0.9  # it did wait for the timeout...
        assert max(latencies) < MAX_CALL_S  # ...and no longer
        assert (
            sorted(latencies)[len(latencies) // 2] < TIMEOUT_MS / 1000
        )  # breaker open: most calls skip Redis
        # Events and the support view do not raise either.
        e.record_event(m, CANDS[0], "dismiss", "home", NOW)
        assert e.member_state(m, NOW)["degraded"].startswith("unavailable")
    finally:
        fresh_redis.thaw()
    assert wait_for(lambda: e.select_and_record(m, CANDS, 3, "home", NOW).degraded is None, timeout=5)
    e.close()


def test_fail_open_uses_conservative_local_cap(fresh_redis: RedisProcess) -> None:
    e = build_enforcer(fresh_redis.url, make_policy(POLICY.format(mode="fail_open")), key_prefix="caps")
    m1, m2 = CapMember("M0000001", "basic", "UTC"), CapMember("M0000002", "basic", "UTC")
    # Warm up (connection, script load) with another member: a degraded answer would use m1's local cap.
    assert wait_for(
        lambda: e.select_and_record(CapMember("W", "basic"), CANDS, 3, "home", NOW).degraded is None
    )
    fresh_redis.kill()
    d = e.select_and_record(m1, CANDS, 3, "home", NOW + timedelta(minutes=1))
    assert d.degraded is not None and d.degraded.startswith("fail_open: redis")
    # One non-exempt offer per member per hour in this process, exempt offers always.
    assert d.selected == ["O0", "SVC"]
    assert [s.reason for s in d.suppressed] == ["outage:local_cap:rolling_1h"] * 4
    d = e.select_and_record(m1, CANDS, 3, "home", NOW + timedelta(minutes=2))
    assert d.selected == ["SVC"]
    assert e.select_and_record(m2, CANDS, 3, "home", NOW + timedelta(minutes=2)).selected == ["O0", "SVC"]
    # The 10:01 impression's 2.5 min bucket [10:00, 10:02:30) leaves the 1h window at 11:02:30.
    assert e.select_and_record(m1, CANDS, 3, "home", NOW + timedelta(minutes=62)).selected == ["SVC"]
    assert e.select_and_record(m1, CANDS, 3, "home", NOW + timedelta(minutes=63)).selected == ["O0", "SVC"]
    # A dismissal during the outage is honoured locally.
    e.record_event(m2, CANDS[1], "dismiss", "home", NOW + timedelta(minutes=3))
    d = e.select_and_record(m2, CANDS[1:], 3, "home", NOW + timedelta(minutes=70))
    assert d.selected == ["O2", "SVC"] and d.suppressed[0].reason == "cooldown:dismiss:offer"
    fresh_redis.start()  # a fresh, empty Redis
    assert wait_for(lambda: e.select_and_record(m1, CANDS, 3, "home", NOW).degraded is None, timeout=5)
    e.close()


def test_unreachable_from_the_start_never_raises() -> None:
    url = f"redis://127.0.0.1:{spare_ports(1)[0]}/0"  # nothing listens there
    e = build_enforcer(url, make_policy(POLICY.format(mode="fail_closed")))
    assert not e.ping()
    m = CapMember("M0000001", "basic", "UTC")
    for _ in range(5):
        t0 = time.monotonic()
        d = e.select_and_record(m, CANDS, 3, "home", NOW)
        assert time.monotonic() - t0 < MAX_CALL_S
        assert d.selected == ["SVC"] and d.degraded == "fail_closed: redis unreachable"
    e.record_event(m, CANDS[0], "purchase", "home", NOW)
    assert e.member_state(m, NOW)["caps"] == []


def test_fail_open_local_cap_counts_on_serve_even_in_event_mode(fresh_redis: RedisProcess) -> None:
    policy = make_policy("count_on: event\n" + POLICY.format(mode="fail_open"))
    e = build_enforcer(fresh_redis.url, policy, key_prefix="caps")
    fresh_redis.kill()
    m = CapMember("M0000001", "basic", "UTC")
    assert e.select_and_record(m, CANDS, 3, "home", NOW).selected == ["O0", "SVC"]
    assert e.select_and_record(m, CANDS, 3, "home", NOW + timedelta(minutes=1)).selected == ["SVC"]


def test_async_path_times_out_fails_closed_and_recovers(fresh_redis: RedisProcess) -> None:
    """The path the service awaits: a frozen Redis costs one timeout then the breaker answers at once; a
    killed one is refused at once; after each the calls go back to Redis."""
    import asyncio

    e = build_enforcer(fresh_redis.url, make_policy(POLICY.format(mode="fail_closed")), key_prefix="caps")
    m = CapMember("M0000001", "basic", "UTC")

    async def until_healthy(timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await e.aselect_and_record(m, CANDS, 3, "home", NOW)).degraded is None:
                return True
            await asyncio.sleep(0.02)
        return False

    async def degraded_calls(n: int) -> list[tuple[float, CapDecision]]:
        out = []
        for i in range(n):
            t0 = time.monotonic()
            d = await e.aselect_and_record(m, CANDS, 3, "home", NOW + timedelta(seconds=i))
            out.append((time.monotonic() - t0, d))
            await asyncio.sleep(0.03)
        return out

    async def scenario() -> None:
        assert await until_healthy()
        fresh_redis.freeze()
        try:
            frozen = await degraded_calls(10)
        finally:
            fresh_redis.thaw()
        assert all(d.degraded == "fail_closed: redis timeout" and d.selected == ["SVC"] for _, d in frozen)
        latencies = [lat for lat, _ in frozen]
        assert latencies[0] >= TIMEOUT_MS / 1000 * 0.9 and max(latencies) < MAX_CALL_S
        assert sorted(latencies)[len(latencies) // 2] < TIMEOUT_MS / 1000  # breaker open: Redis skipped
        assert await until_healthy()

        fresh_redis.kill()
        killed = await degraded_calls(5)
        assert all(d.degraded and d.degraded.startswith("fail_closed: redis") for _, d in killed)
        assert max(lat for lat, _ in killed) < MAX_CALL_S
        fresh_redis.start()
        assert await until_healthy()
        await e.aclose()

    asyncio.run(scenario())
    assert e.status()["breaker_open"] is False
    e.close()
