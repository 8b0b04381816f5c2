"""Writes request records from a child process, so the database work never holds the serving process's GIL.

The thread writer (:class:`~recsys.requestlog.writer.BatchingRequestWriter`) runs SQLAlchemy inserts in the
serving process; each batch holds the GIL for milliseconds and stalls the event loop. Here the serving process
only validates a record and appends it to an in-memory buffer; a sender thread pickles what is buffered in
small chunks (a short GIL hold each) and sends them over a socket pair (the send itself releases the GIL) to a
child process. The child owns its :class:`~recsys.requestlog.store.SqlRequestLog` (the same URL and schema)
and runs the thread writer's logic unchanged: batches, retry with back-off, request ids never stored twice.
It reports every batch written, every failed write and every drop back over the socket, and the parent hands
them to its observer (the service's metrics). Each serving process (each uvicorn worker) has its own child.

The child is started as ``python -c`` importing only this package, not multiprocessing's spawn: spawn would
import the parent's ``__main__`` (the whole service) into the child.

What can be lost:

- the serving process dies (SIGKILL, OOM): the records still in its buffer, at most what arrived in the last
  ``ship_interval_s`` (50 ms) unless the child was not keeping up; what the child already holds is still
  written: the child sees the socket close, writes what it has and exits;
- the child dies: the records sent to it and not yet reported written, at most ``max_queue`` and normally
  what arrived in the last ``flush_interval_s``; they are counted as dropped (``writer_died``), the parent
  starts a new child and sends it the records that arrive from then on (and those still in its buffer). A
  child killed between a commit and its report leaves that batch in the log and counted as dropped: the
  count is an upper bound;
- the database is down or slow: as with the thread writer, the child retries the failed batch with back-off
  while new records queue in it; beyond ``max_queue`` records they are dropped and counted (``queue_full``).
  The serving process never waits for the database.

A clean shutdown (:meth:`ProcessRequestWriter.close`) sends what is buffered, lets the child drain and waits
for it: nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection

from recsys.requestlog.record import RequestRecord
from recsys.requestlog.store import SqlRequestLog
from recsys.requestlog.writer import (
    DROP_WRITER_DIED,
    BatchingRequestWriter,
    BatchSettings,
    WriterObserver,
    _NullObserver,
    admit_valid,
    backoff_s,
    refusal,
)

logger = logging.getLogger(__name__)

# Records per pickle: one pickle holds the GIL for its whole length (about 17 us a record).
CHUNK = 32

_CHILD_CODE = "from recsys.requestlog.process_writer import child_main; child_main()"


@dataclass(frozen=True)
class ChildConfig:
    """What the child needs to open the log and run its writer (sent pickled as its first message)."""

    url: str
    schema: str | None
    batch: BatchSettings
    nice: int


class ProcessRequestWriter:
    """:class:`~recsys.requestlog.writer.RequestWriter` whose database work runs in a child process.

    ``url``/``schema`` name the request log as :class:`SqlRequestLog` takes them; ``settings`` are the
    child's :class:`BatchingRequestWriter`'s, and their ``max_queue`` also bounds this process's buffer.
    ``child_nice`` is added to the child's niceness: when the cores are busy, answers come before the log's
    inserts.
    """

    def __init__(
        self,
        url: str,
        settings: BatchSettings | None = None,
        *,
        schema: str | None = None,
        ship_interval_s: float = 0.05,
        restart_backoff_s: float = 0.5,
        child_nice: int = 10,
        observer: WriterObserver | None = None,
    ) -> None:
        if ship_interval_s <= 0:
            raise ValueError(f"ship_interval_s must be > 0, got {ship_interval_s}")
        settings = settings or BatchSettings()
        self.config = ChildConfig(url=url, schema=schema, batch=settings, nice=child_nice)
        self.max_queue = settings.max_queue
        self.ship_interval_s = ship_interval_s
        self.restart_backoff_s = restart_backoff_s
        self.observer: WriterObserver = observer or _NullObserver()
        # (submitted at, wall clock: compared in the child; record), appended by submit, taken by the sender.
        self._buffer: deque[tuple[float, RequestRecord]] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._shipped = 0  # handed to a child (sent, or being sent)
        self._acked = 0  # reported written or dropped by a child
        self._lost = 0  # shipped to a child that died before reporting them
        self._flush_wanted = False
        self._closing = False
        # The child and its socket; replaced under _send_lock (a send never goes to a replaced child).
        self._send_lock = threading.Lock()
        self._generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._receiver: threading.Thread | None = None
        self._close_sent = False
        self._last_start = 0.0
        self.restarts = 0
        self.sent = 0  # records whose send to a child completed (it may not have committed them yet)
        with self._send_lock:
            self._start_child()
        self._sender = threading.Thread(target=self._send_loop, name="request-log-sender", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------------------------- the protocol

    @property
    def pending(self) -> int:
        """Records not yet written: buffered here or held by the child."""
        with self._cond:
            return len(self._buffer) + self._shipped - self._acked - self._lost

    @property
    def child_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def submit(self, record: RequestRecord) -> bool:
        if not admit_valid(record, self.observer):
            return False
        with self._cond:
            reason = refusal(self._closing, len(self._buffer), self.max_queue)
            if reason is None:
                self._buffer.append((time.time(), record))
                self._submitted += 1
                return True  # the sender wakes on its interval: no notify (a futex call) per request
        self.observer.dropped(1, reason)
        return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._submitted
            self._flush_wanted = True
            self._cond.notify_all()
            while self._acked + self._lost < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._sender.is_alive():
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._sender.join(timeout_s)
        with self._send_lock:
            proc, receiver = self._proc, self._receiver
        if proc is not None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("request log writer child did not finish within %.0fs; killing it", timeout_s)
                proc.kill()
        if receiver is not None:
            receiver.join(max(0.1, deadline - time.monotonic()))  # reads the last reports, counts losses
        with self._cond:
            left = len(self._buffer)
        if left or self._sender.is_alive():
            logger.error("request log writer did not finish within %.0fs; %d records lost", timeout_s, left)

    # ---------------------------------------------------------------------------------------- sender

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                if not (self._closing or self._flush_wanted):
                    self._cond.wait(self.ship_interval_s)
                taken = list(self._buffer)
                self._buffer.clear()
                flush, self._flush_wanted = self._flush_wanted, False
                closing = self._closing
            for i in range(0, len(taken), CHUNK):
                self._ship(taken[i : i + CHUNK])
            if flush:
                self._ship(None, "flush")
            if closing:
                with self._cond:
                    if self._buffer:  # arrived while the last chunks were sent
                        continue
                self._ship(None, "close")
                return

    def _ship(self, chunk: list[tuple[float, RequestRecord]] | None, kind: str = "batch") -> None:
        data = pickle.dumps((kind, chunk), protocol=pickle.HIGHEST_PROTOCOL)
        n = len(chunk) if chunk is not None else 0
        while True:
            with self._send_lock:
                conn, generation = self._conn, self._generation
                with self._cond:
                    self._shipped += n
                try:
                    if conn is None:
                        raise OSError("no request log writer child")
                    conn.send_bytes(data)
                except OSError:
                    # The child is gone: what it held (this chunk included) is lost; a new one takes over.
                    self._replace_child(generation)
                    if kind == "batch":
                        return
                    continue  # a flush or close goes to the new child
                if kind == "close":
                    self._close_sent = True
                self.sent += n
                return

    # -------------------------------------------------------------------------------- the child's life

    def _start_child(self) -> None:
        """Start a child and its receiver thread; the caller holds ``_send_lock``."""
        wait = self._last_start + self.restart_backoff_s - time.monotonic()
        if self._generation and wait > 0:
            time.sleep(wait)  # a child that dies at once is not restarted in a busy loop
        self._last_start = time.monotonic()
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            theirs.close()
            logger.exception("request log: could not start the writer child")
            self._proc, self._conn = None, None
            self._generation += 1
            return
        theirs.close()
        conn = Connection(ours.detach())
        self._generation += 1
        self._proc, self._conn, self._close_sent = proc, conn, False
        with contextlib.suppress(OSError):  # dead already: its receiver sees the end and replaces it
            conn.send_bytes(pickle.dumps(self.config))
        self._receiver = threading.Thread(
            target=self._receive_loop,
            args=(conn, proc, self._generation),
            name=f"request-log-receiver-{self._generation}",
            daemon=True,
        )
        self._receiver.start()

    def _count_lost(self) -> None:
        """Count what the current child held as lost (it is gone); the caller holds ``_send_lock``."""
        with self._cond:
            lost = self._shipped - self._acked - self._lost
            self._lost += lost
            self._cond.notify_all()
        if lost:
            self.observer.dropped(lost, DROP_WRITER_DIED)

    def _replace_child(self, generation: int) -> None:
        """The child of ``generation`` is gone; unless already replaced, count its loss and start another.
        The caller holds ``_send_lock``."""
        if generation != self._generation:
            return
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._count_lost()
        logger.error(
            "request log writer child exited (%s); starting another",
            proc.returncode if proc is not None else "not started",
        )
        self.restarts += 1
        self._start_child()

    def _receive_loop(self, conn: Connection, proc: subprocess.Popen[bytes], generation: int) -> None:
        while True:
            try:
                kind, n, value = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break
            if kind == "written":
                self.observer.written(n, value)
            elif kind == "failed":
                self.observer.failed(n)
                continue
            else:
                self.observer.dropped(n, value)
            with self._cond:
                self._acked += n
                self._cond.notify_all()
        with self._send_lock:
            if generation != self._generation:
                return
            if self._close_sent:  # the child drained and exited as asked
                proc.wait()
                self._count_lost()
                conn.close()
                return
            self._replace_child(generation)


# -------------------------------------------------------------------------------------------- the child


class _PipeObserver:
    """The child's observer: every report goes back to the parent (from the writer thread and main loop)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def _send(self, message: tuple[str, int, float | str | None]) -> None:
        # OSError: the parent is gone; keep writing what is held, nobody reads the figures
        with self.lock, contextlib.suppress(OSError):
            self.conn.send_bytes(pickle.dumps(message))

    def written(self, n: int, lag_s: float) -> None:
        self._send(("written", n, lag_s))

    def failed(self, n: int) -> None:
        self._send(("failed", n, None))

    def dropped(self, n: int, reason: str) -> None:
        self._send(("dropped", n, reason))


def open_log_retrying(url: str, schema: str | None, base_s: float, max_backoff_s: float) -> SqlRequestLog:
    """The child's log; a database that is down at the child's start is waited for (the parent buffers)."""
    attempt = 0
    while True:
        try:
            return SqlRequestLog(url, schema=schema)
        except Exception as exc:
            attempt += 1
            wait = backoff_s(attempt, base_s, max_backoff_s)
            logger.warning("request log writer: cannot open the log (%s); retry in %.1fs", exc, wait)
            time.sleep(wait)


def child_main() -> None:
    """The child: read chunks from the parent, write them through a :class:`BatchingRequestWriter`."""
    # Ctrl-C or a SIGTERM to the process group is for the service: the child drains when its parent closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conn = Connection(int(sys.argv[1]))
    try:
        config: ChildConfig = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    with contextlib.suppress(OSError):
        # Background work: on a busy machine the serving process gets the CPU first, the log lags instead.
        os.nice(config.nice)
    batch = config.batch
    log = open_log_retrying(config.url, config.schema, batch.retry_backoff_s, batch.max_backoff_s)
    writer = BatchingRequestWriter(
        log,
        batch,
        observer=_PipeObserver(conn),
        clock=time.time,  # the parent stamps records with the wall clock: the lag spans both processes
    )
    try:
        while True:
            try:
                kind, chunk = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the parent died: write what is held, then exit
            if kind == "batch":
                for submitted_at, record in chunk:
                    writer.enqueue(record, submitted_at)  # validated by the serving process
            elif kind == "flush":
                writer.flush(timeout_s=60.0)
            elif kind == "close":
                break
    finally:
        writer.close()
        log.close()
        conn.close()
