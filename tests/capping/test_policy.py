"""Policy validation (errors name line and field), tier resolution, reload keeping the running policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys.capping.api import PolicyError, PolicyHolder, load_policy, parse_policy
from recsys.capping.policy import Scope
from recsys.stores.redis import RedisCallPolicy

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
version: v1
caps:
  - name: member_daily
    scope: member
    limit: 3
    window: day
  - name: offer_weekly
    scope: member_offer
    limit: 1
    window: 7d
tiers:
  platinum:
    caps:
      member_daily: {limit: 1}
"""


def errors_of(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="caps.yaml")
    return info.value.issues


def test_default_policy_file_loads_and_matches_the_brief() -> None:
    policy = load_policy(REPO / "config" / "caps.yaml")
    # impressions the app reports count (docs/capping.md, "The default limits")
    # one timeout default: the policy file's is the service clients' (docs/capping.md, "Why 250 ms")
    assert policy.count_on == "event" and policy.timeout_ms == RedisCallPolicy().timeout_ms == 250
    basic = {c.name: c for c in policy.resolved("basic").caps}
    plat = {c.name: c for c in policy.resolved("platinum").caps}
    assert (basic["upsell_daily"].limit, basic["upsell_daily"].window.spec) == (4, "day")
    assert (basic["offer_weekly"].limit, basic["offer_weekly"].window.spec) == (3, "7d")
    # a day's journey: four screens of four offers
    assert basic["member_daily"].limit == 16 and basic["placement_hourly"].limit >= 4
    assert basic["offer_weekly"].scope is Scope.MEMBER_OFFER
    assert policy.resolved("basic").cooldowns.dismiss_offer == 14 * 86_400
    assert policy.resolved("basic").cooldowns.purchase_offer > 0
    assert basic["member_daily"].scope is Scope.MEMBER
    # Platinum sees fewer promotions.
    assert plat["upsell_daily"].limit < basic["upsell_daily"].limit
    assert plat["member_daily"].limit < basic["member_daily"].limit


def test_unknown_scope_names_line_and_field() -> None:
    text = GOOD.replace("scope: member_offer", "scope: member_route")
    [(line, field, msg)] = errors_of(text)
    assert (line, field) == (8, "caps[1].scope")
    assert "member_route" in msg and "member_offer" in msg


def test_negative_cap_names_line_and_field() -> None:
    [(line, field, msg)] = errors_of(GOOD.replace("limit: 3", "limit: -2"))
    assert (line, field) == (5, "caps[0].limit")
    assert "greater than or equal to 0" in msg


def test_unparseable_window_names_line_and_field() -> None:
    [(line, field, msg)] = errors_of(GOOD.replace("window: 7d", "window: 7 fortnights"))
    assert (line, field) == (10, "caps[1].window")
    assert "cannot parse window '7 fortnights'" in msg


def test_unknown_tier_names_line_and_field() -> None:
    [(line, field, msg)] = errors_of(GOOD.replace("  platinum:", "  diamond:"))
    assert line == 12 and field.startswith("tiers.diamond")
    assert "'platinum'" in msg


def test_unknown_key_is_rejected() -> None:
    [(line, field, msg)] = errors_of(GOOD.replace("    limit: 1\n", "    limit: 1\n    limt: 2\n"))
    assert (line, field) == (10, "caps[1].limt")
    assert "Extra inputs are not permitted" in msg


def test_override_of_unknown_cap_and_duplicate_names() -> None:
    issues = errors_of(GOOD.replace("      member_daily: {limit: 1}", "      member_dayly: {limit: 1}"))
    assert issues[0][:2] == (14, "tiers.platinum.caps.member_dayly")
    assert "unknown cap 'member_dayly'" in issues[0][2]
    issues = errors_of(GOOD.replace("name: offer_weekly", "name: member_daily"))
    assert issues[0][:2] == (7, "caps[1].name")


def test_several_errors_are_all_reported_and_message_names_file() -> None:
    text = GOOD.replace("limit: 3", "limit: -2").replace("window: 7d", "window: soon")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="config/caps.yaml")
    msg = str(info.value)
    assert "config/caps.yaml line 5, caps[0].limit" in msg
    assert "config/caps.yaml line 10, caps[1].window" in msg


def test_invalid_yaml_and_wrong_shapes() -> None:
    [(line, _, msg)] = errors_of("caps: [\n  {name: a\n")
    assert line is not None and "not valid YAML" in msg
    [(line, _, msg)] = errors_of("- just\n- a list\n")
    assert "mapping" in msg
    [(line, field, _)] = errors_of("outage:\n  mode: fail_sideways\n")
    assert (line, field) == (2, "outage.mode")
    [(line, field, _)] = errors_of("timeout_ms: 0\n")
    assert (line, field) == (1, "timeout_ms")
    [(line, field, _)] = errors_of("cooldowns:\n  dismiss:\n    offer: two weeks\n")
    assert (line, field) == (3, "cooldowns.dismiss.offer")


def test_empty_file_is_a_policy_with_no_caps() -> None:
    policy = parse_policy("")
    assert policy.caps == [] and policy.outage.mode == "fail_closed"


def test_tier_resolution() -> None:
    policy = parse_policy(GOOD)
    assert policy.resolved("platinum").cap("member_daily").limit == 1  # type: ignore[union-attr]
    assert policy.resolved("gold").cap("member_daily").limit == 3  # type: ignore[union-attr]
    assert policy.resolved("unknown-tier").cap("member_daily").limit == 3  # type: ignore[union-attr]


def test_holder_reload_keeps_running_policy_on_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "caps.yaml"
    path.write_text(GOOD)
    holder = PolicyHolder(path, poll_interval_s=0)
    assert holder.policy.version == "v1"
    path.write_text(GOOD.replace("version: v1", "version: v2").replace("scope: member\n", "scope: planet\n"))
    result = holder.reload()
    assert not result.ok and "line 4, caps[0].scope" in (result.error or "")
    assert holder.policy.version == "v1"  # still in force
    assert holder.last_error is not None
    path.write_text(GOOD.replace("version: v1", "version: v2"))
    result = holder.reload()
    assert result.ok and result.changed and holder.policy.version == "v2"
    assert holder.last_error is None


def test_holder_polls_file_mtime(tmp_path: Path) -> None:
    path = tmp_path / "caps.yaml"
    path.write_text(GOOD)
    now = [100.0]
    holder = PolicyHolder(path, poll_interval_s=5.0, clock=lambda: now[0])
    path.write_text(GOOD.replace("version: v1", "version: v3"))
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))  # make sure the mtime moves on coarse file systems
    now[0] += 4.9
    assert holder.policy.version == "v1", "not polled before the interval"
    now[0] += 0.1
    assert holder.policy.version == "v3"
    path.write_text("caps: [oops")
    os.utime(path, (st.st_atime, st.st_mtime + 10))
    now[0] += 5.0
    assert holder.policy.version == "v3"
    assert holder.last_error is not None


def test_bad_file_at_start_up_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "caps.yaml"
    path.write_text("caps:\n  - {name: x, scope: member, limit: -1, window: day}\n")
    with pytest.raises(PolicyError, match=r"line 2, caps\[0\]\.limit"):
        PolicyHolder(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
