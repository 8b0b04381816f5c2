"""Metrics on slices of the evaluated members: everyone, cold-start vs warm members, and per offer family.

* ``all``            every test member.
* ``cold_start``     test members with no history before the cut-off; ``warm`` the others.
* ``family:<f>``     test members who accepted an offer of family ``f``; relevance is restricted to that
                     family's offers and the model's *same* top-k list is scored against it ("does the list
                     find the upsell this member bought?").
"""

from __future__ import annotations

import pandas as pd

from recsys.evaluation.metrics import METRICS, metric_name, ranking_metrics
from recsys.evaluation.split import TimeSplit
from recsys.schema import Col

ALL = "all"
COLD = "cold_start"
WARM = "warm"


def family_slice(family: str) -> str:
    return f"family:{family}"


def slice_metrics(
    recommendations: pd.DataFrame, split: TimeSplit, offers: pd.DataFrame, k: int
) -> pd.DataFrame:
    """One row per slice: ``slice``, ``n_members``, precision/recall/NDCG/MAP at ``k``; no empty slices."""
    rel = split.relevant
    cold = pd.Index(split.cold_members)
    slices: dict[str, pd.DataFrame] = {
        ALL: rel,
        COLD: rel[rel[Col.MEMBER_ID].isin(cold)],
        WARM: rel[~rel[Col.MEMBER_ID].isin(cold)],
    }
    fam = rel.merge(offers[[Col.OFFER_ID, Col.FAMILY]], on=Col.OFFER_ID, how="left")
    for family in sorted(fam[Col.FAMILY].dropna().unique()):
        slices[family_slice(str(family))] = fam.loc[fam[Col.FAMILY] == family, [Col.MEMBER_ID, Col.OFFER_ID]]
    rows = []
    for name, relevant in slices.items():
        if relevant.empty:
            continue
        m = ranking_metrics(recommendations, relevant, k)
        rows.append(
            {"slice": name, "n_members": int(m["n_members"])}
            | {metric_name(x, k): m[metric_name(x, k)] for x in METRICS}
        )
    return pd.DataFrame(rows)
