"""Expected value and the diversity re-rank."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.diversity import CATEGORY_LIMIT, FAMILY_LIMIT, diversify
from recsys.pipeline.value import expected_values, offer_values, rank_by_value

from .fakes import catalogue_frame, offer


def test_offer_values_use_margin_and_price_miles_only_when_margin_is_missing() -> None:
    cat = Catalogue(
        catalogue_frame(
            [
                offer("CASH", "upsell", "cabin_upgrade", price_cash=900.0, margin=630.0),
                offer("AWARD", "redemption", "award_flight", price_miles=40_000, margin=160.0),
                offer("AWARD_NOMARGIN", "redemption", "award_flight", price_miles=40_000, margin=np.nan),
                offer("CASH_NOMARGIN", "ancillary", "wifi", price_cash=40.0, margin=np.nan),
                offer("NEG", "ancillary", "wifi", price_cash=40.0, margin=-5.0),
            ]
        )
    )
    v = offer_values(cat, miles_liability_cost_cny=0.01)
    assert v.tolist() == pytest.approx([630.0, 160.0, 400.0, 0.0, 0.0])


def test_expected_value_orders_by_probability_times_margin_not_probability_alone() -> None:
    values = np.array([100.0, 1000.0, 50.0])
    probs = np.array([0.30, 0.05, 0.90])  # EV 30, 50, 45
    ev = expected_values([0, 1, 2], probs, values)
    assert list(ev) == pytest.approx([30.0, 50.0, 45.0])
    assert list(rank_by_value(ev, probs)) == [1, 2, 0]


def test_close_offers_are_discounted_and_ties_break_on_score() -> None:
    values = np.array([100.0, 100.0])
    ev = expected_values([0, 1], np.array([0.5, 0.5]), values, close={1: 2000}, close_value_factor=0.5)
    assert list(ev) == pytest.approx([50.0, 25.0])
    tie = np.array([10.0, 10.0, 10.0])
    assert list(rank_by_value(tie, np.array([0.1, 0.3, 0.2]))) == [1, 2, 0]


def test_at_most_n_per_category() -> None:
    fams = ["ancillary"] * 4 + ["upsell"]
    cats = ["seat", "seat", "seat", "meal", "cabin_upgrade"]
    ev = [10.0, 9.0, 8.0, 7.0, 1.0]
    res = diversify(fams, cats, ev, max_per_category=2, family_repeat_penalty=1.0)
    assert res.order == [0, 1, 3, 4]
    assert [(p, r) for p, r, _ in res.dropped] == [(2, CATEGORY_LIMIT)]


def test_families_are_mixed_unless_one_is_worth_much_more() -> None:
    fams = ["ancillary", "ancillary", "ancillary", "redemption"]
    cats = ["seat", "meal", "baggage", "award_flight"]
    # the redemption is worth a bit less than the 2nd ancillary: mixing brings it forward
    res = diversify(fams, cats, [10.0, 9.0, 8.0, 8.5], max_per_category=5, family_repeat_penalty=0.8)
    assert res.order == [0, 3, 1, 2]
    # no mixing: pure expected-value order
    res = diversify(fams, cats, [10.0, 9.0, 8.0, 8.5], max_per_category=5, family_repeat_penalty=1.0)
    assert res.order == [0, 1, 3, 2]
    # much less valuable: stays behind
    res = diversify(fams, cats, [10.0, 9.0, 8.0, 1.0], max_per_category=5, family_repeat_penalty=0.8)
    assert res.order == [0, 1, 2, 3]


def test_family_limit() -> None:
    fams = ["upsell", "upsell", "upsell", "ancillary"]
    cats = ["cabin_upgrade", "upgrade_bid", "extra_legroom", "meal"]
    res = diversify(
        fams, cats, [4.0, 3.0, 2.0, 1.0], max_per_category=3, max_per_family=2, family_repeat_penalty=1.0
    )
    assert res.order == [0, 1, 3]
    assert [(p, r) for p, r, _ in res.dropped] == [(2, FAMILY_LIMIT)]


def test_empty_input() -> None:
    assert diversify([], [], [], max_per_category=2).order == []
