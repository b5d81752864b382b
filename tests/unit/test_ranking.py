"""Tests for ml.ranking: ordering, tie-break, exclusion, batching."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.ranking import batched_top_k, top_k

from rankings import assert_same_ranking

pytestmark = pytest.mark.unit


def brute_force_top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None):
    """Reference: full Python sort by (-score, item) after masking."""
    items, vals = [], []
    for u, row in enumerate(np.asarray(scores, dtype=np.float64)):
        row = np.where(np.isnan(row), -np.inf, row)
        if exclude is not None:
            row = row.copy()
            row[exclude[u].indices] = -np.inf
        ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        items.append(ranked)
        vals.append([row[i] for i in ranked])
    return np.array(items), np.array(vals, dtype=np.float32)


def test_hand_written_order_and_exclusion():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 1.0, 2.0, 0.0]])
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0]], dtype=np.float32))
    items, vals = top_k(scores, 2, exclude)
    np.testing.assert_array_equal(items, [[3, 2], [2, 1]])
    np.testing.assert_allclose(vals, [[0.7, 0.5], [2.0, 1.0]], rtol=1e-6)
    assert items.dtype == np.int32 and vals.dtype == np.float32
    # Input is not modified.
    assert scores[0, 1] == 0.9


def test_ties_broken_by_lower_index_even_at_boundary():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 2.0, 0.0]])
    items, _ = top_k(scores, 2)
    np.testing.assert_array_equal(items, [[1, 2]])
    items, _ = top_k(np.zeros((1, 5)), 3)
    np.testing.assert_array_equal(items, [[0, 1, 2]])


def test_fewer_candidates_than_k_pads_with_excluded_last():
    scores = np.array([[5.0, 4.0, 3.0, 2.0]])
    exclude = sp.csr_matrix(np.array([[1, 0, 1, 1]], dtype=np.float32))
    items, vals = top_k(scores, 3, exclude)
    np.testing.assert_array_equal(items, [[1, 0, 2]])
    assert vals[0, 0] == 4.0 and np.all(np.isneginf(vals[0, 1:]))


def test_explicit_zero_in_exclude_is_not_excluded():
    exclude = sp.csr_matrix((np.array([0.0], np.float32), (np.array([0]), np.array([0]))), shape=(1, 3))
    items, _ = top_k(np.array([[3.0, 2.0, 1.0]]), 1, exclude)
    assert items[0, 0] == 0


def test_invalid_k_raises():
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 3)), 4)
    with pytest.raises(ValueError):
        top_k(np.zeros((2, 3)), 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(30, 12)).astype(np.float64)  # many ties
    scores[rng.random(scores.shape) < 0.05] = np.nan
    exclude = sp.random(30, 12, density=0.4, format="csr", random_state=seed, dtype=np.float32)
    exclude.data[:] = 1.0
    for k in (1, 5, 12):
        items, vals = top_k(scores, k, exclude)
        ref_items, ref_vals = brute_force_top_k(scores, k, exclude)
        np.testing.assert_array_equal(items, ref_items)
        np.testing.assert_array_equal(vals, ref_vals)


def test_batched_equals_unbatched_and_indexes_exclude_by_user():
    rng = np.random.default_rng(7)
    full = rng.random((50, 20)).astype(np.float32)
    exclude = sp.random(50, 20, density=0.3, format="csr", random_state=7, dtype=np.float32)
    exclude.data[:] = 1.0
    users = np.array([49, 3, 3, 17, 0, 25, 8])
    calls = []

    def score_fn(idx: np.ndarray) -> np.ndarray:
        calls.append(len(idx))
        return full[idx]

    items, vals = batched_top_k(score_fn, users, 5, exclude, batch_size=3)
    ref_items, ref_vals = top_k(full[users], 5, exclude[users])
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_array_equal(vals, ref_vals)
    assert calls == [3, 3, 1]
    # Excluded (user, item) pairs never appear.
    for row, u in zip(items, users, strict=True):
        assert not set(row) & set(exclude[u].indices)


def test_batched_without_exclude_and_empty_users():
    full = np.arange(12, dtype=np.float32).reshape(3, 4)
    items, _ = batched_top_k(lambda idx: full[idx], np.array([2, 0]), 2, None)
    np.testing.assert_array_equal(items, [[3, 2], [3, 2]])
    items, vals = batched_top_k(lambda idx: full[idx], np.array([], dtype=int), 2, None)
    assert items.shape == (0, 2) and vals.shape == (0, 2)


@pytest.mark.parametrize(
    "n_items, k, ties", [(5000, 100, False), (5000, 20, True), (3001, 100, True), (4096, 7, False), (20011, 100, False)]
)
def test_the_candidate_filter_gives_exactly_the_full_ranking(n_items, k, ties):
    """Large catalogues take the candidate path; it must agree with ranking every item, ties and exclusions included."""
    from ml.ranking import _exact_top_k

    rng = np.random.default_rng(n_items + k)
    scores = (
        rng.integers(0, 50, size=(64, n_items)).astype(np.float32)
        if ties
        else rng.standard_normal((64, n_items)).astype(np.float32)
    )
    scores[3, :] = 1.0  # one row all tied
    scores[5, 10:] = np.nan  # a row with fewer than k scored items
    exclude = sp.random(64, n_items, density=0.01, format="csr", random_state=1)
    exclude[7, : n_items - k // 2] = 1.0  # a row with fewer than k items left
    items, item_scores = top_k(scores, k, exclude)
    expected = np.array(scores, dtype=np.float32)
    expected[np.isnan(expected)] = -np.inf
    expected[exclude.toarray() != 0] = -np.inf
    want_items, want_scores = _exact_top_k(expected, k)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(item_scores, want_scores)


def test_the_compiled_selection_handles_signs_infinities_and_reports_crowded_rows():
    """Rows whose threshold is -inf come back undone; the rest match ranking every item, ties included."""
    from ml.ranking import _exact_top_k
    from ml.top_k_kernel import top_k_rows

    rng = np.random.default_rng(11)
    k, n_items = 50, 4000
    scores = rng.standard_normal((8, n_items)).astype(np.float32)
    scores[0] -= 10.0  # every score negative
    scores[1, ::3] = -0.0  # signed zeros tie with +0.0 (lower index first)
    scores[1, 1::3] = 0.0
    scores[2, [5, 900, 3999]] = np.inf
    scores[3, :] = 2.0  # all tied: the first k items
    scores[6, 1000:] = scores[6, 999]  # a tie at the threshold across most of the row
    scores[4, 30:] = -np.inf  # fewer than k scored items
    scores[5, rng.random(n_items) < 0.5] = np.nan
    items, item_scores, done = top_k_rows(scores.copy(), k)
    assert done.tolist() == [True, True, True, True, False, True, True, True]
    expected = scores.copy()
    expected[np.isnan(expected)] = -np.inf
    want_items, want_scores = _exact_top_k(expected, k)
    np.testing.assert_array_equal(items[done], want_items[done])
    np.testing.assert_array_equal(item_scores[done], want_scores[done])
    full_items, _ = top_k(scores, k)  # the public function ranks the undone rows the plain way
    np.testing.assert_array_equal(full_items, want_items)


@pytest.mark.parametrize("integer_scores", [False, True])
def test_rows_with_few_scored_items_rank_as_the_whole_row(integer_scores):
    """A ranking stage's rows: a few hundred scored candidates, -inf elsewhere (NaN, +inf, signed zeros and ties
    among them); ranked from the scored items alone, the same items and scores as ranking every item."""
    from ml.ranking import _exact_top_k, _scored_top_k

    rng = np.random.default_rng(5)
    k, n_items = 40, 3000
    scores = np.full((60, n_items), -np.inf, np.float32)
    for row in range(60):
        picked = rng.choice(n_items, int(rng.integers(0, 3 * k)), replace=False)  # fewer and more than k
        values = rng.integers(-2, 3, len(picked)) if integer_scores else rng.standard_normal(len(picked))
        scores[row, picked] = values
        scores[row, picked[:2]] = np.inf if row % 4 == 0 else scores[row, picked[:2]]
        scores[row, picked[-1:]] = -0.0 if row % 3 == 0 else scores[row, picked[-1:]]
        scores[row, rng.choice(n_items, 3)] = np.nan if row % 5 == 0 else -np.inf
    scores[7, :] = -np.inf  # nothing scored: the first k items
    scores[8, :] = -np.inf
    scores[8, n_items - 5 :] = 1.0  # scored items only at the end of the row
    # many scored items, all in fewer than k of the kernel's groups (block i % 300, group block % 2k): handed
    # back by the kernel, and ranked by the partition, not by sorting them
    scores[9, :] = -np.inf
    in_few_groups = (np.arange(n_items) % 300) % (2 * k) < k - 1
    scores[9, in_few_groups] = rng.standard_normal(in_few_groups.sum())
    expected = scores.copy()
    expected[np.isnan(expected)] = -np.inf
    want_items, want_scores = _exact_top_k(expected, k)
    items, item_scores = _scored_top_k(scores.copy(), k)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(item_scores, want_scores)
    public_items, public_scores = top_k(scores, k)  # the compiled selection hands most of these rows back
    np.testing.assert_array_equal(public_items, want_items)
    np.testing.assert_array_equal(public_scores, want_scores)


def test_threads_give_the_same_tables_and_pass_errors_on():
    rng = np.random.default_rng(3)
    users_emb = rng.standard_normal((700, 16)).astype(np.float32)
    items_emb = rng.standard_normal((3000, 16)).astype(np.float32)
    exclude = sp.random(700, 3000, density=0.01, format="csr", random_state=3)

    def score_fn(idx):
        return users_emb[idx] @ items_emb.T

    one = batched_top_k(score_fn, np.arange(700), 20, exclude, batch_size=64, threads=1)
    three = batched_top_k(score_fn, np.arange(700), 20, exclude, batch_size=64, threads=3)
    # BLAS may sum each product in another order on another thread count: equal up to near-ties
    assert_same_ranking(one[0], one[1], three[0], three[1])
    # scores that every summation order gets exactly (small integers): the very same tables, ties included
    small = np.round(users_emb * 2), np.round(items_emb * 2)

    def exact(idx):  # sums of products of small integers are exact in float32
        return small[0][idx] @ small[1].T

    one = batched_top_k(exact, np.arange(700), 20, exclude, batch_size=64, threads=1)
    three = batched_top_k(exact, np.arange(700), 20, exclude, batch_size=64, threads=3)
    np.testing.assert_array_equal(one[0], three[0])
    np.testing.assert_array_equal(one[1], three[1])

    def failing(idx):
        if 500 in idx:
            raise RuntimeError("score store unavailable")
        return score_fn(idx)

    with pytest.raises(RuntimeError, match="score store unavailable"):
        batched_top_k(failing, np.arange(700), 20, batch_size=64, threads=2)
