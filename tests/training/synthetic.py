"""A synthetic implicit-feedback dataset with known low-rank structure, written as a generic interactions CSV.

Users and items have ``rank``-dimensional taste vectors; every item also has a popularity bias (Zipf-like
skew). Each user draws 8 to 40 distinct items from ``softmax((u·v + bias) / temperature)`` and a weight
(play count) per item that grows with the affinity; timestamps are spread over a year. Seeded: the same
arguments always give the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_interactions(
    n_users: int = 2_000, n_items: int = 1_000, rank: int = 8, seed: int = 7, temperature: float = 0.35
) -> pd.DataFrame:
    """user_id, item_id, timestamp (ISO 8601), weight (plays >= 1)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, rank)) / np.sqrt(rank)
    items = rng.normal(size=(n_items, rank))
    bias = -0.8 * np.log(np.arange(1, n_items + 1))  # Zipf-like popularity, item 0 the most popular
    bias = bias[rng.permutation(n_items)]
    start = pd.Timestamp("2025-01-01")
    rows = []
    for u in range(n_users):
        logits = (items @ users[u] + 0.35 * bias) / temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        n = int(rng.integers(8, 41))
        chosen = rng.choice(n_items, size=n, replace=False, p=p)
        affinity = (items[chosen] @ users[u] - (items @ users[u]).mean()) / max((items @ users[u]).std(), 1e-9)
        plays = 1 + rng.poisson(np.exp(1.0 + 0.6 * np.clip(affinity, -3, 3)))
        seconds = np.sort(rng.integers(0, 365 * 86_400, size=n))
        rows.append(
            pd.DataFrame(
                {
                    "user_id": f"u{u:05d}",
                    "item_id": [f"i{i:04d}" for i in chosen],
                    "timestamp": (start + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%dT%H:%M:%S"),
                    "weight": plays.astype(int),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
