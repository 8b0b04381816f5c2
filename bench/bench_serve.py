"""``make bench-serve``: the recommend service under load, against its own framework floor.

What it does, in one run:

1. makes sure the 50,000-member world and its champion exist (``recsys data generate`` /
   ``recsys models ensure-champion``), and that ``wrk`` is installed (Debian package ``wrk``);
2. starts the service (``bench/floor_app.py``: the service's app, served as ``python -m serving`` serves it,
   ONE uvicorn worker, real Redis for caps and the member store, the champion from the registry) plus the
   benchmark's own floor endpoints, ``GET /v1/_floor`` a fixed 10-offer JSON body served by the same app,
   middleware and server;
3. drives it with ``wrk`` from a separate process (a Lua script cycling over thousands of distinct members,
   placements and trips): throughput and p50/p99 of the floor, of ``POST /v1/_floor/recommend-validate`` (the
   same request bodies validated, no I/O: what the framework's handling of this POST costs), of
   ``POST /v1/_floor/recommend-io`` (validated, member-store read, cap check-and-record, no ranking: the upper
   bound of any pipeline built on those parts) and of ``POST /v1/recommendations``;
4. a fixed-rate (open-loop) run at 300 requests/s from a separate process (``--loadgen`` mode of this script,
   latency measured from each request's *scheduled* send time, so a stall is not hidden): p50/p99;
5. restarts the service with capping OFF and repeats 3–4 for recommendations: the cost of capping;
   then (unless ``--no-cluster``) starts a Redis Cluster of its own (three masters, three replicas on
   loopback ports, ``bench/redis_servers.py``) and repeats the caps-on floor, I/O floor, recommend rounds
   and the fixed-rate run against it, printed beside the standalone figures;
   throughout, the request log is ON (every recommend decision written in batches to the SQLite log beside the
   event log, 5 % exploration); beside the caps-on service a second one with the request log OFF
   (``RECSYS_REQUEST_LOG_ENABLED=false``) takes part in the same interleaved rounds and its own 300 req/s
   run: the cost of the request log, and afterwards the number of records written against answers given;
6. the service's RSS; then a simulated month of traffic through the cap enforcer over the world's members
   and the Redis memory per active member, checking every cap key has a TTL;
7. the contextual ranker against today's ALS ranking (``--ranker on|off|only``): ALS and the ranker trained on
   the whole world and registered under the benchmark's own aliases (``bench-als``, ``bench-ranker``; reused
   while the data and the model code are unchanged), each served by its own service (caps on, request log
   on), in interleaved ``wrk`` rounds (throughput and the service's CPU per answer) and at 300 req/s; after
   shutdown every answer must have its request record.

Figures are printed and written to ``var/bench/serve.json``. Targets: recommend throughput >= 35 % of the
floor; p99 <= 15 ms at 300 req/s; RSS <= 1.5 GB; capping adds <= 1 ms p50 and <= 3 ms p99; the ranker's
throughput >= 0.8x the ALS ranking's and its p99 at 300 req/s <= 10 ms.

Options: ``--duration`` seconds per wrk run (default 10), ``--rounds`` interleaved rounds of the caps-on
throughput runs (3; the ratios printed are the medians of the rounds' ratios, each round's recommend against
the same round's floor, so a slow spell of a shared machine does not favour one endpoint), ``--rate`` (300),
``--fixed-duration`` (20),
``--connections`` (32), ``--members`` distinct members in the request mix (5000), ``--quick`` (short runs).
Environment: ``REDIS_URL`` (default redis://127.0.0.1:6379/0), ``RECSYS_DATA_DIR`` (default
var/data/world-50k), ``RECSYS_MLFLOW_TRACKING_URI`` (default sqlite:///<repo>/var/mlflow.db).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from bench.launcher import LiveService
VAR = ROOT / "var"
BIN = Path(sys.executable).parent

TARGET_RATIO = 0.35
TARGET_P99_MS = 15.0
TARGET_RSS = 1.5 * 1024**3
TARGET_CAP_P50_MS = 1.0
TARGET_CAP_P99_MS = 3.0
# Issue 17's targets for the same runs on a Redis Cluster (recommend over the bare floor; open-loop p99).
TARGET_RATIO_CLUSTER = 0.2
TARGET_P99_MS_CLUSTER = 5.0

FARE_BY_CABIN = {"F": ["F", "A"], "C": ["J", "C", "D"], "W": ["G", "E"], "Y": ["Y", "B", "M", "H", "Q", "K"]}
PLACEMENTS = ["home", "booking", "check_in", "post_booking", "in_trip"]
# The same request bodies, served with the member-store read and the cap check but no ranking.
# The service's app plus the benchmark's floor endpoints (the product has none).
FLOOR_APP = [sys.executable, str(ROOT / "bench" / "floor_app.py")]
IO_FLOOR_PATH = "/v1/_floor/recommend-io"
VALIDATE_FLOOR_PATH = "/v1/_floor/recommend-validate"


def log(msg: str) -> None:
    print(f"[bench-serve {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------------------
# Preparation
# ------------------------------------------------------------------------------------------------------------


def recsys_cli() -> str:
    exe = BIN / "recsys"
    return str(exe) if exe.exists() else "recsys"


def ensure_world_and_champion(world: Path, tracking_uri: str, members: int, seed: int, model: str) -> None:
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "RECSYS_MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    if not (world / "manifest.json").exists():
        log(f"no world at {world}: generating {members} members (seed {seed})")
        subprocess.run(
            [
                recsys_cli(),
                "data",
                "generate",
                "--members",
                str(members),
                "--seed",
                str(seed),
                "--out",
                str(world),
            ],
            check=True,
            env=env,
            cwd=ROOT,
        )
    log("ensuring a champion is registered")
    subprocess.run(
        [recsys_cli(), "models", "ensure-champion", "--data", str(world), "--model", model, "--no-progress"],
        check=True,
        env=env,
        cwd=ROOT,
    )


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk (Debian package)")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        path = shutil.which("wrk")
        if path:
            return path
    sys.exit("wrk is not installed: run `sudo apt-get install wrk` (Debian/Ubuntu) and retry")


def bench_inputs() -> tuple[Path, str, str]:
    """The world, MLflow tracking URI and Redis URL a benchmark runs on: ``RECSYS_DATA_DIR``,
    ``RECSYS_MLFLOW_TRACKING_URI`` and ``REDIS_URL`` (or ``RECSYS_REDIS_URL``), else var/'s defaults."""
    world = Path(os.environ.get("RECSYS_DATA_DIR") or VAR / "data" / "world-50k")
    world = world if world.is_absolute() else ROOT / world
    tracking = os.environ.get("RECSYS_MLFLOW_TRACKING_URI") or f"sqlite:///{VAR.resolve()}/mlflow.db"
    redis_url = (
        os.environ.get("REDIS_URL") or os.environ.get("RECSYS_REDIS_URL") or "redis://127.0.0.1:6379/0"
    )
    return world, tracking, redis_url


@dataclass(frozen=True)
class ServiceBench:
    """What a benchmark of running services shares: its inputs, the Redis client its keys are deleted with,
    its key prefix, a work directory, the request mix (and its file) and the services' base environment."""

    world: Path
    tracking: str
    redis_url: str
    client: Any
    prefix: str
    work: Path
    bodies: list[dict[str, Any]]
    bodies_file: Path
    base_env: dict[str, str]


def service_bench(tag: str, members: int, seed: int) -> ServiceBench:
    """Resolve the inputs (:func:`bench_inputs`), check Redis, and write the request mix of ``members``
    members (``seed``) into a fresh work directory; keys go under ``bench-<tag>-<random>``."""
    world, tracking, redis_url = bench_inputs()
    client = check_redis(redis_url)
    prefix = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix=f"bench-{tag}-"))
    bodies = request_mix(world, members, seed)
    bodies_file = work / "bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    base_env = service_env(redis_url, tracking, world, work, prefix)
    return ServiceBench(world, tracking, redis_url, client, prefix, work, bodies, bodies_file, base_env)


@contextlib.contextmanager
def floor_services(
    base_env: dict[str, str], work: Path, variants: dict[str, dict[str, str]], tag: str = ""
) -> Iterator[dict[str, LiveService]]:
    """One ``bench/floor_app.py`` service per variant (its extra environment; ``BENCH_WORKERS`` sets its
    uvicorn workers, default one), caps on, each with its own cap counters, SQLite logs and service log
    (named ``<tag>-<variant>``); yields the live services by variant and stops them after."""
    from bench.launcher import run_service

    with contextlib.ExitStack() as stack:
        out: dict[str, LiveService] = {}
        for name, extra in variants.items():
            suffix = f"{tag}-{name}" if tag else name
            env = {
                **base_env,
                "RECSYS_CAPPING_ENABLED": "true",
                "RECSYS_CAPS_KEY_PREFIX": f"{base_env['RECSYS_CAPS_KEY_PREFIX']}-{suffix}",
                "RECSYS_DATABASE_URL": f"sqlite:///{work}/events-{suffix}.db",
                **extra,
            }
            workers = int(env.pop("BENCH_WORKERS", "1"))
            log(f"starting the service {suffix} {extra or ''}")
            out[name] = stack.enter_context(
                run_service(
                    env,
                    workers=workers,
                    ready_timeout_s=600,
                    log_path=work / f"service-{suffix}.log",
                    command=FLOOR_APP,
                )
            )
        yield out


def write_figures(results: dict[str, Any], name: str) -> Path:
    """Write a benchmark's figures to var/bench/``name`` (JSON) and say where."""
    out = VAR / "bench" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    log(f"figures written to {out}")
    return out


def check_redis(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        sys.exit(
            f"Redis is not reachable at {url} ({exc}); start it (`redis-server --daemonize yes`) and retry"
        )
    return client


def request_mix(world: Path, n_members: int, seed: int) -> list[dict[str, Any]]:
    """Distinct members (5 % unknown ones: cold start) × placements × trips over the real network."""
    import pandas as pd

    from recsys.data.network import load_network

    rng = random.Random(seed)
    ids = pd.read_parquet(world / "members.parquet", columns=["member_id"])["member_id"].astype(str).tolist()
    known = rng.sample(ids, min(n_members, len(ids)))
    cold = [f"NEW{seed}{i:06d}" for i in range(max(1, n_members // 20))]
    routes = load_network().routes[["origin", "destination"]].itertuples(index=False, name=None)
    routes = list(routes)
    now = datetime.now(UTC)
    bodies = []
    for member in known + cold:
        placement = rng.choice(PLACEMENTS)
        body: dict[str, Any] = {"member_id": member, "placement": placement, "limit": 10}
        if placement != "home":
            origin, destination = rng.choice(routes)
            cabin = rng.choices(["Y", "W", "C", "F"], weights=[70, 12, 14, 4])[0]
            dep = now + timedelta(hours=rng.uniform(2, 24 * 14))
            body["trip"] = {
                "origin": origin,
                "destination": destination,
                "departure_time": dep.astimezone().isoformat(timespec="seconds"),
                "cabin": cabin,
                "fare_class": rng.choice(FARE_BY_CABIN[cabin]),
                "flight_number": f"CA{rng.randint(100, 9999)}",
                "seats_left": {c: rng.randint(0, 12) for c in "FCWY"},
            }
            # what the app sends of the booking, so the ranker builds its booking features as in production
            party = rng.choice([1, 1, 1, 2, 2, 3, 4])
            body["trip"] |= {
                "booking_lead_days": (dep - now).days + rng.randint(0, 40),
                "party_size": party,
                "children": rng.randint(0, party - 1),
                "stay_nights": rng.randint(1, 14),
            }
        bodies.append(body)
    rng.shuffle(bodies)
    return bodies


def service_env(redis_url: str, tracking: str, world: Path, work: Path, prefix: str) -> dict[str, str]:
    """The benchmark service's environment: its own key prefix, event log and tracking secret, the shipped cap
    policy, no model reloads, quiet logs."""
    return {
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_MLFLOW_TRACKING_URI": tracking,
        "RECSYS_DATABASE_URL": f"sqlite:///{work}/events.db",
        "RECSYS_MEMBERS_KEY_PREFIX": f"{prefix}:members",
        "RECSYS_CAPS_KEY_PREFIX": f"{prefix}:caps",
        "RECSYS_CAPPING_POLICY_PATH": str(ROOT / "config" / "caps.yaml"),
        "RECSYS_DATA_DIR": str(world),
        "RECSYS_RELOAD_INTERVAL_S": "0",
        "RECSYS_LOG_LEVEL": "warning",
        "RECSYS_TRACKING_SECRET": uuid.uuid4().hex,
    }


# ------------------------------------------------------------------------------------------------------------
# wrk (closed loop: maximum throughput)
# ------------------------------------------------------------------------------------------------------------

LUA_DONE = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
               + summary.errors.status + summary.errors.timeout
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def lua_for_posts(path: str, bodies: list[dict[str, Any]], out: Path) -> Path:
    lines = ["local bodies = {"]
    for b in bodies:
        lines.append("  [==[" + json.dumps(b, separators=(",", ":")) + "]==],")
    lines.append("}")
    lines.append(f"""
local reqs = {{}}
local i = 0
init = function(args)
  for k, b in ipairs(bodies) do
    reqs[k] = wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, b)
  end
  i = math.random(#reqs)
end
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
response = function(status, headers, body)
  if status ~= 200 then io.write("status " .. status .. ": " .. body:sub(1, 300) .. "\\n") end
end
""")
    lines.append(LUA_DONE)
    out.write_text("\n".join(lines))
    return out


def lua_for_get(out: Path) -> Path:
    out.write_text(LUA_DONE)
    return out


def run_wrk(wrk: str, url: str, script: Path, duration: float, connections: int) -> dict[str, Any]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "5s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(line[len("BENCH ") :])
    bad = [x for x in out.splitlines() if x.startswith("status ")][:3]
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "errors": raw["errors"],
        "non2xx": raw["non2xx"],
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "bad_samples": bad,
    }


# ------------------------------------------------------------------------------------------------------------
# Open-loop fixed-rate load generator (run in its own process: `bench_serve.py --loadgen ...`)
# ------------------------------------------------------------------------------------------------------------


async def _open_loop(
    host: str, port: int, path: str, bodies: list[bytes], rate: float, duration: float, connections: int
) -> dict[str, Any]:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    slow: list[tuple[float, float]] = []  # (scheduled send, latency) of answers slower than SLOW_S
    statuses: dict[int, int] = {}
    errors = 0

    async def one(payload: bytes, scheduled: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latency = time.perf_counter() - scheduled
            latencies.append(latency)
            if latency > SLOW_S:
                slow.append((scheduled, latency))
            statuses[status] = statuses.get(status, 0) + 1
            pool.put_nowait((reader, writer))
        except Exception:
            errors += 1
            writer.close()
            pool.put_nowait(await asyncio.open_connection(host, port))

    payloads = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    n = int(rate * duration)
    start = time.perf_counter() + 0.05
    epoch = time.time() - time.perf_counter()  # perf_counter -> epoch seconds, to match the service's clocks
    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(payloads[i % len(payloads)], scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {
        "rate": rate,
        "achieved_rps": len(lat) / elapsed,
        "requests": n,
        "ok": statuses.get(200, 0),
        "statuses": statuses,
        "errors": errors,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        # where the tail comes from: counts by latency bucket, and the slow answers' send times (epoch)
        "histogram_ms": latency_histogram(lat),
        "slow": [(round(epoch + t, 4), round(d * 1000, 2)) for t, d in sorted(slow)],
        "started": round(epoch + start, 4),  # the first scheduled send (epoch): where in the run a burst lies
    }


SLOW_S = 0.020
HISTOGRAM_EDGES_MS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)


def latency_histogram(latencies_s: list[float]) -> dict[str, int]:
    """Answers per latency bucket ("<=1", ..., ">1000" ms)."""
    out = {f"<={e}": 0 for e in HISTOGRAM_EDGES_MS} | {f">{HISTOGRAM_EDGES_MS[-1]}": 0}
    for x in latencies_s:
        ms = x * 1000
        key = next((f"<={e}" for e in HISTOGRAM_EDGES_MS if ms <= e), f">{HISTOGRAM_EDGES_MS[-1]}")
        out[key] += 1
    return out


def loadgen_main(args: argparse.Namespace) -> None:
    bodies = [
        json.dumps(b, separators=(",", ":")).encode() for b in json.loads(Path(args.bodies).read_text())
    ]
    run = _open_loop(
        args.host, args.port, args.path, bodies, args.rate, args.fixed_duration, args.connections
    )
    # The generator's own scheduling and parsing are part of every latency it measures: BENCH_LOADGEN_LOOP
    # picks its event loop (asyncio's default, or uvloop) to show how much (bench/open_loop_floor.py).
    if os.environ.get("BENCH_LOADGEN_LOOP", "asyncio") == "uvloop":
        import uvloop

        result = uvloop.run(run)
    else:
        result = asyncio.run(run)
    print(json.dumps(result))


def run_open_loop(
    port: int,
    bodies_file: Path,
    rate: float,
    duration: float,
    path: str = "/v1/recommendations",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--loadgen",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--path",
        path,
        "--bodies",
        str(bodies_file),
        "--rate",
        str(rate),
        "--fixed-duration",
        str(duration),
        "--connections",
        "64",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------------------------------------
# Simulated month of cap traffic → Redis memory per active member
# ------------------------------------------------------------------------------------------------------------


def simulate_month(
    redis_url: str, prefix: str, world: Path, members: int, seed: int, tracking: str | None = None
) -> dict[str, Any]:
    """A month of one member store and cap traffic for ``members`` members, then Redis bytes per member.

    The members' profiles (and the champion's embeddings, float16) are published to a member store; every
    request reads the profile with the cap state (one script, as the service does), is capped by the shipped
    policy, and the app reports an impression for each offer shown (``count_on: event``); 5 % of requests are
    followed by a dismissal. Bytes per active member: ``MEMORY USAGE`` of each member's keys (its record and
    its cap hash), summed, over the members; every key of both prefixes must have a TTL.
    """
    import pandas as pd

    from recsys.capping.api import CapCandidate, CapMember, CapState, PolicyHolder, build_enforcer
    from recsys.capping.redis_store import memory_report
    from recsys.features.profiles import build_member_profiles
    from recsys.ranker.features import with_exposures
    from recsys.stores.member_store import RedisMemberStore, publish_profiles
    from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig

    rng = random.Random(seed)
    offers = pd.read_parquet(world / "offers.parquet", columns=["offer_id", "family", "category", "exempt"])
    catalogue = [
        CapCandidate(str(r.offer_id), str(r.family), str(r.category), bool(r.exempt))
        for r in offers.itertuples(index=False)
    ]
    mdf = pd.read_parquet(world / "members.parquet", columns=["member_id", "tier", "time_zone"])
    sample = mdf.sample(n=min(members, len(mdf)), random_state=seed)
    people = [
        CapMember(str(r.member_id), str(r.tier), str(r.time_zone)) for r in sample.itertuples(index=False)
    ]
    clients = RedisClients(RedisConfig(redis_url, policy=RedisCallPolicy(timeout_ms=2000)))
    store = RedisMemberStore(clients, prefix=f"{prefix}-members")
    # As the service and `recsys members publish` publish them: with the members' exposure histories.
    profiles = build_member_profiles(world)
    profiles = with_exposures(profiles[profiles["member_id"].isin({p.member_id for p in people})], world)
    bundle = None
    if tracking is not None:
        from recsys.registry import load_bundle

        bundle = load_bundle(tracking, "loyalty-offers", "champion")[0]
    published = publish_profiles(store, profiles, bundle, "month")
    enforcer = build_enforcer(
        redis_url,
        PolicyHolder(ROOT / "config" / "caps.yaml", poll_interval_s=0),
        key_prefix=f"{prefix}-caps",
        clients=clients,
    )
    start = datetime.now(UTC) - timedelta(days=30)
    calls = 0
    t0 = time.perf_counter()
    try:
        for day in range(30):
            for member in people:
                for _ in range(rng.choice((0, 1, 1, 2, 3))):
                    now = start + timedelta(days=day, seconds=rng.uniform(0, 86_400))
                    ranked = rng.sample(catalogue, 20)
                    placement = rng.choice(PLACEMENTS)
                    read = store.read(member.member_id, None, enforcer.state_key(member.member_id))
                    state = CapState.of(read.extra) if read.extra is not None else None
                    d = enforcer.select_and_record(
                        member, ranked, k=5, placement=placement, now=now, state=state
                    )
                    shown = {c.offer_id: c for c in ranked}
                    for offer_id in d.selected:  # the app reports what it showed
                        enforcer.record_event(member, shown[offer_id], "impression", placement, now)
                    calls += 1
                    if rng.random() < 0.05:
                        enforcer.record_event(member, ranked[0], "dismiss", placement, now)
        client = clients.sync
        caps = memory_report(client, f"{prefix}-caps")
        member_keys = [
            (store.member_key("month", p.member_id), enforcer.state_key(p.member_id)) for p in people
        ]
        pipe = client.pipeline(transaction=False)
        for record_key, cap_key in member_keys:
            pipe.memory_usage(record_key, samples=0)
            pipe.memory_usage(cap_key, samples=0)
        usage = pipe.execute()
        record_bytes = [u or 0 for u in usage[0::2]]
        cap_bytes = [u or 0 for u in usage[1::2]]
        active = sum(1 for c in cap_bytes if c)
        breakdown = month_breakdown(client, member_keys, enforcer.holder.policy)
        no_ttl = [
            k.decode() for k in client.scan_iter(match=f"{prefix}-*", count=1000) if client.pttl(k) == -1
        ]
    finally:
        clients.close()
    return {
        "simulated_members": len(people),
        "simulated_requests": calls,
        "simulation_seconds": round(time.perf_counter() - t0, 1),
        "with_embedding": published.with_embedding,
        "active_members": active,
        "cap_bytes_per_active_member": round(sum(cap_bytes) / max(active, 1), 1),
        "record_bytes_per_member": round(sum(record_bytes) / max(len(people), 1), 1),
        "bytes_per_member": round((sum(cap_bytes) + sum(record_bytes)) / max(active, 1), 1),
        "breakdown": breakdown,
        "cap_report": caps,
        "keys_without_ttl": no_ttl[:100],
        "n_keys_without_ttl": len(no_ttl),
    }


def month_breakdown(client: Any, member_keys: list[tuple[str, str]], policy: Any) -> dict[str, Any]:
    """What a member's bytes are made of, averaged over the members: the record's parts (header, embedding,
    profile, exposure history) and the cap hash's fields by kind (cool-downs, the version, each cap's
    counters by the cap's name), with the hashes' encodings and their most fields and longest value."""
    import struct

    from recsys.capping.engine import COOLDOWN_MARK, VERSION_FIELD, cap_codes

    cap_of = {code: name for name, code in cap_codes(policy).items()}
    most_fields = longest_value = 0

    pipe = client.pipeline(transaction=False)
    for record_key, cap_key in member_keys:
        pipe.get(record_key)
        pipe.hgetall(cap_key)
        pipe.object("encoding", cap_key)
    replies = pipe.execute()
    parts: dict[str, float] = {}
    encodings: dict[str, int] = {}
    hashes = 0

    def add(name: str, n: float) -> None:
        parts[name] = parts.get(name, 0) + n

    for i in range(len(member_keys)):
        raw, fields, encoding = replies[3 * i : 3 * i + 3]
        if raw:
            add("record_bytes", len(raw))
            _, dim, packed_at = struct.unpack_from("<BHB", raw)  # format 2 (recsys.stores.member_store)
            at = 4 + 2 * dim
            add("record_embedding_bytes", 2 * dim)
            if packed_at != 255:
                history = 2 + 7 * struct.unpack_from("<H", raw, at)[0]
                add("record_packed_history_bytes", history)
                at += history
            add("record_json_bytes", len(raw) - at)
        if fields:
            hashes += 1
            enc = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
            encodings[enc] = encodings.get(enc, 0) + 1
            most_fields = max(most_fields, len(fields))
            longest_value = max(longest_value, *(len(v) for v in fields.values()))
            for f, v in fields.items():
                name = f.decode()
                if name == VERSION_FIELD:
                    kind = "version"
                elif name.startswith(COOLDOWN_MARK):
                    kind = "cooldown"
                else:
                    kind = cap_of.get(name[:2], "unknown")
                add(f"cap_{kind}_fields", 1)
                add(f"cap_{kind}_chars", len(f) + len(v))
    n = max(len(member_keys), 1)
    out = {k: round(v / n, 1) for k, v in parts.items()}
    out["cap_hash_encodings"] = encodings
    out["cap_hashes"] = hashes
    out["cap_hash_most_fields"] = most_fields
    out["cap_hash_longest_value"] = longest_value
    return out


def service_counters(url: str) -> dict[str, float]:
    """Cold starts, degraded cap answers, offers served and requests, from the service's /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        for prefix in (
            "recsys_cold_start_total",
            "recsys_cap_degraded_total",
            "recsys_offers_served_total",
            "recsys_http_requests_total",
            "recsys_request_log_",
        ):
            if name.startswith(prefix):
                out[name] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_request_records(db: Path) -> int:
    """Rows in the request log of a stopped service's SQLite database."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("select count(*) from request_log").fetchone()[0])


def delete_prefix(client: Any, prefix: str) -> int:
    n = 0
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            n += client.unlink(*batch)
            batch = []
    if batch:
        n += client.unlink(*batch)
    return n


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--path", default="/v1/recommendations", help=argparse.SUPPRESS)
    p.add_argument("--bodies", default="", help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the caps-on throughput runs")
    p.add_argument("--fixed-duration", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--members", type=int, default=5000)
    p.add_argument("--month-members", type=int, default=500)
    p.add_argument(
        "--month-only", action="store_true", help="only the simulated month (Redis bytes per member)"
    )
    p.add_argument("--world-members", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default="all", help="model kind(s) trained when no champion exists (as make)")
    p.add_argument("--quick", action="store_true", help="short runs (smoke test of the benchmark itself)")
    p.add_argument(
        "--ranker",
        choices=("on", "off", "only"),
        default="on",
        help="the contextual ranker against the ALS ranking: with the rest (on), skipped, or alone",
    )
    p.add_argument(
        "--no-cluster",
        dest="cluster",
        action="store_false",
        help="skip the runs on a Redis Cluster of the benchmark's own (redis-server, redis-cli needed)",
    )
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service and clean Redis on kill
    if args.loadgen:
        loadgen_main(args)
        return
    if args.quick:
        args.duration, args.fixed_duration, args.month_members, args.rounds = 4.0, 5.0, 200, 1

    from bench.launcher import run_service

    world, tracking, redis_url = bench_inputs()
    if args.month_only:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        try:
            month = simulate_month(
                redis_url, f"{prefix}:month", world, args.month_members, args.seed, tracking
            )
        finally:
            delete_prefix(check_redis(redis_url), prefix)
        print(json.dumps(month, indent=2, default=str))
        report_month(month)
        return

    wrk = ensure_wrk()
    client = check_redis(redis_url)
    ensure_world_and_champion(world, tracking, args.world_members, args.seed, args.model)
    if args.ranker != "off":
        results_versions = ensure_ranked_versions(world, tracking, args.seed)

    sb = service_bench("serve", args.members, args.seed)  # after the world exists: the mix reads it
    prefix, work, bodies, bodies_file, base_env = sb.prefix, sb.work, sb.bodies, sb.bodies_file, sb.base_env
    run_id = prefix.rsplit("-", 1)[1]
    rec_lua = lua_for_posts("/v1/recommendations", bodies, work / "recommend.lua")
    io_lua = lua_for_posts(IO_FLOOR_PATH, bodies, work / "recommend-io.lua")
    validate_lua = lua_for_posts(VALIDATE_FLOOR_PATH, bodies, work / "recommend-validate.lua")
    get_lua = lua_for_get(work / "floor.lua")
    log(f"{len(bodies)} distinct requests; Redis {redis_url} prefix {prefix}; logs in {work}")

    results: dict[str, Any] = {
        "run": run_id,
        "world": str(world),
        "distinct_requests": len(bodies),
        "connections": args.connections,
        "duration_s": args.duration,
    }
    try:
        for capping in () if args.ranker == "only" else (True, False):
            tag = "caps_on" if capping else "caps_off"
            env = {**base_env, "RECSYS_CAPPING_ENABLED": str(capping).lower()}
            log(f"starting the service ({tag})")
            t0 = time.perf_counter()
            with contextlib.ExitStack() as stack:
                svc = stack.enter_context(
                    run_service(
                        env,
                        workers=1,
                        ready_timeout_s=600,
                        log_path=work / f"service-{tag}.log",
                        command=FLOOR_APP,
                    )
                )
                results[f"startup_s_{tag}"] = round(time.perf_counter() - t0, 1)
                log(f"ready in {results[f'startup_s_{tag}']}s; warming up")
                run_wrk(wrk, f"{svc.url}/v1/recommendations", rec_lua, 3, args.connections)
                nolog = None
                if capping:
                    # The same service without the request log, its own cap counters (same member store).
                    log("starting the service with the request log off")
                    nolog_env = {
                        **env,
                        "RECSYS_REQUEST_LOG_ENABLED": "false",
                        "RECSYS_CAPS_KEY_PREFIX": f"{prefix}:caps-nolog",
                        "RECSYS_DATABASE_URL": f"sqlite:///{work}/events-nolog.db",
                    }
                    nolog = stack.enter_context(
                        run_service(
                            nolog_env, workers=1, ready_timeout_s=600, log_path=work / "service-nolog.log"
                        )
                    )
                    run_wrk(wrk, f"{nolog.url}/v1/recommendations", rec_lua, 3, args.connections)
                # Caps on: the floors and recommend in interleaved rounds, so a slow spell of the (shared)
                # machine hits every endpoint of a round alike; the ratio is the median of the rounds'.
                runs: dict[str, tuple[str, str, Path]] = {
                    f"recommend_{tag}": (svc.url, "/v1/recommendations", rec_lua)
                }
                if capping:
                    assert nolog is not None
                    runs = {
                        "floor": (svc.url, "/v1/_floor", get_lua),
                        "validate_floor": (svc.url, VALIDATE_FLOOR_PATH, validate_lua),
                        "io_floor": (svc.url, IO_FLOOR_PATH, io_lua),
                        **runs,
                        "recommend_log_off": (nolog.url, "/v1/recommendations", rec_lua),
                    }
                rounds = args.rounds if capping else 1
                per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
                pids = {svc.url: svc.process.pid, **({nolog.url: nolog.process.pid} if nolog else {})}
                for i in range(rounds):
                    for name, (base, path, lua) in runs.items():
                        log(f"wrk: {path} ({name}, round {i + 1}/{rounds})")
                        # The service's CPU per answer: unlike throughput, hardly moved by other load.
                        cpu0 = cpu_seconds(pids[base])
                        run = run_wrk(wrk, f"{base}{path}", lua, args.duration, args.connections)
                        run["cpu_ms_per_request"] = (
                            (cpu_seconds(pids[base]) - cpu0) * 1000 / max(run["requests"], 1)
                        )
                        per_round[name].append(run)
                for name, got in per_round.items():
                    results[name] = median_run(got)
                    results[f"{name}_rounds"] = got
                log(f"open loop: {args.rate:.0f} req/s for {args.fixed_duration:.0f}s ({tag})")
                results[f"fixed_rate_{tag}"] = run_open_loop(
                    svc.port, bodies_file, args.rate, args.fixed_duration
                )
                if nolog is not None:
                    log(f"open loop: {args.rate:.0f} req/s for {args.fixed_duration:.0f}s (request log off)")
                    results["fixed_rate_log_off"] = run_open_loop(
                        nolog.port, bodies_file, args.rate, args.fixed_duration
                    )
                results[f"rss_bytes_{tag}"] = svc.rss_bytes()
                results[f"service_counters_{tag}"] = service_counters(svc.url)
            # Stopped (SIGTERM): the writer drained its queue. Every answer has its record?
            results[f"request_log_rows_{tag}"] = count_request_records(work / "events.db")
            (work / "events.db").rename(work / f"events-{tag}.db")
        if args.ranker != "off":
            results["ranker_vs_als"] = {
                "versions": results_versions,
                **ranker_vs_als(base_env, work, wrk, rec_lua, bodies_file, args, prefix),
            }
        if args.cluster and args.ranker != "only":
            results["cluster"] = run_on_cluster(
                args,
                wrk,
                base_env,
                bodies_file,
                {
                    "floor": ("/v1/_floor", get_lua),
                    "io_floor": (IO_FLOOR_PATH, io_lua),
                    "recommend_caps_on": ("/v1/recommendations", rec_lua),
                },
                work,
            )
        if args.month_members > 0 and args.ranker != "only":
            log(f"simulating a month of cap traffic for {args.month_members} members")
            results["month"] = simulate_month(
                redis_url, f"{prefix}:month", world, args.month_members, args.seed, tracking
            )
    finally:
        removed = delete_prefix(client, prefix)
        log(f"removed {removed} benchmark keys from Redis")
    if "floor" in results:
        report(results)
    if "cluster" in results:
        report_cluster(results["cluster"], results)
    if "ranker_vs_als" in results:
        report_ranker(results["ranker_vs_als"])
    write_figures(results, "serve.json")


def run_on_cluster(
    args: argparse.Namespace,
    wrk: str,
    base_env: dict[str, str],
    bodies_file: Path,
    luas: dict[str, tuple[str, Path]],
    work: Path,
) -> dict[str, Any]:
    """The caps-on runs again on a Redis Cluster of the benchmark's own (3 masters, 3 replicas on loopback
    ports, started here and stopped after): the floor, the I/O floor and recommend in interleaved rounds, and
    the fixed-rate run. Same service, request mix and policy as the standalone runs; only RECSYS_REDIS_URL
    differs."""
    from bench.launcher import run_service
    from bench.redis_servers import start_cluster

    log("starting a Redis Cluster of three masters and three replicas")
    cluster = start_cluster(work / "redis-cluster")
    out: dict[str, Any] = {"redis_url": cluster.url}
    try:
        env = {**base_env, "RECSYS_REDIS_URL": cluster.url, "RECSYS_CAPPING_ENABLED": "true"}
        with run_service(
            env, workers=1, ready_timeout_s=600, log_path=work / "service-cluster.log", command=FLOOR_APP
        ) as svc:
            run_wrk(wrk, f"{svc.url}/v1/recommendations", luas["recommend_caps_on"][1], 3, args.connections)
            per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in luas}
            for i in range(args.rounds):
                for name, (path, lua) in luas.items():
                    log(f"wrk: {path} ({name}, cluster, round {i + 1}/{args.rounds})")
                    cpu0 = cpu_seconds(svc.process.pid)
                    run = run_wrk(wrk, f"{svc.url}{path}", lua, args.duration, args.connections)
                    run["cpu_ms_per_request"] = (
                        (cpu_seconds(svc.process.pid) - cpu0) * 1000 / max(run["requests"], 1)
                    )
                    per_round[name].append(run)
            for name, got in per_round.items():
                out[name] = median_run(got)
                out[f"{name}_rounds"] = got
            log(f"open loop: {args.rate:.0f} req/s for {args.fixed_duration:.0f}s (cluster)")
            out["fixed_rate_caps_on"] = run_open_loop(svc.port, bodies_file, args.rate, args.fixed_duration)
            out["service_counters"] = service_counters(svc.url)
    finally:
        for node in cluster.nodes:
            node.stop()
    return out


def report_cluster(r: dict[str, Any], standalone: dict[str, Any]) -> None:
    """The cluster's figures beside the standalone ones of the same run."""
    ratios = round_ratios(r, "recommend_caps_on")
    io = round_ratios(r, "io_floor")
    fixed = r["fixed_rate_caps_on"]
    counters = r.get("service_counters", {})
    cold = counters.get("recsys_cold_start_total", 0)
    degraded = sum(v for k, v in counters.items() if k.startswith("recsys_cap_degraded_total"))
    print()
    print("Redis Cluster (3 masters, 3 replicas; the same service, mix and policy):")
    for name in ("floor", "io_floor", "recommend_caps_on"):
        x = r[name]
        print(
            f"  {name:32}{x['rps']:>10.0f}{x['p50_ms']:>10.2f}{x['p99_ms']:>10.2f}"
            f"{x['errors']:>9}{x['non2xx']:>9}"
        )
    ratio = statistics.median(ratios)
    print(
        f"  throughput ratio recommend/floor {ratio:6.1%}   target >= {TARGET_RATIO_CLUSTER:.0%}"
        f"  {'PASS' if ratio >= TARGET_RATIO_CLUSTER else 'FAIL'}"
        f"   (standalone {statistics.median(round_ratios(standalone, 'recommend_caps_on')):.1%})"
    )
    print(
        f"  I/O-only ratio                   {statistics.median(io):6.1%}   recommend / I/O-only "
        f"{statistics.median([a / b for a, b in zip(ratios, io, strict=True)]):.1%}"
    )
    print(
        f"  p99 at {fixed['rate']:.0f} req/s (caps on)     {fixed['p99_ms']:6.2f} ms target <= "
        f"{TARGET_P99_MS_CLUSTER:.0f} ms  {'PASS' if fixed['p99_ms'] <= TARGET_P99_MS_CLUSTER else 'FAIL'}"
        f"   (p50 {fixed['p50_ms']:.2f} ms; {fixed['requests'] - fixed['ok']} failed)"
    )
    print(f"  {cold:.0f} cold starts, {degraded:.0f} answers with the cap store degraded")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (the lower middle one of an even count)."""
    return sorted(runs, key=lambda x: float(x["rps"]))[(len(runs) - 1) // 2]


def round_ratios(r: dict[str, Any], name: str) -> list[float]:
    """Per round: ``name``'s throughput over the floor's in the same round."""
    return [
        float(x["rps"]) / float(f["rps"])
        for x, f in zip(
            r.get(f"{name}_rounds") or [r[name]], r.get("floor_rounds") or [r["floor"]], strict=True
        )
    ]


def x_rps(x: dict[str, Any]) -> str:
    return f"{float(x['rps']):.0f}"


def report(r: dict[str, Any]) -> None:
    floor, rec, off = r["floor"], r["recommend_caps_on"], r["recommend_caps_off"]
    fixed_on, fixed_off = r["fixed_rate_caps_on"], r["fixed_rate_caps_off"]
    ratios = round_ratios(r, "recommend_caps_on")
    ratio = statistics.median(ratios)
    rss = max(r["rss_bytes_caps_on"], r["rss_bytes_caps_off"])
    d50 = fixed_on["p50_ms"] - fixed_off["p50_ms"]
    d99 = fixed_on["p99_ms"] - fixed_off["p99_ms"]
    month = r.get("month")

    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    print()
    print(f"{'':34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}{'non-2xx':>9}")
    io, validate = r.get("io_floor"), r.get("validate_floor")
    for name, x in (
        ("floor GET /v1/_floor", floor),
        *((("recommend body validation only", validate),) if validate else ()),
        *((("recommend I/O only (no ranking)", io),) if io else ()),
        ("recommend (caps on), wrk", rec),
        ("recommend (caps off), wrk", off),
    ):
        print(
            f"{name:34}{x['rps']:>10.0f}{x['p50_ms']:>10.2f}{x['p99_ms']:>10.2f}{x['errors']:>9}"
            f"{x['non2xx']:>9}"
        )
    for name, x in (
        (f"recommend @{fixed_on['rate']:.0f}/s (caps on)", fixed_on),
        (f"recommend @{fixed_off['rate']:.0f}/s (caps off)", fixed_off),
    ):
        bad = x["requests"] - x["ok"]
        print(
            f"{name:34}{x['achieved_rps']:>10.0f}{x['p50_ms']:>10.2f}{x['p99_ms']:>10.2f}{x['errors']:>9}"
            f"{bad:>9}"
        )
    print()

    def each(values: list[float]) -> str:
        return f"(median of rounds: {', '.join(f'{v:.1%}' for v in values)})" if len(values) > 1 else ""

    print(
        f"throughput ratio recommend/floor   {ratio:6.1%}   target >= {TARGET_RATIO:.0%}   "
        f"{ok(ratio >= TARGET_RATIO)}  {each(ratios)}"
    )
    if validate:
        v = round_ratios(r, "validate_floor")
        print(
            f"  validation-only ratio            {statistics.median(v):6.1%}   the same body validated, the "
            f"floor's offers returned; no store read {each(v)}"
        )
    if io:
        v = round_ratios(r, "io_floor")
        print(
            f"  I/O-only ratio (upper bound)     {statistics.median(v):6.1%}   the same body validated, "
            f"member store read, caps checked and recorded; no ranking {each(v)}"
        )
        share = statistics.median([a / b for a, b in zip(ratios, v, strict=True)])
        print(f"  recommend / I/O-only             {share:6.1%}   what ranking leaves of it")
    print(
        f"p99 at {fixed_on['rate']:.0f} req/s (caps on)       {fixed_on['p99_ms']:6.2f} ms target <= "
        f"{TARGET_P99_MS:.0f} ms  {ok(fixed_on['p99_ms'] <= TARGET_P99_MS)}"
    )
    print(
        f"service RSS                        {rss / 2**20:6.0f} MB target <= 1536 MB {ok(rss <= TARGET_RSS)}"
    )
    print(
        f"capping cost at {fixed_on['rate']:.0f} req/s         p50 {d50:+.2f} ms (<= {TARGET_CAP_P50_MS} "
        f"{ok(d50 <= TARGET_CAP_P50_MS)}), p99 {d99:+.2f} ms (<= {TARGET_CAP_P99_MS} "
        f"{ok(d99 <= TARGET_CAP_P99_MS)})"
    )
    log_off, fixed_log_off = r.get("recommend_log_off"), r.get("fixed_rate_log_off")
    if log_off and fixed_log_off:
        v = [
            float(a["rps"]) / float(b["rps"])
            for a, b in zip(r["recommend_caps_on_rounds"], r["recommend_log_off_rounds"], strict=True)
        ]
        print(
            f"request log on / off throughput   {statistics.median(v):6.1%}   wrk, caps on "
            f"({x_rps(log_off)} req/s with the log off) {each(v)}"
        )
        cpu_on = statistics.median(float(x["cpu_ms_per_request"]) for x in r["recommend_caps_on_rounds"])
        cpu_off = statistics.median(float(x["cpu_ms_per_request"]) for x in r["recommend_log_off_rounds"])
        print(
            f"  service CPU per answer on / off {cpu_on:.2f} / {cpu_off:.2f} ms "
            f"(ratio {cpu_on / cpu_off:.2f}; medians of the rounds, little moved by other load)"
        )
        print(
            f"  p99 at {fixed_on['rate']:.0f} req/s log on / off    {fixed_on['p99_ms']:.2f} / "
            f"{fixed_log_off['p99_ms']:.2f} ms (ratio {fixed_on['p99_ms'] / fixed_log_off['p99_ms']:.2f}); "
            f"p50 {fixed_on['p50_ms']:.2f} / {fixed_log_off['p50_ms']:.2f} ms"
        )
    for tag in ("caps_on", "caps_off"):
        counters = r.get(f"service_counters_{tag}", {})
        requests = sum(v for k, v in counters.items() if "/v1/recommendations" in k and 'status="200"' in k)
        cold = counters.get("recsys_cold_start_total", 0)
        degraded = sum(v for k, v in counters.items() if k.startswith("recsys_cap_degraded_total"))
        served = sum(v for k, v in counters.items() if k.startswith("recsys_offers_served_total"))
        print(
            f"{tag}: {requests:.0f} answers, {served / max(requests, 1):.1f} offers each, {cold:.0f} cold "
            f"starts, {degraded:.0f} with the cap store degraded (timeout → outage policy)"
        )
        written = counters.get("recsys_request_log_written_total", 0)
        dropped = sum(v for k, v in counters.items() if k.startswith("recsys_request_log_dropped_total"))
        lag_n = counters.get("recsys_request_log_write_lag_seconds_count", 0)
        lag = counters.get("recsys_request_log_write_lag_seconds_sum", 0) / max(lag_n, 1)
        rows = r.get(f"request_log_rows_{tag}")
        print(
            f"  request log: {written:.0f} records written and {dropped:.0f} dropped at the last scrape, "
            f"mean batch write lag {lag * 1000:.0f} ms; {rows} rows after shutdown "
            f"(answers incl. warm-up: {requests:.0f}) {ok(rows == requests)}"
        )
    if month:
        report_month(month)


TARGET_BYTES_PER_MEMBER = 1_500


def report_month(month: dict[str, Any]) -> None:
    no_ttl = int(month["n_keys_without_ttl"])
    total = float(month["bytes_per_member"])
    print(
        f"simulated month: {month['simulated_requests']} requests over {month['simulated_members']} members "
        f"({month['active_members']} active, {month['with_embedding']} with an embedding); Redis bytes per "
        f"active member, all its keys: {total:.0f} {'PASS' if total <= TARGET_BYTES_PER_MEMBER else 'FAIL'} "
        f"(target <= {TARGET_BYTES_PER_MEMBER}; cap state {float(month['cap_bytes_per_active_member']):.0f}, "
        f"record {month['record_bytes_per_member']:.0f}); "
        f"keys without TTL {no_ttl} {'PASS' if no_ttl == 0 else 'FAIL'}"
    )


# ------------------------------------------------------------------------------------------------------------
# The contextual ranker against today's ALS ranking, in the same run
# ------------------------------------------------------------------------------------------------------------

RANKED_ALIASES = {"als": "bench-als", "ranker": "bench-ranker"}  # kind -> the benchmark's own registry alias
TARGET_RANKER_P99_MS = 10.0
TARGET_RANKER_RATIO = 0.8


def _code_fingerprint() -> str:
    """A digest of the model code: a version registered by older code is trained again, not reused."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(
        [*(ROOT / "recsys" / "ranker").glob("*.py"), *(ROOT / "recsys" / "models").glob("*.py")]
    ):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_ranked_versions(world: Path, tracking_uri: str, seed: int) -> dict[str, str]:
    """ALS and the contextual ranker trained on all of ``world`` (as the pipeline's refit trains the model it
    registers), registered under the benchmark's own aliases; versions registered for the same data and code
    are reused. Returns kind -> version."""
    from recsys.models.bundle import ModelBundle
    from recsys.ranker.training import train_ranker_bundle
    from recsys.registry import DEFAULT_MODEL_NAME, get_version, publish
    from training.pipeline import data_fingerprint

    tags = {"data_fingerprint": data_fingerprint(world), "bench_code": _code_fingerprint()}
    versions: dict[str, str] = {}
    for kind, alias in RANKED_ALIASES.items():
        have = get_version(tracking_uri, DEFAULT_MODEL_NAME, alias)
        if have is not None and all(have.tags.get(k) == v for k, v in tags.items()):
            versions[kind] = have.version
            continue
        log(f"training {kind} on {world} for {DEFAULT_MODEL_NAME}@{alias}")
        t0 = time.perf_counter()
        if kind == "ranker":
            bundle = train_ranker_bundle(world, seed=seed)[0]
        else:
            bundle = ModelBundle.train(world, kind, seed=seed)
        pub = publish(
            tracking_uri,
            bundle,
            params={"kind": kind},
            tags={**tags, "kind": kind},
            input_member_ids=[str(m) for m in bundle.member_ids.external_ids[:3]],
            alias=alias,
            run_name=f"bench-serve-{kind}",
        )
        assert pub.version is not None
        versions[kind] = pub.version.version
        log(f"  {kind} registered as version {pub.version.version} in {time.perf_counter() - t0:.0f} s")
    return versions


def ranker_vs_als(
    base_env: dict[str, str],
    work: Path,
    wrk: str,
    rec_lua: Path,
    bodies_file: Path,
    args: argparse.Namespace,
    prefix: str,
) -> dict[str, Any]:
    """The ALS ranking and the contextual ranker, each served by its own service (one worker, caps on, the
    request log on), driven in interleaved wrk rounds (throughput and the service's CPU per answer) and at the
    fixed rate; afterwards every answer must have its request record."""
    from bench.launcher import run_service

    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        services = {}
        for kind, alias in RANKED_ALIASES.items():
            log(f"starting the service serving {kind} ({alias})")
            env = {
                **base_env,
                "RECSYS_MODEL_ALIAS": alias,
                "RECSYS_CAPPING_ENABLED": "true",
                "RECSYS_MEMBERS_KEY_PREFIX": f"{prefix}:members-{kind}",
                "RECSYS_CAPS_KEY_PREFIX": f"{prefix}:caps-{kind}",
                "RECSYS_DATABASE_URL": f"sqlite:///{work}/events-{kind}.db",
            }
            services[kind] = stack.enter_context(
                run_service(env, workers=1, ready_timeout_s=600, log_path=work / f"service-{kind}.log")
            )
            run_wrk(wrk, f"{services[kind].url}/v1/recommendations", rec_lua, 3, args.connections)  # warm-up
        for kind in services:
            out[f"{kind}_rounds"] = []
        for i in range(args.rounds):
            for kind, svc in services.items():
                log(f"wrk: /v1/recommendations serving {kind} (round {i + 1}/{args.rounds})")
                cpu0 = cpu_seconds(svc.process.pid)
                run = run_wrk(wrk, f"{svc.url}/v1/recommendations", rec_lua, args.duration, args.connections)
                run["cpu_ms_per_request"] = (
                    (cpu_seconds(svc.process.pid) - cpu0) * 1000 / max(run["requests"], 1)
                )
                out[f"{kind}_rounds"].append(run)
        for kind, svc in services.items():
            log(f"open loop: {args.rate:.0f} req/s for {args.fixed_duration:.0f}s serving {kind}")
            out[f"{kind}_fixed_rate"] = run_open_loop(svc.port, bodies_file, args.rate, args.fixed_duration)
            out[f"{kind}_counters"] = service_counters(svc.url)
    for kind in services:  # stopped: each writer drained its queue
        out[f"{kind}_request_log_rows"] = count_request_records(work / f"events-{kind}.db")
    return out


def report_ranker(r: dict[str, Any]) -> None:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    als, ranker = r["als_rounds"], r["ranker_rounds"]
    ratios = [float(b["rps"]) / float(a["rps"]) for a, b in zip(als, ranker, strict=True)]
    cpu = [
        float(a["cpu_ms_per_request"]) / float(b["cpu_ms_per_request"])
        for a, b in zip(als, ranker, strict=True)
    ]
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu)
    print()
    print("contextual ranker against the ALS ranking (each its own service, caps on, request log on):")
    print(f"{'':34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms':>9}{'errors':>9}")
    for kind in RANKED_ALIASES:
        x = median_run(r[f"{kind}_rounds"])
        cpu_ms = statistics.median(float(y["cpu_ms_per_request"]) for y in r[f"{kind}_rounds"])
        print(
            f"{kind + ', wrk':34}{x['rps']:>10.0f}{x['p50_ms']:>10.2f}{x['p99_ms']:>10.2f}{cpu_ms:>9.2f}"
            f"{x['errors'] + x['non2xx']:>9}"
        )
    for kind in RANKED_ALIASES:
        f = r[f"{kind}_fixed_rate"]
        name = f"{kind} @{f['rate']:.0f}/s"
        print(
            f"{name:34}{f['achieved_rps']:>10.0f}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}{'':>9}"
            f"{f['errors'] + f['requests'] - f['ok']:>9}"
        )
    rounds = ", ".join(f"{v:.2f}" for v in ratios)
    print(
        f"ranker / ALS throughput            {ratio:6.2f}x  target >= {TARGET_RANKER_RATIO}x  "
        f"{ok(ratio >= TARGET_RANKER_RATIO)}  (rounds: {rounds})"
    )
    print(
        f"  ALS / ranker service CPU per answer {cpu_ratio:5.2f}x  (the same ratio from CPU time, little "
        "moved by other load)"
    )
    p99 = r["ranker_fixed_rate"]["p99_ms"]
    print(
        f"ranker p99 at {r['ranker_fixed_rate']['rate']:.0f} req/s               {p99:6.2f} ms target <= "
        f"{TARGET_RANKER_P99_MS:.0f} ms  {ok(p99 <= TARGET_RANKER_P99_MS)} (ALS "
        f"{r['als_fixed_rate']['p99_ms']:.2f} ms)"
    )
    for kind in RANKED_ALIASES:
        counters = r[f"{kind}_counters"]
        answers = sum(v for k, v in counters.items() if "/v1/recommendations" in k and 'status="200"' in k)
        rows = r[f"{kind}_request_log_rows"]
        print(
            f"  {kind} request log: {rows} rows after shutdown, {answers:.0f} answers {ok(rows == answers)}"
        )


if __name__ == "__main__":
    main()
