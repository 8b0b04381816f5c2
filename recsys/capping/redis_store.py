"""Cap counters in Redis: one Lua script checks and records a whole request atomically, in one round trip.

- **Atomic per member**: the script reads every counter the candidates touch, walks the candidates in rank
order (counting the ones it has already taken), and records the impressions of those it selects — all inside
one ``EVALSHA``, so concurrent requests for one member (from any number of processes) can never together
exceed a cap. - **Cluster-ready**: every key of a member carries the member in a hash tag
(``caps:{M0000001}:...``), and the script only touches keys passed in ``KEYS``. - **Bounded memory**: every
key gets a TTL — rolling windows: the window + 1 min; calendar windows: to the end of the member's local
day/week + 1 min; lifetime counters: the policy's ``lifetime_ttl`` (default 400 days, refreshed on every
impression); cool-downs: their duration + 1 min; the member's key index: its longest key. Rolling sorted sets
keep at most the largest limit any tier has. :func:`memory_report` checks all of this. - **Injected time**:
the script uses the ``now`` it is given, never Redis ``TIME``. - **Outage**: socket timeouts of ``timeout_ms``
(no retries) and a circuit breaker (back-off doubling from ``breaker_backoff_ms`` to
``breaker_max_backoff_ms``, one trial call at a time) — nothing raises, nothing waits more than about
``timeout_ms``; ``fail_closed`` serves only exempt offers, ``fail_open`` serves through an in-process limiter
(the policy's caps plus ``outage.local_cap``). Recovery is automatic. A call that timed out may still have
been applied by Redis: an outage can over-count, never under-count.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsys.aioredis import LoopRedis
from recsys.capping.engine import (
    LOCAL_CAP_NAME,
    ROLLING_PRUNE_AT,
    KeySpace,
    Plan,
    PlanEnforcer,
    RawResult,
    StoreUnavailable,
)
from recsys.capping.memory_store import EmbeddedCapEnforcer
from recsys.capping.policy import CapPolicy, PolicyHolder
from recsys.capping.types import (
    REASON_OUTAGE_CLOSED,
    CapCandidate,
    CapDecision,
    CapMember,
    Suppression,
)
from recsys.stores.redis import CircuitBreaker

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The check-and-record script: the same algorithm as engine.run_plan (keep the two in step).
# KEYS: the counter hashes, then the member's cool-down hash.
# ARGV: now_ms, k, mode (check | check_record | force), plan JSON:
#   {"k": [[kind (r|c|l), window_ms, keep, ttl_ms], ...],          one per counter hash, in KEYS order
#    "c": [[hash index, field, limit], ...],                        one per counter
#    "f": [cool-down field, ...], "d": [cool-down duration_ms, ...],
#    "x": [[exempt (0|1), [cool-down indices], [counter indices]], ...],   one per candidate, in rank order
#    "m": how many of the candidates may be selected (the others are only checked on their own)}
# Returns {selected candidate indices (1-based), flat suppressions {cand, kind, ref, value, hint} ...,
#          candidates blocked on their own by the stored state (1-based)}.
CHECK_AND_RECORD_LUA = """
local now = tonumber(ARGV[1])
local k = tonumber(ARGV[2])
local mode = ARGV[3]
local plan = cjson.decode(ARGV[4])
local hk, specs, fields, cddur, cands = plan['k'], plan['c'], plan['f'], plan['d'], plan['x']
local nk = #hk
local check = mode ~= 'force'
-- HMGET in chunks: Lua's unpack() cannot spread more than a few thousand values.
local function hmget(key, names)
  local out = {}
  for s = 1, #names, 1000 do
    local chunk = {}
    for x = s, math.min(s + 999, #names) do chunk[#chunk + 1] = names[x] end
    local vals = redis.call('HMGET', key, unpack(chunk))
    for x = 1, #vals do out[s + x - 1] = vals[x] end
  end
  return out
end
local record = mode == 'check_record' or mode == 'force'
local bykey = {}
for i = 1, #specs do
  local ki = specs[i][1]
  if not bykey[ki] then bykey[ki] = {} end
  local l = bykey[ki]
  l[#l + 1] = i
end
local count, stored, times, added = {}, {}, {}, {}
for ki, idxs in pairs(bykey) do
  local names = {}
  for n, i in ipairs(idxs) do names[n] = specs[i][2] end
  local vals = hmget(KEYS[ki], names)
  local kind = hk[ki][1]
  for n, i in ipairs(idxs) do
    local v = vals[n]
    if kind == 'r' then
      local ts = {}
      if v then
        local lo = now - hk[ki][2]
        for t in string.gmatch(v, '[^,]+') do
          local x = tonumber(t)
          if x > lo then ts[#ts + 1] = x end
        end
      end
      times[i] = ts
      count[i] = #ts
    else
      if v then count[i] = tonumber(v) else count[i] = 0 end
    end
    stored[i] = count[i]
    added[i] = 0
  end
end
local cdt = {}
if #fields > 0 then
  local vals = hmget(KEYS[nk + 1], fields)
  for j = 1, #fields do
    if vals[j] then cdt[j] = tonumber(vals[j]) else cdt[j] = false end
  end
end
local selected, suppressed = {}, {}
local selectable = plan['m'] or #cands
for c = 1, selectable do
  if check and #selected >= k then break end
  local cand = cands[c]
  if cand[1] == 1 then
    selected[#selected + 1] = c
  else
    local blocked = false
    if check then
      for _, j in ipairs(cand[2]) do
        local t = cdt[j]
        if t and now < t + cddur[j] then
          suppressed[#suppressed + 1] = {c, 1, j, t, 0}
          blocked = true
          break
        end
      end
      if not blocked then
        for _, i in ipairs(cand[3]) do
          local lim = specs[i][3]
          if count[i] + 1 > lim then
            local hint = 0
            if hk[specs[i][1]][1] == 'r' then
              local rank = count[i] - lim
              if rank < stored[i] then hint = times[i][rank + 1] else hint = now end
            end
            suppressed[#suppressed + 1] = {c, 2, i, count[i], hint}
            blocked = true
            break
          end
        end
      end
    end
    if not blocked then
      selected[#selected + 1] = c
      for _, i in ipairs(cand[3]) do
        count[i] = count[i] + 1
        added[i] = added[i] + 1
      end
    end
  end
end
if record then
  local touched = {}
  for i = 1, #specs do
    if added[i] > 0 then
      local ki, f = specs[i][1], specs[i][2]
      local h = hk[ki]
      if h[1] == 'r' then
        local ts = times[i]
        for m = 1, added[i] do ts[#ts + 1] = now end
        table.sort(ts)
        local out = {}
        for x = math.max(1, #ts - h[3] + 1), #ts do out[#out + 1] = string.format('%d', ts[x]) end
        redis.call('HSET', KEYS[ki], f, table.concat(out, ','))
      else
        redis.call('HINCRBY', KEYS[ki], f, added[i])
      end
      touched[ki] = true
    end
  end
  for ki, _ in pairs(touched) do
    local h = hk[ki]
    if h[1] == 'r' and redis.call('HLEN', KEYS[ki]) > PRUNE_AT then
      local all = redis.call('HGETALL', KEYS[ki])
      local lo = now - h[2]
      for x = 1, #all, 2 do
        local newest = tonumber(string.match(all[x + 1], '([^,]+)$'))
        if newest <= lo then redis.call('HDEL', KEYS[ki], all[x]) end
      end
    end
    redis.call('PEXPIRE', KEYS[ki], h[4])
  end
end
-- Candidates blocked on their own by the stored state (cool-down, or a counter already at its limit).
local blocked = {}
if check then
  for c = 1, #cands do
    local cand = cands[c]
    if cand[1] ~= 1 then
      local b = false
      for _, j in ipairs(cand[2]) do
        local t = cdt[j]
        if t and now < t + cddur[j] then b = true break end
      end
      if not b then
        for _, i in ipairs(cand[3]) do
          if stored[i] + 1 > specs[i][3] then b = true break end
        end
      end
      if b then blocked[#blocked + 1] = c end
    end
  end
end
local flat = {}
for _, s in ipairs(suppressed) do
  for _, x in ipairs(s) do flat[#flat + 1] = x end
end
return {selected, flat, blocked}
""".replace("PRUNE_AT", str(ROLLING_PRUNE_AT))

# Cool-downs: remember the time of the last dismissal / purchase per field (never move it backwards), drop
# fields older than the longest cool-down, keep the hash alive as long as the longest cool-down.
# KEYS: the cool-down hash.  ARGV: now_ms, ttl_ms, field...
SET_COOLDOWNS_LUA = """
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local cd = KEYS[1]
for i = 3, #ARGV do
  local old = redis.call('HGET', cd, ARGV[i])
  if not old or tonumber(old) <= now then redis.call('HSET', cd, ARGV[i], now) end
end
local all = redis.call('HGETALL', cd)
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) + ttl <= now then redis.call('HDEL', cd, all[i]) end
end
if redis.call('PTTL', cd) < ttl then redis.call('PEXPIRE', cd, ttl) end
return 1
"""


def _describe(e: BaseException) -> str:
    if isinstance(e, redis.exceptions.TimeoutError | TimeoutError):
        return "redis timeout"
    if isinstance(e, redis.exceptions.ConnectionError | ConnectionError | OSError):
        return "redis unreachable"
    return f"redis error: {type(e).__name__}"


def _local_policy(policy: CapPolicy) -> CapPolicy:
    """The policy's caps plus the outage.local_cap member-wide cap, for the fail-open local limiter.

    The limiter always counts what it serves (``count_on: serve``): app impression events reach only one of
    the service's processes, so counting them would not keep the per-process cap.
    """
    data = policy.model_dump(mode="json")
    data["count_on"] = "serve"
    lc = policy.outage.local_cap
    data["caps"] = [c for c in data["caps"] if c["name"] != LOCAL_CAP_NAME] + [
        {"name": LOCAL_CAP_NAME, "scope": "member", "limit": lc.limit, "window": lc.window}
    ]
    return CapPolicy.model_validate(data)


def _raw_result(reply: Any) -> RawResult:
    """The check-and-record script's reply as 0-based candidate indices and suppression tuples."""
    sel, flat, blocked = reply
    suppressed = [
        (int(flat[i]) - 1, int(flat[i + 1]), int(flat[i + 2]) - 1, int(flat[i + 3]), int(flat[i + 4]))
        for i in range(0, len(flat), 5)
    ]
    return RawResult([int(c) - 1 for c in sel], suppressed, [int(c) - 1 for c in blocked])


class RedisCapEnforcer(PlanEnforcer):
    """Cap enforcement over Redis (shared by every service process)."""

    store_name = "redis"

    def __init__(
        self,
        url: str,
        holder: PolicyHolder,
        *,
        key_prefix: str = "caps",
        timeout_ms: float | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        super().__init__(holder, key_prefix)
        self.timeout_s = (timeout_ms if timeout_ms is not None else holder.policy.timeout_ms) / 1000.0
        self._own_client = client is None
        self.client: redis.Redis = client or redis.Redis.from_url(
            url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        # awaited calls (an enforcer built around a given client runs them blocking)
        self._aio = (
            LoopRedis(url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s)
            if client is None
            else None
        )
        self._check_script = self.client.register_script(CHECK_AND_RECORD_LUA)
        self._cooldown_script = self.client.register_script(SET_COOLDOWNS_LUA)
        self.breaker = CircuitBreaker(name="cap store")
        self._local_lock = threading.Lock()
        self._local: EmbeddedCapEnforcer | None = None
        self._local_src: CapPolicy | None = None

    # -- calls through the breaker ------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        self._admit()
        try:
            result = fn()
        except Exception as e:  # never let a store failure escape into the request
            raise self._failed(e) from e
        self.breaker.success()
        return result

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise StoreUnavailable(self.breaker.last_error or "redis unavailable")

    def _failed(self, e: Exception) -> StoreUnavailable:
        """Count a failed call against the breaker; the error to raise in its place."""
        if not isinstance(e, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError):
            logger.exception("unexpected cap store error")
        outage = self.holder.policy.outage
        self.breaker.failure(
            _describe(e), outage.breaker_backoff_ms / 1000.0, outage.breaker_max_backoff_ms / 1000.0
        )
        return StoreUnavailable(_describe(e))

    def _execute(self, plan: Plan, k: int, mode: str) -> RawResult:
        keys, args = plan.lua_args(k, mode)
        return _raw_result(self._call(lambda: self._check_script(keys=keys, args=args)))

    async def _aexecute(self, plan: Plan, k: int, mode: str) -> RawResult:
        """The check-and-record script through the event loop's asyncio client (same timeout and breaker as
        the blocking path); an enforcer built around a given client runs it blocking."""
        if self._aio is None:
            return self._execute(plan, k, mode)
        keys, args = plan.lua_args(k, mode)
        self._admit()
        try:
            reply = await self._aio.evalsha(CHECK_AND_RECORD_LUA, self._check_script.sha, keys, args)
        except Exception as e:
            raise self._failed(e) from e
        self.breaker.success()
        return _raw_result(reply)

    async def aclose(self) -> None:
        """Close the asyncio client (from the event loop that used it)."""
        if self._aio is not None:
            await self._aio.aclose()

    def _write_cooldowns(self, keys: KeySpace, fields: list[str], now_ms: int, ttl_ms: int) -> None:
        self._call(lambda: self._cooldown_script(keys=[keys.cooldowns], args=[now_ms, ttl_ms, *fields]))

    def _read(self, names: list[str], now_ms: int) -> dict[str, dict[str, str]]:
        def read() -> dict[str, dict[str, str]]:
            pipe = self.client.pipeline(transaction=False)
            for n in names:
                pipe.hgetall(n)
            return {
                n: {f.decode(): v.decode() for f, v in fields.items()}
                for n, fields in zip(names, pipe.execute(), strict=True)
            }

        return self._call(read)

    # -- outage policy ------------------------------------------------------------------------------------
    def local_enforcer(self) -> EmbeddedCapEnforcer:
        """The per-process limiter used while Redis is unavailable under ``fail_open``."""
        policy = self.holder.policy
        with self._local_lock:
            if self._local is None or self._local_src is not policy:
                local = _local_policy(policy)
                if self._local is None:
                    self._local = EmbeddedCapEnforcer(
                        PolicyHolder.static(local),
                        key_prefix=self.key_prefix,
                        max_members=policy.outage.local_cap.max_members,
                    )
                else:
                    self._local.holder.replace(local)
                self._local_src = policy
            return self._local

    def _degraded(
        self,
        error: StoreUnavailable,
        member: CapMember,
        candidates: Sequence[CapCandidate],
        k: int,
        placement: str,
        now: datetime,
        record: bool,
    ) -> CapDecision:
        policy = self.holder.policy
        if policy.outage.mode == "fail_open":
            d = self.local_enforcer().select_and_record(member, candidates, k, placement, now, record)
            return CapDecision(d.selected, d.suppressed, degraded=f"fail_open: {error}")
        rp = policy.resolved(member.tier)
        selected: list[str] = []
        suppressed: list[Suppression] = []
        detail = f"cap counters unavailable ({error}); the fail_closed policy shows only exempt offers"
        for c in candidates:
            if len(selected) >= k:
                break
            if rp.is_exempt(c.offer_id, c.category, c.exempt):
                selected.append(c.offer_id)
            else:
                suppressed.append(Suppression(c.offer_id, REASON_OUTAGE_CLOSED, detail))
        return CapDecision(selected, suppressed, degraded=f"fail_closed: {error}")

    def _degraded_event(
        self,
        error: StoreUnavailable,
        member: CapMember,
        offer: CapCandidate,
        event: str,
        placement: str,
        now: datetime,
    ) -> None:
        if self.holder.policy.outage.mode == "fail_open":
            self.local_enforcer().record_event(member, offer, event, placement, now)
        else:
            logger.warning(
                "cap store unavailable (%s): %s event for %s not applied", error, event, member.member_id
            )

    def status(self) -> dict[str, Any]:
        b = self.breaker
        return {
            "store": "redis",
            "breaker_open": b.is_open,
            "last_error": b.last_error,
            "failures": b.failures,
        }

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def close(self) -> None:
        if self._own_client:
            self.client.close()


def memory_report(
    client: redis.Redis, prefix: str = "caps", *, sample: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Memory and TTL audit of the cap keys under ``prefix``: for the service benchmark after simulated
    traffic.

    Scans every key ``<prefix>:*``, checks each has a TTL (``keys_without_ttl`` lists up to 100 that do not),
    measures ``MEMORY USAGE`` on a seeded sample and extrapolates. ``bytes_per_member`` is the estimated cap
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
    usages = [u for u in pipe.execute() if u is not None]
    avg = sum(usages) / len(usages) if usages else 0.0
    total = avg * len(names)
    by_kind: dict[str, int] = {}
    for n in names:
        kind = n.split(b"}:", 1)[1].split(b":", 1)[0].decode() if b"}:" in n else "?"
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
        "mean_key_bytes": round(avg, 1),
        "estimated_bytes": int(total),
        "bytes_per_member": round(total / len(members), 1) if members else 0.0,
        "used_memory": int(info.get("used_memory", 0)),
    }
