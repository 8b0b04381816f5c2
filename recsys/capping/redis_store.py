"""Cap state in Redis: one hash per member, read in one call and written by one script that commits only
if the hash is unchanged since it was read.

- **Atomic per member**: decisions are made by the core (:mod:`recsys.capping.engine`) from a read of the
  member's hash; :data:`COMMIT_LUA` applies the writes only if the hash's version field is still the one
  read, else it returns the current hash and the core decides again. Concurrent requests for one member (from
  any number of processes) can therefore never together exceed a cap.
- **Cluster-safe**: one key per member, ``<prefix>:{M0000001}``, whose hash tag is the member id — the tag
  the member store's keys use too, so the member store reads the profile and this hash in one script
  (:meth:`~recsys.stores.member_store.MemberStore.read`) and a request needs no separate cap read. Scripts
  touch only keys passed in ``KEYS``.
- **Bounded memory**: every write prunes the fields whose life is over and sets the hash's TTL to its
  longest remaining life; :func:`memory_report` checks it.
- **Injected time**: the core uses the request's ``now``, never Redis ``TIME``.
- **Outage**: calls run under the process's :class:`~recsys.stores.redis.CallGuard` (one timeout, no
  retries, a circuit breaker shared with the member store); a failed call raises
  :class:`~recsys.capping.types.StoreUnavailable` and :class:`~recsys.capping.enforcer.ResilientCapEnforcer`
  applies the outage policy. A commit that timed out may still have been applied: an outage can over-count,
  never under-count.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError

from recsys.capping.engine import VERSION_FIELD, Writes
from recsys.capping.types import CapState, StoreUnavailable
from recsys.stores.redis import RedisClients, RedisUnavailable

T = TypeVar("T")

# KEYS[1]: the member's cap hash. ARGV: the version read ('' = no hash), the new TTL (ms), the number n of
# fields to set, n field/value pairs, then the fields to delete.
# Returns 1 when applied, else the current hash (HGETALL) for the caller to decide again.
COMMIT_LUA = """
local v = redis.call('HGET', KEYS[1], 'VERSION')
if (v or '') ~= ARGV[1] then return redis.call('HGETALL', KEYS[1]) end
local n = tonumber(ARGV[3])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + 2 * n)) end
if #ARGV > 3 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 4 + 2 * n, #ARGV)) end
redis.call('HINCRBY', KEYS[1], 'VERSION', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""".replace("VERSION", VERSION_FIELD)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(raw: Mapping[bytes | str, bytes | str] | list[bytes]) -> dict[str, str]:
    """A hash's fields from HGETALL (a dict) or from a script's flat reply (a list)."""
    if isinstance(raw, list):
        return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
    return {_text(f): _text(v) for f, v in raw.items()}


def _commit_args(state: CapState, w: Writes) -> list[Any]:
    args: list[Any] = [state.version, w.ttl_ms, len(w.set)]
    for f, v in w.set.items():
        args += [f, v]
    return args + list(w.delete)


class RedisCapStore:
    """Members' cap hashes in Redis (standalone, Sentinel or Cluster: whatever ``clients`` talk to)."""

    name = "redis"

    def __init__(self, clients: RedisClients, *, key_prefix: str = "caps", own_clients: bool = False) -> None:
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty and contain no braces, got {key_prefix!r}")
        self.clients = clients
        self.key_prefix = key_prefix
        self._own = own_clients
        self._commit = clients.sync.register_script(COMMIT_LUA)

    def key(self, member_id: str) -> str:
        return f"{self.key_prefix}:{{{member_id}}}"

    def _call(self, fn: Callable[[], T], key: str) -> T:
        try:
            return self.clients.guard.call(fn, key=key)
        except RedisUnavailable as e:
            raise StoreUnavailable(e.reason) from e

    async def _acall(self, fn: Callable[[], Awaitable[T]], key: str) -> T:
        try:
            return await self.clients.guard.acall(fn, key=key)
        except RedisUnavailable as e:
            raise StoreUnavailable(e.reason) from e

    def read(self, key: str) -> CapState:
        return CapState.of(_fields(self._call(lambda: self.clients.sync.hgetall(key), key)))

    async def aread(self, key: str) -> CapState:
        return CapState.of(_fields(await self._acall(lambda: self.clients.aio.hgetall(key), key)))

    def commit(self, key: str, state: CapState, w: Writes) -> CapState | None:
        reply = self._call(lambda: self._commit(keys=[key], args=_commit_args(state, w)), key)
        return None if reply == 1 else CapState.of(_fields(reply))

    async def acommit(self, key: str, state: CapState, w: Writes) -> CapState | None:
        args = _commit_args(state, w)

        async def run() -> Any:
            client = self.clients.aio
            try:
                return await client.evalsha(self._commit.sha, 1, key, *args)
            except NoScriptError:  # the server restarted or flushed its script cache
                return await client.eval(COMMIT_LUA, 1, key, *args)

        reply = await self._acall(run, key)
        return None if reply == 1 else CapState.of(_fields(reply))

    def location(self) -> str | None:
        return self.clients.config.url

    def ping(self) -> bool:
        return self.clients.ping()

    def status(self) -> dict[str, Any]:
        guard = self.clients.guard
        b = guard.breaker
        nodes = list(guard.node_breakers.values())
        return {
            "store": "redis",
            "breaker_open": b.is_open or any(n.is_open for n in nodes),
            "last_error": b.last_error or next((n.last_error for n in nodes if n.is_open), None),
            "failures": b.failures + sum(n.failures for n in nodes),
            "open_breakers": guard.open_breakers,
        }

    def close(self) -> None:
        if self._own:
            self.clients.close()

    async def aclose(self) -> None:
        if self._own:
            await self.clients.aclose()


def memory_report(
    client: redis.Redis, prefix: str = "caps", *, sample: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Memory and TTL audit of the cap keys under ``prefix``: for the service benchmark after simulated
    traffic.

    Scans every key ``<prefix>:*``, counts them by kind (``keys_by_kind``: ``member_hash`` or ``other``),
    checks each has a TTL (``keys_without_ttl`` lists up to 100 that do not), measures ``MEMORY USAGE`` and
    the encoding (``encodings``: a hash that outgrows Redis's listpack thresholds becomes a ``hashtable``,
    several times larger) on a seeded sample and extrapolates. ``bytes_per_member`` is the estimated cap
    memory per member that has any key; ``used_memory`` is Redis's own ``INFO memory`` figure (whole server).
    """
    names: list[bytes] = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    members = {n[: n.index(b"}") + 1] for n in names if b"}" in n}
    no_ttl: list[str] = []
    ttl_sum = 0.0
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(names), 1000):
        for n in names[i : i + 1000]:
            pipe.pttl(n)
        for n, t in zip(names[i : i + 1000], pipe.execute(), strict=True):
            if t == -1:
                no_ttl.append(n.decode())
            elif t > 0:
                ttl_sum += t
    rng = random.Random(seed)
    picked = names if len(names) <= sample else rng.sample(names, sample)
    for n in picked:
        pipe.memory_usage(n, samples=0)
        pipe.object("encoding", n)
    replies = pipe.execute()
    usages = [u for u in replies[0::2] if u is not None]
    encodings: dict[str, int] = {}
    for e in replies[1::2]:
        if e is not None:
            encodings[_text(e)] = encodings.get(_text(e), 0) + 1
    avg = sum(usages) / len(usages) if usages else 0.0
    total = avg * len(names)
    # What each key is: a member's cap hash (``<prefix>:{<member>}``, the only kind this store writes) or
    # anything else under the prefix (e.g. the per-counter keys of the layout before the hash).
    by_kind: dict[str, int] = {}
    head = f"{prefix}:{{".encode()
    for n in names:
        hashed = n.startswith(head) and n.endswith(b"}") and n.count(b"{") == 1 and len(n) > len(head) + 1
        kind = "member_hash" if hashed else "other"
        by_kind[kind] = by_kind.get(kind, 0) + 1
    info = client.info("memory")
    return {
        "prefix": prefix,
        "keys": len(names),
        "keys_by_kind": by_kind,
        "members": len(members),
        "keys_without_ttl": no_ttl[:100],
        "n_keys_without_ttl": len(no_ttl),
        "mean_ttl_hours": round(ttl_sum / max(len(names) - len(no_ttl), 1) / 3.6e6, 2),
        "sampled_keys": len(usages),
        "encodings": encodings,
        "mean_key_bytes": round(avg, 1),
        "estimated_bytes": int(total),
        "bytes_per_member": round(total / len(members), 1) if members else 0.0,
        "used_memory": int(info.get("used_memory", 0)),
    }
