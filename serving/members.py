"""The member status body: tier, progress to the next tier, segment and value score."""

from __future__ import annotations

import math
from typing import Any

from recsys.features.profiles import NONE, ProfileCol, tier_progress
from recsys.schema import Tier


def profile_of(record: Any) -> dict[str, Any]:
    """The profile dict of a member-store record (``MemberRecord.profile``), or {} when there is none."""
    if record is None:
        return {}
    profile = getattr(record, "profile", record)
    return profile if isinstance(profile, dict) else {}


def _value(profile: dict[str, Any], name: str) -> Any:
    v = profile.get(name)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def profile_body(member_id: str, record: Any) -> dict[str, Any]:
    """JSON body (``ProfileOut``) from a member-store record; when the published profile lacks the tier
    progress it is derived from the 12-month km/segments and the tier rules."""
    profile = profile_of(record)
    tier = str(_value(profile, ProfileCol.TIER) or Tier.BASIC.value)
    nxt = _value(profile, ProfileCol.NEXT_TIER)
    km_to = _int(_value(profile, ProfileCol.KM_TO_NEXT_TIER))
    seg_to = _int(_value(profile, ProfileCol.SEGMENTS_TO_NEXT_TIER))
    if nxt is None and tier in Tier.__members__.values():
        km12 = _value(profile, ProfileCol.QUALIFYING_KM_12M) or 0
        seg12 = _value(profile, ProfileCol.QUALIFYING_SEGMENTS_12M) or 0
        progress = tier_progress(tier, float(km12), int(seg12))
        nxt, km_to, seg_to = progress.next_tier, progress.km_to_next_tier, progress.segments_to_next_tier
    if nxt is None or nxt == NONE:
        nxt, km_to, seg_to = None, None, None
    value = _value(profile, ProfileCol.VALUE_SCORE)
    segment = _value(profile, ProfileCol.SEGMENT)
    return {
        "member_id": member_id,
        "tier": tier,
        "next_tier": nxt,
        "km_to_next_tier": km_to,
        "segments_to_next_tier": seg_to,
        "segment": None if segment is None else str(segment),
        "value_score": None if value is None else float(value),
        "miles_balance": _int(_value(profile, ProfileCol.MILES_BALANCE)),
    }
