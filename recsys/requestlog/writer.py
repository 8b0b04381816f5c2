"""Writes request records off the request path: a bounded in-memory queue drained in batches by one thread.

The recommend route only validates the record and appends it to the queue (microseconds, no I/O); a
background thread commits what is queued every ``flush_interval_s`` or as soon as ``batch_size`` records
wait, in one transaction per batch. :meth:`BatchingRequestWriter.close` (the service's shutdown) drains the
queue before it returns.

What can be lost — records are in memory until their batch commits:

- the process dies (SIGKILL, OOM, power loss): the queued records, at most ``max_queue`` and normally what
  arrived in the last ``flush_interval_s`` (plus the batch being written) — the responses were sent, the
  decisions are not logged. A clean shutdown (SIGTERM, the lifespan's end) loses nothing;
- the database is down or slow: the failed batch is retried with back-off (doubling from
  ``retry_backoff_s`` up to ``max_backoff_s``) until the database answers, while new records queue up; when
  the queue is full new records are dropped and counted. An outage therefore loses nothing as long as the
  queue holds what arrives meanwhile (``max_queue`` records). At shutdown a failing batch gets ``retries``
  more tries, then it is dropped and counted. The service never waits for the database. A retried batch is
  never stored twice: the log skips request ids it already holds (a commit whose acknowledgement was lost).

The observer (:class:`WriterObserver`) sees every committed batch (with the age of its oldest record: the
write lag), every failed write and every dropped record, so the service can export them as metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from recsys.requestlog.record import InvalidRequestRecord, RequestRecord
from recsys.requestlog.store import RequestLog

logger = logging.getLogger(__name__)

DROP_QUEUE_FULL = "queue_full"
DROP_WRITE_FAILED = "write_failed"
DROP_CLOSED = "closed"
DROP_INVALID = "invalid"
DROP_WRITER_DIED = "writer_died"


class WriterObserver(Protocol):
    """Told about batches written and records dropped (the service turns them into metrics)."""

    def written(self, n: int, lag_s: float) -> None:
        """``n`` records committed; ``lag_s``: seconds the oldest of them waited since it was submitted."""
        ...

    def failed(self, n: int) -> None:
        """A write of ``n`` records failed (it is retried)."""
        ...

    def dropped(self, n: int, reason: str) -> None:
        """``n`` records lost (``queue_full``, ``write_failed``, ``closed``, ``invalid``, ``writer_died``)."""
        ...


class RequestWriter(Protocol):
    """What the service hands a record to."""

    @property
    def pending(self) -> int:
        """Records submitted and not yet written or dropped (the metrics export it)."""
        ...

    def submit(self, record: RequestRecord) -> bool:
        """Queue one record; False when it was dropped (invalid, queue full, closing). Never blocks on I/O,
        never raises."""
        ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is written (or dropped); False on timeout."""
        ...

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop."""
        ...


class _NullObserver:
    def written(self, n: int, lag_s: float) -> None:
        pass

    def failed(self, n: int) -> None:
        pass

    def dropped(self, n: int, reason: str) -> None:
        pass


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from ``base_s``, at most ``max_s``."""
    return min(max_s, base_s * 2 ** min(attempt - 1, 30))


def admit_valid(record: RequestRecord, observer: WriterObserver) -> bool:
    """Whether ``record`` is valid; an invalid one is dropped here (logged and counted), never allowed to
    poison a batch. Every writer's ``submit`` starts with it."""
    try:
        record.validate()
    except InvalidRequestRecord:
        logger.exception("request log: invalid record dropped")
        observer.dropped(1, DROP_INVALID)
        return False
    return True


def refusal(closing: bool, queued: int, max_queue: int) -> str | None:
    """Why a valid record cannot be queued (a ``DROP_*`` reason), or None when it can."""
    if closing:
        return DROP_CLOSED
    if queued >= max_queue:
        return DROP_QUEUE_FULL
    return None


@dataclass(frozen=True)
class BatchSettings:
    """How records are batched and retried: the thread writer's, and the process writer's child's.

    A batch is written every ``flush_interval_s`` or as soon as ``batch_size`` records wait; at most
    ``max_queue`` records wait (more are dropped and counted). A failed batch is retried with back-off,
    doubling from ``retry_backoff_s`` up to ``max_backoff_s``; at shutdown it gets ``retries`` more tries.
    """

    batch_size: int = 500
    flush_interval_s: float = 0.5
    max_queue: int = 50_000
    retries: int = 3
    retry_backoff_s: float = 0.5
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_queue < self.batch_size:
            raise ValueError(f"need 1 <= batch_size <= max_queue, got {self.batch_size}, {self.max_queue}")
        if self.flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be > 0, got {self.flush_interval_s}")


class BatchingRequestWriter:
    """:class:`RequestWriter` that batches appends to a :class:`RequestLog` on a daemon thread."""

    def __init__(
        self,
        log: RequestLog,
        settings: BatchSettings | None = None,
        *,
        observer: WriterObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.settings = settings or BatchSettings()
        self.observer: WriterObserver = observer or _NullObserver()
        self._clock = clock
        # (submitted at, record); appended under the lock (counters, wake-ups), popped by the thread alone.
        self._queue: deque[tuple[float, RequestRecord]] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0  # written or dropped after being queued
        self._closing = False
        self._closing_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records queued and not yet written."""
        return len(self._queue)

    def submit(self, record: RequestRecord) -> bool:
        if not admit_valid(record, self.observer):
            return False
        return self.enqueue(record, self._clock())

    def enqueue(self, record: RequestRecord, submitted_at: float) -> bool:
        """Queue a record already validated; ``submitted_at`` (on this writer's clock): when it was first
        handed over (the process writer's child passes the serving process's time, so the lag counts the
        hand-over, and does not validate again what the serving process validated)."""
        with self._cond:
            reason = refusal(self._closing, len(self._queue), self.settings.max_queue)
            if reason is None:
                self._queue.append((submitted_at, record))
                self._submitted += 1
                if len(self._queue) >= self.settings.batch_size:
                    self._cond.notify()
                return True
        self.observer.dropped(1, reason)
        return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._submitted
            self._cond.notify()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 0.05))
                self._cond.notify()
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._closing_event.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error(
                "request log writer did not finish within %.0fs; %d records lost", timeout_s, self.pending
            )

    # ------------------------------------------------------------------------------------------ thread

    def _run(self) -> None:
        batch_size = self.settings.batch_size
        while True:
            with self._cond:
                if not self._closing and len(self._queue) < batch_size:
                    self._cond.wait(self.settings.flush_interval_s)
                closing = self._closing
            while self._queue:
                batch: list[tuple[float, RequestRecord]] = []
                while self._queue and len(batch) < batch_size:
                    batch.append(self._queue.popleft())
                self._write(batch)
                if not closing and len(self._queue) < batch_size:
                    break
            if closing and not self._queue:
                return

    def _write(self, batch: list[tuple[float, RequestRecord]]) -> None:
        settings = self.settings
        records = [r for _, r in batch]
        attempt = 0
        closing_tries = 0
        while True:
            try:
                self.log.append(records)
            except Exception as exc:  # database down or slow: keep the batch and retry after a back-off
                attempt += 1
                self.observer.failed(len(records))
                with self._cond:
                    closing = self._closing
                if closing:
                    closing_tries += 1
                    if closing_tries > settings.retries:
                        logger.error(
                            "request log: dropped a batch of %d at shutdown after %d tries: %s",
                            len(records),
                            attempt,
                            exc,
                        )
                        self.observer.dropped(len(records), DROP_WRITE_FAILED)
                        break
                backoff = backoff_s(attempt, settings.retry_backoff_s, settings.max_backoff_s)
                logger.warning(
                    "request log: write of %d records failed (%s); retry %d in %.1fs, %d queued",
                    len(records),
                    exc,
                    attempt,
                    backoff,
                    len(self._queue),
                )
                # close() sets the event: shutdown does not sit out a long back-off.
                self._closing_event.wait(backoff if not closing else min(backoff, settings.retry_backoff_s))
            else:
                self.observer.written(len(records), self._clock() - batch[0][0])
                break
        with self._cond:
            self._done += len(records)
            self._cond.notify_all()
