"""One recommender interface for every model (popularity, ALS, BPR, LightFM, hybrid).

The shape follows implicit's ``RecommenderBase`` and RecTools' ``ModelBase``:

* public :meth:`Recommender.fit` / :meth:`Recommender.recommend` validate their input and map external ids
  through the one :class:`~recsys.ids.IdMap` of members and of items; protected :meth:`Recommender._fit` works
  on indices;
* every fitted model is reduced to **vectors**: a member vector and an item vector whose inner product is the
  model's score (factor models: the factors, with biases folded in as extra dimensions; popularity: a one-hot
  of the member's group against the items' per-group popularity; the hybrid: the weighted concatenation of its
  parts). Scoring, filtering and top-k are therefore written once, here; the same vectors feed the faiss index
  and the per-request scoring of the service, and save/load is one generic array file;
* **cold-start policy**, the same for all models: a member with history gets the learned vector; a member
  without history gets, for content models (LightFM, hybrid), the vector built from their member features
  (tier, segment, home airport, cabin and meal habits), and otherwise the popularity of their group (segment
  or tier; global popularity when the group is unknown). Every model's item vectors carry that popularity
  block as their last dimensions, so a cold member's vector is zero on the learned part and a one-hot on the
  block. An offer without interactions gets its content score in LightFM and the hybrid (item features); in
  pure CF models its factors are zero, so it ranks after every positively scored item;
* unsupported options raise :class:`UnsupportedOption` instead of being ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recsys.ids import IdMap

STATE_FILE = "state.npz"
META_FILE = "model.json"


class UnsupportedOption(ValueError):
    """An option the model does not support was asked for (raised, never silently ignored)."""


class NotFittedError(RuntimeError):
    """The model was used before :meth:`Recommender.fit` (or :func:`recsys.models.registry.load_model`)."""


class ModelConfig(BaseModel):
    """Base of every model's strict configuration (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    random_state: int = 42
    prior_weight: float | None = Field(
        default=0.0,
        ge=0,
        description="members with history also get their group's popularity, at this weight relative to the "
        "spread of the model's own scores (0: the learned score alone)",
    )
    popularity_shrinkage: float = Field(
        default=20.0,
        ge=0,
        description="members' worth of global popularity mixed into each group's popularity",
    )

    def flat(self, prefix: str = "") -> dict[str, Any]:
        """Flattened parameters, loggable to MLflow."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump(mode="json").items():
            out[f"{prefix}{key}"] = ",".join(map(str, value)) if isinstance(value, list) else value
        return out


DEFAULT_PRIOR_WEIGHT = 10.0


class LearnedModelConfig(ModelConfig):
    """Base configuration of the learned models (ALS, BPR, LightFM, hybrid).

    Their learned score re-ranks within the member's group popularity when members have groups: on the 50k
    world the learned part alone ranked below popularity (NDCG@10 ALS 0.16 vs 0.26), and ALS with a prior of
    :data:`DEFAULT_PRIOR_WEIGHT` scored 0.293. Without member groups (generic data: no tier, no miles) that
    prior is global popularity, which pulled ALS down to 0.5-0.7x bare implicit ALS; so the default
    (``None``) is :func:`resolve_prior_weight`'s: the prior only over real groups.
    """

    prior_weight: float | None = Field(
        default=None,
        ge=0,
        description="members with history also get their group's popularity, at this weight relative to the "
        "spread of the model's own scores (0: the learned score alone; default: "
        f"{DEFAULT_PRIOR_WEIGHT:g} when members fall into two or more known groups, else 0)",
    )


class NoGroupsError(ValueError):
    """A popularity prior over member groups was asked for, but no member has a known group."""


def has_known_groups(group_names: Sequence[str]) -> bool:
    """Whether group labels (``"gold|m10k"``; ``?`` = unknown part) split members into two or more groups,
    one at least with a known part."""
    known = [g for g in group_names if any(part != "?" for part in str(g).split("|"))]
    return len(group_names) >= 2 and bool(known)


def resolve_prior_weight(configured: float | None, group_names: Sequence[str]) -> float:
    """The prior weight a model uses: ``configured`` when set; by default :data:`DEFAULT_PRIOR_WEIGHT` over
    known groups and 0 (the plain model) without. An explicit prior over groups nobody has is refused: it
    would silently be global popularity (ask for that with no groups at all)."""
    if configured is None:
        return DEFAULT_PRIOR_WEIGHT if has_known_groups(group_names) else 0.0
    if configured > 0 and group_names and not has_known_groups(group_names):
        raise NoGroupsError(
            f"prior_weight={configured:g} is set but no member group is available (every member's group is "
            f"{', '.join(map(repr, group_names))}): set prior_weight 0 for the plain model, or groups [] for "
            "a global-popularity prior"
        )
    return float(configured)


@dataclass(frozen=True)
class FeatureMatrix:
    """A sparse row × feature matrix with its feature names (``"tier=gold"``, ``"category=meal"``...)."""

    matrix: sp.csr_matrix
    names: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.shape[1] != len(self.names):
            raise ValueError(f"feature matrix has {self.matrix.shape[1]} columns but {len(self.names)} names")


@dataclass(frozen=True)
class RecDataset:
    """What a model is fitted on: the weighted member × item matrix, its id maps and optional side data.

    ``member_groups`` gives each member's group index into ``group_names`` (segment or tier; -1 unknown),
    used by popularity and by the cold-start policy. ``member_features`` / ``item_features`` (no identity
    columns) are used by content models.
    """

    user_items: sp.csr_matrix
    member_ids: IdMap
    item_ids: IdMap
    member_groups: np.ndarray | None = None
    group_names: tuple[str, ...] = ()
    member_features: FeatureMatrix | None = None
    item_features: FeatureMatrix | None = None
    # Per item, the share of the training window it was available
    # (``recsys.interactions.offer_availability``); popularity is weight per available time. None: every item
    # available throughout.
    item_availability: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = self.user_items
        if not sp.issparse(m):
            raise TypeError("user_items must be a scipy.sparse matrix")
        object.__setattr__(self, "user_items", sp.csr_matrix(m, dtype=np.float32))
        n_users, n_items = self.user_items.shape
        if n_users != len(self.member_ids) or n_items != len(self.item_ids):
            raise ValueError(
                f"user_items is {n_users}x{n_items} but the id maps have {len(self.member_ids)} members and "
                f"{len(self.item_ids)} items"
            )
        if self.user_items.nnz == 0:
            raise ValueError("user_items has no interactions: nothing to learn from")
        if self.user_items.nnz and (self.user_items.data < 0).any():
            raise ValueError("user_items has negative weights; drop them when building the matrix")
        if not np.isfinite(self.user_items.data).all():
            raise ValueError("user_items has NaN or infinite weights")
        if self.member_groups is not None:
            groups = np.asarray(self.member_groups, dtype=np.int64)
            if groups.shape != (n_users,):
                raise ValueError(f"member_groups has shape {groups.shape}, expected ({n_users},)")
            if groups.max(initial=-1) >= len(self.group_names):
                raise ValueError("member_groups refers to a group index beyond group_names")
            object.__setattr__(self, "member_groups", groups)
        if self.item_availability is not None:
            avail = np.asarray(self.item_availability, dtype=np.float64)
            if avail.shape != (n_items,) or not np.all((avail > 0) & (avail <= 1)):
                raise ValueError(f"item_availability must be {n_items} values in (0, 1]")
        if self.member_features is not None and self.member_features.matrix.shape[0] != n_users:
            raise ValueError("member_features must have one row per member")
        if self.item_features is not None and self.item_features.matrix.shape[0] != n_items:
            raise ValueError("item_features must have one row per item")


@dataclass
class Vectors:
    """A fitted model as vectors. ``score(member, item) = full_user(member) @ item[item]``, where ``user``
    holds the learned part of each member's vector and the full vector appends ``prior`` × the one-hot of the
    member's group on the popularity block (never stored densely: members × groups would not fit at 1 M).

    ``group``: one row per member group plus a last row for "group unknown" — the cold-start vectors.
    ``feature`` / ``feature_offset``: content models only; a cold member's vector is
    ``normalised(features) @ feature + feature_offset``.
    """

    user: np.ndarray
    item: np.ndarray
    group: np.ndarray
    feature: np.ndarray | None = None
    feature_offset: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


class Recommender(ABC):
    """Base of every model: fit on a :class:`RecDataset`, recommend by external ids, save/load."""

    kind: ClassVar[str]
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    uses_features: ClassVar[bool] = False
    known_members_use_popularity: ClassVar[bool] = False  # popularity: members with history use the block too

    def _use_groups(self) -> bool:
        """Whether the popularity block is per group (True) or global only."""
        return True

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **params: Any) -> None:
        if config is not None and params:
            raise UnsupportedOption("give either a config or keyword parameters, not both")
        if isinstance(config, ModelConfig):
            if not isinstance(config, self.Config):
                raise UnsupportedOption(
                    f"{self.kind} needs a {self.Config.__name__}, got {type(config).__name__}"
                )
            self.config = config
        else:
            self.config = self.Config.model_validate(config if config is not None else params)
        self._reset()

    def _reset(self) -> None:
        self.vectors_: Vectors | None = None
        self.member_ids: IdMap | None = None
        self.item_ids: IdMap | None = None
        self.group_names: tuple[str, ...] = ()
        self.member_groups_: np.ndarray | None = None
        self.prior_: float = 0.0
        self.prior_weight_: float = 0.0  # the prior weight fit resolved (resolve_prior_weight)
        self.has_history_: np.ndarray | None = None
        self.user_items_: sp.csr_matrix | None = None
        self.member_feature_names_: np.ndarray | None = None
        self._member_pos: dict[str, int] | None = None
        self._feature_pos: dict[str, int] | None = None

    # ------------------------------------------------------------------------------------------- fitting
    def fit(self, data: RecDataset) -> Self:
        """Fit from scratch (a refit forgets everything learned before)."""
        if self.uses_features and (data.member_features is None or data.item_features is None):
            raise ValueError(f"{self.kind} needs member_features and item_features in the dataset")
        self._reset()
        if not self._use_groups():
            data = replace(data, member_groups=None, group_names=())
        vectors = self._fit(data)
        n_users = data.user_items.shape[0]
        pop = popularity_block(data, self.config.popularity_shrinkage)
        n_groups = pop.shape[1]
        d = vectors.user.shape[1]
        # Append the popularity block: learned members have zeros there, cold members one-hots.
        group_vectors = np.zeros((n_groups, d + n_groups), dtype=np.float32)
        group_vectors[:, d:] = np.eye(n_groups, dtype=np.float32)
        groups = (
            data.member_groups if data.member_groups is not None else np.full(n_users, -1, dtype=np.int64)
        )
        # Members with history: their learned vector, plus ``prior`` × the one-hot of their group on the block
        # (kept as a scalar and the group index, never as a dense members × groups matrix).
        prior = 1.0 if self.known_members_use_popularity else 0.0
        weight = resolve_prior_weight(self.config.prior_weight, data.group_names)
        if not self.known_members_use_popularity and weight > 0:
            g = np.where(groups >= 0, groups, n_groups - 1)
            learned = score_scale(vectors.user, vectors.item, data, self.config.random_state)
            popular = score_scale(None, pop, data, self.config.random_state, groups=g)
            prior = weight * learned / popular
        self.prior_weight_ = 0.0 if self.known_members_use_popularity else weight
        feature = feature_offset = None
        if vectors.feature is not None:
            feature = np.hstack([vectors.feature, np.zeros((len(vectors.feature), n_groups), np.float32)])
            assert vectors.feature_offset is not None
            feature_offset = np.concatenate([vectors.feature_offset, np.zeros(n_groups, np.float32)])
        self.vectors_ = Vectors(
            user=np.ascontiguousarray(vectors.user, dtype=np.float32),
            item=np.ascontiguousarray(np.hstack([vectors.item, pop]).astype(np.float32)),
            group=group_vectors,
            feature=feature,
            feature_offset=feature_offset,
            extra=vectors.extra,
        )
        self.member_ids, self.item_ids = data.member_ids, data.item_ids
        self.group_names = tuple(data.group_names)
        self.member_groups_ = groups
        self.prior_ = float(prior)
        self.has_history_ = np.diff(data.user_items.indptr) > 0
        self.user_items_ = data.user_items
        if data.member_features is not None and feature is not None:
            self.member_feature_names_ = np.asarray(data.member_features.names, dtype=object)
        self._check_fitted()
        return self

    @abstractmethod
    def _fit(self, data: RecDataset) -> Vectors:
        """Learn from ``data`` (indices only) and return the learned part of the vectors (``group`` may have
        zero columns: the base appends the popularity block and the cold-start rows)."""

    # ---------------------------------------------------------------------------------------- member side
    def _check_fitted(self) -> Vectors:
        if self.vectors_ is None or self.member_ids is None or self.item_ids is None:
            raise NotFittedError(f"{self.kind} model is not fitted")
        return self.vectors_

    @property
    def n_items(self) -> int:
        return int(self._check_fitted().item.shape[0])

    @property
    def dim(self) -> int:
        return int(self._check_fitted().item.shape[1])

    def member_index(self, member_id: str) -> int | None:
        """Matrix row of a member, or None when the model does not know them (fast: a dict lookup)."""
        if self._member_pos is None:
            assert self.member_ids is not None
            self._member_pos = {str(m): i for i, m in enumerate(self.member_ids.external_ids)}
        return self._member_pos.get(member_id)

    def known_vector(self, member_idx: int) -> np.ndarray:
        """The full vector of a member with history, by row (the per-request path: no batching overhead)."""
        vec = self._check_fitted()
        assert self.member_groups_ is not None
        out = np.zeros(self.dim, dtype=np.float32)
        d_learned = vec.user.shape[1]
        out[:d_learned] = vec.user[member_idx]
        if self.prior_:
            g = int(self.member_groups_[member_idx])
            out[d_learned + (g if g >= 0 else len(self.group_names))] = self.prior_
        return out

    def is_known(self, member_id: str) -> bool:
        """True when the member had history in training (gets learned, not cold-start, recommendations)."""
        self._check_fitted()
        idx = self.member_index(member_id)
        assert self.has_history_ is not None
        return idx is not None and bool(self.has_history_[idx])

    def group_index(self, group: str | None) -> int:
        """Row of ``group`` in the cold-start vectors (the last row when unknown)."""
        if group is not None and group in self.group_names:
            return self.group_names.index(group)
        return len(self.group_names)

    def content_vector(self, features: Sequence[str]) -> np.ndarray | None:
        """A cold member's vector from feature names (``"tier=gold"``); None when the model has no content
        part or none of the features is known."""
        vec = self._check_fitted()
        if vec.feature is None or self.member_feature_names_ is None:
            return None
        if self._feature_pos is None:
            self._feature_pos = {str(n): i for i, n in enumerate(self.member_feature_names_)}
        rows = [self._feature_pos[f] for f in features if f in self._feature_pos]
        if not rows:
            return None
        assert vec.feature_offset is not None
        return vec.feature[rows].sum(axis=0) / len(rows) + vec.feature_offset

    def user_vectors(
        self,
        member_idx: np.ndarray,
        groups: np.ndarray | None = None,
        features: Sequence[Sequence[str] | None] | None = None,
        force_cold: bool = False,
    ) -> np.ndarray:
        """Vectors of members by row index (-1 = unknown member), applying the cold-start policy.

        ``groups`` (group index per member, -1 unknown) and ``features`` (feature names per member) override
        what the model knows about cold members; ``force_cold`` applies the cold-start policy to every member.
        """
        vec = self._check_fitted()
        assert self.has_history_ is not None and self.member_groups_ is not None
        member_idx = np.asarray(member_idx, dtype=np.int64)
        known = member_idx >= 0
        known[known] = self.has_history_[member_idx[known]]
        if force_cold:  # what the cold-start policy would give these members (calibration, tests)
            known[:] = False
        out = np.zeros((len(member_idx), self.dim), dtype=np.float32)
        d_learned = vec.user.shape[1]
        rows = np.flatnonzero(known)
        out[rows, :d_learned] = vec.user[member_idx[rows]]
        if self.prior_ and len(rows):
            g_known = self.member_groups_[member_idx[rows]]
            g_known = np.where(g_known >= 0, g_known, len(self.group_names))
            out[rows, d_learned + g_known] = self.prior_
        cold = np.flatnonzero(~known)
        if len(cold):
            g = np.full(len(member_idx), -1, dtype=np.int64)
            inside = member_idx >= 0
            g[inside] = self.member_groups_[member_idx[inside]]
            if groups is not None:
                given = np.asarray(groups, dtype=np.int64)
                g = np.where(given >= 0, given, g)
            g = np.where(g >= 0, g, len(self.group_names))
            out[cold] = vec.group[g[cold]]
            if vec.feature is not None:
                with_content = self._apply_content(out, cold, member_idx, features)
                if self.prior_ and len(with_content):  # content plus the group prior, as for known members
                    block = self.dim - (len(self.group_names) + 1)
                    out[with_content, block + g[with_content]] += self.prior_
        return out

    def _apply_content(
        self,
        out: np.ndarray,
        cold: np.ndarray,
        member_idx: np.ndarray,
        features: Sequence[Sequence[str] | None] | None,
    ) -> np.ndarray:
        """Content vectors for cold members: from ``features`` when given, else from the features the model
        was fitted with (members of the training population without history). Members with no known feature
        keep their group-popularity vector. Returns the rows that got a content vector."""
        vec = self._check_fitted()
        assert vec.feature is not None and vec.feature_offset is not None
        done: list[int] = []
        stored = []
        for i in cold:
            names = features[i] if features is not None else None
            if names is not None:
                cv = self.content_vector(names)
                if cv is not None:
                    out[i] = cv
                    done.append(i)
            elif member_idx[i] >= 0:
                stored.append(i)
        if stored and "member_features_indptr" in vec.extra:
            rows = member_idx[np.asarray(stored)]
            indptr, indices = vec.extra["member_features_indptr"], vec.extra["member_features_indices"]
            m = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, indptr),
                shape=(len(indptr) - 1, len(vec.feature)),
            )[rows]
            counts = np.diff(m.indptr)
            has = counts > 0
            if has.any():
                sub = m[has]
                content = (sub @ vec.feature) / counts[has][:, None] + vec.feature_offset
                out[np.asarray(stored)[has]] = content
                done.extend(np.asarray(stored)[has].tolist())
        return np.asarray(sorted(done), dtype=np.int64)

    # -------------------------------------------------------------------------------------- recommending
    def recommend(
        self,
        userid: str | Sequence[str] | np.ndarray,
        user_items: sp.csr_matrix | None = None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: Sequence[str] | np.ndarray | None = None,
        recalculate_user: bool = False,
        items: Sequence[str] | np.ndarray | None = None,
        *,
        batch_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``N`` item ids and scores for one member id (1-D arrays) or many (2-D, one row each).

        ``user_items``: the members' rows of interactions (same order as ``userid``) used to filter already
        liked items; by default the rows the model was fitted with. ``filter_items`` are never returned;
        ``items`` restricts the candidates. Unknown members get the cold-start policy. When filters leave
        fewer than ``N`` candidates, the remaining slots hold id ``None`` and score ``-inf``.
        """
        vec = self._check_fitted()
        assert self.member_ids is not None and self.item_ids is not None
        if recalculate_user:
            raise UnsupportedOption(
                f"{self.kind}: recalculate_user is not supported (use the cold-start policy)"
            )
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        single = isinstance(userid, str)
        ids = np.asarray([userid] if single else list(userid), dtype=object)
        rows = self.member_ids.to_index(ids, missing=-1)
        if user_items is not None:
            user_items = sp.csr_matrix(user_items)
            if user_items.shape != (len(ids), self.n_items):
                raise ValueError(
                    f"user_items must be {len(ids)}x{self.n_items} (one row per member asked for), "
                    f"got {user_items.shape[0]}x{user_items.shape[1]}"
                )
        candidates = np.arange(self.n_items) if items is None else self.item_ids.to_index(items)
        if len(np.unique(candidates)) != len(candidates):
            raise ValueError("items has duplicates")
        banned = np.zeros(self.n_items, dtype=bool)
        if filter_items is not None:
            banned[self.item_ids.to_index(filter_items)] = True
        k = min(N, len(candidates))
        out_ids = np.empty((len(ids), k), dtype=object)
        out_scores = np.empty((len(ids), k), dtype=np.float32)
        item_vectors = vec.item[candidates]
        for start in range(0, len(ids), batch_size):
            stop = min(start + batch_size, len(ids))
            users = self.user_vectors(rows[start:stop])
            scores = users @ item_vectors.T
            scores[:, banned[candidates]] = -np.inf
            if filter_already_liked_items:
                liked = (
                    user_items[start:stop] if user_items is not None else self._fitted_rows(rows[start:stop])
                )
                _mask_liked(scores, liked, candidates, self.n_items)
            top, top_scores = topk(scores, k)
            chosen = candidates[top]
            out_ids[start:stop] = self.item_ids.to_external(chosen.ravel()).reshape(chosen.shape)
            out_ids[start:stop][~np.isfinite(top_scores)] = None
            out_scores[start:stop] = top_scores
        if single:
            return out_ids[0], out_scores[0]
        return out_ids, out_scores

    def _fitted_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        assert self.user_items_ is not None
        safe = np.where(rows >= 0, rows, 0)
        sub = self.user_items_[safe]
        if (rows < 0).any():  # unknown members have no history
            sub = sp.csr_matrix(sub.multiply((rows >= 0)[:, None].astype(np.float32)))
            sub.eliminate_zeros()
        return sub

    def score_items(self, user_vector: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Scores of items (by index) for one member vector — the per-request path (no pandas)."""
        vec = self._check_fitted()
        return vec.item[item_idx] @ user_vector

    def similar_items(self, itemid: str, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` items closest to ``itemid`` (itself excluded) by cosine of their learned vectors (the
        popularity block excluded). Popularity learns no item vectors: it raises
        :class:`UnsupportedOption`."""
        vec = self._check_fitted()
        assert self.item_ids is not None
        learned = vec.item[:, : vec.item.shape[1] - (len(self.group_names) + 1)]
        if learned.shape[1] == 0:
            raise UnsupportedOption(f"{self.kind}: similar_items needs learned item vectors")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        idx = self.item_ids.to_index([itemid])[0]
        norms = np.linalg.norm(learned, axis=1)
        norms[norms == 0] = 1.0
        cosine = (learned @ learned[idx]) / (norms * norms[idx])
        cosine[idx] = -np.inf
        top, scores = topk(cosine[None, :].astype(np.float32), min(N, len(cosine) - 1))
        return self.item_ids.to_external(top[0]), scores[0]

    # ------------------------------------------------------------------------------------------ save/load
    def save(self, path: Path | str) -> None:
        """Save to a directory: ``model.json`` (kind, config, group names) and ``state.npz`` (vectors, id
        maps)."""
        vec = self._check_fitted()
        assert self.member_ids is not None and self.item_ids is not None and self.user_items_ is not None
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "user": vec.user,
            "item": vec.item,
            "group": vec.group,
            "member_ids": self.member_ids.external_ids.astype(str),
            "item_ids": self.item_ids.external_ids.astype(str),
            "member_groups": np.asarray(self.member_groups_),
            "ui_indptr": self.user_items_.indptr,
            "ui_indices": self.user_items_.indices,
            "ui_data": self.user_items_.data,
        }
        if vec.feature is not None:
            assert vec.feature_offset is not None and self.member_feature_names_ is not None
            arrays["feature"] = vec.feature
            arrays["feature_offset"] = vec.feature_offset
            arrays["member_feature_names"] = self.member_feature_names_.astype(str)
        for key, value in vec.extra.items():
            arrays[f"extra__{key}"] = value
        np.savez(path / STATE_FILE, **arrays)  # type: ignore[arg-type]
        meta = {
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "groups": list(self.group_names),
            "prior": self.prior_,
        }
        self._save_extra(path)
        (path / META_FILE).write_text(json.dumps(meta, indent=2))

    def _save_extra(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Save what a model holds beyond its vectors (the contextual ranker's booster); default nothing."""

    def _load_extra(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Load what :meth:`_save_extra` saved; default nothing."""

    @staticmethod
    def saved_meta(path: Path) -> dict[str, Any]:
        """The metadata :meth:`save` wrote (``kind``, ``config``, ...); not a saved model is an error."""
        if not (path / META_FILE).is_file():
            raise FileNotFoundError(f"{path}: no {META_FILE}; not a saved model")
        meta: dict[str, Any] = json.loads((path / META_FILE).read_text())
        return meta

    @classmethod
    def restore(cls, path: Path, meta: dict[str, Any]) -> Recommender:
        """A model of this class from what :meth:`save` wrote; :func:`recsys.models.registry.load_model`
        picks the class from the saved kind and calls this."""
        model = cls(meta["config"])
        with np.load(path / STATE_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        extra = {k.removeprefix("extra__"): v for k, v in arrays.items() if k.startswith("extra__")}
        model.vectors_ = Vectors(
            user=arrays["user"],
            item=arrays["item"],
            group=arrays["group"],
            feature=arrays.get("feature"),
            feature_offset=arrays.get("feature_offset"),
            extra=extra,
        )
        model.member_ids = IdMap(arrays["member_ids"].astype(object))
        model.item_ids = IdMap(arrays["item_ids"].astype(object))
        model.group_names = tuple(meta["groups"])
        model.member_groups_ = arrays["member_groups"]
        model.prior_ = float(meta.get("prior", 0.0))
        model.user_items_ = sp.csr_matrix(
            (arrays["ui_data"], arrays["ui_indices"], arrays["ui_indptr"]),
            shape=(len(model.member_ids), len(model.item_ids)),
        )
        model.has_history_ = np.diff(model.user_items_.indptr) > 0
        if "member_feature_names" in arrays:
            model.member_feature_names_ = arrays["member_feature_names"].astype(object)
        model._load_extra(path)
        return model

    def params(self) -> dict[str, Any]:
        """Flattened configuration, loggable to MLflow (``model.kind``, ``model.<param>``)."""
        return {"model.kind": self.kind, **self.config.flat("model.")}


# -------------------------------------------------------------------------------------------------- helpers
def score_scale(
    user: np.ndarray | None,
    item: np.ndarray,
    data: RecDataset,
    seed: int,
    sample: int = 200_000,
    groups: np.ndarray | None = None,
) -> float:
    """Standard deviation of ``user @ item`` scores over sampled known (member, item) cells and as many random
    items for the same members — the spread a ranking sees. 1.0 when the scores are constant. With ``groups``
    (and ``user`` None) the scores are ``item[col, groups[member]]``: a popularity block."""
    ui = data.user_items.tocoo()
    if ui.nnz == 0 or (user is not None and user.shape[1] == 0):
        return 1.0
    rng = np.random.default_rng(seed)
    pick = rng.choice(ui.nnz, size=min(sample, ui.nnz), replace=False)
    cols = rng.integers(0, ui.shape[1], size=len(pick))
    rows = ui.row[pick]
    if user is None:
        assert groups is not None
        scores = np.concatenate([item[ui.col[pick], groups[rows]], item[cols, groups[rows]]])
    else:
        scores = np.concatenate(
            [
                np.einsum("ij,ij->i", user[rows], item[ui.col[pick]]),
                np.einsum("ij,ij->i", user[rows], item[cols]),
            ]
        )
    sd = float(np.std(scores))
    return sd if sd > 1e-12 else 1.0


def popularity_block(data: RecDataset, shrinkage: float) -> np.ndarray:
    """Items × (groups + 1) popularity: recency-weighted interaction weight per group — per available time
    when ``data.item_availability`` is given — shrunk toward the global popularity by ``shrinkage`` members'
    worth, each column scaled to max 1. The last column is global."""
    ui = data.user_items
    n_users, n_items = ui.shape
    if data.item_availability is not None:  # weight per available time: new offers are not penalised
        ui = sp.csr_matrix(ui @ sp.diags(1.0 / np.asarray(data.item_availability, dtype=np.float64)))
    global_w = np.asarray(ui.sum(axis=0)).ravel().astype(np.float64)
    global_share = global_w / max(global_w.sum(), 1e-12)
    n_groups = len(data.group_names)
    cols = np.zeros((n_items, n_groups + 1), dtype=np.float64)
    if n_groups and data.member_groups is not None:
        groups = data.member_groups
        has = np.diff(ui.indptr) > 0
        valid = groups >= 0
        onehot = sp.csr_matrix(
            (np.ones(int(valid.sum())), (groups[valid], np.flatnonzero(valid))), shape=(n_groups, n_users)
        )
        per_group = np.asarray((onehot @ ui).todense(), dtype=np.float64)  # groups × items
        members = np.bincount(groups[valid & has], minlength=n_groups).astype(np.float64)
        totals = per_group.sum(axis=1, keepdims=True)
        share = np.divide(per_group, totals, out=np.zeros_like(per_group), where=totals > 0)
        mixed = (members[:, None] * share + shrinkage * global_share[None, :]) / np.maximum(
            members[:, None] + shrinkage, 1e-12
        )
        cols[:, :n_groups] = mixed.T
    cols[:, n_groups] = global_share
    top = cols.max(axis=0, keepdims=True)
    cols = np.divide(cols, top, out=np.zeros_like(cols), where=top > 0)
    return cols.astype(np.float32)


def _mask_liked(scores: np.ndarray, liked: sp.csr_matrix, candidates: np.ndarray, n_items: int) -> None:
    """Set to -inf the scores of candidates each member already interacted with."""
    if liked.nnz == 0:
        return
    position = np.full(n_items, -1, dtype=np.int64)
    position[candidates] = np.arange(len(candidates))
    liked = liked.tocoo()
    cols = position[liked.col]
    ok = cols >= 0
    scores[liked.row[ok], cols[ok]] = -np.inf


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` columns of each row of ``scores``, best first; ties broken by the lower column index.

    Written once for every model; deterministic and identical whether a row is ranked alone or in a batch.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if n_rows == 0 or k == 0:
        return np.empty((n_rows, k), dtype=np.int64), np.empty((n_rows, k), dtype=np.float32)
    neg = -scores
    if k < n_cols:
        part = np.argpartition(neg, k - 1, axis=1)[:, :k]
        threshold = np.take_along_axis(neg, part, axis=1).max(axis=1)
        mask = neg <= threshold[:, None]  # the top k and every tie with the k-th
    else:
        mask = np.ones_like(neg, dtype=bool)
    r, c = np.nonzero(mask)
    order = np.lexsort((c, neg[r, c], r))
    r, c = r[order], c[order]
    starts = np.searchsorted(r, np.arange(n_rows))
    take = starts[:, None] + np.arange(k)[None, :]
    top = c[take]
    return top, np.take_along_axis(scores, top, axis=1).astype(np.float32)


_FIT_MEMO: dict[str, tuple[tuple[str, str], Vectors]] = {}


def memo_fit(
    kind: str, config: ModelConfig, inputs: Sequence[sp.spmatrix], fit: Callable[[], Vectors]
) -> Vectors:
    """``fit()``, or a copy of the vectors the last fit of ``kind`` returned for the same fitting parameters
    and the same ``inputs`` (every matrix the fit reads).

    A training run fits some factorisations twice: the hybrid's ALS and LightFM parts, and the ranker's base
    ALS, are the ``als`` and ``lightfm`` models of the same run (same data, parameters and seed: the same
    vectors). One entry per kind, so memory holds one model's vectors each."""
    params = config.model_dump_json(exclude={"prior_weight", "popularity_shrinkage"})  # not read by a fit
    digest = hashlib.blake2b(digest_size=16)
    for m in inputs:
        csr = sp.csr_matrix(m)
        digest.update(repr((csr.shape, csr.dtype.str, csr.indptr.dtype.str, csr.indices.dtype.str)).encode())
        for arr in (csr.indptr, csr.indices, csr.data):
            digest.update(np.ascontiguousarray(arr).data)
    key = (params, digest.hexdigest())
    hit = _FIT_MEMO.get(kind)
    if hit is not None and hit[0] == key:
        return copy.deepcopy(hit[1])
    vectors = fit()
    _FIT_MEMO[kind] = (key, copy.deepcopy(vectors))
    return vectors


def deep_copied(estimator: Any) -> Any:
    """A fresh copy of a library estimator, so every fit starts clean (RecTools does the same)."""
    return copy.deepcopy(estimator)
