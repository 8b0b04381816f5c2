"""The ``recsys`` training and registry commands: output, exit codes, clean errors (no tracebacks)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from training.cli import app

runner = CliRunner()


@pytest.fixture()
def env(tracking_uri: str, fast_configs: dict, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "models.json"
    config.write_text(json.dumps(fast_configs))
    return {
        "RECSYS_MLFLOW_TRACKING_URI": tracking_uri,
        "RECSYS_MODEL_NAME": "cli-offers",
        "CONFIG": str(config),
    }


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = runner.invoke(app, args, env={k: v for k, v in env.items() if k != "CONFIG"})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_bad_input_is_a_message_and_a_non_zero_exit(env: dict[str, str], tmp_path: Path) -> None:
    code, out = _run(["train", "--data", str(tmp_path / "nope")], env)
    assert code == 1 and "error: " in out and "no such dataset" in out
    code, out = _run(["train", "--data", str(tmp_path), "--model", "svd"], env)
    assert code == 1 and "unknown model kind(s) ['svd']" in out
    code, out = _run(["train", "--data", str(tmp_path), "--model", "all,ranker,svd"], env)
    assert code == 1 and "unknown model kind(s) ['svd']" in out  # a list names the kind it does not know
    code, out = _run(["models", "list"], env)
    assert code == 1 and "no registered model named 'cli-offers'" in out
    code, out = _run(["models", "promote"], env)
    assert code == 1 and "no 'challenger' version" in out
    code, out = _run(["models", "list", "--tracking-uri", "http://127.0.0.1:9"], env)
    assert code == 1 and "unreachable" in out


def test_ensure_champion_then_list_then_promote(env: dict[str, str], train_world: Path) -> None:
    args = ["models", "ensure-champion", "--data", str(train_world), "--model", "popularity"]
    code, out = _run([*args, "--config", env["CONFIG"], "--no-progress"], env)
    assert code == 0, out
    assert "oracle" in out and "version 1 (popularity) is champion" in out
    code, out = _run([*args, "--no-progress"], env)
    assert code == 0 and "cli-offers@champion is version 1" in out and "nothing to do" in out

    code, out = _run(["models", "list"], env)
    assert code == 0
    lines = out.splitlines()
    assert "1 version(s)" in lines[0]
    assert "challenger,champion" in lines[2] and "popularity" in lines[2]

    code, out = _run(["models", "promote"], env)  # the challenger already is the champion
    assert code == 1 and "already champion" in out


def test_evaluate_prints_and_writes_the_table(env: dict[str, str], train_world: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "table.md"
    code, out = _run(
        ["evaluate", "--data", str(train_world), "--model", "popularity", "--config", env["CONFIG"],
         "--out", str(out_file), "--no-progress", "--policy-out", str(tmp_path / "policies.csv"),
         "--closed-loop"],
        env,
    )  # fmt: skip
    assert code == 0, out
    assert "held-out period" in out and "popularity" in out and "oracle" in out
    # the world has a request log: the policy replay's figures lead, NDCG stays as a diagnostic
    assert out_file.read_text().startswith("| model | ev_per_request | purchases_per_request | ndcg_at_10")
    assert "Policy table:" in out and "| ev_oracle |" in out and "SNIPS EV" in out
    policies = pd.read_csv(tmp_path / "policies.csv")
    assert {"uniform_random", "popularity", "conversion", "oracle", "ev_oracle"} <= set(policies["policy"])
    assert "Closed loop (popularity" in out and "| popularity | on |" in out and "| popularity | off |" in out


def test_evaluate_on_the_validation_period_ends_where_the_test_period_starts(
    env: dict[str, str], train_world: Path
) -> None:
    """``--validation`` judges the --test-days before the test cut-off: its period ends where the held-out
    period begins, so settings chosen on it never saw the test period."""
    common = ["--data", str(train_world), "--model", "popularity", "--config", env["CONFIG"], "--no-progress"]
    code, test_out = _run(["evaluate", *common, "--test-days", "30"], env)
    assert code == 0, test_out
    code, val_out = _run(["evaluate", *common, "--test-days", "30", "--validation"], env)
    assert code == 0, val_out
    held_out = re.search(r"held-out period (\S+) \.\. (\S+):", test_out)
    validation = re.search(r"validation period (\S+) \.\. (\S+):", val_out)
    assert held_out and validation, (test_out, val_out)
    assert validation.group(2) == held_out.group(1)
    span = date.fromisoformat(validation.group(2)) - date.fromisoformat(validation.group(1))
    assert span.days == 30
