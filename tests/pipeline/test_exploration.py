"""Exploration: on a share of requests the slate is a uniform draw from the capped candidate set, and every
shown offer carries its exact inclusion probability over the explore/exploit mixture."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from math import comb

import pytest
from scipy import stats

from recsys.capping.api import build_enforcer, parse_policy
from recsys.pipeline import PipelineConfig
from recsys.stores.member_store import EmbeddedMemberStore

from .test_pipeline import pipeline, request, store  # noqa: F401 - the fixture is used by name

ELIGIBLE = {"UP_C", "MEAL_VGML", "LOUNGE", "AWARD_NRT", "WIFI"}


def test_exploration_off_shows_the_value_slate_with_propensity_one(store: EmbeddedMemberStore) -> None:  # noqa: F811
    res = pipeline(store, exploration_share=0.0).recommend(request(limit=3))
    assert not res.explored
    assert [o.propensity for o in res.offers] == [1.0, 1.0, 1.0]
    assert set(res.candidates) >= {o.offer_id for o in res.offers}
    assert set(res.candidates) >= ELIGIBLE  # every eligible offer, whatever value and diversity kept


def test_share_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="exploration_share must be in"):
        PipelineConfig(exploration_share=1.5)


def test_uniform_draw_matches_its_inclusion_probability(store: EmbeddedMemberStore) -> None:  # noqa: F811
    pipe = pipeline(store, exploration_share=1.0, exploration_seed=7)
    n_req, k = 3000, 2
    shows: Counter[str] = Counter()
    slates: Counter[frozenset[str]] = Counter()
    candidates = None
    for _ in range(n_req):
        res = pipe.recommend(request(limit=k))
        assert res.explored
        candidates = candidates or res.candidates
        assert res.candidates == candidates
        n = len(candidates)
        assert all(o.propensity == pytest.approx(k / n) for o in res.offers)
        shows.update(o.offer_id for o in res.offers)
        slates[frozenset(o.offer_id for o in res.offers)] += 1
    assert candidates is not None
    n = len(candidates)
    # Each offer shown k/n of the time, and each of the C(n, k) pairs equally often: a uniform k-of-n draw.
    assert stats.chisquare([shows[c] for c in candidates], [n_req * k / n] * n).pvalue > 0.01
    assert len(slates) == comb(n, k)
    assert stats.chisquare(list(slates.values())).pvalue > 0.01


def test_mixture_propensities_match_show_frequencies(store: EmbeddedMemberStore) -> None:  # noqa: F811
    share, k, n_req = 0.3, 2, 4000
    exploit = [o.offer_id for o in pipeline(store).recommend(request(limit=k)).offers]
    pipe = pipeline(store, exploration_share=share, exploration_seed=11)
    shows: Counter[str] = Counter()
    recorded: dict[str, float] = {}
    explored = 0
    candidates: tuple[str, ...] = ()
    for _ in range(n_req):
        res = pipe.recommend(request(limit=k))
        explored += res.explored
        candidates = res.candidates
        for o in res.offers:
            shows[o.offer_id] += 1
            assert recorded.setdefault(o.offer_id, o.propensity) == o.propensity  # same state, same p
    n = len(candidates)
    # The formula, written out: (1 - share) * [in the value slate] + share * k / n.
    for o, p in recorded.items():
        assert p == pytest.approx((1 - share) * (o in exploit) + share * k / n)
    assert stats.binomtest(explored, n_req, share).pvalue > 0.01
    expected = [n_req * recorded.get(c, (1 - share) * (c in exploit) + share * k / n) for c in candidates]
    observed = [shows[c] for c in candidates]
    assert stats.chisquare(observed, expected).pvalue > 0.01
    # The test can tell: the propensities exploration alone would give are refused.
    assert stats.chisquare(observed, [n_req * k / n] * n).pvalue < 1e-6


def test_explored_slates_obey_the_caps(store: EmbeddedMemberStore, now) -> None:  # noqa: F811
    policy = parse_policy(
        "count_on: serve\ncaps:\n  - {name: offer_week, scope: member_offer, limit: 1, window: 7d}\n",
        source="<test>",
    )
    caps = build_enforcer(None, policy)
    pipe = pipeline(store, cap_enforcer=caps, exploration_share=1.0, exploration_seed=3)
    seen: list[str] = []
    sizes = []
    for i in range(8):
        res = pipe.recommend(request(limit=2, now=now + timedelta(minutes=i)))
        shown = [o.offer_id for o in res.offers]
        assert not set(shown) & set(seen), "an explored slate broke the weekly per-offer cap"
        # The candidate set is what the caps still allow; each shown offer's propensity is k/n of it.
        assert not set(res.candidates) & set(seen)
        n = len(res.candidates)
        assert all(o.propensity == pytest.approx(min(2, n) / n) for o in res.offers)
        seen.extend(shown)
        sizes.append(n)
        assert len(shown) == min(2, n)
    # Each request's slate leaves the candidate set until the caps leave nothing to show.
    assert sizes[0] >= 5 and sizes == sorted(sizes, reverse=True) and sizes[-1] == 0
