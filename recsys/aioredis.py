"""The service's awaited Redis calls: one pipelined connection per event loop, built on hiredis.

The request path awaits two Redis scripts per recommendation (the member read and the cap check-and-record).
Through ``redis.asyncio`` each call cost ~80-100 µs of the event loop's CPU (connection pool, retry wrapper,
stream reader, timeout context), more than the rest of the member read; the other asyncio clients on PyPI
measured no better (valkey-glide ~70 µs, coredis ~150-180 µs, same script, 32 concurrent callers). The wire
work itself is what hiredis (redis-py's own C parser) does: :class:`LoopRedis` writes ``hiredis.pack_command``
frames to one connection and matches replies to calls in order, ~10 µs per call
(``bench/bench_redis_client.py`` compares it with ``redis.asyncio``). Everything else (publishing,
the blocking paths, pipelines, scans) stays on redis-py.

Semantics kept from redis-py, so the stores' error handling is unchanged:

* replies are what redis-py returns with hiredis and ``decode_responses=False`` (bytes, ints, lists);
* an error reply raises ``redis.exceptions.ResponseError`` (``NoScriptError`` for ``NOSCRIPT``);
* no reply within ``socket_timeout`` raises ``redis.exceptions.TimeoutError`` (a late reply is read and
  dropped, so the replies that follow still meet their calls); a lost or refused connection raises
  ``redis.exceptions.ConnectionError`` for every call in flight, and the next call connects again;
* no retries: the stores' breakers decide what a failure means.

``redis.asyncio`` clients and these connections both belong to the loop that opened them, and a process may
run more than one loop over its life (a test client runs each app in a loop of its own), so a connection is
opened on first use in each loop. Commands in flight from one loop are bounded (:data:`IN_FLIGHT`): enough to
overlap Redis with the loop's other work, few enough that a reply never waits long for a busy loop to read it
(the timeout counts that wait against Redis).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Commands in flight at once from one event loop (bench-serve: 2, 4 and 8 gave the same throughput).
IN_FLIGHT = 4


def _error(reply: hiredis.ReplyError) -> ResponseError:
    message = str(reply)
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


class _Connection(asyncio.Protocol):
    """One Redis connection: calls are written as they come, replies resolve the calls' futures in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut = self.waiting.popleft()
            if fut.done():  # timed out or cancelled: its reply is dropped, the order kept
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(_error(reply))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}")
        self.transport = None
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(self.lost)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def call(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        if self.transport is None or self.transport.is_closing():
            raise self.lost or RedisConnectionError("connection to Redis is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.transport.write(hiredis.pack_command(tuple(args)))
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(fut: asyncio.Future[Any], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(RedisTimeoutError(f"no reply from Redis within {timeout * 1000:.0f} ms"))


class LoopRedis:
    """Awaited commands to the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``; user, password and
    database from the URL) over one pipelined connection per event loop.

    ``socket_timeout`` bounds each call (send to reply), ``socket_connect_timeout`` the connection set-up
    (connect, ``AUTH``, ``SELECT``); None waits for ever. ``slot`` is the semaphore bounding the calls in
    flight from the running loop.
    """

    def __init__(
        self,
        url: str,
        *,
        in_flight: int = IN_FLIGHT,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.options = parse_url(url)  # raises ValueError naming what is wrong with the URL
        self.in_flight = in_flight
        self.socket_timeout = socket_timeout
        self.socket_connect_timeout = socket_connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self.slot: asyncio.Semaphore = asyncio.Semaphore(in_flight)

    async def execute(self, *args: Any) -> Any:
        """One command's reply (bytes, ints and lists, as redis-py returns them without decoding)."""
        async with self._slot():
            conn = self._conn if self._conn is not None and self._conn.usable else await self._connect()
            return await self._await(conn.call(args), self.socket_timeout)

    async def evalsha(self, script: str, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``EVALSHA`` of ``script`` (whose SHA1 is ``sha``), loading the script first when the server does
        not know it (restarted, or its script cache flushed)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the running loop's connection; the next call opens a new one."""
        conn, self._conn, self._connecting = self._conn, None, None
        if conn is not None:
            conn.close()

    # -- internals ----------------------------------------------------------------------------------------
    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first call in this loop: the old loop's connection is not usable here
            self._loop, self._conn, self._connecting = loop, None, None
            self.slot = asyncio.Semaphore(self.in_flight)
        return self.slot

    @staticmethod
    async def _await(fut: asyncio.Future[Any], timeout: float | None) -> Any:
        if timeout is None:
            return await fut
        timer = asyncio.get_running_loop().call_later(timeout, _expire, fut, timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _connect(self) -> _Connection:
        """The loop's connection, opened once however many calls wait for it."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            conn = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._conn = conn
        return conn

    async def _open(self) -> _Connection:
        o = self.options
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.socket_connect_timeout):
                if "path" in o:
                    _, conn = await loop.create_unix_connection(_Connection, o["path"])
                else:
                    _, conn = await loop.create_connection(
                        _Connection, o.get("host", "localhost"), int(o.get("port", 6379)), ssl=self._tls()
                    )
                setup: list[tuple[Any, ...]] = []
                if o.get("password") is not None:
                    user = o.get("username")
                    setup.append(("AUTH", user, o["password"]) if user else ("AUTH", o["password"]))
                if o.get("db"):
                    setup.append(("SELECT", int(o["db"])))
                for reply in [conn.call(cmd) for cmd in setup]:
                    await reply
            return conn
        except BaseException as e:
            if conn is not None:
                conn.close()
            if isinstance(e, TimeoutError):
                raise RedisTimeoutError(f"connecting to Redis at {self._where()} timed out") from e
            if isinstance(e, ResponseError):
                raise RedisConnectionError(f"Redis at {self._where()} refused the set-up: {e}") from e
            if isinstance(e, OSError):
                raise RedisConnectionError(f"cannot connect to Redis at {self._where()}: {e}") from e
            raise

    def _tls(self) -> ssl.SSLContext | None:
        """For ``rediss://``: a default context (``ssl_cert_reqs=none`` in the URL skips verification)."""
        cls = self.options.get("connection_class")
        if cls is None or "SSL" not in cls.__name__:
            return None
        tls = ssl.create_default_context()
        if str(self.options.get("ssl_cert_reqs", "")).lower() in ("none", "cert_none"):
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        return tls

    def _where(self) -> str:
        o = self.options
        return str(o["path"]) if "path" in o else f"{o.get('host', 'localhost')}:{o.get('port', 6379)}"
