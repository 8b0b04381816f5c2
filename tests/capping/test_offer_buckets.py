"""Per-offer rolling caps store one field per time bucket listing the offer codes shown in it (not one field
per offer); hashes of the previous layout (one rolling field per offer) are read and moved on the first write.

Expected fields are written out here from the layout's definition (bucket numbers from the epoch in base 36,
4-character offer codes sorted, a count above 1 before its code in base 26 with A = 0), not taken from the
code under test."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis

from recsys.capping.api import CapCandidate, CapEnforcer, CapMember, CapState, PolicyHolder, build_enforcer
from recsys.capping.engine import Writes, cap_codes, offer_code
from tests.capping.conftest import REDIS_URL, make_policy

MakeEnforcer = Callable[..., CapEnforcer]

POLICY = make_policy(
    "count_on: event\ncaps: [{name: offer_weekly, scope: member_offer, limit: 3, window: 7d}]"
)
HOUR = 3_600_000
SIZE = 7 * HOUR  # a 7-day window's bucket: a 24th of it
EPOCH_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
M = CapMember("M0000001", "basic", "UTC")
S1 = CapCandidate("S1", "ancillary", "seat")
S2 = CapCandidate("S2", "ancillary", "meal")


def b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + out
        if n == 0:
            return out


def bucket_field(t: datetime) -> str:
    """The bucket field of ``t`` for POLICY's cap: <cap code>7d|@<bucket since 2026-01-01, base 36>."""
    bucket = int(t.timestamp() * 1000) // SIZE - EPOCH_MS // SIZE
    return f"{cap_codes(POLICY)['offer_weekly']}7d|@{b36(bucket)}"


def fields_of(e: CapEnforcer, member: CapMember = M) -> dict[str, str]:
    store = e.inner.store  # type: ignore[attr-defined]
    key = store.key(member.member_id)
    return {f: v for f, v in store.read(key).fields.items() if f != "v"}


# A bucket start: 7 h buckets are counted from 1970, so 2026-01-01 falls in bucket 70,128 (which started
# 2025-12-31 20:00Z); 2026-06-04 07:00Z starts bucket 70,657, the 529th after it.
T0 = datetime(2026, 6, 4, 7, 0, tzinfo=UTC)


def test_impressions_of_one_bucket_share_one_field(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(POLICY)
    assert bucket_field(T0).endswith("|@ep")  # 529 = 14 * 36 + 25
    for t, offer in ((0, S1), (1, S2), (2, S1)):
        e.record_event(M, offer, "impression", "home", T0 + timedelta(hours=t))
    c1, c2 = offer_code("S1"), offer_code("S2")
    # sorted codes, S1's preceded by its 2 impressions in base 26 ("C")
    first = "".join(sorted([f"C{c1}", c2], key=lambda t: t[-4:]))
    assert fields_of(e) == {bucket_field(T0): first}
    # 7 hours later: the next bucket's field
    e.record_event(M, S2, "impression", "home", T0 + timedelta(hours=7))
    assert fields_of(e) == {bucket_field(T0): first, bucket_field(T0 + timedelta(hours=7)): c2}
    # S1 twice, S2 twice: one more of each fits under 3, a second S1 does not
    d = e.select_and_record(M, [S1, S2, S1], 3, "home", T0 + timedelta(hours=8), record=False)
    assert d.selected == ["S1", "S2"]


def test_the_cap_holds_until_the_bucket_leaves_the_window(make_enforcer: MakeEnforcer) -> None:
    e = make_enforcer(POLICY)
    for h in range(3):
        e.record_event(M, S1, "impression", "home", T0 + timedelta(hours=h))
    week = timedelta(days=7)
    # The bucket (07:00-14:00) counts until its end plus 7 days.
    blocked = e.select_and_record(M, [S1], 1, "home", T0 + week + timedelta(hours=6, minutes=59))
    assert blocked.selected == [] and blocked.suppressed[0].reason == "cap:member_offer:rolling_7d"
    assert e.select_and_record(M, [S1], 1, "home", T0 + week + timedelta(hours=7)).selected == ["S1"]
    e.record_event(M, S1, "impression", "home", T0 + week + timedelta(hours=7))
    # The expired bucket's field is gone, the new impression has its own.
    assert fields_of(e) == {bucket_field(T0 + week + timedelta(hours=7)): offer_code("S1")}


def test_a_crowded_bucket_spreads_over_fields_of_60_characters(
    key_prefix: str, redis_client: redis.Redis
) -> None:
    e = build_enforcer(REDIS_URL, POLICY, key_prefix=key_prefix, timeout_ms=2000)
    offers = [CapCandidate(f"X{i}", "ancillary", "seat") for i in range(20)]
    for i, o in enumerate(offers):
        e.record_event(M, o, "impression", "home", T0 + timedelta(minutes=i))
    codes = "".join(sorted(offer_code(o.offer_id) for o in offers))
    head = bucket_field(T0)
    assert fields_of(e) == {head: codes[:60], f"{head}.1": codes[60:]}
    # Redis keeps the hash a listpack (no value above hash-max-listpack-value, 64 bytes by default)
    assert redis_client.object("encoding", e.state_key(M.member_id)) == b"listpack"
    # every offer counted once
    d = e.select_and_record(M, offers, 20, "home", T0 + timedelta(hours=1), record=False)
    assert d.selected == [o.offer_id for o in offers]


def _old_layout(e: CapEnforcer, fields: dict[str, str]) -> None:
    """Write a hash as the previous layout did: one rolling field per offer (``<first bucket>;<counts>``)."""
    store = e.inner.store  # type: ignore[attr-defined]
    key = store.key(M.member_id)

    written = int(T0.timestamp() * 1000)
    assert store.commit(key, CapState("", {}), Writes(fields, [], 30 * 86_400_000, written)) is None


def test_counters_of_the_previous_layout_count_and_move_on_the_next_write(
    make_enforcer: MakeEnforcer,
) -> None:
    e = make_enforcer(POLICY)
    code = cap_codes(POLICY)["offer_weekly"]
    c1, c2 = offer_code("S1"), offer_code("S2")
    # S1: 1 impression in bucket 528 ("eo") and 1 in 529 ("ep"); S2: 2 in 529.
    _old_layout(e, {f"{code}7d|{c1}": "eo;1.1", f"{code}7d|{c2}": "ep;2"})
    now = T0 + timedelta(hours=1)
    assert e.member_state(M, now, ["S1", "S2"])["caps"] == [
        {
            "cap": "offer_weekly",
            "scope": "member_offer",
            "key": key,
            "window": "7d",
            "limit": 3,
            "count": 2,
            "remaining": 1,
            # the oldest bucket leaves the window 7 days after its end: S1's 528 (00:00-07:00Z), S2's 529
            "resets_at": "2026-06-11T07:00:00Z" if key == "S1" else "2026-06-11T14:00:00Z",
            "blocked_until": None,
            "reason_code": "cap:member_offer:rolling_7d",
        }
        for key in ("S1", "S2")
    ]
    # S1 and S2 at 2 each: one more of each
    d = e.select_and_record(M, [S1, S2], 2, "home", now, record=False)
    assert d.selected == ["S1", "S2"]
    e.record_event(M, S1, "impression", "home", now)
    # the old fields are gone; their impressions are in bucket fields with the new one
    assert fields_of(e) == {
        bucket_field(T0 - timedelta(hours=1)): c1,
        bucket_field(T0): "".join(sorted([f"C{c1}", f"C{c2}"], key=lambda t: t[-4:])),
    }
    d = e.select_and_record(M, [S1, S2], 2, "home", now, record=False)
    assert d.selected == ["S2"] and d.suppressed[0].offer_id == "S1"


def test_state_layout_1_writes_a_field_per_offer_and_reads_both(make_enforcer: MakeEnforcer) -> None:
    """While service versions of the previous layout still run (a rolling upgrade), ``state_layout: 1`` keeps
    writing what they read; impressions already in bucket fields still count."""
    e2 = make_enforcer(POLICY)
    e2.record_event(M, S1, "impression", "home", T0)
    one = make_policy(
        "count_on: event\nstate_layout: 1\n"
        "caps: [{name: offer_weekly, scope: member_offer, limit: 3, window: 7d}]"
    )
    e1 = e2.with_policy(PolicyHolder.static(one))
    e1.record_event(M, S1, "impression", "home", T0 + timedelta(hours=1))
    e1.record_event(M, S1, "impression", "home", T0 + timedelta(hours=8))
    code = cap_codes(POLICY)["offer_weekly"]
    c1 = offer_code("S1")
    # layout 1: "<first bucket since 2026-01-01>;<count>.<count>": 1 in bucket 529 ("ep"), 1 in 530
    assert fields_of(e1) == {bucket_field(T0): c1, f"{code}7d|{c1}": "ep;1.1"}
    d = e1.select_and_record(M, [S1], 1, "home", T0 + timedelta(hours=9), record=False)
    assert d.selected == [] and "3 times" in d.suppressed[0].detail
