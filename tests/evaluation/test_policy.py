"""The slate-policy seam: top-k per request, inclusion checks."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation.policy import (
    SLOTS,
    PairScorer,
    PolicyError,
    RequestBatch,
    ScoredPolicy,
    SlatePolicy,
    check_inclusion,
    slot_of,
)
from recsys.schema import Col


def _batch() -> RequestBatch:
    requests = pd.DataFrame(
        {Col.REQUEST_ID: ["r0", "r1", "r2"], Col.MEMBER_ID: ["a", "b", "a"], SLOTS: [2, 1, 3]}
    )
    rows = np.array([0, 0, 0, 1, 1, 2])
    offers = np.array(["x", "y", "z", "x", "y", "z"], dtype=object)
    return RequestBatch(requests, rows, offers)


class _Fixed:
    name = "fixed"
    trained_before: datetime | None = None

    def __init__(self, scores: list[float]) -> None:
        self.scores = np.array(scores)

    def score(self, batch: RequestBatch) -> np.ndarray:
        return self.scores


def test_top_k_per_request_with_slots_and_ties() -> None:
    b = _batch()
    # request 0 (k=2): z, then x/y tie -> x (first candidate); request 1 (k=1): y; request 2: -inf never shown
    scores = np.array([1.0, 1.0, 5.0, 0.0, 2.0, -np.inf])
    assert slot_of(b, scores).tolist() == [1, -1, 0, -1, 0, -1]
    policy = ScoredPolicy(_Fixed(scores.tolist()))
    assert isinstance(policy, SlatePolicy)
    assert isinstance(_Fixed([]), PairScorer)
    assert policy.inclusion(b).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_check_inclusion_refuses_more_offers_than_slots() -> None:
    b = _batch()
    with pytest.raises(PolicyError, match=r"r1.*2 offers in 1 slots"):
        check_inclusion("p", b, np.array([0, 0, 0, 1.0, 1.0, 0]))
    with pytest.raises(PolicyError, match=r"\[0, 1\]"):
        check_inclusion("p", b, np.array([0, 0, 0, 1.5, 0, 0]))
    with pytest.raises(PolicyError, match="5 candidate"):
        check_inclusion("p", RequestBatch(b.requests, b.request_row[:5], b.offer_id[:5]), np.zeros(6))


def test_batch_take_and_grouping() -> None:
    b = _batch()
    sub = b.take(np.array([2, 0]))
    assert sub.requests[Col.REQUEST_ID].tolist() == ["r0", "r2"]
    assert sub.request_row.tolist() == [0, 0, 0, 1]
    assert sub.starts.tolist() == [0, 3, 4]
    with pytest.raises(PolicyError, match="grouped by request"):
        RequestBatch(b.requests, np.array([1, 0]), np.array(["x", "y"], dtype=object))
