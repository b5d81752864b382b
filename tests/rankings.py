"""Comparing two top-K tables of scores that were summed in different orders.

A matrix product's last bits depend on how BLAS splits the work (threads, batch size,
processor), so the same scores computed twice may differ by a few ulps. The tables are
then equal up to that: scores within tolerance, and item ids equal except where two
neighbouring scores are within tolerance of each other (a near-tie may fall either way).
"""

from __future__ import annotations

import numpy as np


def assert_same_ranking(items_a, scores_a, items_b, scores_b, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    items_a, items_b = np.asarray(items_a), np.asarray(items_b)
    scores_a, scores_b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    assert items_a.shape == items_b.shape and scores_a.shape == scores_b.shape
    np.testing.assert_allclose(scores_a, scores_b, rtol=rtol, atol=atol)
    k = items_a.shape[1]
    for row, col in zip(*np.nonzero(items_a != items_b), strict=True):
        here = scores_a[row, col]
        neighbours = [scores_a[row, c] for c in (col - 1, col + 1) if 0 <= c < k]
        near_tie = any(np.isclose(here, other, rtol=rtol, atol=atol) for other in neighbours)
        assert near_tie or col == k - 1, (
            f"row {row}, rank {col + 1}: item {items_a[row, col]} vs {items_b[row, col]} with score {here!r}, "
            f"not a near-tie with its neighbours {neighbours}"
        )
