"""The served artefact: a trained model with everything needed to use it — the one object MLflow wraps and the
service loads.

A :class:`ModelBundle` holds the model (any kind, behind :class:`~recsys.models.base.Recommender`), the member
and item id maps, the offer catalogue it was trained with, the faiss indexes over offer and destination
vectors, the members' purchases (to exclude them) and the acceptance-probability calibration. ``save`` writes
a directory::

    bundle.json        kind, flattened params, configuration, cut-off, calibration, training statistics
    model/             the model: model.json + state.npz (vectors, id maps, member groups and features)
    offers.parquet     the offer catalogue
    purchased.npz      member × item purchases before the cut-off (``exclude_purchased``)
    index/             offers.faiss, destinations.faiss (+ ids and vectors)

Per-request methods (:meth:`score`, :meth:`acceptance_probability`, :meth:`retrieve`) use dict lookups and one
small matrix-vector product — no pandas.

Scores: a member with history is scored by the learned vector plus ``prior_weight`` × the popularity of their
group (tier × miles band by default; segment for the popularity baseline); without member groups the default
prior is 0, the plain model (:func:`recsys.models.base.resolve_prior_weight`). Cold-start policy (see
:mod:`recsys.models.base`): a member without training history is scored by the content model from
``member_features`` plus the group prior (LightFM, hybrid), else by the popularity of their group (from
``member_features`` or the training data), else by global popularity — never an error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from recsys.data.layout import atomic_file, has_table, iter_table, read_table
from recsys.ids import IdMap
from recsys.interactions import (
    DEST_PREFIX,
    OFFER_PREFIX,
    Holdout,
    InteractionConfig,
    InteractionMatrix,
    build_interactions,
    offer_availability,
    to_utc_naive,
)
from recsys.models.base import NoGroupsError, RecDataset, Recommender
from recsys.models.features import (
    MEMBER_FEATURE_KEYS,
    build_item_features,
    build_member_features,
    group_label,
    group_labels,
    member_feature_names,
    member_feature_table,
)
from recsys.models.registry import MODEL_KINDS, config_class, load_model, model_class
from recsys.ranker.features import CFItems, OfferArrays, ScoringContext, cf_scores
from recsys.ranker.model import ContextRanker
from recsys.retrieval.index import IndexConfig, ItemIndex, recall_at_k
from recsys.schema import INTERACTIONS, MEMBERS, OFFERS, Col, EventType

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
MODEL_DIR = "model"
OFFERS_FILE = "offers.parquet"
PURCHASED_FILE = "purchased.npz"
INDEX_DIR = "index"
OFFERS_INDEX = "offers"
DESTINATIONS_INDEX = "destinations"
SCORE = "score"
RANK = "rank"


class BundleError(ValueError):
    """The data cannot make a model (empty dataset, no interactions...) or a saved bundle is unusable."""


class CalibrationConfig(BaseModel):
    """How model scores become P(accept | impression), learned on the training period's impressions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["offer_logistic", "isotonic", "platt"] = "offer_logistic"
    offer_prior: float = Field(default=20.0, gt=0, description="impressions' worth of base rate per offer")
    window_days: float = Field(
        default=7.0, gt=0, description="a purchase this soon after an impression accepts it"
    )
    max_impressions: int = Field(default=300_000, ge=100)
    min_impressions: int = Field(default=50, ge=1, description="below this, a constant base rate")


DEFAULT_POPULARITY_GROUPS: tuple[str, ...] = ("segment",)
DEFAULT_MODEL_GROUPS: tuple[str, ...] = ("tier", "miles_band")


class BundleConfig(BaseModel):
    """Everything :meth:`ModelBundle.train` can be told (strict: unknown keys are an error).

    ``model`` holds the kind's own parameters (validated by its config class); ``groups`` lists the member
    features (:data:`~recsys.models.features.MEMBER_FEATURE_KEYS`) whose combination defines the member groups
    of popularity, of the cold-start policy and of the learned models' popularity prior. Default: ``segment``
    for the popularity baseline (the issue's segment popularity); tier × miles band for the other kinds — what
    decides which offers a member can be shown at all (tier-restricted offers; redemptions need the miles).
    Chosen on a *validation* split of the 50,000-member world (train before 2026-01-02, judge on the 90 days
    to 2026-04-02, the test period never looked at), ALS NDCG@10 by prior groups: tier × miles band 0.389,
    tier 0.381, miles band × home airport (the previous default) 0.377, segment × miles band 0.351,
    segment 0.348; popularity by segment 0.342. An empty list means global popularity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: dict[str, Any] = Field(default_factory=dict)
    interactions: InteractionConfig = InteractionConfig()
    groups: tuple[str, ...] | None = None

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = sorted(set(value or ()) - set(MEMBER_FEATURE_KEYS))
        if unknown:
            raise ValueError(f"unknown group features {unknown}; known: {list(MEMBER_FEATURE_KEYS)}")
        return value

    def groups_for(self, kind: str) -> tuple[str, ...]:
        """The group features used for a model kind (see the class docstring)."""
        if self.groups is not None:
            return self.groups
        return DEFAULT_POPULARITY_GROUPS if kind == "popularity" else DEFAULT_MODEL_GROUPS

    retrieval: IndexConfig = IndexConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    recall_queries: int = Field(
        default=500, ge=1, description="members sampled to measure the index's recall@k"
    )


@dataclass(frozen=True)
class Calibrator:
    """Map (score, offer) → probability, clipped to [0, 1].

    ``offer_logistic`` (default): ``P = σ(a·score + b·logit(c_offer) + c)`` where ``c_offer`` is the offer's
    smoothed conversion rate (purchases per impression) in the training period — model scores rank members'
    *interest volume*, an offer's conversion says how often an impression turns into a purchase, and the two
    together calibrate far better than the score alone (an offer can be unpopular because it is rarely shown).
    ``isotonic`` and ``platt`` use the score alone; ``constant`` is the Laplace base rate (few impressions).
    """

    kind: str  # "offer_logistic" | "isotonic" | "platt" | "constant"
    x: np.ndarray
    y: np.ndarray
    item_logit: np.ndarray | None = None  # per item: logit of its smoothed conversion (offer_logistic)

    def __call__(self, scores: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(s)
        s = np.where(finite, s, 0.0)
        if self.kind == "constant":
            out = np.full(s.shape, float(self.y[0]))
        elif self.kind == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.x[0] * s + self.x[1])))
        elif self.kind == "offer_logistic":
            assert self.item_logit is not None
            if item_idx is None:
                raise ValueError("offer_logistic calibration needs the offers' item indices")
            idx = np.asarray(item_idx, dtype=np.int64)
            finite &= idx >= 0
            offer = self.item_logit[np.maximum(idx, 0)]
            out = 1.0 / (1.0 + np.exp(-(self.x[0] * s + self.x[1] * offer + self.x[2])))
        else:
            out = np.interp(s, self.x, self.y)
        out = np.where(finite, out, 0.0)
        return np.clip(out, 0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "x": self.x.tolist(), "y": self.y.tolist()}
        if self.item_logit is not None:
            out["item_logit"] = self.item_logit.tolist()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Calibrator:
        logit = obj.get("item_logit")
        return cls(
            obj["kind"],
            np.asarray(obj["x"], dtype=np.float64),
            np.asarray(obj["y"], dtype=np.float64),
            None if logit is None else np.asarray(logit, dtype=np.float64),
        )

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        labels: np.ndarray,
        cfg: CalibrationConfig,
        items: np.ndarray | None = None,
        n_items: int = 0,
    ) -> Calibrator:
        n = len(scores)
        positives = int(np.sum(labels))
        base = (positives + 1.0) / (n + 2.0)  # Laplace: never exactly 0 or 1 from few examples
        if n < cfg.min_impressions or positives == 0 or positives == n:
            return cls("constant", np.zeros(1), np.asarray([base]))
        if cfg.method == "offer_logistic":
            from sklearn.linear_model import LogisticRegression

            assert items is not None
            shown = np.bincount(items, minlength=n_items).astype(np.float64)
            bought = np.bincount(items, weights=labels, minlength=n_items)
            conv = (bought + cfg.offer_prior * base) / (shown + cfg.offer_prior)
            item_logit = np.log(conv / (1.0 - conv))
            features = np.column_stack([scores, item_logit[items]])
            lr = LogisticRegression(C=1.0).fit(features, labels)
            coef = np.asarray([lr.coef_[0, 0], lr.coef_[0, 1], lr.intercept_[0]])
            return cls("offer_logistic", coef, np.zeros(0), item_logit)
        if cfg.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e4).fit(scores[:, None], labels)
            return cls("platt", np.asarray([lr.coef_[0, 0], lr.intercept_[0]]), np.zeros(0))
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, labels)
        return cls("isotonic", np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float))


class ModelBundle:
    """A trained model, its id maps, offer catalogue, faiss indexes and calibration. See the module
    docstring."""

    def __init__(
        self,
        kind: str,
        params: dict[str, Any],
        offers: pd.DataFrame,
        model: Recommender,
        purchased: sp.csr_matrix,
        offers_index: ItemIndex,
        destinations_index: ItemIndex,
        calibration: dict[str, Calibrator],
        info: dict[str, Any],
    ) -> None:
        assert model.member_ids is not None and model.item_ids is not None
        self.kind = kind
        self.params = params
        self.offers = offers
        self.model = model
        self.member_ids: IdMap = model.member_ids
        self.item_ids: IdMap = model.item_ids
        self.purchased = purchased
        self.offers_index = offers_index
        self.destinations_index = destinations_index
        self.calibration = calibration
        self.info = info
        self.group_keys: tuple[str, ...] = tuple(info.get("groups") or ())
        # (registered model name, version) when loaded from the registry (``recsys.registry.load_bundle``).
        self.registered_as: tuple[str, str] | None = None
        item_ext = self.item_ids.external_ids
        is_offer = np.asarray([str(i).startswith(OFFER_PREFIX) for i in item_ext])
        self._offer_items = np.flatnonzero(is_offer)
        self._offer_pos: dict[str, int] = {
            str(item_ext[i])[len(OFFER_PREFIX) :]: int(i) for i in self._offer_items
        }
        self._vectors = model._check_fitted()
        # Index rows → plain offer ids / IATA codes (None for a row of another kind): the per-request path.
        self._offer_row_ids = _strip_prefix(offers_index.ids, OFFER_PREFIX)
        self._dest_row_ids = _strip_prefix(destinations_index.ids, DEST_PREFIX)
        assert model.has_history_ is not None
        self._has_history = model.has_history_
        model.member_index("")  # build the lookups now, not on the first request
        model.content_vector([])
        # The contextual ranker (``ranker`` kind, once trained on impressions): per-offer feature arrays of
        # this catalogue, bound once.
        self.context_ranker: ContextRanker | None = getattr(model, "context_", None)
        self._ranker_offers: OfferArrays | None = None
        self._ranker_rows: dict[str, int] = {}
        self._ranker_cf: CFItems | None = None
        if self.context_ranker is not None:
            self._bind_context_ranker(self.context_ranker)

    def _bind_context_ranker(self, ranker: ContextRanker) -> None:
        """Per-offer feature arrays and CF item rows of this catalogue for the ranker, bound once."""
        self._ranker_offers = ranker.space.bind_offers(self.offers)
        self._ranker_rows = {o: i for i, o in enumerate(self._ranker_offers.offer_ids)}
        self._ranker_cf = CFItems.build(
            self.item_ids, self._vectors.item, self._ranker_offers.offer_ids, self._ranker_offers.destination
        )

    # ------------------------------------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        dataset_dir: Path,
        kind: str,
        config: dict[str, Any] | None = None,
        before: datetime | None = None,
        seed: int = 42,
        progress: bool = False,
        holdout: Holdout | None = None,
    ) -> ModelBundle:
        """Train a ``kind`` model on ``dataset_dir`` (only history before ``before`` when given, and none of
        what ``holdout`` holds out: per-member and random evaluation splits).

        ``config`` follows :class:`BundleConfig` (``{"model": {...}, "interactions": {...}, "groups": ...}``);
        ``seed`` sets every random state. Raises :class:`BundleError` on data that cannot make a model.
        """
        if kind not in MODEL_KINDS:
            raise BundleError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
        cfg = BundleConfig.model_validate(config or {})
        model_cfg = config_class(kind).model_validate({**cfg.model, "random_state": seed})
        root = Path(dataset_dir)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        offers = read_table(root, OFFERS.name)
        if offers.empty:
            raise BundleError(f"{root}: the offer catalogue is empty")
        members = read_table(root, MEMBERS.name)
        if members.empty:
            raise BundleError(f"{root}: there are no members")
        # The member profiles are built in a thread while the matrix is built: both spend most of their time
        # in pyarrow/numpy/pandas code that releases the GIL (1M members: 23 s together instead of 36 s).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="profiles") as pool:
            profiles_job = pool.submit(_member_profiles, root, before, seed)
            inter = _interactions(root, cfg.interactions, before, holdout, progress)
            if inter.matrix.nnz == 0:
                when = f" before {before}" if before is not None else ""
                raise BundleError(f"{root}: no interactions{when}; nothing to learn from")
            timings["matrix_seconds"] = time.perf_counter() - t0
            # The impressions the calibration learns from, read while the profiles finish (at 1M members
            # the profiles take longer than the matrix): no extra CPU, less wall time.
            _cached_calibration_rows(root, inter, before, cfg.calibration, seed)
            t1 = time.perf_counter()
            profiles = profiles_job.result()
        table = member_feature_table(members, inter, profiles)
        groups_used = cfg.groups_for(kind)
        if "segment" in groups_used and table["segment"].isna().all():
            log.warning("no member segments (profiles unavailable); groups use tier instead")
            groups_used = tuple("tier" if g == "segment" else g for g in groups_used)
        labels = group_labels(table, groups_used) if groups_used else None
        group_codes, group_names = _group_codes(labels, len(table))
        model = model_class(kind)(model_cfg)
        data = RecDataset(
            user_items=inter.matrix,
            member_ids=inter.member_ids,
            item_ids=inter.item_ids,
            member_groups=group_codes,
            group_names=group_names,
            member_features=build_member_features(table) if model.uses_features else None,
            item_features=build_item_features(offers, inter.item_ids) if model.uses_features else None,
            item_availability=offer_availability(offers, inter),
        )
        timings["features_seconds"] = time.perf_counter() - t1  # beyond the overlap with the matrix

        t2 = time.perf_counter()
        try:
            model.fit(data)
        except NoGroupsError as exc:
            raise BundleError(
                f"{root}: {kind}: {exc}. The groups are {' × '.join(groups_used)} (BundleConfig.groups), "
                "from the members table and profiles, and this dataset has none of them"
            ) from exc
        timings["fit_seconds"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        offers_index, dest_index = _build_indexes(model, cfg.retrieval)
        recall = _index_recall(model, offers_index, cfg.recall_queries, seed)
        timings["index_seconds"] = time.perf_counter() - t3

        t4 = time.perf_counter()
        calibration, cal_stats = _calibrate(root, model, inter, before, cfg.calibration, seed)
        timings["calibration_seconds"] = time.perf_counter() - t4

        params = {
            "kind": kind,
            "seed": seed,
            "before": before.isoformat() if before is not None else None,
            "groups": ",".join(groups_used),
            **model.params(),
            "model.prior_weight_effective": model.prior_weight_,
            **cfg.interactions.flat(),
            **{f"retrieval.{k}": v for k, v in cfg.retrieval.model_dump(mode="json").items()},
            **{f"calibration.{k}": v for k, v in cfg.calibration.model_dump(mode="json").items()},
        }
        info = {
            "format": BUNDLE_FORMAT,
            "kind": kind,
            "groups": list(groups_used),
            "config": cfg.model_dump(mode="json"),
            "model_config": model_cfg.model_dump(mode="json"),
            "before": before.isoformat() if before is not None else None,
            "reference_time": inter.reference_time.isoformat(),
            "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
            "stats": {
                **inter.stats,
                "members": len(inter.member_ids),
                "members_with_history": int(inter.member_has_history().sum()),
                "items": len(inter.item_ids),
                "offers": len(offers),
                **cal_stats,
            },
            "index": {"offers": offers_index.kind, "destinations": dest_index.kind, **recall},
            "timings": {**timings, "total_seconds": time.perf_counter() - t0},
        }
        log.info("trained %s bundle: %s", kind, info["timings"])
        return cls(kind, params, offers, model, inter.purchased, offers_index, dest_index, calibration, info)

    def attach_context_ranker(self, ranker: ContextRanker, stats: Mapping[str, Any] | None = None) -> None:
        """Give a ``ranker`` bundle its trained context ranker (``recsys.ranker.training``)."""
        if not hasattr(self.model, "context_"):
            raise BundleError(f"a {self.kind} model cannot carry a context ranker")
        self.model.context_ = ranker
        self.context_ranker = ranker
        self._bind_context_ranker(ranker)
        self.info["ranker"] = dict(stats or {})

    # -------------------------------------------------------------------------------------------- save/load
    def save(self, path: Path | str) -> None:
        """Write the bundle directory (see the module docstring). Overwrites files of an earlier save."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / MODEL_DIR)
        self.offers.to_parquet(path / OFFERS_FILE, index=False)
        sp.save_npz(path / PURCHASED_FILE, self.purchased)
        self.offers_index.save(path / INDEX_DIR, OFFERS_INDEX)
        self.destinations_index.save(path / INDEX_DIR, DESTINATIONS_INDEX)
        meta = {
            **self.info,
            "params": self.params,
            "calibration": {k: c.to_json() for k, c in self.calibration.items()},
        }
        with atomic_file(path / BUNDLE_FILE) as fh:  # written last: its presence marks a complete bundle
            fh.write(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, path: Path | str) -> ModelBundle:
        """Load a bundle saved by :meth:`save`; a missing or damaged part is a :class:`BundleError`."""
        path = Path(path)
        if not (path / BUNDLE_FILE).is_file():
            raise BundleError(f"{path}: not a model bundle (no {BUNDLE_FILE})")
        try:
            meta = json.loads((path / BUNDLE_FILE).read_text())
            if meta.get("format") != BUNDLE_FORMAT:
                raise BundleError(f"{path}: bundle format {meta.get('format')} is not {BUNDLE_FORMAT}")
            model = load_model(path / MODEL_DIR)
            offers = pd.read_parquet(path / OFFERS_FILE)
            purchased = sp.csr_matrix(sp.load_npz(path / PURCHASED_FILE))
            offers_index = ItemIndex.load(path / INDEX_DIR, OFFERS_INDEX)
            dest_index = ItemIndex.load(path / INDEX_DIR, DESTINATIONS_INDEX)
        except BundleError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{path}: cannot load the model bundle: {exc}") from exc
        calibration = {k: Calibrator.from_json(v) for k, v in meta.pop("calibration").items()}
        params = meta.pop("params")
        return cls(
            meta["kind"], params, offers, model, purchased, offers_index, dest_index, calibration, meta
        )

    # --------------------------------------------------------------------------------------- batch ranking
    def recommend(
        self,
        member_ids: Sequence[str],
        k: int = 10,
        *,
        offers_only: bool = True,
        exclude_purchased: bool = False,
    ) -> pd.DataFrame:
        """Top-``k`` offers per member: columns member_id, offer_id, score, rank (1 = best), members in
        input order.

        Unknown members get the cold-start policy, never an error. ``offers_only=False`` ranks every item
        (offer ids, and tokens such as ``dest:CTU`` under their item id). ``exclude_purchased`` drops offers
        the member bought before the training cut-off.
        """
        if isinstance(member_ids, str):
            raise TypeError("member_ids must be a sequence of ids, not one string")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ids = np.asarray([str(m) for m in member_ids], dtype=object)
        if len(ids) == 0:
            return pd.DataFrame({Col.MEMBER_ID: [], Col.OFFER_ID: [], SCORE: [], RANK: []})
        user_items = None
        if exclude_purchased:
            rows = self.member_ids.to_index(ids, missing=-1)
            user_items = self.purchased[np.maximum(rows, 0)]
            user_items = sp.csr_matrix(user_items.multiply((rows >= 0)[:, None].astype(np.float32)))
        items = self.item_ids.external_ids[self._offer_items] if offers_only else None
        top_ids, top_scores = self.model.recommend(
            ids,
            user_items=user_items,
            N=k,
            filter_already_liked_items=exclude_purchased,
            items=items,
        )
        n, kk = top_ids.shape
        flat_ids = top_ids.ravel()
        keep = np.asarray([i is not None for i in flat_ids])
        out_ids = pd.Series(flat_ids[keep], dtype=object)
        if offers_only:
            out_ids = out_ids.str.slice(len(OFFER_PREFIX))
        else:
            out_ids = out_ids.where(
                ~out_ids.str.startswith(OFFER_PREFIX), out_ids.str.slice(len(OFFER_PREFIX))
            )
        return pd.DataFrame(
            {
                Col.MEMBER_ID: np.repeat(ids, kk)[keep],
                Col.OFFER_ID: out_ids.to_numpy(dtype=object),
                SCORE: top_scores.ravel()[keep].astype(np.float64),
                RANK: np.tile(np.arange(1, kk + 1), n)[keep],
            }
        )

    # ---------------------------------------------------------------------------------- per-request scoring
    def is_known(self, member_id: str) -> bool:
        """True when the member had history before the cut-off (learned, not cold-start, vector)."""
        idx = self.model.member_index(member_id)
        return idx is not None and bool(self._has_history[idx])

    def member_embedding(self, member_id: str) -> np.ndarray | None:
        """The member's learned vector (a copy), or None for a member without training history."""
        idx = self.model.member_index(member_id)
        if idx is None or not self._has_history[idx]:
            return None
        return self.model.known_vector(idx)

    def member_vector(self, member_id: str, member_features: Mapping[str, Any] | None = None) -> np.ndarray:
        """The vector the model scores a member with, applying the cold-start policy (never fails)."""
        return self.for_member(member_id, member_features).vector

    def for_member(self, member_id: str, member_features: Mapping[str, Any] | None = None) -> MemberScoring:
        """One member's scoring view: the vector is resolved once (cold-start policy applied) and shared by
        retrieval, destination search, scores and acceptance probabilities of one request."""
        idx = self.model.member_index(member_id)
        if idx is not None and self._has_history[idx]:
            return MemberScoring(self, self.model.known_vector(idx), True)
        return MemberScoring(self, self._cold_vector(idx, member_features), False)

    def for_vector(self, vector: np.ndarray) -> MemberScoring:
        """The scoring view of a learned member vector obtained elsewhere (the online member store holds this
        model's member embeddings): must have the model's dimension."""
        v = np.asarray(vector, dtype=np.float32).ravel()
        if v.shape[0] != self.model.dim:
            raise ValueError(f"member vector has dimension {v.shape[0]}, the model {self.model.dim}")
        return MemberScoring(self, v, True)

    def _cold_vector(self, idx: int | None, member_features: Mapping[str, Any] | None) -> np.ndarray:
        if member_features:
            group = group_label(member_features, self.group_keys) if self.group_keys else None
            g = self.model.group_index(group)  # the global column when the group is unknown
            cv = self.model.content_vector(member_feature_names(member_features))
            if cv is not None:
                if self.model.prior_:
                    cv = cv.copy()
                    cv[self.model.dim - (len(self.model.group_names) + 1) + g] += self.model.prior_
                return cv
            if group in self.model.group_names:
                return self._vectors.group[g]
        if idx is not None:
            return self.model.user_vectors(np.asarray([idx]))[0]
        return self._vectors.group[-1]

    def _offer_index(self, offer_ids: Sequence[str]) -> np.ndarray:
        pos = self._offer_pos
        return np.fromiter((pos.get(o, -1) for o in offer_ids), dtype=np.int64, count=len(offer_ids))

    def score(
        self, member_id: str, offer_ids: Sequence[str], member_features: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Model score of each candidate offer for a member (higher = better); offers the bundle does not know
        score ``-inf``. Unknown members: cold-start policy from ``member_features`` (keys
        ``tier, segment, home_airport, cabin, meal``), else their group's or the global popularity."""
        return self.for_member(member_id, member_features).model_scores(offer_ids)[0]

    def acceptance_probability(
        self, member_id: str, offer_ids: Sequence[str], member_features: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Calibrated P(accept | impression) per offer, in [0, 1] (0 for offers the bundle does not know).

        The calibration was fitted on the training period's impressions — separately for learned members and
        for the cold-start path, whose scores live on different scales.
        """
        return self.for_member(member_id, member_features).score(offer_ids)[1]

    def score_pairs(
        self,
        member_ids: Sequence[str] | np.ndarray,
        offer_ids: Sequence[str] | np.ndarray,
        member_features: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(model scores, calibrated P(accept)) of many (member, offer) pairs at once, exactly as
        :meth:`for_member` scores one member's offers (cold-start policy from ``member_features[member_id]``);
        offers the bundle does not know score ``-inf`` with probability 0. For replays of many requests."""
        members = np.asarray(member_ids, dtype=object)
        uniq, inv = np.unique(members.astype(str), return_inverse=True)
        features = member_features or {}
        vectors = np.empty((len(uniq), self.model.dim), dtype=np.float32)
        known = np.empty(len(uniq), dtype=bool)
        for i, m in enumerate(uniq):
            view = self.for_member(str(m), features.get(str(m)))
            vectors[i], known[i] = view.vector, view.known
        idx = self._offer_index([str(o) for o in offer_ids])
        ok = idx >= 0
        scores = np.full(len(idx), -np.inf, dtype=np.float64)
        scores[ok] = np.einsum("ij,ij->i", self._vectors.item[idx[ok]], vectors[inv[ok]])
        probs = np.zeros(len(idx), dtype=np.float64)
        for flag, name in ((True, "known"), (False, "cold")):
            sel = ok & (known[inv] == flag)
            if sel.any():
                probs[sel] = self.calibration[name](scores[sel], idx[sel])
        return scores, probs

    def retrieve(
        self, member_id: str, k: int, member_features: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (offer_ids, scores) from the faiss offer index for the member's (or cold-start)
        vector."""
        return self.for_member(member_id, member_features).retrieve(k)

    def similar_destinations(
        self, member_id: str, k: int = 5, member_features: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Destinations (IATA codes) whose vectors score highest for the member — for award-flight offers."""
        return self.for_member(member_id, member_features).similar_destinations(k)

    def destination_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(IATA codes, vectors) of every destination token — to find destinations similar to each other."""
        ids = self.destinations_index.ids
        codes = np.asarray([str(i)[len(DEST_PREFIX) :] for i in ids], dtype=object)
        return codes, self.destinations_index.vectors

    def similar_destinations_to(self, destination: str, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Destinations most similar to ``destination`` (IATA) by learned-vector cosine; none if unknown."""
        item = DEST_PREFIX + destination
        if item not in self.item_ids or self.model.dim == len(self.model.group_names) + 1:
            return np.empty(0, dtype=object), np.empty(0, dtype=np.float32)
        ids, scores = self.model.similar_items(item, N=len(self.item_ids))
        keep = np.asarray([str(i).startswith(DEST_PREFIX) for i in ids], dtype=bool)
        codes = np.asarray([str(i)[len(DEST_PREFIX) :] for i in ids[keep][:k]], dtype=object)
        return codes, scores[keep][:k]

    def item_embedding(self, item_id: str) -> np.ndarray | None:
        """The vector of an item id (``offer:<id>``, ``dest:CTU``...), or None when unknown."""
        idx = self.item_ids.index_of(item_id)
        return None if idx is None else np.array(self._vectors.item[idx])

    @property
    def member_feature_keys(self) -> tuple[str, ...]:
        """Keys of the ``member_features`` dict the content cold-start path reads."""
        return MEMBER_FEATURE_KEYS


class MemberScoring:
    """A member's scoring view for one request (:meth:`ModelBundle.for_member`): the resolved vector,
    whether it was learned (``known``) or comes from the cold-start policy, and the per-request operations
    on it."""

    __slots__ = ("bundle", "known", "vector")

    def __init__(self, bundle: ModelBundle, vector: np.ndarray, known: bool) -> None:
        self.bundle = bundle
        self.vector = vector
        self.known = known

    def retrieve(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (offer_ids, scores) from the faiss offer index."""
        b = self.bundle
        return _search(b.offers_index, b._offer_row_ids, self.vector, k)

    def similar_destinations(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Destinations (IATA codes) whose vectors score highest for the member — for award-flight offers."""
        b = self.bundle
        return _search(b.destinations_index, b._dest_row_ids, self.vector, k)

    def model_scores(self, offer_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(model scores, item rows) of the offers; an offer the bundle does not know: ``-inf``, row -1."""
        b = self.bundle
        idx = b._offer_index(offer_ids)
        ok = idx >= 0
        scores = np.full(len(idx), -np.inf, dtype=np.float64)
        scores[ok] = b._vectors.item[idx[ok]] @ self.vector
        return scores, idx

    def score(
        self, offer_ids: Sequence[str], context: ScoringContext | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(model scores, calibrated P(accept | impression)) of the offers — one dot product for both.

        Offers the bundle does not know score ``-inf`` with probability 0. With a request ``context`` and a
        contextual ranker in the bundle, both are the ranker's P(purchase) in that context (offers outside
        the catalogue: 0); other models ignore the context."""
        b = self.bundle
        if context is not None and b.context_ranker is not None:
            return self._in_context(offer_ids, context)
        scores, idx = self.model_scores(offer_ids)
        cal = b.calibration["known" if self.known else "cold"]
        return scores, cal(scores, idx)

    def _in_context(self, offer_ids: Sequence[str], context: ScoringContext) -> tuple[np.ndarray, np.ndarray]:
        b = self.bundle
        ranker, offers, cf_items = b.context_ranker, b._ranker_offers, b._ranker_cf
        assert ranker is not None and offers is not None and cf_items is not None
        pos = b._ranker_rows
        rows = np.fromiter((pos.get(o, -1) for o in offer_ids), dtype=np.int64, count=len(offer_ids))
        out = np.zeros(len(rows), dtype=np.float64)
        ok = rows >= 0
        if ok.any():
            scores = cf_scores(self.vector, b._vectors.item, cf_items, rows[ok]) if ranker.space.cf else None
            x = ranker.space.request_matrix(offers, rows[ok], context, scores, self.known)
            out[ok] = ranker.predict(x)
        return out.copy(), out


def _strip_prefix(ids: np.ndarray, prefix: str) -> np.ndarray:
    """Item ids of an index's rows without their kind prefix (None for rows of another kind)."""
    return np.asarray(
        [str(i)[len(prefix) :] if str(i).startswith(prefix) else None for i in ids], dtype=object
    )


def _search(
    index: ItemIndex, row_ids: np.ndarray, vector: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (ids, scores) of one vector in ``index``, rows mapped through ``row_ids``."""
    rows, scores = index.search_rows(vector, k)
    ids = row_ids[rows]
    keep = ids != None  # noqa: E711 (elementwise on an object array)
    return ids[keep], scores[keep]


# ------------------------------------------------------------------------------------------------ helpers
_PROFILE_CACHE: dict[tuple[str, str, str, int], pd.DataFrame] = {}
_INTERACTIONS_CACHE: dict[tuple[str, str, str, str], InteractionMatrix] = {}
_CALIBRATION_ROWS_CACHE: list[tuple[InteractionMatrix, tuple[str, str, int], pd.DataFrame]] = []


def _dataset_fingerprint(root: Path) -> str:
    """The manifest's content fingerprint ("" when the dataset has none: then nothing is cached)."""
    from recsys.data.layout import DatasetError, read_manifest

    try:
        return str(read_manifest(root).get("fingerprint", ""))
    except DatasetError:
        return ""


def _interactions(
    root: Path,
    cfg: InteractionConfig,
    before: datetime | None,
    holdout: Holdout | None,
    progress: bool,
) -> InteractionMatrix:
    """:func:`build_interactions`, the last result kept per (dataset, fingerprint, configuration, cut-off):
    a training run builds the same matrix for every kind it trains (the pipeline: seven times before the
    cut-off). A split's holdout is not cached; neither is a dataset without a fingerprint. The matrix is
    shared, never modified: models copy what they change."""
    fingerprint = _dataset_fingerprint(root)
    if holdout is not None or not fingerprint:
        return build_interactions(root, cfg, before, holdout=holdout, progress=progress)
    key = (
        str(root.resolve()),
        fingerprint,
        cfg.model_dump_json(),
        before.isoformat() if before is not None else "",
    )
    if key not in _INTERACTIONS_CACHE:
        _INTERACTIONS_CACHE.clear()  # one matrix at a time (1M members: hundreds of MB)
        _INTERACTIONS_CACHE[key] = build_interactions(root, cfg, before, progress=progress)
    return _INTERACTIONS_CACHE[key]


def _member_profiles(root: Path, before: datetime | None, seed: int) -> pd.DataFrame | None:
    """Member profiles as of the cut-off (:func:`recsys.features.profiles.build_member_profiles`), or None
    when the dataset cannot give them (then tier comes from the members table and habits from the matrix).

    The last result is cached per (dataset, fingerprint, cut-off, seed): training several kinds on the same
    data builds the profiles once.
    """
    from recsys.data.layout import DatasetError, read_manifest
    from recsys.features.profiles import ProfileError, build_member_profiles

    try:
        fingerprint = str(read_manifest(root).get("fingerprint", ""))
    except DatasetError:
        fingerprint = ""
    key = (str(root.resolve()), fingerprint, before.isoformat() if before is not None else "", seed)
    if key in _PROFILE_CACHE:
        return _PROFILE_CACHE[key]
    try:
        profiles = build_member_profiles(root, before, seed=seed)
    except (ProfileError, DatasetError, KeyError, ValueError) as exc:
        log.warning("member profiles unavailable (%s); using tier and matrix habits", exc)
        return None
    _PROFILE_CACHE.clear()
    _PROFILE_CACHE[key] = profiles
    return profiles


def _group_codes(labels: pd.Series | None, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    if labels is None:
        return np.full(n, -1, dtype=np.int64), ()
    codes, names = pd.factorize(pd.Series(labels).reset_index(drop=True), sort=True)
    return codes.astype(np.int64), tuple(str(x) for x in names)


def _build_indexes(model: Recommender, cfg: IndexConfig) -> tuple[ItemIndex, ItemIndex]:
    vec = model._check_fitted()
    assert model.item_ids is not None
    ids = model.item_ids.external_ids
    starts = pd.Series(ids, dtype=object).str
    offers = np.flatnonzero(starts.startswith(OFFER_PREFIX).to_numpy())
    dests = np.flatnonzero(starts.startswith(DEST_PREFIX).to_numpy())
    return (
        ItemIndex.build(ids[offers], vec.item[offers], cfg),
        ItemIndex.build(ids[dests], vec.item[dests], cfg),
    )


def _index_recall(model: Recommender, index: ItemIndex, n_queries: int, seed: int) -> dict[str, float]:
    vec = model._check_fitted()
    assert model.has_history_ is not None
    known = np.flatnonzero(model.has_history_)
    rng = np.random.default_rng(seed)
    pick = rng.choice(known, size=min(n_queries, len(known)), replace=False)
    queries = np.vstack([model.user_vectors(pick), vec.group])
    return {f"offers_recall_at_{k}": recall_at_k(index, queries, k) for k in (10,)}


def _calibration_rows(
    root: Path, inter: InteractionMatrix, before: datetime | None, cfg: CalibrationConfig, seed: int
) -> pd.DataFrame:
    """Training-period impressions (sampled) with label 1 when the member bought the offer within the
    window."""
    if not has_table(root, INTERACTIONS.name):
        return pd.DataFrame(columns=["row", "col", "label"])
    cutoff = to_utc_naive(before) if before is not None else None
    rng = np.random.default_rng(seed)
    imps, purchases = [], []
    cols = [Col.MEMBER_ID, Col.OFFER_ID, Col.EVENT_TYPE, Col.EVENT_TIME]
    # ids as matrix rows and columns (-1 unknown) from the start: the purchase lookup below then joins
    # integers, not strings
    for df in iter_table(root, INTERACTIONS.name, cols, categorical=True):
        t = to_utc_naive(df[Col.EVENT_TIME])
        ok = t.notna()
        if cutoff is not None:
            ok &= t < cutoff
        df = df.loc[ok]
        frame = pd.DataFrame(
            {
                "row": _id_rows(inter.member_ids, df[Col.MEMBER_ID]),
                "col": _id_rows(inter.item_ids, df[Col.OFFER_ID], OFFER_PREFIX),
                Col.EVENT_TIME: t[ok].to_numpy(),
            }
        )
        et = df[Col.EVENT_TYPE]
        purchases.append(frame.loc[(et == EventType.PURCHASE.value).to_numpy(bool)])
        imp = frame.loc[(et == EventType.IMPRESSION.value).to_numpy(bool)]
        if len(imp) > cfg.max_impressions:
            imp = imp.iloc[np.sort(rng.choice(len(imp), cfg.max_impressions, replace=False))]
        imps.append(imp)
    if not imps:
        return pd.DataFrame(columns=["row", "col", "label"])
    imp = pd.concat(imps, ignore_index=True)
    if len(imp) > cfg.max_impressions:
        imp = imp.iloc[np.sort(rng.choice(len(imp), cfg.max_impressions, replace=False))]
    pur = pd.concat(purchases, ignore_index=True) if purchases else imp.iloc[:0]
    # unknown members and offers are no calibration rows (dropped after the sampling, which they are part of)
    imp = imp.loc[(imp["row"].to_numpy() >= 0) & (imp["col"].to_numpy() >= 0)]
    pur = pur.loc[(pur["row"].to_numpy() >= 0) & (pur["col"].to_numpy() >= 0)]
    imp = imp.sort_values(Col.EVENT_TIME, kind="stable")
    pur = pur.sort_values(Col.EVENT_TIME, kind="stable").assign(_bought=1)
    merged = pd.merge_asof(
        imp,
        pur,
        on=Col.EVENT_TIME,
        by=["row", "col"],
        direction="forward",
        tolerance=pd.Timedelta(days=cfg.window_days),
    )
    return pd.DataFrame(
        {
            "row": merged["row"].to_numpy(dtype=np.int64),
            "col": merged["col"].to_numpy(dtype=np.int64),
            "label": merged["_bought"].fillna(0).to_numpy().astype(int),
        }
    )


def _id_rows(ids: IdMap, values: pd.Series, prefix: str = "") -> np.ndarray:
    """Indices in ``ids`` of ``prefix + str(value)`` per row (-1: unknown or missing); a categorical column
    is looked up once per category."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = values.cat.categories
        keys = (prefix + pd.Series(cats.astype(str), dtype=object)).to_numpy(dtype=object)
        found = np.append(ids.to_index(keys, missing=-1), -1)  # code -1 (missing) picks the trailing -1
        return found[values.cat.codes.to_numpy()]
    present = values.notna().to_numpy()
    out = np.full(len(values), -1, dtype=np.int64)
    if present.any():
        keys = (prefix + values[present].astype(str)).to_numpy(dtype=object)
        out[present] = ids.to_index(keys, missing=-1)
    return out


def _pair_scores(
    model: Recommender, rows: np.ndarray, cols: np.ndarray, force_cold: bool, chunk: int = 20_000
) -> np.ndarray:
    """Scores of (member row, item) pairs, in chunks (full member vectors are wide: learned + group block)."""
    vec = model._check_fitted()
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), chunk):
        stop = start + chunk
        users = model.user_vectors(rows[start:stop], force_cold=force_cold)
        out[start:stop] = np.einsum("ij,ij->i", users, vec.item[cols[start:stop]])
    return out


def _cached_calibration_rows(
    root: Path, inter: InteractionMatrix, before: datetime | None, cfg: CalibrationConfig, seed: int
) -> pd.DataFrame:
    """:func:`_calibration_rows`, kept for the last matrix: the same (cached) matrix gives the same
    impressions and labels."""
    key = (before.isoformat() if before is not None else "", cfg.model_dump_json(), seed)
    cached = [r for i, k, r in _CALIBRATION_ROWS_CACHE if i is inter and k == key]
    if cached:
        return cached[0]
    rows = _calibration_rows(root, inter, before, cfg, seed)
    _CALIBRATION_ROWS_CACHE[:] = [(inter, key, rows)]
    return rows


def _calibrate(
    root: Path,
    model: Recommender,
    inter: InteractionMatrix,
    before: datetime | None,
    cfg: CalibrationConfig,
    seed: int,
) -> tuple[dict[str, Calibrator], dict[str, Any]]:
    rows = _cached_calibration_rows(root, inter, before, cfg, seed)
    assert model.has_history_ is not None
    r = rows["row"].to_numpy(dtype=np.int64)
    c = rows["col"].to_numpy(dtype=np.int64)
    y = rows["label"].to_numpy(dtype=np.int64)
    known = model.has_history_[r] if len(r) else np.zeros(0, dtype=bool)
    s_known = _pair_scores(model, r[known], c[known], force_cold=False)
    s_cold = _pair_scores(model, r, c, force_cold=True)
    cal = {
        "known": Calibrator.fit(s_known, y[known], cfg, c[known], len(inter.item_ids)),
        "cold": Calibrator.fit(s_cold, y, cfg, c, len(inter.item_ids)),
    }
    stats = {
        "calibration_impressions": len(rows),
        "calibration_purchases": int(y.sum()),
        "calibration_known": cal["known"].kind,
        "calibration_cold": cal["cold"].kind,
    }
    return cal, stats
