"""Five-segment LRFMC customer-value segmentation: z-scored k-means with named clusters.

:func:`fit_segments` standardises L, R, F, M, C (z-score with the population mean and standard
deviation), clusters with scikit-learn ``KMeans`` (k = 5, ``random_state = seed``, ``n_init`` fixed at
:data:`N_INIT`, single-threaded so the result is the same on any machine; above :data:`MAX_FIT_ROWS` members
on a seeded sample of that size), and names the five clusters from their centres.

Naming rule (deterministic, each name used exactly once). Every segment has a *signature*: the direction in
z-space (L, R, F, M, C) its centre is expected to point to, from the textbook reading of the five groups:

=============  ========================  ===============================================================
segment        signature (L,R,F,M,C)     reading
=============  ========================  ===============================================================
``keep``       (0, -1, +1, +1, +0.5)     frequent, high mileage, flew recently, good fares (重要保持)
``develop``    (0, 0, 0, 0, +1)          high discount/cabin level, not yet frequent (重要发展)
``win_back``   (+1, 0, -0.25, -0.25, 0)  long-standing members whose activity has fallen off (重要挽留)
``general``    (-1, -0.5, 0, 0, -0.5)    recent joiners, fairly recent flights, low fare level (一般)
``low_value``  (0, +1, -1, -1, -0.5)     long since the last flight, few flights, little mileage (低价值)
=============  ========================  ===============================================================

Each (cluster, segment) pair is scored by the dot product of the cluster's z-centre with the segment's
unit-length signature, and the one-to-one assignment maximising the total score is solved with
``scipy.optimize.linear_sum_assignment``. A :class:`SegmentModel` keeps the scaler, the centres (z-scores and
original units), the names and the training sizes; it predicts by nearest centre in z-space (what KMeans does)
and saves to / loads from JSON, so it travels inside a model artefact with no pickles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from recsys.data.layout import DatasetError, has_table, read_table
from recsys.features.flyers import load_flights, load_members, resolve_as_of
from recsys.features.lrfmc import (
    LRFMC_COLUMNS,
    LrfmcCol,
    clean_textbook,
    lrfmc_from_aggregates,
    lrfmc_from_flights,
    read_air_data_csv,
)
from recsys.schema import Col, Segment

N_INIT = 10
MAX_FIT_ROWS = 200_000
SEGMENT_ORDER: tuple[Segment, ...] = (
    Segment.KEEP,
    Segment.DEVELOP,
    Segment.WIN_BACK,
    Segment.GENERAL,
    Segment.LOW_VALUE,
)
SEGMENT_SIGNATURES: dict[Segment, tuple[float, float, float, float, float]] = {
    Segment.KEEP: (0.0, -1.0, 1.0, 1.0, 0.5),
    Segment.DEVELOP: (0.0, 0.0, 0.0, 0.0, 1.0),
    Segment.WIN_BACK: (1.0, 0.0, -0.25, -0.25, 0.0),
    Segment.GENERAL: (-1.0, -0.5, 0.0, 0.0, -0.5),
    Segment.LOW_VALUE: (0.0, 1.0, -1.0, -1.0, -0.5),
}
FORMAT_VERSION = 1


class SegmentationError(ValueError):
    """Input that cannot be segmented (too few members, missing or non-finite LRFMC values)."""


def _lrfmc_matrix(lrfmc: pd.DataFrame) -> np.ndarray:
    missing = [c for c in LRFMC_COLUMNS if c not in lrfmc.columns]
    if missing:
        raise SegmentationError(f"LRFMC frame is missing column(s) {missing}")
    x = lrfmc[list(LRFMC_COLUMNS)].to_numpy(dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise SegmentationError(
            f"LRFMC column {LRFMC_COLUMNS[col]} has {int(bad[:, col].sum())} non-finite value(s) "
            f"(first at row {row})"
        )
    return x


def name_clusters(centres_z: np.ndarray) -> list[Segment]:
    """Names of clusters from their z-score centres (rows), one distinct :class:`Segment` each."""
    centres_z = np.asarray(centres_z, dtype=float)
    if centres_z.shape != (len(SEGMENT_ORDER), len(LRFMC_COLUMNS)):
        raise SegmentationError(f"need {len(SEGMENT_ORDER)} centres of {len(LRFMC_COLUMNS)} values")
    sig = np.array([SEGMENT_SIGNATURES[s] for s in SEGMENT_ORDER], dtype=float)
    sig /= np.linalg.norm(sig, axis=1, keepdims=True)
    score = centres_z @ sig.T  # clusters x segments
    rows, cols = linear_sum_assignment(score, maximize=True)
    names: list[Segment] = [Segment.GENERAL] * len(rows)
    for r, c in zip(rows, cols, strict=True):
        names[int(r)] = SEGMENT_ORDER[int(c)]
    return names


@dataclass(frozen=True)
class SegmentModel:
    """A fitted five-segment LRFMC model. Rows of the centre arrays follow :data:`SEGMENT_ORDER`."""

    mean: np.ndarray  # (5,) per LRFMC column
    scale: np.ndarray  # (5,) standard deviations (population, ddof=0)
    centres_z: np.ndarray  # (k, 5) in z-scores
    names: tuple[Segment, ...]  # name of each centre row
    train_sizes: tuple[int, ...]  # members of each segment in the fitting data
    seed: int = 0
    inertia: float = 0.0

    # -- prediction ----------------------------------------------------------------------------------------
    def transform(self, lrfmc: pd.DataFrame) -> np.ndarray:
        """z-scores of the LRFMC columns with the fitted mean and scale."""
        return (_lrfmc_matrix(lrfmc) - self.mean) / self.scale

    def predict(self, lrfmc: pd.DataFrame) -> np.ndarray:
        """Segment name (str) of every row: nearest centre in z-space (ties go to the earlier segment)."""
        names = np.array([str(n) for n in self.names], dtype=object)
        return names[_nearest(self.transform(lrfmc), self.centres_z)]

    # -- description ---------------------------------------------------------------------------------------
    @property
    def centres(self) -> pd.DataFrame:
        """Centres in original units (L, R in months; F flights; M km; C fare level), indexed by segment."""
        return pd.DataFrame(
            self.centres_z * self.scale + self.mean,
            index=pd.Index([str(n) for n in self.names], name="segment"),
            columns=list(LRFMC_COLUMNS),
        )

    @property
    def centres_zscore(self) -> pd.DataFrame:
        """Centres in z-scores, indexed by segment."""
        return pd.DataFrame(
            self.centres_z,
            index=pd.Index([str(n) for n in self.names], name="segment"),
            columns=[f"z{c}" for c in LRFMC_COLUMNS],
        )

    @property
    def sizes(self) -> pd.Series:
        """Members of each segment in the fitting data."""
        return pd.Series(
            self.train_sizes, index=pd.Index([str(n) for n in self.names], name="segment"), name="size"
        )

    def summary(self) -> pd.DataFrame:
        """One row per segment: size, share, centres in original units and in z-scores."""
        out = pd.concat([self.sizes, self.centres, self.centres_zscore], axis=1)
        out.insert(1, "share", out["size"] / max(int(out["size"].sum()), 1))
        return out

    # -- persistence ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "columns": list(LRFMC_COLUMNS),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "centres_z": self.centres_z.tolist(),
            "names": [str(n) for n in self.names],
            "train_sizes": list(self.train_sizes),
            "seed": self.seed,
            "inertia": self.inertia,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentModel:
        if data.get("format_version") != FORMAT_VERSION or list(data.get("columns", [])) != list(
            LRFMC_COLUMNS
        ):
            raise SegmentationError("not a segment model of this format (format_version/columns differ)")
        return cls(
            mean=np.asarray(data["mean"], dtype=float),
            scale=np.asarray(data["scale"], dtype=float),
            centres_z=np.asarray(data["centres_z"], dtype=float),
            names=tuple(Segment(n) for n in data["names"]),
            train_sizes=tuple(int(s) for s in data["train_sizes"]),
            seed=int(data["seed"]),
            inertia=float(data["inertia"]),
        )

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> SegmentModel:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SegmentationError(f"cannot read segment model {path}: {exc}") from exc
        return cls.from_dict(data)


def fit_segments(lrfmc: pd.DataFrame, k: int = 5, seed: int = 0) -> SegmentModel:
    """Fit the five-segment model on LRFMC rows (see the module docstring for the method and the naming rule).

    Deterministic for a seed. Raises :class:`SegmentationError` when ``k`` is not 5 (the five names), when
    there are fewer distinct members than clusters, or on missing / non-finite values.
    """
    if k != len(SEGMENT_ORDER):
        raise SegmentationError(f"k must be {len(SEGMENT_ORDER)}: one cluster per named segment (got {k})")
    x = _lrfmc_matrix(lrfmc)
    if not _has_distinct_rows(x, k):
        raise SegmentationError(f"need at least {k} distinct members to fit {k} segments (got {len(x)} rows)")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    fit_rows = z
    if len(z) > MAX_FIT_ROWS:  # a seeded sample: k-means centres of 200k rows are as good as of millions
        pick = np.random.default_rng(seed).choice(len(z), MAX_FIT_ROWS, replace=False)
        fit_rows = z[np.sort(pick)]
    # One thread: the same centres on any machine, and no oversubscription on a shared box (it is also
    # several times faster than the default OpenMP threads when the cores are busy).
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=k, random_state=seed, n_init=N_INIT).fit(fit_rows)
    raw_names = name_clusters(km.cluster_centers_)
    order = [raw_names.index(s) for s in SEGMENT_ORDER]  # centre rows in segment order
    centres_z = np.asarray(km.cluster_centers_[order], dtype=float)
    nearest = _nearest(z, centres_z)
    counts = np.bincount(nearest, minlength=k)
    return SegmentModel(
        mean=mean,
        scale=scale,
        centres_z=centres_z,
        names=SEGMENT_ORDER,
        train_sizes=tuple(int(c) for c in counts),
        seed=seed,
        inertia=float(km.inertia_),
    )


def _has_distinct_rows(x: np.ndarray, k: int) -> bool:
    """At least ``k`` distinct rows; a prefix usually answers it (more rows never have fewer distinct ones),
    so a million members need no sort of them all."""
    return any(len(np.unique(x[:n], axis=0)) >= k for n in sorted({min(len(x), 10_000), len(x)}))


def _nearest(z: np.ndarray, centres_z: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean distance; ties to the lower index) of each row."""
    if len(z) == 0:
        return np.zeros(0, dtype=np.int64)
    d = ((z[:, None, :] - centres_z[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d, axis=1)


# ------------------------------------------------------------------------------------------------------------
# Segmenting a dataset (what ``recsys segment`` runs)
# ------------------------------------------------------------------------------------------------------------

CLEAN_MODES: tuple[str, ...] = ("textbook", "none")


@dataclass(frozen=True)
class DatasetSegmentation:
    """The result of :func:`segment_dataset`: the model, the LRFMC rows it was fitted on and where they came
    from."""

    model: SegmentModel
    lrfmc: pd.DataFrame
    source: str  # "member_aggregates", "flights" or "csv"
    members_in: int  # members read
    members_used: int  # members fitted on, after dropping never-flown members and cleaning
    clean: str

    def member_segments(self) -> pd.DataFrame:
        """member_id, L, R, F, M, C and segment of every member the model was fitted on (members left out
        of the fit — never flown, or removed by the cleaning rule — are not listed)."""
        out = self.lrfmc[[Col.MEMBER_ID, *LRFMC_COLUMNS]].reset_index(drop=True)
        return out.assign(segment=self.model.predict(out))

    def to_dict(self) -> dict[str, Any]:
        summary = self.model.summary()
        return {
            "source": self.source,
            "clean": self.clean,
            "seed": self.model.seed,
            "members_in": self.members_in,
            "members_used": self.members_used,
            "segments": [
                {
                    "segment": seg,
                    "size": int(row["size"]),
                    "share": float(row["share"]),
                    "centre": {c: float(row[c]) for c in LRFMC_COLUMNS},
                    "centre_z": {c: float(row[f"z{c}"]) for c in LRFMC_COLUMNS},
                }
                for seg, row in summary.iterrows()
            ],
        }


def segment_dataset(
    path: Path | str, *, seed: int = 0, clean: str = "textbook", as_of: Any = None
) -> DatasetSegmentation:
    """Compute LRFMC for a dataset and fit the five segments on it.

    ``path`` is a dataset directory - LRFMC from its flights when it has any, else from its
    ``member_aggregates`` table (the imported air-data format) - or an air-data CSV file read directly.
    Members with no flight in the observation window carry no LRFMC signal and are left out of the fit
    (profiles label them ``low_value``). ``clean="textbook"`` applies
    :func:`~recsys.features.lrfmc.clean_textbook` (for flights: drops members whose window fares are all zero
    although they flew kilometres - the same rule on ``C``/``M``); ``"none"`` keeps every row.
    """
    if clean not in CLEAN_MODES:
        raise SegmentationError(f"unknown --clean mode {clean!r} (use one of {list(CLEAN_MODES)})")
    root = Path(path)
    if root.is_file() and root.suffix.lower() == ".csv":
        aggregates = read_air_data_csv(root)
        source = "csv"
    elif root.is_dir():
        flights = load_flights(root) if has_table(root, "flights") else None
        if flights is not None and len(flights):
            members = load_members(root)
            lrfmc = lrfmc_from_flights(members, flights, resolve_as_of(root, as_of))
            n_in = len(lrfmc)
            used = lrfmc[lrfmc[LrfmcCol.F] > 0]
            if clean == "textbook":
                used = used[(used[LrfmcCol.C] != 0) | (used[LrfmcCol.M] == 0)]
            return DatasetSegmentation(fit_segments(used, seed=seed), used, "flights", n_in, len(used), clean)
        if not has_table(root, "member_aggregates"):
            raise DatasetError(f"{root}: no flights and no member_aggregates table: nothing to segment")
        aggregates = read_table(root, "member_aggregates")
        source = "member_aggregates"
    else:
        raise DatasetError(f"{root}: not a dataset directory or an air-data .csv file")
    n_in = len(aggregates)
    kept = clean_textbook(aggregates) if clean == "textbook" else aggregates
    lrfmc = lrfmc_from_aggregates(kept)
    used = lrfmc[lrfmc[LrfmcCol.F] > 0]
    return DatasetSegmentation(fit_segments(used, seed=seed), used, source, n_in, len(used), clean)
