"""The online member store: member profiles and embeddings by version, and per-trip purchase state.

Training materialises the offline member profiles (``recsys.features.profiles``) and the model's member
embeddings into the online store with :func:`publish_profiles`; the service reads one member per request with
:meth:`MemberStore.read` (the profile, what the member already bought for the trip and, when the caller names
it, one more hash of the member's — the cap state — all in one round trip). Implementations are chosen by URL
(:func:`build_member_store`): a Redis URL → :class:`RedisMemberStore` (shared by all service processes; a
standalone Redis, a Sentinel-managed one or a Redis Cluster, see :mod:`recsys.stores.redis`), ``None`` /
``memory://`` → :class:`EmbeddedMemberStore` (in-process, one process only).

Redis layout (``prefix`` defaults to ``members``). Every key of one member carries the member id as its
Redis Cluster hash tag, so one script can read them all (and the cap store's hash of the member, which uses
the same tag) on one cluster slot; the version keys share the prefix as their tag::

    {prefix}:{M0000001}:{version}         string: the member's record (format below)
    {prefix}:{M0000001}:b:{trip_key}      set of offer ids bought for that trip (TTL: until after the trip)
    {prefix}:{{prefix}}:active            string: the active version (the pointer)
    {prefix}:{{prefix}}:meta:{version}    hash: columns (JSON list), codec, dim, dtype, members, ...
    {prefix}:{{prefix}}:versions          sorted set: versions by publish time

A record is ``b"\\x02"``, the embedding's dimension (2 bytes, little endian, 0 = none), the index of the
packed column (1 byte, 255 = none), the embedding (``dim`` float16 or float32 values, the version's
``dtype``), the packed event history (when any: the number of events, 2 bytes, then per event the index of
its (offer, family) pair, 2 bytes, its event code, 1 byte, and its time in whole seconds, 4 bytes), then the
other stored columns as a JSON *array*. What is the same for every member is stored once per version in the
metadata (``codec``, :class:`RecordCodec`): the column names, the columns every member shares, the member id
(it is in the key), the strings of string columns (a record holds their indices) and the history's (offer,
family) pairs. Records of the first format (``b"\\x01"``, no codec: every column JSON) are still read.

Every key has a TTL: a published version lives ``version_ttl`` (default 35 days; publishing again renews
it: training republishes daily), the pointer and metadata as long as their version.

The service caches the pointer and the version's columns (refreshed every ``pointer_refresh_s``, and at once
by a publish through the same store), so a read is one script over the member's own keys, never a key name
computed inside Lua (Redis Cluster forbids it).

Publishing a version:

1. any leftovers of a failed earlier publish of the same version are unlinked;
2. members are loaded with pipelined ``SET``\\ s in batches (``batch_size``; on a cluster redis-py's cluster
   pipeline sends each node its own batch), each key with a *staging* TTL, so a publish that dies half-way
   leaves nothing behind for long;
3. once every batch is in, the keys get the version's TTL and the pointer is switched in ONE atomic step —
   readers see the old version until they refresh their pointer, the new one after, never a mix (each record
   names its version);
4. the previous version's keys get a TTL (``old_version_ttl``, default 10 minutes, well above the pointer
   refresh) and expire by themselves.
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeAlias, cast

import numpy as np
import orjson
import pandas as pd
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from recsys.schema import Col
from recsys.stores.redis import RedisClients, RedisUnavailable
from recsys.urls import is_redis_url

DEFAULT_PREFIX = "members"
_VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
RECORD_FORMAT = 2
_HEADER = struct.Struct("<BHB")  # format, embedding dimension, packed column (255: none)
_HEADER_V1 = struct.Struct("<BH")  # format 1: no packed column
EmbeddingDtype: TypeAlias = Literal["float16", "float32"]
_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}


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
class MemberRead:
    """What one request reads about a member: the record (None: unknown member or no version yet), the
    offers bought for the trip, and the fields of the extra hash asked for (None: not asked, or the store
    cannot read it in the same round trip)."""

    record: MemberRecord | None
    purchased: frozenset[str] = frozenset()
    extra: dict[str, str] | None = None


@dataclass(frozen=True)
class PublishReport:
    """What a publish did."""

    version: str
    previous_version: str | None
    members: int
    with_embedding: int
    seconds: float


def _tag(member_id: str) -> str:
    """A key in the member's hash slot (its id as the hash tag), which names the breaker of a call."""
    return f"{{{member_id}}}"


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
    """(member_id, profile dict) for each row of a profiles frame (must have a ``member_id`` column)."""
    cols, rows = profile_rows(profiles)
    for mid, values in rows:
        yield mid, dict(zip(cols, values, strict=True))


def profile_rows(profiles: pd.DataFrame) -> tuple[list[str], Iterator[tuple[str, list[Any]]]]:
    """The column names and (member_id, values in column order) for each row of a profiles frame (must
    have a ``member_id`` column).

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
    id_at = cols.index(Col.MEMBER_ID)

    def rows() -> Iterator[tuple[str, list[Any]]]:
        for row in zip(*columns, strict=True):
            yield str(row[id_at]), list(row)

    return cols, rows()


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


# A profile value with exactly these keys, lists of one length (an event history: offer ids, their families,
# event codes and whole seconds, as ``recsys.ranker.features.member_exposures`` builds it) is packed into
# 7 bytes per event instead of about 35 in JSON: each (offer, family) pair is stored once per version (the
# version's ``vocab``) and the record holds its index.
HISTORY_KEYS = ("offer", "family", "event", "time")
_NO_PACKED = 255  # header: no packed column
_MAX_VOCAB = 1 << 16
_META_READ = ["columns", "dtype", "codec"]
# A string column with more distinct values stays JSON: every reader loads the vocabularies on a switch.
_MAX_DICT = 4096


class HistoryVocab:
    """The (offer, family) pairs of one version's packed histories, in the order they were first met."""

    def __init__(self, pairs: list[tuple[str, str]] | None = None) -> None:
        self.pairs: list[tuple[str, str]] = list(pairs or [])
        self._index = {p: i for i, p in enumerate(self.pairs)}

    def index(self, pair: tuple[str, str]) -> int | None:
        """The pair's index (added when new), None when the vocabulary is full."""
        at = self._index.get(pair)
        if at is None:
            if len(self.pairs) >= _MAX_VOCAB:
                return None
            at = self._index[pair] = len(self.pairs)
            self.pairs.append(pair)
        return at

    def dumps(self) -> bytes:
        return orjson.dumps(self.pairs)

    @classmethod
    def loads(cls, raw: bytes | str | None) -> HistoryVocab:
        return cls([(str(o), str(f)) for o, f in orjson.loads(raw)] if raw else [])


def _pack_history(value: Any, vocab: HistoryVocab) -> bytes | None:
    """The packed form of an event history (see :data:`HISTORY_KEYS`), or None when ``value`` is not one
    that packs exactly (then it stays JSON)."""
    if not isinstance(value, dict) or set(value) != set(HISTORY_KEYS):
        return None
    offers, families, events, times = (value[k] for k in HISTORY_KEYS)
    if not all(isinstance(v, list) for v in (offers, families, events, times)):
        return None
    n = len(offers)
    if not (n == len(families) == len(events) == len(times)) or n >= 65536:
        return None
    idx: list[int] = []
    for o, f in zip(offers, families, strict=True):
        if not isinstance(o, str) or not isinstance(f, str):
            return None
        at = vocab.index((o, f))
        if at is None:
            return None
        idx.append(at)
    if not all(type(e) is int and -128 <= e < 128 for e in events):
        return None
    if not all(isinstance(t, int | float) and t == t and 0 <= t < 2**32 and t == int(t) for t in times):
        return None
    return (
        struct.pack("<H", n)
        + np.asarray(idx, dtype="<u2").tobytes()
        + np.asarray(events, dtype="i1").tobytes()
        + np.asarray(times, dtype="<u4").tobytes()
    )


def _unpack_history(data: bytes, at: int, vocab: HistoryVocab) -> tuple[dict[str, list[Any]], int]:
    (n,) = struct.unpack_from("<H", data, at)
    at += 2
    idx = np.frombuffer(data, dtype="<u2", count=n, offset=at).tolist()
    at += 2 * n
    events = np.frombuffer(data, dtype="i1", count=n, offset=at).tolist()
    at += n
    # Floats, as the JSON form read back gives them.
    times = np.frombuffer(data, dtype="<u4", count=n, offset=at).astype(np.float64).tolist()
    at += 4 * n
    pairs = vocab.pairs
    return {
        "offer": [pairs[i][0] for i in idx],
        "family": [pairs[i][1] for i in idx],
        "event": events,
        "time": times,
    }, at


_CONST, _ID, _DICT, _JSON = "c", "i", "d", "j"


class RecordCodec:
    """How one version's records are written: the columns, what each column's values are coded as, and the
    version's vocabularies (stored once in the version's metadata, not once per member).

    - ``c`` a value every member of the version shares (e.g. ``as_of``): kept in the metadata only;
    - ``i`` the member id: it is in the key already;
    - ``d`` strings (or null): the value's index in the column's vocabulary;
    - ``j`` anything else: JSON, except an event history (:data:`HISTORY_KEYS`), which is packed.
    """

    def __init__(
        self,
        columns: list[str],
        kinds: list[str],
        constants: dict[str, Any] | None = None,
        vocabs: dict[str, list[str]] | None = None,
        history: HistoryVocab | None = None,
    ) -> None:
        self.columns = columns
        self.kinds = kinds
        self.constants = dict(constants or {})
        self.vocabs = {c: list(v) for c, v in (vocabs or {}).items()}
        self._index = {c: {s: i for i, s in enumerate(v)} for c, v in self.vocabs.items()}
        self.history = history or HistoryVocab()
        # Columns stored in the record's JSON array, in order, with their kind.
        self.stored = [
            (i, c, k) for i, (c, k) in enumerate(zip(columns, kinds, strict=True)) if k in (_DICT, _JSON)
        ]

    @classmethod
    def plain(cls, columns: list[str]) -> RecordCodec:
        """Every column JSON (a version published before the codec existed)."""
        return cls(list(columns), [_JSON] * len(columns))

    @classmethod
    def for_profiles(cls, profiles: pd.DataFrame) -> RecordCodec:
        """The codec for a profiles frame (must have a ``member_id`` column)."""
        columns = [str(c) for c in profiles.columns]
        kinds: list[str] = []
        constants: dict[str, Any] = {}
        vocabs: dict[str, list[str]] = {}
        for name, c in zip(columns, profiles.columns, strict=True):
            series = profiles[c]
            if name == Col.MEMBER_ID:
                kinds.append(_ID)
                continue
            values = series.dropna()
            try:
                distinct = series.nunique(dropna=False)
            except TypeError:  # dicts or lists (an event history...): JSON
                kinds.append(_JSON)
                continue
            if len(series) > 1 and distinct == 1:
                # Stored as its JSON form, which is what a reader got back from the record before.
                kinds.append(_CONST)
                constants[name] = orjson.loads(_dumps([None if series.isna().iloc[0] else series.iloc[0]]))[0]
            elif values.map(type).eq(str).all() and values.nunique() <= _MAX_DICT:
                kinds.append(_DICT)
                vocabs[name] = sorted(values.unique().tolist())
            else:
                kinds.append(_JSON)
        return cls(columns, kinds, constants, vocabs)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "kinds": self.kinds,
                "constants": self.constants,
                "vocabs": self.vocabs,
                "history": self.history.pairs,
            }
        )

    @classmethod
    def loads(cls, columns: list[str], raw: bytes | str | None) -> RecordCodec:
        if not raw:
            return cls.plain(columns)
        d = orjson.loads(raw)
        return cls(
            columns,
            d["kinds"],
            d["constants"],
            d["vocabs"],
            HistoryVocab([(str(o), str(f)) for o, f in d["history"]]),
        )

    def encode(self, values: list[Any]) -> tuple[list[Any], int, bytes]:
        """The record's JSON array, the index of the packed column (255: none) and the packed bytes."""
        out: list[Any] = []
        packed_at, packed = _NO_PACKED, b""
        for i, name, kind in self.stored:
            v = values[i]
            if kind == _DICT:
                out.append(None if v is None else self._index[name][v])
            elif packed_at == _NO_PACKED and isinstance(v, dict) and (p := _pack_history(v, self.history)):
                packed_at, packed = len(out), p
                out.append(None)
            else:
                out.append(v)
        return out, packed_at, packed

    def decode(
        self, member_id: str, stored: list[Any], history: dict[str, list[Any]] | None, packed_at: int
    ) -> dict[str, Any]:
        profile = dict(self.constants)
        if history is not None:
            stored[packed_at] = history
        for (_, name, kind), v in zip(self.stored, stored, strict=True):
            profile[name] = self.vocabs[name][v] if kind == _DICT and v is not None else v
        if _ID in self.kinds:
            profile[self.columns[self.kinds.index(_ID)]] = member_id
        return {c: profile[c] for c in self.columns}


def _dumps(values: list[Any]) -> bytes:
    return orjson.dumps(values, default=_json_default, option=_JSON_OPTS)


def encode_record(
    values: list[Any], embedding: np.ndarray | None, dtype: EmbeddingDtype, codec: RecordCodec | None = None
) -> bytes:
    """One member's stored record (see the module doc); ``values`` in the codec's column order."""
    stored, packed_at, packed = (codec or RecordCodec.plain([""] * len(values))).encode(values)
    profile = _dumps(stored)
    if embedding is None:
        return _HEADER.pack(RECORD_FORMAT, 0, packed_at) + packed + profile
    vec = np.ascontiguousarray(embedding, dtype=_DTYPES[dtype]).ravel()
    if not 0 < vec.shape[0] < 65536:
        raise ValueError(f"embedding dimension must be 1..65535, got {vec.shape[0]}")
    return _HEADER.pack(RECORD_FORMAT, vec.shape[0], packed_at) + vec.tobytes() + packed + profile


def decode_record(
    member_id: str, data: bytes, version: str, codec: RecordCodec, dtype: EmbeddingDtype
) -> MemberRecord:
    fmt = data[0] if data else None
    if fmt == 1:  # published before the codec: every column JSON
        codec = RecordCodec.plain(codec.columns)
        _, dim = _HEADER_V1.unpack_from(data)
        packed_at, at = _NO_PACKED, _HEADER_V1.size
    elif fmt == RECORD_FORMAT:
        _, dim, packed_at = _HEADER.unpack_from(data)
        at = _HEADER.size
    else:
        raise MemberStoreError(
            f"member record of {member_id} has format {fmt}, this service reads 1 and {RECORD_FORMAT}"
        )
    vec: np.ndarray | None = None
    if dim:
        dt = _DTYPES[dtype]
        vec = np.frombuffer(data, dtype=dt, count=dim, offset=at).astype(np.float32)
        at += dim * dt.itemsize
    history = None
    if packed_at != _NO_PACKED:
        history, at = _unpack_history(data, at, codec.history)
    stored = orjson.loads(data[at:])
    return MemberRecord(member_id, codec.decode(member_id, stored, history, packed_at), vec, version)


class MemberStore(Protocol):
    """Online member profiles and embeddings (versioned), plus per-trip purchase state."""

    def read(self, member_id: str, trip_key: str | None, extra_key: str | None = None) -> MemberRead:
        """The member's record in the active version, the trip's purchases and (when the store can read it
        in the same round trip, see :meth:`location`) the fields of the hash ``extra_key``."""
        ...

    async def aread(self, member_id: str, trip_key: str | None, extra_key: str | None = None) -> MemberRead:
        """:meth:`read` for an event loop."""
        ...

    def get(self, member_id: str) -> MemberRecord | None:
        """The member's record in the active version, or None when the member (or any version) is unknown."""
        ...

    def publish(
        self,
        profiles: pd.DataFrame,
        embeddings: Mapping[str, np.ndarray] | np.ndarray | None,
        version: str,
    ) -> PublishReport:
        """Load a new version and make it active atomically (see the module doc)."""
        ...

    def active_version(self) -> str | None:
        """The version readers see now (None before the first publish)."""
        ...

    def add_purchase(self, member_id: str, trip_key: str, offer_id: str, ttl: timedelta | float) -> None:
        """Remember that ``member_id`` bought ``offer_id`` for the trip ``trip_key`` (for ``ttl``)."""
        ...

    def purchases(self, member_id: str, trip_key: str) -> frozenset[str]:
        """Offer ids the member bought for the trip."""
        ...

    def location(self) -> str | None:
        """Which Redis the store lives in (None: in-process). Another store at the same location whose keys
        carry the member's hash tag can have its hash read by :meth:`read`."""
        ...

    def ping(self) -> bool:
        """True when the store answers (readiness)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    async def aclose(self) -> None:
        """Release the running loop's asyncio connections."""
        ...


# ------------------------------------------------------------------------------------------------------------
# Embedded (in-process)
# ------------------------------------------------------------------------------------------------------------


class EmbeddedMemberStore:
    """In-process store: one dict per version, swapped atomically; purchases in a dict with expiry times.

    For the single-process default (no Redis configured): the service publishes the artefact's profiles into
    it at start-up. State is lost on restart and not shared between processes. Embeddings are kept as
    float32 (memory is not the constraint here).
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._state: tuple[str | None, dict[str, MemberRecord]] = (None, {})
        self._purchases: dict[tuple[str, str], dict[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def read(self, member_id: str, trip_key: str | None, extra_key: str | None = None) -> MemberRead:
        rec = self._state[1].get(member_id)
        return MemberRead(rec, self.purchases(member_id, trip_key) if trip_key else frozenset())

    async def aread(self, member_id: str, trip_key: str | None, extra_key: str | None = None) -> MemberRead:
        return self.read(member_id, trip_key)

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
        cols, rows = profile_rows(profiles)
        data: dict[str, MemberRecord] = {}
        n_emb = 0
        for mid, values in rows:
            vec = emb.get(mid) if emb is not None else None
            if vec is not None:
                vec = np.asarray(vec, dtype=np.float32).copy()
                vec.setflags(write=False)
                n_emb += 1
            data[mid] = MemberRecord(mid, dict(zip(cols, values, strict=True)), vec, version)
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

    def location(self) -> str | None:
        return None

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


# ------------------------------------------------------------------------------------------------------------
# Redis
# ------------------------------------------------------------------------------------------------------------

# One request's read. KEYS: the member's record (when a version is active), the trip's purchases (when a
# trip is given), the extra hash (when asked) — all with the member's hash tag. ARGV[1]: which of the three
# are present, as "r", "b", "x" letters in that order.
# Returns {record or '', {purchased offer ids}, {extra hash field, value, ...}}.
_READ_LUA = """
local which, i = ARGV[1], 1
local rec, bought, extra = false, {}, {}
if string.find(which, 'r', 1, true) then rec = redis.call('GET', KEYS[i]); i = i + 1 end
if string.find(which, 'b', 1, true) then bought = redis.call('SMEMBERS', KEYS[i]); i = i + 1 end
if string.find(which, 'x', 1, true) then extra = redis.call('HGETALL', KEYS[i]) end
return {rec or '', bought, extra}
"""

# KEYS: pointer, versions zset, the new version's metadata (one hash tag). ARGV: new version, timestamp,
# TTL (s) of the pointer and the metadata (the version's). Returns the previous version or ''.
_SWITCH_LUA = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return old or ''
"""


@dataclass(frozen=True)
class _Active:
    """The cached pointer: the active version and how to decode its records."""

    version: str | None
    codec: RecordCodec = field(default_factory=lambda: RecordCodec.plain([]))
    dtype: EmbeddingDtype = "float16"
    read_at: float = 0.0


class RedisMemberStore:
    """Member store in Redis (see the module doc for the key layout and the publish protocol).

    ``clients``: the process's :class:`~recsys.stores.redis.RedisClients` (or a Redis URL). Reads go through
    its call guard (one timeout and circuit breaker shared with the cap store) and raise
    :class:`~recsys.stores.redis.RedisUnavailable` when Redis does not answer; the pipeline then serves the
    member as unknown. Publishing uses the clients' bulk connections.

    ``embedding_dtype``: how published embeddings are stored (``float16`` halves them; the ranking change it
    causes is measured by ``bench/bench_embedding_precision.py``).
    """

    def __init__(
        self,
        clients: RedisClients | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        batch_size: int = 1000,
        staging_ttl: timedelta = timedelta(hours=6),
        version_ttl: timedelta = timedelta(days=35),
        old_version_ttl: timedelta = timedelta(minutes=10),
        pointer_refresh_s: float = 1.0,
        embedding_dtype: EmbeddingDtype = "float16",
    ) -> None:
        self.clients = RedisClients.from_url(clients) if isinstance(clients, str) else clients
        self._own_clients = isinstance(clients, str)
        if not prefix or any(ch in prefix for ch in " \n{}"):
            raise ValueError(f"invalid key prefix {prefix!r}: non-empty, no spaces or braces")
        if embedding_dtype not in _DTYPES:
            raise ValueError(f"embedding_dtype must be one of {sorted(_DTYPES)}, got {embedding_dtype!r}")
        self.prefix = prefix
        self.batch_size = int(batch_size)
        self.staging_ttl = _ttl_seconds(staging_ttl)
        self.version_ttl = _ttl_seconds(version_ttl)
        self.old_version_ttl = _ttl_seconds(old_version_ttl)
        self.pointer_refresh_s = float(pointer_refresh_s)
        self.embedding_dtype: EmbeddingDtype = embedding_dtype
        tag = f"{prefix}:{{{prefix}}}"
        self._pointer = f"{tag}:active"
        self._versions = f"{tag}:versions"
        self._active = _Active(None)
        self._read_script = self.clients.sync.register_script(_READ_LUA)
        self._switch = self.clients.bulk.register_script(_SWITCH_LUA)

    # -- keys --------------------------------------------------------------------------------------------
    def member_key(self, version: str, member_id: str) -> str:
        return f"{self.prefix}:{{{member_id}}}:{version}"

    def purchases_key(self, member_id: str, trip_key: str) -> str:
        return f"{self.prefix}:{{{member_id}}}:b:{trip_key}"

    def meta_key(self, version: str) -> str:
        return f"{self.prefix}:{{{self.prefix}}}:meta:{version}"

    def version_keys(self, version: str) -> Iterator[bytes]:
        """Every member key of one version (SCAN of every primary; for maintenance and tests)."""
        yield from self.clients.bulk.scan_iter(
            match=f"{_glob_escape(self.prefix)}:{{*}}:{_glob_escape(version)}", count=1000
        )

    def location(self) -> str | None:
        return self.clients.config.url

    # -- the pointer -------------------------------------------------------------------------------------
    def _fresh(self) -> bool:
        return time.monotonic() - self._active.read_at < self.pointer_refresh_s

    def _refresh(self) -> _Active:
        client = self.clients.sync
        version = client.get(self._pointer)
        return self._activate(version, lambda v: client.hmget(self.meta_key(v), _META_READ))

    async def _arefresh(self) -> _Active:
        client = self.clients.aio
        version = await client.get(self._pointer)
        meta = None
        if version and _text(version) != self._active.version:
            meta = await client.hmget(self.meta_key(_text(version)), _META_READ)
        return self._activate(version, lambda v: meta)

    def _activate(self, raw: bytes | str | None, meta_of: Any) -> _Active:
        now = time.monotonic()
        if not raw:
            self._active = _Active(None, read_at=now)
            return self._active
        version = _text(raw)
        if version == self._active.version:
            self._active = _Active(version, self._active.codec, self._active.dtype, now)
            return self._active
        columns, dtype, codec = meta_of(version) or (None, None, None)
        if not columns:
            # The pointer names a version without metadata: it expired, or a publish is switching now.
            self._active = _Active(None, read_at=now)
            return self._active
        stored_dtype = _text(dtype) if dtype else "float16"
        if stored_dtype not in _DTYPES:
            raise MemberStoreError(
                f"version {version} stores embeddings as {stored_dtype!r}, not one of {sorted(_DTYPES)}"
            )
        self._active = _Active(
            version, RecordCodec.loads(orjson.loads(columns), codec), cast(EmbeddingDtype, stored_dtype), now
        )
        return self._active

    # -- reads -------------------------------------------------------------------------------------------
    def _read_args(
        self, active: _Active, member_id: str, trip_key: str | None, extra_key: str | None
    ) -> tuple[list[str], str]:
        keys: list[str] = []
        which = ""
        if active.version is not None:
            keys.append(self.member_key(active.version, member_id))
            which += "r"
        if trip_key:
            keys.append(self.purchases_key(member_id, trip_key))
            which += "b"
        if extra_key:
            keys.append(extra_key)
            which += "x"
        return keys, which

    def read(self, member_id: str, trip_key: str | None, extra_key: str | None = None) -> MemberRead:
        guard = self.clients.guard

        def run() -> Any:
            active = self._active if self._fresh() else self._refresh()
            keys, which = self._read_args(active, member_id, trip_key, extra_key)
            if not keys:
                return active, None
            return active, self._read_script(keys=keys, args=[which])

        active, reply = guard.call(run, key=_tag(member_id))
        return self._decode(member_id, active, reply, extra_key is not None)

    async def aread(self, member_id: str, trip_key: str | None, extra_key: str | None = None) -> MemberRead:
        async def run() -> Any:
            active = self._active if self._fresh() else await self._arefresh()
            keys, which = self._read_args(active, member_id, trip_key, extra_key)
            if not keys:
                return active, None
            client = self.clients.aio
            try:
                reply = await client.evalsha(self._read_script.sha, len(keys), *keys, which)
            except NoScriptError:  # the server restarted or flushed its script cache
                # (redis-py strips the NOSCRIPT prefix from the message: match the type, not the text)
                reply = await client.eval(_READ_LUA, len(keys), *keys, which)
            return active, reply

        active, reply = await self.clients.guard.acall(run, key=_tag(member_id))
        return self._decode(member_id, active, reply, extra_key is not None)

    def _decode(self, member_id: str, active: _Active, reply: Any, with_extra: bool) -> MemberRead:
        if reply is None:
            return MemberRead(None, frozenset(), {} if with_extra else None)
        rec, bought, flat = reply
        record = None
        if rec and active.version is not None:
            record = decode_record(member_id, rec, active.version, active.codec, active.dtype)
        extra = None
        if with_extra:
            extra = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        return MemberRead(record, frozenset(b.decode() for b in bought), extra)

    def get(self, member_id: str) -> MemberRecord | None:
        return self.read(member_id, None).record

    def active_version(self) -> str | None:
        return self._refresh().version

    # -- publish -----------------------------------------------------------------------------------------
    def publish(
        self,
        profiles: pd.DataFrame,
        embeddings: Mapping[str, np.ndarray] | np.ndarray | None,
        version: str,
    ) -> PublishReport:
        t0 = time.perf_counter()
        version = _check_version(version)
        bulk = self.clients.bulk
        current = bulk.get(self._pointer)
        if current is not None and _text(current) == version:
            raise MemberStoreError(f"version {version} is already active; publish a new version")
        emb = _embedding_lookup(profiles, embeddings)
        self._unlink(self.version_keys(version))  # leftovers of a failed publish of this version
        cols, rows = profile_rows(profiles)
        codec = RecordCodec.for_profiles(profiles)
        keys: list[str] = []
        n_emb = 0
        dim = 0
        # A cluster pipeline groups the commands by node and sends each node its batch.
        pipe = bulk.pipeline(transaction=False)
        for mid, values in rows:
            key = self.member_key(version, mid)
            vec = emb.get(mid) if emb is not None else None
            if vec is not None:
                n_emb += 1
                dim = int(np.asarray(vec).size)
            pipe.set(key, encode_record(values, vec, self.embedding_dtype, codec), ex=self.staging_ttl)
            keys.append(key)
            if len(keys) % self.batch_size == 0:
                pipe.execute()
                self._after_batch(version, len(keys))
        pipe.execute()
        meta: dict[EncodableT, EncodableT] = {
            "columns": orjson.dumps(cols),
            "codec": codec.dumps(),  # after every record: the history vocabulary is complete
            "dtype": self.embedding_dtype,
            "members": len(keys),
            "with_embedding": n_emb,
            "dim": dim,
            "published_at": datetime.now(UTC).isoformat(),
        }
        meta_key = self.meta_key(version)
        bulk.hset(meta_key, mapping=meta)
        bulk.expire(meta_key, self.staging_ttl)
        # Loaded: give the new keys the version's life, then switch the pointer atomically.
        for start in range(0, len(keys), self.batch_size):
            for key in keys[start : start + self.batch_size]:
                pipe.expire(key, self.version_ttl)
            pipe.execute()
        previous = self._switch(
            keys=[self._pointer, self._versions, meta_key], args=[version, time.time(), self.version_ttl]
        )
        self._active = _Active(version, codec, self.embedding_dtype, time.monotonic())
        previous_version = previous.decode() if previous else None
        if previous_version and previous_version != version:
            self._expire(self.version_keys(previous_version), self.old_version_ttl)
            bulk.expire(self.meta_key(previous_version), self.old_version_ttl)
            bulk.zrem(self._versions, previous_version)
        return PublishReport(version, previous_version, len(keys), n_emb, time.perf_counter() - t0)

    def _after_batch(self, version: str, loaded: int) -> None:
        """Hook called after each loaded batch (progress logging; tests use it to read mid-load)."""

    def _unlink(self, keys: Iterator[bytes]) -> None:
        pipe = self.clients.bulk.pipeline(transaction=False)
        for n, k in enumerate(keys, start=1):
            pipe.unlink(k)
            if n % self.batch_size == 0:
                pipe.execute()
        pipe.execute()

    def _expire(self, keys: Iterator[bytes], ttl: int) -> None:
        pipe = self.clients.bulk.pipeline(transaction=False)
        for n, k in enumerate(keys, start=1):
            pipe.expire(k, ttl)
            if n % self.batch_size == 0:
                pipe.execute()
        pipe.execute()

    # -- per-trip state ----------------------------------------------------------------------------------
    def add_purchase(self, member_id: str, trip_key: str, offer_id: str, ttl: timedelta | float) -> None:
        key = self.purchases_key(member_id, trip_key)

        def run() -> None:
            pipe = self.clients.sync.pipeline(transaction=True)  # one key: one slot, a MULTI works
            pipe.sadd(key, offer_id)
            pipe.expire(key, _ttl_seconds(ttl))
            pipe.execute()

        self.clients.guard.call(run, key=key)

    def purchases(self, member_id: str, trip_key: str) -> frozenset[str]:
        return self.read(member_id, trip_key).purchased

    def ping(self) -> bool:
        return self.clients.ping()

    def close(self) -> None:
        if self._own_clients:
            self.clients.close()

    async def aclose(self) -> None:
        if self._own_clients:
            await self.clients.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


def build_member_store(url: str | None, *, clients: RedisClients | None = None, **kwargs: Any) -> MemberStore:
    """The member store for a URL: a Redis URL → Redis (on ``clients`` when given, the process's shared
    clients); None/``memory://`` → embedded. Keyword arguments go to the implementation (e.g. ``prefix=``)."""
    if not url or url.startswith("memory://"):
        return EmbeddedMemberStore()
    if is_redis_url(url):
        return RedisMemberStore(clients or url, **kwargs)
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


__all__ = [
    "DEFAULT_PREFIX",
    "EmbeddedMemberStore",
    "MemberRead",
    "MemberRecord",
    "MemberStore",
    "MemberStoreError",
    "PublishReport",
    "RedisMemberStore",
    "RedisUnavailable",
    "build_member_store",
    "model_version_prefix",
    "profile_records",
    "profile_rows",
    "publish_profiles",
]
