"""The MLflow registry against real stores: a SQLite file, and a real ``mlflow server`` on PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import mlflow
from mlflow import MlflowClient
from recsys.models.bundle import ModelBundle
from recsys.registry import (
    RegistryError,
    TrackingUnavailableError,
    list_versions,
    load_bundle,
    promote,
    publish,
    versions_table,
)

FAST = {"model": {"factors": 8, "iterations": 3}, "recall_queries": 50}
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_HINT = (
    "PostgreSQL is not reachable at 127.0.0.1:5432; start it with "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
)


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return Path(request.getfixturevalue("small_world"))
    except pytest.FixtureLookupError:
        from recsys.data.generator import generate_world

        return generate_world(tmp_path_factory.mktemp("reg-world") / "world", 800, 11, progress=False)


@pytest.fixture(scope="module")
def bundle(world: Path) -> ModelBundle:
    return ModelBundle.train(world, "als", FAST, seed=3)


def _members(world: Path, n: int = 5) -> list[str]:
    ids = pd.read_parquet(world / "members.parquet", columns=["member_id"])["member_id"].tolist()
    return [*ids[:n], "NOT-A-MEMBER"]  # an unknown member gets the cold-start ranking


def _publish(
    uri: str, bundle: ModelBundle, ndcg: float, name: str = "offers", ev: float | None = None, **kw: object
) -> str:
    result = publish(
        uri,
        bundle,
        model_name=name,
        model_metrics={"ndcg_at_10": ndcg, "ev_per_request": 100 * ndcg if ev is None else ev},
        tags={"kind": bundle.kind, "data_fingerprint": "fp"},
        input_member_ids=["M0000001"],
        **kw,  # type: ignore[arg-type]
    )
    assert result.version is not None
    return result.version.version


def test_pyfunc_by_alias_ranks_like_the_bundle_in_process(
    tracking_uri: str, bundle: ModelBundle, world: Path
) -> None:
    version = _publish(tracking_uri, bundle, 0.3)
    assert promote(tracking_uri, "offers").promoted
    members = _members(world)
    expected = bundle.recommend(members, k=10).reset_index(drop=True)

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/offers@champion")
    got = model.predict(pd.DataFrame({"member_id": members}))
    pd.testing.assert_frame_equal(
        got[["member_id", "offer_id", "rank"]], expected[["member_id", "offer_id", "rank"]], check_dtype=False
    )
    assert got["score"].to_numpy() == pytest.approx(expected["score"].to_numpy(), rel=1e-6)
    top3 = model.predict(pd.DataFrame({"member_id": members[:2], "k": [3, 3]}))
    assert top3.groupby("member_id").size().tolist() == [3, 3]
    assert len(model.predict(pd.DataFrame({"member_id": members[:1]}), params={"k": 4})) == 4

    loaded, info = load_bundle(tracking_uri, "offers", "champion")
    assert (info.name, info.version, info.alias) == ("offers", version, "champion")
    assert info.metrics["ndcg_at_10"] == pytest.approx(0.3)
    assert info.run_id
    pd.testing.assert_frame_equal(loaded.recommend(members, k=10), bundle.recommend(members, k=10))


def test_promote_refuses_a_worse_challenger_unless_forced(tracking_uri: str, bundle: ModelBundle) -> None:
    v1 = _publish(tracking_uri, bundle, 0.30, ev=30.0)
    first = promote(tracking_uri, "offers")
    assert first.promoted and first.previous is None and "no champion" in first.reason

    # the gate is expected value per request: a better NDCG does not promote a version that earns less
    v2 = _publish(tracking_uri, bundle, 0.40, ev=20.0)
    refused = promote(tracking_uri, "offers")
    assert (
        not refused.promoted and "ev_per_request=20" in refused.reason and "does not beat" in refused.reason
    )
    assert refused.candidate.version == v2
    assert {v.version: v.aliases for v in list_versions(tracking_uri, "offers")}[v1] == ("champion",)

    forced = promote(tracking_uri, "offers", force=True)
    assert forced.promoted and forced.candidate.version == v2
    aliases = {v.version: set(v.aliases) for v in list_versions(tracking_uri, "offers")}
    assert aliases == {v1: set(), v2: {"champion", "challenger"}}

    v3 = _publish(tracking_uri, bundle, 0.25, ev=25.0)
    assert promote(tracking_uri, "offers", version=v3).promoted  # 25 beats 20
    assert not promote(tracking_uri, "offers", version=v3).promoted  # already champion

    table = versions_table(list_versions(tracking_uri, "offers"))
    assert table["version"].tolist() == [v3, v2, v1]
    assert table["aliases"].tolist() == ["challenger,champion", "", ""]
    assert table["ndcg_at_10"].tolist() == pytest.approx([0.25, 0.40, 0.30])
    assert table["ev_per_request"].tolist() == pytest.approx([25.0, 20.0, 30.0])


def test_promote_without_versions_is_a_clear_error(tracking_uri: str) -> None:
    with pytest.raises(RegistryError, match="no registered model named 'nothing'"):
        list_versions(tracking_uri, "nothing")
    with pytest.raises(RegistryError, match="no 'challenger' version"):
        promote(tracking_uri, "nothing")
    with pytest.raises(RegistryError, match="does not exist"):
        load_bundle(tracking_uri, "nothing", "champion")


def test_failure_after_the_version_was_created_leaves_no_version(
    tracking_uri: str, bundle: ModelBundle
) -> None:
    # MLflow refuses the alias "latest" (reserved) -- only after the version exists: publish must undo it.
    with pytest.raises(RegistryError):
        publish(tracking_uri, bundle, model_name="offers", model_metrics={"ndcg_at_10": 0.1}, alias="latest")
    client = MlflowClient(tracking_uri)
    assert client.search_model_versions("name = 'offers'") == []
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_tracking_server_is_a_clear_error(bundle: ModelBundle) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="unreachable"):
        publish(uri, bundle, model_name="offers")
    with pytest.raises(TrackingUnavailableError):
        promote(uri, "offers")
    assert time.monotonic() - started < 30


@contextlib.contextmanager
def _fresh_database() -> Iterator[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        pytest.fail(f"{PG_HINT} ({exc})")
    name = f"mlflow_test_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextlib.contextmanager
def _mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    port = _free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_real_tracking_server_on_postgresql(tmp_path: Path, world: Path) -> None:
    from training.pipeline import train_pipeline

    with (
        _fresh_database() as backend,
        _mlflow_server(backend, tmp_path / "artifacts", tmp_path / "server.log") as url,
    ):
        result = train_pipeline(
            world, "popularity", tracking_uri=url, model_name="offers-pg", refit=False,
            configs={"popularity": {"recall_queries": 50}},
        )  # fmt: skip
        assert result.published is not None and result.published.version is not None
        assert promote(url, "offers-pg").promoted
        loaded, info = load_bundle(url, "offers-pg", "champion")
        assert (info.version, info.alias) == (result.published.version.version, "champion")
        members = _members(world)
        pd.testing.assert_frame_equal(loaded.recommend(members, k=5), result.bundle.recommend(members, k=5))
        mlflow.set_tracking_uri(url)
        got = mlflow.pyfunc.load_model("models:/offers-pg@champion").predict(
            pd.DataFrame({"member_id": members})
        )
        assert got["offer_id"].tolist() == result.bundle.recommend(members, k=10)["offer_id"].tolist()
        assert any((tmp_path / "artifacts").rglob("bundle.json"))  # artefacts went to the server's store
