"""bench-train: wall times of the offline pipeline (run by ``make bench-train``).

Part 1 — the 50,000-member world: the whole pipeline (data checks, time split, features, all five models,
faiss indexes, offline evaluation with the oracle, refit of the best model, MLflow logging and registration).
Target: ≤ 3 min.

Part 2 — a 1,000,000-member world, in one process:
  * the bare ``implicit`` ALS fit on the final interaction matrix (the floor);
  * the ALS path from raw data to a registered model (load, features, matrix, fit, index, calibration,
    artefacts, MLflow registration) — target ≤ 2× the bare fit;
  * the offline evaluation on its own (time split, recommendations for every test member, metrics, slices,
    oracle) for an ALS model trained before the cut-off (its training is not counted);
  * the total (target ≤ 20 min) and the peak RSS of the process (target ≤ 12 GB).

Part 3 — the contextual acceptance ranker on the 50,000-member world: its training before the test cut-off
(the base ALS at the cut-off, the ALS and profiles at the training window's start, impression features,
LightGBM and its calibration), as ``recsys train --model ranker`` runs it; reported, no target.

Worlds are generated under ``var/bench/`` when missing (generation is not timed). MLflow logs to a throw-away
SQLite store. Results are printed and written to ``var/bench/bench_train.json``.

    python bench/bench_train.py                 # both parts
    python bench/bench_train.py --skip-1m       # only the 50k part
    python bench/bench_train.py --world-1m DIR  # use an existing 1M world
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_DIR = ROOT / "var" / "bench"
TARGET_50K_S = 180.0
TARGET_1M_TOTAL_S = 20 * 60.0
TARGET_RSS_GB = 12.0
SEED = 42


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used: on a shared machine, a load-independent figure."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def step(message: str) -> None:
    """A progress line as soon as a step ends (the 1M part runs for many minutes)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}; peak RSS {peak_rss_gb():.2f} GB", flush=True)


def ensure_world(path: Path, members: int) -> Path:
    from recsys.data.generator import generate_world

    if (path / "manifest.json").is_file():
        return path
    print(f"generating a {members:,}-member world in {path} (not timed) ...", flush=True)
    t = time.perf_counter()
    generate_world(path, members, SEED, progress=True)
    print(f"  generated in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def bench_50k(world: Path, tracking: str) -> dict[str, Any]:
    from recsys.evaluation import to_markdown
    from recsys.evaluation.policy_eval import PRIMARY_POLICY_METRIC
    from training.pipeline import train_pipeline

    t0, c0 = time.perf_counter(), cpu_s()
    load0 = os.getloadavg()[0]
    # as `recsys train --model all` runs it: the model is chosen by expected value per replayed request
    result = train_pipeline(
        world,
        "all",
        tracking_uri=tracking,
        model_name="bench-50k",
        progress=False,
        primary_metric=PRIMARY_POLICY_METRIC,
    )
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    print("\n== 50,000-member world: whole pipeline ==")
    print(to_markdown(result.report.table))
    for key, value in sorted(result.timings.items()):
        print(f"  {key:32s} {value:8.1f} s")
    print(f"  whole pipeline wall time         {wall:8.1f} s   target <= {TARGET_50K_S:.0f} s  "
          f"{verdict(wall <= TARGET_50K_S)}")  # fmt: skip
    print(
        f"  CPU time of the pipeline         {cpu:8.1f} s   (load average {load0:.1f} -> "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; wall time includes waiting for a CPU)"
    )
    table = result.report.table.set_index("model")
    champion = result.kind
    ratio = table.loc[champion, "ndcg_at_10"] / table.loc["popularity", "ndcg_at_10"]
    best_ev = table.loc[champion, PRIMARY_POLICY_METRIC]
    ev = best_ev / table.loc["popularity", PRIMARY_POLICY_METRIC]
    print(
        f"  best model {champion} by {PRIMARY_POLICY_METRIC}: {best_ev:.4f} "
        f"= {ev:.2f}x segment popularity; NDCG@10 (diagnostic) {table.loc[champion, 'ndcg_at_10']:.4f} = "
        f"{ratio:.2f}x popularity, {table.loc[champion, 'frac_of_oracle']:.1%} of the oracle"
    )
    if "popularity_global" in table.index:
        glob = table.loc[champion, "ndcg_at_10"] / table.loc["popularity_global", "ndcg_at_10"]
        print(
            f"  global popularity (no segments) NDCG@10 {table.loc['popularity_global', 'ndcg_at_10']:.4f}: "
            f"best model = {glob:.2f}x"
        )
    if "popularity_model_groups" in table.index:
        same = table.loc[champion, "ndcg_at_10"] / table.loc["popularity_model_groups", "ndcg_at_10"]
        print(
            f"  popularity over the learned models' groups NDCG@10 "
            f"{table.loc['popularity_model_groups', 'ndcg_at_10']:.4f}: best model = {same:.2f}x"
        )
    if "oracle_on_popularity" in table.index:
        lift = table.loc["oracle_on_popularity", "ndcg_at_10"] / table.loc["popularity", "ndcg_at_10"]
        print(
            f"  oracle_on_popularity (segment popularity re-ranked by true preferences) "
            f"NDCG@10 {table.loc['oracle_on_popularity', 'ndcg_at_10']:.4f} = {lift:.2f}x popularity"
        )
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "timings": result.timings,
        "best": champion,
        "ndcg_vs_popularity": ratio,
        "ev_vs_popularity": ev,
        "table": json.loads(result.report.table.to_json(orient="records")),
    }


def bench_ranker(world: Path) -> dict[str, Any]:
    from recsys.evaluation.split import time_split
    from recsys.ranker.training import train_ranker_bundle

    split = time_split(world)
    t0, c0 = time.perf_counter(), cpu_s()
    load0 = os.getloadavg()[0]
    bundle, training = train_ranker_bundle(world, before=split.before, seed=SEED)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    stats = training.stats
    print("\n== 50,000-member world: contextual ranker training ==")
    base_s = bundle.info["timings"]["total_seconds"] - stats["total_seconds"]
    print(f"  base ALS bundle at the cut-off          {base_s:8.1f} s")
    for key in ("cf_seconds", "features_seconds", "fit_seconds"):
        print(f"  {key:38s} {stats[key]:8.1f} s")
    print(
        f"  ranker training wall time               {wall:8.1f} s   CPU {cpu:.1f} s "
        f"(load average {load0:.1f} -> {os.getloadavg()[0]:.1f}); {stats['impressions']:,} impressions, "
        f"{stats['purchases']:,} purchases, {training.ranker.info['rounds']} trees"
    )
    return {"wall_s": wall, "cpu_s": cpu, "stats": stats}


def bench_1m(world: Path, tracking: str, evaluation: bool = True) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from recsys.data.layout import read_table
    from recsys.evaluation import OracleRecommender, evaluate_recommender, has_oracle, time_split
    from recsys.interactions import build_interactions
    from recsys.models.als import ALSConfig
    from recsys.models.bundle import ModelBundle
    from recsys.registry import publish
    from recsys.schema import Col

    out: dict[str, Any] = {}
    t_total, c_total = time.perf_counter(), cpu_s()

    # 1. the floor: implicit's ALS on the final matrix, nothing else
    inter = build_interactions(world)
    matrix = inter.matrix.tocsr().astype("float32")
    cfg = ALSConfig(random_state=SEED)
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpool_limits(limits=1, user_api="blas"):
        est = AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=cfg.iterations,
            num_threads=cfg.num_threads,
            random_state=SEED,
            calculate_training_loss=False,
        )
        t, c = time.perf_counter(), cpu_s()
        est.fit(matrix, show_progress=False)
        out["bare_als_fit_s"] = time.perf_counter() - t
        out["bare_als_fit_cpu_s"] = cpu_s() - c
    out["matrix"] = {"rows": matrix.shape[0], "cols": matrix.shape[1], "nnz": int(matrix.nnz)}
    step(f"bare ALS fit {out['bare_als_fit_s']:.1f} s (matrix built in {t - t_total:.1f} s)")
    del est, matrix, inter

    # 2. raw data -> registered ALS model
    t, c = time.perf_counter(), cpu_s()
    bundle = ModelBundle.train(world, "als", seed=SEED)
    out["als_train_s"] = time.perf_counter() - t
    out["bundle_timings"] = bundle.info.get("timings", {})
    t2 = time.perf_counter()
    pub = publish(tracking, bundle, model_name="bench-1m", params={"kind": "als"}, tags={"kind": "als"},
                  input_member_ids=[str(m) for m in bundle.member_ids.external_ids[:3]])  # fmt: skip
    out["register_s"] = time.perf_counter() - t2
    out["als_path_s"] = time.perf_counter() - t
    out["als_path_cpu_s"] = cpu_s() - c
    out["registered_version"] = pub.version.version if pub.version else None
    step(f"ALS raw data -> registered model {out['als_path_s']:.1f} s")
    del bundle

    if not evaluation:
        out["peak_rss_gb"] = peak_rss_gb()
        ratio = out["als_path_s"] / out["bare_als_fit_s"]
        print(
            "\n== 1,000,000-member world (no evaluation) ==\n"
            f"  bare implicit ALS fit {out['bare_als_fit_s']:.1f} s (CPU {out['bare_als_fit_cpu_s']:.1f} s); "
            f"ALS raw data -> registered model {out['als_path_s']:.1f} s = {ratio:.2f}x the bare fit "
            f"(target <= 2x {verdict(ratio <= 2)}); CPU {out['als_path_cpu_s']:.1f} s = "
            f"{out['als_path_cpu_s'] / out['bare_als_fit_cpu_s']:.2f}x; "
            f"peak RSS {out['peak_rss_gb']:.2f} GB; load average {os.getloadavg()[0]:.1f}"
        )
        for key, value in out["bundle_timings"].items():
            print(f"      {key:28s} {value:8.1f} s")
        print(f"      registration (MLflow)        {out['register_s']:8.1f} s")
        return out

    # 3. the offline evaluation on its own (model trained before the cut-off; that training is not counted)
    split = time_split(world)
    before_bundle = ModelBundle.train(world, "als", before=split.before, seed=SEED)
    offers = read_table(world, "offers", columns=[Col.OFFER_ID, Col.FAMILY])
    t = time.perf_counter()
    split = time_split(world)
    ev = evaluate_recommender("als", lambda m, k: before_bundle.recommend(list(m), k=k), split, offers)
    oracle = None
    if has_oracle(world):
        oracle = evaluate_recommender(
            "oracle", OracleRecommender(world, offers[Col.OFFER_ID], split.exposed).recommend, split, offers
        )
    out["evaluation_s"] = time.perf_counter() - t
    step(f"offline evaluation {out['evaluation_s']:.1f} s")
    out["test_members"] = len(split.test_members)
    out["als_ndcg_at_10"] = ev.primary
    out["oracle_ndcg_at_10"] = oracle.primary if oracle else None
    out["total_s"] = time.perf_counter() - t_total
    out["total_cpu_s"] = cpu_s() - c_total
    out["peak_rss_gb"] = peak_rss_gb()

    ratio = out["als_path_s"] / out["bare_als_fit_s"]
    print("\n== 1,000,000-member world ==")
    print(
        f"  matrix {out['matrix']['rows']:,} x {out['matrix']['cols']:,}, {out['matrix']['nnz']:,} non-zeros"
    )
    print(
        f"  bare implicit ALS fit             {out['bare_als_fit_s']:8.1f} s   "
        f"CPU {out['bare_als_fit_cpu_s']:.1f} s"
    )
    print(f"  ALS raw data -> registered model  {out['als_path_s']:8.1f} s   = {ratio:.2f}x the bare fit "
          f"(target <= 2x {verdict(ratio <= 2)})")  # fmt: skip
    for key, value in out["bundle_timings"].items():
        print(f"      {key:28s} {value:8.1f} s")
    print(f"      registration (MLflow)        {out['register_s']:8.1f} s")
    print(
        f"  offline evaluation on its own     {out['evaluation_s']:8.1f} s   "
        f"({out['test_members']:,} test members; ALS NDCG@10 {ev.primary:.4f}, "
        f"oracle {out['oracle_ndcg_at_10'] or float('nan'):.4f})"
    )
    print(
        f"  total                             {out['total_s']:8.1f} s   target <= {TARGET_1M_TOTAL_S:.0f} s "
        f"{verdict(out['total_s'] <= TARGET_1M_TOTAL_S)}"
    )
    print(f"  total CPU time                    {out['total_cpu_s']:8.1f} s")
    print(
        f"  peak RSS                          {out['peak_rss_gb']:8.2f} GB  target <= {TARGET_RSS_GB:.0f} GB "
        f"{verdict(out['peak_rss_gb'] <= TARGET_RSS_GB)}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world-50k", type=Path, default=BENCH_DIR / "world-50k")
    parser.add_argument("--world-1m", type=Path, default=BENCH_DIR / "world-1m")
    parser.add_argument("--skip-50k", action="store_true")
    parser.add_argument("--skip-1m", action="store_true")
    parser.add_argument("--skip-ranker", action="store_true")
    parser.add_argument(
        "--skip-1m-evaluation",
        action="store_true",
        help="1M part: only the bare fit and the ALS path (the evaluation takes longest on a busy machine)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "bench_train.json")
    parser.add_argument(
        "--max-memory-gb",
        type=float,
        default=16.0,
        help="address-space limit of this process: past it a step fails with MemoryError instead of the "
        "machine's OOM killer taking down whatever is largest (the machine is shared)",
    )
    args = parser.parse_args()
    limit = int(args.max_memory_gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp:
        tracking = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        if not args.skip_50k:
            results["world_50k"] = bench_50k(ensure_world(args.world_50k, 50_000), tracking)
        if not args.skip_ranker:
            results["ranker_50k"] = bench_ranker(ensure_world(args.world_50k, 50_000))
        if not args.skip_1m:
            try:
                results["world_1m"] = bench_1m(
                    ensure_world(args.world_1m, 1_000_000), tracking, not args.skip_1m_evaluation
                )
            except MemoryError:
                results["world_1m"] = {"error": f"MemoryError past {args.max_memory_gb} GB"}
                step(f"1M part aborted: out of the {args.max_memory_gb:.0f} GB address-space limit")
    results["peak_rss_gb"] = peak_rss_gb()
    results["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(
        f"\npeak RSS of the run {results['peak_rss_gb']:.2f} GB; load average at start/end "
        f"{results['load_avg_at_start'][0]:.1f}/{results['load_avg_at_end'][0]:.1f} "
        f"on {os.cpu_count()} CPUs; "
        f"results in {args.out}"
    )


if __name__ == "__main__":
    main()
