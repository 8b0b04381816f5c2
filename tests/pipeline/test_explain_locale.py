"""Explanations in the request's locale: Simplified Chinese sentences for known facts, locale spellings, the
message table complete for every locale, and the pipeline passing the request's locale through."""

from __future__ import annotations

import string
from datetime import timedelta

import pandas as pd
import pytest

from recsys.pipeline import InvalidRequest, RecommendRequest, TripContext
from recsys.pipeline.catalogue import Catalogue, CatalogueOffer
from recsys.pipeline.explain import ExplainContext, MemberFacts, explain
from recsys.pipeline.messages import (
    CABIN_NAMES,
    MEAL_NAMES,
    MESSAGES,
    SUPPORTED_LOCALES,
    TIER_NAMES,
    normalize_locale,
)
from recsys.stores.member_store import EmbeddedMemberStore

from .fakes import NOW, catalogue_frame, offer
from .test_pipeline import pipeline, profile, request, trip

CITY = {"PEK": "Beijing", "CTU": "Chengdu", "NRT": "Tokyo", "ZQN": "Queenstown"}
ROWS = [
    offer("UP_C", "upsell", "cabin_upgrade", target_cabin="C", eligible_cabins=["W"], window_close_hours=2.0),
    offer("AWARD_NRT", "redemption", "award_flight", destination="NRT", target_cabin="C", price_miles=50_000),
    offer("AWARD_ZQN", "redemption", "award_flight", destination="ZQN", target_cabin="Y", price_miles=40_000),
    offer("HOTEL_CTU", "redemption", "hotel", destination="CTU", price_miles=8_000),
    offer("UPG_MILES", "redemption", "award_upgrade", target_cabin="F", price_miles=30_000),
    offer("MEAL_VGML", "ancillary", "meal", meal="VGML", window_close_hours=24.0),
    offer("MEAL_KSML", "ancillary", "meal", meal="KSML"),
    offer("LOUNGE", "ancillary", "lounge"),
    offer("BAGS", "ancillary", "baggage", window_close_hours=8.0),
    offer("SEAT", "ancillary", "seat"),
    offer("PROMO", "redemption", "miles_promotion"),
    offer("WIFI", "ancillary", "wifi"),
]
CATALOGUE = Catalogue(catalogue_frame(ROWS))
BY_ID: dict[str, CatalogueOffer] = {o.offer_id: o for o in CATALOGUE.offers}

MEMBER = MemberFacts(
    tier="gold",
    miles_balance=52_300,
    known=True,
    home_airport="PEK",
    top_route=("PEK", "CTU"),
    top_route_cabin="C",
    top_route_cabin_flights=4,
    top_route_flights=6,
    top_destination="CTU",
    top_destination_flights=6,
    special_meal="VGML",
    next_tier="platinum",
    km_to_next_tier=12_000,
    cabin_share={"C": 0.4, "W": 0.6},
    bags_per_flight=1.5,
    lounge_share=0.25,
)
# test_pipeline's default trip: PEK-CTU CA4101 in W (fare class G), departing 2026-11-23 18:00 UTC, 30 hours
# after NOW, 3 seats left in C
TRIP = trip()


def why(
    offer_id: str,
    locale: str = "zh-CN",
    *,
    trip: TripContext | None = TRIP,
    member: MemberFacts = MEMBER,
    gap: int = 0,
) -> list[str]:
    ctx = ExplainContext(trip=trip, now=NOW, city=CITY, locale=locale)
    return explain(BY_ID[offer_id], member, ctx, gap)


def test_upgrade_reasons_in_chinese() -> None:
    assert why("UP_C") == [
        "过去12个月您在PEK–CTU航线乘坐公务舱4次",
        "公务舱剩余座位：3",
        "升舱将在28小时后截止",  # 30 h to departure, upgrades close 2 h before
    ]
    # no flights on the route in that cabin: the share of flights in it instead
    other = MemberFacts(tier="silver", miles_balance=0, known=True, cabin_share={"C": 0.4})
    assert why("UP_C", member=other, trip=None) == ["过去两年您40%的航班乘坐公务舱"]


def test_miles_reasons_in_chinese_name_the_city_and_cabin() -> None:
    assert why("AWARD_NRT") == ["您有52,300里程，足够兑换前往东京的公务舱奖励机票"]
    assert why("AWARD_NRT", gap=9_000) == ["您有52,300里程，再积9,000里程即可兑换前往东京的公务舱奖励机票"]
    # no Chinese name for Queenstown: the network's English name with the code
    assert why("AWARD_ZQN") == ["您有52,300里程，足够兑换前往Queenstown（ZQN）的经济舱奖励机票"]
    assert why("HOTEL_CTU") == ["您有52,300里程，足够兑换成都的酒店住宿", "您即将飞往成都"]
    assert why("HOTEL_CTU", trip=None) == ["您有52,300里程，足够兑换成都的酒店住宿", "过去两年您飞往成都6次"]
    assert why("UPG_MILES", trip=None) == ["您有52,300里程，足够兑换头等舱升舱"]


def test_meal_lounge_bags_and_tier_reasons_in_chinese() -> None:
    assert why("MEAL_VGML") == ["您乘机时通常预订素食餐", "餐食预订将在6小时后截止"]
    kosher = MemberFacts(tier="silver", miles_balance=0, known=True, special_meal="KSML")
    assert why("MEAL_KSML", member=kosher, trip=None) == ["您乘机时通常预订犹太餐"]
    assert why("LOUNGE") == ["您25%的航班使用了休息室", "您的航班从北京首都（PEK）出发，该机场设有休息室"]
    far = TripContext(origin="PEK", destination="CTU", departure_time=NOW + timedelta(hours=80))
    assert why("BAGS", trip=far) == ["您平均每次乘机托运1.5件行李", "预付费行李将在3天后截止"]  # 80 - 8 h
    assert why("PROMO", trip=None) == ["距升级白金卡还差12,000公里"]


def test_fallback_reasons_in_chinese() -> None:
    assert why("SEAT") == ["适用于您11月23日的CA4101航班（PEK–CTU）"]
    assert why("WIFI", trip=None) == ["深受金卡会员欢迎"]
    new = MemberFacts.from_profile(None)
    assert why("WIFI", trip=None, member=new) == ["深受与您相似的会员欢迎"]


def test_english_is_unchanged_and_the_default() -> None:
    assert why("UP_C", "en") == [
        "You flew PEK–CTU in Business 4 times in the last 12 months",
        "Seats left in Business: 3",
        "Upgrades close in 28 hours",
    ]
    assert why("SEAT", "en") == ["For your flight CA4101 PEK–CTU on 23 Nov"]
    assert why("AWARD_ZQN", "en-GB") == ["You have 52,300 miles — enough for an Economy award to Queenstown"]
    ctx = ExplainContext(trip=None, now=NOW, city=CITY)
    assert explain(BY_ID["PROMO"], MEMBER, ctx) == ["You are 12,000 km from Platinum status"]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),
        ("en-gb", "en"),
        ("zh", "zh-CN"),
        ("ZH", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-hans", "zh-CN"),
        ("zh-CN", "zh-CN"),
        ("zh-cn", "zh-CN"),
        ("zh_CN", "zh-CN"),
        ("fr", None),
        ("zh-TW", None),
        ("zh-Hant", None),
        ("english", None),
        ("", None),
    ],
)
def test_locale_spellings_normalise(given: str, canonical: str | None) -> None:
    assert normalize_locale(given) == canonical
    if canonical is None:
        with pytest.raises(ValueError, match="locale"):
            ExplainContext(trip=None, now=NOW, locale=given)
        with pytest.raises(InvalidRequest) as e:
            RecommendRequest(member_id="M1", placement="home", now=NOW, locale=given)
        assert e.value.field == "locale"
    else:
        assert ExplainContext(trip=None, now=NOW, locale=given).locale == canonical
        assert RecommendRequest(member_id="M1", placement="home", now=NOW, locale=given).locale == canonical


def _fields(template: str) -> set[str]:
    return {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f}


def test_every_message_and_name_has_every_locale() -> None:
    for msg_id, templates in MESSAGES.items():
        assert set(templates) == set(SUPPORTED_LOCALES), msg_id
        # a translation quotes no fact the English does not have
        assert _fields(templates["zh-CN"]) <= _fields(templates["en"]), msg_id
    for table in (CABIN_NAMES, MEAL_NAMES, TIER_NAMES):
        for key, names in table.items():
            assert set(names) == set(SUPPORTED_LOCALES), key
            assert names["zh-CN"] != names["en"], key


def test_pipeline_writes_the_requests_locale() -> None:
    store = EmbeddedMemberStore()
    store.publish(pd.DataFrame([profile("M1")]), None, "v1")
    res = pipeline(store).recommend(request(locale="zh_CN"))
    reasons = {o.offer_id: o.reasons for o in res.offers}
    assert "过去12个月您在PEK–CTU航线乘坐公务舱4次" in reasons["UP_C"]
    assert "您乘机时通常预订素食餐" in reasons["MEAL_VGML"]
    assert "您有52,300里程，足够兑换前往东京的公务舱奖励机票" in reasons["AWARD_NRT"]
    english = pipeline(store).recommend(request())
    assert "You usually order a vegetarian meal on your flights" in {
        r for o in english.offers for r in o.reasons
    }
