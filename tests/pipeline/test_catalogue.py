"""Precomputing the offers table: nulls, list columns in any form, validation."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from recsys.pipeline.catalogue import Catalogue
from recsys.schema import Col

from .fakes import catalogue_frame, offer


def test_nulls_lists_and_times_are_normalised() -> None:
    df = catalogue_frame(
        [
            offer(
                "A",
                "upsell",
                "cabin_upgrade",
                target_cabin="W",
                eligible_cabins=np.array(["Y"]),
                price_cash=900.0,
                price_miles=0,
                valid_from=pd.Timestamp("2026-01-01"),
                valid_to=pd.NaT,
                placements="booking,post_booking",
            ),
            offer(
                "B",
                "redemption",
                "hotel",
                price_cash=0.0,
                price_miles=8000,
                margin=np.nan,
                eligible_tiers=None,
                blackout_months=np.array([1, 2]),
            ),
        ]
    )
    cat = Catalogue(df)
    a, b = cat[cat.index_of["A"]], cat[cat.index_of["B"]]
    assert a.eligible_cabins == {"Y"} and a.trip_bound and a.is_upgrade
    assert a.price_cash == 900.0 and a.price_miles is None  # 0 miles = not sold for miles
    assert a.valid_from == datetime(2026, 1, 1, tzinfo=UTC) and a.valid_to is None  # naive = UTC
    assert a.placements == {"booking", "post_booking"}
    assert b.price_cash is None and b.price_miles == 8000 and b.margin is None
    assert b.eligible_tiers == frozenset() and b.blackout_months == {1, 2} and not b.trip_bound
    assert cat.allowed_at["home"] == {b.index} and cat.allowed_at["booking"] == {a.index, b.index}
    assert cat.upgrades_by_target["W"] == (a.index,)


def test_invalid_catalogues_are_rejected_naming_the_problem() -> None:
    df = catalogue_frame([offer("A", "upsell", "cabin_upgrade"), offer("A", "upsell", "seat")])
    with pytest.raises(ValueError, match="duplicated offer ids"):
        Catalogue(df)
    with pytest.raises(ValueError, match=Col.WINDOW_CLOSE_HOURS):
        Catalogue(catalogue_frame([offer("A", "upsell", "seat")]).drop(columns=[Col.WINDOW_CLOSE_HOURS]))
