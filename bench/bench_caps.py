"""Micro-benchmark of frequency capping: one select_and_record round trip; memory after a simulated month.

    .venv/bin/python bench/bench_caps.py                        # latency: in-process and Redis (db 15)
    .venv/bin/python bench/bench_caps.py --month --members 2000  # + a month of traffic, memory per member

Latency: ``--calls`` calls of ``select_and_record`` with ``--candidates`` ranked candidates (k=5) over many
members with the default policy (config/caps.yaml); prints p50/p99/mean in ms, the client-side share (plan
building) and a Redis PING in the same loop as the floor. On a loaded machine, scheduling noise dominates.

Month: every member makes ``--requests-per-day`` requests a day for 30 days (injected time), with the app's
impression events for what it was served (under ``count_on: event``), dismissals and purchases. Redis TTLs run
in real time while the month is simulated, so at the end the members' cap hashes whose TTL would have run out
by then are deleted (the TTL a commit sets: the latest expiry of the hash's fields + slack, see
:func:`recsys.capping.engine.writes`), then :func:`recsys.capping.redis_store.memory_report` gives bytes per
member and checks that every key has a TTL. Uses its own key prefix and deletes only its own keys afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import redis

from recsys.capping.api import CapCandidate, CapEnforcer, CapMember, CapPolicy, build_enforcer, load_policy
from recsys.capping.engine import (
    TTL_SLACK_MS,
    build_plan,
    field_expiry_ms,
    lifetime_ms,
    max_cooldown_ms,
    run_plan,
    writes,
)
from recsys.capping.redis_store import memory_report
from recsys.schema import CATEGORY_FAMILY, Placement, Tier

REPO = Path(__file__).resolve().parents[1]
ZONES = ["Asia/Shanghai", "Europe/London", "America/New_York", "Asia/Tokyo", "UTC"]


def catalogue(n: int, rng: random.Random) -> list[CapCandidate]:
    cats = list(CATEGORY_FAMILY)
    return [
        CapCandidate(f"OF{i:05d}", CATEGORY_FAMILY[c].value, c.value, exempt=rng.random() < 0.03)
        for i, c in enumerate(rng.choice(cats) for _ in range(n))
    ]


def members(n: int, rng: random.Random) -> list[CapMember]:
    tiers = [t.value for t in Tier]
    return [CapMember(f"M{i:07d}", rng.choice(tiers), rng.choice(ZONES)) for i in range(n)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_latency(
    e: CapEnforcer, client: redis.Redis | None, args: argparse.Namespace, rng: random.Random
) -> dict[str, float | None]:
    """``client``: the Redis behind ``e`` (None: in-process), for the PING floor and the script statistics."""
    offers = catalogue(300, rng)
    people = members(5000, rng)
    placements = [p.value for p in Placement]
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    lat: list[float] = []
    plan_lat: list[float] = []
    ping_lat: list[float] = []
    cpu_ms = 0.0
    policy = e.holder.policy
    mode = "check_record" if policy.count_on == "serve" else "check"
    script_stats = (0, 0)
    for i in range(args.calls + 200):
        if i == 200 and client is not None:
            script_stats = evalsha_stats(client)
        m = rng.choice(people)
        cands = rng.sample(offers, args.candidates)
        placement = rng.choice(placements)
        t = now + timedelta(seconds=i)
        c0 = time.process_time()
        t0 = time.perf_counter()
        e.select_and_record(m, cands, 5, placement, t)
        t1 = time.perf_counter()
        c1 = time.process_time()
        # The client-side decision alone (as CoreCapEnforcer._select, k=5), on the hash as the call left it.
        fields = member_fields(client, e, m)
        tp = time.perf_counter()
        window = e.candidate_window
        considered = cands[: max(window, 25)] if window is not None else cands
        plan = build_plan(policy, policy.resolved(m.tier), m, considered, placement, t)
        plan.selectable = len(considered)
        raw = run_plan(plan, fields, 5, mode)
        writes(plan, fields, raw.added)
        t2 = time.perf_counter()
        if client is not None:
            client.ping()
        t3 = time.perf_counter()
        if i >= 200:  # warm-up
            cpu_ms += (c1 - c0) * 1000
            lat.append((t1 - t0) * 1000)
            plan_lat.append((t2 - tp) * 1000)
            if client is not None:
                ping_lat.append((t3 - t2) * 1000)
    out = {
        "p50_ms": round(pct(lat, 0.5), 3),
        "p99_ms": round(pct(lat, 0.99), 3),
        "mean_ms": round(statistics.fmean(lat), 3),
        "plan_p50_ms": round(pct(plan_lat, 0.5), 3),
        "client_cpu_mean_ms": round(cpu_ms / args.calls, 3),
    }
    if client is not None:
        calls, usec = evalsha_stats(client)
        n = calls - script_stats[0]
        out |= {
            "ping_p50_ms": round(pct(ping_lat, 0.5), 3),
            "ping_p99_ms": round(pct(ping_lat, 0.99), 3),
            # Server-wide EVALSHA statistics: exact when nothing else runs scripts on this Redis meanwhile.
            # With ``count_on: event`` a request only reads the member's hash (no script).
            "script_calls": n,
            "script_server_mean_ms": round((usec - script_stats[1]) / n / 1000, 3) if n else None,
        }
    return out


def member_fields(client: redis.Redis | None, e: CapEnforcer, m: CapMember) -> dict[str, str]:
    """The member's cap hash in ``e``'s Redis ({} in-process)."""
    key = e.state_key(m.member_id)
    if client is None or key is None:
        return {}
    raw = cast(dict[bytes, bytes], client.hgetall(key))  # the sync client's reply
    return {k.decode(): v.decode() for k, v in raw.items()}


def evalsha_stats(client: redis.Redis) -> tuple[int, int]:
    """(calls, total microseconds) of EVALSHA on the server so far."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def expire_simulated(client: redis.Redis, prefix: str, policy: CapPolicy, end: datetime) -> int:
    """Delete the members' hashes whose TTL would have run out by ``end`` had the month passed in real time:
    the TTL of a hash's last commit is its fields' latest expiry + slack."""
    end_ms = int(end.timestamp() * 1000)
    life, cooldown = lifetime_ms(policy), max_cooldown_ms(policy)
    gone = 0
    for name in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
        raw = cast(dict[bytes, bytes], client.hgetall(name))
        fields = {k.decode(): v.decode() for k, v in raw.items() if k != b"v"}
        expires = max((field_expiry_ms(k, v, life, cooldown) for k, v in fields.items()), default=0)
        if expires + TTL_SLACK_MS <= end_ms:
            client.delete(name)
            gone += 1
    return gone


def simulate_month(e: CapEnforcer, client: redis.Redis, prefix: str, args: argparse.Namespace) -> dict:
    rng = random.Random(7)
    offers = catalogue(300, rng)
    people = members(args.members, rng)
    by_id = {o.offer_id: o for o in offers}
    count_on_event = e.holder.policy.count_on == "event"
    placements = [p.value for p in Placement]
    start = datetime(2026, 10, 1, tzinfo=UTC)
    calls = 0
    t0 = time.perf_counter()
    for day in range(30):
        for m in people:
            for _ in range(args.requests_per_day):
                t = start + timedelta(days=day, seconds=rng.randrange(86_400))
                placement = rng.choice(placements)
                d = e.select_and_record(m, rng.sample(offers, args.candidates), 5, placement, t)
                calls += 1
                if count_on_event:  # the app reports what it showed
                    for offer_id in d.selected:
                        e.record_event(m, by_id[offer_id], "impression", placement, t)
                if d.selected and rng.random() < 0.05:
                    e.record_event(m, by_id[d.selected[0]], rng.choice(["dismiss", "purchase"]), "home", t)
    elapsed = time.perf_counter() - t0
    end = start + timedelta(days=30)
    expired = expire_simulated(client, prefix, e.holder.policy, end)
    report = memory_report(client, prefix)
    report.update(calls=calls, seconds=round(elapsed, 1), expired_as_ttl_would=expired)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--policy", default=str(REPO / "config" / "caps.yaml"))
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--month", action="store_true", help="also simulate a month of traffic and report memory")
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--requests-per-day", type=int, default=2)
    args = ap.parse_args()
    policy = load_policy(args.policy)
    rng = random.Random(42)
    prefix = f"bench-caps-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(args.redis_url)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise SystemExit(
            f"Redis not reachable at {args.redis_url} ({exc}); start it with: "
            'redis-server --daemonize yes --port 6379 --save "" --appendonly no'
        ) from exc
    out: dict[str, object] = {"candidates": args.candidates, "calls": args.calls}
    try:
        out["memory"] = bench_latency(build_enforcer(None, policy), None, args, rng)
        e = build_enforcer(args.redis_url, policy, key_prefix=prefix, timeout_ms=1000)
        out["redis"] = bench_latency(e, client, args, rng)
        if args.month:
            e.close()
            month_prefix = prefix + "-month"
            try:
                e = build_enforcer(args.redis_url, policy, key_prefix=month_prefix, timeout_ms=1000)
                out["month"] = simulate_month(e, client, month_prefix, args)
            finally:
                names = list(client.scan_iter(match=f"{month_prefix}:*", count=1000))
                for i in range(0, len(names), 1000):
                    client.delete(*names[i : i + 1000])
        e.close()
    finally:
        names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(names), 1000):
            client.delete(*names[i : i + 1000])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
