"""Shared helpers of the training commands: settings, clean error reporting, table printing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import typer

from training.config import TrainingSettings

# MLflow retries an unreachable server for minutes by default; the registry checks reachability itself.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def settings() -> TrainingSettings:
    try:
        return TrainingSettings()
    except Exception as exc:  # pydantic ValidationError: a bad RECSYS_* variable
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def resolve_data(data: Path | None, cfg: TrainingSettings) -> Path:
    path = data or cfg.data_dir
    if path is None:
        typer.echo("error: no dataset: pass --data DIR or set RECSYS_DATA_DIR", err=True)
        raise typer.Exit(2)
    return path


def load_configs(path: Path | None) -> dict[str, Any] | None:
    """Per-model bundle configurations from a YAML/JSON file: ``{als: {model: {factors: 32}}, ...}``."""
    if path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        typer.echo(f"error: cannot read the model configuration {path}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        typer.echo(f"error: {path}: expected a mapping of model kind -> configuration", err=True)
        raise typer.Exit(2)
    return data


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the library's input/registry errors into a one-line message and exit code 1 (no traceback)."""
    from recsys.data.layout import DatasetError
    from recsys.evaluation import EvaluationError
    from recsys.registry import RegistryError

    try:
        yield
    except (DatasetError, EvaluationError, RegistryError, ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        typer.echo(f"error: {message}", err=True)
        for note in getattr(exc, "__notes__", []):
            typer.echo(f"  {note}", err=True)
        raise typer.Exit(1) from exc


def print_table(table: pd.DataFrame) -> None:
    with pd.option_context(
        "display.width", 250, "display.max_columns", 40, "display.float_format", "{:.4f}".format
    ):
        typer.echo(table.to_string(index=False))
