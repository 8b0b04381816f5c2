"""``recsys train`` and ``recsys evaluate``: train, evaluate on the held-out period, log and register."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recsys.evaluation import DEFAULT_TEST_FRACTION, TimeSplit
from training.commands.common import cli_errors, load_configs, print_table, resolve_data, settings
from training.pipeline import MODEL_KINDS, SplitSettings

TRANSFORMS: tuple[str, ...] = ("raw", "log1p", "bm25")

_MODEL_HELP = (
    f"Model kind: {'|'.join(MODEL_KINDS)}, all, or a comma-separated list (all,ranker); the best on the "
    "primary metric is registered."
)

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
SplitOpt = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="time (one cut-off; the default), per-user (last --test-fraction of each member's "
        "interactions), leave-last-out, or random (seeded; the default for data without timestamps).",
        show_default=False,
    ),
]
FractionOpt = Annotated[
    float, typer.Option("--test-fraction", help="Share held out by the per-user and random splits.")
]
RelevanceOpt = Annotated[
    str | None,
    typer.Option(
        "--relevance",
        help="What counts as relevant in the test period: purchase, click (and purchases) or any "
        "interaction. Default: purchase for the airline world, any for generic data.",
        show_default=False,
    ),
]
MinWeightOpt = Annotated[
    float | None,
    typer.Option("--relevant-min-weight", help="Only interactions with weight >= this are relevant."),
]
SeenOpt = Annotated[
    bool | None,
    typer.Option(
        "--exclude-seen/--keep-seen",
        help="Filter items a member acted on in training out of ranked lists and relevant sets. Default: "
        "filtered for generic data, kept for the airline world (offers are bought again on every trip).",
        show_default=False,
    ),
]
TransformOpt = Annotated[
    str | None,
    typer.Option(
        "--transform",
        help="Confidence transform of the summed cell weights for every model: raw (default), log1p, bm25.",
        show_default=False,
    ),
]
HalfLifeOpt = Annotated[
    str | None,
    typer.Option(
        "--half-life-days",
        help="Recency half-life of interaction weights for every model, in days, or 'none' (default 180).",
        show_default=False,
    ),
]
ChoosePriorOpt = Annotated[
    bool,
    typer.Option(
        "--choose-prior/--default-prior",
        help="Keep each learned model's default popularity prior only where it scores better than the plain "
        "model on the validation period (--test-days before the cut-off); time split only.",
    ),
]
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
    split: SplitOpt = None,
    test_fraction: FractionOpt = DEFAULT_TEST_FRACTION,
    relevance: RelevanceOpt = None,
    relevant_min_weight: MinWeightOpt = None,
    exclude_seen: SeenOpt = None,
    transform: TransformOpt = None,
    half_life_days: HalfLifeOpt = None,
    choose_prior: ChoosePriorOpt = False,
) -> None:
    """Train, evaluate on the held-out period, log the run to MLflow and register the model as challenger."""
    from training.pipeline import train_pipeline

    cfg = settings()
    with cli_errors():
        split_settings = SplitSettings(
            split,
            cutoff,
            test_days or cfg.test_days,
            test_fraction,
            relevance,
            relevant_min_weight,
            exclude_seen,
        )
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
            configs=with_interaction_overrides(load_configs(config), transform, half_life_days),
            primary_metric=cfg.primary_metric,
            progress=progress,
            split_settings=split_settings,
            announce=_announce,
            choose_prior=choose_prior,
        )
    report = result.report
    _describe_split(report.split)
    print_table(report.table)
    if report.policy is not None:
        typer.echo("")
        typer.echo(report.policy.markdown())
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
    split: SplitOpt = None,
    test_fraction: FractionOpt = DEFAULT_TEST_FRACTION,
    relevance: RelevanceOpt = None,
    relevant_min_weight: MinWeightOpt = None,
    exclude_seen: SeenOpt = None,
    transform: TransformOpt = None,
    half_life_days: HalfLifeOpt = None,
    choose_prior: ChoosePriorOpt = False,
    validation: Annotated[
        bool,
        typer.Option(
            "--validation/--test",
            help="Judge on the validation period (the --test-days before the test cut-off; the test period "
            "is never read) to choose settings; then report the test period.",
        ),
    ] = False,
    policies: Annotated[
        bool,
        typer.Option(
            "--policies/--no-policies",
            help="Replay the period's logged requests: the policy table (expected purchases and value per "
            "request, true and IPS/SNIPS/DR with 95 % CIs).",
        ),
    ] = True,
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline",
            help="Also replay the service's whole pipeline (eligibility, value, diversity) over this model "
            "kind (repeatable; one pipeline call per request).",
        ),
    ] = None,
    policy_out: Annotated[
        Path | None,
        typer.Option("--policy-out", help="Also write the policy table here (.csv or .md).", dir_okay=False),
    ] = None,
    closed_loop: Annotated[
        bool,
        typer.Option(
            "--closed-loop/--open-loop",
            help="Also replay the period in time order with the best model's own exposures (fatigue from "
            "what it showed), without and with the cap policy: purchases, dismissals and value per member.",
        ),
    ] = False,
    caps_policy: Annotated[
        Path,
        typer.Option("--caps-policy", help="Cap policy of the closed loop.", exists=True, dir_okay=False),
    ] = Path("config/caps.yaml"),
    ranker_without_cf: Annotated[
        bool,
        typer.Option(
            "--ranker-without-cf/--ranker-as-configured",
            help="With the ranker, also train it without its CF features (ranker_no_cf) and report both: "
            "what the CF features earn, measured in the same run.",
        ),
    ] = False,
) -> None:
    """Print the comparison table of the models (with popularity and the oracle) on the held-out period."""
    from recsys.evaluation import to_markdown
    from training.pipeline import evaluate_models

    cfg = settings()
    with cli_errors():
        split_settings = SplitSettings(
            split,
            cutoff,
            test_days or cfg.test_days,
            test_fraction,
            relevance,
            relevant_min_weight,
            exclude_seen,
        )
        report = evaluate_models(
            resolve_data(data, cfg),
            model,
            seed=cfg.seed if seed is None else seed,
            with_oracle=oracle,
            configs=with_interaction_overrides(load_configs(config), transform, half_life_days),
            progress=progress,
            validation=validation,
            split_settings=split_settings,
            announce=_announce,
            choose_prior=choose_prior,
            policies=policies,
            pipeline_kinds=tuple(pipeline or ()),
            ranker_without_cf=ranker_without_cf,
        )
    _describe_split(report.split, "validation" if validation else "held-out")
    print_table(report.table)
    if report.policy is not None:
        typer.echo("")
        typer.echo(report.policy.markdown())
        if policy_out is not None:
            policy_out.parent.mkdir(parents=True, exist_ok=True)
            policy_out.write_text(
                report.policy.table().to_csv(index=False)
                if policy_out.suffix == ".csv"
                else report.policy.markdown()
            )
            typer.echo(f"wrote {policy_out}")
    elif policies:
        typer.echo("no policy table: the dataset has no request log (table 'requests') to replay")
    if closed_loop:
        from recsys.evaluation import best_model, to_markdown
        from recsys.evaluation.policy_eval import PRIMARY_POLICY_METRIC
        from training.pipeline import closed_loop_report

        if report.policy is None:
            raise typer.BadParameter(
                "needs the policy replay (drop --no-policies)", param_hint="--closed-loop"
            )
        kind = best_model(report.table, PRIMARY_POLICY_METRIC)
        with cli_errors():
            loop = closed_loop_report(report, kind, caps_policy, seed=cfg.seed, progress=progress)
        typer.echo(f"\nClosed loop ({kind}, fatigue from its own exposures; expected values per member):\n")
        typer.echo(to_markdown(loop))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            report.table.to_csv(index=False) if out.suffix == ".csv" else to_markdown(report.table)
        )
        typer.echo(f"wrote {out}")


def _announce(line: str) -> None:
    typer.echo(f"settings: {line}")


def with_interaction_overrides(
    configs: dict[str, Any] | None, transform: str | None, half_life_days: str | None
) -> dict[str, Any] | None:
    """``configs`` with ``--transform`` / ``--half-life-days`` set in every model kind's interactions."""
    if transform is None and half_life_days is None:
        return configs
    update: dict[str, Any] = {}
    if transform is not None:
        if transform not in TRANSFORMS:
            raise ValueError(f"--transform {transform!r}: choose from {', '.join(TRANSFORMS)}")
        update["transform"] = transform
    if half_life_days is not None:
        if half_life_days.strip().lower() == "none":
            update["half_life_days"] = None
        else:
            try:
                update["half_life_days"] = float(half_life_days)
            except ValueError as exc:
                raise ValueError(f"--half-life-days {half_life_days!r}: a number of days or 'none'") from exc
    out = {k: dict(v) for k, v in (configs or {}).items()}
    for kind in MODEL_KINDS:
        cfg = out.setdefault(kind, {})
        cfg["interactions"] = {**dict(cfg.get("interactions") or {}), **update}
    return out


def _describe_split(split: TimeSplit, kind: str = "held-out") -> None:
    who = (
        f"{len(split.test_members)} test members ({len(split.cold_members)} cold), relevance = "
        f"{split.relevance}{f' (weight >= {split.min_weight:g})' if split.min_weight is not None else ''}, "
        f"seen items {'filtered' if split.exclude_seen else 'kept'}"
    )
    if split.method == "time":
        typer.echo(f"{kind} period {split.cutoff.date()} .. {split.end.date()}: {who}")
    elif split.method == "random":
        typer.echo(f"{kind} random split ({split.test_fraction:.0%} of each member's items): {who}")
    else:
        assert split.holdout is not None and split.holdout.member_cutoffs is not None
        cuts = split.holdout.member_cutoffs
        share = f" (last {split.test_fraction:.0%})" if split.test_fraction else ""
        typer.echo(
            f"{kind} {split.method} split{share}, member cut-offs {cuts.min().date()} .. "
            f"{cuts.max().date()}: {who}"
        )


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the top-level app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
