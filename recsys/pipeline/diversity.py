"""Diversity: mix families and cap how many offers of one category the answer can hold.

A greedy re-rank over candidates already ordered by expected value. At each step the next offer is the one
with the highest ``expected_value × family_repeat_penalty ** (offers of its family already chosen)``, so
families alternate unless one family is worth much more; an offer whose category (or family, when
``max_per_family`` is set) is already full is dropped with reason ``category_limit`` / ``family_limit``.

The output keeps every surviving candidate in order (not only the first k), so the frequency-cap stage can
fill the list from the next ones when it suppresses some.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

CATEGORY_LIMIT = "category_limit"
FAMILY_LIMIT = "family_limit"


@dataclass
class DiversityResult:
    """``order``: positions (into the input lists) in final order; ``dropped``: (position, reason, detail)."""

    order: list[int]
    dropped: list[tuple[int, str, str]] = field(default_factory=list)


def diversify(
    families: Sequence[str],
    categories: Sequence[str],
    expected: Sequence[float],
    max_per_category: int,
    max_per_family: int | None = None,
    family_repeat_penalty: float = 0.8,
) -> DiversityResult:
    """Re-rank candidates given in descending expected-value order (positions ``0..n-1``).

    Runs in O(n × number of families): each family keeps its own queue (already in value order), and only
    the heads of the queues compete at each step.
    """
    queues: dict[str, deque[int]] = {}
    for pos, fam in enumerate(families):
        queues.setdefault(fam, deque()).append(pos)
    fam_count: dict[str, int] = dict.fromkeys(queues, 0)
    cat_count: dict[str, int] = {}
    result = DiversityResult(order=[])
    while queues:
        best_fam = None
        best_val = -1.0
        for fam, q in list(queues.items()):
            # drop heads that can no longer be taken
            while q:
                head = q[0]
                cat = categories[head]
                if cat_count.get(cat, 0) >= max_per_category:
                    result.dropped.append(
                        (head, CATEGORY_LIMIT, f"already {max_per_category} offer(s) of category {cat}")
                    )
                    q.popleft()
                elif max_per_family is not None and fam_count[fam] >= max_per_family:
                    result.dropped.append(
                        (head, FAMILY_LIMIT, f"already {max_per_family} offer(s) of family {fam}")
                    )
                    q.popleft()
                else:
                    break
            if not q:
                del queues[fam]
                continue
            val = float(expected[q[0]]) * family_repeat_penalty ** fam_count[fam]
            if best_fam is None or val > best_val or (val == best_val and q[0] < queues[best_fam][0]):
                best_fam, best_val = fam, val
        if best_fam is None:
            break
        pos = queues[best_fam].popleft()
        result.order.append(pos)
        fam_count[best_fam] += 1
        cat_count[categories[pos]] = cat_count.get(categories[pos], 0) + 1
        if not queues[best_fam]:
            del queues[best_fam]
    return result
