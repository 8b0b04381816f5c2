"""Offer titles in the request's locale.

The catalogue's ``title`` is the offer's English copy, written by whoever authored the offer. Other locales
come from a translation memory keyed by that English copy (:data:`TITLES`), and from patterns for the
titles built from an offer's attributes (award flights, upgrades, special meals), which read the
destination's city, the cabin and the meal from the offer itself in the target language. An offer whose copy
has no translation is shown with its English title: :func:`untranslated` lists those so content editors can
add them here.

Titles depend only on the offer and the locale, so the pipeline builds them once per catalogue
(:func:`catalogue_titles`), not per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from recsys.pipeline.catalogue import CatalogueOffer
from recsys.pipeline.explain import ExplainContext
from recsys.pipeline.messages import EN, MEAL_NAMES, SUPPORTED_LOCALES, ZH_CN, term

# English copy -> title per locale.
TITLES: Mapping[str, Mapping[str, str]] = {
    ZH_CN: {
        "Extra-legroom seat": "加长腿部空间座位",
        "Extra-legroom seat at check-in": "值机时选加长腿部空间座位",
        "Make your fare flexible": "升级为灵活改期票价",
        "Flexible Premium Economy fare": "超级经济舱灵活票价",
        "Upgrade to Premium Economy with miles plus cash": "里程加现金升舱至超级经济舱",
        "Exit-row seat": "紧急出口座位",
        "Choose a window or aisle seat": "选择靠窗或靠过道座位",
        "Seats together for your party": "同行旅客相邻座位",
        "Front-row seat, first off the plane": "前排座位，优先下机",
        "Extra checked bag (23 kg)": "额外托运行李（23公斤）",
        "Two extra checked bags": "两件额外托运行李",
        "Heavy bag upgrade to 32 kg": "托运行李升级至32公斤",
        "Sports equipment": "运动器材托运",
        "Pre-order a signature dish (Business)": "预订招牌菜（公务舱）",
        "Chef's signature menu (First)": "主厨招牌菜单（头等舱）",
        "Premium meal in Economy": "经济舱优选餐食",
        "Lounge pass": "贵宾休息室单次通行",
        "Lounge pass with shower and spa": "贵宾休息室通行（含淋浴及水疗）",
        "Your lounge is open: complimentary access": "您的贵宾休息室已开放：免费使用",
        "In-flight Wi-Fi, 1 hour": "机上Wi-Fi（1小时）",
        "In-flight Wi-Fi, whole flight": "机上Wi-Fi（全程）",
        "Priority boarding": "优先登机",
        "Fast-track security": "快速安检通道",
        "Chauffeur to the airport": "专车送机",
        "Chauffeur pick-up at arrival": "到达专车接机",
        "Transit hotel near the airport": "机场附近中转酒店",
        "Travel insurance": "旅行保险",
        "Cancellation cover": "行程取消保障",
        "Travel adapter and amenity kit": "旅行转换插头及洗漱包",
        "Model aircraft": "飞机模型",
        "Carry-on suitcase": "登机行李箱",
        "Donate miles to charity": "捐赠里程做公益",
        "Share miles with family": "与家人共享里程",
        "Double miles on flights from Beijing": "北京出发航班双倍里程",
        "Double miles on Chengdu flights": "成都航班双倍里程",
        "Bonus miles on Shanghai routes": "上海航线奖励里程",
        "Discounted award seats, autumn": "秋季奖励机票折扣",
    },
}

_CABIN = r"(?P<cabin>[FCJWY])"
# Titles built from attributes: the pattern on the English copy, then a template per locale whose fields are
# ``city`` (the offer's destination), ``cabin`` (captured code) and ``meal`` (the offer's meal code).
PATTERNS: tuple[tuple[re.Pattern[str], Mapping[str, str]], ...] = (
    (
        re.compile(rf"^Fly to (?P<place>.+) with miles \({_CABIN}\)$"),
        {EN: "Fly to {place} with miles ({cabin})", ZH_CN: "里程兑换{city}机票（{cabin}）"},
    ),
    (
        re.compile(r"^Partner hotel in (?P<place>.+), two nights$"),
        {EN: "Partner hotel in {place}, two nights", ZH_CN: "{city}合作酒店两晚"},
    ),
    (
        re.compile(r"^Resort stay in (?P<place>.+), three nights$"),
        {EN: "Resort stay in {place}, three nights", ZH_CN: "{city}度假村三晚"},
    ),
    (
        re.compile(rf"^Upgrade to {_CABIN} cabin with miles$"),
        {EN: "Upgrade to {cabin} with miles", ZH_CN: "里程升舱至{cabin}"},
    ),
    (
        re.compile(rf"^Last-minute upgrade to {_CABIN} cabin$"),
        {EN: "Last-minute upgrade to {cabin}", ZH_CN: "临时升舱至{cabin}"},
    ),
    (
        re.compile(rf"^Bid for an upgrade to {_CABIN} cabin$"),
        {EN: "Bid for an upgrade to {cabin}", ZH_CN: "竞价升舱至{cabin}"},
    ),
    (re.compile(rf"^Upgrade to {_CABIN} cabin$"), {EN: "Upgrade to {cabin}", ZH_CN: "升舱至{cabin}"}),
    (re.compile(r"^Request a special meal \((?P<meal>[A-Z]{4})\)$"), {ZH_CN: "申请特殊餐食：{meal}"}),
)


def localized_title(offer: CatalogueOffer, ctx: ExplainContext) -> str | None:
    """``offer``'s title in ``ctx.locale``; ``None`` when neither the memory nor a pattern translates it.
    English titles are the catalogue's copy, except that cabin codes in it are named in words."""
    memory = TITLES.get(ctx.locale, {})
    if offer.title in memory:
        return memory[offer.title]
    for pattern, templates in PATTERNS:
        m = pattern.match(offer.title)
        if m is None:
            continue
        if ctx.locale not in templates:
            break
        groups = m.groupdict()
        return templates[ctx.locale].format(
            place=groups.get("place") or "",
            city=ctx.place(offer.destination),
            cabin=ctx.cabin(groups.get("cabin")),
            meal=term(MEAL_NAMES, groups.get("meal") or offer.meal, ctx.locale, offer.meal or ""),
        )
    return offer.title if ctx.locale == EN else None


def catalogue_titles(
    offers: Iterable[CatalogueOffer],
    city: Mapping[str, str] | None = None,
    locales: Iterable[str] = SUPPORTED_LOCALES,
) -> dict[str, list[str]]:
    """Per locale, every offer's title by catalogue index (the English copy where there is no translation).
    ``city`` is the network's English city name per airport code."""
    offers = list(offers)
    out: dict[str, list[str]] = {}
    for locale in locales:
        ctx = ExplainContext(trip=None, now=datetime.now(UTC), city=city or {}, locale=locale)
        out[ctx.locale] = [localized_title(o, ctx) or o.title for o in offers]
    return out


def untranslated(
    offers: Iterable[CatalogueOffer], locale: str, city: Mapping[str, str] | None = None
) -> list[str]:
    """Offer ids whose title has no ``locale`` translation (shown in English until one is added)."""
    ctx = ExplainContext(trip=None, now=datetime.now(UTC), city=city or {}, locale=locale)
    return [o.offer_id for o in offers if localized_title(o, ctx) is None]
