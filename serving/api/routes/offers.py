"""GET /v1/offers: the offer catalogue of the served model (ids, titles in a locale, prices)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from recsys.pipeline.catalogue import CASH_CURRENCY
from recsys.pipeline.messages import ACCEPTED_LOCALES, DEFAULT_LOCALE, normalize_locale
from serving.api.deps import ModelDep
from serving.api.schemas import LOCALE_PATTERN, ErrorResponse, OffersOut
from serving.errors import ApiError
from serving.responses import OrjsonResponse

router = APIRouter(tags=["offers"])

Locale = Annotated[
    str,
    Query(
        max_length=16,
        pattern=LOCALE_PATTERN,
        description="Language of the titles: " + ", ".join(f"`{x}`" for x in ACCEPTED_LOCALES) + ".",
        examples=["en", "zh-CN"],
    ),
]


@router.get(
    "/v1/offers",
    response_model=OffersOut,
    responses={
        422: {"model": ErrorResponse, "description": "Unsupported `locale`."},
        503: {"model": ErrorResponse, "description": "No model (offer catalogue) loaded yet."},
    },
    summary="The offer catalogue: id, title in the locale, category, family, cash price with its currency "
    "and miles price",
)
async def list_offers(model: ModelDep, locale: Locale = DEFAULT_LOCALE) -> Response:
    normalized = normalize_locale(locale)
    if normalized is None:  # the pattern admits only accepted spellings; kept for a clear message
        raise ApiError(
            422, "validation_error", f"unsupported locale {locale!r}", field="locale", location="query"
        )
    pipeline = model.pipeline
    titles = pipeline.titles(normalized)
    offers = [
        {
            "offer_id": o.offer_id,
            "title": titles[o.index],
            "family": o.family,
            "category": o.category,
            "price_cash": o.price_cash,
            "currency": CASH_CURRENCY if o.price_cash is not None else None,
            "price_miles": o.price_miles,
        }
        for o in pipeline.catalogue.offers
    ]
    body = {
        "locale": normalized,
        "model": {"name": model.name, "version": model.version, "alias": model.alias},
        "offers": offers,
    }
    return OrjsonResponse(body)
