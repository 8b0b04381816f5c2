"""``recsys train`` and ``recsys evaluate``: train, evaluate on the held-out period, log and register."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recsys.evaluation import TimeSplit
from training.commands.common import cli_errors, load_configs, print_table, resolve_data, settings
from training.pipeline import MODEL_KINDS

_MODEL_HELP = f"Model kind: {'|'.join(MODEL_KINDS)} or all (the best on the primary metric is registered)."

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Dataset directory (default: RECSYS_DATA_DIR).", show_default=False),
]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=_MODEL_HELP)]
CutoffOpt = Annotated[
    str | None,
    typer.Option("--cutoff", help="Split time T (ISO date); default: --test-days before the data's end."),
]
TestDaysOpt = Annotated[
    int | None, typer.Option("--test-days", min=1, help="Held-out period length in days.")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: RECSYS_SEED or 42).")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on long steps.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="YAML/JSON: model kind -> bundle configuration.", exists=True, dir_okay=False
    ),
]


def train(
    data: DataOpt = None,
    model: ModelOpt = "all",
    register: Annotated[
        bool,
        typer.Option("--register/--no-register", help="Register the model as a new 'challenger' version."),
    ] = True,
    refit: Annotated[
        bool, typer.Option("--refit/--no-refit", help="Refit the chosen model on all data before logging it.")
    ] = True,
    cutoff: CutoffOpt = None,
    test_days: TestDaysOpt = None,
    seed: SeedOpt = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow URI (default: RECSYS_MLFLOW_TRACKING_URI).")
    ] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name.")] = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Train, evaluate on the held-out period, log the run to MLflow and register the model as challenger."""
    from training.pipeline import train_pipeline

    cfg = settings()
    with cli_errors():
        result = train_pipeline(
            resolve_data(data, cfg),
            model,
            tracking_uri=tracking_uri or cfg.mlflow_tracking_uri,
            model_name=model_name or cfg.model_name,
            experiment=cfg.experiment_name,
            register=register,
            refit=refit,
            cutoff=cutoff,
            test_days=test_days or cfg.test_days,
            seed=cfg.seed if seed is None else seed,
            configs=load_configs(config),
            primary_metric=cfg.primary_metric,
            progress=progress,
        )
    report = result.report
    _describe_split(report.split)
    print_table(report.table)
    pub = result.published
    typer.echo(f"chosen model: {result.kind}; data fingerprint {result.fingerprint}")
    if pub is not None:
        typer.echo(f"MLflow run {pub.run_id} (experiment {pub.experiment_id})")
        if pub.version is not None:
            typer.echo(
                f"registered {pub.version.name} version {pub.version.version} as '{pub.version.alias}'; "
                f"promote it with `recsys models promote`"
            )


def evaluate(
    data: DataOpt = None,
    model: ModelOpt = "all",
    cutoff: CutoffOpt = None,
    test_days: TestDaysOpt = None,
    seed: SeedOpt = None,
    oracle: Annotated[
        bool, typer.Option("--oracle/--no-oracle", help="Include the oracle upper bound.")
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the table here (.csv or .md).", dir_okay=False)
    ] = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
    validation: Annotated[
        bool,
        typer.Option(
            "--validation/--test",
            help="Judge on the validation period (the --test-days before the test cut-off; the test period "
            "is never read) to choose settings; then report the test period.",
        ),
    ] = False,
) -> None:
    """Print the comparison table of the models (with popularity and the oracle) on the held-out period."""
    from recsys.evaluation import to_markdown
    from training.pipeline import evaluate_models

    cfg = settings()
    with cli_errors():
        report = evaluate_models(
            resolve_data(data, cfg),
            model,
            cutoff=cutoff,
            test_days=test_days or cfg.test_days,
            seed=cfg.seed if seed is None else seed,
            with_oracle=oracle,
            configs=load_configs(config),
            progress=progress,
            validation=validation,
        )
    _describe_split(report.split, "validation" if validation else "held-out")
    print_table(report.table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            report.table.to_csv(index=False) if out.suffix == ".csv" else to_markdown(report.table)
        )
        typer.echo(f"wrote {out}")


def _describe_split(split: TimeSplit, kind: str = "held-out") -> None:
    typer.echo(
        f"{kind} period {split.cutoff.date()} .. {split.end.date()}: "
        f"{len(split.test_members)} test members "
        f"({len(split.cold_members)} cold), relevance = {split.relevance}"
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the top-level app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
