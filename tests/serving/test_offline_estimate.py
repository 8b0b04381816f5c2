"""The offline estimate beside the measured lift, read from a real MLflow store's training runs."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from recsys.experiments import Experiment, ModelRef, Objective, Variant
from recsys.experiments.stats import Z95
from serving.offline import RegistryOfflineEstimator

NAME = "offline-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two versions: 1 = popularity (a run without a policy table), 2 = als (its run replayed both)."""
    tmp_path = tmp_path_factory.mktemp("offline")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model(NAME)
    runs = []
    for metrics in (
        {},
        {
            "popularity.snips_purchases_per_request": 0.020,
            "popularity.snips_purchases_per_request_se": 0.001,
            "als.snips_purchases_per_request": 0.025,
            "als.snips_purchases_per_request_se": 0.0012,
            "als_acceptance.snips_purchases_per_request": 0.018,
            "policy_table.requests": 69_287,
        },
    ):
        run = client.create_run(exp_id)
        for k, v in metrics.items():
            client.log_metric(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id)
        runs.append(run.info.run_id)
    for run_id, kind in zip(runs, ("popularity", "als"), strict=True):
        client.create_model_version(NAME, f"runs:/{run_id}/model", run_id=run_id, tags={"kind": kind})
    client.set_registered_model_alias(NAME, "champion", "2")
    return uri


def experiment(control: Variant, treatment: Variant) -> Experiment:
    return Experiment(key="x", placements=("booking",), variants=(control, treatment))


def test_estimate_from_the_treatments_training_run(store: str) -> None:
    pop = Variant("pop", 0.5, ModelRef(NAME, version="1"))
    champ = Variant("champ", 0.5, ModelRef(NAME, alias="champion", pinned="2"))
    got = RegistryOfflineEstimator(store).estimate(experiment(pop, champ), pop, champ)
    assert got is not None
    assert (got.estimator, got.metric) == ("snips", "purchases_per_request")
    assert (got.control, got.treatment) == (0.020, 0.025)
    assert got.absolute_lift == pytest.approx(0.005)
    half = Z95 * math.sqrt(0.001**2 + 0.0012**2)
    assert got.absolute_ci == pytest.approx((0.005 - half, 0.005 + half))
    assert got.relative_lift == pytest.approx(0.25)
    assert got.relative_ci is not None and got.relative_ci[0] < 0.25 < got.relative_ci[1]
    assert got.n_requests == 69_287  # the replayed requests the run logged


def test_no_estimate_when_the_replay_cannot_tell(store: str) -> None:
    est = RegistryOfflineEstimator(store)
    pop = Variant("pop", 0.5, ModelRef(NAME, version="1"))
    pop2 = Variant("pop2", 0.5, ModelRef(NAME, version="1"), objective=Objective.EXPECTED_VALUE)
    assert est.estimate(experiment(pop, pop2), pop, pop2) is None  # one policy row for both
    pop_acc = Variant("acc", 0.5, ModelRef(NAME, version="1"), objective=Objective.ACCEPTANCE)
    assert est.estimate(experiment(pop, pop_acc), pop, pop_acc) is None  # no popularity_acceptance row
    missing = Variant("m", 0.5, ModelRef(NAME, version="9"))
    assert est.estimate(experiment(pop, missing), pop, missing) is None


def test_acceptance_objective_reads_its_own_row(store: str) -> None:
    champ = Variant("champ", 0.5, ModelRef(NAME, version="2"))
    acc = Variant("acc", 0.5, ModelRef(NAME, version="2"), objective=Objective.ACCEPTANCE)
    got = RegistryOfflineEstimator(store).estimate(experiment(champ, acc), champ, acc)
    assert got is not None and (got.control, got.treatment) == (0.025, 0.018)
    assert got.absolute_ci is None  # the acceptance row logged no standard error here
    assert got.relative_lift == pytest.approx(0.018 / 0.025 - 1)
