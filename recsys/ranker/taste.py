"""Destination-taste factors: a small collaborative model of where members travel, for the ranker's CF block.

Members' hidden travel tastes (beach, Japan and Korea, European cities...) each load on many destinations, and
leisure trips and partner stays follow them. The base CF model sees destinations among thousands of other
tokens (routes, cabins, meals, offers), where a member's two or three trips weigh little; this model factors
the member × destination matrix alone (flights' destinations, partner-activity places and redemptions'
destinations, counts log-damped), so "flies to X" predicts "redeems at Y" through a handful of factors.

Destination factors are learned by implicit ALS (the ``implicit`` library). A member's vector is not stored:
it is folded in from their travel history by the same weighted least squares an ALS user step solves, so the
service computes it from the history the member record already carries (``recsys.ranker.features.TRAVEL_KEY``)
and training computes it from the history as of the window's start — one function for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TRAVEL_PARTS: tuple[str, ...] = ("flights", "places", "awards")


@dataclass(frozen=True)
class DestinationFactors:
    """Item factors of destinations (rows follow ``destinations``) and the fold-in settings."""

    destinations: tuple[str, ...]
    item: np.ndarray  # destinations × factors
    regularization: float
    alpha: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pos", {d: i for i, d in enumerate(self.destinations)})
        object.__setattr__(self, "_gram", self.item.T @ self.item)
        object.__setattr__(self, "_mean", self.item.mean(axis=0) if len(self.item) else self.item.sum(axis=0))

    @property
    def factors(self) -> int:
        return int(self.item.shape[1])

    def rows(self, destinations: Sequence[object] | np.ndarray) -> np.ndarray:
        """Row of each destination (-1 unknown or missing)."""
        pos: dict[str, int] = self._pos  # type: ignore[attr-defined]
        return np.fromiter(
            (pos.get(d, -1) if isinstance(d, str) else -1 for d in destinations), np.int64, len(destinations)
        )

    def confidence(self, counts: np.ndarray) -> np.ndarray:
        """ALS confidence of travel counts (what the factors were fitted with)."""
        return self.alpha * np.log1p(counts)

    def member_vector(self, travel: Mapping[str, Any] | None) -> np.ndarray:
        """The member's factors folded in from their travel history (zeros without any known destination):
        ``(YᵀY + Yᵀ(C - I)Y + λI)⁻¹ YᵀCp`` over the destinations they travelled to."""
        counts: dict[int, float] = {}
        pos: dict[str, int] = self._pos  # type: ignore[attr-defined]
        for part in TRAVEL_PARTS:
            for place, k in ((travel or {}).get(part) or {}).items():
                r = pos.get(place, -1)
                if r >= 0:
                    counts[r] = counts.get(r, 0.0) + float(k)
        if not counts:
            return np.zeros(self.factors)
        rows = np.fromiter(counts, np.int64, len(counts))
        c = self.confidence(np.fromiter(counts.values(), np.float64, len(counts)))
        y = self.item[rows]
        a = self._gram + (y.T * (c - 1.0)) @ y + self.regularization * np.eye(self.factors)  # type: ignore[attr-defined]
        return np.linalg.solve(a, y.T @ c)

    def scores(
        self,
        travel: Sequence[Mapping[str, Any] | None],
        member: np.ndarray,
        destinations: Sequence[object] | np.ndarray,
    ) -> np.ndarray:
        """(score, lift over the mean destination) of pairs: ``travel`` holds members' histories, ``member``
        each pair's position in it (-1: none), ``destinations`` each pair's offer destination. NaN for pairs
        without a known destination; 0 for members without travel."""
        n = len(member)
        out = np.full((n, 2), np.nan)
        rows = self.rows(destinations)
        ok = np.flatnonzero(rows >= 0)
        if len(ok) == 0:
            return out
        uniq, inv = np.unique(member[ok], return_inverse=True)
        vectors = np.stack([self.member_vector(travel[m] if m >= 0 else None) for m in uniq])
        u = vectors[inv]
        v = self.item[rows[ok]]
        out[ok, 0] = np.einsum("ij,ij->i", u, v)
        out[ok, 1] = np.einsum("ij,ij->i", u, v - self._mean)  # type: ignore[attr-defined]
        return out

    def member_scores(self, travel: Mapping[str, Any] | None, rows: np.ndarray) -> np.ndarray:
        """:meth:`scores` of one member's pairs (a request's candidates) by their destinations' rows
        (:meth:`rows`, -1 unknown)."""
        out = np.full((len(rows), 2), np.nan)
        ok = rows >= 0
        if ok.any():
            u = self.member_vector(travel)
            v = self.item[rows[ok]]
            out[ok, 0] = v @ u
            out[ok, 1] = (v - self._mean) @ u  # type: ignore[attr-defined]
        return out

    @classmethod
    def fit(
        cls,
        travel: Mapping[str, Mapping[str, Any]],
        *,
        factors: int = 8,
        regularization: float = 0.1,
        alpha: float = 20.0,
        iterations: int = 20,
        seed: int = 42,
    ) -> DestinationFactors:
        """Implicit ALS on the member × destination counts of ``travel`` (member → history)."""
        import scipy.sparse as sp
        from implicit.als import AlternatingLeastSquares

        dests = sorted(
            {str(p) for t in travel.values() for part in TRAVEL_PARTS for p in (t.get(part) or {})}
        )
        pos = {d: i for i, d in enumerate(dests)}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, t in enumerate(travel.values()):
            for part in TRAVEL_PARTS:
                for place, k in (t.get(part) or {}).items():
                    rows.append(i)
                    cols.append(pos[str(place)])
                    vals.append(float(k))
        if not dests:
            return cls((), np.zeros((0, factors)), regularization, alpha)
        counts = sp.csr_matrix((vals, (rows, cols)), shape=(len(travel), len(dests)))
        counts.sum_duplicates()
        conf = counts.copy()
        conf.data = alpha * np.log1p(conf.data)
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            random_state=seed,
            num_threads=1,
            calculate_training_loss=False,
        )
        model.fit(conf.tocsr().astype(np.float32), show_progress=False)
        item = np.asarray(_to_numpy(model.item_factors), dtype=np.float64)
        return cls(tuple(dests), item, regularization, alpha)

    def to_json(self) -> dict[str, Any]:
        return {
            "destinations": list(self.destinations),
            "item": self.item.tolist(),
            "regularization": self.regularization,
            "alpha": self.alpha,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DestinationFactors:
        item = np.asarray(obj["item"], dtype=np.float64).reshape(len(obj["destinations"]), -1)
        return cls(tuple(obj["destinations"]), item, float(obj["regularization"]), float(obj["alpha"]))


def _to_numpy(x: Any) -> np.ndarray:
    """Factors as numpy (the GPU build of ``implicit`` returns its own array type)."""
    return np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x)
