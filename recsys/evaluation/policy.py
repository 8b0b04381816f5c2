"""The seam of policy evaluation: a policy that picks a slate for each logged request.

A replayed request offers a policy the request's context (member, time, placement, trip) and its candidate set
(what the logging policy chose from, after eligibility and caps); the policy answers, for every candidate,
the probability that it puts the candidate in the slate of ``k`` slots (``k`` = the placement's slot count).
A deterministic policy answers 0 or 1; a randomised one (uniform over the candidates) its inclusion
probabilities, so its true and estimated values are exact expectations rather than one sampled draw.

Everything is batched and long-format: :class:`RequestBatch` holds one row per request and one row per
(request, candidate) pair, grouped by request. A policy must use only what was known at each request's time:
data before the training cut-off for what it learned, and events strictly before ``request_time`` for the
member's state (earlier exposures, dismissals). The evaluation refuses a policy whose ``trained_before`` lies
after the test period's start (it saw the period it is judged on).

Most policies score candidates and take the top ``k``: implement :class:`PairScorer` and wrap it in
:class:`ScoredPolicy`; a policy that composes its slate otherwise (the service's pipeline with diversity)
implements :class:`SlatePolicy` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from recsys.schema import Col, Placement

SLOTS = "slots"  # column of RequestBatch.requests: the placement's slot count k

# Slots per placement: what the app shows (the generated world's legacy policy shows the same).
DEFAULT_SLOTS: Mapping[str, int] = {
    Placement.BOOKING.value: 3,
    Placement.POST_BOOKING.value: 2,
    Placement.CHECK_IN.value: 2,
    Placement.IN_TRIP.value: 1,
    Placement.HOME.value: 2,
}

# Context columns of RequestBatch.requests (naive UTC times, as in the dataset); a policy may read any.
REQUEST_CONTEXT: tuple[str, ...] = (
    Col.REQUEST_ID,
    Col.MEMBER_ID,
    Col.REQUEST_TIME,
    Col.PLACEMENT,
    Col.FLIGHT_ID,
    Col.FLIGHT_NUMBER,
    Col.ORIGIN,
    Col.DESTINATION,
    Col.CABIN,
    Col.FARE_CLASS,
    Col.DEPARTURE_TIME,
)


class PolicyError(ValueError):
    """A policy answered something the evaluation cannot use (shape, range, too many offers)."""


@dataclass(frozen=True)
class RequestBatch:
    """Requests to decide, long format.

    - ``requests``: one row per request, :data:`REQUEST_CONTEXT` columns plus :data:`SLOTS`; row ``i`` is
      request ``i``. A replayed batch (:func:`recsys.evaluation.replay.load_replay`) also carries the booking
      columns the log has and :data:`recsys.features.miles.BALANCE_AT_REQUEST`, the member's miles balance
      as of the request, which the policies that need a balance read.
    - ``request_row`` / ``offer_id``: the candidate pairs, grouped by request in request order
      (``request_row`` is non-decreasing); ``starts[i]:starts[i + 1]`` are request ``i``'s candidates.
    """

    requests: pd.DataFrame
    request_row: np.ndarray
    offer_id: np.ndarray

    def __post_init__(self) -> None:
        rows = np.asarray(self.request_row, dtype=np.int64)
        if len(rows) != len(self.offer_id):
            raise PolicyError(f"{len(rows)} request rows for {len(self.offer_id)} candidate offers")
        if len(rows) and (np.any(np.diff(rows) < 0) or rows[0] < 0 or rows[-1] >= len(self.requests)):
            raise PolicyError("candidate pairs must be grouped by request, in request order")
        object.__setattr__(self, "request_row", rows)
        object.__setattr__(self, "offer_id", np.asarray(self.offer_id, dtype=object))

    @property
    def n_requests(self) -> int:
        return len(self.requests)

    @property
    def n_pairs(self) -> int:
        return len(self.request_row)

    @property
    def starts(self) -> np.ndarray:
        """(n_requests + 1,) offsets of each request's candidates."""
        return np.searchsorted(self.request_row, np.arange(self.n_requests + 1), side="left")

    @property
    def slots(self) -> np.ndarray:
        """(n_requests,) k of each request."""
        return self.requests[SLOTS].to_numpy(np.int64)

    def pair_column(self, column: str) -> np.ndarray:
        """A request column broadcast to the candidate pairs."""
        return np.asarray(self.requests[column].to_numpy()[self.request_row])

    def take(self, rows: np.ndarray) -> RequestBatch:
        """The sub-batch of the given request rows (sorted), with its candidates."""
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        keep = np.isin(self.request_row, rows)
        new_row = np.searchsorted(rows, self.request_row[keep])
        return RequestBatch(self.requests.iloc[rows].reset_index(drop=True), new_row, self.offer_id[keep])


@runtime_checkable
class SlatePolicy(Protocol):
    """Picks a slate per request: for each candidate pair, the probability it is shown (0/1 if deterministic).

    Per request the answers lie in [0, 1] and sum to at most the request's ``k``. ``trained_before`` is the
    end (exclusive) of the data the policy learned from, ``None`` for a policy that learned nothing (uniform
    random) or reads only the hidden truth (oracles).
    """

    @property
    def name(self) -> str: ...

    @property
    def trained_before(self) -> datetime | None: ...

    def inclusion(self, batch: RequestBatch) -> np.ndarray: ...


@runtime_checkable
class PairScorer(Protocol):
    """Scores each candidate pair of a batch (higher = shown first); NaN or -inf = never shown."""

    @property
    def name(self) -> str: ...

    @property
    def trained_before(self) -> datetime | None: ...

    def score(self, batch: RequestBatch) -> np.ndarray: ...


class ScoredPolicy:
    """The top-``k`` candidates of each request by a :class:`PairScorer`'s score (ties: candidate order)."""

    def __init__(self, scorer: PairScorer, name: str | None = None) -> None:
        self.scorer = scorer
        self._name = name or scorer.name

    @property
    def name(self) -> str:
        return self._name

    @property
    def trained_before(self) -> datetime | None:
        return self.scorer.trained_before

    def inclusion(self, batch: RequestBatch) -> np.ndarray:
        scores = np.asarray(self.scorer.score(batch), dtype=np.float64)
        if scores.shape != (batch.n_pairs,):
            raise PolicyError(f"{self.name}: {scores.shape} scores for {batch.n_pairs} candidate pairs")
        return top_k_inclusion(batch, scores).astype(np.float64)


def top_k_inclusion(batch: RequestBatch, scores: np.ndarray) -> np.ndarray:
    """Bool per pair: among its request's ``k`` highest ``scores`` (NaN/-inf never; ties: first candidate)."""
    rank = slot_of(batch, scores)
    return np.asarray(rank >= 0)


def slot_of(batch: RequestBatch, scores: np.ndarray) -> np.ndarray:
    """Per pair, its slot (0 = first) in its request's top ``k`` by ``scores``, -1 when not shown."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    n = batch.n_pairs
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), -s, batch.request_row))
    pos = np.arange(n) - batch.starts[batch.request_row[order]]
    k = batch.slots[batch.request_row[order]]
    slot = np.full(n, -1, dtype=np.int64)
    shown = (pos < k) & np.isfinite(s[order])
    slot[order[shown]] = pos[shown]
    return slot


def check_inclusion(name: str, batch: RequestBatch, inclusion: np.ndarray) -> np.ndarray:
    """``inclusion`` as float64 after checking shape, range and the per-request slot budget."""
    inc = np.asarray(inclusion, dtype=np.float64)
    if inc.shape != (batch.n_pairs,):
        raise PolicyError(f"{name}: {inc.shape} inclusion probabilities for {batch.n_pairs} candidate pairs")
    if np.isnan(inc).any() or (inc < 0).any() or (inc > 1 + 1e-9).any():
        raise PolicyError(f"{name}: inclusion probabilities must lie in [0, 1]")
    per_request = np.bincount(batch.request_row, weights=inc, minlength=batch.n_requests)
    over = per_request > batch.slots + 1e-6
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise PolicyError(
            f"{name}: request {batch.requests[Col.REQUEST_ID].iloc[i]!r} shows {per_request[i]:.3g} offers "
            f"in {batch.slots[i]} slots"
        )
    return np.clip(inc, 0.0, 1.0)
