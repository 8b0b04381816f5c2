"""Access to a generated world's hidden truth — for EVALUATION ONLY (the oracle ranking).

No training or serving code may import this module: models learn from the observable tables alone. The truth
lives in ``DIR/truth/``: ``member_traits/part-*.parquet`` (each member's hidden traits) and
``acceptance.json`` (the parameters of the acceptance model that drew every response).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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


REQUEST_CONTEXT_DIR = "request_context"


def has_request_truth(dataset_dir: Path | str) -> bool:
    """Whether a generated world records its requests' hidden trip context (worlds from this generator on)."""
    return has_truth(dataset_dir) and any(
        (Path(dataset_dir) / TRUTH_DIR / REQUEST_CONTEXT_DIR).glob("*.parquet")
    )


@dataclass(frozen=True)
class Responder:
    """The hidden response model for given (request, offer) pairs: how a member responds to an impression in
    the request's context after ``prior`` earlier impressions of the same offer (closed-loop replays)."""

    params: dict[str, Any]
    logit: np.ndarray  # fatigue-free purchase logit in context, per pair
    tolerance: np.ndarray  # the member's tolerance of repeated offers, per pair
    price_sensitivity: np.ndarray  # per pair
    # pairs whose purchase cannot happen (a redemption the member cannot afford at the request): the world
    # turns such a purchase into a click; None = every purchase can happen
    blocked: np.ndarray | None = None

    def probabilities(
        self, pairs: np.ndarray, prior: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(purchase), P(click | no purchase), P(dismiss | no click)) of the pairs after ``prior``
        exposures; a blocked pair's purchase is 0 and its would-be purchase a click."""
        excess = acc.fatigue_excess(self.params, self.tolerance[pairs], np.asarray(prior, dtype=float))
        p_buy, p_click, p_dismiss = acc.response_probabilities(
            self.params, self.logit[pairs], excess, self.price_sensitivity[pairs]
        )
        if self.blocked is not None:
            b = self.blocked[pairs]
            p_click = np.where(b, p_buy + (1 - p_buy) * p_click, p_click)
            p_buy = np.where(b, 0.0, p_buy)
        return p_buy, p_click, p_dismiss

    def purchase(self) -> np.ndarray:
        """Fatigue-free P(purchase) of every pair (0 for a blocked one)."""
        p = acc.sigmoid(self.logit)
        return p if self.blocked is None else np.where(self.blocked, 0.0, p)


def request_responder(
    dataset_dir: Path | str,
    request_ids: np.ndarray,
    member_ids: np.ndarray,
    offer_ids: np.ndarray,
    placements: np.ndarray,
    *,
    destination_average: bool = False,
) -> Responder:
    """The :class:`Responder` of each (request, offer) pair — its trip's purpose, long haul, premium cabin and
    placement — exactly as the generator drew responses. All arguments are per pair. Raises ``KeyError``
    naming unknown ids, ``DatasetError`` without truth.

    ``destination_average``: the member-specific destination term (region affinity, favourites, latent
    tastes) replaced by its average over these pairs' members, per offer: the same world without destination
    taste, whose oracle measures what that taste is worth."""
    root = Path(dataset_dir)
    params = acceptance_parameters(root)
    ctx_dir = root / TRUTH_DIR / REQUEST_CONTEXT_DIR
    if not any(ctx_dir.glob("*.parquet")):
        raise DatasetError(f"{dataset_dir}: no request context in the truth ({ctx_dir} missing)")
    req_ids = np.asarray(request_ids, dtype=object)
    ctx = pd.read_parquet(ctx_dir)
    ctx_idx = pd.Index(ctx[Col.REQUEST_ID]).get_indexer(req_ids)
    if (ctx_idx < 0).any():
        raise KeyError(f"unknown request ids: {list(req_ids[ctx_idx < 0][:5])}")
    purpose_codes = {p: i for i, p in enumerate(acc.PURPOSES)}
    purpose = np.array([purpose_codes.get(p, -1) for p in ctx["trip_purpose"].to_numpy(object)])[ctx_idx]
    long_haul = ctx["long_haul"].to_numpy(bool)[ctx_idx]
    premium = ctx["premium"].to_numpy(bool)[ctx_idx]
    offers = read_table(root, OFFERS.name)
    oidx = pd.Index(offers[Col.OFFER_ID]).get_indexer(np.asarray(offer_ids, dtype=object))
    if (oidx < 0).any():
        raise KeyError(f"unknown offer ids: {list(np.asarray(offer_ids)[oidx < 0][:5])}")
    offer_arr = acc.offer_arrays(offers, params)
    members = np.asarray(member_ids, dtype=object)
    uniq, midx = np.unique(members, return_inverse=True)
    traits = acc.member_arrays(member_traits(root, list(uniq)))
    place_codes = {p: i for i, p in enumerate(acc.PLACEMENTS)}
    place = np.array([place_codes[p] for p in np.asarray(placements, dtype=object)], dtype=np.int64)
    average = acc.destination_term_average(params, traits, offer_arr) if destination_average else None
    logit = acc.pair_logit(
        params, traits, offer_arr, midx, oidx, purpose=purpose, long_haul=long_haul, premium=premium,
        placement=place, destination_average=average,
    )  # fmt: skip
    return Responder(params, logit, traits.tolerance[midx], traits.price_sensitivity[midx])


def request_acceptance(
    dataset_dir: Path | str,
    request_ids: np.ndarray,
    member_ids: np.ndarray,
    offer_ids: np.ndarray,
    placements: np.ndarray,
    prior_exposures: np.ndarray | None = None,
) -> np.ndarray:
    """True P(purchase) of each (request, offer) pair in the request's context (:func:`request_responder`);
    with ``prior_exposures`` (earlier impressions of the same offer to the same member) including fatigue,
    else fatigue-free."""
    responder = request_responder(dataset_dir, request_ids, member_ids, offer_ids, placements)
    if prior_exposures is None:
        return acc.sigmoid(responder.logit)
    return responder.probabilities(np.arange(len(responder.logit)), prior_exposures)[0]


def legacy_popularity(dataset_dir: Path | str) -> dict[str, float]:
    """The generated world's logging policy: each offer's popularity weight (draws ∝ weight)."""
    path = Path(dataset_dir) / TRUTH_DIR / ACCEPTANCE_FILE
    if not path.is_file():
        raise DatasetError(f"{dataset_dir}: no generator truth ({path} missing)")
    legacy = json.loads(path.read_text()).get("legacy_policy") or {}
    return {str(k): float(v) for k, v in (legacy.get("popularity") or {}).items()}
