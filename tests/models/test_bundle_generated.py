"""The served artefact end to end on the generated world (session fixture ``small_world``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.layout import read_manifest, read_table
from recsys.models.bundle import ModelBundle
from recsys.schema import Col


@pytest.mark.slow
def test_hybrid_bundle_on_the_generated_world(small_world: Path, tmp_path: Path):
    as_of = pd.Timestamp(read_manifest(small_world)["as_of"])
    before = (as_of - pd.Timedelta(days=90)).to_pydatetime()
    parts = {"als": {"factors": 16, "iterations": 5}, "lightfm": {"no_components": 8, "epochs": 3}}
    config = {"model": parts}
    bundle = ModelBundle.train(small_world, "hybrid", config, before=before, seed=1)
    assert bundle.params["groups"] == "tier,miles_band"
    # member profiles (segments) came from recsys.features, not the tier fallback
    assert ModelBundle.train(small_world, "popularity", before=before, seed=1).params["groups"] == "segment"
    assert bundle.info["stats"]["calibration_known"] == "offer_logistic"
    members = read_table(small_world, "members", [Col.MEMBER_ID])[Col.MEMBER_ID].tolist()[:200]
    recs = bundle.recommend([*members, "NOT-A-MEMBER"], k=10)
    assert recs.groupby(Col.MEMBER_ID).size().eq(10).all() and recs[Col.MEMBER_ID].nunique() == 201
    assert set(recs[Col.OFFER_ID]) <= set(bundle.offers[Col.OFFER_ID])
    offers = bundle.offers[Col.OFFER_ID].tolist()
    p = bundle.acceptance_probability(members[0], offers)
    assert ((p > 0) & (p < 1)).all()
    bundle.save(tmp_path / "b")
    loaded = ModelBundle.load(tmp_path / "b")
    pd.testing.assert_frame_equal(loaded.recommend(members, k=10), bundle.recommend(members, k=10))
    np.testing.assert_array_equal(loaded.acceptance_probability(members[0], offers), p)
