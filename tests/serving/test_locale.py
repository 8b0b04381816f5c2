"""The recommend API's `locale`: Chinese reasons end to end, accepted spellings, 422 naming `locale`."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recsys.pipeline.messages import CABIN_NAMES
from tests.serving.test_api import error_fields, rec_body

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_zh_cn_request_gets_chinese_reasons(client: TestClient, world_members: list[str]) -> None:
    member = world_members[0]
    resp = client.post("/v1/recommendations", json=rec_body(member, locale="zh-CN"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["locale"] == "zh-CN" and body["cold_start"] is False
    reasons = [r for o in body["offers"] for r in o["reasons"]]
    assert body["offers"] and all(o["reasons"] for o in body["offers"])
    assert all(CJK.search(r) for r in reasons), reasons
    assert all(CJK.search(o["title"]) for o in body["offers"]), [o["title"] for o in body["offers"]]
    english = client.post("/v1/recommendations", json=rec_body(member)).json()
    assert english["locale"] == "en"
    assert not any(CJK.search(r) for o in english["offers"] for r in o["reasons"])


def test_titles_follow_the_locale_and_english_is_the_catalogue_copy(
    client: TestClient, world_members: list[str], world_offers: Any
) -> None:
    copy = dict(zip(world_offers["offer_id"], world_offers["title"], strict=True))
    for member in world_members[3:6]:
        for locale in ("en", "zh-CN"):
            offers = client.post("/v1/recommendations", json=rec_body(member, locale=locale)).json()["offers"]
            assert offers
            for o in offers:
                if locale == "en":  # the catalogue's copy, with cabin codes named in words
                    assert o["title"] == re.sub(
                        r"\b([FCWY]) cabin\b|\(([FCWY])\)",
                        lambda m: CABIN_NAMES[m[1]]["en"] if m[1] else f"({CABIN_NAMES[m[2]]['en']})",
                        copy[o["offer_id"]],
                    )
                else:
                    assert CJK.search(o["title"]) and o["title"] != copy[o["offer_id"]], o


@pytest.mark.parametrize(("given", "canonical"), [("zh_CN", "zh-CN"), ("ZH-hans", "zh-CN"), ("en-GB", "en")])
def test_locale_spellings_are_normalised(
    client: TestClient, world_members: list[str], given: str, canonical: str
) -> None:
    resp = client.post("/v1/recommendations", json=rec_body(world_members[1], locale=given))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["locale"] == canonical
    chinese = any(CJK.search(r) for o in body["offers"] for r in o["reasons"])
    assert chinese == (canonical == "zh-CN")


@pytest.mark.parametrize("given", ["fr", "zh-TW", "zh-Hant", "", "x" * 40, 7, None])
def test_unknown_locale_is_a_422_naming_locale(
    client: TestClient, world_members: list[str], given: Any
) -> None:
    resp = client.post("/v1/recommendations", json=rec_body(world_members[2], locale=given))
    assert resp.status_code == 422, resp.text
    assert error_fields(resp) == ["locale"]
    if isinstance(given, str) and len(given) < 10:
        assert "en, en-US, en-GB, zh, zh-Hans, zh-CN, zh_CN" in resp.json()["error"]["message"]


def test_openapi_documents_the_locales(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    locale = schemas["RecommendationRequest"]["properties"]["locale"]
    assert locale["default"] == "en"
    assert "zh-CN" in locale["description"] and "zh-Hans" in locale["description"]
    pattern = re.compile(locale["pattern"])
    assert all(pattern.match(x) for x in ("en", "en-US", "zh", "zh-Hans", "zh_CN", "ZH-cn"))
    assert not any(pattern.match(x) for x in ("fr", "zh-TW", "english"))
    assert "locale" in schemas["RecommendationResponse"]["required"]
