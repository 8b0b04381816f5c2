"""CPU time of the ranker's request-time feature rows (``FeatureSpace.request_matrix``) on real requests, and
whether another implementation builds the very same rows.

Trains a ranker on a generated world before the cut-off, takes the first ``--requests`` replayed test requests
(their trip, booking and candidate set) with the members' profiles as the service publishes them at the
cut-off (exposure and travel history included), and times the rows in process CPU time, in interleaved
rounds. With ``--old-src`` (a directory holding another version's ``recsys/``, e.g. from ``git archive``) it
builds the same rows with that version's ``recsys/ranker/features.py`` too, checks they are identical, and
prints both CPU times side by side.

    git archive <commit> recsys | tar -x -C var/old-src
    .venv/bin/python bench/ranker_rows.py --data var/data/world-50k --old-src var/old-src \
        [--cache var/bench/replay-50k.pkl] [--profile var/bench/rows.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import os
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd
from ranker_levers import _replay  # bench/ is the script's directory


def _old_features(src: Path) -> ModuleType:
    """``recsys/ranker/features.py`` of another version, loaded beside this one."""
    spec = importlib.util.spec_from_file_location("old_ranker_features", src / "recsys/ranker/features.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_ranker_features"] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


def _aware(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_localize(UTC).to_pydatetime()


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cutoff", default="2026-04-02")
    ap.add_argument("--end", default="2026-07-01")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the replay (ranker_levers.py's)")
    ap.add_argument("--old-src", type=Path, default=None)
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile of the new rows")
    args = ap.parse_args()

    from recsys.features.profiles import build_member_profiles
    from recsys.ranker.features import ScoringContext, cf_scores, with_ranker_history
    from recsys.ranker.training import train_ranker_bundle
    from recsys.schema import Col

    cutoff, end = pd.Timestamp(args.cutoff), pd.Timestamp(args.end)
    replay = _replay(args.data, cutoff, end, args.cache)
    t0 = time.perf_counter()
    bundle, _ = train_ranker_bundle(args.data, None, before=cutoff.to_pydatetime())
    ranker = bundle.context_ranker
    assert ranker is not None and bundle._ranker_offers is not None and bundle._ranker_cf is not None
    as_of = cutoff.to_pydatetime() - timedelta(microseconds=1)
    profiles = with_ranker_history(build_member_profiles(args.data, as_of), args.data)
    by_id = {str(r[Col.MEMBER_ID]): r for r in profiles.to_dict("records")}
    print(f"ranker and profiles in {time.perf_counter() - t0:.0f} s", flush=True)

    batch = replay.batch
    req = batch.requests
    starts = np.searchsorted(batch.request_row, np.arange(batch.n_requests + 1))
    cases = []
    for i in range(min(args.requests, batch.n_requests)):
        r = req.iloc[i]
        offer_ids = [str(o) for o in batch.offer_id[starts[i] : starts[i + 1]]]
        rows = np.asarray([bundle._ranker_rows[o] for o in offer_ids if o in bundle._ranker_rows], np.int64)
        if len(rows) == 0:
            continue
        member = str(r[Col.MEMBER_ID])
        ctx = ScoringContext(
            str(r[Col.PLACEMENT]),
            _aware(r[Col.REQUEST_TIME]),
            r[Col.ORIGIN] if isinstance(r[Col.ORIGIN], str) else None,
            r[Col.DESTINATION] if isinstance(r[Col.DESTINATION], str) else None,
            _aware(r[Col.DEPARTURE_TIME]),
            r[Col.CABIN] if isinstance(r[Col.CABIN], str) else None,
            by_id.get(member),
            *(_int(r.get(c)) for c in (Col.BOOKING_LEAD_DAYS, Col.PARTY_SIZE, Col.CHILDREN, Col.STAY_NIGHTS)),
        )
        scoring = bundle.for_member(member, member_features=by_id.get(member))
        cf = cf_scores(scoring.vector, bundle._vectors.item, bundle._ranker_cf, rows)
        cases.append((rows, ctx, cf, scoring.known))
    n_rows = sum(len(c[0]) for c in cases)
    print(f"{len(cases):,} requests, {n_rows / len(cases):.1f} candidates each", flush=True)

    space, offers = ranker.space, bundle._ranker_offers
    impls: dict[str, tuple[Any, Any, Any]] = {"new": (space, offers, ScoringContext)}
    if args.old_src is not None:
        old = _old_features(args.old_src)
        old_space = old.FeatureSpace.from_json(space.to_json())
        old_space.taste = space.taste
        impls["old"] = (old_space, old.OfferArrays.build(old_space, bundle.offers), old.ScoringContext)

    def contexts(cls: Any) -> list[Any]:
        return [c[1] if cls is ScoringContext else cls(**vars(c[1])) for c in cases]

    ctxs = {name: contexts(impl[2]) for name, impl in impls.items()}

    def build(name: str) -> list[np.ndarray]:
        sp, off, _ = impls[name]
        return [
            sp.request_matrix(off, rows, ctx, cf, known)
            for (rows, _, cf, known), ctx in zip(cases, ctxs[name], strict=True)
        ]

    if "old" in impls:
        new_rows, old_rows = build("new"), build("old")
        same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(new_rows, old_rows, strict=True))
        print(f"rows identical to the old implementation's: {same}", flush=True)
        if not same:
            raise SystemExit(1)
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(args.rounds):
        for name in impls:
            t = time.process_time()
            build(name)
            cpu[name].append((time.process_time() - t) / len(cases) * 1e3)
    for name, values in cpu.items():
        print(f"{name}: {np.median(values):.4f} ms CPU per request (median of {args.rounds} rounds: "
              f"{', '.join(f'{v:.4f}' for v in values)})")  # fmt: skip
    if "old" in cpu:
        print(f"new / old: {np.median(cpu['new']) / np.median(cpu['old']):.3f}")
    if args.profile is not None:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        prof = cProfile.Profile()
        prof.enable()
        build("new")
        prof.disable()
        prof.dump_stats(args.profile)


if __name__ == "__main__":
    main()
