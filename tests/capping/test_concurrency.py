"""Concurrent requests for ONE member never together exceed a cap.

Against real Redis: 4 processes × 50 threads = 200 calls released at once by a barrier. In-process: 200
threads on one enforcer. (The end-to-end version — 200 HTTP requests to two uvicorn workers — lives with the
service tests.)
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from recsys.capping.api import CapCandidate, CapEnforcer, CapMember, build_enforcer
from tests.capping.conftest import REDIS_URL, make_policy, require_redis

POLICY = """
caps:
  - {name: member_daily, scope: member, limit: 7, window: day}
  - {name: seat_24h, scope: member_category, categories: [seat], limit: 2, window: 24h}
  - {name: offer_weekly, scope: member_offer, limit: 1, window: 7d}
"""
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MEMBER = CapMember("M0000042", "basic", "Europe/London")
CANDIDATES = [CapCandidate(f"S{i}", "ancillary", "seat") for i in range(4)] + [
    CapCandidate(f"M{i}", "ancillary", "meal") for i in range(8)
]
PROCESSES, THREADS = 4, 50


def _hammer(e: CapEnforcer, barrier: Any, out: list[list[str]], errors: list[BaseException]) -> None:
    try:
        barrier.wait(timeout=60)
        d = e.select_and_record(MEMBER, CANDIDATES, 3, "home", NOW)
        assert d.degraded is None, d.degraded
        out.append(d.selected)
    except BaseException as exc:  # report to the parent, do not die silently
        errors.append(exc)


def _worker(prefix: str, barrier: Any, queue: Any) -> None:
    e = build_enforcer(REDIS_URL, make_policy(POLICY), key_prefix=prefix, timeout_ms=5_000)
    out: list[list[str]] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_hammer, args=(e, barrier, out, errors)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put((out, [repr(x) for x in errors]))


def check_caps_held(selections: list[list[str]]) -> None:
    shown = Counter(o for sel in selections for o in sel)
    assert sum(shown.values()) == 7, shown  # member_daily: exactly 7 (there are enough candidates)
    assert max(shown.values()) == 1, shown  # offer_weekly: no offer twice
    assert sum(n for o, n in shown.items() if o.startswith("S")) == 2, shown  # seat_24h
    assert all(len(sel) <= 3 for sel in selections)


def test_200_concurrent_calls_from_4_processes_over_redis(key_prefix: str) -> None:
    require_redis()
    # forkserver, not fork: forking the test process could copy a lock held by some other thread of a long
    # pytest session; the preloaded modules keep the children quick to start.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["recsys.capping.redis_store", "tests.capping.test_concurrency"])
    barrier = ctx.Barrier(PROCESSES * THREADS)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(key_prefix, barrier, queue)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    selections = [sel for out, _ in results for sel in out]
    errors = [err for _, errs in results for err in errs]
    assert errors == []
    assert len(selections) == PROCESSES * THREADS
    check_caps_held(selections)
    # And the store agrees with what was served.
    e = build_enforcer(REDIS_URL, make_policy(POLICY), key_prefix=key_prefix, timeout_ms=2000)
    state = e.member_state(MEMBER, NOW)
    daily = next(c for c in state["caps"] if c["cap"] == "member_daily")
    assert daily["count"] == 7 and daily["remaining"] == 0


def test_200_concurrent_threads_in_process() -> None:
    e = build_enforcer(None, make_policy(POLICY))
    barrier = threading.Barrier(PROCESSES * THREADS)
    out: list[list[str]] = []
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_hammer, args=(e, barrier, out, errors)) for _ in range(PROCESSES * THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check_caps_held(out)
