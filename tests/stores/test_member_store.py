"""The online member store: the Redis implementation against the real server, and the embedded one."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from recsys.stores.member_store import (
    EmbeddedMemberStore,
    MemberStore,
    MemberStoreError,
    RedisMemberStore,
    build_member_store,
    publish_profiles,
)
from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig, RedisUnavailable

REDIS_URL = "redis://127.0.0.1:6379/14"


def clients(timeout_ms: float = 5000, url: str = REDIS_URL) -> RedisClients:
    return RedisClients(RedisConfig(url, policy=RedisCallPolicy(timeout_ms=timeout_ms)))


def profiles(n: int, gen: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "member_id": [f"M{i:05d}" for i in range(n)],
            "tier": ["gold" if i % 7 == 0 else "basic" for i in range(n)],
            "miles_balance": np.arange(n, dtype=np.int64) * 100,
            "value_score": np.linspace(0, 100, n),
            "top_route": ["PEK-CTU"] * n,
            "gen": [gen] * n,
            "missing": [np.nan] * n,
        }
    )


def embeddings(n: int, gen: int) -> np.ndarray:
    rng = np.random.default_rng(gen)
    return rng.normal(size=(n, 8)).astype(np.float32)


def test_redis_publish_then_read_one_member(redis_client: redis.Redis, prefix: str) -> None:
    store = RedisMemberStore(clients(), prefix=prefix)
    assert store.active_version() is None
    assert store.get("M00001") is None
    report = store.publish(profiles(50, gen=1), embeddings(50, 1), "1")
    assert (report.version, report.previous_version, report.members, report.with_embedding) == (
        "1",
        None,
        50,
        50,
    )
    rec = store.get("M00003")
    assert rec is not None and rec.version == "1"
    assert rec.profile["tier"] == "basic" and rec.profile["miles_balance"] == 300
    assert rec.profile["missing"] is None and rec.profile["top_route"] == "PEK-CTU"
    assert rec.embedding is not None  # stored as float16 (the default)
    np.testing.assert_array_equal(rec.embedding, embeddings(50, 1)[3].astype(np.float16).astype(np.float32))
    assert store.get("NOPE") is None
    # the member's key carries its hash tag and the version; the pointer names the version; all expire
    assert (
        redis_client.exists(f"{prefix}:{{M00003}}:1")
        and redis_client.get(f"{prefix}:{{{prefix}}}:active") == b"1"
    )
    assert redis_client.ttl(f"{prefix}:{{M00003}}:1") > 30 * 86_400


def test_redis_members_without_embedding(redis_client: redis.Redis, prefix: str) -> None:
    store = RedisMemberStore(clients(), prefix=prefix)
    df = profiles(3, 1)
    store.publish(df, {"M00001": np.ones(4, dtype=np.float32)}, "a")
    rec0, rec1 = store.get("M00000"), store.get("M00001")
    assert rec0 is not None and rec0.embedding is None
    assert rec1 is not None and rec1.embedding is not None and rec1.embedding.tolist() == [1.0] * 4


def test_redis_embeddings_are_float16_unless_asked(redis_client: redis.Redis, prefix: str) -> None:
    vecs = embeddings(5, 1)
    half = RedisMemberStore(clients(), prefix=prefix)
    half.publish(profiles(5, 1), vecs, "h")
    rec = half.get("M00002")
    assert rec is not None and rec.embedding is not None and rec.embedding.dtype == np.float32
    np.testing.assert_array_equal(rec.embedding, vecs[2].astype(np.float16).astype(np.float32))
    full = RedisMemberStore(clients(), prefix=prefix, embedding_dtype="float32")
    full.publish(profiles(5, 1), vecs, "f")
    rec = full.get("M00002")
    assert rec is not None and rec.embedding is not None
    np.testing.assert_array_equal(rec.embedding, vecs[2])


class _SpyStore(RedisMemberStore):
    """Calls ``on_batch`` after each loaded batch, so a test can read while a publish is half-way."""

    on_batch: Any = None

    def _after_batch(self, version: str, loaded: int) -> None:
        if self.on_batch is not None:
            self.on_batch(version, loaded)


def test_redis_switch_is_atomic_readers_see_old_version_during_load(
    redis_client: redis.Redis, prefix: str
) -> None:
    n = 2000
    store = _SpyStore(clients(), prefix=prefix, batch_size=100)
    store.publish(profiles(n, gen=1), embeddings(n, 1), "1")
    reader = RedisMemberStore(clients(), prefix=prefix, pointer_refresh_s=0)
    seen_mid_load: list[tuple[str | None, int]] = []

    def read_mid_load(version: str, loaded: int) -> None:
        for mid in ("M00000", f"M{loaded - 1:05d}", f"M{n - 1:05d}"):
            rec = reader.get(mid)
            assert rec is not None
            seen_mid_load.append((rec.version, rec.profile["gen"]))

    # a concurrent reader thread hammering during the whole publish
    stop = threading.Event()
    observed: list[tuple[str | None, int]] = []

    def hammer() -> None:
        r = RedisMemberStore(clients(), prefix=prefix, pointer_refresh_s=0)
        i = 0
        while not stop.is_set():
            rec = r.get(f"M{(i * 37) % n:05d}")
            assert rec is not None
            observed.append((rec.version, rec.profile["gen"]))
            i += 1
        r.close()

    t = threading.Thread(target=hammer)
    t.start()
    store.on_batch = read_mid_load
    try:
        store.publish(profiles(n, gen=2), embeddings(n, 2), "2")
    finally:
        stop.set()
        t.join()
    # mid-load, even members already written in v2 are read from v1
    assert len(seen_mid_load) == 3 * (n // 100)
    assert set(seen_mid_load) == {("1", 1)}
    # never a mix: every record's content matches its version, and versions only move forward
    assert observed and all(int(v or 0) == gen for v, gen in observed)
    versions = [v for v, _ in observed]
    first_new = versions.index("2") if "2" in versions else len(versions)
    assert all(v == "1" for v in versions[:first_new]) and all(v == "2" for v in versions[first_new:])
    rec = store.get("M00010")
    assert rec is not None and rec.version == "2" and rec.profile["gen"] == 2
    reader.close()


def test_redis_old_versions_expire(redis_client: redis.Redis, prefix: str) -> None:
    store = RedisMemberStore(clients(), prefix=prefix, old_version_ttl=1, version_ttl=timedelta(days=35))
    store.publish(profiles(20, 1), embeddings(20, 1), "1")
    # the active version lives version_ttl (renewed by every publish)
    assert 34 * 86_400 < redis_client.ttl(store.member_key("1", "M00001")) <= 35 * 86_400
    report = store.publish(profiles(20, 2), embeddings(20, 2), "2")
    assert report.previous_version == "1"
    old_keys = list(store.version_keys("1"))
    assert len(old_keys) == 20
    assert all(0 < redis_client.pttl(k) <= 1000 for k in [*old_keys, store.meta_key("1")])
    assert 34 * 86_400 < redis_client.ttl(store.member_key("2", "M00001")) <= 35 * 86_400
    assert 34 * 86_400 < redis_client.ttl(f"{prefix}:{{{prefix}}}:active") <= 35 * 86_400
    deadline = time.monotonic() + 10  # Redis expires keys within ~1 s of their TTL; poll, do not guess
    while list(store.version_keys("1")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(store.version_keys("1")) == []
    rec = store.get("M00001")
    assert rec is not None and rec.version == "2"


def test_redis_failed_publish_keeps_the_old_version_and_leaves_only_expiring_keys(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = _SpyStore(clients(), prefix=prefix, batch_size=10)
    store.publish(profiles(30, 1), None, "1")

    def boom(version: str, loaded: int) -> None:
        if loaded >= 20:
            raise RuntimeError("training job killed")

    store.on_batch = boom
    with pytest.raises(RuntimeError):
        store.publish(profiles(30, 2), None, "2")
    assert store.active_version() == "1"
    rec = store.get("M00005")
    assert rec is not None and rec.version == "1"
    partial = list(store.version_keys("2"))
    assert partial and all(redis_client.ttl(k) > 0 for k in partial)  # staging TTL: nothing stays forever
    store.on_batch = None
    store.publish(profiles(30, 2), None, "2")  # a retry of the same version clears the leftovers
    assert store.active_version() == "2" and len(list(store.version_keys("2"))) == 30


def test_redis_refuses_to_republish_the_active_version_and_bad_versions(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = RedisMemberStore(clients(), prefix=prefix)
    store.publish(profiles(3, 1), None, "7")
    with pytest.raises(MemberStoreError, match="already active"):
        store.publish(profiles(3, 1), None, "7")
    with pytest.raises(ValueError, match="version"):
        store.publish(profiles(3, 1), None, "bad version*")
    with pytest.raises(ValueError, match="duplicated member ids"):
        store.publish(pd.concat([profiles(3, 1), profiles(3, 1)]), None, "8")
    assert store.active_version() == "7"


def test_redis_purchases_per_trip_with_ttl_in_the_same_round_trip(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = RedisMemberStore(clients(), prefix=prefix)
    store.publish(profiles(3, 1), None, "1")
    store.add_purchase("M00001", "CA4101|2026-11-24", "MEAL-1", ttl=1)
    store.add_purchase("M00001", "CA4101|2026-11-24", "BAG-1", ttl=60)
    assert store.purchases("M00001", "CA4101|2026-11-24") == {"MEAL-1", "BAG-1"}
    assert store.purchases("M00001", "CA999|2026-11-24") == frozenset()
    read = store.read("M00001", "CA4101|2026-11-24")
    assert read.record is not None and read.purchased == {"MEAL-1", "BAG-1"}
    read = store.read("NEW", "CA4101|2026-11-24")
    assert read.record is None and read.purchased == frozenset()
    assert redis_client.ttl(store.purchases_key("M00001", "CA4101|2026-11-24")) > 0


def test_build_member_store_by_url(redis_client: redis.Redis) -> None:
    assert isinstance(build_member_store(None), EmbeddedMemberStore)
    assert isinstance(build_member_store("memory://"), EmbeddedMemberStore)
    s = build_member_store(REDIS_URL, prefix="x-unused")
    assert isinstance(s, RedisMemberStore) and s.ping()
    s.close()
    with pytest.raises(ValueError, match="unsupported member store URL"):
        build_member_store("ftp://example")


def test_unreachable_redis_store_reports_not_ready() -> None:
    s = RedisMemberStore(clients(200, "redis://127.0.0.1:1/0"))
    assert s.ping() is False


def test_async_read_matches_the_blocking_read(prefix: str) -> None:
    """What the service's event loop awaits: the same record and trip purchases as the blocking read, from
    many coroutines at once; a store built around a given client answers in place."""
    store = RedisMemberStore(clients(), prefix=prefix, pointer_refresh_s=0)
    store.publish(profiles(40, gen=3), embeddings(40, 3), "3")
    store.add_purchase("M00007", "CA1405|2026-11-25", "AN-BAG-23-01", ttl=600)

    async def read_all() -> list[Any]:
        got = await asyncio.gather(
            *(store.aread(f"M{i:05d}", "CA1405|2026-11-25") for i in range(40)),
            store.aread("M99999", None),
        )
        await store.clients.aclose()
        return list(got)

    got = asyncio.run(read_all())
    for i, read in enumerate(got[:40]):
        rec, blocking = read.record, store.read(f"M{i:05d}", "CA1405|2026-11-25")
        assert rec is not None and blocking.record is not None
        assert (rec.member_id, rec.version, rec.profile) == (
            blocking.record.member_id,
            blocking.record.version,
            blocking.record.profile,
        )
        np.testing.assert_array_equal(
            rec.embedding, embeddings(40, 3)[i].astype(np.float16).astype(np.float32)
        )
        assert (
            read.purchased == blocking.purchased == (frozenset({"AN-BAG-23-01"}) if i == 7 else frozenset())
        )
    assert (got[40].record, got[40].purchased) == (None, frozenset())
    store.clients.close()


def test_async_read_of_an_unreachable_store_raises() -> None:
    s = RedisMemberStore(clients(200, "redis://127.0.0.1:1/0"))

    async def read() -> Any:
        try:
            return await s.aread("M00001", None)
        finally:
            await s.clients.aclose()

    with pytest.raises(RedisUnavailable):
        asyncio.run(read())


# -- embedded ------------------------------------------------------------------------------------------------


def test_embedded_publish_read_switch() -> None:
    store = EmbeddedMemberStore()
    assert store.get("M00001") is None and store.active_version() is None
    store.publish(profiles(10, 1), embeddings(10, 1), "1")
    rec = store.get("M00001")
    assert rec is not None and rec.version == "1" and rec.profile["gen"] == 1
    np.testing.assert_array_equal(rec.embedding, embeddings(10, 1)[1])
    store.publish(profiles(5, 2), None, "2")
    rec = store.get("M00001")
    assert rec is not None and rec.version == "2" and rec.profile["gen"] == 2 and rec.embedding is None
    assert store.get("M00007") is None  # not in the new version
    with pytest.raises(MemberStoreError):
        store.publish(profiles(5, 2), None, "2")


def test_embedded_purchases_expire() -> None:
    clock = [1000.0]
    store = EmbeddedMemberStore(clock=lambda: clock[0])
    store.add_purchase("M1", "T1", "O1", ttl=10)
    store.add_purchase("M1", "T1", "O2", ttl=100)
    assert store.read("M1", "T1").purchased == frozenset({"O1", "O2"})
    clock[0] += 11
    assert store.purchases("M1", "T1") == {"O2"}
    clock[0] += 100
    assert store.purchases("M1", "T1") == frozenset()
    with pytest.raises(ValueError):
        store.add_purchase("M1", "T1", "O3", ttl=0)


class _Bundle:
    def is_known(self, member_id: str) -> bool:
        return member_id != "M00002"

    def member_embedding(self, member_id: str) -> np.ndarray:
        return np.full(3, int(member_id[1:]), dtype=np.float32)


@pytest.mark.parametrize("kind", ["embedded", "redis"])
def test_publish_profiles_takes_embeddings_from_the_bundle(kind: str, request: pytest.FixtureRequest) -> None:
    store: MemberStore
    if kind == "redis":
        request.getfixturevalue("redis_client")
        store = RedisMemberStore(clients(), prefix=request.getfixturevalue("prefix"))
    else:
        store = EmbeddedMemberStore()
    report = publish_profiles(store, profiles(4, 1), _Bundle(), "20261122")
    assert report.members == 4 and report.with_embedding == 3
    rec = store.get("M00003")
    assert rec is not None and rec.embedding is not None and rec.embedding.tolist() == [3.0, 3.0, 3.0]
    rec = store.get("M00002")
    assert rec is not None and rec.embedding is None


class _CountingRedis(redis.Redis):
    """The real client, counting the commands it sends (a pipeline's batch counts once)."""

    commands = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        type(self).commands += 1
        return super().execute_command(*args, **options)


def test_redis_read_is_one_round_trip_with_purchases_and_another_hash_of_the_member(
    redis_client: redis.Redis, prefix: str
) -> None:
    c = clients()
    c._sync = _CountingRedis.from_url(REDIS_URL, socket_timeout=2)  # the real client, instrumented
    store = RedisMemberStore(c, prefix=prefix, pointer_refresh_s=3600)
    store.publish(profiles(5, 1), embeddings(5, 1), "1")
    store.add_purchase("M00001", "T1", "O1", ttl=60)
    caps = f"{prefix}-caps:{{M00001}}"  # e.g. the cap store's hash: the same hash tag
    redis_client.hset(caps, mapping={"a": "1", "v": "3"})
    redis_client.expire(caps, 60)
    store.read("M00001", "T1")  # loads the script on the first NOSCRIPT
    before = _CountingRedis.commands
    read = store.read("M00002", "T1")
    assert read.record is not None and read.purchased == frozenset() and read.extra is None
    read = store.read("M00001", "T1", caps)
    assert read.record is not None and read.purchased == {"O1"} and read.extra == {"a": "1", "v": "3"}
    assert _CountingRedis.commands - before == 2  # one command per read
    c.close()


def test_redis_compact_records_read_back_exactly_the_published_profiles(
    redis_client: redis.Redis, prefix: str
) -> None:
    n = 40
    not_whole = {"offer": ["OF001"], "family": ["x"], "event": [0], "time": [1.5]}  # stays JSON
    frame = profiles(n, gen=3).assign(
        as_of=pd.Timestamp("2026-11-30T00:00:00Z"),
        home=[None if i % 5 == 0 else ("PEK", "CTU", "SHA")[i % 3] for i in range(n)],
        exposures=[
            None
            if i % 4 == 0
            else not_whole
            if i == 1
            else {
                "offer": [f"OF{i % 3:03d}", "OF007"],
                "family": ["ancillary", "upsell"],
                "event": [0, 3],
                "time": [850_000_000.0 + i, 850_003_600.0],
            }
            for i in range(n)
        ],
    )
    store = RedisMemberStore(clients(), prefix=prefix)
    store.publish(frame, embeddings(n, 3), "1")
    # What the plain JSON form gave back: the expected profile, computed without the store
    for i in (0, 1, 2, 5, 39):
        expected = {
            "member_id": f"M{i:05d}",
            "tier": "gold" if i % 7 == 0 else "basic",
            "miles_balance": i * 100,
            "value_score": float(np.linspace(0, 100, n)[i]),
            "top_route": "PEK-CTU",
            "gen": 3,
            "missing": None,
            "as_of": "2026-11-30T00:00:00+00:00",
            "home": None if i % 5 == 0 else ("PEK", "CTU", "SHA")[i % 3],
            "exposures": None
            if i % 4 == 0
            else {
                "offer": [f"OF{i % 3:03d}", "OF007"],
                "family": ["ancillary", "upsell"],
                "event": [0, 3],
                "time": [850_000_000.0 + i, 850_003_600.0],
            },
        }
        if i == 1:
            expected["exposures"] = not_whole
        rec = store.get(f"M{i:05d}")
        assert rec is not None and rec.profile == expected
        assert list(rec.profile) == list(frame.columns)
    # Constant columns and the member id live in the version's metadata and the key, not in each record:
    # a record holds the 8 float16 values, 4 header bytes, a packed history of 2 events (2 + 2 * 7 bytes)
    # and a short JSON array.
    raw = redis_client.get(store.member_key("1", "M00002"))
    assert raw is not None and b"2026-11-30" not in raw and b"M00002" not in raw and b"OF007" not in raw
    assert len(raw) < 4 + 16 + 16 + 40
    # A fresh reader (no cached codec) reads the same
    fresh, cached = RedisMemberStore(clients(), prefix=prefix).get("M00002"), store.get("M00002")
    assert fresh is not None and cached is not None and fresh.profile == cached.profile
    assert fresh.embedding is not None and cached.embedding is not None
    np.testing.assert_array_equal(fresh.embedding, cached.embedding)


def test_redis_reads_records_of_the_first_format(redis_client: redis.Redis, prefix: str) -> None:
    RedisMemberStore(clients(), prefix=prefix).publish(profiles(3, gen=1), None, "1")
    # A version as the first format wrote it: no codec in its metadata, records b"\x01", dimension 0, the
    # profile as a JSON array
    redis_client.hdel(RedisMemberStore(clients(), prefix=prefix).meta_key("1"), "codec")
    store = RedisMemberStore(clients(), prefix=prefix)
    # A record as the first format wrote it: b"\x01", dimension 0, the profile as a JSON array
    redis_client.set(
        store.member_key("1", "M00001"),
        b'\x01\x00\x00["M00001","basic",100,50.0,"PEK-CTU",1,null]',
        ex=60,
    )
    rec = store.get("M00001")
    assert rec is not None and rec.embedding is None
    assert rec.profile == {
        "member_id": "M00001",
        "tier": "basic",
        "miles_balance": 100,
        "value_score": 50.0,
        "top_route": "PEK-CTU",
        "gen": 1,
        "missing": None,
    }
