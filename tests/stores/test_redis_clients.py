"""The client factory (``recsys.stores.redis``): start-up errors naming the setting, standalone / Cluster /
asyncio clients against real servers, and the one timeout + circuit-breaker policy under a frozen Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from recsys.stores.redis import (
    CallGuard,
    CircuitBreaker,
    RedisCallPolicy,
    RedisClients,
    RedisConfig,
    RedisConfigError,
    RedisUnavailable,
    TLSOptions,
    check_startup,
)
from tests.conftest import REDIS_URL, LocalCluster, RedisProcess, spare_ports, unique_prefix

# ------------------------------------------------------------------------------------------------------------
# Settings that cannot work: each a clear error at start-up, naming the setting
# ------------------------------------------------------------------------------------------------------------


def test_unknown_scheme_names_the_url_setting() -> None:
    with pytest.raises(RedisConfigError) as err:
        check_startup(RedisConfig("redis-cluster://127.0.0.1:7000"))
    assert err.value.setting == "RECSYS_REDIS_URL"
    assert str(err.value).startswith("RECSYS_REDIS_URL: unknown scheme")
    assert "redis+cluster://" in str(err.value)  # says what would work


def test_password_in_a_bad_url_is_not_printed() -> None:
    with pytest.raises(RedisConfigError) as err:
        RedisConfig("http://user:hunter2secret@127.0.0.1:6379").validate()
    assert "hunter2secret" not in str(err.value)


@pytest.mark.parametrize("field", ["certfile", "keyfile", "ca_certs"])
def test_missing_tls_file_names_its_setting(tmp_path: Path, field: str) -> None:
    existing = tmp_path / "present.pem"
    existing.write_text("x")
    files = {"certfile": str(existing), "keyfile": str(existing), "ca_certs": str(existing)}
    files[field] = str(tmp_path / "absent.pem")
    with pytest.raises(RedisConfigError) as err:
        check_startup(RedisConfig("rediss://127.0.0.1:6379/0", tls=TLSOptions(**files)))
    assert err.value.setting == f"RECSYS_REDIS_TLS_{field.upper()}"
    assert "absent.pem" in str(err.value)


def test_tls_files_on_a_plain_url_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(RedisConfigError) as err:
        RedisConfig("redis://127.0.0.1:6379/0", tls=TLSOptions(ca_certs=str(ca))).validate()
    assert err.value.setting == "RECSYS_REDIS_URL"
    assert "rediss://" in str(err.value)


def test_unreachable_cluster_names_the_url_setting() -> None:
    a, b = spare_ports(2)  # nothing listens there
    with pytest.raises(RedisConfigError) as err:
        check_startup(RedisConfig(f"redis+cluster://127.0.0.1:{a},127.0.0.1:{b}"))
    assert err.value.setting == "RECSYS_REDIS_URL"
    assert "no node of the Redis Cluster" in str(err.value)
    assert f"127.0.0.1:{a}" in str(err.value) and f"127.0.0.1:{b}" in str(err.value)


def test_unreachable_standalone_names_the_url_setting() -> None:
    (port,) = spare_ports(1)
    with pytest.raises(RedisConfigError) as err:
        check_startup(RedisConfig(f"redis://127.0.0.1:{port}/0"))
    assert err.value.setting == "RECSYS_REDIS_URL"
    assert f"127.0.0.1:{port}" in str(err.value)


def test_cluster_mode_on_a_standalone_redis_is_refused(own_redis: RedisProcess) -> None:
    with pytest.raises(RedisConfigError) as err:
        check_startup(RedisConfig(f"redis://127.0.0.1:{own_redis.port}", mode="cluster"))
    assert err.value.setting == "RECSYS_REDIS_URL"
    assert "not a Redis Cluster node" in str(err.value)


def test_cluster_with_a_missing_slot_range_names_the_url_setting(tmp_path: Path) -> None:
    """A one-node cluster holding slots 0-9999 only: 6,384 slots have no master."""
    (port,) = spare_ports(1, bus=True)
    node = RedisProcess(
        port, tmp_path / "half", ("--cluster-enabled", "yes", "--cluster-config-file", "n.conf")
    )
    node.start()
    try:
        c = node.client()
        c.execute_command("CLUSTER ADDSLOTSRANGE", 0, 9999)
        c.close()
        with pytest.raises(RedisConfigError) as err:
            check_startup(RedisConfig(f"redis+cluster://127.0.0.1:{port}"))
    finally:
        node.stop()
    assert err.value.setting == "RECSYS_REDIS_URL"
    assert "covers 10000 of 16384 hash slots (missing 10000-16383)" in str(err.value)


def test_cluster_url_with_a_database_is_refused() -> None:
    with pytest.raises(RedisConfigError, match="RECSYS_REDIS_URL: a Redis Cluster has only database 0"):
        RedisConfig("redis+cluster://127.0.0.1:7000/3").validate()


def test_sentinel_url_needs_a_service_name() -> None:
    with pytest.raises(RedisConfigError, match=r"RECSYS_REDIS_URL: .*service name"):
        RedisConfig("redis+sentinel://127.0.0.1:26379").validate()
    nodes, service, db = RedisConfig("redis+sentinel://a:1,b:2/mymaster/2").sentinel_target()
    assert [str(n) for n in nodes] == ["a:1", "b:2"] and service == "mymaster" and db == 2


def test_mode_setting_contradicting_the_url_is_refused() -> None:
    with pytest.raises(RedisConfigError) as err:
        RedisConfig("redis+cluster://127.0.0.1:7000", mode="sentinel").validate()
    assert err.value.setting == "RECSYS_REDIS_MODE"


def test_credentials_from_settings_win_over_the_url() -> None:
    cfg = RedisConfig("redis+cluster://alice:fromurl@h1:1,h2:2", password="fromsettings")
    assert cfg.credentials() == ("alice", "fromsettings")
    assert RedisConfig("redis://bob:pw@h:1/0").credentials() == ("bob", "pw")


# ------------------------------------------------------------------------------------------------------------
# Real servers
# ------------------------------------------------------------------------------------------------------------


def test_standalone_sync_and_async_clients_reach_the_same_redis() -> None:
    clients = RedisClients(RedisConfig(REDIS_URL), check=True)
    key = unique_prefix("factory")
    try:
        assert clients.mode == "standalone" and not clients.is_cluster
        clients.sync.set(key, b"v", ex=60)

        async def read() -> bytes | None:
            try:
                return await clients.guard.acall(lambda: clients.aio.get(key))
            finally:
                await clients.aclose()

        assert asyncio.run(read()) == b"v"
    finally:
        clients.sync.delete(key)
        clients.close()


def test_acl_user_and_password_are_passed_through(own_redis: RedisProcess) -> None:
    admin = own_redis.client()
    user = f"app-{unique_prefix('acl')}"
    admin.execute_command("ACL", "SETUSER", user, "on", ">s3cret-pass", "~*", "+@all")
    try:
        ok = RedisClients(RedisConfig(own_redis.url, username=user, password="s3cret-pass"), check=True)
        assert ok.sync.acl_whoami() == user  # redis-py decodes ACL WHOAMI
        ok.close()
        with pytest.raises(RedisConfigError) as err:
            check_startup(RedisConfig(own_redis.url, username=user, password="wrong"))
        assert err.value.setting == "RECSYS_REDIS_PASSWORD"
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_cluster_clients_route_keys_of_every_slot(cluster: LocalCluster) -> None:
    # a patient timeout: this test is about routing, not latency, on a loaded host
    clients = RedisClients(RedisConfig(cluster.url, policy=RedisCallPolicy(timeout_ms=2000)), check=True)
    prefix = unique_prefix("cl")
    keys = [f"{prefix}:{{m{i}}}" for i in range(64)]  # 64 hash tags: spread over the three masters
    try:
        assert clients.is_cluster
        for k in keys:
            clients.sync.set(k, k.encode(), ex=60)
        assert {cluster.master_of(k).port for k in keys} == {m.port for m in cluster.masters()}

        async def read_all() -> list[bytes | None]:
            try:
                aio = await clients.aconnect()  # the topology, read outside the calls' budget
                return list(
                    await asyncio.gather(*(clients.guard.acall(lambda k=k: aio.get(k)) for k in keys))
                )
            finally:
                await clients.aclose()

        assert asyncio.run(read_all()) == [k.encode() for k in keys]
        assert len(list(clients.iter_nodes())) == 3
    finally:
        for k in keys:
            clients.sync.delete(k)
        clients.close()


def test_redis_py_lock_is_released_only_by_its_owner() -> None:
    clients = RedisClients(RedisConfig(REDIS_URL))
    name = unique_prefix("lock")
    try:
        mine = clients.lock(name, timeout_s=0.2)
        assert mine.acquire()
        wait = time.monotonic() + 5
        while clients.sync.exists(name) and time.monotonic() < wait:  # expires: another worker takes it
            time.sleep(0.02)
        theirs = clients.lock(name, timeout_s=30)
        assert theirs.acquire()
        with pytest.raises(redis.exceptions.LockError):
            mine.release()  # an unconditional DELETE would have released theirs
        assert clients.sync.exists(name) == 1
        theirs.release()
    finally:
        clients.sync.delete(name)
        clients.close()


# ------------------------------------------------------------------------------------------------------------
# The policy: one timeout, no retries, a breaker
# ------------------------------------------------------------------------------------------------------------


def test_breaker_opens_backs_off_doubling_and_closes_on_a_trial_success() -> None:
    now = [0.0]
    b = CircuitBreaker(
        RedisCallPolicy(breaker_backoff_ms=100, breaker_max_backoff_ms=300), clock=lambda: now[0]
    )
    assert b.allow()
    b.failure("redis timeout")
    assert b.is_open and not b.allow()
    now[0] = 0.101
    assert b.allow() and not b.allow()  # one trial at a time
    b.failure("redis timeout")  # back-off doubles: 200 ms (jitter 0.8-1.0)
    now[0] = 0.101 + 0.159
    assert not b.allow()
    now[0] = 0.101 + 0.201
    assert b.allow()
    b.failure("redis timeout")  # 400 ms capped at 300 ms
    now[0] = 0.302 + 0.301
    assert b.allow()
    b.success()
    assert not b.is_open and b.failures == 0 and b.allow()


class LoopLag:
    """How late the event loop runs a task that asked to wake every ``tick_s``: the scheduling delay any
    coroutine of the loop saw meanwhile (a loaded host, or the loop busy with other work)."""

    def __init__(self, tick_s: float = 0.005) -> None:
        self.tick_s = tick_s
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.tick_s)
            self.worst = max(self.worst, time.perf_counter() - t0 - self.tick_s)


async def _frozen_calls(
    clients: RedisClients, n: int, slots: asyncio.Semaphore | None = None
) -> tuple[list[tuple[float, str]], float]:
    """``n`` concurrent GETs; each one's own elapsed time and outcome, and the loop's worst scheduling delay
    meanwhile. ``slots``: instead of the guard, each call takes one of them and then starts its timeout (a
    client that makes calls wait for one another, for the check to catch)."""
    aio = clients.aio
    lag = LoopLag()
    probe = asyncio.create_task(lag.run())

    async def call(i: int) -> None:
        if slots is None:
            await clients.guard.acall(lambda: aio.get(f"frozen:{i}"))
            return
        async with slots:
            try:
                async with asyncio.timeout(clients.policy.timeout_s):
                    await aio.get(f"frozen:{i}")
            except TimeoutError as e:
                raise RedisUnavailable("redis timeout") from e

    async def one(i: int) -> tuple[float, str]:
        t0 = time.perf_counter()
        try:
            await call(i)
            outcome = "answered"
        except RedisUnavailable as e:
            outcome = e.reason
        return time.perf_counter() - t0, outcome

    try:
        results = list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        probe.cancel()
    return results, lag.worst


# The bound: a call ends within the timeout + 10 ms of its own start (the 100 cancellations cost about
# 12 ms of CPU on an idle host).
MARGIN_S = 0.010


def late_calls(results: list[tuple[float, str]], timeout_s: float, lag_s: float) -> list[float]:
    """The calls that took longer than the timeout + the margin + the loop's worst scheduling delay: a call
    that waited behind another's timeout took a whole timeout more, which no scheduling delay explains
    unless the loop itself stalled that long (then the check is as loose as the stall)."""
    return sorted(t for t, _ in results if t > timeout_s + MARGIN_S + lag_s)


def _frozen_scenario(
    own_redis: RedisProcess, clients: RedisClients, warm: bool, slots: int | None = None
) -> tuple[list[tuple[float, str]], float, float, str]:
    async def scenario() -> tuple[list[tuple[float, str]], float, float, str]:
        try:
            if warm:  # the pool holds 100 connections, as a busy worker's would (a loaded host may time
                # some out: connect until 100 have answered)
                deadline = time.monotonic() + 30
                while (
                    sum(
                        r is True
                        for r in await asyncio.gather(
                            *(clients.aio.ping() for _ in range(100)), return_exceptions=True
                        )
                    )
                    < 100
                ):
                    assert time.monotonic() < deadline, "could not open 100 connections"
                    await asyncio.sleep(0.1)
            own_redis.freeze()
            sem = asyncio.Semaphore(slots) if slots else None
            results, lag = await _frozen_calls(clients, 100, sem)
            t0 = time.perf_counter()
            try:
                await clients.guard.acall(lambda: clients.aio.get("x"))
                after = "answered"
            except RedisUnavailable as e:
                after = e.reason
            fast = time.perf_counter() - t0
            own_redis.thaw()
            deadline = time.monotonic() + 10
            while True:  # the breaker lets a trial through after its back-off
                try:
                    await clients.guard.acall(lambda: clients.aio.ping())
                    break
                except RedisUnavailable:
                    assert time.monotonic() < deadline, "Redis never came back after SIGCONT"
                    await asyncio.sleep(0.02)
            return results, lag, fast, after
        finally:
            own_redis.thaw()
            await clients.aclose()

    try:
        return asyncio.run(scenario())
    finally:
        clients.close()


@pytest.mark.parametrize("warm", [True, False], ids=["open-connections", "new-connections"])
def test_frozen_redis_every_awaited_call_ends_within_the_timeout(own_redis: RedisProcess, warm: bool) -> None:
    """SIGSTOP the Redis under 100 concurrent calls: each ends within the timeout + 10 ms of its own start,
    plus the event loop's worst scheduling delay measured meanwhile (no call waits behind another's timeout),
    as a timeout; then calls fail at once while the breaker is open, and succeed again after SIGCONT."""
    timeout_ms = 200.0
    clients = RedisClients(
        RedisConfig(own_redis.url, policy=RedisCallPolicy(timeout_ms=timeout_ms, breaker_backoff_ms=1000))
    )
    results, lag, fast, after = _frozen_scenario(own_redis, clients, warm)
    worst = max(t for t, _ in results)
    assert {o for _, o in results} == {"redis timeout"}
    print(
        f"frozen Redis, 100 concurrent calls: slowest {worst * 1000:.1f} ms (timeout {timeout_ms:.0f} ms, "
        f"worst loop delay {lag * 1000:.1f} ms)"
    )
    late = late_calls(results, timeout_ms / 1000, lag)
    assert not late, f"{len(late)} calls over the timeout + margin + loop delay: {late[-3:]}"
    assert after == "redis timeout" and fast < 0.005 + lag  # breaker open: no wait at all


def test_the_frozen_redis_check_catches_calls_that_wait_behind_others(own_redis: RedisProcess) -> None:
    """The check above fails for a client whose calls queue for 50 slots before their timeouts start (the
    hand-written client this layer replaced did so with 4): the second 50 wait a whole timeout more."""
    clients = RedisClients(
        RedisConfig(own_redis.url, policy=RedisCallPolicy(timeout_ms=200.0, breaker_backoff_ms=1000))
    )
    results, lag, _, _ = _frozen_scenario(own_redis, clients, True, slots=50)
    assert {o for _, o in results} == {"redis timeout"}
    # The second 50 take two timeouts; the loop's delay, however large, cannot hide all of them.
    assert sorted(t for t, _ in results)[50] >= 0.39
    late = late_calls(results, 0.2, lag)
    if lag < 0.19:  # unless the loop stalled for about a timeout, each of the second 50 is over the bound
        assert len(late) >= 50, (len(late), lag)


def test_blocking_call_times_out_and_opens_the_breaker(own_redis: RedisProcess) -> None:
    clients = RedisClients(RedisConfig(own_redis.url, policy=RedisCallPolicy(timeout_ms=100)))
    try:
        clients.sync.ping()
        own_redis.freeze()
        t0 = time.perf_counter()
        with pytest.raises(RedisUnavailable, match="redis timeout"):
            clients.guard.call(lambda: clients.sync.get("x"))
        assert time.perf_counter() - t0 < 1.0  # the socket timeout, not a hang (generous: loaded machine)
        assert clients.guard.breaker.is_open
        with pytest.raises(RedisUnavailable):
            clients.guard.call(lambda: clients.sync.get("x"))
    finally:
        own_redis.thaw()
        clients.close()


def test_guard_reports_an_unreachable_redis_without_raising_anything_else() -> None:
    (port,) = spare_ports(1)
    guard = CallGuard(RedisCallPolicy(timeout_ms=100))
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.1, socket_connect_timeout=0.1)
    with pytest.raises(RedisUnavailable, match="redis unreachable"):
        guard.call(client.ping)
    assert guard.breaker.last_error == "redis unreachable"
