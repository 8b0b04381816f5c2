"""One Redis layer: the client factory, its start-up checks and the one timeout and circuit-breaker policy.

Every Redis client of a process comes from :class:`RedisClients` (one synchronous client, one asyncio
client per event loop, and a long-timeout client for bulk loads, all for one deployment), built on
redis-py's maintained clients:

==========================================================  ===========================================
URL (``RECSYS_REDIS_URL``)                                   client
==========================================================  ===========================================
``redis://h:p/db``, ``rediss://h:p/db``, ``unix:///path``     ``redis.Redis`` / ``redis.asyncio.Redis``
``redis+cluster://h1:p1,h2:p2``, ``rediss+cluster://...``      ``redis.cluster.RedisCluster`` (asyncio too)
``redis://h:p`` with ``RECSYS_REDIS_MODE=cluster``            the same cluster client, one start-up node
``redis+sentinel://h1:p1,h2:p2/service[/db]``                 ``redis.sentinel.Sentinel(...).master_for``
==========================================================  ===========================================

User and password come from the URL or from ``RECSYS_REDIS_USERNAME``/``RECSYS_REDIS_PASSWORD`` (ACL);
TLS (``rediss``) takes ``RECSYS_REDIS_TLS_CERTFILE``, ``_KEYFILE``, ``_CA_CERTS``, ``_CERT_REQS`` and
``_CHECK_HOSTNAME``. Sentinels are asked with the same timeouts and TLS options; the master with the ACL.

The policy (:class:`RedisCallPolicy`): every call has one timeout and no retries (a script call that timed
out may have been applied, and a retry would count it twice); failures open a :class:`CircuitBreaker`
(back-off doubling to a ceiling, one trial call at a time), and while it is open calls fail at once with
:class:`RedisUnavailable`; on a cluster each master has its own breaker, so one failed shard does not stop the
others' members. :meth:`CallGuard.acall` bounds an awaited call as a whole (connect, handshake,
reply) by the timeout, so with a frozen Redis no caller waits longer than the timeout, and none waits behind
another's (the asyncio clients hold one connection per call in flight, never a shared slot).

:func:`check_startup` fails fast with errors naming the setting: an unknown URL scheme, a TLS file that does
not exist, a Redis or cluster nobody answers at, a cluster whose ``CLUSTER SLOTS`` do not cover all 16,384
slots.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.lock
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from recsys.urls import REDIS_URL_SCHEMES, redact_url

logger = logging.getLogger(__name__)
T = TypeVar("T")

SyncRedis: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedis: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
Mode = Literal["auto", "standalone", "cluster", "sentinel"]

CLUSTER_SLOTS = 16384
STARTUP_TIMEOUT_MS = 1000.0  # start-up checks and readiness probes: patient, a loaded host is not an outage

# The settings' names, as the service's environment spells them (errors name them).
URL_SETTING = "RECSYS_REDIS_URL"
MODE_SETTING = "RECSYS_REDIS_MODE"
TLS_SETTINGS = {
    "certfile": "RECSYS_REDIS_TLS_CERTFILE",
    "keyfile": "RECSYS_REDIS_TLS_KEYFILE",
    "ca_certs": "RECSYS_REDIS_TLS_CA_CERTS",
}

STANDALONE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = REDIS_URL_SCHEMES


class RedisConfigError(ValueError):
    """A Redis setting that cannot work; the message starts with the setting's name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class RedisUnavailable(Exception):
    """A call that did not get an answer (timeout, refused, breaker open); ``reason`` is short and stable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSOptions:
    """TLS of ``rediss`` URLs, passed through to redis-py's ``ssl_*`` options."""

    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None
    cert_reqs: Literal["required", "optional", "none"] = "required"
    check_hostname: bool = True

    @property
    def files_set(self) -> bool:
        return any((self.certfile, self.keyfile, self.ca_certs))

    def validate(self) -> None:
        for name, setting in TLS_SETTINGS.items():
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise RedisConfigError(setting, f"TLS file {path} does not exist or is not a file")
        if self.keyfile and not self.certfile:
            raise RedisConfigError(TLS_SETTINGS["certfile"], "a TLS key file is set without its certificate")

    def kwargs(self) -> dict[str, Any]:
        return {
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_ca_certs": self.ca_certs,
            "ssl_cert_reqs": self.cert_reqs,
            # verifying the host name needs a verified certificate
            "ssl_check_hostname": self.check_hostname and self.cert_reqs == "required",
        }


@dataclass(frozen=True)
class RedisCallPolicy:
    """The one timeout and circuit-breaker policy of every online Redis call (cap checks, member reads).

    ``timeout_ms`` bounds a call from start to reply (connecting included); ``connect_timeout_ms`` a new
    connection (default: the call timeout). The breaker stays open ``breaker_backoff_ms`` after the first
    failure, doubling per failed trial up to ``breaker_max_backoff_ms``. Bulk loads (publishing a member store
    version) use ``bulk_timeout_ms`` on connections of their own.
    """

    # 250 ms: a call's timeout also bounds its wait for a busy event loop, and a false timeout degrades the
    # worker's answers for a whole breaker back-off; 20 and 50 ms timed out answered calls under load, 100
    # and more did not (bench/bench_redis_timeout.py, bench/README.md). A dead Redis costs the calls in flight
    # one timeout each; the breaker fails the rest at once.
    timeout_ms: float = 250.0
    connect_timeout_ms: float | None = None
    breaker_backoff_ms: float = 500.0
    breaker_max_backoff_ms: float = 30_000.0
    bulk_timeout_ms: float = 30_000.0

    def __post_init__(self) -> None:
        for name in ("timeout_ms", "breaker_backoff_ms", "breaker_max_backoff_ms", "bulk_timeout_ms"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.connect_timeout_ms is not None and not self.connect_timeout_ms > 0:
            raise ValueError(f"connect_timeout_ms must be > 0, got {self.connect_timeout_ms}")

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0

    @property
    def connect_timeout_s(self) -> float:
        return (self.connect_timeout_ms or self.timeout_ms) / 1000.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RedisConfig:
    """Where the Redis is and how to talk to it. ``mode="auto"`` takes the mode from the URL's scheme."""

    url: str
    mode: Mode = "auto"
    username: str | None = None
    password: str | None = None
    tls: TLSOptions = field(default_factory=TLSOptions)
    policy: RedisCallPolicy = field(default_factory=RedisCallPolicy)
    max_connections: int = 1024  # per node; a frozen node holds one connection per call in flight

    # -- the URL, parsed --------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower() if "://" in self.url else ""

    @property
    def resolved_mode(self) -> Literal["standalone", "cluster", "sentinel"]:
        scheme = self.scheme
        if scheme in CLUSTER_SCHEMES:
            return "cluster"
        if scheme in SENTINEL_SCHEMES:
            return "sentinel"
        if self.mode == "auto":
            return "standalone"
        return self.mode

    @property
    def uses_tls(self) -> bool:
        return self.scheme.startswith("rediss")

    def validate(self) -> None:
        """Raise :class:`RedisConfigError` naming the setting for anything that cannot work (no network)."""
        where = redact_url(self.url)
        if self.scheme not in SCHEMES:
            raise RedisConfigError(
                URL_SETTING,
                f"unknown scheme in {where!r}: use one of {', '.join(s + '://' for s in SCHEMES)}",
            )
        explicit = self.mode if self.mode != "auto" else None
        if explicit and self.scheme not in STANDALONE_SCHEMES and explicit != self.resolved_mode:
            raise RedisConfigError(
                MODE_SETTING, f"is {explicit} but {URL_SETTING} ({where}) names a {self.resolved_mode}"
            )
        if self.tls.files_set and not self.uses_tls:
            raise RedisConfigError(
                URL_SETTING,
                f"TLS files are set but {where!r} is not a TLS URL: use rediss:// (or rediss+...)",
            )
        self.tls.validate()
        mode = self.resolved_mode
        if mode == "standalone":
            self._standalone_options()
        elif mode == "cluster":
            self.cluster_nodes()
        else:
            self.sentinel_target()

    def _standalone_options(self) -> dict[str, Any]:
        try:
            return dict(parse_url(self.url))
        except ValueError as e:
            raise RedisConfigError(URL_SETTING, f"{redact_url(self.url)!r}: {e}") from e

    def _multi_host(self) -> tuple[list[Endpoint], str, str | None, str | None]:
        """Endpoints, path, user and password of a ``scheme://[user:pass@]h1:p1,h2:p2/path`` URL."""
        rest = self.url.split("://", 1)[1]
        netloc, _, path = rest.partition("/")
        path, _, query = path.partition("?")
        if query and dict(parse_qsl(query)):
            raise RedisConfigError(
                URL_SETTING, f"{redact_url(self.url)!r}: query options are not read here; use the settings"
            )
        user = password = None
        if "@" in netloc:
            auth, netloc = netloc.rsplit("@", 1)
            user, _, password = auth.partition(":")
            user, password = (unquote(user) or None), (unquote(password) or None)
        nodes: list[Endpoint] = []
        for part in filter(None, netloc.split(",")):
            try:
                split = urlsplit(f"//{part}")
                host, port = split.hostname, split.port or 6379
            except ValueError as e:
                raise RedisConfigError(
                    URL_SETTING, f"bad host:port {part!r} in {redact_url(self.url)!r}"
                ) from e
            if not host:
                raise RedisConfigError(URL_SETTING, f"bad host:port {part!r} in {redact_url(self.url)!r}")
            nodes.append(Endpoint(host, port))
        if not nodes:
            raise RedisConfigError(URL_SETTING, f"no host in {redact_url(self.url)!r}")
        return nodes, path, user, password

    def cluster_nodes(self) -> list[Endpoint]:
        """The start-up nodes of a cluster."""
        if self.scheme in CLUSTER_SCHEMES:
            nodes, path, _, _ = self._multi_host()
            if path.strip("/") not in ("", "0"):
                raise RedisConfigError(URL_SETTING, "a Redis Cluster has only database 0: drop the /db")
            return nodes
        opts = self._standalone_options()
        if "path" in opts:
            raise RedisConfigError(MODE_SETTING, "is cluster but the URL is a unix socket")
        if int(str(opts.get("db", 0) or 0)) != 0:
            raise RedisConfigError(URL_SETTING, "a Redis Cluster has only database 0: drop the /db")
        return [Endpoint(str(opts.get("host", "localhost")), int(str(opts.get("port", 6379))))]

    def sentinel_target(self) -> tuple[list[Endpoint], str, int]:
        """Sentinels, the master's service name and the database of a ``redis+sentinel`` URL."""
        if self.scheme not in SENTINEL_SCHEMES:
            raise RedisConfigError(
                URL_SETTING, "sentinel mode needs redis+sentinel://h1:p1,h2:p2/service_name[/db]"
            )
        nodes, path, _, _ = self._multi_host()
        service, _, db = path.strip("/").partition("/")
        if not service:
            raise RedisConfigError(
                URL_SETTING, "redis+sentinel:// needs the master's service name as its path"
            )
        if db and not db.isdigit():
            raise RedisConfigError(URL_SETTING, f"database {db!r} is not a number")
        return nodes, service, int(db or 0)

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): the settings win over the URL's."""
        if self.resolved_mode == "standalone":
            opts = self._standalone_options()
            user, password = opts.get("username"), opts.get("password")
        elif self.scheme in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
            _, _, user, password = self._multi_host()
        else:
            opts = self._standalone_options()
            user, password = opts.get("username"), opts.get("password")
        return (
            self.username or (str(user) if user else None),
            self.password or (str(password) if password else None),
        )

    def with_policy(self, **changes: Any) -> RedisConfig:
        """The same deployment under another policy (e.g. longer timeouts for start-up checks)."""
        return replace(self, policy=replace(self.policy, **changes))

    def describe(self) -> str:
        return f"{self.resolved_mode} Redis at {redact_url(self.url)}"


# ------------------------------------------------------------------------------------------------------------
# Building clients
# ------------------------------------------------------------------------------------------------------------


def _common(config: RedisConfig, timeout_s: float) -> dict[str, Any]:
    user, password = config.credentials()
    kw: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(config.policy.connect_timeout_s, timeout_s),
        "health_check_interval": 0,
    }
    if user:
        kw["username"] = user
    if password:
        kw["password"] = password
    return kw


def _tls(config: RedisConfig) -> dict[str, Any]:
    return {"ssl": True, **config.tls.kwargs()} if config.uses_tls else {}


def build_sync_client(config: RedisConfig, *, timeout_s: float | None = None) -> SyncRedis:
    """A blocking client (no retries, the policy's timeout unless ``timeout_s``). A cluster client reads the
    topology on construction, so an unreachable cluster raises here."""
    config.validate()
    timeout_s = config.policy.timeout_s if timeout_s is None else timeout_s
    kw = _common(config, timeout_s)
    mode = config.resolved_mode
    if mode == "cluster":
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(n.host, n.port) for n in config.cluster_nodes()],
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=True,
            max_connections=config.max_connections,
            **kw,
            **_tls(config),
        )
    if mode == "sentinel":
        nodes, service, db = config.sentinel_target()
        sentinel = redis.sentinel.Sentinel(
            [(n.host, n.port) for n in nodes],
            sentinel_kwargs={k: v for k, v in kw.items() if k.startswith("socket_")} | _tls(config),
        )
        return sentinel.master_for(service, db=db, retry=Retry(NoBackoff(), 0), **kw, **_tls(config))
    tls = config.tls.kwargs() if config.uses_tls and config.scheme != "unix" else {}
    return redis.Redis.from_url(
        config.url, retry=Retry(NoBackoff(), 0), max_connections=config.max_connections, **kw, **tls
    )


def build_async_client(config: RedisConfig, *, timeout_s: float | None = None) -> AsyncRedis:
    """An asyncio client for the running loop (same options as :func:`build_sync_client`; a cluster reads
    its topology on the first command)."""
    config.validate()
    timeout_s = config.policy.timeout_s if timeout_s is None else timeout_s
    kw = _common(config, timeout_s)
    mode = config.resolved_mode
    if mode == "cluster":
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(n.host, n.port) for n in config.cluster_nodes()],
            retry=AsyncRetry(NoBackoff(), 0),
            require_full_coverage=True,
            max_connections=config.max_connections,
            **kw,
            **_tls(config),
        )
    if mode == "sentinel":
        nodes, service, db = config.sentinel_target()
        sentinel = redis.asyncio.sentinel.Sentinel(
            [(n.host, n.port) for n in nodes],
            sentinel_kwargs={k: v for k, v in kw.items() if k.startswith("socket_")} | _tls(config),
        )
        return sentinel.master_for(service, db=db, retry=AsyncRetry(NoBackoff(), 0), **kw, **_tls(config))
    tls = config.tls.kwargs() if config.uses_tls and config.scheme != "unix" else {}
    return redis.asyncio.Redis.from_url(
        config.url, retry=AsyncRetry(NoBackoff(), 0), max_connections=config.max_connections, **kw, **tls
    )


# ------------------------------------------------------------------------------------------------------------
# Start-up checks
# ------------------------------------------------------------------------------------------------------------


def _slot_ranges(reply: object) -> list[tuple[int, int]]:
    """(start, end) of every range in a ``CLUSTER SLOTS`` reply (redis-py parses it to a dict or a list)."""
    if isinstance(reply, dict):
        return [(int(a), int(b)) for a, b in reply]
    return [(int(r[0]), int(r[1])) for r in reply]  # type: ignore[attr-defined]


def _missing(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    gaps, nxt = [], 0
    for a, b in sorted(ranges):
        if a > nxt:
            gaps.append((nxt, a - 1))
        nxt = max(nxt, b + 1)
    if nxt < CLUSTER_SLOTS:
        gaps.append((nxt, CLUSTER_SLOTS - 1))
    return gaps


def check_cluster_coverage(config: RedisConfig) -> None:
    """Ask the start-up nodes for ``CLUSTER SLOTS``: raise naming the setting when none answers, when the
    node is not in cluster mode, or when the slots do not cover all 16,384."""
    errors: list[str] = []
    timeout = max(config.policy.connect_timeout_s, STARTUP_TIMEOUT_MS / 1000)
    for node in config.cluster_nodes():
        client = redis.Redis(
            host=node.host,
            port=node.port,
            retry=Retry(NoBackoff(), 0),
            **_common(config.with_policy(connect_timeout_ms=timeout * 1000), timeout),
            **_tls(config),
        )
        try:
            reply = client.execute_command("CLUSTER SLOTS")
        except redis.exceptions.ResponseError as e:
            raise RedisConfigError(
                URL_SETTING,
                f"{node} answers but is not a Redis Cluster node ({e}); use redis:// for one Redis",
            ) from e
        except redis.exceptions.RedisError as e:
            errors.append(f"{node}: {e}")
            continue
        finally:
            client.close()
        gaps = _missing(_slot_ranges(reply))
        if gaps:
            covered = CLUSTER_SLOTS - sum(b - a + 1 for a, b in gaps)
            shown = ", ".join(f"{a}-{b}" for a, b in gaps[:5]) + (" ..." if len(gaps) > 5 else "")
            raise RedisConfigError(
                URL_SETTING,
                f"the Redis Cluster at {node} covers {covered} of {CLUSTER_SLOTS} hash slots "
                f"(missing {shown}); assign every slot (redis-cli --cluster fix) before starting",
            )
        return
    raise RedisConfigError(
        URL_SETTING,
        f"no node of the Redis Cluster {redact_url(config.url)} answers ({'; '.join(errors)})",
    )


def check_startup(config: RedisConfig) -> None:
    """Validate the settings and reach the deployment; :class:`RedisConfigError` naming the setting if not."""
    config.validate()
    if config.resolved_mode == "cluster":
        check_cluster_coverage(config)
    patient = max(config.policy.timeout_ms, config.policy.connect_timeout_s * 1000, STARTUP_TIMEOUT_MS)
    client = build_sync_client(config.with_policy(timeout_ms=patient, connect_timeout_ms=patient))
    try:
        client.ping()
    except redis.sentinel.MasterNotFoundError as e:
        nodes, service, _ = config.sentinel_target()
        raise RedisConfigError(
            URL_SETTING,
            f"no Sentinel at {', '.join(map(str, nodes))} names a master for service {service!r} "
            f"({str(e).rsplit(' - ', 1)[-1]})",
        ) from e
    except redis.exceptions.AuthenticationError as e:
        raise RedisConfigError(
            "RECSYS_REDIS_PASSWORD", f"{config.describe()} refused the credentials: {e}"
        ) from e
    except redis.exceptions.RedisError as e:
        raise RedisConfigError(URL_SETTING, f"no answer from {config.describe()}: {e}") from e
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------------------
# Timeout and circuit breaker
# ------------------------------------------------------------------------------------------------------------


class CircuitBreaker:
    """Closed → (failure) → open for a back-off → one trial call → closed on success, longer back-off on
    failure. Thread-safe; the back-off comes from the policy unless a call gives its own."""

    def __init__(
        self,
        policy: RedisCallPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.policy = policy or RedisCallPolicy()
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0  # 0 = closed
        self._backoff_s: float | None = None
        self._trial = False
        self.last_error: str | None = None
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self._open_until != 0.0

    def allow(self) -> bool:
        if self._open_until == 0.0:
            return True
        with self._lock:
            if self._open_until == 0.0:
                return True
            if self._clock() >= self._open_until and not self._trial:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        if self._open_until != 0.0 or self._backoff_s is not None:
            with self._lock:
                if self._open_until != 0.0:
                    logger.warning("%s back after %d failed calls", self.name, self.failures)
                self._open_until = 0.0
                self._backoff_s = None
                self._trial = False
                self.failures = 0

    def failure(self, error: str, backoff_s: float | None = None, max_backoff_s: float | None = None) -> None:
        backoff_s = self.policy.breaker_backoff_ms / 1000.0 if backoff_s is None else backoff_s
        max_backoff_s = (
            self.policy.breaker_max_backoff_ms / 1000.0 if max_backoff_s is None else max_backoff_s
        )
        with self._lock:
            self.last_error = error
            self.failures += 1
            if self._open_until != 0.0 and not self._trial:
                # a call let in before the breaker opened: the back-off already counts this outage
                return
            if self._open_until == 0.0:
                logger.error("%s unavailable (%s); outage policy applies", self.name, error)
            b = backoff_s if self._backoff_s is None else min(self._backoff_s * 2, max_backoff_s)
            self._backoff_s = b
            # Jitter so that many processes do not all retry at the same instant.
            self._open_until = self._clock() + b * random.uniform(0.8, 1.0)
            self._trial = False


def describe_error(e: BaseException) -> str:
    """A short, stable reason for a failed call (for breaker state, logs and degraded answers)."""
    if isinstance(e, RedisUnavailable):
        return e.reason
    if isinstance(e, redis.exceptions.TimeoutError | TimeoutError):
        return "redis timeout"
    if isinstance(e, redis.exceptions.ConnectionError | ConnectionError | OSError):
        return "redis unreachable"
    if isinstance(e, redis.exceptions.ClusterDownError | redis.exceptions.SlotNotCoveredError):
        return "redis cluster down"
    return f"redis error: {type(e).__name__}"


_EXPECTED = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ClusterError,
    OSError,
    TimeoutError,
)


class CallGuard:
    """Runs Redis calls under the policy: the breaker first, one timeout, and every failure turned into
    :class:`RedisUnavailable` (so a store failure never escapes into a request).

    On a Redis Cluster (``node_of`` given) a call that names its key is judged by a breaker of the master
    that serves the key's slot: a failed master stops calls to its own slots only, and the members on the
    other masters are served as usual (a worker-wide breaker would answer every member by the outage policy
    while one shard is down, and flap as calls to healthy shards closed it). Calls without a key, and every
    call on one Redis, share :attr:`breaker`."""

    def __init__(
        self,
        policy: RedisCallPolicy,
        *,
        name: str = "redis",
        clock: Callable[[], float] = time.monotonic,
        node_of: Callable[[str], str | None] | None = None,
    ):
        self.policy = policy
        self.breaker = CircuitBreaker(policy, clock, name)
        self.node_breakers: dict[str, CircuitBreaker] = {}
        self._node_of = node_of
        self._clock = clock
        self._lock = threading.Lock()

    def breaker_for(self, key: str | None) -> CircuitBreaker:
        """The breaker of a call on ``key``: its slot's master's on a cluster, else :attr:`breaker`."""
        if key is None or self._node_of is None:
            return self.breaker
        node = self._node_of(key)
        if node is None:  # the topology is not known yet
            return self.breaker
        b = self.node_breakers.get(node)
        if b is None:
            with self._lock:
                b = self.node_breakers.get(node)
                if b is None:
                    b = self.node_breakers[node] = CircuitBreaker(
                        self.policy, self._clock, f"{self.breaker.name} {node}"
                    )
        return b

    @property
    def open_breakers(self) -> list[str]:
        """The names of the breakers open now (the worker-wide one and any node's)."""
        return [b.name for b in (self.breaker, *self.node_breakers.values()) if b.is_open]

    def admit(self, key: str | None = None) -> CircuitBreaker:
        """The call's breaker, if it lets the call through; else :class:`RedisUnavailable`."""
        b = self.breaker_for(key)
        if not b.allow():
            raise RedisUnavailable(b.last_error or "redis unavailable")
        return b

    def failed(
        self,
        e: BaseException,
        backoff_s: float | None = None,
        max_backoff_s: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> RedisUnavailable:
        """Count a failed call against its breaker; the error to raise in its place."""
        b = breaker or self.breaker
        if not isinstance(e, _EXPECTED):
            logger.exception("unexpected %s error", b.name, exc_info=e)
        reason = describe_error(e)
        b.failure(reason, backoff_s, max_backoff_s)
        return RedisUnavailable(reason)

    def call(self, fn: Callable[[], T], *, key: str | None = None) -> T:
        """A blocking call (bounded by the clients' socket timeouts); ``key``: the key it touches (all its
        keys share one slot), which picks the breaker on a cluster."""
        b = self.admit(key)
        try:
            result = fn()
        except Exception as e:
            raise self.failed(e, breaker=b) from e
        b.success()
        return result

    async def acall(
        self, fn: Callable[[], Awaitable[T]], *, timeout_s: float | None = None, key: str | None = None
    ) -> T:
        """An awaited call, bounded as a whole (connect and handshake included) by the policy's timeout."""
        b = self.admit(key)
        try:
            async with asyncio.timeout(self.policy.timeout_s if timeout_s is None else timeout_s):
                result = await fn()
        except Exception as e:
            raise self.failed(e, breaker=b) from e
        b.success()
        return result


# ------------------------------------------------------------------------------------------------------------
# One process's clients
# ------------------------------------------------------------------------------------------------------------


class RedisClients:
    """A process's clients of one Redis deployment, shared by every store: one blocking client, one asyncio
    client per event loop (asyncio clients belong to the loop that made them), a long-timeout client for
    bulk loads, and one :class:`CallGuard` (so both stores see the same outage at once).

    ``check=True`` runs :func:`check_startup` first (fail fast, naming the setting).
    """

    def __init__(self, config: RedisConfig, *, check: bool = False, name: str = "redis") -> None:
        if check:
            check_startup(config)
        else:
            config.validate()
        self.config = config
        self.policy = config.policy
        self.guard = CallGuard(
            config.policy, name=name, node_of=self.node_of if config.resolved_mode == "cluster" else None
        )
        self._lock = threading.Lock()
        self._sync: SyncRedis | None = None
        self._bulk: SyncRedis | None = None
        self._probe: SyncRedis | None = None
        self._aio: dict[asyncio.AbstractEventLoop, AsyncRedis] = {}

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> RedisClients:
        """Clients for ``url`` with default settings (tests, scripts)."""
        return cls(RedisConfig(url), **kwargs)  # type: ignore[arg-type]

    @property
    def mode(self) -> Literal["standalone", "cluster", "sentinel"]:
        return self.config.resolved_mode

    @property
    def is_cluster(self) -> bool:
        return self.mode == "cluster"

    @property
    def sync(self) -> SyncRedis:
        """The blocking client (online timeout)."""
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = build_sync_client(self.config)
        return self._sync

    @property
    def bulk(self) -> SyncRedis:
        """A blocking client with the bulk timeout, on connections of its own (publishing, scans)."""
        if self._bulk is None:
            with self._lock:
                if self._bulk is None:
                    self._bulk = build_sync_client(
                        self.config, timeout_s=self.policy.bulk_timeout_ms / 1000.0
                    )
        return self._bulk

    @property
    def aio(self) -> AsyncRedis:
        """The running event loop's asyncio client (built on first use in each loop)."""
        loop = asyncio.get_running_loop()
        client = self._aio.get(loop)
        if client is None:
            for old in [lp for lp in self._aio if lp.is_closed()]:
                del self._aio[old]  # its loop is gone, and its sockets with it
            client = self._aio[loop] = build_async_client(self.config)
        return client

    async def aconnect(self) -> AsyncRedis:
        """The running loop's asyncio client, ready: a cluster client reads the topology here, within the
        start-up timeout, rather than in the first online call's budget. Raises :class:`RedisUnavailable`."""
        client = self.aio
        try:
            async with asyncio.timeout(max(self.policy.timeout_ms, STARTUP_TIMEOUT_MS) / 1000):
                if isinstance(client, redis.asyncio.cluster.RedisCluster):
                    await client.initialize()
                else:
                    await client.ping()
        except Exception as e:
            raise RedisUnavailable(describe_error(e)) from e
        return client

    def node_of(self, key: str) -> str | None:
        """``host:port`` of the master serving ``key``'s slot as this process's cluster client knows it now
        (the running loop's client, else the blocking one); None on one Redis or before the topology is
        read."""
        try:
            client: SyncRedis | AsyncRedis | None = self._aio.get(asyncio.get_running_loop())
        except RuntimeError:  # no running loop
            client = None
        client = client or self._sync
        if not isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster):
            return None
        try:
            return str(client.nodes_manager.get_node_from_slot(client.keyslot(key)).name)
        except (redis.exceptions.RedisError, LookupError, AttributeError):
            return None

    def lock(self, name: str, timeout_s: float) -> redis.lock.Lock:
        """A redis-py ``Lock`` (token-checked release) on the blocking client."""
        return self.sync.lock(name, timeout=timeout_s, blocking=False)

    def ping(self) -> bool:
        """Whether the deployment answers (readiness probes): on a client of its own with a 1 s timeout, so a
        probe on a loaded host does not fail at the online timeout."""
        if self._probe is None:
            with self._lock:
                if self._probe is None:
                    patient = max(self.policy.timeout_ms, STARTUP_TIMEOUT_MS)
                    self._probe = build_sync_client(
                        self.config.with_policy(timeout_ms=patient, connect_timeout_ms=patient)
                    )
        try:
            return bool(self._probe.ping())
        except redis.exceptions.RedisError:
            return False

    def close(self) -> None:
        for client in (self._sync, self._bulk, self._probe):
            if client is not None:
                client.close()
        self._sync = self._bulk = self._probe = None

    async def aclose(self) -> None:
        """Close the running loop's asyncio client."""
        client = self._aio.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def iter_nodes(self) -> Iterator[redis.Redis]:
        """A blocking client per primary (a cluster's masters, or the one Redis), for per-node scans."""
        client = self.sync
        if isinstance(client, redis.cluster.RedisCluster):
            for node in client.get_primaries():
                conn = client.get_redis_connection(node)
                if conn is not None:
                    yield conn
        else:
            yield client
