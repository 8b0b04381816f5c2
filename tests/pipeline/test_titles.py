"""Offer titles per locale: the translation memory, titles built from an offer's attributes, the English
fallback for copy nobody translated, and the generated world's catalogue translated in full."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsys.data.layout import read_table
from recsys.pipeline.catalogue import Catalogue
from recsys.pipeline.messages import CABIN_NAMES, CITY_NAMES_ZH, MEAL_NAMES, ZH_CN
from recsys.pipeline.titles import TITLES, catalogue_titles, untranslated

from .fakes import catalogue_frame, offer

CJK = re.compile(r"[\u4e00-\u9fff]")
CITY = {"NRT": "Tokyo", "ZQN": "Queenstown"}


def catalogue(*rows: dict[str, object]) -> Catalogue:
    return Catalogue(catalogue_frame(list(rows)))


def titles(cat: Catalogue, locale: str = ZH_CN) -> dict[str, str]:
    by_locale = catalogue_titles(cat.offers, CITY)
    return {o.offer_id: by_locale[locale][o.index] for o in cat.offers}


def test_memory_translates_the_english_copy_and_english_stays_the_copy() -> None:
    cat = catalogue(
        offer("FAST", "ancillary", "fast_track", title="Fast-track security"),
        offer("LNG", "ancillary", "lounge", title="Lounge pass"),
    )
    assert titles(cat) == {"FAST": "快速安检通道", "LNG": "贵宾休息室单次通行"}
    assert titles(cat, "en") == {"FAST": "Fast-track security", "LNG": "Lounge pass"}


def test_pattern_titles_read_city_cabin_and_meal_from_the_offer() -> None:
    cat = catalogue(
        offer("AW_NRT", "redemption", "award_flight", destination="NRT", title="Fly to Tokyo with miles (C)"),
        offer(
            "AW_ZQN",
            "redemption",
            "award_flight",
            destination="ZQN",
            title="Fly to Queenstown with miles (Y)",
        ),
        offer("UP_W", "upsell", "cabin_upgrade", target_cabin="W", title="Upgrade to W cabin"),
        offer("BID_F", "upsell", "upgrade_bid", target_cabin="F", title="Bid for an upgrade to F cabin"),
        offer("MEAL", "ancillary", "meal", meal="KSML", title="Request a special meal (KSML)"),
    )
    zh = titles(cat)
    assert CITY_NAMES_ZH["NRT"] in zh["AW_NRT"] and CABIN_NAMES["C"][ZH_CN] in zh["AW_NRT"]
    # a city without a Chinese name: the network's English name with the code, as in the reasons
    assert "Queenstown（ZQN）" in zh["AW_ZQN"] and CABIN_NAMES["Y"][ZH_CN] in zh["AW_ZQN"]
    assert zh["UP_W"].endswith(CABIN_NAMES["W"][ZH_CN]) and zh["BID_F"].endswith(CABIN_NAMES["F"][ZH_CN])
    assert zh["UP_W"] != zh["BID_F"].replace(CABIN_NAMES["F"][ZH_CN], CABIN_NAMES["W"][ZH_CN])
    assert MEAL_NAMES["KSML"][ZH_CN] in zh["MEAL"]


def test_copy_without_a_translation_falls_back_to_english_and_is_listed() -> None:
    cat = catalogue(
        offer("NEW", "ancillary", "seat", title="Sleeper row in Economy"),
        offer("OLD", "ancillary", "priority_boarding", title="Priority boarding"),
    )
    assert titles(cat)["NEW"] == "Sleeper row in Economy"
    assert untranslated(cat.offers, ZH_CN, CITY) == ["NEW"]
    assert untranslated(cat.offers, "en", CITY) == []


def test_unknown_locale_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported locale"):
        catalogue_titles([], CITY, locales=["fr"])


def test_every_title_of_the_generated_catalogue_has_a_chinese_title(small_world: Path) -> None:
    from recsys.data.network import CITY as CITY_COL
    from recsys.data.network import IATA, load_network

    net = load_network()
    city = {str(c): str(n) for c, n in zip(net.airports[IATA], net.airports[CITY_COL], strict=True)}
    cat = Catalogue(read_table(small_world, "offers"))
    assert untranslated(cat.offers, ZH_CN, city) == []
    zh = catalogue_titles(cat.offers, city)[ZH_CN]
    assert all(CJK.search(t) for t in zh)
    assert len(set(zh)) == len(set(o.title for o in cat.offers)), "distinct English copy stays distinct"


def test_memory_has_no_entry_twice_under_another_spelling() -> None:
    memory = TITLES[ZH_CN]
    assert len({k.casefold().strip() for k in memory}) == len(memory)


def test_cabins_are_named_in_words_in_both_locales(small_world: Path) -> None:
    cat = Catalogue(read_table(small_world, "offers"))
    by_locale = catalogue_titles(cat.offers, {})
    code = re.compile(r"\b[FCJWY]\b(?! cabin)|\b[FCJWY] cabin\b|\([FCJWY]\)")
    for locale in ("en", ZH_CN):
        coded = [t for t in by_locale[locale] if code.search(t)]
        assert coded == [], (locale, coded)
    en = dict(zip((o.offer_id for o in cat.offers), by_locale["en"], strict=True))
    assert en["UP-CAB-Y2W-01"] == "Upgrade to Premium Economy"
    assert en["UP-BID-C2F-01"] == "Bid for an upgrade to First"
