"""The member store and the cap store on a Redis Cluster of the test session's own (3 masters, 3 replicas):
publishing switches versions with every member's keys on their own slots, one script reads a member's
profile and cap state, and concurrent calls for one member never exceed a cap."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import redis.cluster

from recsys.capping.api import CapMember, CapState, PolicyHolder, build_enforcer
from recsys.stores.member_store import RedisMemberStore
from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig
from tests.capping.conftest import make_policy
from tests.capping.test_concurrency import CANDIDATES, MEMBER, NOW, POLICY, check_caps_held
from tests.conftest import LocalCluster


def _clients(cluster: LocalCluster) -> RedisClients:
    return RedisClients(RedisConfig(cluster.url, policy=RedisCallPolicy(timeout_ms=5000)))


def _profiles(n: int, gen: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "member_id": [f"M{i:05d}" for i in range(n)],
            "tier": ["gold" if i % 3 else "basic" for i in range(n)],
            "gen": [gen] * n,
        }
    )


def test_publish_read_and_switch_versions_on_a_cluster(cluster: LocalCluster) -> None:
    clients = _clients(cluster)
    assert isinstance(clients.sync, redis.cluster.RedisCluster)
    try:
        store = RedisMemberStore(
            clients, prefix="cl-members", batch_size=50, old_version_ttl=timedelta(seconds=30)
        )
        vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
        store.publish(_profiles(300, 1), vectors, "1")
        # the members' keys are spread over the three masters (one slot per member)
        masters = {cluster.master_of(store.member_key("1", f"M{i:05d}")).port for i in range(300)}
        assert len(masters) == 3
        rec = store.get("M00123")
        assert rec is not None and rec.version == "1" and rec.profile["gen"] == 1
        assert rec.embedding is not None
        np.testing.assert_array_equal(rec.embedding, vectors[123].astype(np.float16).astype(np.float32))
        report = store.publish(_profiles(300, 2), None, "2")
        assert report.previous_version == "1" and store.active_version() == "2"
        rec = store.get("M00123")
        assert rec is not None and rec.version == "2" and rec.profile["gen"] == 2 and rec.embedding is None
        # the old version's keys, found on every master, expire; the new version's live version_ttl
        old = list(store.version_keys("1"))
        assert len(old) == 300
        assert all(0 < clients.sync.ttl(k) <= 30 for k in old[:20])
        assert clients.sync.ttl(store.member_key("2", "M00123")) > 30 * 86_400
    finally:
        clients.close()


def test_one_script_reads_profile_and_cap_state_on_a_cluster(cluster: LocalCluster) -> None:
    clients = _clients(cluster)
    try:
        store = RedisMemberStore(clients, prefix="cl-members2")
        store.publish(_profiles(5, 1), None, "1")
        policy = make_policy("count_on: serve\n" + POLICY)
        caps = build_enforcer(cluster.url, PolicyHolder.static(policy), key_prefix="cl-caps", clients=clients)
        member = MEMBER.__class__("M00003", "gold", "UTC")
        assert caps.select_and_record(member, CANDIDATES, 3, "home", NOW).selected == ["S0", "S1", "M0"]
        key = caps.state_key(member.member_id)
        assert key is not None
        read = store.read(member.member_id, "CA1|2026-11-23", key)
        assert read.record is not None and read.extra
        # the state read with the profile decides like a fresh read: S0, S1, M0 are taken (offer_weekly)
        d = caps.select_and_record(member, CANDIDATES, 3, "home", NOW, state=CapState.of(read.extra))
        assert d.selected == ["M1", "M2", "M3"]
    finally:
        clients.close()


def test_concurrent_calls_for_one_member_never_exceed_a_cap_on_a_cluster(cluster: LocalCluster) -> None:
    clients = _clients(cluster)
    try:
        policy = make_policy("count_on: serve\n" + POLICY)
        caps = build_enforcer(cluster.url, PolicyHolder.static(policy), key_prefix="cl-conc", clients=clients)
        barrier = threading.Barrier(50)
        out: list[list[str]] = []
        errors: list[BaseException] = []

        def call() -> None:
            try:
                barrier.wait(timeout=60)
                d = caps.select_and_record(MEMBER, CANDIDATES, 3, "home", NOW)
                assert d.degraded is None, d.degraded
                out.append(d.selected)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == [] and len(out) == 50
        check_caps_held(out)
    finally:
        clients.close()


def test_a_dead_master_stops_only_its_own_members(cluster: LocalCluster) -> None:
    """Each master has its own circuit breaker: while one is dead its members get the outage policy's answer
    (fail_closed) and the members of the other masters are capped as usual; once its replica has taken over,
    its members are capped again."""
    clients = RedisClients(
        RedisConfig(
            cluster.url,
            policy=RedisCallPolicy(timeout_ms=1000, breaker_backoff_ms=100, breaker_max_backoff_ms=200),
        )
    )
    policy = make_policy("caps: [{name: member_daily, scope: member, limit: 100, window: day}]")
    caps = build_enforcer(cluster.url, PolicyHolder.static(policy), key_prefix="cl-dead", clients=clients)
    members = [CapMember(f"M{i:07d}", "basic") for i in range(40)]
    home = {m.member_id: cluster.master_of(f"cl-dead:{{{m.member_id}}}").port for m in members}
    a = members[0]
    others = [m for m in members if home[m.member_id] != home[a.member_id]][:5]
    assert len({home[m.member_id] for m in others}) == 2  # the two other masters
    try:
        for m in [a, *others]:
            assert caps.select_and_record(m, CANDIDATES[:2], 2, "home", NOW).degraded is None
        cluster.node(home[a.member_id]).kill()
        assert caps.select_and_record(a, CANDIDATES[:2], 2, "home", NOW).degraded is not None
        # a's master's breaker is open; the other masters' members are answered by Redis, none degraded
        for _ in range(3):
            for m in others:
                d = caps.select_and_record(m, CANDIDATES[:2], 2, "home", NOW)
                assert d.degraded is None and d.selected == ["S0", "S1"], d
        assert [b.rpartition(":")[2] for b in clients.guard.open_breakers] in ([], [str(home[a.member_id])])
        deadline = time.monotonic() + 60
        while caps.select_and_record(a, CANDIDATES[:2], 2, "home", NOW).degraded is not None:
            assert time.monotonic() < deadline, "the replica never took over"
            time.sleep(0.1)
        assert not clients.guard.open_breakers
    finally:
        caps.close()
        clients.close()
