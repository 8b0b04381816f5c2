"""The process writer on SQLite and PostgreSQL: flush waits for the child's commit, a SIGKILLed child is
replaced and its loss counted, a clean close loses nothing, and the child still writes what it holds when the
serving process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.requestlog import BatchSettings, SqlRequestLog
from recsys.requestlog.process_writer import ProcessRequestWriter
from tests.conftest import PG_URL, drop_schema
from tests.requestlog.conftest import pg_schema_or_fail
from tests.requestlog.test_writer import Tally, rec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty request log of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/requests.db", None
        return
    engine, schema = pg_schema_or_fail("test_procwriter")
    try:
        yield PG_URL, schema
    finally:
        drop_schema(engine, schema)


def alive(pid: int) -> bool:
    try:  # a zombie has exited (a container's init may not reap it at once)
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def written(tally: Tally) -> int:
    with tally.lock:
        return sum(n for n, _ in tally.batches)


def test_flush_returns_once_the_child_committed_everything(target: tuple[str, str | None]) -> None:
    url, schema = target
    log = SqlRequestLog(url, schema=schema)
    tally = Tally()
    # A long interval: without flush nothing partial would be written for 30 s.
    writer = ProcessRequestWriter(url, BatchSettings(flush_interval_s=30), schema=schema, observer=tally)
    try:
        for i in range(120):
            assert writer.submit(rec(i))
        assert writer.flush(timeout_s=20)
        assert log.count() == 120 and written(tally) == 120 and writer.pending == 0
        assert all(lag >= 0 for _, lag in tally.batches)
        got = log.get("r7")
        assert got is not None and got.member_id == "M0" and got.shown[0].offer_id == "A"
        for i in range(120, 130):
            writer.submit(rec(i))
        assert writer.flush(timeout_s=20)
        assert log.count() == 130
    finally:
        writer.close()
        log.close()
    assert tally.drops == {}


def test_a_killed_child_is_replaced_and_its_loss_counted(target: tuple[str, str | None]) -> None:
    url, schema = target
    log = SqlRequestLog(url, schema=schema)
    tally = Tally()
    writer = ProcessRequestWriter(url, BatchSettings(flush_interval_s=0.05), schema=schema, observer=tally)
    try:
        assert writer.flush(timeout_s=20)  # the first child is up and has its log open
        first = writer.child_pid
        assert first is not None
        submitted = 0
        for i in range(600):
            assert writer.submit(rec(i))  # never raises, never blocks, child alive or not
            submitted += 1
            if i == 200:
                os.kill(first, signal.SIGKILL)
            time.sleep(0.001)
        assert writer.flush(timeout_s=30)
        assert writer.child_pid not in (None, first) and writer.restarts == 1
        lost = tally.drops.get("writer_died", 0)
        assert written(tally) + lost == submitted
        # a child killed between its commit and its report wrote records counted lost: the count is a bound
        assert written(tally) <= log.count() <= submitted
        assert log.get("r599") is not None  # the new child writes what came after
        before = log.count()
        for i in range(600, 700):
            writer.submit(rec(i))
        assert writer.flush(timeout_s=20)
        assert log.count() == before + 100 and written(tally) + lost == 700
    finally:
        writer.close()
        log.close()
    assert set(tally.drops) <= {"writer_died"}


def test_close_writes_everything_submitted(target: tuple[str, str | None]) -> None:
    url, schema = target
    tally = Tally()
    writer = ProcessRequestWriter(
        url, BatchSettings(batch_size=100, flush_interval_s=30), schema=schema, observer=tally
    )
    for i in range(1000):
        writer.submit(rec(i))
    writer.close()
    assert not writer.submit(rec(5000))  # closed: dropped and counted
    log = SqlRequestLog(url, schema=schema)
    try:
        assert log.count() == 1000 and written(tally) == 1000
    finally:
        log.close()
    assert tally.drops == {"closed": 1}


def test_the_child_writes_what_it_holds_when_the_serving_process_dies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/requests.db"
    serving = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from recsys.requestlog import BatchSettings
        from recsys.requestlog.process_writer import ProcessRequestWriter
        from tests.requestlog.test_writer import rec
        writer = ProcessRequestWriter({url!r}, BatchSettings(flush_interval_s=30))
        for i in range(300):
            writer.submit(rec(i))
        while writer.sent < 300:  # all in the child, none committed (30 s interval)
            time.sleep(0.01)
        print(writer.child_pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", serving], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child)
    log = SqlRequestLog(url)
    try:
        assert log.count() == 300
    finally:
        log.close()
