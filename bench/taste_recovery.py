"""How much of the taste term the ranker's CF features recover, beside how much any history-based feature
could (issue 16): reads the ``--out`` rows of one ``ranker_levers.py`` run (variants with and without CF)
and of one
``ranker_ceiling.py`` run with the no-CF config, on the same world and replay.

    .venv/bin/python bench/ranker_levers.py --data var/data/world-50k --cache var/replay-50k.pkl \
        --out var/runs/levers.jsonl --variant base='{}' --variant nocf='{"cf_features": false}'
    .venv/bin/python bench/ranker_ceiling.py --data var/data/world-50k --cache var/replay-50k.pkl \
        --out var/runs/ceiling_nocf.jsonl --config '{"cf_features": false}'
    .venv/bin/python bench/taste_recovery.py var/runs/levers.jsonl var/runs/ceiling_nocf.jsonl

The taste term is the oracle against the oracle with the destination term replaced by its offer average
(by acceptance) and the same for the EV oracle (by expected value). "CF" is the ranker with CF features
against the same ranker without them; "ceiling" is the no-CF ranker given the true destination term
against the no-CF ranker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _rows(path: Path) -> dict[str, dict[str, float]]:
    with path.open() as f:
        return {r["policy"]: r for r in map(json.loads, f) if r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("levers", type=Path, help="ranker_levers.py --out rows (variants base and nocf)")
    ap.add_argument(
        "ceiling", type=Path, nargs="?", help="ranker_ceiling.py --out rows, run with the no-CF config"
    )
    ap.add_argument("--with-cf", default="base", help="the levers variant with CF features")
    ap.add_argument("--without-cf", default="nocf", help="the levers variant without them")
    args = ap.parse_args()
    lev = _rows(args.levers)
    ceil = _rows(args.ceiling) if args.ceiling is not None else None
    cf, nocf = args.with_cf, args.without_cf
    lines = [("objective", "measure", "taste term", "CF earns", "CF share", "ceiling earns", "ceiling share")]
    for objective, oracle, key in (
        ("acceptance", "oracle", "purchases"),
        ("acceptance", "oracle", "purchases_redemption"),
        ("ev", "ev_oracle", "ev"),
        ("ev", "ev_oracle", "ev_redemption"),
    ):
        taste = lev[oracle][key] - lev[f"{oracle}_no_taste"][key]
        earned = lev[f"{cf}_{objective}"][key] - lev[f"{nocf}_{objective}"][key]
        if ceil is not None:
            ceiling = ceil[f"ranker+true_dest_{objective}"][key] - ceil[f"ranker_{objective}"][key]
            up_to = (f"{ceiling:.5f}", f"{ceiling / taste:.0%}")
        else:
            up_to = ("-", "-")
        lines.append(
            (objective, key, f"{taste:.5f}", f"{earned:.5f}", f"{earned / taste:.1%}", *up_to)
        )  # fmt: skip
    width = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    for r in lines:
        print("  ".join(c.rjust(w) for c, w in zip(r, width, strict=True)))
    orc = lev["oracle"]["purchases"]
    share = float(lines[1][2]) / orc
    print(f"taste term {lines[1][2]} purchases/request = {share:.1%} of the oracle's {orc:.4f}")
    ev_share = lev[f"{cf}_ev"]["ev"] / lev["ev_oracle"]["ev"]
    print(f"{cf} ranking by expected value: {ev_share:.4f} of the EV oracle's value")
    if ceil is not None:
        agree = abs(ceil["ranker_acceptance"]["purchases"] - lev[f"{nocf}_acceptance"]["purchases"])
        print(f"no-CF ranker, ceiling run against levers run: |diff| {agree:.5f} purchases/request")


if __name__ == "__main__":
    main()
