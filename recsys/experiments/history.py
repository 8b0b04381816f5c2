"""Pre-experiment behaviour per member (the CUPED covariates): purchases, their cash value and miles.

From the service's event log (purchases before the experiment started) or, for a generated or imported
world, from the dataset's interactions. Prices come from the offer catalogue.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recsys.experiments.attribution import EventLike, Price
from recsys.experiments.report import History
from recsys.schema import EventType


def history_from_events(
    events: Iterable[EventLike], prices: Mapping[str, Price], members: Collection[str] | None = None
) -> dict[str, History]:
    """Sum the purchases among ``events`` (already limited to before the experiment) per member."""
    acc: dict[str, list[float]] = {}
    for ev in events:
        if ev.event_type != EventType.PURCHASE or (members is not None and ev.member_id not in members):
            continue
        price = prices.get(ev.offer_id, Price())
        row = acc.setdefault(ev.member_id, [0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += price.cash
        row[2] += price.miles
    return {m: History(*v) for m, v in acc.items()}


def dataset_history(
    root: Path | str,
    before: datetime,
    prices: Mapping[str, Price],
    members: Collection[str] | None = None,
    *,
    since: datetime | None = None,
) -> dict[str, History]:
    """Purchases in a dataset's ``interactions`` before ``before`` (and from ``since``), per member."""
    from recsys.data.layout import has_table, iter_table
    from recsys.schema import INTERACTIONS, Col

    if not has_table(Path(root), INTERACTIONS.name):
        return {}
    cut = pd.Timestamp(before.astimezone(UTC).replace(tzinfo=None))
    lo = pd.Timestamp(since.astimezone(UTC).replace(tzinfo=None)) if since is not None else None
    cash = {k: p.cash for k, p in prices.items()}
    miles = {k: p.miles for k, p in prices.items()}
    parts = []
    cols = [Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME]
    for df in iter_table(root, INTERACTIONS.name, columns=cols):
        t = pd.to_datetime(df[Col.EVENT_TIME])
        if t.dt.tz is not None:
            t = t.dt.tz_convert("UTC").dt.tz_localize(None)
        keep = (df[Col.EVENT_TYPE] == EventType.PURCHASE.value) & (t < cut)
        if lo is not None:
            keep &= t >= lo
        if members is not None:
            keep &= df[Col.MEMBER_ID].isin(list(members) if not isinstance(members, set) else members)
        sel = df.loc[keep, [Col.MEMBER_ID, Col.OFFER_ID]]
        parts.append(
            pd.DataFrame(
                {
                    "member": sel[Col.MEMBER_ID].astype(str).to_numpy(),
                    "n": 1.0,
                    "cash": sel[Col.OFFER_ID].map(cash).fillna(0.0).to_numpy(dtype=float),
                    "miles": sel[Col.OFFER_ID].map(miles).fillna(0.0).to_numpy(dtype=float),
                }
            )
        )
    if not parts:
        return {}
    g = pd.concat(parts).groupby("member")[["n", "cash", "miles"]].sum()
    return {
        str(m): History(float(r.n), float(r.cash), float(r.miles))
        for m, r in zip(g.index, g.itertuples(index=False), strict=True)
    }


def merge_history(*parts: Mapping[str, History]) -> dict[str, History]:
    """Per-member sums of several histories (e.g. the dataset's and the event log's)."""
    out: dict[str, History] = {}
    for part in parts:
        for m, h in part.items():
            o = out.get(m)
            out[m] = (
                h if o is None else History(o.purchases + h.purchases, o.value + h.value, o.miles + h.miles)
            )
    return out
