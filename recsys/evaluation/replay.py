"""The test period's logged requests, ready to replay: candidate pairs, what the log showed and sold, values.

:func:`load_replay` reads the ``requests`` table of ``[cutoff, end)`` and turns it into a
:class:`~recsys.evaluation.policy.RequestBatch` (one row per request, one per candidate pair) plus, per pair:

* the logged feedback (shown, propensity, purchased) for the off-policy estimators;
* the offer's value as the service values it (margin, miles at their liability cost —
  :func:`recsys.pipeline.value.offer_values`);
* the member's earlier impressions of the offer (the fatigue state at the request time);
* a reward model for the doubly-robust estimator: purchases per impression of the offer at the placement,
  counted before the cut-off only;
* on a generated world, the true acceptance probability in the request's context (fatigue-free and with the
  logged fatigue) and the logging policy's exact inclusion probability of every candidate. As in the world, a
  redemption whose miles price exceeds the member's balance at the request cannot be bought: its true
  P(purchase) is 0 and the would-be purchase a click (:func:`unaffordable`).

Per request, the batch's requests carry the member's miles balance as of the request time (column
:data:`~recsys.features.miles.BALANCE_AT_REQUEST`, from the miles ledger, read once here; NA without one).
Everything that needs that balance reads this column: :func:`unaffordable`, the replayed pipeline's member
record (:class:`~recsys.evaluation.policies.PipelinePolicy`) and the ranker's ``miles_balance`` feature
(:class:`~recsys.ranker.policy.RankerScorer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.data.layout import has_table, iter_table, read_table, table_columns
from recsys.evaluation.metrics import EvaluationError
from recsys.evaluation.ope import LoggedPairs
from recsys.evaluation.policy import DEFAULT_SLOTS, REQUEST_CONTEXT, SLOTS, RequestBatch
from recsys.features.miles import BALANCE_AT_REQUEST, balances_column, with_balances_at
from recsys.schema import BOOKING_COLUMNS, OFFERS, REQUESTS, Col, EventType, OfferFamily

if TYPE_CHECKING:
    from recsys.data.truth import Responder

# Impressions' worth of the placement's overall purchase rate mixed into each offer's rate (the reward model).
RATE_PRIOR_IMPRESSIONS = 50.0


@dataclass(frozen=True)
class Replay:
    """The test period's requests and everything known about each (request, candidate) pair."""

    batch: RequestBatch  # its requests carry BALANCE_AT_REQUEST, the balance as of each (module doc)
    logged: LoggedPairs  # reward: purchases (0/1)
    margin: np.ndarray  # CNY per acceptance, per pair
    family: np.ndarray  # offer family per pair
    prior_exposures: np.ndarray  # the member's impressions of the offer before the request, per pair
    q: np.ndarray  # reward model: P(purchase) per pair from the offer x placement rates before the cut-off
    rates: pd.DataFrame  # offer_id, placement, impressions, purchases, rate (before the cut-off)
    cutoff: pd.Timestamp
    end: pd.Timestamp
    p_true: np.ndarray | None = None  # generated worlds: true P(purchase) in context, fatigue-free
    p_true_fatigue: np.ndarray | None = None  # ... with the fatigue of the logged exposures
    logging_inclusion: np.ndarray | None = None  # ... the logging policy's inclusion of every candidate
    responder: Responder | None = None  # ... the hidden response model of every pair (closed loop)
    prior_before_cutoff: np.ndarray | None = None  # the member's impressions of the offer before the cut-off
    # ... true P(purchase) with the member-specific destination-taste term replaced by its offer average
    # (what the oracle loses without taste: the taste term's worth)
    p_no_taste: np.ndarray | None = None

    @property
    def has_truth(self) -> bool:
        return self.p_true is not None

    def value_logged(self) -> LoggedPairs:
        """The logged feedback with the purchase's value (margin) as reward."""
        return self.logged.with_reward(self.logged.reward * self.margin)


def load_replay(
    dataset_dir: Path | str,
    cutoff: pd.Timestamp,
    end: pd.Timestamp,
    *,
    slots: Mapping[str, int] = DEFAULT_SLOTS,
    miles_liability_cost_cny: float = 0.005,
    with_truth: bool = True,
    progress: bool = False,
) -> Replay:
    """The requests of ``[cutoff, end)`` with their pairs (see the module doc).

    Raises :class:`EvaluationError` when the dataset has no request log, the period has no request, a
    placement has no slot count or a candidate is not in the offer catalogue.
    """
    from recsys.data.truth import has_request_truth, legacy_popularity, request_responder
    from recsys.pipeline.catalogue import Catalogue
    from recsys.pipeline.value import offer_values

    root = Path(dataset_dir)
    if not has_table(root, REQUESTS.name):
        raise EvaluationError(
            f"{root}: the dataset has no request log (table '{REQUESTS.name}'); policy evaluation replays "
            "the logged requests with their candidates and propensities (regenerate the world or import them)"
        )
    # the booking columns ride along when the log has them (older and imported logs may not)
    booking = [c for c in BOOKING_COLUMNS if c in table_columns(root, REQUESTS.name)]
    cols = [*REQUEST_CONTEXT, *booking, Col.CANDIDATES, Col.SHOWN, Col.PROPENSITIES]
    parts = []
    for part in tqdm(iter_table(root, REQUESTS.name, columns=cols), desc="requests", disable=not progress):
        t = pd.to_datetime(part[Col.REQUEST_TIME])
        parts.append(part[((t >= cutoff) & (t < end)).to_numpy()])
    requests = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    if requests.empty:
        raise EvaluationError(
            f"no request in the test period [{cutoff}, {end}): the request log has nothing to replay "
            "(is the cut-off after the log's end?)"
        )
    unknown = sorted(set(requests[Col.PLACEMENT]) - set(slots))
    if unknown:
        raise EvaluationError(f"no slot count for placement(s) {unknown}; known: {sorted(slots)}")
    requests[Col.REQUEST_TIME] = pd.to_datetime(requests[Col.REQUEST_TIME])
    requests[SLOTS] = requests[Col.PLACEMENT].map(dict(slots)).astype(np.int64)
    requests = with_balances_at(root, requests)
    n = len(requests)

    offers = read_table(root, OFFERS.name)
    offer_index = pd.Index(offers[Col.OFFER_ID].astype(str))
    cand_len = requests[Col.CANDIDATES].map(len).to_numpy(np.int64)
    rows = np.repeat(np.arange(n), cand_len)
    cand = np.concatenate([np.asarray(c, dtype=object) for c in requests[Col.CANDIDATES]] or [np.zeros(0)])
    cand = cand.astype(object)
    ocode = offer_index.get_indexer(cand)
    if (ocode < 0).any():
        raise EvaluationError(f"candidate offers not in the catalogue: {sorted(set(cand[ocode < 0]))[:5]}")
    n_off = len(offer_index)
    pair_key = rows.astype(np.int64) * n_off + ocode

    shown_len = requests[Col.SHOWN].map(len).to_numpy(np.int64)
    s_rows = np.repeat(np.arange(n), shown_len)
    s_off = offer_index.get_indexer(
        np.concatenate([np.asarray(c, dtype=object) for c in requests[Col.SHOWN]] or [np.zeros(0)])
    )
    s_prop = np.concatenate(
        [np.asarray(c, dtype=np.float64) for c in requests[Col.PROPENSITIES]] or [np.zeros(0)]
    )
    s_pos = np.searchsorted(pair_key, s_rows.astype(np.int64) * n_off + s_off)
    shown = np.zeros(len(rows), dtype=bool)
    propensity = np.ones(len(rows))
    shown[s_pos] = True
    propensity[s_pos] = s_prop

    members = requests[Col.MEMBER_ID].astype(str).to_numpy(object)
    times = requests[Col.REQUEST_TIME].to_numpy("datetime64[s]").astype(np.int64)
    m_index = pd.Index(pd.unique(members))
    m_code = m_index.get_indexer(members)

    # interactions: test-period purchases by request, every impression (fatigue), pre-cut-off rates
    ev_cols = [Col.REQUEST_ID, Col.MEMBER_ID, Col.OFFER_ID, Col.PLACEMENT, Col.EVENT_TYPE, Col.EVENT_TIME]
    req_index = pd.Index(requests[Col.REQUEST_ID].astype(str))
    bought_keys: list[np.ndarray] = []
    imp_keys: list[np.ndarray] = []
    rate_parts: list[pd.DataFrame] = []
    for part in tqdm(iter_table(root, "interactions", columns=ev_cols), desc="events", disable=not progress):
        etime = pd.to_datetime(part[Col.EVENT_TIME])
        kind = part[Col.EVENT_TYPE].to_numpy(object)
        before = (etime < cutoff).to_numpy()
        sel = before & np.isin(kind, [EventType.IMPRESSION.value, EventType.PURCHASE.value])
        if sel.any():
            rate_parts.append(
                part.loc[sel, [Col.OFFER_ID, Col.PLACEMENT, Col.EVENT_TYPE]]
                .value_counts()
                .rename("n")
                .reset_index()
            )
        buy = (kind == EventType.PURCHASE.value) & ~before & part[Col.REQUEST_ID].notna().to_numpy()
        if buy.any():
            r = req_index.get_indexer(part.loc[buy, Col.REQUEST_ID].astype(str))
            o = offer_index.get_indexer(part.loc[buy, Col.OFFER_ID].astype(str))
            ok = (r >= 0) & (o >= 0)
            bought_keys.append(r[ok].astype(np.int64) * n_off + o[ok])
        imp = (kind == EventType.IMPRESSION.value) & (etime < end).to_numpy()
        if imp.any():
            mc = m_index.get_indexer(part.loc[imp, Col.MEMBER_ID].astype(str))
            oc = offer_index.get_indexer(part.loc[imp, Col.OFFER_ID].astype(str))
            t = etime[imp].to_numpy("datetime64[s]").astype(np.int64)
            ok = (mc >= 0) & (oc >= 0)
            imp_keys.append(np.stack([mc[ok], oc[ok], t[ok]], axis=1))
    bought = np.isin(pair_key, np.concatenate(bought_keys)) if bought_keys else np.zeros(len(rows), bool)
    reward = (bought & shown).astype(np.float64)

    # earlier impressions of the same offer to the same member (strictly before the request)
    prior = np.zeros(len(rows), dtype=np.int64)
    prior_cut = np.zeros(len(rows), dtype=np.int64)
    if imp_keys:
        imps = np.concatenate(imp_keys)
        span = int(max(times.max(), imps[:, 2].max()) - min(times.min(), imps[:, 2].min()) + 2)
        base = min(times.min(), imps[:, 2].min())
        key_i = (imps[:, 0] * n_off + imps[:, 1]) * span + (imps[:, 2] - base)
        key_i.sort()
        pm = m_code[rows].astype(np.int64) * n_off + ocode
        lo = np.searchsorted(key_i, pm * span, side="left")
        hi = np.searchsorted(key_i, pm * span + (times[rows] - base), side="left")
        prior = hi - lo
        cut_s = int(np.datetime64(cutoff.to_datetime64(), "s").astype(np.int64))
        prior_cut = np.searchsorted(key_i, pm * span + (cut_s - base), side="left") - lo

    rates = _rates(rate_parts, offers)
    q = _pair_rates(rates, cand, requests[Col.PLACEMENT].to_numpy(object)[rows])
    margin = offer_values(Catalogue(offers), miles_liability_cost_cny)[ocode]
    family = offers[Col.FAMILY].astype(str).to_numpy(object)[ocode]

    batch = RequestBatch(
        requests[[*REQUEST_CONTEXT, *booking, SLOTS, BALANCE_AT_REQUEST]].reset_index(drop=True), rows, cand
    )
    logged = LoggedPairs(rows, shown, propensity, reward, m_code, n)
    p_true = p_fat = logging = responder = p_no_taste = None
    if with_truth and has_request_truth(root):
        req_ids = requests[Col.REQUEST_ID].astype(str).to_numpy(object)[rows]
        placements = requests[Col.PLACEMENT].to_numpy(object)[rows]
        # the world never sells a redemption the member cannot afford (it turns the purchase into a click)
        blocked = unaffordable(offers, balances_column(requests), rows, ocode)
        responder = request_responder(root, req_ids, members[rows], cand, placements)
        responder = dataclasses.replace(responder, blocked=blocked)
        p_true = responder.purchase()
        p_fat = responder.probabilities(np.arange(len(rows)), prior)[0]
        flat = request_responder(root, req_ids, members[rows], cand, placements, destination_average=True)
        p_no_taste = dataclasses.replace(flat, blocked=blocked).purchase()
        pop = legacy_popularity(root)
        if pop:
            weights = np.array([pop.get(o, 0.0) for o in offer_index], dtype=np.float64)[ocode]
            logging = plackett_luce_pairs(batch, weights)
    return Replay(
        batch,
        logged,
        margin,
        family,
        prior,
        q,
        rates,
        cutoff,
        end,
        p_true,
        p_fat,
        logging,
        responder,
        np.minimum(prior_cut, prior),
        p_no_taste,
    )


def unaffordable(
    offers: pd.DataFrame, balance: np.ndarray | None, rows: np.ndarray, ocode: np.ndarray
) -> np.ndarray:
    """Per pair (request row ``rows``, catalogue row ``ocode``): a redemption whose miles price exceeds
    ``balance``, the member's balance at the request (per request). All False without one (no ledger)."""
    if balance is None:
        return np.zeros(len(rows), dtype=bool)
    price = (
        pd.to_numeric(offers[Col.PRICE_MILES], errors="coerce").fillna(0).to_numpy(np.float64)
        if Col.PRICE_MILES in offers
        else np.zeros(len(offers))
    )
    redemption = offers[Col.FAMILY].astype(str).to_numpy(object) == OfferFamily.REDEMPTION.value
    costs = np.where(redemption & (price > 0), price, 0.0)[ocode]
    return np.asarray(costs > balance[rows])


def _rates(parts: list[pd.DataFrame], offers: pd.DataFrame) -> pd.DataFrame:
    """Purchases per impression per (offer, placement) before the cut-off, shrunk to the placement's rate."""
    cols = [Col.OFFER_ID, Col.PLACEMENT, "impressions", "purchases", "rate"]
    if not parts:
        return pd.DataFrame(columns=cols)
    counts = pd.concat(parts).groupby([Col.OFFER_ID, Col.PLACEMENT, Col.EVENT_TYPE])["n"].sum().unstack()
    counts = counts.reindex(columns=[EventType.IMPRESSION.value, EventType.PURCHASE.value], fill_value=0)
    counts = counts.fillna(0).reset_index()
    counts.columns = [Col.OFFER_ID, Col.PLACEMENT, "impressions", "purchases"]
    place = counts.groupby(Col.PLACEMENT)[["impressions", "purchases"]].sum()
    place_rate = (place["purchases"] / place["impressions"].clip(lower=1)).rename("place_rate")
    counts = counts.join(place_rate, on=Col.PLACEMENT)
    counts["rate"] = (counts["purchases"] + RATE_PRIOR_IMPRESSIONS * counts["place_rate"]) / (
        counts["impressions"] + RATE_PRIOR_IMPRESSIONS
    )
    return counts[cols]


def _pair_rates(rates: pd.DataFrame, offer_ids: np.ndarray, placements: np.ndarray) -> np.ndarray:
    """The rate of each (offer, placement) pair; an offer never shown there before gets the placement's
    overall rate, a placement never logged the overall rate."""
    if rates.empty:
        return np.zeros(len(offer_ids))
    key = pd.MultiIndex.from_frame(rates[[Col.OFFER_ID, Col.PLACEMENT]].astype(str))
    idx = key.get_indexer(pd.MultiIndex.from_arrays([offer_ids.astype(str), placements.astype(str)]))
    total = rates["purchases"].sum() / max(rates["impressions"].sum(), 1)
    by_place = rates.groupby(Col.PLACEMENT).apply(
        lambda g: g["purchases"].sum() / max(g["impressions"].sum(), 1), include_groups=False
    )
    fallback = pd.Series(placements).map(by_place).fillna(total).to_numpy(np.float64)
    out = np.where(idx >= 0, rates["rate"].to_numpy(np.float64)[np.maximum(idx, 0)], fallback)
    return np.asarray(out, dtype=np.float64)


def plackett_luce_pairs(batch: RequestBatch, weights: np.ndarray) -> np.ndarray:
    """Inclusion probability of every candidate pair under a weighted draw of the request's ``k`` slots."""
    from recsys.requestlog.propensity import pair_inclusion

    return pair_inclusion(batch.request_row, weights, batch.slots)
