"""Miles balances from the miles ledger: what a member holds at a given time.

The members table's ``miles_balance`` is a snapshot at the end of the data: using it for an earlier time
leaks the future (miles earned and spent since). A dataset with a ledger - flights' ``miles_earned``, the
``redemptions`` table and, when present, ``partner_activities`` - gives the balance at any time: miles
earned by flights departed and partner activities before it, less miles redeemed before it (the generator
builds the end balance the same way, so the two agree at the end). Data without a ledger (imported
datasets) keeps the members table's balance: :func:`balances_as_of` and :func:`balances_at` return ``None``.

A replayed request batch carries each request's balance in one column, :data:`BALANCE_AT_REQUEST`, read once
(:func:`with_balances_at`); its readers (the replay's affordability, the replayed pipeline's member record,
the ranker's feature) take it from there (:func:`balances_column`) so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.layout import has_table, iter_table, table_columns
from recsys.data.times import to_utc_naive
from recsys.features.lrfmc import datetime_values
from recsys.schema import Col

# Per request: the member's balance as of the request time; NA throughout when the dataset has no ledger.
BALANCE_AT_REQUEST = "miles_balance_at_request"

# (table, time column, miles column, sign) of each ledger entry kind
LEDGER: tuple[tuple[str, str, str, int], ...] = (
    ("flights", Col.DEPARTURE_TIME, Col.MILES_EARNED, 1),
    ("partner_activities", Col.ACTIVITY_TIME, Col.MILES_EARNED, 1),
    ("redemptions", Col.REDEEM_TIME, Col.MILES_SPENT, -1),
)


def has_miles_ledger(dataset_dir: Path | str) -> bool:
    """Whether the dataset holds miles earned by flights and miles redeemed (partner activities optional)."""
    root = Path(dataset_dir)
    for table, time_col, miles_col, _ in LEDGER:
        if not has_table(root, table):
            if table == "partner_activities":
                continue
            return False
        if not {time_col, miles_col, Col.MEMBER_ID} <= set(table_columns(root, table)):
            return False
    return True


def _entries(root: Path, members: pd.Index) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(member position in ``members``, time as int64 seconds of naive UTC, signed miles) per ledger part;
    entries of other members are dropped."""
    for table, time_col, miles_col, sign in LEDGER:
        if not has_table(root, table):
            continue
        for part in iter_table(root, table, columns=[Col.MEMBER_ID, time_col, miles_col]):
            code = members.get_indexer(part[Col.MEMBER_ID].astype(str))
            keep = code >= 0
            t = datetime_values(part[time_col]).to_numpy("datetime64[s]").astype(np.int64)
            miles = pd.to_numeric(part[miles_col], errors="coerce").fillna(0).to_numpy(np.int64)
            yield code[keep], t[keep], sign * miles[keep]


def balances_as_of(
    dataset_dir: Path | str, member_ids: Sequence[str] | np.ndarray | pd.Series, as_of: pd.Timestamp
) -> np.ndarray | None:
    """Each member's balance from the ledger entries strictly before ``as_of`` (naive UTC), in the order
    given; ``None`` when the dataset has no ledger. Reads the ledger part by part (large worlds)."""
    root = Path(dataset_dir)
    if not has_miles_ledger(root):
        return None
    members = pd.Index(np.asarray(member_ids, dtype=object).astype(str))
    cut = np.datetime64(to_utc_naive(as_of).to_datetime64(), "s").astype(np.int64)
    out = np.zeros(len(members), dtype=np.int64)
    for code, t, miles in _entries(root, members):
        before = t < cut
        out += np.bincount(code[before], weights=miles[before], minlength=len(members)).astype(np.int64)
    return out


def balances_at(
    dataset_dir: Path | str,
    member_ids: Sequence[str] | np.ndarray | pd.Series,
    times: pd.Series | np.ndarray,
) -> np.ndarray | None:
    """The balance of each (member, time) pair from the ledger entries strictly before that time (naive
    UTC); ``None`` when the dataset has no ledger."""
    root = Path(dataset_dir)
    if not has_miles_ledger(root):
        return None
    ids = np.asarray(member_ids, dtype=object).astype(str)
    members = pd.Index(pd.unique(ids))
    q_code = members.get_indexer(ids).astype(np.int64)
    q_t = datetime_values(pd.Series(times)).to_numpy("datetime64[s]").astype(np.int64)
    parts = list(_entries(root, members))
    code = np.concatenate([p[0] for p in parts] or [np.zeros(0, np.int64)]).astype(np.int64)
    t = np.concatenate([p[1] for p in parts] or [np.zeros(0, np.int64)])
    miles = np.concatenate([p[2] for p in parts] or [np.zeros(0, np.int64)])
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    # one integer key (member, time): sort the entries once, cumulative sums, a search per query
    base = min(int(q_t.min()), int(t.min()) if len(t) else int(q_t.min()))
    span = max(int(q_t.max()), int(t.max()) if len(t) else 0) - base + 2
    key = code * span + (t - base)
    order = np.argsort(key, kind="stable")
    key, cum = key[order], np.r_[0, np.cumsum(miles[order])]
    first = np.searchsorted(key, q_code * span, side="left")
    upto = np.searchsorted(key, q_code * span + (q_t - base), side="left")
    return np.asarray(cum[upto] - cum[first], dtype=np.int64)


def with_balances_at(dataset_dir: Path | str, requests: pd.DataFrame) -> pd.DataFrame:
    """``requests`` (``member_id`` and ``request_time`` per row) with :data:`BALANCE_AT_REQUEST`: the
    member's balance as of the request (:func:`balances_at`), NA without a ledger (nullable ``Int64``)."""
    balances = balances_at(dataset_dir, requests[Col.MEMBER_ID].astype(str), requests[Col.REQUEST_TIME])
    column = pd.array([pd.NA] * len(requests) if balances is None else balances, dtype="Int64")
    return requests.assign(**{BALANCE_AT_REQUEST: column})


def balances_column(requests: pd.DataFrame) -> np.ndarray | None:
    """The requests' :data:`BALANCE_AT_REQUEST` as int64, ``None`` when it is NA (no ledger: readers keep the
    profile's balance). Raises ValueError when the column is absent or only partly NA."""
    if BALANCE_AT_REQUEST not in requests:
        raise ValueError(
            f"the replayed requests have no '{BALANCE_AT_REQUEST}' column: build them with "
            "recsys.evaluation.replay.load_replay or add it with recsys.features.miles.with_balances_at "
            "(a replay pickled before the column existed must be rebuilt)"
        )
    column = requests[BALANCE_AT_REQUEST]
    missing = column.isna().to_numpy()
    if missing.all():
        return None
    if missing.any():
        raise ValueError(
            f"'{BALANCE_AT_REQUEST}' is missing for {int(missing.sum())} of {len(missing)} requests"
        )
    return np.asarray(column.to_numpy(np.int64))
