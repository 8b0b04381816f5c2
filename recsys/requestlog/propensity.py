"""Exact inclusion probabilities of a weighted draw without replacement (Plackett-Luce), vectorised.

A slate drawn by repeatedly picking an offer with probability proportional to its weight among those not
yet picked (equivalently: the top ``k`` of ``log w + Gumbel noise``) shows offer ``i`` in its first ``k``
slots with probability ``P(i in slot 1) + … + P(i in slot k)``. For ``k <= 3`` the sums have a closed form
over the other offers (one sum for slot 2, a sum over ordered pairs for slot 3), computed here for many
requests at once:

    P1(i) = w_i / W
    P2(i) = w_i · Σ_{j≠i} w_j / (W (W − w_j))
    P3(i) = w_i · Σ_{j≠l, j,l≠i} w_j w_l / (W (W − w_j) (W − w_j − w_l))

The pair sum is computed once per request over all ordered pairs, then the pairs that involve ``i`` are
subtracted (its row and column), so a request costs O(n²) for ``n`` candidates, not O(n³).
"""

from __future__ import annotations

import numpy as np

MAX_SLOTS = 3


def plackett_luce_inclusion(weights: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Per row of ``weights`` (requests × candidates, 0 = not a candidate), each candidate's probability of
    being among the first ``k`` draws without replacement, with probabilities ∝ weight.

    ``k`` is one slot count or one per row, each in 1..3. Rows with fewer positive weights than ``k`` show all
    of them (probability 1). Raises ``ValueError`` for negative or non-finite weights or ``k`` out of range.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-d array (requests × candidates), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    n_rows = w.shape[0]
    ks = np.broadcast_to(np.asarray(k, dtype=np.int64), (n_rows,))
    if len(ks) and (ks.min() < 1 or ks.max() > MAX_SLOTS):
        raise ValueError(f"k must be in 1..{MAX_SLOTS}, got {sorted(set(ks.tolist()))}")
    pos = w > 0
    n_pos = pos.sum(axis=1)
    total = w.sum(axis=1, keepdims=True)
    safe_total = np.where(total > 0, total, 1.0)
    out = w / safe_total  # slot 1
    need2 = np.flatnonzero(ks >= 2)
    if len(need2):
        w2, tot2, np2 = w[need2], safe_total[need2], n_pos[need2]
        # a_j = w_j / (W (W - w_j)); zero when j is the only candidate (nothing left for slot 2)
        rest = tot2 - w2
        ok = (w2 > 0) & (np2[:, None] > 1)
        a = np.where(ok, w2 / (tot2 * np.where(ok, rest, 1.0)), 0.0)
        out[need2] += w2 * (a.sum(axis=1, keepdims=True) - a)
    need3 = np.flatnonzero(ks >= 3)
    for start in range(0, len(need3), _pair_block(w.shape[1])):
        rows = need3[start : start + _pair_block(w.shape[1])]
        out[rows] += _slot3(w[rows], safe_total[rows], n_pos[rows])
    # fewer candidates than slots: every candidate is shown (rounding aside)
    all_shown = n_pos <= ks
    out[all_shown] = pos[all_shown].astype(np.float64)
    return np.asarray(np.clip(out, 0.0, 1.0))


def _pair_block(n: int) -> int:
    """Rows per block of the (rows × n × n) pair sums: about 16 MB of float64."""
    return max(1, 2_000_000 // max(n * n, 1))


def _slot3(w: np.ndarray, total: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """P(i in slot 3) per row and candidate."""
    wj = w[:, :, None]
    wl = w[:, None, :]
    t = total[:, :, None]
    both = (wj > 0) & (wl > 0)
    n = w.shape[1]
    both &= ~np.eye(n, dtype=bool)[None, :, :]
    # a third candidate exists besides j and l exactly when the row has more than two positive weights
    both &= (n_pos > 2)[:, None, None]
    denom = t * (t - wj) * (t - wj - wl)
    q = np.where(both, wj * wl / np.where(both, denom, 1.0), 0.0)
    pair_sum = q.sum(axis=(1, 2))
    involving = q.sum(axis=2) + q.sum(axis=1)  # pairs with j = i, pairs with l = i
    return np.asarray(w * (pair_sum[:, None] - involving))


_SIZE_BINS = np.array([4, 8, 12, 16, 24, 32, 48, 64, 96])


def pair_inclusion(rows: np.ndarray, weights: np.ndarray, k: np.ndarray) -> np.ndarray:
    """:func:`plackett_luce_inclusion` for candidate lists in long format: ``rows`` (non-decreasing request
    index per candidate), ``weights`` per candidate, ``k`` per request. Requests are grouped by their number
    of candidates so the padded pair sums stay small."""
    rows = np.asarray(rows, dtype=np.int64)
    n_rows = len(k)
    starts = np.searchsorted(rows, np.arange(n_rows + 1), side="left")
    n_cand = np.diff(starts)
    pos = np.arange(len(rows)) - starts[rows]
    out = np.zeros(len(rows))
    group = np.searchsorted(_SIZE_BINS, n_cand, side="right")
    row_in_group = np.empty(n_rows, dtype=np.int64)
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        row_in_group[members] = np.arange(len(members))
        sel = group[rows] == g
        packed = np.zeros((len(members), max(int(n_cand[members].max()), 1)))
        packed[row_in_group[rows[sel]], pos[sel]] = weights[sel]
        incl = plackett_luce_inclusion(packed, np.clip(np.asarray(k)[members], 1, MAX_SLOTS))
        out[sel] = incl[row_in_group[rows[sel]], pos[sel]]
    return out
