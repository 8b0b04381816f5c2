"""How long the request log's writer stalls an event loop, and what it costs the serving process's CPU.

An asyncio loop submits request records at ``--rate`` (300/s) to a writer over a real SQLite file (or
``--url``) and measures how late each submission wakes up (its lateness against its scheduled time): the
writer thread's inserts hold the GIL and delay the loop, the process writer's child does not share the GIL.
Beside lateness, the process CPU time of this process per record (all its threads; not the child's), so the
CPU the process writer moves out of the serving process shows. Writers ``thread``, ``process`` and ``none``
(validation only: the floor) run in interleaved rounds, so a slow spell of a shared machine hits all alike.

    python bench/bench_writer_stall.py [--rounds 3] [--seconds 15] [--rate 300]

Records are shaped as the service's (30 candidates, 5 shown, a trip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.requestlog import (  # noqa: E402
    BatchingRequestWriter,
    PolicyRef,
    RequestRecord,
    RequestWriter,
    ShownOffer,
    SqlRequestLog,
    TripSnapshot,
)
from recsys.requestlog.process_writer import ProcessRequestWriter  # noqa: E402

WRITERS = ("thread", "process", "none")


class ValidateOnly:
    """The floor: what the route pays without a writer (the record is validated and dropped)."""

    pending = 0

    def submit(self, record: RequestRecord) -> bool:
        record.validate()
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        pass


def record(i: int) -> RequestRecord:
    now = datetime.now(UTC)
    candidates = tuple(f"OFF-{(i + j) % 97:03d}" for j in range(30))
    return RequestRecord(
        request_id=uuid.uuid4().hex,
        member_id=f"M{i % 50_000:07d}",
        request_time=now,
        placement="booking",
        trip=TripSnapshot(
            flight_number="CA4101",
            origin="PEK",
            destination="CTU",
            cabin="Y",
            fare_class="B",
            departure_time=now + timedelta(days=5),
            booking_lead_days=5,
            party_size=2,
            children=0,
            stay_nights=4,
        ),
        candidates=candidates,
        shown=tuple(ShownOffer(candidates[k], k, 1.0) for k in range(5)),
        policy=PolicyRef("loyalty-offers", "1"),
    )


async def drive(writer: RequestWriter, rate: float, seconds: float) -> list[float]:
    """Submit at ``rate`` for ``seconds``; each submission's lateness (s)."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    late: list[float] = []
    for i in range(int(rate * seconds)):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(loop.time() - at)
        writer.submit(record(i))
    return late


def one_run(kind: str, url: str, rate: float, seconds: float) -> dict[str, Any]:
    writer: RequestWriter
    if kind == "thread":
        writer = BatchingRequestWriter(SqlRequestLog(url))
    elif kind == "process":
        writer = ProcessRequestWriter(url)
        writer.flush(30)  # the child is up
    else:
        writer = ValidateOnly()
    cpu0 = time.process_time()
    late = sorted(asyncio.run(drive(writer, rate, seconds)))
    cpu = time.process_time() - cpu0
    writer.close()
    n = len(late)

    def pct(p: float) -> float:
        return late[min(n - 1, int(p / 100 * n))] * 1000

    return {
        "kind": kind,
        "records": n,
        "late_p50_ms": pct(50),
        "late_p99_ms": pct(99),
        "late_p999_ms": pct(99.9),
        "late_max_ms": late[-1] * 1000,
        "cpu_us_per_record": cpu / n * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--url", default="", help="request log URL (default: a SQLite file of the run's own)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-writer-stall-"))
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in WRITERS}
    print(f"load average before: {os.getloadavg()}")
    for i in range(args.rounds):
        for kind in WRITERS:
            url = args.url or f"sqlite:///{work}/requests-{kind}-{i}.db"
            r = one_run(kind, url, args.rate, args.seconds)
            runs[kind].append(r)
            print(
                f"round {i + 1} {kind:8} lateness p50 {r['late_p50_ms']:.3f} p99 {r['late_p99_ms']:.3f} "
                f"p99.9 {r['late_p999_ms']:.3f} max {r['late_max_ms']:.2f} ms; "
                f"{r['cpu_us_per_record']:.0f} us CPU per record in this process",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")
    print(f"\nmedians of {args.rounds} rounds at {args.rate:.0f} records/s:")
    for kind in WRITERS:
        med = {k: statistics.median(r[k] for r in runs[kind]) for k in runs[kind][0] if k != "kind"}
        print(
            f"  {kind:8} lateness p99 {med['late_p99_ms']:.3f} ms, p99.9 {med['late_p999_ms']:.3f} ms, "
            f"max {med['late_max_ms']:.2f} ms; {med['cpu_us_per_record']:.0f} us CPU per record"
        )


if __name__ == "__main__":
    main()
