"""A data scientist's own implicit-feedback data through the CLI: import, train, evaluate, with every setting
printed and every bad input named.

The reference figures are computed here, independently of the code under test: the per-user split, the
train matrix, bare ``implicit`` ALS and NDCG@10 are written out in this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from synthetic import synthetic_interactions, write_csv
from typer.testing import CliRunner

from mlflow import MlflowClient
from training.cli import app

runner = CliRunner()

# What the project's ALS is asked to use, and the reference with it.
FACTORS, ITERATIONS, REGULARIZATION, ALPHA, SEED = 32, 10, 0.05, 2.0, 42
CLICK_WEIGHT = 2.0  # InteractionConfig.events.click: a generic row without event_type is a click
TEST_FRACTION = 0.2


def _cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, args, env=env)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def _import(csv: Path, out: Path) -> str:
    code, output = _cli(["data", "import", str(csv), "--format", "interactions", "--out", str(out)])
    assert code == 0, output
    return output


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).set_index("model")


def _settings(output: str) -> list[str]:
    return [line.removeprefix("settings: ") for line in output.splitlines() if line.startswith("settings: ")]


# ------------------------------------------------------------------------------------------ the reference
def _per_user_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's last 20 % of rows by time (at least one, ties at the first test time included) test."""
    f = frame.assign(t=pd.to_datetime(frame["timestamp"])).sort_values(["user_id", "t"], kind="stable")
    n = f.groupby("user_id")["t"].transform("size").to_numpy()
    pos = f.groupby("user_id").cumcount().to_numpy()
    n_test = np.maximum(1, np.rint(TEST_FRACTION * n)).astype(int)
    first = f.loc[pos == n - n_test].set_index("user_id")["t"]
    cut = f["user_id"].map(first)
    test = (f["t"] >= cut).to_numpy()
    return f.loc[~test], f.loc[test]


def _ndcg_at_10(recs: dict[str, list[str]], relevant: dict[str, set[str]]) -> float:
    scores = []
    for user, rel in relevant.items():
        gains = [1.0 / np.log2(p + 2) for p, item in enumerate(recs.get(user, [])[:10]) if item in rel]
        ideal = sum(1.0 / np.log2(p + 2) for p in range(min(len(rel), 10)))
        scores.append(sum(gains) / ideal)
    return float(np.mean(scores))


def _bare_implicit_ndcg(frame: pd.DataFrame, transform: str) -> float:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    train, test = _per_user_split(frame)
    users = pd.Index(sorted(frame["user_id"].unique()))
    items = pd.Index(sorted(frame["item_id"].unique()))
    cells = train.groupby(["user_id", "item_id"])["weight"].sum() * CLICK_WEIGHT
    values = np.log1p(cells.to_numpy()) if transform == "log1p" else cells.to_numpy()
    matrix = sp.csr_matrix(
        (
            values.astype(np.float32),
            (
                users.get_indexer(cells.index.get_level_values(0)),
                items.get_indexer(cells.index.get_level_values(1)),
            ),
        ),
        shape=(len(users), len(items)),
    )
    model = AlternatingLeastSquares(
        factors=FACTORS,
        regularization=REGULARIZATION,
        alpha=ALPHA,
        iterations=ITERATIONS,
        random_state=SEED,
        calculate_training_loss=False,
    )
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(matrix, show_progress=False)
    seen = set(zip(train["user_id"], train["item_id"], strict=True))
    relevant: dict[str, set[str]] = {}
    for user, item in zip(test["user_id"], test["item_id"], strict=True):
        if (user, item) not in seen:
            relevant.setdefault(user, set()).add(item)
    rows = users.get_indexer(list(relevant))
    ids, _ = model.recommend(rows, matrix[rows], N=10, filter_already_liked_items=True)
    recs = {u: [str(items[i]) for i in row if i >= 0] for u, row in zip(relevant, ids, strict=True)}
    return _ndcg_at_10(recs, relevant)


# ---------------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    frame = synthetic_interactions(n_users=2_000, n_items=1_000, seed=7)
    root = tmp_path_factory.mktemp("synthetic")
    _import(write_csv(frame, root / "interactions.csv"), root / "dataset")
    return frame, root / "dataset"


@pytest.mark.slow
def test_als_matches_bare_implicit_and_beats_popularity_on_a_per_user_split(
    synthetic: tuple[pd.DataFrame, Path], tmp_path: Path
) -> None:
    frame, dataset = synthetic
    config = tmp_path / "models.json"
    als = {"factors": FACTORS, "iterations": ITERATIONS, "regularization": REGULARIZATION, "alpha": ALPHA}
    config.write_text(json.dumps({"als": {"model": als}}))
    out = tmp_path / "table.csv"
    args = ["evaluate", "--data", str(dataset), "--model", "als", "--split", "per-user", "--no-progress"]
    tuned = ["--transform", "log1p", "--half-life-days", "none", "--config", str(config)]
    code, output = _cli([*args, *tuned, "--out", str(out)])
    assert code == 0, output
    settings = _settings(output)
    assert settings[0] == "split: per-user time split, last 20% of each member's interactions"
    assert "relevance: any (default for generic data)" in settings
    assert any(s.startswith("already-seen items: filtered") for s in settings)
    assert "interactions.weight: multiplies each row's event weight" in settings
    als_line = next(s for s in settings if s.startswith("als: events"))
    assert "click=2" in als_line and "decay no decay" in als_line and "transform log1p" in als_line
    assert "alpha 2" in als_line
    assert "als: prior_weight 0 (plain model, no prior)" in settings

    table = _table(out)
    ours = float(table.loc["als", "ndcg_at_10"])
    reference = _bare_implicit_ndcg(frame, "log1p")
    assert abs(ours - reference) / reference <= 0.02, (ours, reference)
    assert ours >= 1.5 * float(table.loc["popularity", "ndcg_at_10"])

    # Defaults (raw weights, 180-day decay): the prior falls back to the plain model, so ALS scores exactly
    # what it scores with the prior switched off.
    default_out, plain_out = tmp_path / "default.csv", tmp_path / "plain.csv"
    assert _cli([*args, "--out", str(default_out)])[0] == 0
    config.write_text(json.dumps({"als": {"model": {"prior_weight": 0}}}))
    assert _cli([*args, "--config", str(config), "--out", str(plain_out)])[0] == 0
    default, plain = _table(default_out), _table(plain_out)
    assert default.loc["als", "ndcg_at_10"] >= plain.loc["als", "ndcg_at_10"]
    assert default.loc["als", "ndcg_at_10"] > 1.5 * default.loc["popularity", "ndcg_at_10"]


@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    return synthetic_interactions(n_users=300, n_items=120, seed=3)


def test_without_weights_or_timestamps_it_says_what_it_assumed(
    small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    no_weight = write_csv(small_frame.drop(columns=["weight"]), tmp_path / "no_weight.csv")
    output = _import(no_weight, tmp_path / "nw")
    assert "note: no_weight.csv: no 'weight' column: every row counts once" in output
    assert "note: no_weight.csv: no 'event_type' column: every row is imported as a 'click'" in output
    code, output = _cli(["evaluate", "--data", str(tmp_path / "nw"), "--model", "als", "--split", "per-user"])
    assert code == 0, output
    assumed = "interactions has no 'weight' column: every row counts its event type's weight"
    assert assumed in _settings(output)
    assert re.search(r"^\s+als\s+0\.\d+", output, re.M)

    no_time = write_csv(small_frame.drop(columns=["timestamp"]), tmp_path / "no_time.csv")
    output = _import(no_time, tmp_path / "nt")
    assert "note: no_time.csv: no 'timestamp' column: event_time is left empty" in output
    code, output = _cli(["evaluate", "--data", str(tmp_path / "nt"), "--model", "als", "--no-progress"])
    assert code == 0, output
    settings = _settings(output)
    assert settings[0].startswith("split: random split of 20% of each member's items (seed 42)")
    assert settings[0].endswith("(the interactions have no timestamps)")
    assert "held-out random split (20% of each member's items)" in output
    code, output = _cli(["evaluate", "--data", str(tmp_path / "nt"), "--split", "per-user"])
    assert code == 1 and "have no timestamp, so the 'per-user' split (--split)" in output
    assert "use --split random" in output


def test_bad_settings_and_data_are_named(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    _import(write_csv(small_frame, tmp_path / "interactions.csv"), dataset)
    base = ["evaluate", "--data", str(dataset), "--model", "als", "--no-progress"]

    code, output = _cli([*base, "--relevance", "purchase"])
    assert code == 1
    assert "relevance=purchase (--relevance, --relevant-min-weight) selects no test item" in output
    assert "click" in output  # what the test rows were instead
    code, output = _cli([*base, "--relevance", "any", "--relevant-min-weight", "1000"])
    assert code == 1 and "relevant_min_weight=1000" in output

    config = tmp_path / "prior.json"
    config.write_text(json.dumps({"als": {"model": {"prior_weight": 10}}}))
    code, output = _cli([*base, "--split", "per-user", "--config", str(config)])
    assert code == 1 and "prior_weight=10 is set but no member group is available" in output
    assert "tier × miles_band" in output

    # One interaction per user: nothing can be held out.
    single = small_frame.drop_duplicates("user_id")
    _import(write_csv(single, tmp_path / "single.csv"), tmp_path / "single")
    for split in ("leave-last-out", "per-user", "random"):
        code, output = _cli(["evaluate", "--data", str(tmp_path / "single"), "--split", split])
        assert code == 1 and f"the '{split}' split (--split) leaves no test user" in output

    # A dataset written by another tool with NaN and negative weights: training names the column.
    part = next((dataset / "interactions").glob("part-*.parquet"))
    events = pd.read_parquet(part)
    events.loc[events.index[3], "weight"] = np.nan
    events.loc[events.index[5], "weight"] = -2.0
    events.to_parquet(part, index=False)
    code, output = _cli([*base, "--split", "per-user"])
    assert code == 1
    assert "interactions: column 'weight' has 2 NaN, infinite or negative value(s)" in output
    assert f"event_id {events['event_id'].iloc[3]!r}" in output


def test_every_import_format_through_train_and_evaluate(
    small_frame: pd.DataFrame, train_world: Path, tmp_path: Path, tracking_uri: str
) -> None:
    env = {"RECSYS_MLFLOW_TRACKING_URI": tracking_uri, "RECSYS_MODEL_NAME": "own-data"}
    config = tmp_path / "fast.json"
    config.write_text(json.dumps({"als": {"model": {"factors": 8, "iterations": 3}, "recall_queries": 50}}))
    fast = ["--model", "als", "--config", str(config), "--no-progress"]

    # interactions: a generic CSV; canonical: a generated world re-imported as it is.
    _import(write_csv(small_frame, tmp_path / "interactions.csv"), tmp_path / "generic")
    args = ["data", "import", str(train_world), "--format", "canonical", "--out", str(tmp_path / "c")]
    code, output = _cli(args)
    assert code == 0, output
    for dataset, split in ((tmp_path / "generic", "per-user"), (tmp_path / "c", "time")):
        code, output = _cli(["evaluate", "--data", str(dataset), "--split", split, *fast], env)
        assert code == 0, output
        code, output = _cli(["train", "--data", str(dataset), "--split", split, "--no-register", *fast], env)
        assert code == 0, output
        assert "settings: als: events" in output and "chosen model: als" in output
        run_id = re.search(r"MLflow run (\w+)", output)
        assert run_id is not None, output
        run = MlflowClient(tracking_uri).get_run(run_id.group(1))
        assert run.data.params["split.method"] == split
        assert run.data.params["als.interactions.transform"] == "raw"
        settings_file = Path(MlflowClient(tracking_uri).download_artifacts(run.info.run_id, "evaluation"))
        logged = (settings_file / "settings.txt").read_text().splitlines()
        assert logged == _settings(output)[: len(logged)] and any(s.startswith("als: events") for s in logged)

    # air-data: member aggregates for segmentation, nothing to recommend; said plainly.
    src = Path(__file__).parents[2] / "data" / "reference" / "air_data_lrfmc" / "data_selected.csv"
    code, output = _cli(["data", "import", str(src), "--format", "air-data", "--out", str(tmp_path / "air")])
    assert code == 0, output
    for command in ("train", "evaluate"):
        code, output = _cli([command, "--data", str(tmp_path / "air"), *fast], env)
        assert code == 1 and "an air-data import holds members' LRFMC aggregates" in output
        assert "recsys segment --data" in output


def test_choose_prior_keeps_the_prior_only_where_it_helped_on_validation(
    train_world: Path, small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    config = tmp_path / "fast.json"
    config.write_text(json.dumps({"als": {"model": {"factors": 8, "iterations": 3}, "recall_queries": 50}}))
    args = ["evaluate", "--model", "als", "--config", str(config), "--no-oracle", "--no-progress"]
    code, output = _cli([*args, "--data", str(train_world), "--choose-prior"])
    assert code == 0, output
    line = next(s for s in _settings(output) if "on the validation period" in s)
    found = re.search(r"ndcg_at_10 ([\d.]+) with the prior, ([\d.]+) without: (.*)$", line)
    assert found is not None, line
    with_prior, plain, verdict = float(found[1]), float(found[2]), found[3]
    assert verdict == ("prior kept" if with_prior > plain else "plain model (prior_weight 0)")
    resolved = next(s for s in _settings(output) if s.startswith("als: prior_weight "))
    assert resolved.startswith("als: prior_weight 10 ") == (with_prior > plain)

    _import(write_csv(small_frame, tmp_path / "interactions.csv"), tmp_path / "generic")
    code, output = _cli([*args, "--data", str(tmp_path / "generic"), "--choose-prior", "--split", "per-user"])
    assert code == 1 and "it needs --split time, not --split per-user" in output
