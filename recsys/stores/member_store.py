"""The online member store: member profiles and embeddings by version, and per-trip purchase state.

Training materialises the offline member profiles (``recsys.features.profiles``) and the model's member
embeddings into the online store with :func:`publish_profiles`; the service reads one member per request with
:meth:`MemberStore.get` (or :meth:`MemberStore.get_with_purchases`, which also returns what the member already
bought for the trip, in the same round trip). Implementations are chosen by URL
(:func:`build_member_store`): ``redis://``/``rediss://``/``unix://`` → :class:`RedisMemberStore` (shared by
all service processes), ``None``/``memory://`` → :class:`EmbeddedMemberStore` (in-process, one process only).

Redis layout (``prefix`` defaults to ``members``)::

    {prefix}:active                       string: the active version (the pointer)
    {prefix}:v{version}:{member_id}       hash: p = profile JSON, e = embedding float32 bytes (may be absent)
    {prefix}:v{version}:__meta__          hash: members, with_embedding, dim, published_at
    {prefix}:versions                     sorted set: versions by publish time
    {prefix}:purchases:{member_id}:{trip} set of offer ids bought for that trip (TTL: until after the trip)

Publishing a version:

1. any leftovers of a failed earlier publish of the same version are unlinked;
2. members are loaded with pipelined ``HSET`` in batches (``batch_size``), each key with a *staging* TTL, so a
   publish that dies half-way leaves nothing behind for long;
3. once every batch is in, the new keys are made persistent and the pointer is switched in ONE atomic step
   (``SET {prefix}:active``) — readers see the old version until then, the new one after, never a mix: a read
   is a single Lua script that resolves the pointer and reads the member's hash atomically (one round trip);
4. the previous version's keys get a TTL (``old_version_ttl``, default 10 minutes) and expire by themselves;
   versions older than that have already expired. The pointer key never expires.

The Lua read addresses keys computed from the pointer, which is fine on a single Redis (primary/replica); on a
Redis Cluster the member keys would need a hash tag per version and the pointer cached client-side.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
from redis.exceptions import NoScriptError

from recsys.aioredis import LoopRedis
from recsys.schema import Col
from recsys.urls import is_redis_url

DEFAULT_PREFIX = "members"
META = "__meta__"
_VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class MemberStoreError(RuntimeError):
    """The member store cannot do what was asked (bad version, unreachable server...)."""


@dataclass(frozen=True)
class MemberRecord:
    """One member's online record: the profile (column -> JSON value) and the model embedding (or None)."""

    member_id: str
    profile: dict[str, Any]
    embedding: np.ndarray | None
    version: str | None


@dataclass(frozen=True)
class PublishReport:
    """What a publish did."""

    version: str
    previous_version: str | None
    members: int
    with_embedding: int
    seconds: float


def _ttl_seconds(ttl: timedelta | float | int) -> int:
    secs = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if secs <= 0:
        raise ValueError(f"ttl must be positive, got {ttl!r}")
    return max(1, round(secs))


def _check_version(version: str) -> str:
    version = str(version)
    if not _VERSION_RE.match(version):
        raise ValueError(f"version must match {_VERSION_RE.pattern}, got {version!r}")
    return version


def _json_default(v: Any) -> Any:
    if isinstance(v, pd.Timestamp | datetime):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    raise TypeError(f"cannot serialise {type(v).__name__} in a member profile")


def profile_records(profiles: pd.DataFrame) -> Iterator[tuple[str, dict[str, Any]]]:
    """(member_id, profile dict) for each row of a profiles frame (must have a ``member_id`` column).

    Values become plain Python (``tolist``) and nulls (NaN, NaT, None) None, column by column — a
    50,000-member frame converts in about a second.
    """
    if Col.MEMBER_ID not in profiles.columns:
        raise ValueError(f"profiles frame has no '{Col.MEMBER_ID}' column")
    if profiles[Col.MEMBER_ID].duplicated().any():
        dup = profiles.loc[profiles[Col.MEMBER_ID].duplicated(), Col.MEMBER_ID].head(5).tolist()
        raise ValueError(f"profiles frame has duplicated member ids {dup}")
    cols = [str(c) for c in profiles.columns]
    columns: list[list[Any]] = []
    for c in profiles.columns:
        series = profiles[c]
        values = series.tolist()
        missing = series.isna().to_numpy()
        if missing.any():
            values = [None if m else v for v, m in zip(values, missing, strict=True)]
        columns.append(values)
    for row in zip(*columns, strict=True):
        rec = dict(zip(cols, row, strict=True))
        yield str(rec[Col.MEMBER_ID]), rec


def _embedding_lookup(
    profiles: pd.DataFrame, embeddings: Mapping[str, np.ndarray] | np.ndarray | None
) -> Mapping[str, np.ndarray] | None:
    if embeddings is None:
        return None
    if isinstance(embeddings, np.ndarray):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(profiles):
            raise ValueError(
                f"embeddings array must be (n_members={len(profiles)}, dim), got shape {embeddings.shape}"
            )
        return dict(zip(profiles[Col.MEMBER_ID].astype(str), embeddings, strict=True))
    return embeddings


class MemberStore(ABC):
    """Online member profiles and embeddings (versioned), plus per-trip purchase state."""

    @abstractmethod
    def get(self, member_id: str) -> MemberRecord | None:
        """The member's record in the active version, or None when the member (or any version) is unknown."""

    @abstractmethod
    def publish(
        self,
        profiles: pd.DataFrame,
        embeddings: Mapping[str, np.ndarray] | np.ndarray | None,
        version: str,
    ) -> PublishReport:
        """Load a new version and make it active atomically (see the module doc)."""

    @abstractmethod
    def active_version(self) -> str | None:
        """The version readers see now (None before the first publish)."""

    @abstractmethod
    def add_purchase(self, member_id: str, trip_key: str, offer_id: str, ttl: timedelta | float) -> None:
        """Remember that ``member_id`` bought ``offer_id`` for the trip ``trip_key`` (for ``ttl``)."""

    @abstractmethod
    def purchases(self, member_id: str, trip_key: str) -> frozenset[str]:
        """Offer ids the member bought for the trip."""

    def get_with_purchases(
        self, member_id: str, trip_key: str | None
    ) -> tuple[MemberRecord | None, frozenset[str]]:
        """:meth:`get` and :meth:`purchases` together (one round trip where the store allows it)."""
        rec = self.get(member_id)
        return rec, (self.purchases(member_id, trip_key) if trip_key else frozenset())

    async def aget_with_purchases(
        self, member_id: str, trip_key: str | None
    ) -> tuple[MemberRecord | None, frozenset[str]]:
        """:meth:`get_with_purchases` for an event loop (in-process stores answer in place)."""
        return self.get_with_purchases(member_id, trip_key)

    def ping(self) -> bool:
        """True when the store answers (readiness)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release asyncio connections (from the event loop that used them)."""


# ------------------------------------------------------------------------------------------------------------
# Embedded (in-process)
# ------------------------------------------------------------------------------------------------------------


class EmbeddedMemberStore(MemberStore):
    """In-process store: one dict per version, swapped atomically; purchases in a dict with expiry times.

    For the single-process default (no Redis configured): the service publishes the artefact's profiles into
    it at start-up. State is lost on restart and not shared between processes.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._state: tuple[str | None, dict[str, MemberRecord]] = (None, {})
        self._purchases: dict[tuple[str, str], dict[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, member_id: str) -> MemberRecord | None:
        return self._state[1].get(member_id)

    def publish(
        self,
        profiles: pd.DataFrame,
        embeddings: Mapping[str, np.ndarray] | np.ndarray | None,
        version: str,
    ) -> PublishReport:
        t0 = time.perf_counter()
        version = _check_version(version)
        previous = self._state[0]
        if version == previous:
            raise MemberStoreError(f"version {version} is already active; publish a new version")
        emb = _embedding_lookup(profiles, embeddings)
        data: dict[str, MemberRecord] = {}
        n_emb = 0
        for mid, prof in profile_records(profiles):
            vec = emb.get(mid) if emb is not None else None
            if vec is not None:
                vec = np.asarray(vec, dtype=np.float32).copy()
                vec.setflags(write=False)
                n_emb += 1
            data[mid] = MemberRecord(mid, prof, vec, version)
        self._state = (version, data)  # one reference swap: readers see the old or the new dict, never a mix
        return PublishReport(version, previous, len(data), n_emb, time.perf_counter() - t0)

    def active_version(self) -> str | None:
        return self._state[0]

    def add_purchase(self, member_id: str, trip_key: str, offer_id: str, ttl: timedelta | float) -> None:
        expires = self._clock() + _ttl_seconds(ttl)
        with self._lock:
            self._purchases.setdefault((member_id, trip_key), {})[offer_id] = expires

    def purchases(self, member_id: str, trip_key: str) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            bought = self._purchases.get((member_id, trip_key))
            if not bought:
                return frozenset()
            live = {o: t for o, t in bought.items() if t > now}
            if live:
                self._purchases[(member_id, trip_key)] = live
            else:
                del self._purchases[(member_id, trip_key)]
            return frozenset(live)


# ------------------------------------------------------------------------------------------------------------
# Redis
# ------------------------------------------------------------------------------------------------------------

# KEYS[1] = pointer key; ARGV[1] = prefix, ARGV[2] = member id, ARGV[3] = purchases key or ''.
# Returns {version or '', profile json or '', embedding bytes or '', {purchased offer ids}}.
_GET_LUA = """
local v = redis.call('GET', KEYS[1])
local purchased = {}
if ARGV[3] ~= '' then purchased = redis.call('SMEMBERS', ARGV[3]) end
if not v then return {'', '', '', purchased} end
local rec = redis.call('HMGET', ARGV[1] .. ':v' .. v .. ':' .. ARGV[2], 'p', 'e')
return {v, rec[1] or '', rec[2] or '', purchased}
"""

# KEYS[1] = pointer key, KEYS[2] = versions zset; ARGV[1] = new version, ARGV[2] = timestamp.
# Returns the previous version or ''.
_SWITCH_LUA = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return old or ''
"""


class RedisMemberStore(MemberStore):
    """Member store in Redis (see the module doc for the key layout and the publish protocol).

    Reads use ``socket_timeout`` (default 250 ms: a request must not hang on a slow store; the pipeline then
    serves the member as unknown); publishing uses separate connections with ``publish_timeout``. Pass
    ``client`` to use one ready ``redis.Redis`` (``decode_responses=False``) for both.

    A store built from a ``url`` also reads through an asyncio client (:meth:`aget_with_purchases`;
    :class:`recsys.aioredis.LoopRedis`), so a request waiting for Redis does not hold up the others on the
    loop.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        client: Any = None,
        batch_size: int = 1000,
        staging_ttl: timedelta = timedelta(hours=6),
        old_version_ttl: timedelta = timedelta(minutes=10),
        socket_timeout: float = 0.25,
        publish_timeout: float = 30.0,
    ) -> None:
        import redis

        self._bulk: Any
        # reads awaited on an event loop (a store built around a given client reads with it, blocking)
        self._aio = (
            LoopRedis(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
            if client is None and url
            else None
        )
        if client is None:
            if not url:
                raise ValueError("RedisMemberStore needs a url or a client")
            client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
            # bulk loads use their own connections with a long timeout; reads fail fast
            self._bulk = redis.Redis.from_url(
                url, socket_timeout=publish_timeout, socket_connect_timeout=publish_timeout
            )
        else:
            self._bulk = client
        self.client = client
        if not prefix or any(ch in prefix for ch in " \n"):
            raise ValueError(f"invalid key prefix {prefix!r}")
        self.prefix = prefix
        self.batch_size = int(batch_size)
        self.staging_ttl = _ttl_seconds(staging_ttl)
        self.old_version_ttl = _ttl_seconds(old_version_ttl)
        self._pointer = f"{prefix}:active"
        self._versions = f"{prefix}:versions"
        self._get_sha = hashlib.sha1(_GET_LUA.encode()).hexdigest()  # loaded on first NOSCRIPT
        self._switch = self._bulk.register_script(_SWITCH_LUA)

    # -- keys --------------------------------------------------------------------------------------------
    def member_key(self, version: str, member_id: str) -> str:
        return f"{self.prefix}:v{version}:{member_id}"

    def purchases_key(self, member_id: str, trip_key: str) -> str:
        return f"{self.prefix}:purchases:{member_id}:{trip_key}"

    def version_keys(self, version: str) -> Iterator[bytes]:
        """Every key of one version (SCAN; for maintenance and tests)."""
        yield from self._bulk.scan_iter(match=f"{self.prefix}:v{_glob_escape(version)}:*", count=1000)

    # -- reads -------------------------------------------------------------------------------------------
    def _read(self, member_id: str, trip_key: str | None) -> tuple[MemberRecord | None, frozenset[str]]:
        pkey = self.purchases_key(member_id, trip_key) if trip_key else ""
        try:
            reply = self.client.evalsha(self._get_sha, 1, self._pointer, self.prefix, member_id, pkey)
        except NoScriptError:  # the server restarted or flushed its script cache
            self._get_sha = self.client.script_load(_GET_LUA)
            reply = self.client.evalsha(self._get_sha, 1, self._pointer, self.prefix, member_id, pkey)
        return self._record(member_id, reply)

    async def aget_with_purchases(
        self, member_id: str, trip_key: str | None
    ) -> tuple[MemberRecord | None, frozenset[str]]:
        if self._aio is None:
            return self._read(member_id, trip_key)
        pkey = self.purchases_key(member_id, trip_key) if trip_key else ""
        reply = await self._aio.evalsha(
            _GET_LUA, self._get_sha, [self._pointer], [self.prefix, member_id, pkey]
        )
        return self._record(member_id, reply)

    async def aclose(self) -> None:
        if self._aio is not None:
            await self._aio.aclose()

    def _record(self, member_id: str, reply: Any) -> tuple[MemberRecord | None, frozenset[str]]:
        version, prof, emb, bought = reply
        purchased = frozenset(b.decode() for b in bought)
        if not version or not prof:
            return None, purchased
        vec = np.frombuffer(emb, dtype=np.float32) if emb else None
        return MemberRecord(member_id, orjson.loads(prof), vec, version.decode()), purchased

    def get(self, member_id: str) -> MemberRecord | None:
        return self._read(member_id, None)[0]

    def get_with_purchases(
        self, member_id: str, trip_key: str | None
    ) -> tuple[MemberRecord | None, frozenset[str]]:
        return self._read(member_id, trip_key)

    def active_version(self) -> str | None:
        return self._active_version(self.client)

    def _active_version(self, client: Any) -> str | None:
        v = client.get(self._pointer)
        return v.decode() if v else None

    # -- publish -----------------------------------------------------------------------------------------
    def publish(
        self,
        profiles: pd.DataFrame,
        embeddings: Mapping[str, np.ndarray] | np.ndarray | None,
        version: str,
    ) -> PublishReport:
        t0 = time.perf_counter()
        version = _check_version(version)
        if version == self._active_version(self._bulk):
            raise MemberStoreError(f"version {version} is already active; publish a new version")
        emb = _embedding_lookup(profiles, embeddings)
        self._unlink(self.version_keys(version))  # leftovers of a failed publish of this version
        keys: list[str] = []
        n_emb = 0
        dim = 0
        pipe = self._bulk.pipeline(transaction=False)
        for mid, prof in profile_records(profiles):
            key = self.member_key(version, mid)
            mapping: dict[str, bytes] = {"p": orjson.dumps(prof, default=_json_default, option=_JSON_OPTS)}
            vec = emb.get(mid) if emb is not None else None
            if vec is not None:
                arr = np.ascontiguousarray(vec, dtype=np.float32)
                mapping["e"] = arr.tobytes()
                dim = arr.shape[0]
                n_emb += 1
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.staging_ttl)
            keys.append(key)
            if len(keys) % self.batch_size == 0:
                pipe.execute()
                self._after_batch(version, len(keys))
        meta_key = self.member_key(version, META)
        pipe.hset(
            meta_key,
            mapping={
                "members": len(keys),
                "with_embedding": n_emb,
                "dim": dim,
                "published_at": datetime.now(UTC).isoformat(),
            },
        )
        pipe.execute()
        # Loaded: make the new keys permanent, then switch the pointer atomically.
        keys.append(meta_key)
        for start in range(0, len(keys), self.batch_size):
            for key in keys[start : start + self.batch_size]:
                pipe.persist(key)
            pipe.execute()
        previous = self._switch(keys=[self._pointer, self._versions], args=[version, time.time()])
        previous_version = previous.decode() if previous else None
        if previous_version and previous_version != version:
            self._expire(self.version_keys(previous_version), self.old_version_ttl)
            self._bulk.zrem(self._versions, previous_version)
        return PublishReport(version, previous_version, len(keys) - 1, n_emb, time.perf_counter() - t0)

    def _after_batch(self, version: str, loaded: int) -> None:
        """Hook called after each loaded batch (progress logging; tests use it to read mid-load)."""

    def _unlink(self, keys: Iterator[bytes]) -> None:
        batch: list[bytes] = []
        for k in keys:
            batch.append(k)
            if len(batch) >= self.batch_size:
                self._bulk.unlink(*batch)
                batch = []
        if batch:
            self._bulk.unlink(*batch)

    def _expire(self, keys: Iterator[bytes], ttl: int) -> None:
        pipe = self._bulk.pipeline(transaction=False)
        for n, k in enumerate(keys, start=1):
            pipe.expire(k, ttl)
            if n % self.batch_size == 0:
                pipe.execute()
        pipe.execute()

    # -- per-trip state ----------------------------------------------------------------------------------
    def add_purchase(self, member_id: str, trip_key: str, offer_id: str, ttl: timedelta | float) -> None:
        key = self.purchases_key(member_id, trip_key)
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(key, offer_id)
        pipe.expire(key, _ttl_seconds(ttl), gt=False)
        pipe.execute()

    def purchases(self, member_id: str, trip_key: str) -> frozenset[str]:
        return frozenset(b.decode() for b in self.client.smembers(self.purchases_key(member_id, trip_key)))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._bulk is not self.client:
            with contextlib.suppress(Exception):
                self._bulk.close()


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def build_member_store(url: str | None, **kwargs: Any) -> MemberStore:
    """The member store for a URL: ``redis://``/``rediss://``/``unix://`` → Redis; None/``memory://`` →
    embedded. Keyword arguments go to the implementation (e.g. ``prefix=``, ``client=`` for Redis)."""
    if not url or url.startswith("memory://"):
        return EmbeddedMemberStore()
    if is_redis_url(url):
        return RedisMemberStore(url, **kwargs)
    raise ValueError(f"unsupported member store URL {url!r}: use redis://host:port/db, memory:// or nothing")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def model_version_prefix(model_name: str, model_version: str, reserve: int = 0) -> str:
    """The start of every store version published for one registered model version:
    ``<model name>.v<model version>.`` (characters the version syntax forbids become ``-``; the name is
    shortened so that ``reserve`` more characters still fit the 64 allowed).

    Training names a publish ``<prefix><UTC time>``; the service trusts a member's stored embedding only when
    the record's version starts with the prefix of the model it serves (another model's vectors would score
    nonsense).
    """
    tail = f".v{_UNSAFE.sub('-', str(model_version))}."
    name = _UNSAFE.sub("-", str(model_name))[: max(1, 64 - reserve - len(tail))]
    return f"{name}{tail}"


def publish_profiles(store: MemberStore, profiles: pd.DataFrame, bundle: Any, version: str) -> PublishReport:
    """Publish member profiles with the model's member embeddings (training calls this after a model is
    registered; the service's embedded store calls it at start-up with the artefact's profiles).

    Embeddings come from ``bundle.member_embedding(member_id)`` for members the model knows
    (``bundle.is_known``); others are stored without one. ``bundle`` may be None (profiles only).
    """
    embeddings: dict[str, np.ndarray] | None = None
    if bundle is not None:
        embeddings = {}
        for mid in profiles[Col.MEMBER_ID].astype(str):
            if bundle.is_known(mid):
                vec = bundle.member_embedding(mid)
                if vec is not None:
                    embeddings[mid] = np.asarray(vec, dtype=np.float32)
    return store.publish(profiles, embeddings, version)
