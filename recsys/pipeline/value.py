"""What an offer is worth: expected value = acceptance probability × margin (domain.md).

Margin per accepted offer, in CNY (:func:`offer_values`, computed once per catalogue):

- the offer's ``margin`` column when it is set: the catalogue's net value of one acceptance — for a cash
  sale the fee minus its cost (an upgrade, a meal, a bag); for a redemption the miles liability it retires
  net of the cost of providing the award. (The world generator's catalogue values redemptions at
  0.002–0.006 CNY per mile redeemed.)
- when ``margin`` is missing (imported catalogues): for an offer paid in miles only (``price_miles`` set,
  no ``price_cash``) the liability it retires, ``price_miles × miles_liability_cost_cny`` — miles a member
  holds are deferred revenue on the airline's books, valued per mile, and a redemption releases them; for a
  cash offer, nothing is assumed (0: it ranks on acceptance alone among equals). The default cost per mile
  (``PipelineConfig.miles_liability_cost_cny`` = 0.005 CNY) matches the generator's catalogue; set it from
  finance's figure for a real programme.

A "you're close" redemption (the member lacks some miles) is worth ``close_value_factor`` of its value: it
cannot be accepted before the member earns the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.pipeline.catalogue import Catalogue


def offer_values(catalogue: Catalogue, miles_liability_cost_cny: float) -> np.ndarray:
    """Margin in CNY of accepting each catalogue offer (index-aligned with ``catalogue.offers``)."""
    values = np.zeros(len(catalogue), dtype=np.float64)
    for o in catalogue.offers:
        if o.margin is not None:
            v = o.margin
        elif o.price_miles is not None and o.price_cash is None:
            v = o.price_miles * miles_liability_cost_cny
        else:
            v = 0.0
        values[o.index] = max(v, 0.0)
    return values


def expected_values(
    indices: Sequence[int],
    probabilities: Sequence[float],
    values: Sequence[float],
    close: Mapping[int, int] | None = None,
    close_value_factor: float = 0.5,
) -> list[float]:
    """``p(accept) × margin`` per candidate index; "close" offers discounted by ``close_value_factor``.

    Plain Python on purpose: a request has a few dozen candidates, where numpy's per-call overhead costs more
    than the arithmetic (measured ~3x slower for this stage).
    """
    close = close or {}
    return [
        float(p) * float(values[i]) * (close_value_factor if i in close else 1.0)
        for i, p in zip(indices, probabilities, strict=True)
    ]


def rank_by_value(expected: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Positions ordered by expected value, high to low; ties broken by model score, then position."""
    return sorted(range(len(expected)), key=lambda p: (-expected[p], -scores[p], p))


def ranking_keys(probabilities: Sequence[float], expected: Sequence[float], exponent: float) -> list[float]:
    """The ranking objective's key per candidate: p^(1-β) × EV^β (β = ``exponent``; see
    ``PipelineConfig.objective``): β = 1 expected value, β = 0 acceptance probability."""
    if exponent == 1.0:
        return list(expected)
    if exponent == 0.0:
        return [float(p) for p in probabilities]
    return [
        float(p) ** (1.0 - exponent) * float(v) ** exponent if p > 0 and v > 0 else 0.0
        for p, v in zip(probabilities, expected, strict=True)
    ]
