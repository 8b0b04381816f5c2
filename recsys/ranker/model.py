"""The fitted contextual acceptance ranker: a LightGBM binary classifier over :mod:`recsys.ranker.features`,
with a Platt calibration (logistic on the booster's logit) learned on a later, held-out slice of the
training impressions. Platt rather than isotonic: on the 50k world the isotonic map's steps, fitted on ~1,400
purchases, left the held-out expected calibration error higher than the raw booster's; two parameters
cannot overfit that way.

Saved as two files beside the model that carries it (``recsys.models.ranker.RankerRecommender``):
``ranker.lgb.txt`` (LightGBM's own text format) and ``ranker.json`` (feature space, calibration, settings).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recsys.ranker.features import CATEGORICAL_FEATURES, FeatureSpace

logger = logging.getLogger(__name__)

BOOSTER_FILE = "ranker.lgb.txt"
RANKER_FILE = "ranker.json"

# Feature rows (n × features) -> the booster's probabilities (n,).
Predict = Callable[[np.ndarray], np.ndarray]


class RankerConfig(BaseModel):
    """How the contextual ranker is trained (strict: unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: float = Field(
        default=365.0,
        gt=0,
        description="train on the impressions of this many days before the cut-off; the member profiles and "
        "the CF model that give their features are taken as of the window's start, so no training row sees "
        "features built from its own future",
    )
    calibration_share: float = Field(
        default=0.15, gt=0, lt=1, description="the latest share of the window, held out to calibrate"
    )
    num_leaves: int = Field(default=31, ge=2)
    # A year of impressions, slower learning, patient early stopping and clicks as soft positives: each
    # raised the 50k world's test-period purchases (bench/ranker_levers.py; figures in the README).
    learning_rate: float = Field(default=0.05, gt=0)
    max_rounds: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    min_child_samples: int = Field(default=200, ge=1)
    max_bin: int = Field(default=63, ge=4)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    bagging_fraction: float = Field(default=0.7, gt=0, le=1)
    lambda_l2: float = Field(default=1.0, ge=0)
    num_threads: int = Field(
        default=1,
        ge=1,
        description="LightGBM threads; on a busy 2-core machine 2 threads trained 4x slower than 1 "
        "(OpenMP threads spin while waiting for each other)",
    )
    max_rows: int = Field(default=2_000_000, ge=1000, description="training impressions kept (sampled)")
    click_label_weight: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="clicks as an auxiliary label: a clicked impression without a purchase is a soft "
        "positive of this weight (0: purchases only); the calibration map is fitted on purchases alone",
    )
    # 6 recovered more of the taste term than 4, 8 or 16 on two seeds (bench/README.md, issue 16)
    taste_factors: int = Field(
        default=6,
        ge=0,
        le=64,
        description="factors of the destination-taste model in the CF block (recsys.ranker.taste; 0: none)",
    )
    cf_features: bool = Field(
        default=True,
        description="give the ranker the base CF model's scores (the offer's, its destination's flight and "
        "hotel tokens'); off, the same ranker without them (what CF earns, measured side by side)",
    )
    booking_features: bool = Field(
        default=True,
        description="give the ranker the booking's lead time, party size, children and stay (the booking "
        "block of recsys.ranker.features); off, the same ranker without them",
    )


@dataclass
class Platt:
    """``P = σ(a · logit(p) + b)`` of the booster's probability ``p``."""

    a: float
    b: float

    def __call__(self, p: np.ndarray) -> np.ndarray:
        q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
        z = self.a * np.log(q / (1.0 - q)) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    @classmethod
    def fit(cls, p: np.ndarray, labels: np.ndarray) -> Platt:
        from sklearn.linear_model import LogisticRegression

        q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
        lr = LogisticRegression(C=1e4).fit(np.log(q / (1.0 - q))[:, None], labels)
        return cls(float(lr.coef_[0, 0]), float(lr.intercept_[0]))


@dataclass
class ContextRanker:
    """P(purchase | impression, member, offer, context, exposure history): booster, calibration, features."""

    space: FeatureSpace
    booster: Any  # lightgbm.Booster
    calibration: Platt
    info: dict[str, Any] = field(default_factory=dict)
    _predictor: Predict | None = field(default=None, init=False, repr=False)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The booster's (uncalibrated) probabilities of feature rows."""
        if self._predictor is None:
            self._predictor = _predictor(self.booster)
        return np.asarray(self._predictor(x), dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated purchase probabilities of feature rows (columns ``space.names``)."""
        if x.shape[0] == 0:
            return np.zeros(0)
        return self.calibration(self.raw(x))

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / BOOSTER_FILE))
        meta = {
            "space": self.space.to_json(),
            "calibration": {"a": self.calibration.a, "b": self.calibration.b},
            "info": self.info,
        }
        (path / RANKER_FILE).write_text(json.dumps(meta, default=str))

    @classmethod
    def exists(cls, path: Path) -> bool:
        return (path / RANKER_FILE).is_file() and (path / BOOSTER_FILE).is_file()

    @classmethod
    def load(cls, path: Path) -> ContextRanker:
        import lightgbm as lgb

        meta = json.loads((path / RANKER_FILE).read_text())
        booster = lgb.Booster(model_file=str(path / BOOSTER_FILE))
        cal = meta["calibration"]
        space = FeatureSpace.from_json(meta["space"])
        if list(booster.feature_name()) != list(space.names):
            raise ValueError(
                f"{path}: the saved ranker was trained on other features ({booster.num_feature()}) than this "
                f"version builds ({len(space.names)}); retrain it (recsys train --model ranker)"
            )
        ranker = cls(
            space,
            booster,
            Platt(float(cal["a"]), float(cal["b"])),
            dict(meta.get("info") or {}),
        )
        ranker._predictor = _predictor(booster)  # compiled now (at load), not by the first request
        return ranker


def _predictor(booster: Any) -> Predict:
    """``x -> probabilities`` of a booster, single-threaded: its trees compiled to machine code
    (:func:`_compiled`) when that works, else LightGBM's own C entry point (:func:`_lightgbm_predictor`)."""
    return _compiled(booster) or _lightgbm_predictor(booster)


def _compiled(booster: Any) -> Predict | None:
    """The booster compiled by lleaves (LLVM): the same predictions in a quarter of LightGBM's time on a
    request's few rows, since no tree is walked as data (bench/README.md has the figures). Compiling costs a
    few CPU-seconds at load. None when lleaves is missing or cannot compile this model (then LightGBM
    predicts)."""
    import tempfile

    try:
        import lleaves
    except ImportError:  # pragma: no cover - lleaves is a dependency
        return None
    n_features = int(booster.num_feature())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / BOOSTER_FILE
            booster.save_model(str(path))
            model = lleaves.Model(model_file=str(path))
            # No inlining: compiling with it took 7x longer for no faster prediction of a request's rows.
            model.compile(finline=False)
    except Exception:
        logger.warning("lleaves could not compile the ranker; LightGBM predicts instead", exc_info=True)
        return None

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != n_features:
            raise ValueError(f"the ranker needs {n_features} features per row, got shape {x.shape}")
        return np.asarray(model.predict(x, n_jobs=1), dtype=np.float64)

    return predict


def _lightgbm_predictor(booster: Any) -> Predict:
    """``Booster.predict`` builds a predictor and converts its input on every call, about half of a
    request's scoring; LightGBM's own C entry point (``LGBM_BoosterPredictForMat``, what ``predict`` calls)
    on a float32 row-major matrix skips both. Another LightGBM version without it falls back to the public
    call."""
    import ctypes

    try:
        from lightgbm.basic import _LIB, _c_str, _safe_call

        handle = booster._handle
        n_features = int(booster.num_feature())
        params = _c_str("num_threads=1")
        predict_for_mat = _LIB.LGBM_BoosterPredictForMat
    except (ImportError, AttributeError):  # pragma: no cover - other LightGBM versions
        return lambda x: booster.predict(x, num_threads=1)

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != n_features:
            raise ValueError(f"the ranker needs {n_features} features per row, got shape {x.shape}")
        out = np.empty(x.shape[0], dtype=np.float64)
        out_len = ctypes.c_int64(0)
        _safe_call(
            predict_for_mat(
                handle,
                x.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(0),  # C_API_DTYPE_FLOAT32
                ctypes.c_int32(x.shape[0]),
                ctypes.c_int32(n_features),
                ctypes.c_int(1),  # row-major
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration kept
                params,
                ctypes.byref(out_len),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        return out

    return predict


def fit_booster(
    space: FeatureSpace,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_cal: np.ndarray,
    y_cal: np.ndarray,
    cfg: RankerConfig,
    seed: int,
) -> ContextRanker:
    """Fit LightGBM (binary objective, early stopping on the calibration slice) and the Platt map."""
    import lightgbm as lgb

    names = list(space.names)
    cats = [names.index(c) for c in CATEGORICAL_FEATURES]
    soft = bool(((y_train > 0) & (y_train < 1)).any())
    params: Mapping[str, Any] = {
        # soft labels (clicks as partial positives) need the cross-entropy objective; it equals binary on 0/1
        "objective": "cross_entropy" if soft else "binary",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_child_samples": cfg.min_child_samples,
        "max_bin": cfg.max_bin,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": cfg.lambda_l2,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.num_threads,
        "verbosity": -1,
        "max_cat_to_onehot": 8,
        "cat_smooth": 20.0,
    }
    train = lgb.Dataset(x_train, y_train, feature_name=names, categorical_feature=cats, free_raw_data=True)
    valid = lgb.Dataset(x_cal, y_cal, reference=train)
    booster = lgb.train(
        dict(params),
        train,
        num_boost_round=cfg.max_rounds,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    p_cal = np.asarray(booster.predict(x_cal, num_iteration=booster.best_iteration), dtype=np.float64)
    # Keep only the rounds early stopping chose, so predict() needs no num_iteration.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    calibration = Platt.fit(p_cal, y_cal)
    info = {"rounds": int(booster.num_trees()), "features": names}
    return ContextRanker(space, booster, calibration, info)


def fit_logistic(x: np.ndarray, y: np.ndarray, space: FeatureSpace, seed: int) -> Any:
    """The logistic-regression reference on the same rows: categoricals one-hot, numerics imputed and
    standardised (a scikit-learn pipeline; ``predict_proba(x)[:, 1]``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    names = list(space.names)
    cats = [names.index(c) for c in CATEGORICAL_FEATURES]
    nums = [i for i in range(len(names)) if i not in cats]
    pre = ColumnTransformer(
        [
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1.0),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=20),
                ),
                cats,
            ),
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
                nums,
            ),
        ]
    )
    model = make_pipeline(pre, LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    return model.fit(x, y)
