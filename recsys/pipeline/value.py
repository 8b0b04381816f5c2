"""What an offer is worth: expected value = acceptance probability × margin (domain.md).

Margin per accepted offer, in CNY (:func:`offer_values`, computed once per catalogue):

- the offer's ``margin`` column when it is set — the cash margin of a sale (upgrade fee minus its cost, a
  meal's or a bag's contribution...);
- plus, for an offer paid in miles only (``price_miles`` set, no ``price_cash``), the miles liability it
  retires: ``price_miles × miles_liability_cost_cny``. Miles a member holds are a liability on the airline's
  books (deferred revenue, valued per mile); a redemption releases it, which is the redemption's value to the
  airline. 0.05 CNY/mile is the default (``PipelineConfig.miles_liability_cost_cny``): the order of
  magnitude of the fair value per mile that Chinese carriers report for their programmes; set it from
  finance's figure.
- An offer priced in both cash and miles (pay either way) is valued at its cash margin only.

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
        v = o.margin if o.margin is not None else 0.0
        if o.price_miles is not None and o.price_cash is None:
            v += o.price_miles * miles_liability_cost_cny
        values[o.index] = max(v, 0.0)
    return values


def expected_values(
    indices: Sequence[int],
    probabilities: np.ndarray,
    values: np.ndarray,
    close: Mapping[int, int] | None = None,
    close_value_factor: float = 0.5,
) -> np.ndarray:
    """``p(accept) × margin`` per candidate index; "close" offers discounted by ``close_value_factor``."""
    idx = np.asarray(indices, dtype=np.int64)
    ev = np.asarray(probabilities, dtype=np.float64) * values[idx]
    if close:
        for pos, i in enumerate(indices):
            if i in close:
                ev[pos] *= close_value_factor
    return ev


def rank_by_value(expected: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions ordered by expected value, high to low; ties broken by model score, then position."""
    return np.lexsort((np.arange(len(expected)), -np.asarray(scores), -np.asarray(expected)))
