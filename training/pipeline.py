"""The offline training pipeline: validate data, split in time, train every model, evaluate against the
baseline and the oracle, pick the best, refit it on all data, log and register it in MLflow.

Steps and where they live:

1. ``check_dataset`` — bad input is refused up front with a message naming the problem (no dataset, no
   members, a single member, no offers, NaN in a required member/offer attribute).
2. ``recsys.evaluation.time_split`` — train before ``T``, test on ``[T, end]``.
3. ``ModelBundle.train(..., before=T)`` per model kind, then ``evaluate_recommender`` on the test period; the
   oracle (true acceptance probabilities from the hidden truth) when the dataset has one.
4. The model to register: ``--model`` if one was named, else the best on the primary metric (NDCG@10).
   It is refitted on all data up to the dataset's end (``refit=True``) — its logged metrics are those of the
   same configuration trained before ``T`` — and published via :func:`recsys.registry.publish` as
   ``challenger``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.data.layout import DatasetError, fingerprint, has_table, read_manifest, read_table
from recsys.evaluation import (
    BASELINE,
    BASELINE_GLOBAL,
    BASELINE_MODEL_GROUPS,
    DEFAULT_KS,
    DEFAULT_TEST_DAYS,
    DEFAULT_TEST_FRACTION,
    ORACLE,
    ORACLE_ON_POPULARITY,
    ORACLE_UNCONSTRAINED,
    PRIMARY_METRIC,
    EvaluationError,
    ModelEvaluation,
    OracleRecommender,
    PreferenceOracle,
    TimeSplit,
    best_model,
    comparison_table,
    default_exclude_seen,
    default_relevance,
    default_split,
    evaluate_recommender,
    has_oracle,
    is_generic,
    make_split,
    to_markdown,
)
from recsys.evaluation.policies import standard_policies
from recsys.evaluation.policy_eval import PRIMARY_POLICY_METRIC, PolicyReport, evaluate_policies
from recsys.evaluation.replay import Replay, load_replay
from recsys.models.base import DEFAULT_PRIOR_WEIGHT
from recsys.registry import (
    CHALLENGER,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    PublishResult,
    dumps_params,
    publish,
)
from recsys.schema import NULLABLE, REQUESTS, SOURCE_NULLABLE, Col

# ``all`` trains and compares these; ``ranker`` (the contextual acceptance ranker, trained on logged
# impressions) is trained when named.
ALL_KINDS: tuple[str, ...] = ("popularity", "als", "bpr", "lightfm", "hybrid")
MODEL_KINDS: tuple[str, ...] = (*ALL_KINDS, "ranker")
RANKER = "ranker"
RANKER_NO_CF = "ranker_no_cf"  # the ranker's ablation without CF features (evaluate --ranker-without-cf)


def without_cf(config: Any) -> dict[str, Any]:
    """A ``ranker`` bundle configuration with the CF features switched off (everything else as given)."""
    cfg = _as_dict(config)
    model = dict(cfg.get("model") or {})
    model["ranker"] = {**dict(model.get("ranker") or {}), "cf_features": False}
    return {**cfg, "model": model}


class PipelineError(ValueError):
    """The pipeline cannot run on this input; the message says why."""


@dataclass
class EvaluationReport:
    """Everything the evaluation produced: the split, per-model results, the oracle and the table."""

    split: TimeSplit
    evaluations: list[ModelEvaluation]
    oracle: ModelEvaluation | None
    table: pd.DataFrame
    bundles: dict[str, Any] = field(repr=False, default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    references: list[ModelEvaluation] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)  # effective_settings(), as printed
    # The ranker's acceptance metrics on the test period's impressions (AUC, log loss, calibration) beside
    # its logistic-regression reference, when the ranker was trained.
    acceptance: Any = None
    configs: dict[str, Any] = field(default_factory=dict)  # per kind, as trained (after choose_priors)
    # the policy table: replayed test-period requests (None: the dataset has no request log)
    policy: PolicyReport | None = None
    replay: Replay | None = field(repr=False, default=None)
    split_dir: Path | None = None  # the dataset evaluated

    def evaluation(self, kind: str) -> ModelEvaluation:
        for e in self.evaluations:
            if e.name == kind:
                return e
        raise KeyError(kind)

    @property
    def markdown(self) -> str:
        return to_markdown(self.table)


@dataclass
class TrainResult:
    report: EvaluationReport
    kind: str
    bundle: Any
    published: PublishResult | None
    fingerprint: str
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------


def check_dataset(dataset_dir: Path | str) -> dict[str, Any]:
    """Refuse unusable data with a clear :class:`PipelineError`; return the manifest."""
    root = Path(dataset_dir)
    if not root.exists():
        raise PipelineError(f"{root}: no such dataset directory")
    try:
        manifest = read_manifest(root)
        members = read_table(root, "members")
        offers = read_table(root, "offers")
    except DatasetError as exc:
        raise PipelineError(str(exc)) from exc
    if manifest.get("import_format") == "air-data" and (offers.empty or members.empty):
        raise PipelineError(
            f"{root}: an air-data import holds members' LRFMC aggregates, no offers or interactions to "
            f"train or evaluate a recommender on ({len(members):,} members, {len(offers):,} offers); segment "
            "it with `recsys segment --data`, or import interactions (--format interactions or canonical)"
        )
    if members.empty:
        raise PipelineError(f"{root}: the dataset has no members")
    if members[Col.MEMBER_ID].nunique() < 2:
        raise PipelineError(
            f"{root}: the dataset has a single member; collaborative models need at least two members"
        )
    if offers.empty:
        raise PipelineError(f"{root}: the dataset has no offers to recommend")
    # The data dictionary's nullability for this dataset's source: an interactions import has no prices or
    # tiers, an air-data import no home airports; those columns are null by design, not missing features.
    extra = SOURCE_NULLABLE.get(str(manifest.get("import_format") or ""), {})
    for name, frame in (("members", members), ("offers", offers)):
        nullable = NULLABLE.get(name, frozenset()) | extra.get(name, frozenset())
        for col in frame.columns:
            if col in nullable:
                continue
            values = frame[col]
            if values.dtype.kind in "fc" and np.isnan(values.to_numpy(dtype=float)).any():
                n = int(values.isna().sum())
                raise PipelineError(f"{root}: {name}.{col} has {n} NaN value(s); it is a required feature")
            if values.dtype == object and values.isna().any():
                n = int(values.isna().sum())
                raise PipelineError(
                    f"{root}: {name}.{col} has {n} missing value(s); it is a required feature"
                )
    return manifest


def data_fingerprint(dataset_dir: Path | str, manifest: Mapping[str, Any] | None = None) -> str:
    """The manifest's fingerprint (computed when the dataset was written), else a fresh one."""
    manifest = manifest if manifest is not None else read_manifest(dataset_dir)
    value = manifest.get("fingerprint")
    return str(value) if value else fingerprint(dataset_dir)


def flatten_params(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested configuration as flat ``a.b.c`` parameters (lists/tuples serialised as JSON)."""
    out: dict[str, str] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(flatten_params(item, f"{name}."))
        elif isinstance(item, list | tuple | set):
            out[name] = dumps_params(list(item))
        else:
            out[name] = str(item)
    return out


def _kinds(model: str | Sequence[str]) -> list[str]:
    """Model kinds of ``model``: one kind, ``all``, or a comma-separated list of them (``all,ranker``)."""
    names = [m.strip() for m in model.split(",")] if isinstance(model, str) else list(model)
    kinds: list[str] = []
    for name in names:
        for kind in ALL_KINDS if name == "all" else (name,):
            if kind not in kinds:
                kinds.append(kind)
    unknown = [k for k in kinds if k not in MODEL_KINDS]
    if unknown or not kinds:
        raise PipelineError(f"unknown model kind(s) {unknown}; choose from {', '.join(MODEL_KINDS)} or all")
    return kinds


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitSettings:
    """How the evaluation splits the data and what it counts as relevant (``recsys evaluate --split ...``).

    ``relevance`` and ``exclude_seen`` None: the default for the kind of data (purchases and no seen filter
    for the airline world; any interaction and the filter for generic data)."""

    method: str | None = None  # None: time, or random for data without timestamps
    cutoff: str | None = None
    test_days: int = DEFAULT_TEST_DAYS
    test_fraction: float = DEFAULT_TEST_FRACTION
    relevance: str | None = None
    min_weight: float | None = None
    exclude_seen: bool | None = None


def effective_settings(
    dataset_dir: Path | str,
    kinds: Sequence[str],
    configs: Mapping[str, Any] | None,
    split: SplitSettings,
    seed: int,
) -> list[str]:
    """The settings a run will use, one line each: the split and, per model kind, how interactions become the
    matrix (event weights, the weight column, decay, transform), alpha and the popularity prior. Printed at
    the start of every run and logged to MLflow, so no default is silent."""
    from recsys.data.layout import table_columns
    from recsys.models.bundle import BundleConfig
    from recsys.models.registry import config_class

    root = Path(dataset_dir)
    method = split.method or default_split(root)
    generic = is_generic(root)
    kind_of_data = "generic data" if generic else "the airline world"
    relevance = split.relevance or default_relevance(root)
    seen = split.exclude_seen if split.exclude_seen is not None else default_exclude_seen(root)
    how = {
        "time": f"time cut-off {split.cutoff or f'{split.test_days} days before the end'}",
        "per-user": f"per-user time split, last {split.test_fraction:.0%} of each member's interactions",
        "leave-last-out": "leave-last-out (each member's last interaction)",
        "random": f"random split of {split.test_fraction:.0%} of each member's items (seed {seed})",
    }.get(method, method)
    if split.method is None and method == "random":
        how += " (the interactions have no timestamps)"
    lines = [
        f"split: {how}",
        f"relevance: {relevance}"
        + (f", weight >= {split.min_weight:g}" if split.min_weight is not None else "")
        + ("" if split.relevance else f" (default for {kind_of_data})"),
        f"already-seen items: {'filtered out of lists and relevant sets' if seen else 'kept'}"
        + ("" if split.exclude_seen is not None else f" (default for {kind_of_data})"),
    ]
    undated = split.method is None and method == "random"
    columns = table_columns(root, "interactions")
    if Col.WEIGHT in columns:
        lines.append("interactions.weight: multiplies each row's event weight")
    else:
        lines.append("interactions has no 'weight' column: every row counts its event type's weight")
    for kind in kinds:
        if kind == RANKER:  # trained on logged impressions, with a configuration of its own
            lines.append(f"{kind}: contextual acceptance ranker on the logged impressions before the cut-off")
            continue
        cfg = BundleConfig.model_validate((configs or {}).get(kind) or {})
        inter = cfg.interactions
        model_cfg = config_class(kind).model_validate({**cfg.model, "random_state": seed})
        ev = inter.events
        decay = f"half-life {inter.half_life_days:g} days" if inter.half_life_days is not None else "no decay"
        if undated:
            decay += " (rows without a timestamp are not decayed)"
        parts = [
            f"events purchase={ev.purchase:g} click={ev.click:g} impression={ev.impression:g} "
            f"dismiss={ev.dismiss:g}",
            f"decay {decay}",
            f"transform {inter.transform}"
            + (f" (k1={inter.bm25_k1:g}, b={inter.bm25_b:g})" if inter.transform == "bm25" else ""),
        ]
        alpha = getattr(model_cfg, "alpha", None)
        if alpha is not None:
            parts.append(f"alpha {alpha:g}")
        groups = " × ".join(cfg.groups_for(kind)) or "none (global)"
        if kind == BASELINE:
            parts.append(f"groups {groups}")
        elif model_cfg.prior_weight is None:
            prior = f"{DEFAULT_PRIOR_WEIGHT:g} over groups {groups} if members have them, else 0"
            parts.append(f"prior default: {prior}")
        else:
            parts.append(f"prior_weight {model_cfg.prior_weight:g} over groups {groups}")
        lines.append(f"{kind}: " + "; ".join(parts))
    return lines


def evaluate_models(
    dataset_dir: Path | str,
    model: str | Sequence[str] = "all",
    *,
    cutoff: str | None = None,
    test_days: int = DEFAULT_TEST_DAYS,
    ks: Sequence[int] = DEFAULT_KS,
    seed: int = 42,
    configs: Mapping[str, Any] | None = None,
    with_oracle: bool = True,
    with_baseline: bool = True,
    progress: bool = False,
    validation: bool = False,
    split_settings: SplitSettings | None = None,
    announce: Callable[[str], None] | None = None,
    choose_prior: bool = False,
    policies: bool = True,
    pipeline_kinds: Sequence[str] = (),
    ranker_without_cf: bool = False,
) -> EvaluationReport:
    """Train each model on events before the cut-off and evaluate it on the test period.

    The popularity baseline is always included (``with_baseline``) so every table has its reference row.
    ``validation`` judges on the ``test_days`` *before* the test period's cut-off instead (models trained
    before that), never looking at the test period: choose settings there, report the test period.
    ``split_settings`` chooses another split, the relevance and the seen filter (``cutoff``/``test_days`` are
    its fields when it is given). ``announce`` receives the effective settings, one line each, before any
    training starts, and each model's resolved prior. ``choose_prior`` keeps a learned model's default
    popularity prior only where it scores better than the plain model on the validation period (the
    ``test_days`` before the cut-off; :func:`choose_priors`). ``ranker_without_cf`` also trains the ``ranker``
    kind without its CF features (:data:`RANKER_NO_CF`) and judges it beside, in the same run.

    With ``policies`` and a request log in the dataset, the test period's requests are replayed too
    (:mod:`recsys.evaluation.policy_eval`): every model's slates valued by expected purchases and expected
    value per request, true (generated worlds) and estimated from the logs; ``pipeline_kinds`` also replay
    the service's whole pipeline over those models (slower: one pipeline call per request). Each model's
    ``ev_per_request`` and ``purchases_per_request`` join its metrics.
    """
    from recsys.models.bundle import ModelBundle

    root = Path(dataset_dir)
    kinds = _kinds(model)
    if with_baseline and BASELINE not in kinds:
        kinds = [BASELINE, *kinds]
    check_dataset(root)
    ss = split_settings or SplitSettings(cutoff=cutoff, test_days=test_days)
    settings = effective_settings(root, kinds, configs, ss, seed)
    for line in settings:
        (announce or _no_announce)(line)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    method = ss.method or default_split(root)
    split = make_split(
        root,
        method,  # type: ignore[arg-type]
        cutoff=ss.cutoff,
        test_days=ss.test_days,
        test_fraction=ss.test_fraction,
        relevance=ss.relevance,  # type: ignore[arg-type]
        min_weight=ss.min_weight,
        exclude_seen=ss.exclude_seen,
        seed=seed,
    )
    if validation:
        if method != "time":
            raise EvaluationError(f"--validation needs the time split, not --split {method}")
        split = make_split(
            root,
            "time",
            test_days=ss.test_days,
            end=split.cutoff,
            relevance=split.relevance,
            min_weight=ss.min_weight,
            exclude_seen=split.exclude_seen,
        )
    offers = read_table(root, "offers", columns=[Col.OFFER_ID, Col.FAMILY])
    timings["split_s"] = time.perf_counter() - t0
    if choose_prior:
        if method != "time":
            raise EvaluationError(
                "choosing the prior (--choose-prior) validates on the period before a time cut-off; it needs "
                f"--split time, not --split {method}"
            )
        val = make_split(
            root,
            "time",
            test_days=ss.test_days,
            end=split.cutoff,
            relevance=split.relevance,
            min_weight=ss.min_weight,
            exclude_seen=split.exclude_seen,
        )
        configs = choose_priors(
            root,
            [k for k in kinds if k not in (BASELINE, RANKER)],
            configs,
            val,
            offers,
            seed,
            announce or _no_announce,
        )

    acceptance = None

    def train_and_evaluate(name: str, kind: str, config: Any) -> tuple[Any, ModelEvaluation]:
        nonlocal acceptance
        t1 = time.perf_counter()
        if kind == RANKER:
            from recsys.ranker.evaluation import heldout_report
            from recsys.ranker.training import train_ranker_bundle

            cutoff = split.before
            if split.holdout is not None or cutoff is None:
                raise PipelineError(
                    "the ranker learns from impressions before a time cut-off: use the time split"
                )
            bundle, training = train_ranker_bundle(
                root, config, before=cutoff, seed=seed, progress=progress, with_reference=name == kind
            )
            train_s = time.perf_counter() - t1
            if name == kind:  # the acceptance report is the ranker's own, not its ablation's
                t2 = time.perf_counter()
                acceptance = heldout_report(root, bundle, cutoff, split.end, reference=training.reference)
                timings[f"{name}.acceptance_eval_s"] = time.perf_counter() - t2
        else:
            bundle = ModelBundle.train(
                root, kind, config, before=split.before, seed=seed, progress=progress, holdout=split.holdout
            )
            if kind != BASELINE and announce is not None and name == kind:
                weight = bundle.params.get("model.prior_weight_effective", 0.0)
                why = f"over groups {' × '.join(bundle.group_keys)}" if weight else "(plain model, no prior)"
                announce(f"{name}: prior_weight {weight:g} {why}")
            train_s = time.perf_counter() - t1
        ev = evaluate_recommender(name, _recommend_fn(bundle), split, offers, ks=ks, progress=progress)
        ev.train_seconds = train_s
        timings[f"{name}.train_s"] = train_s
        timings[f"{name}.eval_s"] = ev.eval_seconds
        return bundle, ev

    evaluations: list[ModelEvaluation] = []
    bundles: dict[str, Any] = {}
    for kind in tqdm(kinds, desc="models", unit="model", disable=not progress):
        bundles[kind], ev = train_and_evaluate(kind, kind, (configs or {}).get(kind))
        evaluations.append(ev)
        if kind == RANKER and ranker_without_cf:
            # The same ranker without its CF features, judged in the same run: what CF earns (issue 16).
            bundles[RANKER_NO_CF], ev = train_and_evaluate(
                RANKER_NO_CF, kind, without_cf((configs or {}).get(kind))
            )
            evaluations.append(ev)

    oracle, references = None, []
    global_bundle = None
    if with_baseline:
        # The same baseline without groups: the comparison is with the better of the two, not the weaker.
        cfg = (configs or {}).get(BASELINE) or {}
        cfg = dict(cfg.model_dump() if hasattr(cfg, "model_dump") else cfg)
        global_cfg = {**cfg, "model": {**dict(cfg.get("model") or {}), "by_group": False}}
        global_bundle, global_eval = train_and_evaluate(BASELINE_GLOBAL, BASELINE, global_cfg)
        references.append(global_eval)
        learned = [k for k in kinds if k != BASELINE]
        if learned:
            # The same baseline over the groups the first learned model was trained with.
            model_groups = list(bundles[learned[0]].group_keys)
            references.append(
                train_and_evaluate(BASELINE_MODEL_GROUPS, BASELINE, {**cfg, "groups": model_groups})[1]
            )
    if with_oracle and has_oracle(root):
        oracle = evaluate_recommender(
            ORACLE,
            OracleRecommender(root, offers[Col.OFFER_ID], candidates=split.exposed).recommend,
            split,
            offers,
            ks=ks,
            progress=progress,
        )
        timings["oracle.eval_s"] = oracle.eval_seconds
        unconstrained = evaluate_recommender(
            ORACLE_UNCONSTRAINED,
            OracleRecommender(root, offers[Col.OFFER_ID]).recommend,
            split,
            offers,
            ks=ks,
            progress=progress,
        )
        references.append(unconstrained)
        timings["oracle_all_offers.eval_s"] = unconstrained.eval_seconds
        if BASELINE in bundles:
            on_popularity = evaluate_recommender(
                ORACLE_ON_POPULARITY,
                PreferenceOracle(
                    root, offers[Col.OFFER_ID], _prior_fn(bundles[BASELINE], offers[Col.OFFER_ID])
                ).recommend,
                split,
                offers,
                ks=ks,
                progress=progress,
            )
            references.append(on_popularity)
            timings[f"{ORACLE_ON_POPULARITY}.eval_s"] = on_popularity.eval_seconds
    policy_report = replay = None
    if policies and has_table(root, REQUESTS.name) and BASELINE in bundles:
        t2 = time.perf_counter()
        replay, policy_report = _policy_report(root, split, bundles, global_bundle, pipeline_kinds, progress)
        timings["policies.eval_s"] = time.perf_counter() - t2
        names = {r.name for r in policy_report.results}
        for e in [*evaluations, *references]:
            # a model's row as the service values offers; a contextual ranker's is its pipeline replay
            name = e.name if e.name in names else f"{e.name}_pipeline"
            if name not in names:
                continue
            row = policy_report.result(name)
            e.metrics[PRIMARY_POLICY_METRIC] = row.primary
            e.metrics["purchases_per_request"] = row.true.get("purchases", row.purchases["snips"].value)
    table = comparison_table(evaluations, oracle, references=references)
    return EvaluationReport(
        split,
        evaluations,
        oracle,
        table,
        bundles,
        timings,
        references,
        settings,
        acceptance,
        dict(configs or {}),
        policy=policy_report,
        replay=replay,
        split_dir=root,
    )


def _no_announce(line: str) -> None:
    del line


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    return dict(config.model_dump() if hasattr(config, "model_dump") else config)


def choose_priors(
    root: Path,
    kinds: Sequence[str],
    configs: Mapping[str, Any] | None,
    validation: TimeSplit,
    offers: pd.DataFrame,
    seed: int,
    announce: Callable[[str], None],
) -> dict[str, Any]:
    """``configs`` with each learned kind's default prior kept only where it helped: the kind is trained with
    its default prior and with ``prior_weight`` 0 before the validation period and judged on it (primary
    metric); the prior stays only when it scores strictly higher. An explicit ``prior_weight`` is left as set.
    """
    from recsys.models.bundle import ModelBundle

    out = {k: _as_dict(v) for k, v in (configs or {}).items()}
    for kind in kinds:
        cfg = out.get(kind, {})
        if dict(cfg.get("model") or {}).get("prior_weight") is not None:
            continue
        scores: dict[str, float] = {}
        for label, weight in (("prior", None), ("plain", 0.0)):
            model = {**dict(cfg.get("model") or {})}
            if weight is not None:
                model["prior_weight"] = weight
            bundle = ModelBundle.train(
                root, kind, {**cfg, "model": model}, before=validation.before, seed=seed
            )
            if label == "prior" and not bundle.params.get("model.prior_weight_effective"):
                break  # no member groups: the default already is the plain model
            ev = evaluate_recommender(f"{kind}.{label}", _recommend_fn(bundle), validation, offers)
            scores[label] = ev.primary
        if len(scores) < 2:
            continue
        keep = scores["prior"] > scores["plain"]
        announce(
            f"{kind}: on the validation period {validation.cutoff.date()} .. {validation.end.date()} "
            f"{PRIMARY_METRIC} {scores['prior']:.4f} with the prior, {scores['plain']:.4f} without: "
            f"{'prior kept' if keep else 'plain model (prior_weight 0)'}"
        )
        if not keep:
            out[kind] = {**cfg, "model": {**dict(cfg.get("model") or {}), "prior_weight": 0.0}}
    return out


def _policy_report(
    root: Path,
    split: TimeSplit,
    bundles: Mapping[str, Any],
    global_bundle: Any,
    pipeline_kinds: Sequence[str],
    progress: bool,
) -> tuple[Replay, PolicyReport]:
    """Replay the test period's requests with every model, the baselines and the oracles."""
    unknown = [k for k in pipeline_kinds if k not in bundles]
    if unknown:
        raise PipelineError(
            f"--pipeline names model(s) {unknown} that were not trained; have {sorted(bundles)}"
        )
    replay = load_replay(root, split.cutoff, split.end, progress=progress)
    policies = standard_policies(
        root, replay, bundles, global_popularity=global_bundle, pipeline_kinds=pipeline_kinds
    )
    return replay, evaluate_policies(replay, policies, progress=progress)


def closed_loop_report(
    report: EvaluationReport,
    kind: str,
    caps_policy: Path | str,
    *,
    seed: int = 42,
    progress: bool = False,
) -> pd.DataFrame:
    """The closed-loop check of fatigue for model ``kind`` (ranked as the service values offers), without
    caps and with the cap policy at ``caps_policy``: expected impressions, purchases, dismissals and value
    per member over the replayed test period."""
    from recsys.capping.api import PolicyHolder, build_enforcer
    from recsys.evaluation.closed_loop import closed_loop, loop_table
    from recsys.evaluation.policies import BundleScorer
    from recsys.evaluation.policy_eval import margins_by_offer

    replay, root = report.replay, report.split_dir
    if replay is None or replay.responder is None or root is None:
        raise PipelineError(
            "the closed loop needs the replayed request log of a generated world (its hidden response model)"
        )
    if kind not in report.bundles:
        raise PipelineError(f"no trained model {kind!r} for the closed loop; have {sorted(report.bundles)}")
    bundle = report.bundles[kind]
    if getattr(bundle, "context_ranker", None) is not None:
        # a contextual ranker scores each request in its context (exposures: the logged ones before it)
        from recsys.ranker.policy import RankerScorer

        scores = RankerScorer(bundle, root, objective="expected_value", name=kind).score(replay.batch)
    else:
        scores = BundleScorer(kind, bundle, "value", margins_by_offer(replay)).score(replay.batch)
    offers = read_table(root, "offers")
    members = read_table(root, "members", columns=[Col.MEMBER_ID, Col.TIER, Col.TIME_ZONE])
    results = [closed_loop(replay, scores, kind, offers, members, None, seed=seed, progress=progress)]
    caps = build_enforcer(None, PolicyHolder(caps_policy))
    try:
        results.append(closed_loop(replay, scores, kind, offers, members, caps, seed=seed, progress=progress))
    finally:
        caps.close()
    return loop_table(results)


def _prior_fn(bundle: Any, offer_ids: pd.Series) -> Any:
    """Members × offers scores of ``bundle`` (the popularity baseline), exactly as its row of the table ranks
    them — the prior of ``PreferenceOracle``."""
    ids = pd.Index([str(o) for o in offer_ids])

    def prior(member_ids: np.ndarray) -> np.ndarray:
        recs = bundle.recommend(list(member_ids), k=len(ids))
        out = np.zeros((len(member_ids), len(ids)), dtype=np.float64)
        rows = pd.Index(member_ids).get_indexer(recs[Col.MEMBER_ID])
        cols = ids.get_indexer(recs[Col.OFFER_ID])
        ok = (rows >= 0) & (cols >= 0)
        out[rows[ok], cols[ok]] = np.maximum(recs["score"].to_numpy(np.float64)[ok], 0.0)
        return out

    return prior


def _recommend_fn(bundle: Any) -> Any:
    def recommend(member_ids: np.ndarray, k: int) -> pd.DataFrame:
        return bundle.recommend(list(member_ids), k=k)

    return recommend


# ----------------------------------------------------------------------------------------------------------
# Training + registration
# ----------------------------------------------------------------------------------------------------------


def train_pipeline(
    dataset_dir: Path | str,
    model: str | Sequence[str] = "all",
    *,
    tracking_uri: str,
    model_name: str = DEFAULT_MODEL_NAME,
    experiment: str = DEFAULT_EXPERIMENT,
    register: bool = True,
    log: bool = True,
    refit: bool = True,
    cutoff: str | None = None,
    test_days: int = DEFAULT_TEST_DAYS,
    seed: int = 42,
    configs: Mapping[str, Any] | None = None,
    primary_metric: str = PRIMARY_METRIC,
    progress: bool = False,
    split_settings: SplitSettings | None = None,
    announce: Callable[[str], None] | None = None,
    choose_prior: bool = False,
) -> TrainResult:
    """Evaluate, choose, refit and publish. ``model`` = one kind (registered even if another scores higher)
    or ``"all"`` (the best on ``primary_metric`` is registered)."""
    from recsys.registry import check_tracking

    root = Path(dataset_dir)
    _kinds(model)
    if log:
        check_tracking(tracking_uri)  # fail before spending minutes on training
    manifest = check_dataset(root)
    from recsys.models.bundle import ModelBundle

    t0 = time.perf_counter()
    report = evaluate_models(
        root,
        model,
        cutoff=cutoff,
        test_days=test_days,
        seed=seed,
        configs=configs,
        progress=progress,
        split_settings=split_settings,
        announce=announce,
        choose_prior=choose_prior,
    )
    configs = report.configs
    timings = dict(report.timings)
    timings["evaluation_total_s"] = time.perf_counter() - t0
    requested = _kinds(model)
    if primary_metric not in report.table or not report.table[primary_metric].notna().any():
        # no request log to replay (imported data): rank on the held-out NDCG instead
        primary_metric = PRIMARY_METRIC
    kind = requested[0] if len(requested) == 1 else best_model(report.table, primary_metric)
    chosen_eval = report.evaluation(kind)
    if not np.isfinite(chosen_eval.metrics.get(primary_metric, np.nan)):
        raise EvaluationError(f"{kind}: no {primary_metric} was computed; cannot register it")

    t1 = time.perf_counter()
    if refit and kind == RANKER:
        from recsys.ranker.training import train_ranker_bundle

        bundle = train_ranker_bundle(
            root, (configs or {}).get(kind), before=None, seed=seed, progress=progress
        )[0]
    elif refit:
        bundle = ModelBundle.train(
            root, kind, (configs or {}).get(kind), before=None, seed=seed, progress=progress
        )
    else:
        bundle = report.bundles[kind]
    timings["refit_s"] = time.perf_counter() - t1
    fp = data_fingerprint(root, manifest)

    published = None
    if log:
        t2 = time.perf_counter()
        published = _publish(
            root, manifest, fp, report, kind, bundle, tracking_uri, model_name, experiment, register,
            refit, seed, configs, primary_metric,
        )  # fmt: skip
        timings["mlflow_s"] = time.perf_counter() - t2
    return TrainResult(report, kind, bundle, published, fp, timings)


def _publish(
    root: Path,
    manifest: Mapping[str, Any],
    fp: str,
    report: EvaluationReport,
    kind: str,
    bundle: Any,
    tracking_uri: str,
    model_name: str,
    experiment: str,
    register: bool,
    refit: bool,
    seed: int,
    configs: Mapping[str, Any] | None,
    primary_metric: str,
) -> PublishResult:
    split = report.split
    params: dict[str, Any] = {
        "model.kind": kind,
        "model.refit_on_all_data": refit,
        "seed": seed,
        "data.dir": str(root.resolve()),
        "data.fingerprint": fp,
        "data.generator": manifest.get("generator", manifest.get("source", "")),
        "data.seed": manifest.get("seed", ""),
        "split.method": split.method,
        "split.cutoff": split.cutoff.isoformat(),
        "split.end": split.end.isoformat(),
        "split.test_fraction": split.test_fraction,
        "split.relevance": split.relevance,
        "split.relevant_min_weight": split.min_weight,
        "split.exclude_seen": split.exclude_seen,
        "eval.primary_metric": primary_metric,
        "eval.ks": list(DEFAULT_KS),
        "models_compared": [e.name for e in report.evaluations],
    }
    for name, b in report.bundles.items():
        params.update(flatten_params(getattr(b, "params", {}) or {}, f"{name}."))
    params = flatten_params(params)
    metrics: dict[str, float] = {}
    for e in [*report.evaluations, *([report.oracle] if report.oracle else []), *report.references]:
        metrics.update({f"{e.name}.{k}": v for k, v in e.metrics.items()})
        if e.train_seconds is not None:
            metrics[f"{e.name}.train_seconds"] = e.train_seconds
        metrics[f"{e.name}.eval_seconds"] = e.eval_seconds
    model_metrics = dict(report.evaluation(kind).metrics)
    row = report.table.set_index("model").loc[kind]
    for extra in ("frac_of_oracle", "vs_baseline"):
        if pd.notna(row[extra]):
            model_metrics[extra] = float(row[extra])
    slices = pd.concat(
        [
            e.slices.assign(model=e.name)
            for e in [*report.evaluations, *([report.oracle] if report.oracle else []), *report.references]
        ],
        ignore_index=True,
    )
    if report.acceptance is not None:
        for _, r in report.acceptance.metrics.iterrows():
            for m in ("auc", "log_loss", "brier", "ece"):
                metrics[f"acceptance.{r['model']}.{m}"] = float(r[m])
        if kind == RANKER:
            ranker_row = report.acceptance.metrics.set_index("model").loc["ranker_lightgbm"]
            model_metrics.update(
                {f"acceptance_{m}": float(ranker_row[m]) for m in ("auc", "log_loss", "ece")}
            )
    if report.policy is not None:
        metrics.update(report.policy.metrics())
    texts = {
        **(
            {
                "evaluation/policies.md": report.policy.markdown(),
                "evaluation/policies.csv": report.policy.table().to_csv(index=False),
            }
            if report.policy is not None
            else {}
        ),
        "evaluation/comparison.md": report.markdown,
        "evaluation/comparison.csv": report.table.to_csv(index=False),
        "evaluation/slices.csv": slices.to_csv(index=False),
        "evaluation/split.json": json.dumps(split.summary(), indent=2),
        "evaluation/settings.txt": "\n".join(report.settings) + "\n",
        "data/manifest.json": json.dumps(manifest, indent=2, sort_keys=True, default=str),
    }
    if report.acceptance is not None:
        texts["evaluation/acceptance.md"] = report.acceptance.markdown()
        texts["evaluation/acceptance_by_placement.csv"] = report.acceptance.by_placement.to_csv(index=False)
    tags = {
        "kind": kind,
        "data_fingerprint": fp,
        "cutoff": split.cutoff.isoformat(),
        "primary_metric": primary_metric,
        "metrics_from": (
            f"held-out evaluation of the same configuration trained before {split.cutoff.date()}"
            if split.method == "time"
            else f"held-out evaluation of the same configuration, {split.method} split"
        ),
        "python": platform.python_version(),
    }
    input_ids = split.test_members[:3]
    return publish(
        tracking_uri,
        bundle,
        model_name=model_name,
        experiment=experiment,
        params=params,
        metrics=metrics,
        model_metrics=model_metrics,
        texts=texts,
        tags=tags,
        input_member_ids=[str(m) for m in input_ids],
        register=register,
        alias=CHALLENGER,
        run_name=f"{kind}-{fp[:8]}",
    )
