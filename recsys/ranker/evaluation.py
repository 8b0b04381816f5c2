"""How well the ranker predicts acceptance on a held-out period: AUC, log loss, Brier score and calibration
(expected calibration error over equal-count bins, and the bins themselves), beside the logistic-regression
reference trained on the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.layout import read_table
from recsys.ranker.features import with_travel
from recsys.ranker.training import _naive, dataset_end, impression_table, read_events


def acceptance_metrics(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, float]:
    """AUC, log loss, Brier, ECE (``bins`` equal-count bins), mean prediction and observed rate."""
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    table = calibration_bins(y, p, bins)
    ece = float((table["n"] * (table["predicted"] - table["observed"]).abs()).sum() / max(len(y), 1))
    return {
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": ece,
        "mean_predicted": float(p.mean()),
        "observed_rate": float(y.mean()),
        "impressions": float(len(y)),
    }


def calibration_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-count bins of the predictions: rows, mean predicted and observed purchase rate per bin."""
    order = np.argsort(p, kind="stable")
    parts = np.array_split(order, bins)
    return pd.DataFrame(
        {
            "bin": np.arange(1, len(parts) + 1),
            "n": [len(i) for i in parts],
            "predicted": [float(p[i].mean()) if len(i) else np.nan for i in parts],
            "observed": [float(y[i].mean()) if len(i) else np.nan for i in parts],
        }
    )


@dataclass
class HeldoutReport:
    metrics: pd.DataFrame  # one row per model
    calibration: dict[str, pd.DataFrame]
    by_placement: pd.DataFrame

    def markdown(self) -> str:
        cols = ["model", "auc", "log_loss", "brier", "ece", "mean_predicted", "observed_rate", "impressions"]
        m = self.metrics[cols]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in m.iterrows():
            lines.append(
                "| "
                + " | ".join(
                    [str(r["model"])] + [f"{r[c]:.4f}" for c in cols[1:-1]] + [f"{int(r['impressions']):,}"]
                )
                + " |"
            )
        return "\n".join(lines)


def heldout_report(
    root: Path | str,
    bundle: Any,
    start: datetime,
    end: datetime | None = None,
    *,
    reference: Any = None,
    seed: int = 42,
) -> HeldoutReport:
    """Score the impressions of ``[start, end)`` with a ``ranker`` bundle trained before ``start`` (profiles
    as of ``start``, the bundle's own CF model, exposures as of each impression), and the ``reference``
    logistic regression on the same rows; metrics also per placement."""
    from recsys.features.profiles import build_member_profiles

    root = Path(root)
    ranker = bundle.context_ranker
    if ranker is None:
        raise ValueError("the bundle has no context ranker")
    s = _naive(start)
    e = _naive(end) if end is not None else dataset_end(root) + pd.Timedelta(seconds=1)
    as_of = s.to_pydatetime() - pd.Timedelta(microseconds=1)
    profiles = with_travel(build_member_profiles(root, as_of, seed=seed), root, as_of)
    table = impression_table(
        root, ranker.space, read_table(root, "offers"), read_events(root, e), profiles, bundle, s, e
    )
    preds = {"ranker_lightgbm": ranker.predict(table.x), "ranker_lightgbm_uncalibrated": ranker.raw(table.x)}
    if reference is not None:
        preds["logistic_regression"] = reference.predict_proba(table.x)[:, 1]
    rows = []
    for name, p in preds.items():
        rows.append({"model": name, "placement": "all", **acceptance_metrics(table.y, p)})
        for placement in sorted(set(table.placement)):
            sel = table.placement == placement
            rows.append({"model": name, "placement": placement, **acceptance_metrics(table.y[sel], p[sel])})
    metrics = pd.DataFrame(rows)
    cal = {name: calibration_bins(table.y.astype(float), p) for name, p in preds.items()}
    overall = metrics[metrics["placement"] == "all"].reset_index(drop=True)
    return HeldoutReport(overall, cal, metrics[metrics["placement"] != "all"].reset_index(drop=True))
