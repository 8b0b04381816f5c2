"""``recsys models``: list registered versions, promote a challenger, make sure a champion exists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.commands import members
from training.commands.common import cli_errors, load_configs, print_table, resolve_data, settings

app = typer.Typer(help="The MLflow model registry: list, promote, ensure a champion.", no_args_is_help=True)

UriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow URI (default: RECSYS_MLFLOW_TRACKING_URI).")
]
NameOpt = Annotated[str | None, typer.Option("--model-name", help="Registered model name.")]


@app.command("list")
def list_models(tracking_uri: UriOpt = None, model_name: NameOpt = None) -> None:
    """Show every version with its aliases and held-out metrics."""
    from recsys.registry import list_versions, versions_table

    cfg = settings()
    uri, name = tracking_uri or cfg.mlflow_tracking_uri, model_name or cfg.model_name
    with cli_errors():
        versions = list_versions(uri, name)
    typer.echo(f"{name} at {uri}: {len(versions)} version(s)")
    if versions:
        print_table(
            versions_table(
                versions, (cfg.primary_metric, "ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10")
            )
        )


@app.command("promote")
def promote(
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version to promote (default: the challenger).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if it does not beat the champion.")
    ] = False,
    tracking_uri: UriOpt = None,
    model_name: NameOpt = None,
    publish_members: Annotated[
        bool,
        typer.Option(
            "--publish-members",
            help="After a successful promotion, publish the new champion's member profiles and embeddings "
            "to Redis (as `recsys members publish`).",
        ),
    ] = False,
    data: members.DataOpt = None,
    redis_url: members.RedisUrlOpt = None,
    prefix: members.PrefixOpt = "members",
    batch_size: members.BatchOpt = 1000,
    progress: members.ProgressOpt = True,
) -> None:
    """Move 'champion' to the challenger (or --version) if it beats the champion on the primary metric."""
    from recsys.registry import CHAMPION
    from recsys.registry import promote as do_promote

    cfg = settings()
    uri, name = tracking_uri or cfg.mlflow_tracking_uri, model_name or cfg.model_name
    target = None
    if not publish_members and (data is not None or redis_url is not None):
        typer.echo("error: --data and --redis-url only apply with --publish-members", err=True)
        raise typer.Exit(2)
    if publish_members:  # check the publish inputs before promoting, not after
        data = resolve_data(data, cfg)
        if not data.is_dir():
            typer.echo(f"error: {data}: no such dataset directory; nothing was promoted", err=True)
            raise typer.Exit(1)
        target = members.resolve_target(redis_url, prefix, batch_size, cfg)
        members.open_store(target).close()
    with cli_errors():
        result = do_promote(uri, name, version, force=force, metric=cfg.primary_metric)
    if not result.promoted:
        typer.echo(f"not promoted: {result.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"promoted {name} version {result.candidate.version} to champion: {result.reason}")
    if target is not None and data is not None:
        try:
            members.publish_members(
                data, target, tracking_uri=uri, model_name=name, alias=CHAMPION, progress=progress
            )
        except typer.Exit:
            typer.echo(
                f"  {name} version {result.candidate.version} IS champion, but its members were not "
                f"published; retry with `recsys members publish --data {data}`",
                err=True,
            )
            raise


@app.command("ensure-champion")
def ensure_champion(
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset to train on if there is no champion.")
    ] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model kind or all.")] = "all",
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML/JSON: model kind -> bundle configuration.", exists=True),
    ] = None,
    tracking_uri: UriOpt = None,
    model_name: NameOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Do nothing if a champion exists; otherwise train, register and promote one (used by `make run`)."""
    from recsys.registry import CHAMPION, get_version
    from recsys.registry import promote as do_promote
    from training.pipeline import train_pipeline

    cfg = settings()
    uri, name = tracking_uri or cfg.mlflow_tracking_uri, model_name or cfg.model_name
    with cli_errors():
        current = get_version(uri, name, CHAMPION)
        if current is not None:
            typer.echo(
                f"{name}@champion is version {current.version} ({current.kind}, {cfg.primary_metric}="
                f"{current.metrics.get(cfg.primary_metric, float('nan')):.4f}); nothing to do"
            )
            return
        typer.echo(f"no {name}@champion at {uri}: training one")
        result = train_pipeline(
            resolve_data(data, cfg),
            model,
            tracking_uri=uri,
            model_name=name,
            experiment=cfg.experiment_name,
            test_days=cfg.test_days,
            seed=cfg.seed,
            configs=load_configs(config),
            primary_metric=cfg.primary_metric,
            progress=progress,
        )
        print_table(result.report.table)
        assert result.published is not None and result.published.version is not None
        promoted = do_promote(uri, name, result.published.version.version, metric=cfg.primary_metric)
    typer.echo(f"{name} version {promoted.candidate.version} ({result.kind}) is champion: {promoted.reason}")


@app.command("copy")
def copy(
    to_uri: Annotated[
        str,
        typer.Option(
            "--to", help="Tracking URI of the registry to copy into (a SQLite store is created if missing)."
        ),
    ],
    alias: Annotated[str, typer.Option("--alias", help="The alias to copy and to set.")] = "champion",
    tracking_uri: UriOpt = None,
    model_name: NameOpt = None,
) -> None:
    """Copy the version an alias points to into another registry, same name and alias (the image bakes its
    model this way: `docker build --build-arg MODEL_TRACKING_URI=...`)."""
    from recsys.registry import load_bundle, publish

    cfg = settings()
    uri, name = tracking_uri or cfg.mlflow_tracking_uri, model_name or cfg.model_name
    with cli_errors():
        bundle, info = load_bundle(uri, name, alias)
        result = publish(
            to_uri,
            bundle,
            model_name=name,
            model_metrics=info.metrics,
            # the source URI is left out: it may carry credentials
            tags={**info.tags, "copied_from_version": str(info.version)},
            alias=alias,
            run_name=f"copy of {name} version {info.version}",
        )
    assert result.version is not None
    copied = result.version.version
    typer.echo(f"{name} version {info.version} copied to {to_uri} as version {copied} (@{alias})")


def register(app_: typer.Typer) -> None:
    """Add the ``models`` group to the top-level app."""
    app_.add_typer(app, name="models")
