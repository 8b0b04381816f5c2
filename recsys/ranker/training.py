"""Training the contextual acceptance ranker from the impressions logged before a cut-off, and judging it on a
held-out period.

Time discipline (nothing a training row sees comes from its own future):

- training rows are the impressions of ``[T - window, T)``; their label is a purchase of the same offer in the
  same request;
- their miles balance is the ledger's as of the impression's time (a replayed request sees it as of the
  request: :class:`recsys.ranker.policy.RankerScorer`, the replayed pipeline);
- their other profile fields and CF scores come from a profile build and a CF model (``base``, ALS by default)
  *as of the window's start* ``T - window`` — exactly the situation of the service, which scores with the
  last published profiles and the last trained model;
- exposure features count the member's events strictly before each impression's time;
- the latest ``calibration_share`` of the window is held out for early stopping and the isotonic map.

The served ranker carries a CF model refitted up to ``T`` (``recsys.models.ranker``): for requests after
``T`` its scores are as fresh as the window-start model's were for the training rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.layout import latest_event_time, read_table, table_columns
from recsys.features.miles import balances_at
from recsys.ranker.features import (
    BOOKING_INPUTS,
    CF_SCORES,
    EVENT_CODES,
    FAMILIES,
    MEMBER_NUMERIC,
    TRAVEL_KEY,
    CFItems,
    ExposureHistory,
    FeatureSpace,
    OfferArrays,
    booking_block,
    booking_inputs,
    cf_scores,
    exposure_block,
    member_travel,
    to_seconds,
    travel_block,
)
from recsys.ranker.model import ContextRanker, RankerConfig, fit_booster, fit_logistic
from recsys.ranker.taste import DestinationFactors
from recsys.schema import Col, EventType

log = logging.getLogger(__name__)


class RankerTrainingError(ValueError):
    """The data cannot train the ranker (no impressions or no purchases in the window)."""


@dataclass
class ImpressionTable:
    """Feature rows of impressions with their labels (purchase of the same offer in the same request)."""

    x: np.ndarray
    y: np.ndarray
    time: np.ndarray
    member_id: np.ndarray
    offer_id: np.ndarray
    placement: np.ndarray
    click: np.ndarray  # 1 where the member clicked the offer in that request (whether or not they bought)
    request_id: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> ImpressionTable:
        return ImpressionTable(
            self.x[idx],
            self.y[idx],
            self.time[idx],
            self.member_id[idx],
            self.offer_id[idx],
            self.placement[idx],
            self.click[idx],
            self.request_id[idx],
        )


@dataclass
class RankerTraining:
    """The fitted ranker, the logistic reference and what training measured."""

    ranker: ContextRanker
    reference: Any  # scikit-learn logistic-regression pipeline on the same rows
    stats: dict[str, Any] = field(default_factory=dict)


def read_events(root: Path, end: pd.Timestamp | None) -> pd.DataFrame:
    """The interactions table (events before ``end``), times as naive UTC."""
    cols = [
        Col.REQUEST_ID,
        Col.MEMBER_ID,
        Col.OFFER_ID,
        Col.FLIGHT_ID,
        Col.PLACEMENT,
        Col.EVENT_TYPE,
        Col.EVENT_TIME,
    ]
    ev = read_table(root, "interactions", columns=cols)
    t = pd.to_datetime(ev[Col.EVENT_TIME])
    if isinstance(t.dtype, pd.DatetimeTZDtype):
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    ev = ev.assign(**{Col.EVENT_TIME: t})
    if end is not None:
        ev = ev.loc[ev[Col.EVENT_TIME] < end]
    return ev.reset_index(drop=True)


def cf_pair_scores(
    bundle: Any, member_ids: np.ndarray, offers: OfferArrays, rows: np.ndarray, destinations: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(:data:`~recsys.ranker.features.CF_SCORES` columns, learned-member flag) of (member, offer) pairs from
    a bundle's model vectors: the learned vector for members with history, the cold-start group vector
    otherwise; NaN for items the model does not know. ``rows`` index ``offers``, whose ``destinations`` (per
    catalogue offer) give the destination tokens."""
    model = bundle.model
    m_rows = bundle.member_ids.to_index(np.asarray(member_ids, dtype=object), missing=-1)
    known = np.zeros(len(m_rows), dtype=bool)
    inside = m_rows >= 0
    known[inside] = model.has_history_[m_rows[inside]]
    vec = model._check_fitted()
    cf_items = CFItems.build(bundle.item_ids, vec.item, offers.offer_ids, destinations)
    uniq, inv = np.unique(m_rows, return_inverse=True)
    users = model.user_vectors(uniq)
    out = np.empty((len(m_rows), len(CF_SCORES)))
    chunk = 200_000
    for s in range(0, len(m_rows), chunk):
        sel = slice(s, s + chunk)
        out[sel] = cf_scores(users[inv[sel]], vec.item, cf_items, rows[sel])
    return out, known


def impression_table(
    root: Path,
    space: FeatureSpace,
    offers: pd.DataFrame,
    events: pd.DataFrame,
    profiles: pd.DataFrame,
    cf_bundle: Any,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    max_rows: int | None = None,
    seed: int = 42,
) -> ImpressionTable:
    """Feature rows of the impressions in ``[start, end)``; ``events`` must hold every event before ``end``
    (the exposure history)."""
    et = events[Col.EVENT_TYPE].astype(str)
    t = events[Col.EVENT_TIME]
    imp = events.loc[(et == EventType.IMPRESSION.value) & (t >= start) & (t < end)]
    if max_rows is not None and len(imp) > max_rows:
        rng = np.random.default_rng(seed)
        imp = imp.iloc[np.sort(rng.choice(len(imp), max_rows, replace=False))]
    if imp.empty:
        raise RankerTrainingError(f"no impressions between {start} and {end}")
    bought = events.loc[et == EventType.PURCHASE.value, [Col.REQUEST_ID, Col.OFFER_ID]].drop_duplicates()
    imp = imp.merge(bought.assign(_y=1), on=[Col.REQUEST_ID, Col.OFFER_ID], how="left")
    clicked = events.loc[et == EventType.CLICK.value, [Col.REQUEST_ID, Col.OFFER_ID]].drop_duplicates()
    imp = imp.merge(clicked.assign(_click=1), on=[Col.REQUEST_ID, Col.OFFER_ID], how="left")
    known = pd.Index(offers[Col.OFFER_ID].astype(str)).get_indexer(imp[Col.OFFER_ID].astype(str)) >= 0
    imp = imp.loc[known].reset_index(
        drop=True
    )  # impressions of offers missing from the catalogue: no features
    n = len(imp)
    # Trip context from the impression's flight.
    # the booking columns when the flights have them (imported data may not: missing)
    booking_cols = [c for c in BOOKING_INPUTS if c in table_columns(root, "flights")] if space.booking else []
    flights = read_table(
        root,
        "flights",
        columns=[Col.FLIGHT_ID, Col.ORIGIN, Col.DESTINATION, Col.DEPARTURE_TIME, Col.CABIN, *booking_cols],
    )
    fpos = pd.Index(flights[Col.FLIGHT_ID].astype(str)).get_indexer(imp[Col.FLIGHT_ID].astype(str).to_numpy())
    has = fpos >= 0

    def flight_col(name: str) -> np.ndarray:
        values = flights[name].to_numpy(object)
        out = np.empty(n, dtype=object)
        out[:] = None
        out[has] = values[fpos[has]]
        return out

    dep = np.full(n, np.nan)
    dep[has] = to_seconds(flights[Col.DEPARTURE_TIME])[fpos[has]]
    booking = booking_inputs(flights, fpos)
    member_ids = imp[Col.MEMBER_ID].astype(str).to_numpy(object)
    offer_ids = imp[Col.OFFER_ID].astype(str).to_numpy(object)
    placement = imp[Col.PLACEMENT].astype(str).to_numpy(object)
    x = pair_features(
        space,
        offers,
        events,
        profiles,
        cf_bundle,
        member_ids,
        offer_ids,
        to_seconds(imp[Col.EVENT_TIME]),
        placement,
        flight_col(Col.ORIGIN),
        flight_col(Col.DESTINATION),
        dep,
        flight_col(Col.CABIN),
        booking=booking,
        miles_balance=balances_at(root, member_ids, imp[Col.EVENT_TIME]),
    )
    y = imp["_y"].fillna(0).to_numpy(np.int8)
    click = imp["_click"].fillna(0).to_numpy(np.int8)
    request_ids = imp[Col.REQUEST_ID].astype(str).to_numpy(object)
    return ImpressionTable(
        x, y, to_seconds(imp[Col.EVENT_TIME]), member_ids, offer_ids, placement, click, request_ids
    )


def pair_features(
    space: FeatureSpace,
    offers: pd.DataFrame,
    events: pd.DataFrame,
    profiles: pd.DataFrame,
    cf_bundle: Any,
    member_ids: np.ndarray,
    offer_ids: np.ndarray,
    now_s: np.ndarray,
    placement: np.ndarray,
    origin: np.ndarray,
    destination: np.ndarray,
    departure_s: np.ndarray,
    cabin: np.ndarray,
    *,
    booking: np.ndarray | None = None,
    miles_balance: np.ndarray | None = None,
) -> np.ndarray:
    """Feature rows of (member, offer, request context) pairs in bulk: profiles as given (but
    ``miles_balance``: each pair's balance as of its time, :func:`recsys.features.miles.balances_at`, for
    members with a profile; None keeps the profiles'), exposures counted
    from ``events`` strictly before each pair's time, CF scores from ``cf_bundle``'s vectors. Offers must be
    in ``offers``. Trip arrays hold None / NaN where there is no trip; ``booking``: n × :data:`BOOKING_INPUTS`
    (NaN where unknown; None: all unknown)."""
    n = len(member_ids)
    off = space.bind_offers(offers)
    off_pos = {o: i for i, o in enumerate(off.offer_ids)}
    rows = np.fromiter((off_pos.get(str(o), -1) for o in offer_ids), np.int64, n)
    if (rows < 0).any():
        missing = sorted({str(o) for o, r in zip(offer_ids, rows, strict=True) if r < 0})[:5]
        raise RankerTrainingError(f"offers {missing} are not in the catalogue")
    prof_pos = pd.Index(profiles[Col.MEMBER_ID].astype(str)).get_indexer(np.asarray(member_ids, dtype=object))

    def column(name: str) -> Any:
        if name not in profiles:
            return None
        values = profiles[name].to_numpy(object)
        out = np.empty(n, dtype=object)
        out[:] = None
        ok = prof_pos >= 0
        out[ok] = values[prof_pos[ok]]
        return out

    member = space.member_block(column, n)
    if miles_balance is not None:
        # the profile's balance is as of its build; miles earned and spent since change it (and miles_cover)
        has_profile = prof_pos >= 0
        member[has_profile, MEMBER_NUMERIC.index(Col.MILES_BALANCE)] = np.asarray(miles_balance, np.float64)[
            has_profile
        ]
    home = column("home_airport")
    top = column("top_destination")
    ctx = space.context_block(
        placement,
        origin,
        destination,
        departure_s,
        cabin,
        now_s,
        home if home is not None else np.full(n, None, dtype=object),
    )
    hist = history_arrays(space, offers, events)
    m_codes = pd.Index(pd.unique(events[Col.MEMBER_ID].astype(str))).get_indexer(
        np.asarray(member_ids, dtype=object)
    )
    exposure = exposure_block(hist, m_codes, off.code[rows], off.family[rows], now_s, space.n_offers)
    travel_hist = profiles[TRAVEL_KEY].tolist() if TRAVEL_KEY in profiles else []
    travel = travel_block(travel_hist, prof_pos if travel_hist else np.full(n, -1), off, rows, space.airports)
    cf = known = taste = None
    if space.cf:
        cf, known = cf_pair_scores(cf_bundle, member_ids, off, rows, off.destination)
        taste = space.taste_scores(
            travel_hist, prof_pos if travel_hist else np.full(n, -1), off.destination[rows]
        )
    return space.matrix(
        member,
        off,
        rows,
        ctx,
        now_s,
        destination,
        top if top is not None else np.full(n, None, dtype=object),
        exposure,
        travel,
        cf,
        None if known is None else known.astype(np.float64),
        taste,
        booking_block(np.full((n, len(BOOKING_INPUTS)), np.nan) if booking is None else booking, departure_s)
        if space.booking
        else None,
    )


def history_arrays(space: FeatureSpace, offers: pd.DataFrame, events: pd.DataFrame) -> ExposureHistory:
    """Every member's events as exposure-history arrays (member code = position among the events' members)."""
    members = events[Col.MEMBER_ID].astype(str)
    codes = pd.Index(pd.unique(members)).get_indexer(members.to_numpy(object))
    offer_ids = events[Col.OFFER_ID].astype(str).to_numpy(object)
    fam = dict(zip(offers[Col.OFFER_ID].astype(str), offers[Col.FAMILY].astype(str), strict=True))
    fam_pos = {f: i for i, f in enumerate(FAMILIES)}
    family = np.fromiter((fam_pos.get(fam.get(o, ""), -1) for o in offer_ids), np.int64, len(offer_ids))
    event = events[Col.EVENT_TYPE].astype(str).map(EVENT_CODES).fillna(-1).to_numpy(np.int64)
    return ExposureHistory(
        codes.astype(np.int64), space.offer_code(offer_ids), family, event, to_seconds(events[Col.EVENT_TIME])
    )


def dataset_end(root: Path) -> pd.Timestamp:
    """The time of the dataset's last interaction event."""
    end = latest_event_time(root, [("interactions", Col.EVENT_TIME)])
    if end is None:
        raise RankerTrainingError(f"{root}: no interaction events; the ranker learns from impressions")
    return _naive(end)


def _naive(ts: datetime | pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def train_context_ranker(
    root: Path | str,
    before: datetime | None,
    cfg: RankerConfig,
    *,
    base_kind: str = "als",
    base_config: dict[str, Any] | None = None,
    seed: int = 42,
    with_reference: bool = False,
    progress: bool = False,
) -> RankerTraining:
    """Train the ranker on the impressions of the ``cfg.window_days`` before ``before`` (default: the
    dataset's end). See the module docstring for the time discipline."""
    from recsys.data.network import load_network
    from recsys.features.profiles import build_member_profiles
    from recsys.models.bundle import ModelBundle

    root = Path(root)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    end = _naive(before) if before is not None else dataset_end(root) + pd.Timedelta(seconds=1)
    start = end - pd.Timedelta(days=cfg.window_days)
    cf_bundle = ModelBundle.train(root, base_kind, base_config, before=start.to_pydatetime(), seed=seed)
    timings["cf_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    as_of = start.to_pydatetime() - timedelta(microseconds=1)
    travel = member_travel(root, as_of)
    profiles = build_member_profiles(root, as_of, seed=seed)
    profiles = profiles.assign(**{TRAVEL_KEY: [travel.get(m) for m in profiles[Col.MEMBER_ID].astype(str)]})
    offers = read_table(root, "offers")
    taste = None
    if cfg.cf_features and cfg.taste_factors > 0:
        taste = DestinationFactors.fit(travel, factors=cfg.taste_factors, seed=seed)
    space = FeatureSpace.build(
        offers, profiles, load_network(), cf=cfg.cf_features, taste=taste, booking=cfg.booking_features
    )
    events = read_events(root, end)
    table = impression_table(
        root, space, offers, events, profiles, cf_bundle, start, end, max_rows=cfg.max_rows, seed=seed
    )
    timings["features_seconds"] = time.perf_counter() - t1
    if table.y.sum() == 0:
        raise RankerTrainingError(f"no purchases among the impressions between {start} and {end}")
    order = np.argsort(table.time, kind="stable")
    n_cal = max(1, round(len(order) * cfg.calibration_share))
    fit_idx, cal_idx = order[:-n_cal], order[-n_cal:]
    t2 = time.perf_counter()
    # Clicks as an auxiliary label: a click follows the same acceptance logit as a purchase and is several
    # times more frequent, so a soft label max(purchase, w x click) gives the learner more of the signal;
    # the Platt map, fitted on purchases alone, brings the scores back to purchase probabilities.
    y_fit = table.y[fit_idx].astype(np.float64)
    if cfg.click_label_weight > 0:
        y_fit = np.maximum(y_fit, cfg.click_label_weight * table.click[fit_idx])
    ranker = fit_booster(space, table.x[fit_idx], y_fit, table.x[cal_idx], table.y[cal_idx], cfg, seed)
    timings["fit_seconds"] = time.perf_counter() - t2
    reference = None
    if with_reference:
        t3 = time.perf_counter()
        reference = fit_logistic(table.x, table.y, space, seed)
        timings["reference_seconds"] = time.perf_counter() - t3
    stats = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "impressions": len(table),
        "purchases": int(table.y.sum()),
        "calibration_impressions": int(n_cal),
        "base": base_kind,
        **timings,
        "total_seconds": time.perf_counter() - t0,
    }
    ranker.info.update(stats)
    log.info("trained the contextual ranker: %s", stats)
    return RankerTraining(ranker, reference, stats)


def train_ranker_bundle(
    root: Path | str,
    config: dict[str, Any] | None = None,
    *,
    before: datetime | None = None,
    seed: int = 42,
    progress: bool = False,
    with_reference: bool = False,
) -> tuple[Any, RankerTraining]:
    """A served ``ranker`` bundle: the base CF model fitted before ``before`` (retrieval, embeddings, the
    CF-score feature) and the context ranker trained on the impressions of the window before it; and what
    that training measured (with the logistic reference when ``with_reference``)."""
    from recsys.models.bundle import ModelBundle
    from recsys.models.ranker import RankerRecommender

    root = Path(root)
    t0 = time.perf_counter()
    bundle = ModelBundle.train(root, "ranker", config, before=before, seed=seed, progress=progress)
    model = bundle.model
    assert isinstance(model, RankerRecommender)
    cfg = model.config
    base_config = {
        "model": model.base_config(),
        "interactions": bundle.info["config"]["interactions"],
        "groups": list(bundle.group_keys),
    }
    training = train_context_ranker(
        root,
        before,
        cfg.ranker,
        base_kind=cfg.base,
        base_config=base_config,
        seed=seed,
        with_reference=with_reference,
        progress=progress,
    )
    bundle.attach_context_ranker(training.ranker, training.stats)
    bundle.info["timings"]["ranker_seconds"] = training.stats["total_seconds"]
    bundle.info["timings"]["total_seconds"] = time.perf_counter() - t0
    return bundle, training
