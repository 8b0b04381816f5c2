"""A synthetic implicit-feedback dataset with known low-rank structure, written as a generic interactions CSV.

Users and items have ``rank``-dimensional taste vectors; every item also has a popularity bias (Zipf-like
skew). Each user draws 8 to 40 distinct items from ``softmax((u·v + 0.35 bias) / temperature)`` (Gumbel
top-k: sampling without replacement) and a weight (play count) per item that grows with the affinity;
timestamps are spread over 2025. Seeded: the same arguments always give the same frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_interactions(
    n_users: int = 2_000, n_items: int = 1_000, rank: int = 8, seed: int = 7, temperature: float = 0.35
) -> pd.DataFrame:
    """user_id, item_id, timestamp (ISO 8601), weight (plays >= 1), one row per (user, item)."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, rank)) / np.sqrt(rank)
    items = rng.normal(size=(n_items, rank))
    bias = -0.8 * np.log(np.arange(1, n_items + 1))[rng.permutation(n_items)]
    affinity = users @ items.T
    logits = (affinity + 0.35 * bias) / temperature
    keys = logits + rng.gumbel(size=logits.shape)
    order = np.argsort(-keys, axis=1)
    n = rng.integers(8, 41, size=n_users)
    take = np.arange(n_items)[None, :] < n[:, None]
    user_idx = np.repeat(np.arange(n_users), n)
    item_idx = order[take]  # row-major: each user's first n items, best key first
    z = (affinity - affinity.mean(axis=1, keepdims=True)) / affinity.std(axis=1, keepdims=True)
    plays = 1 + rng.poisson(np.exp(1.0 + 0.6 * np.clip(z[user_idx, item_idx], -3, 3)))
    seconds = rng.integers(0, 365 * 86_400, size=len(user_idx))
    times = pd.Timestamp("2025-01-01") + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            "user_id": np.char.add("u", np.char.zfill(user_idx.astype(str), 5)),
            "item_id": np.char.add("i", np.char.zfill(item_idx.astype(str), 4)),
            "timestamp": times.strftime("%Y-%m-%dT%H:%M:%S"),
            "weight": plays.astype(np.int64),
        }
    )


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
