"""The closed-loop check of fatigue: replay the test period in time order with a policy's own exposures.

The open replay (:mod:`recsys.evaluation.policy_eval`) values each slate with the fatigue of the *logged*
exposures. Here the member's state evolves with what this policy showed: each request's slate is the policy's
ranking of the request's candidates, filtered by the frequency caps (:mod:`recsys.capping`, in-process store,
fresh at the cut-off) when a cap policy is given; responses come from the world's hidden response model with
the fatigue of the member's impressions of that offer before the cut-off plus those this policy showed since,
and, as in the world, no purchase of a redemption the member cannot afford at the request (a click instead).
Purchases, dismissals and value are counted in expectation; the cap store is fed sampled responses (seeded)
so cool-downs after dismissals and purchase suppression act as in the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.evaluation.metrics import EvaluationError
from recsys.evaluation.replay import Replay
from recsys.schema import Col


@dataclass(frozen=True)
class LoopResult:
    """One closed-loop run: per member of the replayed period, in expectation."""

    policy: str
    caps: bool
    members: int
    requests: int
    impressions: float
    purchases: float
    dismissals: float
    value: float

    def row(self) -> dict[str, object]:
        m = max(self.members, 1)
        return {
            "policy": self.policy,
            "caps": "on" if self.caps else "off",
            "impressions/member": self.impressions / m,
            "purchases/member": self.purchases / m,
            "dismissals/member": self.dismissals / m,
            "EV/member (CNY)": self.value / m,
            "purchases/request": self.purchases / max(self.requests, 1),
        }


def closed_loop(
    replay: Replay,
    scores: np.ndarray,
    name: str,
    offers: pd.DataFrame,
    members: pd.DataFrame,
    caps: Any | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> LoopResult:
    """Run ``scores`` (per replayed pair; the slate is the top ``k``, caps permitting) in a closed loop.

    ``offers``: offer_id, family, category (the cap candidates); ``members``: member_id, tier, time_zone;
    ``caps``: a :class:`recsys.capping.api.CapEnforcer` (fresh), or None for no caps.
    """
    if replay.responder is None or replay.prior_before_cutoff is None:
        raise EvaluationError("the closed loop needs a generated world's hidden response model")
    from recsys.capping.api import CapCandidate, CapMember

    batch = replay.batch
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (batch.n_pairs,):
        raise EvaluationError(f"{name}: {s.shape} scores for {batch.n_pairs} pairs")
    rng = np.random.default_rng(seed)
    starts = batch.starts
    req = batch.requests
    order = np.argsort(req[Col.REQUEST_TIME].to_numpy("datetime64[s]"), kind="stable")
    # plain datetimes once: per-request pandas access costs more than the response model
    times = [t.to_pydatetime() for t in pd.to_datetime(req[Col.REQUEST_TIME]).dt.tz_localize(UTC)]
    member_ids = req[Col.MEMBER_ID].astype(str).to_numpy(object)
    placements = req[Col.PLACEMENT].to_numpy(object)
    slots = batch.slots
    off = offers.set_index(Col.OFFER_ID)
    exempt = off[Col.EXEMPT].fillna(False).astype(bool) if Col.EXEMPT in off else pd.Series(False, off.index)
    cap_cand = {
        str(o): CapCandidate(
            str(o), family=str(r[Col.FAMILY]), category=str(r[Col.CATEGORY]), exempt=bool(exempt[o])
        )
        for o, r in off.iterrows()
    }
    mem = members.set_index(Col.MEMBER_ID)
    tiers = mem[Col.TIER].astype(str).to_dict()
    zones = mem[Col.TIME_ZONE].astype(str).to_dict()
    shown_count: dict[tuple[str, str], int] = {}
    impressions = purchases = dismissals = value = 0.0
    for i in tqdm(order, desc=f"closed loop {name}", disable=not progress, unit="req"):
        a, b = int(starts[i]), int(starts[i + 1])
        if a == b:
            continue
        local = np.argsort(-s[a:b], kind="stable")
        ranked = [a + int(j) for j in local if np.isfinite(s[a + int(j)])]
        mid = str(member_ids[i])
        now = times[i]
        k = int(slots[i])
        if caps is not None:
            cm = CapMember(mid, tier=tiers.get(mid, "basic"), time_zone=zones.get(mid, "UTC"))
            by_offer = {str(batch.offer_id[p]): p for p in ranked}
            decision = caps.select_and_record(
                cm, [cap_cand[str(batch.offer_id[p])] for p in ranked], k=k, placement=placements[i], now=now
            )
            chosen = [by_offer[o] for o in decision.selected if o in by_offer]
        else:
            chosen = ranked[:k]
        if not chosen:
            continue
        pairs = np.asarray(chosen)
        keys = [(mid, str(batch.offer_id[p])) for p in chosen]
        prior = np.array(
            [
                replay.prior_before_cutoff[p] + shown_count.get(key, 0)
                for p, key in zip(chosen, keys, strict=True)
            ]
        )
        p_buy, p_click, p_dismiss = replay.responder.probabilities(pairs, prior)
        p_dis = (1 - p_buy) * (1 - p_click) * p_dismiss
        impressions += len(chosen)
        purchases += float(p_buy.sum())
        dismissals += float(p_dis.sum())
        value += float(p_buy @ replay.margin[pairs])
        for key in keys:
            shown_count[key] = shown_count.get(key, 0) + 1
        if caps is not None:
            u = rng.random(len(chosen))
            for j, p in enumerate(chosen):
                event = "purchase" if u[j] < p_buy[j] else "dismiss" if u[j] > 1 - p_dis[j] else None
                if event is not None:
                    caps.record_event(cm, cap_cand[str(batch.offer_id[p])], event, placements[i], now)
    return LoopResult(
        name, caps is not None, len(np.unique(member_ids)), batch.n_requests, impressions, purchases,
        dismissals, value,
    )  # fmt: skip


def loop_table(results: list[LoopResult]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in results])
