"""Member × item interaction matrices built from members' histories.

Items are the offers of the catalogue **and** tokens of what members do on their trips::

    offer:<offer_id>        an offer (impressions, clicks, purchases, dismissals; ancillary purchases and
                            redemptions that name the offer)
    dest:<IATA>             a journey's destination flown to (flights; a leg that only connects does not
                            count, see :mod:`recsys.data.trips`), an award redeemed for it (redemptions) or
                            a car rented there (partner activities)
    hotel:<IATA>            a hotel stay in that city: partner hotel nights earned (partner activities) or
                            a hotel redeemed with miles (redemptions of kind ``hotel``)
    route:<ORG>-<DST>       a route flown
    cabin:<F|C|W|Y>         a cabin flown
    meal:<code>             a meal taken (special meals and signature dishes; ``STD``/``NONE`` are skipped)
    category:<category>     an ancillary category bought (seat, baggage, ...), with or without an offer

Weights (all in :class:`InteractionConfig`, defaults below) — one *contribution* per event, summed per cell:

=====================================  ========  =====================================================
source                                  weight    why
=====================================  ========  =====================================================
offer purchase event                     5.0      the member paid: strongest evidence of interest
offer click                              2.0      active interest without commitment
offer impression                         0.05     exposure only; mostly decided by the serving policy
offer dismiss                           -2.0      explicit rejection (see "negative cells" below)
ancillary purchase naming an offer       5.0      a purchase — counted only where the member has no
                                                  purchase event for that offer (see "one purchase, one
                                                  count")
ancillary purchase → category token      1.0
redemption naming an offer               5.0      miles spent on the offer (same rule)
redemption → dest token                  2.0      (a hotel redemption: → hotel token, same weight)
flight → dest / route / cabin / meal     1.0 / 1.0 / 0.5 / 1.0
partner hotel stay → hotel token         1.0
partner car rental → dest token          0.5
=====================================  ========  =====================================================

**Imported weights**: a generic import's ``interactions.weight`` (a play count, a rating) multiplies its row's
event weight; NaN, infinite or negative weights are refused.

**Confidence transform** (``transform``): after the cells are summed, ``raw`` keeps them, ``log1p`` takes
``log(1 + w)`` (counts spanning 1 to 100,000s) and ``bm25`` applies implicit's ``bm25_weight`` (items as the
documents). ``raw`` is the default: the airline world's event weights were chosen on it.

**One purchase, one count**: an offer bought through the app is logged twice — as a ``purchase`` event and as
an ancillary or redemption row. Rows naming an offer are therefore added only to (member, offer) cells that
have no purchase event; they still carry the history from before the offer log started.

**Recency**: each contribution is multiplied by ``0.5 ** (age_days / half_life_days)`` where ``age_days`` is
measured back from the reference time — ``before`` when given (the training cut-off), otherwise the latest
event time in the data. ``half_life_days=None`` disables decay.

**Negative cells**: contributions are summed per (member, item) cell first; a cell whose total is ≤ 0 is
dropped (policy ``drop``): a dismissal cancels the weak positive of its impression and a click, but never
turns an offer into a positive signal, and a later purchase outweighs an earlier dismissal. implicit's ALS
would read negative values as "confident dislike", BPR and LightFM would read any non-zero as a positive —
dropping is the one policy all models share.

**Cut-off**: with ``before=T`` only events strictly before ``T`` are read (flights by departure time).

**Availability**: :func:`offer_availability` gives each item the recency-weighted share of the window it could
be interacted with (an offer's validity within the offer log); popularity divides by it, so a new offer is
judged on the time it has had.

The build is vectorised with scipy.sparse and reads partitioned tables part by part (:func:`iter_table`), so a
1,000,000-member world with ~10 M flights stays within a few minutes and a few GB: the accumulator holds one
entry per distinct (member, item) cell, not one per event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recsys.data.layout import has_table, iter_table, latest_event_time, read_table, table_columns
from recsys.data.times import to_utc_naive
from recsys.data.trips import connecting_legs
from recsys.ids import IdMap
from recsys.schema import (
    ANCILLARIES,
    FLIGHTS,
    INTERACTIONS,
    MEMBERS,
    OFFERS,
    PARTNER_ACTIVITIES,
    REDEMPTIONS,
    Col,
    EventType,
    MealCode,
    PartnerKind,
    RedemptionKind,
)

log = logging.getLogger(__name__)

OFFER_PREFIX = "offer:"
DEST_PREFIX = "dest:"
ROUTE_PREFIX = "route:"
CABIN_PREFIX = "cabin:"
MEAL_PREFIX = "meal:"
CATEGORY_PREFIX = "category:"
HOTEL_PREFIX = "hotel:"
TOKEN_KINDS = ("offer", "dest", "route", "cabin", "meal", "category", "hotel")

_COL_CAP = 2**24  # column space of the accumulator before the vocabulary is final (16 M items)


class EventWeights(BaseModel):
    """Weight of one offer event of each type (``interactions`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    purchase: float = 5.0
    click: float = 2.0
    impression: float = 0.05
    dismiss: float = -2.0


class SourceWeights(BaseModel):
    """Weight of one row of the other history tables, per item token it produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ancillary_offer: float = Field(default=5.0, ge=0)
    ancillary_category: float = Field(default=1.0, ge=0)
    redemption_offer: float = Field(default=5.0, ge=0)
    redemption_destination: float = Field(default=2.0, ge=0)
    flight_destination: float = Field(default=1.0, ge=0)
    flight_route: float = Field(default=1.0, ge=0)
    flight_cabin: float = Field(default=0.5, ge=0)
    flight_meal: float = Field(default=1.0, ge=0)
    partner_hotel: float = Field(default=1.0, ge=0)
    partner_car_rental: float = Field(default=0.5, ge=0)


Transform = Literal["raw", "log1p", "bm25"]


class InteractionConfig(BaseModel):
    """How histories become a weighted member × item matrix (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: EventWeights = EventWeights()
    sources: SourceWeights = SourceWeights()
    half_life_days: float | None = Field(default=180.0, gt=0)
    transform: Transform = Field(
        default="raw",
        description="applied to each cell's summed weight: raw (as summed), log1p (log(1 + w): play counts "
        "from 1 to 100,000s), bm25 (implicit's bm25_weight, items as documents)",
    )
    bm25_k1: float = Field(default=100.0, gt=0)
    bm25_b: float = Field(default=0.8, ge=0, le=1)
    meal_skip: tuple[str, ...] = (MealCode.STANDARD.value, MealCode.NONE.value)
    min_weight: float = Field(default=0.0, ge=0, description="cells with a total weight <= this are dropped")
    new_offer_min_days: float = Field(
        default=7.0,
        gt=0,
        description="an offer's availability counts at least this many days (see offer_availability): the "
        "smaller, the sooner a new offer's early interactions lift its popularity",
    )

    def flat(self, prefix: str = "interactions.") -> dict[str, Any]:
        """Flattened parameters, loggable to a tracking server."""
        return _flatten(self.model_dump(mode="json"), prefix)


def _flatten(obj: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list | tuple):
            out[f"{prefix}{key}"] = ",".join(map(str, value))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class InteractionMatrix:
    """The result of :func:`build_interactions`.

    ``matrix`` is members × items (CSR, float32, only positive cells); rows follow ``member_ids`` (every
    member of the members table, including those without history), columns follow ``item_ids`` (every
    catalogue offer first, in catalogue order, as ``offer:<id>``; then the tokens seen, sorted).
    ``purchased`` has the same shape and marks (1.0) the offers each member bought or redeemed before the
    cut-off.
    """

    matrix: sp.csr_matrix
    purchased: sp.csr_matrix
    member_ids: IdMap
    item_ids: IdMap
    reference_time: pd.Timestamp
    config: InteractionConfig
    stats: dict[str, int] = field(default_factory=dict)
    # The earliest offer event read (the start of the offer log in the window); None without offer events.
    offer_log_start: pd.Timestamp | None = None

    @property
    def n_offers(self) -> int:
        """Number of offer items (they are the first columns)."""
        return int(np.sum(self.item_kinds == "offer"))

    @property
    def item_kinds(self) -> np.ndarray:
        """Kind of each item column: offer, dest, route, cabin, meal or category."""
        return item_kind(self.item_ids.external_ids)

    def member_has_history(self) -> np.ndarray:
        """Boolean per member row: at least one positive cell."""
        return np.diff(self.matrix.indptr) > 0


def offer_item(offer_ids: Any) -> Any:
    """``offer:<id>`` item ids of offer ids (a scalar or an array)."""
    if isinstance(offer_ids, str):
        return OFFER_PREFIX + offer_ids
    return np.asarray([OFFER_PREFIX + str(o) for o in offer_ids], dtype=object)


def item_kind(item_ids: np.ndarray) -> np.ndarray:
    """The kind (prefix before ``:``) of each item id."""
    s = pd.Series(np.asarray(item_ids, dtype=object), dtype=object)
    return s.str.split(":", n=1).str[0].to_numpy(dtype=object)


class _Vocab:
    """Growing token vocabulary: global column id per token, in order of first appearance."""

    def __init__(self, initial: np.ndarray) -> None:
        self.index: dict[str, int] = {}
        for token in initial:
            self.index.setdefault(str(token), len(self.index))

    def ids(self, tokens: np.ndarray) -> np.ndarray:
        """Column ids of (few, unique) tokens, adding the unseen ones."""
        out = np.empty(len(tokens), dtype=np.int64)
        for i, token in enumerate(tokens):
            out[i] = self.index.setdefault(str(token), len(self.index))
        return out


def _encode(prefix: str, *columns: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Row codes and unique token strings for ``prefix + col1 [+ "-" + col2]``, without per-row string work.

    Rows with a missing value get code -1.
    """
    codes_list = []
    uniques_list = []
    for col in columns:
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        codes_list.append(codes.astype(np.int64))
        uniques_list.append(np.asarray(uniques, dtype=object))
    combined = codes_list[0].copy()
    valid = combined >= 0
    for codes, uniques in zip(codes_list[1:], uniques_list[1:], strict=True):
        combined = combined * max(len(uniques), 1) + codes
        valid &= codes >= 0
    if not valid.any():
        return np.full(len(combined), -1, dtype=np.int64), np.empty(0, dtype=object)
    uniq, inverse = np.unique(combined[valid], return_inverse=True)
    out = np.full(len(combined), -1, dtype=np.int64)
    out[valid] = inverse
    # Decode each unique combined code back into its parts.
    parts = []
    rest = uniq.copy()
    for uniques in reversed(uniques_list[1:]):
        parts.append(uniques[rest % max(len(uniques), 1)])
        rest = rest // max(len(uniques), 1)
    parts.append(uniques_list[0][rest])
    parts.reverse()
    tokens = np.asarray([prefix + "-".join(str(p[i]) for p in parts) for i in range(len(uniq))], dtype=object)
    return out, tokens


class _Accumulator:
    """Sums (row, column, weight) contributions part by part into one CSR matrix.

    Parts are buffered as COO arrays and merged into the CSR sum when the buffer holds as many entries as the
    sum has cells (and at least ``min_flush``): each merge costs O(sum + buffer), so merging every part into
    the whole sum — quadratic in the number of parts — is avoided, while memory stays within about twice one
    entry per distinct cell.
    """

    def __init__(self, n_rows: int, min_flush: int = 2_000_000) -> None:
        self.n_rows = n_rows
        self.min_flush = min_flush
        self._acc = sp.csr_matrix((n_rows, _COL_CAP), dtype=np.float64)
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._buffered = 0

    def add(self, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> None:
        keep = (rows >= 0) & (cols >= 0) & (weights != 0)
        if not keep.any():
            return
        self._rows.append(rows[keep].astype(np.int32))
        self._cols.append(cols[keep].astype(np.int32))
        self._vals.append(weights[keep].astype(np.float64))
        self._buffered += int(keep.sum())
        if self._buffered >= max(self.min_flush, self._acc.nnz):
            self._flush()

    @property
    def acc(self) -> sp.csr_matrix:
        """The sum so far (buffered parts merged in)."""
        self._flush()
        return self._acc

    @acc.setter
    def acc(self, value: sp.csr_matrix) -> None:
        self._flush()
        self._acc = value

    def _flush(self) -> None:
        if not self._buffered:
            return
        part = sp.coo_matrix(
            (np.concatenate(self._vals), (np.concatenate(self._rows), np.concatenate(self._cols))),
            shape=(self.n_rows, _COL_CAP),
        ).tocsr()
        part.sum_duplicates()  # canonical CSR: the sum below then merges rows without column-sized buffers
        self._acc = self._acc + part
        self._rows, self._cols, self._vals, self._buffered = [], [], [], 0

    def result(self, n_cols: int, col_order: np.ndarray, min_weight: float) -> sp.csr_matrix:
        """The final matrix with columns renumbered by ``col_order[old] = new``; cells <= min_weight
        dropped."""
        m = self.acc.tocoo()
        keep = m.data > min_weight
        out = sp.csr_matrix(
            (m.data[keep].astype(np.float32), (m.row[keep], col_order[m.col[keep]])),
            shape=(self.n_rows, n_cols),
        )
        out.sum_duplicates()
        out.sort_indices()
        return out


@dataclass(frozen=True)
class Holdout:
    """History a split keeps out of training, beside (or instead of) a global cut-off ``before``.

    ``member_cutoffs`` (member_id -> naive UTC time): that member's rows at or after the time are held out
    (per-member time splits); members not listed keep all their history. ``pairs`` (member_id, offer_id):
    every row naming such a pair is held out (the random split of data without timestamps).
    """

    member_cutoffs: pd.Series | None = None
    pairs: pd.DataFrame | None = None

    def keep(self, df: pd.DataFrame, times: pd.Series) -> np.ndarray:
        """Boolean per row of ``df`` (member_id [, offer_id]): not held out."""
        out = np.ones(len(df), dtype=bool)
        if self.member_cutoffs is not None and len(self.member_cutoffs):
            cut = df[Col.MEMBER_ID].astype(str).map(self.member_cutoffs)
            out &= (cut.isna() | (times < cut)).to_numpy(dtype=bool)
        if self.pairs is not None and len(self.pairs) and Col.OFFER_ID in df.columns:
            held = pd.MultiIndex.from_frame(self.pairs[[Col.MEMBER_ID, Col.OFFER_ID]].astype(str))
            key = pd.MultiIndex.from_arrays([df[Col.MEMBER_ID].astype(str), df[Col.OFFER_ID].astype(str)])
            out &= ~np.asarray(key.isin(held), dtype=bool)
        return out


def apply_transform(matrix: sp.csr_matrix, cfg: InteractionConfig) -> sp.csr_matrix:
    """The configured confidence transform of a summed member × item matrix (positive cells only)."""
    if cfg.transform == "raw":
        return matrix
    out = matrix.copy()
    if cfg.transform == "log1p":
        out.data = np.log1p(out.data).astype(np.float32)
    else:
        from implicit.nearest_neighbours import bm25_weight

        # implicit's convention (its lastfm example): items are the documents, members the terms.
        out = sp.csr_matrix(bm25_weight(matrix.T.tocoo(), K1=cfg.bm25_k1, B=cfg.bm25_b).T, dtype=np.float32)
        out.data = np.maximum(out.data, 0.0)  # idf < 0 for a member who touched almost every item
    out.eliminate_zeros()
    out.sort_indices()
    return out


def build_interactions(
    dataset_dir: Path | str,
    config: InteractionConfig | dict[str, Any] | None = None,
    before: datetime | None = None,
    *,
    holdout: Holdout | None = None,
    progress: bool = False,
) -> InteractionMatrix:
    """Build the weighted member × item matrix of a dataset (see the module docstring for the weights).

    ``before`` keeps only events strictly before that time (train on the period before T); ``holdout``
    drops what a per-member or random split holds out. Members come from the members table, offers from the
    offers table; events of unknown members or offers are dropped and counted in ``stats``. Rows without a
    time (data without timestamps) are read only when there is no cut-off, and are not decayed.

    ``interactions.weight`` (generic imports) multiplies its row's event weight; a NaN, infinite or negative
    weight is a ``ValueError`` naming the table, the column and the first bad event.
    """
    cfg = config if isinstance(config, InteractionConfig) else InteractionConfig.model_validate(config or {})
    root = Path(dataset_dir)
    members = read_table(root, MEMBERS.name, [Col.MEMBER_ID])
    offers = read_table(root, OFFERS.name, [Col.OFFER_ID])
    member_ids = IdMap(members[Col.MEMBER_ID].astype(str).to_numpy(dtype=object))
    offer_items = offer_item(offers[Col.OFFER_ID].astype(str).to_numpy())
    cutoff = to_utc_naive(before) if before is not None else None
    reference = cutoff if cutoff is not None else _latest_time(root, required=False)
    member_cut = holdout is not None and holdout.member_cutoffs is not None

    vocab = _Vocab(offer_items)
    n_offers = len(offer_items)
    weights = _Accumulator(member_ids.size)
    bought = _Accumulator(member_ids.size)
    offer_rows = _Accumulator(member_ids.size)  # ancillary/redemption rows naming an offer
    event_bought = _Accumulator(member_ids.size)  # purchase events
    stats: dict[str, int] = {}
    starts: list[pd.Timestamp] = []

    ref = reference.to_datetime64()

    def decay(times: np.ndarray) -> np.ndarray:
        if cfg.half_life_days is None:
            return np.ones(len(times))
        # numpy's unit promotion, not pandas' overflow-checked one (as slow as the rest of the decay); the
        # same seconds as Series.dt.total_seconds, NaT giving NaN
        age_days = ((ref - times) / np.timedelta64(1, "s")) / 86_400.0
        age_days = np.nan_to_num(age_days, nan=0.0)  # an undated row is not decayed
        return np.power(0.5, np.maximum(age_days, 0.0) / cfg.half_life_days)

    def parts(table: str, columns: list[str], time_col: str) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
        if not has_table(root, table):
            return
        from tqdm import tqdm

        # string columns as categoricals: ids and tokens are looked up once per distinct value, not per row
        it = tqdm(
            iter_table(root, table, columns, categorical=True),
            desc=f"interactions: {table}",
            unit="part",
            disable=not progress,
        )
        for df in it:
            times = to_utc_naive(df[time_col])
            t = times.to_numpy()
            dated = ~np.isnat(t)
            # Undated rows (data without timestamps) count only when no time cut-off applies.
            in_window = dated.copy() if cutoff is not None or member_cut else np.ones(len(df), dtype=bool)
            if cutoff is not None:
                in_window &= t < cutoff.to_datetime64()
            if holdout is not None:
                in_window &= holdout.keep(df, times)
            if not dated.all():
                stats[f"{table}.undated"] = stats.get(f"{table}.undated", 0) + int((~dated).sum())
            stats[f"{table}.read"] = stats.get(f"{table}.read", 0) + len(df)
            if not in_window.all():
                df, t = df.loc[in_window], t[in_window]
            if df.empty:
                continue
            rows = member_ids.to_index(df[Col.MEMBER_ID], missing=-1)
            unknown = int((rows < 0).sum())
            if unknown:
                stats[f"{table}.unknown_member"] = stats.get(f"{table}.unknown_member", 0) + unknown
            stats[f"{table}.used"] = stats.get(f"{table}.used", 0) + len(df) - unknown
            if table == INTERACTIONS.name and not np.isnat(t).all():
                starts.append(pd.Timestamp(t[~np.isnat(t)].min()))
            yield df.assign(_row=rows), decay(t)

    def offer_cols(df: pd.DataFrame, table: str) -> np.ndarray:
        codes, uniques = pd.factorize(df[Col.OFFER_ID])  # a missing id: code -1
        present = codes >= 0
        cols = np.full(len(df), -1, dtype=np.int64)
        if present.any():
            known = np.asarray([vocab.index.get(OFFER_PREFIX + str(u), -1) for u in uniques], dtype=np.int64)
            cols[present] = known[codes[present]]
        unknown = int(((cols < 0) & present).sum())
        if unknown:
            stats[f"{table}.unknown_offer"] = stats.get(f"{table}.unknown_offer", 0) + unknown
        return cols

    def token_cols(prefix: str, *columns: pd.Series, skip: tuple[str, ...] = ()) -> np.ndarray:
        codes, tokens = _encode(prefix, *columns)
        ids = np.full(len(tokens), -1, dtype=np.int64)
        wanted = ~np.isin(tokens, [prefix + s for s in skip]) if skip else np.ones(len(tokens), dtype=bool)
        ids[wanted] = vocab.ids(tokens[wanted])
        out = np.full(len(codes), -1, dtype=np.int64)
        ok = codes >= 0
        out[ok] = ids[codes[ok]]
        return out

    # Offer events.
    weighted = Col.WEIGHT in table_columns(root, INTERACTIONS.name)
    event_weight = {
        EventType.PURCHASE.value: cfg.events.purchase,
        EventType.CLICK.value: cfg.events.click,
        EventType.IMPRESSION.value: cfg.events.impression,
        EventType.DISMISS.value: cfg.events.dismiss,
    }
    event_cols = [Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME]
    for df, dec in parts(
        INTERACTIONS.name, event_cols + ([Col.EVENT_ID, Col.WEIGHT] if weighted else []), Col.EVENT_TIME
    ):
        codes, kinds = pd.factorize(df[Col.EVENT_TYPE])
        kind_weight = np.asarray([event_weight.get(str(k), np.nan) for k in kinds] + [np.nan])
        w = kind_weight[codes]  # code -1 (missing) picks the trailing NaN
        bad = np.isnan(w)
        if bad.any():
            stats["interactions.unknown_event_type"] = stats.get("interactions.unknown_event_type", 0) + int(
                bad.sum()
            )
            w[bad] = 0.0
        if weighted:
            w = w * _row_weights(root, df)
        cols = offer_cols(df, INTERACTIONS.name)
        rows = df["_row"].to_numpy()
        weights.add(rows, cols, w * dec)
        purchase_code = [i for i, k in enumerate(kinds) if str(k) == EventType.PURCHASE.value]
        is_purchase = np.isin(codes, purchase_code)
        bought.add(rows[is_purchase], cols[is_purchase], np.ones(int(is_purchase.sum())))
        event_bought.add(rows[is_purchase], cols[is_purchase], np.ones(int(is_purchase.sum())))

    # Ancillary purchases.
    for df, dec in parts(
        ANCILLARIES.name, [Col.MEMBER_ID, Col.OFFER_ID, Col.CATEGORY, Col.PURCHASE_TIME], Col.PURCHASE_TIME
    ):
        rows = df["_row"].to_numpy()
        cols = offer_cols(df, ANCILLARIES.name)
        offer_rows.add(rows, cols, cfg.sources.ancillary_offer * dec)
        bought.add(rows, cols, np.ones(len(rows)))
        weights.add(rows, token_cols(CATEGORY_PREFIX, df[Col.CATEGORY]), cfg.sources.ancillary_category * dec)

    # Redemptions: an award's destination, a hotel's city (a table without kinds: destinations only).
    red_cols = [Col.MEMBER_ID, Col.OFFER_ID, Col.DESTINATION, Col.REDEEM_TIME]
    with_kind = Col.KIND in table_columns(root, REDEMPTIONS.name)
    for df, dec in parts(REDEMPTIONS.name, red_cols + [Col.KIND] * with_kind, Col.REDEEM_TIME):
        rows = df["_row"].to_numpy()
        cols = offer_cols(df, REDEMPTIONS.name)
        offer_rows.add(rows, cols, cfg.sources.redemption_offer * dec)
        bought.add(rows, cols, np.ones(len(rows)))
        hotel = (
            (df[Col.KIND] == RedemptionKind.HOTEL.value).to_numpy(bool)  # a missing kind is not a hotel
            if with_kind
            else np.zeros(len(df), dtype=bool)
        )
        place = df[Col.DESTINATION]
        w = cfg.sources.redemption_destination * dec
        weights.add(rows, token_cols(DEST_PREFIX, place.where(~hotel)), w)
        weights.add(rows, token_cols(HOTEL_PREFIX, place.where(hotel)), w)

    # Partner activities (optional table): hotel stays and car rentals, at a place.
    for df, dec in parts(
        PARTNER_ACTIVITIES.name, [Col.MEMBER_ID, Col.KIND, Col.PLACE, Col.ACTIVITY_TIME], Col.ACTIVITY_TIME
    ):
        rows = df["_row"].to_numpy()
        hotel = (df[Col.KIND] == PartnerKind.HOTEL.value).to_numpy(bool)
        car = (df[Col.KIND] == PartnerKind.CAR_RENTAL.value).to_numpy(bool)
        place = df[Col.PLACE]
        weights.add(rows, token_cols(HOTEL_PREFIX, place.where(hotel)), cfg.sources.partner_hotel * dec)
        weights.add(rows, token_cols(DEST_PREFIX, place.where(car)), cfg.sources.partner_car_rental * dec)

    # Flights: destination, route, cabin and meal tokens.
    s = cfg.sources
    for df, dec in parts(
        FLIGHTS.name,
        [Col.MEMBER_ID, Col.ORIGIN, Col.DESTINATION, Col.CABIN, Col.MEAL_CODE, Col.DEPARTURE_TIME],
        Col.DEPARTURE_TIME,
    ):
        rows = df["_row"].to_numpy()
        onward = connecting_legs(
            df[Col.MEMBER_ID], df[Col.ORIGIN], df[Col.DESTINATION], df[Col.DEPARTURE_TIME]
        )
        journey_end = df[Col.DESTINATION].where(~onward)
        weights.add(rows, token_cols(DEST_PREFIX, journey_end), s.flight_destination * dec)
        weights.add(rows, token_cols(ROUTE_PREFIX, df[Col.ORIGIN], df[Col.DESTINATION]), s.flight_route * dec)
        weights.add(rows, token_cols(CABIN_PREFIX, df[Col.CABIN]), s.flight_cabin * dec)
        weights.add(rows, token_cols(MEAL_PREFIX, df[Col.MEAL_CODE], skip=cfg.meal_skip), s.flight_meal * dec)

    # Final column order: offers (catalogue order), then tokens sorted.
    # One purchase, one count: offer rows only where no purchase event exists for the cell.
    has_event = event_bought.acc.copy()
    has_event.data[:] = 1.0
    weights.acc = weights.acc + (offer_rows.acc - offer_rows.acc.multiply(has_event))
    tokens = np.asarray(list(vocab.index), dtype=object)
    if len(tokens) >= _COL_CAP:
        raise ValueError(f"too many distinct items ({len(tokens)}); at most {_COL_CAP - 1} supported")
    token_order = np.argsort(tokens[n_offers:].astype(str), kind="stable")
    new_pos = np.empty(len(tokens), dtype=np.int64)
    new_pos[:n_offers] = np.arange(n_offers)
    new_pos[n_offers + token_order] = np.arange(n_offers, len(tokens))
    item_ids = np.empty(len(tokens), dtype=object)
    item_ids[new_pos] = tokens
    matrix = apply_transform(weights.result(len(tokens), new_pos, cfg.min_weight), cfg)
    purchased = bought.result(len(tokens), new_pos, 0.0)
    purchased.data[:] = 1.0
    stats["cells"] = int(matrix.nnz)
    log.info("interaction matrix %s, %d cells; %s", matrix.shape, matrix.nnz, stats)
    return InteractionMatrix(
        matrix=matrix,
        purchased=purchased,
        member_ids=member_ids,
        item_ids=IdMap(item_ids),
        reference_time=pd.Timestamp(reference),
        config=cfg,
        stats=stats,
        offer_log_start=min(starts) if starts else None,
    )


def offer_availability(
    offers: pd.DataFrame, inter: InteractionMatrix, min_days: float | None = None
) -> np.ndarray:
    """Per item column of ``inter``: how much of the training window the item could be interacted with,
    recency-weighted like the interactions, relative to an item available throughout (1.0).

    An offer is available from ``valid_from`` to ``valid_to`` (the catalogue's validity), clipped to the offer
    log in the window (``inter.offer_log_start`` .. ``inter.reference_time``); an offer that started two days
    before the cut-off had two days to collect interactions, not a year. Each span counts at least
    ``min_days`` (default: the matrix's ``new_offer_min_days``; a brand-new offer's first hours say little).
    Tokens (destinations, routes...) and offers without validity dates get 1. Popularity divides interaction
    weight by this: weight per available time.

    The floor matters: on the 50k world an offer launched 1.25 days before the test cut-off is the test
    period's most bought offer; a 1-day floor lifts every model's test NDCG@10 by ~0.04, but the validation
    period prefers 5 days or more (README, "How to read the comparison table"), so 7 stays the default.
    """
    if min_days is None:
        min_days = inter.config.new_offer_min_days
    out = np.ones(len(inter.item_ids), dtype=np.float64)
    start, end = inter.offer_log_start, inter.reference_time
    if start is None or offers.empty or not end > start:
        return out
    hl = inter.config.half_life_days

    def weight(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Recency-weighted length of [a, b] (days before the reference)."""
        if hl is None:
            return np.maximum(a - b, 0.0)
        k = np.log(2.0) / hl
        return np.maximum((np.exp(-k * b) - np.exp(-k * a)) / k, 0.0)

    window = (end - start).total_seconds() / 86_400.0
    vf = to_utc_naive(offers[Col.VALID_FROM]) if Col.VALID_FROM in offers else pd.Series(pd.NaT, offers.index)
    vt = to_utc_naive(offers[Col.VALID_TO]) if Col.VALID_TO in offers else pd.Series(pd.NaT, offers.index)
    # days before the reference at which each offer's span in the window ends (b) and starts (a)
    b = ((end - vt.fillna(end).clip(upper=end)).dt.total_seconds() / 86_400.0).to_numpy()
    a = ((end - vf.fillna(start).clip(lower=start)).dt.total_seconds() / 86_400.0).to_numpy()
    b = np.clip(np.nan_to_num(b, nan=0.0), 0.0, window)
    a = np.clip(np.nan_to_num(a, nan=window), 0.0, window)
    a = np.minimum(np.maximum(a, b + min_days), max(window, min_days))  # at least min_days long
    share = weight(a, b) / max(float(weight(np.array([window]), np.array([0.0]))[0]), 1e-12)
    cols = inter.item_ids.to_index(offer_item(offers[Col.OFFER_ID].astype(str).to_numpy()), missing=-1)
    ok = cols >= 0
    out[cols[ok]] = np.clip(share[ok], 1e-6, 1.0)
    return out


def _row_weights(root: Path, df: pd.DataFrame) -> np.ndarray:
    """``interactions.weight`` of the rows as floats; NaN, infinite or negative weights are refused."""
    values = pd.to_numeric(df[Col.WEIGHT], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        event, value = df[Col.EVENT_ID].iloc[first], df[Col.WEIGHT].iloc[first]
        raise ValueError(
            f"{root / INTERACTIONS.name}: column '{Col.WEIGHT}' has {int(bad.sum())} NaN, infinite or "
            f"negative value(s) (first: event_id {event!r}, weight {value!r}); weights must be >= 0"
        )
    return values


def _latest_time(root: Path, required: bool = True) -> pd.Timestamp:
    """The latest event time over all history tables (the reference for recency when no cut-off is given).

    Data without any timestamp has no reference; with ``required=False`` its undated rows are not decayed
    and the reference is the Unix epoch."""
    latest = latest_event_time(
        root,
        (
            (INTERACTIONS.name, Col.EVENT_TIME),
            (ANCILLARIES.name, Col.PURCHASE_TIME),
            (REDEMPTIONS.name, Col.REDEEM_TIME),
            (FLIGHTS.name, Col.DEPARTURE_TIME),
            (PARTNER_ACTIVITIES.name, Col.ACTIVITY_TIME),
        ),
    )
    if latest is None:
        if not required:
            return pd.Timestamp(0)
        raise ValueError(f"{root}: the dataset has no dated history (no flights, purchases or events)")
    return latest
