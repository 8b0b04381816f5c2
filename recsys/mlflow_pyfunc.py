"""The MLflow pyfunc wrapper of a :class:`~recsys.models.bundle.ModelBundle`.

Logged by :func:`recsys.registry.publish` with the saved bundle directory as the artefact ``bundle`` (the
model, its id maps, the faiss index and the feature configuration all live in it), so that::

    model = mlflow.pyfunc.load_model("models:/loyalty-offers@champion")
    model.predict(pd.DataFrame({"member_id": ["M0000001", "M0000002"]}))           # top 10 each
    model.predict(pd.DataFrame({"member_id": ["M0000001"], "k": [5]}))              # k as a column
    model.predict(pd.DataFrame({"member_id": ["M0000001"]}), params={"k": 5})       # or as a parameter

returns the same ranking as ``bundle.recommend(member_ids, k)``: columns member_id, offer_id, score, rank.
The environment that loads it needs this project's package (``loyalty-offers``) installed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from recsys.schema import Col

BUNDLE_ARTIFACT = "bundle"
DEFAULT_K = 10
K = "k"

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", Col.MEMBER_ID), ColSpec("long", K, required=False)]),
    outputs=Schema(
        [
            ColSpec("string", Col.MEMBER_ID),
            ColSpec("string", Col.OFFER_ID),
            ColSpec("double", "score"),
            ColSpec("long", "rank"),
        ]
    ),
    params=ParamSchema([ParamSpec(K, "long", DEFAULT_K), ParamSpec("exclude_purchased", "boolean", False)]),
)


class RecsysPyfuncModel(PythonModel):
    """Loads the bundle in :meth:`load_context`; :meth:`predict` ranks offers for member ids."""

    def __init__(self) -> None:
        self.bundle: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        from recsys.models.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context, model_input, params=None):  # no annotations: MLflow would validate by them
        """Top-k offers per member: ``model_input`` has ``member_id`` (and optionally ``k``)."""
        if self.bundle is None:
            raise RuntimeError("the model bundle is not loaded (load_context was not called)")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if Col.MEMBER_ID not in frame.columns:
            raise ValueError(f"input needs a '{Col.MEMBER_ID}' column; got {list(frame.columns)}")
        params = params or {}
        k = int(params.get(K) or DEFAULT_K)
        if K in frame.columns and frame[K].notna().any():
            k = int(frame[K].dropna().iloc[0])
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        members = pd.unique(frame[Col.MEMBER_ID].astype(str))
        recs = self.bundle.recommend(
            list(members), k=k, exclude_purchased=bool(params.get("exclude_purchased", False))
        )
        return recs[[Col.MEMBER_ID, Col.OFFER_ID, "score", "rank"]].reset_index(drop=True)
