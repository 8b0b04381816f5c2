"""The service on each Redis deployment it supports: the shared standalone Redis and a Redis Cluster of three
masters and three replicas (the tests' own, ``tests/conftest.py``); and on a Redis frozen with SIGSTOP.

- the member store publishes, reads and switches versions (built as the service builds it);
- killing the master that holds a member's cap counters mid-traffic gives the cap policy's outage answer
  (fail_closed: exempt offers only; fail_open: the per-process local cap), never an error, and once the
  replica has taken over the member's cap is reached exactly: nothing counted twice, nothing lost;
- a frozen Redis under 100 concurrent requests costs each request at most one timeout: none waits behind
  another's.

The 200-concurrent-requests cap test runs on both deployments too (``test_caps_concurrency.py``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.launcher import run_service
from serving.app import build_member_store, build_redis_clients, create_app
from serving.config import Settings
from tests.conftest import LocalCluster, RedisProcess, spare_ports, unique_prefix, wait_until
from tests.serving.conftest import (
    MEMBERS_PREFIX,
    RedisDeployment,
    Registry,
    make_settings,
    service_env,
)
from tests.serving.test_api import rec_body
from tests.stores.test_member_store import embeddings, profiles

MEMBER_DAILY = 12  # the one cap of the fail-over policy below

FAILOVER_POLICY = """
version: "test-failover"
count_on: serve
timeout_ms: 250                  # generous: this test is about fail-over, not latency, on a loaded host
lifetime_ttl: 400d
outage:
  mode: {mode}
  breaker_backoff_ms: 50
  breaker_max_backoff_ms: 200
  local_cap: {{limit: 1, window: 1h, max_members: 1000}}
exempt: {{honour_offer_flag: true, offers: [], categories: []}}
caps:
  - name: member_daily
    scope: member
    limit: {limit}
    window: day
"""


def _store_settings(deployment: RedisDeployment) -> Settings:
    return Settings(redis_url=deployment.url, members_key_prefix=f"{deployment.prefix}-members")


def test_member_store_publishes_reads_and_switches_versions(redis_deployment: RedisDeployment) -> None:
    """Built as the service builds it: one worker publishes, reads, publishes again; another worker's store
    (its own clients, its own cached pointer) sees the new version within its pointer refresh."""
    settings = _store_settings(redis_deployment)
    clients, other_clients = build_redis_clients(settings), build_redis_clients(settings)
    assert clients is not None and other_clients is not None and clients.mode == redis_deployment.name
    store, other = build_member_store(settings, clients), build_member_store(settings, other_clients)
    try:
        assert store.active_version() is None and other.get("M00123") is None
        store.publish(profiles(300, gen=1), embeddings(300, 1), "1")
        assert store.active_version() == "1"
        rec = store.get("M00123")
        assert rec is not None and rec.version == "1" and rec.profile["gen"] == 1
        assert rec.profile["miles_balance"] == 12300
        assert rec.embedding is not None
        np.testing.assert_allclose(rec.embedding, embeddings(300, 1)[123], rtol=1e-2, atol=1e-2)

        report = store.publish(profiles(300, gen=2), embeddings(300, 2), "2")
        assert report.previous_version == "1" and store.active_version() == "2"
        rec = store.get("M00123")
        assert rec is not None and rec.version == "2" and rec.profile["gen"] == 2

        def other_sees_v2() -> bool:
            got = other.get("M00200")
            return got is not None and got.version == "2" and got.profile["gen"] == 2

        wait_until("another worker's store reads version 2", other_sees_v2, 30, 0.1)

        async def aread() -> Any:
            try:
                await other_clients.aconnect()  # as the service's lifespan does
                return await other.aread("M00299", None)
            finally:
                await other.aclose()
                await other_clients.aclose()

        read = asyncio.run(aread())
        assert read.record is not None and read.record.version == "2" and read.record.profile["gen"] == 2
        assert read.purchased == frozenset()
        assert store.get("M99999") is None
    finally:
        for s, c in ((store, clients), (other, other_clients)):
            s.close()
            c.close()


@dataclass(frozen=True)
class Answer:
    cap_degraded: str | None
    non_exempt: int  # non-exempt offers served
    withheld: dict[str, int] | None  # why fewer than asked, by reason (None: the limit was served)

    @property
    def state(self) -> str:
        """capped: the member's cap is used up; outage: Redis did not answer; ok: served."""
        if self.cap_degraded is not None:
            return "outage"
        if self.non_exempt == 0 and self.withheld is not None:
            return "capped" if self.withheld.get("frequency_cap", 0) > 0 else "outage"
        return "ok"


def _non_exempt(offers: list[dict[str, Any]], exempt: pd.Series) -> int:
    return sum(1 for o in offers if not bool(exempt.loc[o["offer_id"]]))


def _holds(node: RedisProcess, prefix: str, member: str) -> bool:
    c = node.client()
    try:
        return any(member.encode() in k for k in c.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        c.close()


def _replica_in_sync(master: RedisProcess) -> bool:
    c = master.client(decode_responses=True)
    try:
        info = c.info("replication")
    finally:
        c.close()
    replica = info.get("slave0")
    return isinstance(replica, dict) and int(replica["offset"]) == int(info["master_repl_offset"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_killing_a_master_mid_traffic_gives_the_outage_policy_then_the_exact_cap(
    registry: Registry,
    serving_world: Path,
    tmp_path: Path,
    cluster: LocalCluster,
    world_offers: pd.DataFrame,
    mode: str,
) -> None:
    """On the cluster only: the shared standalone Redis is not the tests' to kill (its outage is
    ``tests/capping/test_outage.py``'s, on a Redis of its own)."""
    prefix = unique_prefix("failover")
    policy = tmp_path / "caps.yaml"
    policy.write_text(FAILOVER_POLICY.format(mode=mode, limit=MEMBER_DAILY))
    settings = make_settings(
        registry,
        serving_world,
        tmp_path,
        prefix,
        redis_url=cluster.url,
        capping_policy_path=policy,
        members_key_prefix=f"{prefix}-members",
    )
    exempt = world_offers.set_index("offer_id")["exempt"]
    member = str(pd.read_parquet(serving_world / "members.parquet", columns=["member_id"]).iloc[42, 0])
    body = rec_body(member, placement="home", limit=3) | {"trip": None}
    answers: list[Answer] = []

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:

        def ask() -> Answer:
            r = client.post("/v1/recommendations", json=body)
            assert r.status_code == 200, r.text  # never an error, whatever Redis does
            got = r.json()
            answers.append(Answer(got["cap_degraded"], _non_exempt(got["offers"], exempt), got["withheld"]))
            return answers[-1]

        for _ in range(3):
            ask()
        assert all(a.state == "ok" for a in answers) and sum(a.non_exempt for a in answers) > 0
        # the master holding the member's keys (profile and cap hash share the member's hash tag)
        owners = [m for m in cluster.masters() if _holds(m, prefix, member)]
        assert len(owners) == 1, "the member's keys live on one master"
        victim = owners[0]
        wait_until("the replica has every write of the master", lambda: _replica_in_sync(victim), 10)
        victim.kill()
        killed_at = len(answers)

        deadline = time.monotonic() + 60
        while ask().state != "capped":  # the replica answers again, until the daily cap is used up
            assert time.monotonic() < deadline, f"no recovery within 60 s: {answers[killed_at:][-5:]}"
            time.sleep(0.05)

    after = answers[killed_at:]
    outage = [a for a in after if a.state == "outage"]
    assert outage, "the kill was noticed: some answers came while the member's master was down"
    # The member's profile and cap hash are read in one call from its master: while it is down the member
    # is served as unknown (nothing personal is eligible), or by the outage policy when the caps failed.
    assert all(a.cap_degraded is None or a.cap_degraded.startswith(f"{mode}:") for a in outage), outage
    if mode == "fail_closed":
        assert all(a.non_exempt == 0 for a in outage), "fail_closed serves exempt offers only"
    else:
        assert sum(a.non_exempt for a in outage) <= 1, "fail_open serves within the local cap (1 an hour)"
    counted = sum(a.non_exempt for a in answers if a.cap_degraded is None)
    assert counted == MEMBER_DAILY, f"non-exempt offers served while Redis answered: {counted}"
    assert cluster.master_of(f"{{{member}}}").port != victim.port, "a replica took over"


@pytest.mark.slow
def test_frozen_redis_costs_each_of_100_concurrent_requests_one_timeout_at_most(
    registry: Registry, serving_world: Path, tmp_path: Path, own_redis: RedisProcess
) -> None:
    """100 concurrent requests against a healthy Redis, then against the same Redis frozen (SIGSTOP): the
    slowest frozen answer is at most the slowest healthy one + one timeout per Redis call on the request's
    path (member read, cap check) + 1 s of slack for a loaded host. Requests that queued behind each other's
    timeouts would take tens of timeouts. (Each awaited call's own bound, timeout + 10 ms, is
    tests/stores/test_redis_clients.py's.)"""
    timeout_ms = 1000  # long enough that one timeout stands out from a loaded host's noise
    env = service_env(
        registry,
        serving_world,
        tmp_path,
        "frozen",
        RECSYS_REDIS_URL=own_redis.url,
        RECSYS_REDIS_TIMEOUT_MS=str(timeout_ms),
        RECSYS_MEMBERS_KEY_PREFIX=MEMBERS_PREFIX,
    )
    members = [f"M{i:07d}" for i in range(1, 101)]

    async def burst(url: str) -> list[tuple[float, int, str | None, int]]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as http:

            async def one(m: str) -> tuple[float, int, str | None, int]:
                t0 = time.perf_counter()
                r = await http.post(
                    "/v1/recommendations", json=rec_body(m, placement="home") | {"trip": None}
                )
                got = r.json()
                return time.perf_counter() - t0, r.status_code, got.get("cap_degraded"), len(got["offers"])

            return list(await asyncio.gather(*(one(m) for m in members)))

    with run_service(env, workers=1, ready_timeout_s=240) as svc:
        asyncio.run(burst(svc.url))  # warm: the loop's Redis connections are open
        healthy = asyncio.run(burst(svc.url))
        own_redis.freeze()
        try:
            frozen = asyncio.run(burst(svc.url))
        finally:
            own_redis.thaw()
    assert {s for _, s, _, _ in healthy + frozen} == {200}
    assert all(d is None for _, _, d, _ in healthy)
    # frozen: the member read (first on the path) timed out, so the member was served as unknown; a request
    # whose member read made it before the freeze met the cap check's timeout instead
    assert all(d is None or "timeout" in d for _, _, d, _ in frozen), {d for _, _, d, _ in frozen}
    offers_ok, offers_frozen = sum(n for *_, n in healthy), sum(n for *_, n in frozen)
    assert offers_frozen < offers_ok, "Redis frozen: members served as unknown or exempt offers only"
    slowest_ok, slowest_frozen = max(t for t, *_ in healthy), max(t for t, *_ in frozen)
    print(
        f"100 concurrent: slowest healthy {slowest_ok * 1e3:.0f} ms, frozen {slowest_frozen * 1e3:.0f} ms; "
        f"offers served {offers_ok} / {offers_frozen}"
    )
    assert slowest_frozen <= slowest_ok + 2 * timeout_ms / 1000 + 1.0, (slowest_ok, slowest_frozen)


def test_service_start_up_names_a_bad_redis_setting(tmp_path: Path) -> None:
    """``python -m serving`` refuses to start, naming the setting, before loading anything."""
    a, b = spare_ports(2)
    cases = {
        "RECSYS_REDIS_URL": {"RECSYS_REDIS_URL": "redis-cluster://127.0.0.1:7000"},
        "RECSYS_REDIS_TLS_CA_CERTS": {
            "RECSYS_REDIS_URL": "rediss://127.0.0.1:6379/0",
            "RECSYS_REDIS_TLS_CA_CERTS": str(tmp_path / "no-such-ca.pem"),
        },
        "unreachable": {"RECSYS_REDIS_URL": f"redis+cluster://127.0.0.1:{a},127.0.0.1:{b}"},
    }
    for name, env in cases.items():
        proc = subprocess.run(
            [sys.executable, "-m", "serving"],
            env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", **env},
            capture_output=True,
            timeout=120,
            check=False,
        )
        err = proc.stderr.decode()
        assert proc.returncode != 0, name
        assert "invalid service settings:" in err and ("RECSYS_REDIS_URL" in err or name in err), err[-2000:]
        assert "Traceback" not in err, err[-2000:]
