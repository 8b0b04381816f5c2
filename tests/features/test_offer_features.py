"""Offer features: documented bands, cabin and region rules, vocabularies, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data.layout import read_table
from recsys.features.offers import (
    MILES_BANDS,
    MILES_NONE,
    OFFER_FEATURE_COLUMNS,
    OFFER_VOCABULARIES,
    PRICE_BANDS,
    PRICE_NONE,
    OfferFeatureCol,
    OfferFeatureError,
    band,
    build_offer_features,
)
from recsys.schema import Col


def test_price_bands_are_lower_inclusive() -> None:
    values = [np.nan, 0, 1, 99.99, 100, 299, 300, 999, 1_000, 2_999, 3_000, 50_000]
    expected = [
        PRICE_NONE,
        PRICE_NONE,
        "cash_lt_100",
        "cash_lt_100",
        "cash_100_300",
        "cash_100_300",
        "cash_300_1k",
        "cash_300_1k",
        "cash_1k_3k",
        "cash_1k_3k",
        "cash_3k_plus",
        "cash_3k_plus",
    ]
    assert band(values, PRICE_BANDS, PRICE_NONE).tolist() == expected


def test_miles_bands() -> None:
    got = band([0, 4_999, 5_000, 15_000, 39_999, 40_000, 80_000], MILES_BANDS, MILES_NONE).tolist()
    assert got == [
        MILES_NONE,
        "miles_lt_5k",
        "miles_5k_15k",
        "miles_15k_40k",
        "miles_15k_40k",
        "miles_40k_80k",
        "miles_80k_plus",
    ]


def test_cabin_and_region_rules() -> None:
    offers = pd.DataFrame(
        {
            Col.OFFER_ID: ["up", "meal", "award", "wifi"],
            Col.FAMILY: ["upsell", "ancillary", "redemption", "ancillary"],
            Col.CATEGORY: ["cabin_upgrade", "meal", "award_flight", "wifi"],
            Col.TARGET_CABIN: ["C", None, None, ""],
            Col.ELIGIBLE_CABINS: [["W"], ["C"], ["Y", "W"], None],
            Col.REGION: [None, "domestic", "europe", None],
            Col.PRICE_CASH: [1_200.0, 80.0, None, 30.0],
            Col.PRICE_MILES: [None, 0, 45_000, None],
        }
    )
    out = build_offer_features(offers).set_index(OfferFeatureCol.OFFER_ID)
    assert list(build_offer_features(offers).columns) == list(OFFER_FEATURE_COLUMNS)
    # the target cabin wins; else a single eligible cabin; else any
    assert out[OfferFeatureCol.CABIN].to_dict() == {"up": "C", "meal": "C", "award": "any", "wifi": "any"}
    assert out[OfferFeatureCol.ROUTE_REGION].to_dict() == {
        "up": "any",
        "meal": "domestic",
        "award": "europe",
        "wifi": "any",
    }
    assert out.loc["award", OfferFeatureCol.PRICE_BAND] == PRICE_NONE
    assert out.loc["award", OfferFeatureCol.MILES_BAND] == "miles_40k_80k"
    assert out.loc["up", OfferFeatureCol.PRICE_BAND] == "cash_1k_3k"


def test_bad_offers_are_named() -> None:
    with pytest.raises(OfferFeatureError, match="missing column"):
        build_offer_features(pd.DataFrame({Col.OFFER_ID: ["a"]}))
    dup = pd.DataFrame({Col.OFFER_ID: ["a", "a"], Col.FAMILY: ["upsell"] * 2, Col.CATEGORY: ["seat"] * 2})
    with pytest.raises(OfferFeatureError, match="duplicated offer id 'a'"):
        build_offer_features(dup)
    neg = pd.DataFrame(
        {Col.OFFER_ID: ["a"], Col.FAMILY: ["upsell"], Col.CATEGORY: ["seat"], Col.PRICE_CASH: [-5]}
    )
    with pytest.raises(OfferFeatureError, match="negative price"):
        build_offer_features(neg)


def test_generated_catalogue_stays_in_the_vocabularies(features_world: Path) -> None:
    offers = read_table(features_world, "offers")
    out = build_offer_features(offers)
    assert len(out) == len(offers) and not out.isna().any().any()
    for col, vocab in OFFER_VOCABULARIES.items():
        assert set(out[col]) <= set(vocab), (col, set(out[col]) - set(vocab))
    assert out[OfferFeatureCol.FAMILY].nunique() == 3
