"""The background writer: batches off the caller's thread, drains at close, counts what it loses."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recsys.requestlog import (
    BatchingRequestWriter,
    BatchSettings,
    PolicyRef,
    RequestRecord,
    ShownOffer,
    SqlRequestLog,
)

T0 = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


class Tally:
    """An observer that remembers what it was told (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[tuple[int, float]] = []
        self.drops: dict[str, int] = {}
        self.failures = 0

    def written(self, n: int, lag_s: float) -> None:
        with self.lock:
            self.batches.append((n, lag_s))

    def failed(self, n: int) -> None:
        with self.lock:
            self.failures += 1

    def dropped(self, n: int, reason: str) -> None:
        with self.lock:
            self.drops[reason] = self.drops.get(reason, 0) + n


def rec(i: int, propensity: float = 1.0) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}",
        member_id=f"M{i % 7}",
        request_time=T0 + timedelta(seconds=i),
        placement="home",
        candidates=("A", "B"),
        shown=(ShownOffer("A", 0, propensity),),
        policy=PolicyRef("p", "1"),
    )


def test_batches_are_written_and_close_drains_the_queue(tmp_path: Path) -> None:
    log = SqlRequestLog(f"sqlite:///{tmp_path}/r.db")
    tally = Tally()
    # A long interval: only full batches are written before close; close writes the rest.
    writer = BatchingRequestWriter(
        log, BatchSettings(batch_size=100, flush_interval_s=30, max_queue=10_000), observer=tally
    )
    for i in range(250):
        assert writer.submit(rec(i))
    deadline = time.monotonic() + 10
    while log.count() < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.count() == 200  # two full batches, the last 50 still wait for the interval
    writer.close()
    assert log.count() == 250
    assert sorted(n for n, _ in tally.batches) == [50, 100, 100]
    assert all(lag >= 0 for _, lag in tally.batches)
    assert tally.drops == {}
    assert not writer.submit(rec(999)) and tally.drops == {"closed": 1}
    log.close()


def test_flush_waits_for_what_was_submitted(tmp_path: Path) -> None:
    log = SqlRequestLog(f"sqlite:///{tmp_path}/r.db")
    writer = BatchingRequestWriter(log, BatchSettings(batch_size=500, flush_interval_s=30))
    for i in range(7):
        writer.submit(rec(i))
    assert writer.flush(timeout_s=10)
    assert log.count() == 7 and writer.pending == 0
    writer.close()
    log.close()


def test_invalid_record_is_dropped_not_queued(tmp_path: Path) -> None:
    log = SqlRequestLog(f"sqlite:///{tmp_path}/r.db")
    tally = Tally()
    writer = BatchingRequestWriter(log, BatchSettings(batch_size=10, flush_interval_s=0.05), observer=tally)
    assert not writer.submit(rec(1, propensity=0.0))
    assert writer.submit(rec(2))
    writer.close()
    assert log.count() == 1 and tally.drops == {"invalid": 1}
    log.close()


def test_database_down_drops_and_counts_never_blocks() -> None:
    # Nothing listens on port 1: every append fails at once (a real refused connection, not a mock).
    log = SqlRequestLog("postgresql+psycopg://postgres@127.0.0.1:1/test", create=False)
    tally = Tally()
    writer = BatchingRequestWriter(
        log,
        BatchSettings(batch_size=5, flush_interval_s=0.05, max_queue=20, retries=1, retry_backoff_s=0.01),
        observer=tally,
    )
    started = time.perf_counter()
    accepted = sum(writer.submit(rec(i)) for i in range(100))
    assert time.perf_counter() - started < 0.5  # submitting never waits for the database
    writer.close()
    assert tally.batches == [] and tally.failures >= 1
    # What was queued when the writer closed is dropped after its shutdown tries, and counted.
    assert accepted == tally.drops["write_failed"]
    assert tally.drops.get("queue_full", 0) == 100 - accepted > 0
    log.close()


def test_batch_settings_out_of_range_name_the_setting() -> None:
    with pytest.raises(ValueError, match="batch_size <= max_queue, got 0, 50000"):
        BatchSettings(batch_size=0)
    with pytest.raises(ValueError, match="batch_size <= max_queue, got 500, 100"):
        BatchSettings(max_queue=100)
    with pytest.raises(ValueError, match="flush_interval_s must be > 0, got 0"):
        BatchSettings(flush_interval_s=0)
