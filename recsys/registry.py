"""The MLflow model registry of offer models: publish a trained bundle, promote by alias, list, load.

One registered-model name (``loyalty-offers`` by default) holds every version. Versions are addressed by
MLflow 3 *aliases* (stages are deprecated): a new version is registered as ``challenger``; ``promote`` moves
``champion`` to it only if it beats the current champion on the primary metric (expected value per
replayed request on the held-out period) or when forced. The service loads ``models:/<name>@champion``
through :func:`load_bundle`.

Each version carries tags ``metric.<name>`` (its held-out metrics), ``kind``, ``data_fingerprint`` and
``cutoff``, so listing and promotion need no run look-ups.

Publishing is all-or-nothing: the tracking store is checked first; parameters, metrics, artefacts and the
pyfunc model are logged; only then is a model version created (tags are set atomically with it) and the alias
moved. If anything fails the run is marked FAILED and a version created meanwhile is deleted, so no
half-registered version is ever left for ``promote`` or the service to pick up.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd

from recsys.urls import redact_url

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.entities.model_registry import ModelVersion

    from mlflow import MlflowClient
    from recsys.models.bundle import ModelBundle

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_MODEL_NAME = "loyalty-offers"
DEFAULT_EXPERIMENT = "loyalty-offers"
PRIMARY_METRIC = "ev_per_request"  # expected value per replayed request (recsys.evaluation.policy_eval)
MODEL_ARTIFACT = "model"
METRIC_TAG = "metric."

# Distributions the logged model needs at load time (pinned to what trained it); the project itself
# (``loyalty-offers``, which provides ``recsys``) must be installed where the model is loaded.
_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "pyarrow", "implicit", "rectools-lightfm", "faiss-cpu")


class RegistryError(RuntimeError):
    """A registry operation failed; the message says what and what to do."""


class TrackingUnavailableError(RegistryError):
    """The tracking server / store cannot be reached."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered version: ``alias`` is the alias it was looked up by (or its first alias)."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    created: pd.Timestamp | None = None

    @property
    def kind(self) -> str | None:
        return self.tags.get("kind")

    def primary(self, metric: str = PRIMARY_METRIC) -> float | None:
        value = self.metrics.get(metric)
        return None if value is None or math.isnan(value) else value


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    candidate: ModelVersionInfo
    previous: ModelVersionInfo | None
    reason: str


@dataclass(frozen=True)
class PublishResult:
    run_id: str
    experiment_id: str
    version: ModelVersionInfo | None  # None when not registered


# ----------------------------------------------------------------------------------------------------
# Connection
# ----------------------------------------------------------------------------------------------------


def check_tracking(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast with :class:`TrackingUnavailableError` if the tracking store cannot be reached.

    HTTP(S) servers are asked for ``/health``; database URIs are connected to; local SQLite/file stores need a
    writable directory. (MLflow itself would retry an unreachable server for minutes before failing.)
    """
    scheme = urlparse(tracking_uri).scheme
    if scheme in ("http", "https"):
        import requests

        url = tracking_uri.rstrip("/") + "/health"
        try:
            resp = requests.get(url, timeout=timeout)
        except requests.RequestException as exc:
            raise TrackingUnavailableError(
                f"MLflow tracking server {tracking_uri} is unreachable ({type(exc).__name__}); "
                "start it or point RECSYS_MLFLOW_TRACKING_URI at a running one"
            ) from exc
        if resp.status_code != 200:
            raise TrackingUnavailableError(
                f"MLflow tracking server {tracking_uri} is not healthy: "
                f"GET /health -> HTTP {resp.status_code}"
            )
    elif scheme == "sqlite":
        path = tracking_uri.split(":///", 1)[-1]
        if path and path != ":memory:":
            directory = Path(path).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingUnavailableError(
                    f"cannot create the tracking store directory {directory}: {exc}"
                ) from exc
    elif scheme.startswith(("postgresql", "mysql", "mssql")):
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(tracking_uri, pool_pre_ping=True)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as exc:
            raise TrackingUnavailableError(
                f"MLflow backend database {redact_url(tracking_uri)} is unreachable: {exc}"
            ) from exc


def get_client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextlib.contextmanager
def _mlflow_errors(action: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except MlflowException as exc:
        raise RegistryError(f"{action}: {exc.message}") from exc
    except OSError as exc:  # connection refused / reset surfacing from requests
        raise TrackingUnavailableError(f"{action}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


def _info(
    mv: ModelVersion, alias: str | None = None, aliases: tuple[str, ...] | None = None
) -> ModelVersionInfo:
    tags = dict(mv.tags or {})
    metrics: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG):
            with contextlib.suppress(ValueError):
                metrics[key[len(METRIC_TAG) :]] = float(value)
    if aliases is None:
        aliases = tuple(sorted(getattr(mv, "aliases", None) or ()))
    return ModelVersionInfo(
        name=mv.name,
        version=str(mv.version),
        alias=alias if alias is not None else (aliases[0] if aliases else None),
        run_id=mv.run_id,
        metrics=metrics,
        aliases=aliases,
        tags={k: v for k, v in tags.items() if not k.startswith(METRIC_TAG)},
        created=pd.Timestamp(mv.creation_timestamp, unit="ms") if mv.creation_timestamp else None,
    )


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
        or "not found" in str(exc).lower()
    )


def get_version(tracking_uri: str, model_name: str, alias: str) -> ModelVersionInfo | None:
    """The version ``alias`` points to, or None if the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    check_tracking(tracking_uri)
    client = get_client(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise RegistryError(f"looking up {model_name}@{alias}: {exc.message}") from exc
    return _info(mv, alias)


def version_info(tracking_uri: str, model_name: str, version: str) -> ModelVersionInfo | None:
    """A version by number, or None if the model or the version does not exist."""
    from mlflow.exceptions import MlflowException

    check_tracking(tracking_uri)
    client = get_client(tracking_uri)
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise RegistryError(f"looking up {model_name} version {version}: {exc.message}") from exc
    return _info(mv)


def alias_version(tracking_uri: str, model_name: str, alias: str = CHAMPION) -> str | None:
    """Just the version number ``alias`` points to (cheap; for a service polling for a new champion)."""
    info = get_version(tracking_uri, model_name, alias)
    return info.version if info else None


def list_versions(tracking_uri: str, model_name: str) -> list[ModelVersionInfo]:
    """Every version of ``model_name``, newest first, with aliases and metrics.

    Raises :class:`RegistryError` if no such registered model exists.
    """
    from mlflow.exceptions import MlflowException

    check_tracking(tracking_uri)
    client = get_client(tracking_uri)
    with _mlflow_errors(f"listing versions of {model_name}"):
        try:
            registered = client.get_registered_model(model_name)
        except MlflowException as exc:
            if _is_not_found(exc):
                raise RegistryError(
                    f"no registered model named '{model_name}' at {tracking_uri}; train one with "
                    "`recsys train --data DIR`"
                ) from exc
            raise
        versions = client.search_model_versions(f"name = '{model_name}'")
    # search results do not always carry aliases; the registered model's alias map always does
    by_version: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    infos = [_info(v, aliases=tuple(sorted(by_version.get(str(v.version), [])))) for v in versions]
    return sorted(infos, key=lambda i: int(i.version), reverse=True)


def load_bundle(
    tracking_uri: str,
    model_name: str,
    alias: str = CHAMPION,
    dst_dir: Path | str | None = None,
    *,
    version: str | None = None,
) -> tuple[ModelBundle, ModelVersionInfo]:
    """Download the version ``alias`` points to (or ``version`` itself, when given) and load its
    :class:`ModelBundle`.

    ``dst_dir`` keeps the downloaded artefacts there; by default they go to a temporary directory that is
    removed once the bundle is loaded. Raises :class:`RegistryError` if the alias is not set.
    """
    import mlflow.artifacts

    from recsys.mlflow_pyfunc import BUNDLE_ARTIFACT
    from recsys.models.bundle import ModelBundle

    info = (
        version_info(tracking_uri, model_name, version)
        if version is not None
        else get_version(tracking_uri, model_name, alias)
    )
    if info is None:
        raise RegistryError(
            f"{model_name}{'@' + alias if version is None else ' version ' + version} does not exist at "
            f"{tracking_uri}; train and promote a model first "
            "(`recsys models ensure-champion --data DIR`)"
        )
    tmp = None if dst_dir is not None else tempfile.mkdtemp(prefix="recsys-model-")
    target = Path(dst_dir or tmp)  # type: ignore[arg-type]
    try:
        with _mlflow_errors(f"downloading {model_name} version {info.version}"):
            # Resolved through this registry's client: a ``models:/name/version`` URI would be looked up in
            # the process-wide registry URI (MLflow ignores the one passed), i.e. in ./mlflow.db by default.
            source = get_client(tracking_uri).get_model_version_download_uri(model_name, info.version)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(target), tracking_uri=tracking_uri
            )
        bundle_dir = Path(local) / "artifacts" / BUNDLE_ARTIFACT
        if not bundle_dir.exists():
            raise RegistryError(f"{model_name} version {info.version} has no '{BUNDLE_ARTIFACT}' artefact")
        bundle = ModelBundle.load(bundle_dir)
        bundle.registered_as = (model_name, str(info.version))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return bundle, info


# ----------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------


def _requirements() -> list[str]:
    reqs = []
    for dist in _REQUIREMENTS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={metadata.version(dist)}")
    return reqs


def _clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and not math.isnan(float(v))}


def publish(
    tracking_uri: str,
    bundle: ModelBundle,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    experiment: str = DEFAULT_EXPERIMENT,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    model_metrics: Mapping[str, float] | None = None,
    artifacts: Mapping[str, Path] | None = None,
    texts: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    input_member_ids: Sequence[str] = (),
    register: bool = True,
    alias: str = CHALLENGER,
    run_name: str | None = None,
) -> PublishResult:
    """Log one training run and (optionally) register its model as a new version with ``alias``.

    ``params`` (flat), ``metrics`` (all models' metrics, logged to the run), ``model_metrics`` (the registered
    model's own held-out metrics, logged unprefixed and stored on the version as ``metric.*`` tags),
    ``artifacts`` (files/directories to attach), ``texts`` (file name -> content, e.g. the comparison table),
    ``tags`` (run and version tags, e.g. ``data_fingerprint``). All-or-nothing: see the module docstring.
    """
    import mlflow.pyfunc
    from mlflow.environment_variables import MLFLOW_RUN_ID

    import mlflow
    from recsys.mlflow_pyfunc import BUNDLE_ARTIFACT, SIGNATURE, RecsysPyfuncModel

    check_tracking(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = get_client(tracking_uri)
    model_metrics = _clean_metrics(model_metrics or {})
    run_tags = dict(tags or {})
    created: ModelVersion | None = None
    with _mlflow_errors("publishing the training run"):
        if not MLFLOW_RUN_ID.get():  # under `mlflow run` the project's run (and its experiment) is resumed
            _ensure_experiment(client, tracking_uri, experiment)
            mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        with _mlflow_errors("logging the training run"):
            if params:
                items = [(k, str(v)[:6000]) for k, v in params.items()]
                for start in range(0, len(items), 100):
                    mlflow.log_params(dict(items[start : start + 100]))
            for name, path in (artifacts or {}).items():
                path = Path(path)
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=name)
                else:
                    mlflow.log_artifact(str(path), artifact_path=None if name == path.name else name)
            for fname, content in (texts or {}).items():
                mlflow.log_text(content, fname)
            with tempfile.TemporaryDirectory(prefix="recsys-bundle-") as tmp:
                bundle_dir = Path(tmp) / BUNDLE_ARTIFACT
                bundle.save(bundle_dir)
                example = pd.DataFrame({"member_id": [str(m) for m in list(input_member_ids)[:3]]})
                model_info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=RecsysPyfuncModel(),
                    artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                    signature=SIGNATURE,
                    input_example=example if len(example) else None,
                    pip_requirements=_requirements(),
                )
            # Metrics after the model: logging a model links the run's existing metrics to it, one metric
            # history request each (hundreds of round trips to a tracking server).
            all_metrics = {**_clean_metrics(metrics or {}), **model_metrics}
            if all_metrics:
                mlflow.log_metrics(all_metrics)
        version_info = None
        if register:
            with _mlflow_errors(f"registering {model_name}"):
                with contextlib.suppress(Exception):
                    client.create_registered_model(model_name)
                version_tags = {**run_tags, **{f"{METRIC_TAG}{k}": repr(v) for k, v in model_metrics.items()}}
                created = client.create_model_version(
                    name=model_name,
                    source=model_info.model_uri,
                    run_id=run_id,
                    tags=version_tags,
                    description=run_tags.get("description"),
                    model_id=model_info.model_id,
                )
                _wait_ready(client, created)
                client.set_registered_model_alias(model_name, alias, created.version)
                version_info = _info(client.get_model_version(model_name, created.version), alias)
        mlflow.end_run(status="FINISHED")
    except BaseException as exc:
        _abort(client, run_id, model_name, created, exc)
        raise
    return PublishResult(run_id=run_id, experiment_id=run.info.experiment_id, version=version_info)


def _ensure_experiment(client: MlflowClient, tracking_uri: str, experiment: str) -> None:
    """Create ``experiment`` if needed; with a local SQLite store its artefacts go beside the database
    (``<db dir>/mlartifacts``) instead of MLflow's default ``./mlruns`` in the working directory."""
    if client.get_experiment_by_name(experiment) is not None:
        return
    location = None
    if urlparse(tracking_uri).scheme == "sqlite":
        db = tracking_uri.split(":///", 1)[-1]
        if db and db != ":memory:":
            location = (Path(db).resolve().parent / "mlartifacts").as_uri()
    client.create_experiment(experiment, artifact_location=location)


def _wait_ready(client: MlflowClient, mv: ModelVersion, timeout: float = 300.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    status = mv.status
    while status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get_model_version(mv.name, mv.version).status
    if status != "READY":
        raise RegistryError(f"model version {mv.name}/{mv.version} is {status}, not READY")


def _abort(
    client: MlflowClient, run_id: str, model_name: str, created: ModelVersion | None, exc: BaseException
) -> None:
    """Undo a failed publish: delete the version created meanwhile, mark the run FAILED."""
    import mlflow

    if created is not None:
        try:
            client.delete_model_version(model_name, created.version)
        except Exception as cleanup:  # the store is gone too: say so
            exc.add_note(
                f"could not delete the partial model version {model_name}/{created.version}: {cleanup}; "
                "delete it by hand before promoting"
            )
    with contextlib.suppress(Exception):
        mlflow.end_run(status="FAILED")
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, status="FAILED")


def promote(
    tracking_uri: str,
    model_name: str,
    version: str | None = None,
    *,
    force: bool = False,
    metric: str = PRIMARY_METRIC,
    from_alias: str = CHALLENGER,
    to_alias: str = CHAMPION,
) -> PromotionResult:
    """Move ``to_alias`` to ``version`` (default: the ``from_alias`` version) if it beats the current holder.

    "Beats" means a strictly higher ``metric``; ``force`` skips the comparison. With no current champion the
    candidate is promoted. Refusals are results (``promoted=False`` with a reason), not errors; a missing
    version or alias raises :class:`RegistryError`.
    """
    from mlflow.exceptions import MlflowException

    check_tracking(tracking_uri)
    client = get_client(tracking_uri)
    with _mlflow_errors(f"promoting {model_name}"):
        if version is None:
            cand = get_version(tracking_uri, model_name, from_alias)
            if cand is None:
                raise RegistryError(
                    f"{model_name} has no '{from_alias}' version to promote; pass --version or train one"
                )
        else:
            try:
                cand = _info(client.get_model_version(model_name, str(version)))
            except MlflowException as exc:
                raise RegistryError(f"{model_name} has no version {version}") from exc
        current = get_version(tracking_uri, model_name, to_alias)
        if current is not None and current.version == cand.version:
            return PromotionResult(False, cand, current, f"version {cand.version} is already {to_alias}")
        new_value, old_value = cand.primary(metric), current.primary(metric) if current else None
        note = ""
        if current is not None and cand.tags.get("data_fingerprint") != current.tags.get("data_fingerprint"):
            note = " (note: the two versions were evaluated on different data)"
        if force:
            reason = f"forced: version {cand.version} {metric}={_fmt(new_value)}"
        elif current is None:
            reason = f"no {to_alias} yet: version {cand.version} {metric}={_fmt(new_value)}"
        elif new_value is None:
            return PromotionResult(
                False, cand, current, f"version {cand.version} has no {metric}; use --force to promote anyway"
            )
        elif old_value is not None and new_value <= old_value:
            return PromotionResult(
                False,
                cand,
                current,
                f"version {cand.version} {metric}={_fmt(new_value)} does not beat {to_alias} version "
                f"{current.version} {metric}={_fmt(old_value)}{note}; use --force to promote anyway",
            )
        else:
            reason = (
                f"version {cand.version} {metric}={_fmt(new_value)} beats version {current.version} "
                f"{metric}={_fmt(old_value)}{note}"
            )
        client.set_registered_model_alias(model_name, to_alias, cand.version)
        promoted = _info(client.get_model_version(model_name, cand.version), to_alias)
    return PromotionResult(True, promoted, current, reason)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def versions_table(versions: Sequence[ModelVersionInfo], metrics: Sequence[str] = ()) -> pd.DataFrame:
    """A printable table of versions: version, aliases, kind, created, metrics, run id."""
    metrics = tuple(metrics) or (PRIMARY_METRIC, "ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10")
    rows = []
    for v in versions:
        row: dict[str, object] = {
            "version": v.version,
            "aliases": ",".join(sorted(v.aliases)),
            "kind": v.kind or "",
            "created": v.created.strftime("%Y-%m-%d %H:%M") if v.created is not None else "",
        }
        for m in metrics:
            row[m] = v.metrics.get(m, float("nan"))
        row["data"] = v.tags.get("data_fingerprint", "")
        row["run_id"] = v.run_id or ""
        rows.append(row)
    return pd.DataFrame(rows)


def dumps_params(value: object) -> str:
    """Serialise a nested configuration value for a parameter (stable key order)."""
    return json.dumps(value, sort_keys=True, default=str)
