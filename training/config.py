"""Settings of the offline jobs: the only place training reads the environment (prefix ``RECSYS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.evaluation import DEFAULT_TEST_DAYS
from recsys.evaluation.policy_eval import PRIMARY_POLICY_METRIC
from recsys.registry import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME


class TrainingSettings(BaseSettings):
    """Every field can be set as ``RECSYS_<FIELD>``, e.g. ``RECSYS_MLFLOW_TRACKING_URI`` (which falls back to
    MLflow's own ``MLFLOW_TRACKING_URI``, so ``mlflow run`` projects log where they were told to)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    mlflow_tracking_uri: str = Field(
        default="sqlite:///var/mlflow.db",
        validation_alias=AliasChoices("RECSYS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking + registry URI: sqlite:///path.db (default), http://host:5000 (a "
        "tracking server) or a database URL such as postgresql+psycopg://user@host/db.",
    )
    model_name: str = Field(default=DEFAULT_MODEL_NAME, min_length=1, description="Registered model name.")
    experiment_name: str = Field(default=DEFAULT_EXPERIMENT, min_length=1, description="MLflow experiment.")
    data_dir: Path | None = Field(default=None, description="Default dataset directory for train/evaluate.")
    test_days: int = Field(default=DEFAULT_TEST_DAYS, ge=1, description="Held-out days before the end.")
    seed: int = Field(default=42, description="Seed of every random step.")
    primary_metric: str = Field(
        default=PRIMARY_POLICY_METRIC,
        description="Metric that picks and promotes models: expected value per replayed request (NDCG@10 "
        "when the data has no request log).",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RECSYS_REDIS_URL", "REDIS_URL"),
        description="Redis of the online member store that `recsys members publish` publishes to.",
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
