"""Access to a generated world's hidden truth — for EVALUATION ONLY (the oracle ranking).

No training or serving code may import this module: models learn from the observable tables alone. The truth
lives in ``DIR/truth/``: ``member_traits/part-*.parquet`` (each member's hidden traits) and
``acceptance.json`` (the parameters of the acceptance model that drew every response).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.layout import TRUTH_DIR, DatasetError, read_table
from recsys.data.world import acceptance as acc
from recsys.schema import OFFERS, Col

TRAITS_DIR = "member_traits"
ACCEPTANCE_FILE = "acceptance.json"
_BLOCK = 20_000  # members per block when building large matrices


def has_truth(dataset_dir: Path | str) -> bool:
    """Whether a dataset carries generator truth (imported datasets do not)."""
    root = Path(dataset_dir) / TRUTH_DIR
    return (root / ACCEPTANCE_FILE).is_file() and any((root / TRAITS_DIR).glob("*.parquet"))


def acceptance_parameters(dataset_dir: Path | str) -> dict[str, Any]:
    """The acceptance model's parameters of a generated world."""
    path = Path(dataset_dir) / TRUTH_DIR / ACCEPTANCE_FILE
    if not path.is_file():
        raise DatasetError(
            f"{dataset_dir}: no generator truth ({path} missing; only generated worlds have one)"
        )
    return dict(json.loads(path.read_text())["parameters"])


def member_traits(dataset_dir: Path | str, member_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Hidden traits of the given members (all members if ``None``), in the order given.

    Raises ``KeyError`` naming unknown member ids.
    """
    root = Path(dataset_dir) / TRUTH_DIR / TRAITS_DIR
    parts = sorted(root.glob("part-*.parquet"))
    if not parts:
        raise DatasetError(
            f"{dataset_dir}: no generator truth ({root} missing; only generated worlds have one)"
        )
    wanted = None if member_ids is None else pd.Index(np.asarray(member_ids, dtype=object))
    frames = []
    for part in parts:
        df = pd.read_parquet(part)
        if wanted is not None:
            df = df[df[Col.MEMBER_ID].isin(wanted)]
        frames.append(df)
    traits = pd.concat(frames, ignore_index=True)
    if wanted is None:
        return traits
    idx = pd.Index(traits[Col.MEMBER_ID]).get_indexer(wanted)
    if (idx < 0).any():
        raise KeyError(f"unknown member ids: {list(wanted[idx < 0][:5])}")
    return traits.iloc[idx].reset_index(drop=True)


def true_acceptance(
    dataset_dir: Path | str, member_ids: Sequence[str], offer_ids: Sequence[str]
) -> np.ndarray:
    """Members x offers matrix of the true probability that an impression is accepted (purchased).

    The context is generic — trip purpose = the member's usual mix, short haul, economy, no placement effect —
    and there is no fatigue (first exposure). Eligibility is NOT applied: the caller ranks only eligible
    offers. Raises ``KeyError`` naming unknown member or offer ids, ``DatasetError`` if the dataset has no
    truth.
    """
    params = acceptance_parameters(dataset_dir)
    offers = read_table(dataset_dir, OFFERS.name)
    wanted = pd.Index(np.asarray(offer_ids, dtype=object))
    oidx = pd.Index(offers[Col.OFFER_ID]).get_indexer(wanted)
    if (oidx < 0).any():
        raise KeyError(f"unknown offer ids: {list(wanted[oidx < 0][:5])}")
    offer_arr = acc.offer_arrays(offers.iloc[oidx].reset_index(drop=True), params)
    traits = member_traits(dataset_dir, member_ids)
    n_m, n_o = len(traits), len(oidx)
    out = np.empty((n_m, n_o), dtype=np.float64)
    for s in range(0, n_m, _BLOCK):
        block = acc.member_arrays(traits.iloc[s : s + _BLOCK].reset_index(drop=True))
        nb = len(block.features)
        mi = np.repeat(np.arange(nb), n_o)
        oi = np.tile(np.arange(n_o), nb)
        logit = acc.pair_logit(params, block, offer_arr, mi, oi)
        out[s : s + nb] = acc.sigmoid(logit).reshape(nb, n_o)
    return out
