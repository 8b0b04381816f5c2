"""``recsys members publish`` (and ``models promote --publish-members``) against the real Redis and a real
registry: the published version becomes active, members carry the served model's embeddings, a second publish
switches atomically and lets the old version expire, and bad input changes nothing."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from recsys.stores.member_store import RedisMemberStore
from recsys.stores.redis import RedisClients
from training.cli import app
from training.commands.members import member_version

REDIS_URL = "redis://127.0.0.1:6379/14"
MODEL = "members-cli-offers"

runner = CliRunner()


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory,
    _migrated_store: Path,
    train_world: Path,
    fast_configs: dict[str, Any],
) -> Iterator[dict[str, str]]:
    """A registry whose ``champion`` is a small ALS model (learned member vectors) on ``train_world``."""
    root = tmp_path_factory.mktemp("members-registry")
    shutil.copy(_migrated_store, root / "mlflow.db")
    config = root / "models.json"
    config.write_text(json.dumps(fast_configs))
    env = {"RECSYS_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "RECSYS_MODEL_NAME": MODEL}
    result = runner.invoke(
        app,
        ["models", "ensure-champion", "--data", str(train_world), "--model", "als", "--config", str(config),
         "--no-progress"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Training set MLflow's process-wide URIs to this store; a real `recsys members publish` runs in a fresh
    # process without them, so point them elsewhere: the command must find the model through --tracking-uri.
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    elsewhere = f"sqlite:///{root / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)
    mlflow.set_registry_uri(elsewhere)
    yield env
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    # REDIS_URL / RECSYS_REDIS_URL of the machine must not leak into the tests' "no URL" cases
    result = runner.invoke(app, args, env={"REDIS_URL": "", "RECSYS_REDIS_URL": "", **env})
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _publish(train_world: Path, prefix: str, *extra: str) -> list[str]:
    return ["members", "publish", "--data", str(train_world), "--redis-url", REDIS_URL, "--prefix", prefix,
            "--no-progress", *extra]  # fmt: skip


def _active_line(out: str) -> str:
    match = re.search(r"^active version:\s+(\S+)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def test_member_version_names_the_model_and_utc_time() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 22, 14, 30, tzinfo=UTC)
    assert member_version("loyalty-offers", "3", now) == "loyalty-offers.v3.20261122T143000Z"
    long = member_version("a model/with odd:chars" * 5, "12", now)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", long) and long.endswith(".v12.20261122T143000Z")


def test_publish_makes_the_models_members_active_then_switches_atomically(
    registry: dict[str, str], train_world: Path, redis_client: redis.Redis, prefix: str
) -> None:
    from recsys.registry import load_bundle

    code, out = _run(_publish(train_world, prefix), registry)
    assert code == 0, out
    first = _active_line(out)
    assert re.fullmatch(rf"{MODEL}\.v1\.\d{{8}}T\d{{6}}Z", first), first
    assert "previous version:  (none)" in out
    store = RedisMemberStore(RedisClients.from_url(REDIS_URL), prefix=prefix)
    assert store.active_version() == first

    bundle, info = load_bundle(registry["RECSYS_MLFLOW_TRACKING_URI"], MODEL, "champion")
    assert info.version == "1"
    members = [m for m in redis_client.scan_iter(match=f"{prefix}:{{M*}}:{first}", count=1000)]
    known = next(
        mid for mid in sorted(k.decode().split("{")[1].split("}")[0] for k in members) if bundle.is_known(mid)
    )
    n_members = int(re.search(r"members published: (\d+)", out).group(1))  # type: ignore[union-attr]
    n_emb = int(re.search(r"with embeddings:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert n_members == len(members) and 0 < n_emb <= n_members

    rec = store.get(known)
    assert rec is not None and rec.version == first
    assert rec.profile["member_id"] == known
    expected = bundle.member_embedding(known)
    assert expected is not None and rec.embedding is not None
    # stored as float16 (bench/bench_embedding_precision.py measures what that changes in the ranking)
    np.testing.assert_array_equal(rec.embedding, np.asarray(expected, dtype=np.float16).astype(np.float32))
    assert redis_client.ttl(store.member_key(first, known)) > 30 * 86_400  # the active version: version_ttl

    # a second publish (the version names the second): the pointer moves, the old version gets a TTL
    import time

    time.sleep(max(0.0, 1.05 - (time.time() % 1)))  # never the same UTC second as the first
    code, out = _run(_publish(train_world, prefix, "--batch-size", "97"), registry)
    assert code == 0, out
    second = _active_line(out)
    assert second != first and f"previous version:  {first}" in out
    assert store.active_version() == second
    rec2 = store.get(known)
    assert rec2 is not None and rec2.version == second
    np.testing.assert_array_equal(rec2.embedding, rec.embedding)
    assert 0 < redis_client.ttl(store.member_key(first, known)) <= store.old_version_ttl
    assert redis_client.ttl(store.member_key(second, known)) > 30 * 86_400


def test_unknown_alias_is_an_error_and_the_active_version_stays(
    registry: dict[str, str], train_world: Path, redis_client: redis.Redis, prefix: str
) -> None:
    code, out = _run(_publish(train_world, prefix), registry)
    assert code == 0, out
    active = _active_line(out)

    code, out = _run(_publish(train_world, prefix, "--alias", "nope"), registry)
    assert code == 1 and f"error: {MODEL}@nope does not exist" in out, out
    code, out = _run(_publish(train_world, prefix, "--model-name", "no-such-model"), registry)
    assert code == 1 and "no-such-model@champion does not exist" in out, out
    code, out = _run(
        ["members", "publish", "--data", str(train_world / "missing"), "--redis-url", REDIS_URL,
         "--prefix", prefix],
        registry,
    )  # fmt: skip
    assert code == 1 and "no such dataset directory" in out, out
    assert RedisMemberStore(RedisClients.from_url(REDIS_URL), prefix=prefix).active_version() == active
    # nothing half-published: one version's metadata
    assert len(list(redis_client.scan_iter(match=f"{prefix}:{{{prefix}}}:meta:*"))) == 1


def test_no_redis_url_names_the_option(registry: dict[str, str], train_world: Path) -> None:
    code, out = _run(["members", "publish", "--data", str(train_world)], registry)
    assert code == 2 and "--redis-url" in out and "RECSYS_REDIS_URL" in out, out
    code, out = _run(["members", "publish", "--data", str(train_world), "--redis-url", "memory://"], registry)
    assert code == 2 and "not a Redis URL" in out, out


def test_unreachable_redis_is_an_error(registry: dict[str, str], train_world: Path) -> None:
    code, out = _run(
        ["members", "publish", "--data", str(train_world), "--redis-url", "redis://127.0.0.1:9/0"], registry
    )
    assert code == 1 and "Redis at redis://127.0.0.1:9/0 is unreachable" in out and "redis-server" in out, out


def test_promote_with_publish_members_checks_redis_first(registry: dict[str, str], train_world: Path) -> None:
    code, out = _run(
        ["models", "promote", "--publish-members", "--data", str(train_world), "--redis-url",
         "redis://127.0.0.1:9/0"],
        registry,
    )  # fmt: skip
    assert code == 1 and "unreachable" in out and "promoted" not in out, out
    code, out = _run(["models", "promote", "--redis-url", REDIS_URL], registry)
    assert code == 2 and "only apply with --publish-members" in out, out


def test_promote_with_publish_members_publishes_the_new_champion(
    tracking_uri: str,
    fast_configs: dict[str, Any],
    train_world: Path,
    tmp_path: Path,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    config = tmp_path / "models.json"
    config.write_text(json.dumps(fast_configs))
    env = {"RECSYS_MLFLOW_TRACKING_URI": tracking_uri, "RECSYS_MODEL_NAME": MODEL}
    common = ["--data", str(train_world), "--config", str(config), "--no-progress"]
    code, out = _run(["models", "ensure-champion", "--model", "popularity", *common], env)
    assert code == 0, out
    code, out = _run(["train", "--model", "als", *common], env)  # version 2, the challenger
    assert code == 0, out

    code, out = _run(
        ["models", "promote", "--force", "--publish-members", "--data", str(train_world),
         "--redis-url", REDIS_URL, "--prefix", prefix, "--no-progress"],
        env,
    )  # fmt: skip
    assert code == 0, out
    assert f"promoted {MODEL} version 2 to champion" in out
    active = _active_line(out)
    assert active.startswith(f"{MODEL}.v2.")
    assert RedisMemberStore(RedisClients.from_url(REDIS_URL), prefix=prefix).active_version() == active
