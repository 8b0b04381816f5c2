"""``recsys members publish``: publish member profiles and a registered model's member embeddings to Redis.

The service reads one member per request from the online member store (``recsys.stores.member_store``).
Training fills it for the model being served: this command loads the bundle of ``<model-name>@<alias>``
from the MLflow registry, builds the profiles from the dataset with the same ``recsys.features`` code the
service uses, and publishes both as a new store version named after the model version and the UTC time
(``loyalty-offers.v3.20261122T143000Z``). The store loads the version beside the active one and switches the
pointer in one atomic step only once everything is in, so a failure anywhere leaves the previous version
active; the previous version then expires by itself.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import typer

from recsys.urls import REDIS_URL_SCHEMES, redact_url
from training.commands.common import cli_errors, resolve_data, settings

if TYPE_CHECKING:  # pragma: no cover
    from recsys.stores.member_store import PublishReport, RedisMemberStore
    from training.config import TrainingSettings

app = typer.Typer(help="The online member store: publish profiles and embeddings.", no_args_is_help=True)

START_REDIS = 'redis-server --daemonize yes --port 6379 --save "" --appendonly no'

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Dataset to build the profiles from (default: RECSYS_DATA_DIR).")
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url", help="Redis of the member store (default: RECSYS_REDIS_URL, else REDIS_URL)."
    ),
]
PrefixOpt = Annotated[str, typer.Option("--prefix", help="Key prefix of the member store.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Members per pipelined load batch.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on the load.")]


@dataclass(frozen=True)
class MemberTarget:
    """Where and how to publish: checked (URL given, Redis answering) before any slow work starts."""

    url: str
    prefix: str
    batch_size: int


def member_version(model_name: str, model_version: str, now: datetime | None = None) -> str:
    """The store version of a publish: ``<model name>.v<model version>.<UTC time>`` within the store's
    ``^[A-Za-z0-9._-]{1,64}$`` (other characters of the name become ``-``; a long name is shortened). The
    service recognises its model's embeddings by the prefix (``model_version_prefix``)."""
    from recsys.stores.member_store import model_version_prefix

    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return model_version_prefix(model_name, model_version, reserve=len(stamp)) + stamp


def resolve_target(
    redis_url: str | None, prefix: str, batch_size: int, cfg: TrainingSettings
) -> MemberTarget:
    """The Redis target from the option or the environment; exit 2 naming the option when there is none."""
    url = redis_url or cfg.redis_url
    if not url:
        typer.echo(
            "error: no Redis to publish to: pass --redis-url redis://HOST:PORT/DB or set RECSYS_REDIS_URL "
            "(or REDIS_URL); an in-process store would vanish with this command",
            err=True,
        )
        raise typer.Exit(2)
    if urlparse(url).scheme not in REDIS_URL_SCHEMES:
        typer.echo(
            f"error: --redis-url {redact_url(url)!r} is not a Redis URL: use redis://HOST:PORT/DB, "
            "rediss://… or unix://PATH",
            err=True,
        )
        raise typer.Exit(2)
    if not prefix.strip() or any(ch in prefix for ch in " \n*?[]"):
        typer.echo(f"error: --prefix {prefix!r} is not a usable key prefix", err=True)
        raise typer.Exit(2)
    return MemberTarget(url, prefix, batch_size)


class _LoadProgress:
    """Feeds the store's per-batch hook into a progress bar on stderr (stdout keeps the report)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._shown = 0

    @contextlib.contextmanager
    def running(self, total: int) -> Iterator[None]:
        if not self.enabled or total <= 0:
            yield
            return
        with typer.progressbar(length=total, label="loading members", file=sys.stderr) as bar:
            self._bar, self._shown = bar, 0
            try:
                yield
            finally:
                self._bar = None

    def update(self, loaded: int) -> None:
        if self._bar is not None and loaded > self._shown:
            self._bar.update(loaded - self._shown)
            self._shown = loaded


def open_store(target: MemberTarget, progress: _LoadProgress | None = None) -> RedisMemberStore:
    """A Redis member store that answers (exit 1 with how to start Redis otherwise)."""
    import redis

    from recsys.stores.member_store import RedisMemberStore
    from recsys.stores.redis import RedisCallPolicy, RedisClients, RedisConfig

    class _Store(RedisMemberStore):
        def _after_batch(self, version: str, loaded: int) -> None:
            if progress is not None:
                progress.update(loaded)

    # a CLI may wait longer than a request
    clients = RedisClients(RedisConfig(target.url, policy=RedisCallPolicy(timeout_ms=5000)))
    store = _Store(clients, prefix=target.prefix, batch_size=target.batch_size)
    try:
        clients.sync.ping()
    except redis.exceptions.RedisError as exc:
        store.clients.close()
        typer.echo(
            f"error: Redis at {redact_url(target.url)} is unreachable ({exc}); nothing was published. "
            f"Start it (e.g. {START_REDIS}) or pass another --redis-url",
            err=True,
        )
        raise typer.Exit(1) from exc
    return store


def publish_members(
    data: Path,
    target: MemberTarget,
    *,
    tracking_uri: str,
    model_name: str,
    alias: str,
    progress: bool = True,
) -> PublishReport:
    """Load ``model_name@alias``, build the profiles of ``data`` and publish both; print the report.

    Every failure is a one-line message and ``typer.Exit`` (1); the store's active version is only switched by
    the last step of a complete load, so on failure the previous version stays active.
    """
    import redis

    from recsys.data.layout import DatasetError
    from recsys.features.profiles import build_member_profiles
    from recsys.ranker.features import with_ranker_history
    from recsys.registry import load_bundle
    from recsys.stores.member_store import MemberStoreError, publish_profiles

    if not Path(data).is_dir():
        typer.echo(f"error: {data}: no such dataset directory; nothing was published", err=True)
        raise typer.Exit(1)
    bar = _LoadProgress(progress)
    store = open_store(target, bar)
    try:
        started = time.perf_counter()
        with cli_errors():
            bundle, info = load_bundle(tracking_uri, model_name, alias)
            typer.echo(f"building member profiles from {data} for {model_name} version {info.version}")
            profiles = with_ranker_history(build_member_profiles(data), data)
        version = member_version(model_name, info.version)
        try:
            with bar.running(len(profiles)):
                report = publish_profiles(store, profiles, bundle, version)
        except (MemberStoreError, redis.exceptions.RedisError) as exc:
            active = store.active_version() if store.ping() else "unknown: Redis is not answering"
            typer.echo(
                f"error: publishing {version} to Redis at {redact_url(target.url)} failed ({exc}); "
                f"active version: {active}",
                err=True,
            )
            raise typer.Exit(1) from exc
        except (DatasetError, ValueError) as exc:  # a profile frame the store refuses (duplicated ids…)
            typer.echo(f"error: {exc}; nothing was published", err=True)
            raise typer.Exit(1) from exc
    finally:
        store.clients.close()
    seconds = time.perf_counter() - started
    typer.echo(f"members published: {report.members}")
    typer.echo(f"with embeddings:   {report.with_embedding}")
    typer.echo(f"seconds:           {seconds:.1f} (load and switch {report.seconds:.1f})")
    typer.echo(f"previous version:  {report.previous_version or '(none)'}")
    typer.echo(f"active version:    {report.version}")
    if report.members and not report.with_embedding:
        typer.echo(
            f"warning: no member of {data} has an embedding in {model_name} version {info.version} "
            "(a model without member vectors, or not the dataset it was trained on)",
            err=True,
        )
    return report


@app.command("publish")
def publish(
    data: DataOpt = None,
    redis_url: RedisUrlOpt = None,
    prefix: PrefixOpt = "members",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name.")] = None,
    alias: Annotated[str, typer.Option("--alias", help="Alias of the version to publish.")] = "champion",
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow URI (default: RECSYS_MLFLOW_TRACKING_URI).")
    ] = None,
    batch_size: BatchOpt = 1000,
    progress: ProgressOpt = True,
) -> None:
    """Publish the dataset's member profiles with the member embeddings of <model-name>@<alias> to Redis as a
    new version, switched atomically once fully loaded (the previous version expires by itself)."""
    cfg = settings()
    target = resolve_target(redis_url, prefix, batch_size, cfg)
    publish_members(
        resolve_data(data, cfg),
        target,
        tracking_uri=tracking_uri or cfg.mlflow_tracking_uri,
        model_name=model_name or cfg.model_name,
        alias=alias,
        progress=progress,
    )


def register(app_: typer.Typer) -> None:
    """Add the ``members`` group to the top-level app."""
    app_.add_typer(app, name="members")
