"""The training pipeline end to end on a small generated world, against a real (SQLite) MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlflow
from mlflow import MlflowClient
from recsys.data.layout import DatasetWriter, read_table
from recsys.evaluation import EvaluationError
from recsys.registry import list_versions
from recsys.schema import Col
from training.pipeline import PipelineError, check_dataset, evaluate_models, flatten_params, train_pipeline

# The comparison table of an ALS run: the baseline, the model, the oracle, then the reference rows.
TABLE_ROWS = [
    "popularity",
    "als",
    "oracle",
    "popularity_global",
    "popularity_model_groups",
    "oracle_all_offers",
    "oracle_on_popularity",
]


def test_evaluation_compares_models_with_baseline_and_oracle(train_world: Path, fast_configs: dict) -> None:
    report = evaluate_models(train_world, "als", configs=fast_configs)
    table = report.table.set_index("model")
    assert list(table.index) == TABLE_ROWS
    for col in ("ndcg_at_10", "precision_at_5", "recall_at_10", "map_at_10", "coverage_at_10"):
        assert table[col].between(0, 1).all(), col
    # the oracle knows the truth and the offers shown: nobody beats it on average
    assert table.loc["oracle", "ndcg_at_10"] >= table.drop(index="oracle")["ndcg_at_10"].max()
    assert table.loc["popularity", "vs_baseline"] == pytest.approx(1.0)
    assert table.loc["als", "frac_of_oracle"] == pytest.approx(
        table.loc["als", "ndcg_at_10"] / table.loc["oracle", "ndcg_at_10"]
    )
    slices = report.evaluation("als").slices.set_index("slice")
    assert {"all", "warm"} <= set(slices.index)
    assert any(s.startswith("family:") for s in slices.index)
    # models never see the test period: every bundle was trained before the cut-off
    assert report.bundles["als"].params["before"] == report.split.cutoff.isoformat()


def test_preference_oracle_weighs_the_prior_by_each_members_true_lift(train_world: Path) -> None:
    from recsys.data.truth import true_acceptance
    from recsys.evaluation import PreferenceOracle

    offers = read_table(train_world, "offers")[Col.OFFER_ID].astype(str).to_numpy(object)
    members = read_table(train_world, "members")[Col.MEMBER_ID].astype(str).to_numpy(object)[:40]
    p = np.asarray(true_acceptance(train_world, list(members), list(offers)))
    lift = p / p.mean(axis=0, keepdims=True)

    # a flat prior: the ranking is each member's true lift
    flat = PreferenceOracle(train_world, offers, lambda m: np.ones((len(m), len(offers)))).recommend(
        members, 5
    )
    first = flat[flat["rank"] == 1].set_index(Col.MEMBER_ID)[Col.OFFER_ID]
    assert [first[m] for m in members] == [offers[int(np.argmax(lift[i]))] for i in range(len(members))]

    # a prior 1e6 times larger for one offer puts it first for everyone, whatever their preferences
    boost = np.ones(len(offers))
    boost[3] = 1e6
    top = PreferenceOracle(train_world, offers, lambda m: np.tile(boost, (len(m), 1))).recommend(members, 5)
    assert set(top.loc[top["rank"] == 1, Col.OFFER_ID]) == {offers[3]}
    # the scores reported are the true probabilities of the ranked offers
    row = top[(top[Col.MEMBER_ID] == members[0]) & (top["rank"] == 1)]
    assert row["score"].iloc[0] == pytest.approx(p[0, 3])

    with pytest.raises(EvaluationError, match="prior has shape"):
        PreferenceOracle(train_world, offers, lambda m: np.ones((len(m), 2))).recommend(members, 5)


def test_train_logs_everything_and_registers_a_challenger(
    train_world: Path, tracking_uri: str, fast_configs: dict
) -> None:
    result = train_pipeline(
        train_world, "als", tracking_uri=tracking_uri, model_name="offers-test", configs=fast_configs
    )
    assert result.kind == "als"
    assert result.published is not None and result.published.version is not None
    version = result.published.version
    assert version.alias == "challenger" and version.aliases == ("challenger",)
    assert version.metrics["ndcg_at_10"] == pytest.approx(result.report.evaluation("als").primary)
    assert version.tags["data_fingerprint"] == result.fingerprint

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.published.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.fingerprint"] == result.fingerprint
    assert run.data.params["model.kind"] == "als"
    assert run.data.params["als.model.factors"] == "8"
    assert "popularity.ndcg_at_10" in run.data.metrics and "oracle.ndcg_at_10" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/comparison.md", "evaluation/comparison.csv", "evaluation/slices.csv"} <= artifacts
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path="evaluation/comparison.csv",
                                                            tracking_uri=tracking_uri))  # fmt: skip
    assert list(table["model"]) == TABLE_ROWS
    assert [v.version for v in list_versions(tracking_uri, "offers-test")] == [version.version]


def test_popularity_over_the_model_groups_is_the_baseline_with_the_learned_models_groups(
    train_world: Path, fast_configs: dict
) -> None:
    """The reference row trains the baseline over the learned model's groups: given the baseline's own groups
    it is the baseline again; given others it is another ranking."""
    same = {**fast_configs, "als": {**fast_configs.get("als", {}), "groups": ["segment"]}}
    table = evaluate_models(train_world, "als", configs=same, with_oracle=False).table.set_index("model")
    assert table.loc["popularity_model_groups", "ndcg_at_10"] == pytest.approx(
        table.loc["popularity", "ndcg_at_10"]
    )
    other = {**fast_configs, "als": {**fast_configs.get("als", {}), "groups": ["tier", "miles_band"]}}
    table = evaluate_models(train_world, "als", configs=other, with_oracle=False).table.set_index("model")
    assert table.loc["popularity_model_groups", "ndcg_at_10"] != pytest.approx(
        table.loc["popularity", "ndcg_at_10"]
    )


def test_single_model_is_registered_even_if_popularity_wins(
    train_world: Path, tracking_uri: str, fast_configs: dict
) -> None:
    result = train_pipeline(
        train_world, "bpr", tracking_uri=tracking_uri, model_name="m", configs=fast_configs, refit=False
    )
    assert result.kind == "bpr" and result.bundle is result.report.bundles["bpr"]


def test_no_register_logs_a_run_without_a_version(
    train_world: Path, tracking_uri: str, fast_configs: dict
) -> None:
    result = train_pipeline(
        train_world, "popularity", tracking_uri=tracking_uri, model_name="m", register=False, refit=False,
        configs=fast_configs,
    )  # fmt: skip
    assert result.published is not None and result.published.version is None
    assert MlflowClient(tracking_uri).search_registered_models() == []


def _copy_world(src: Path, dest: Path, **replace: pd.DataFrame) -> Path:
    with DatasetWriter(dest) as w:
        for name in ("members", "offers"):
            w.write_table(name, replace.get(name, read_table(src, name)))
        for name in ("interactions", "ancillaries", "redemptions", "flights"):
            frame = replace.get(name)
            if frame is None:
                frame = read_table(src, name)
            if len(frame):
                w.write_table(name, frame)
        return w.commit({"as_of": "2026-06-30"})


def test_bad_datasets_are_refused_with_clear_errors(train_world: Path, tmp_path: Path) -> None:
    members = read_table(train_world, "members")
    offers = read_table(train_world, "offers")
    with pytest.raises(PipelineError, match="no such dataset"):
        check_dataset(tmp_path / "missing")
    with pytest.raises(PipelineError, match="no members"):
        check_dataset(_copy_world(train_world, tmp_path / "empty", members=members.iloc[0:0]))
    with pytest.raises(PipelineError, match="single member"):
        check_dataset(_copy_world(train_world, tmp_path / "one", members=members.iloc[:1]))
    nan_offers = offers.assign(margin=np.where(np.arange(len(offers)) == 3, np.nan, offers["margin"]))
    with pytest.raises(PipelineError, match=r"offers\.margin has 1 NaN"):
        check_dataset(_copy_world(train_world, tmp_path / "nan", offers=nan_offers))


def test_offers_without_interactions_cannot_be_evaluated(
    train_world: Path, tmp_path: Path, fast_configs: dict
) -> None:
    empty = read_table(train_world, "interactions").iloc[0:0]
    world = _copy_world(
        train_world,
        tmp_path / "quiet",
        interactions=empty,
        ancillaries=empty,
        redemptions=empty,
        flights=empty,
    )
    with pytest.raises(Exception, match="no events"):
        evaluate_models(world, "popularity", configs=fast_configs)


def test_flatten_params() -> None:
    assert flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}
