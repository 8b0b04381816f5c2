"""Message templates of the explanations, every locale side by side, and the locale names the API accepts.

One table, :data:`MESSAGES`, holds each sentence (or phrase) kind once, keyed by message id, with one
``str.format`` template per supported locale; :func:`message` fills it. Vocabulary the sentences quote
(cabins, meals, card tiers, cities) has its own small per-locale tables here too. Adding a locale means adding
one column to each table (a test checks no template is missing).

Conventions for ``zh-CN``: numbers keep the thousands separator (``52,300里程``), no space between Chinese
text and numbers or codes, full-width punctuation (``，``, ``：``, ``（）``), routes as IATA codes like the
English (``PEK–CTU``), cities by their Chinese name where :data:`CITY_NAMES_ZH` has one, else the network's
English city name with the code (``Vancouver（YVR）``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EN = "en"
ZH_CN = "zh-CN"
SUPPORTED_LOCALES: tuple[str, ...] = (EN, ZH_CN)
DEFAULT_LOCALE = EN

# Accepted spellings (compared case-insensitively, ``_`` read as ``-``) → the canonical locale.
LOCALE_ALIASES: Mapping[str, str] = {
    "en": EN,
    "en-us": EN,
    "en-gb": EN,
    "zh": ZH_CN,
    "zh-hans": ZH_CN,
    "zh-cn": ZH_CN,
}
ACCEPTED_LOCALES: tuple[str, ...] = ("en", "en-US", "en-GB", "zh", "zh-Hans", "zh-CN", "zh_CN")


def normalize_locale(value: str) -> str | None:
    """The canonical locale (``en`` or ``zh-CN``) of an accepted spelling, ``None`` for anything else."""
    if not isinstance(value, str):
        return None
    return LOCALE_ALIASES.get(value.strip().replace("_", "-").lower())


def _t(en: str, zh: str) -> dict[str, str]:
    return {EN: en, ZH_CN: zh}


MESSAGES: Mapping[str, Mapping[str, str]] = {
    # -- full sentences ----------------------------------------------------------------------------------
    "flew_route_in_cabin": _t(
        "You flew {route} in {cabin} {times} in the last 12 months",
        "过去12个月您在{route}航线乘坐{cabin}{times}",
    ),
    "cabin_share": _t(
        "{pct} % of your flights in the last two years were in {cabin}",
        "过去两年您{pct}%的航班乘坐{cabin}",
    ),
    "seats_left": _t("Seats left in {cabin}: {n}", "{cabin}剩余座位：{n}"),
    "miles_short": _t(
        "You have {miles:,} miles — {gap:,} more for {what}",
        "您有{miles:,}里程，再积{gap:,}里程即可兑换{what}",
    ),
    "miles_enough": _t(
        "You have {miles:,} miles — enough for {what}",
        "您有{miles:,}里程，足够兑换{what}",
    ),
    "flying_to": _t("You are flying to {place}", "您即将飞往{place}"),
    "flew_to": _t(
        "You flew to {place} {times} in the last two years",
        "过去两年您飞往{place}{times}",
    ),
    "flew_route": _t(
        "You flew {route} {times} in the last 12 months",
        "过去12个月您飞行{route}航线{times}",
    ),
    "usual_meal": _t("You usually order {meal} on your flights", "您乘机时通常预订{meal}"),
    "bags_per_flight": _t(
        "You check {bags:.1f} bags per flight on average",
        "您平均每次乘机托运{bags:.1f}件行李",
    ),
    "lounge_share": _t(
        "You used a lounge on {pct} % of your flights",
        "您{pct}%的航班使用了休息室",
    ),
    "lounge_at_origin": _t(
        "There is a lounge at {airport}, where your flight departs",
        "您的航班从{airport}出发，该机场设有休息室",
    ),
    "km_to_next_tier": _t(
        "You are {km:,} km from {tier} status",
        "距升级{tier}还差{km:,}公里",
    ),
    "closes.meal": _t("Meal orders close in {t}", "餐食预订将在{t}后截止"),
    "closes.upgrade_bid": _t("Bidding closes in {t}", "竞价升舱将在{t}后截止"),
    "closes.seat": _t("Seat selection closes in {t}", "选座将在{t}后截止"),
    "closes.baggage": _t("Pre-paid baggage closes in {t}", "预付费行李将在{t}后截止"),
    "closes.cabin_upgrade": _t("Upgrades close in {t}", "升舱将在{t}后截止"),
    "closes.award_upgrade": _t("Upgrades with miles close in {t}", "里程升舱将在{t}后截止"),
    "closes.lounge": _t("Lounge passes on sale for {t} more", "休息室通行证还可购买{t}"),
    "closes.wifi": _t("Wi-Fi passes on sale for {t} more", "机上Wi-Fi通行证还可购买{t}"),
    "closes.other": _t("This offer ends in {t}", "此优惠将在{t}后结束"),
    "for_your_flight": _t(
        "For your flight{flight} {route}{on}",
        "适用于您{on}的{flight}航班（{route}）",
    ),
    "popular_with_tier": _t("Popular with {tier} members", "深受{tier}会员欢迎"),
    "popular": _t("Popular with members like you", "深受与您相似的会员欢迎"),
    # -- phrases the sentences embed ---------------------------------------------------------------------
    "flight_number": _t(" {number}", "{number}"),
    "on_date": _t(" on {date:%d %b}", "{date.month}月{date.day}日"),
    "times.1": _t("once", "1次"),
    "times.2": _t("twice", "2次"),
    "times.n": _t("{n} times", "{n}次"),
    "duration.days": _t("{days:.0f} days", "{days:.0f}天"),
    "duration.hour": _t("1 hour", "1小时"),
    "duration.hours": _t("{n} hours", "{n}小时"),
    "award_flight": _t("{article} {cabin} award to {place}", "前往{place}的{cabin}奖励机票"),
    "award_flight_any_cabin": _t("an award to {place}", "前往{place}的奖励机票"),
    "award_upgrade": _t("an upgrade to {cabin}", "{cabin}升舱"),
    "award_upgrade_next_cabin": _t("an upgrade to the next cabin", "升舱至更高舱位"),
    "hotel_in": _t("a hotel stay in {place}", "{place}的酒店住宿"),
    "hotel": _t("a hotel stay", "酒店住宿"),
    "this_offer": _t("this offer", "此优惠"),
    "your_destination": _t("your destination", "您的目的地"),
    "airport_with_code": _t("{place} ({code})", "{place}（{code}）"),
}

CABIN_NAMES: Mapping[str, Mapping[str, str]] = {
    "F": _t("First", "头等舱"),
    "C": _t("Business", "公务舱"),
    "J": _t("Business", "公务舱"),
    "W": _t("Premium Economy", "超级经济舱"),
    "Y": _t("Economy", "经济舱"),
}

MEAL_NAMES: Mapping[str, Mapping[str, str]] = {
    "STD": _t("the standard meal", "标准餐"),
    "SIG": _t("the signature dish", "招牌菜"),
    "VGML": _t("a vegetarian meal", "素食餐"),
    "AVML": _t("an Asian vegetarian meal", "亚洲素食餐"),
    "MOML": _t("a Muslim meal", "穆斯林餐"),
    "KSML": _t("a kosher meal", "犹太餐"),
    "HNML": _t("a Hindu meal", "印度教餐"),
    "DBML": _t("a diabetic meal", "糖尿病餐"),
    "GFML": _t("a gluten-free meal", "无麸质餐"),
    "LSML": _t("a low-salt meal", "低盐餐"),
    "CHML": _t("a child meal", "儿童餐"),
}

# Card tiers (domain.md: Basic 普通卡, Silver 银卡, Gold 金卡, Platinum 白金卡).
TIER_NAMES: Mapping[str, Mapping[str, str]] = {
    "basic": _t("Basic", "普通卡"),
    "silver": _t("Silver", "银卡"),
    "gold": _t("Gold", "金卡"),
    "platinum": _t("Platinum", "白金卡"),
}

# Chinese names of the main airports' cities (two Beijing and two Shanghai airports told apart); any other
# airport reads as the network's English city name with its code.
CITY_NAMES_ZH: Mapping[str, str] = {
    "PEK": "北京首都",
    "PKX": "北京大兴",
    "PVG": "上海浦东",
    "SHA": "上海虹桥",
    "CAN": "广州",
    "SZX": "深圳",
    "CTU": "成都",
    "TFU": "成都天府",
    "CKG": "重庆",
    "XIY": "西安",
    "KMG": "昆明",
    "HGH": "杭州",
    "NKG": "南京",
    "WUH": "武汉",
    "CSX": "长沙",
    "XMN": "厦门",
    "SYX": "三亚",
    "HAK": "海口",
    "LJG": "丽江",
    "TAO": "青岛",
    "DLC": "大连",
    "SHE": "沈阳",
    "HRB": "哈尔滨",
    "URC": "乌鲁木齐",
    "HKG": "香港",
    "MFM": "澳门",
    "TPE": "台北",
    "NRT": "东京",
    "HND": "东京",
    "KIX": "大阪",
    "ICN": "首尔",
    "SIN": "新加坡",
    "BKK": "曼谷",
    "LHR": "伦敦",
    "CDG": "巴黎",
    "FRA": "法兰克福",
    "JFK": "纽约",
    "LAX": "洛杉矶",
    "SFO": "旧金山",
    "SYD": "悉尼",
    "YVR": "温哥华",
    "MEL": "墨尔本",
}


def message(msg_id: str, locale: str, **fields: Any) -> str:
    """The ``msg_id`` template of ``locale`` (canonical; English if the locale has none) filled with
    ``fields``."""
    templates = MESSAGES[msg_id]
    return templates.get(locale, templates[DEFAULT_LOCALE]).format(**fields)


def term(table: Mapping[str, Mapping[str, str]], key: str | None, locale: str, default: str) -> str:
    """``key``'s name in ``locale`` from a vocabulary table (``default`` for an unknown key)."""
    names = table.get(key or "")
    if names is None:
        return default
    return names.get(locale, names[DEFAULT_LOCALE])
