"""Offline top-K ranking metrics.

Protocol (every model is evaluated the same way, so numbers are comparable):

* Each user's list is a *full ranking* of every item not in that user's train
  set (``ml.ranking.top_k`` with ``exclude=train``); no negative sampling.
* Only *evaluated users* count: users with at least one test item. All
  metrics are averages over them.
* With ``n_test`` the number of distinct test items of a user and hits the
  positions of the top-K list that are test items:

  - ``recall@K    = hits / min(K, n_test)`` (so a perfect list scores 1 even
    when the user has more than K test items);
  - ``ndcg@K``: binary gains, ``DCG = sum_{hit ranks r} 1 / log2(r + 1)``
    (r is 1-based), normalised by the ideal DCG of ``min(K, n_test)`` hits;
  - ``hit_rate@K  = 1`` if there is at least one hit in the top K;
  - ``map@K``: ``AP@K = (1 / min(K, n_test)) * sum_{hit ranks r <= K}
    precision@r``;
  - ``coverage@K`` = number of distinct items in the top-K lists of all
    evaluated users / ``n_items``.

Beyond accuracy, ``novelty`` and ``intra_list_diversity`` describe *what* is
recommended (long-tail items, category variety).

Lists are assumed to hold distinct items (``top_k`` guarantees this); negative
entries (e.g. ``-1`` padding) never count as hits or as covered items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "hits_matrix",
    "ranking_metrics",
    "per_user_ndcg",
    "popularity_share",
    "novelty",
    "intra_list_diversity",
]

TestSet = sp.spmatrix | sp.sparray | Sequence[np.ndarray]


def _test_keys(test: TestSet, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Encodes the test set as sorted unique ``user * n_items + item`` keys.

    Why: one ``np.searchsorted`` over these keys answers "is item i a test item
    of user u" for all (u, i) pairs at once, without a Python loop.

    Args:
      test: Sparse ``(n_users, n_items)`` matrix (non-zeros are test items) or
        a sequence of ``n_users`` int arrays of test items.
      n_users: Expected number of rows.
      n_items: Catalogue size (key stride).

    Returns:
      ``(keys, n_test)``: sorted unique int64 keys, and int64 ``(n_users,)``
      number of distinct test items per user.
    """
    if sp.issparse(test):
        mat = sp.csr_matrix(test)
        if mat.shape[0] != n_users:
            raise ValueError(f"test has {mat.shape[0]} rows, top_items has {n_users}")
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(mat.indptr))
        keep = mat.data != 0
        rows, cols = rows[keep], mat.indices[keep].astype(np.int64)
    else:
        if len(test) != n_users:
            raise ValueError(f"test has {len(test)} users, top_items has {n_users}")
        arrays = [np.asarray(t, dtype=np.int64).reshape(-1) for t in test]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        rows = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
        cols = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    if cols.size and (cols.min() < 0 or cols.max() >= n_items):
        raise ValueError("test item index out of range [0, n_items)")
    keys = np.unique(rows * n_items + cols)
    n_test = np.bincount(keys // n_items, minlength=n_users).astype(np.int64)
    return keys, n_test


def hits_matrix(top_items: np.ndarray, test: TestSet, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Marks which recommended items are test items.

    Args:
      top_items: Int array ``(n_users, L)`` of ranked item indices.
      test: Test items per user (sparse rows aligned with ``top_items`` or a
        sequence of int arrays).
      n_items: Catalogue size.

    Returns:
      ``(hits, n_test)``: bool ``(n_users, L)`` hit indicator and int64
      ``(n_users,)`` number of distinct test items per user.
    """
    top = np.asarray(top_items, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"top_items must be 2-D, got shape {top.shape}")
    n_users = top.shape[0]
    keys, n_test = _test_keys(test, n_users, n_items)
    valid = (top >= 0) & (top < n_items)
    query = np.arange(n_users, dtype=np.int64)[:, None] * n_items + np.where(valid, top, 0)
    if keys.size == 0:
        return np.zeros(top.shape, dtype=bool), n_test
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return valid & (keys[pos] == query), n_test


def ranking_metrics(
    top_items: np.ndarray,
    test: TestSet,
    n_items: int,
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    """Computes recall, NDCG, hit rate, MAP and catalogue coverage at each K.

    Fully vectorised: O(n_users * max(ks) * log(n_test_total)) time, so 100k
    users x K=20 takes well under a second.

    Args:
      top_items: Int array ``(n_users, L)`` with ``L >= max(ks)``; row u is the
        ranked list of user u (train items already excluded).
      test: Test items, rows aligned with ``top_items``: a sparse matrix
        (non-zeros are test items) or a sequence of int arrays.
      n_items: Catalogue size, the denominator of coverage.
      ks: Cut-offs.

    Returns:
      Dict with keys ``recall@K``, ``ndcg@K``, ``hit_rate@K``, ``map@K`` and
      ``coverage@K`` for every K in ``ks``; values are Python floats averaged
      over evaluated users.

    Raises:
      ValueError: if no user has a test item, or ``top_items`` is too short.
    """
    top = np.asarray(top_items)
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    max_k = max(ks)
    if top.ndim != 2 or top.shape[1] < max_k:
        raise ValueError(f"top_items must have shape (n_users, >= {max_k}), got {top.shape}")

    hits, n_test = hits_matrix(top[:, :max_k], test, n_items)
    evaluated = n_test > 0
    if not evaluated.any():
        raise ValueError("no evaluated users: every user has an empty test set")
    hits = hits[evaluated].astype(np.float64)
    n_test = n_test[evaluated]
    top_eval = top[evaluated, :max_k]

    ranks = np.arange(1, max_k + 1, dtype=np.float64)
    precision_at_r = np.cumsum(hits, axis=1) / ranks

    out: dict[str, float] = {}
    for k in ks:
        h = hits[:, :k]
        denom = np.minimum(k, n_test)
        n_hits = h.sum(axis=1)
        out[f"recall@{k}"] = float(np.mean(n_hits / denom))
        out[f"ndcg@{k}"] = float(np.mean(_ndcg_rows(h, n_test, k)))
        out[f"hit_rate@{k}"] = float(np.mean(n_hits > 0))
        out[f"map@{k}"] = float(np.mean((precision_at_r[:, :k] * h).sum(axis=1) / denom))
        recommended = top_eval[:, :k]
        recommended = recommended[(recommended >= 0) & (recommended < n_items)]
        out[f"coverage@{k}"] = float(np.unique(recommended).size / n_items)
    return out


def _ndcg_rows(hits: np.ndarray, n_test: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each row of the hit indicator ``hits`` (at least k columns), ideal DCG over min(k, n_test)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal_cum = np.cumsum(discounts)
    return (hits[:, :k].astype(np.float64) @ discounts) / ideal_cum[np.minimum(k, n_test) - 1]


def per_user_ndcg(top_items: np.ndarray, test: TestSet, n_items: int, k: int = 20) -> np.ndarray:
    """NDCG@k of every evaluated user (rows with a test item), in row order: what ``ndcg@k`` averages.

    The gate's paired bootstrap (``ml.bootstrap``) resamples these values: two models
    scored on the same users give aligned arrays.
    """
    top = np.asarray(top_items)
    if top.ndim != 2 or top.shape[1] < k:
        raise ValueError(f"top_items must have shape (n_users, >= {k}), got {top.shape}")
    hits, n_test = hits_matrix(top[:, :k], test, n_items)
    evaluated = n_test > 0
    return _ndcg_rows(hits[evaluated], n_test[evaluated], k)


def popularity_share(train: sp.spmatrix | sp.sparray) -> np.ndarray:
    """Fraction of train users who interacted with each item.

    This is the ``p(i)`` of the novelty metric. The denominator is the number
    of users with at least one train interaction (empty rows are not users of
    the train set).

    Args:
      train: Sparse ``(n_users, n_items)`` interaction matrix.

    Returns:
      float64 ``(n_items,)`` shares in ``[0, 1]``.
    """
    mat = sp.csr_matrix(train, copy=True)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    n_train_users = int(np.count_nonzero(np.diff(mat.indptr)))
    counts = np.bincount(mat.indices, minlength=mat.shape[1]).astype(np.float64)
    # After sum_duplicates each (user, item) pair is stored once, so counting
    # column indices counts distinct users per item.
    return counts / max(n_train_users, 1)


def novelty(top_items: np.ndarray, item_popularity: np.ndarray, k: int) -> float:
    """Mean self-information of recommended items, ``-log2 p(i)``.

    Higher means the model recommends less popular (long-tail) items. The mean
    is taken over all valid entries of the top-K lists of the given rows (pass
    only evaluated users to follow the protocol); equal-length lists make it
    the mean over users of the per-list mean.

    Args:
      top_items: Int array ``(n_users, >= k)`` of ranked item indices.
      item_popularity: ``(n_items,)`` popularity share ``p(i)`` of each item
        among train users (see ``popularity_share``). Items with share 0
        (never seen in train) are given the smallest positive share, so they
        count as at least as novel as the rarest seen item rather than as
        infinitely novel.
      k: Cut-off.

    Returns:
      Mean self-information in bits.
    """
    top = np.asarray(top_items)[:, :k]
    share = np.asarray(item_popularity, dtype=np.float64)
    positive = share[share > 0]
    if positive.size == 0:
        raise ValueError("item_popularity has no positive share")
    share = np.where(share > 0, share, positive.min())
    valid = (top >= 0) & (top < share.size)
    if not valid.any():
        raise ValueError("no recommended items to evaluate")
    return float(np.mean(-np.log2(share[top[valid]])))


def intra_list_diversity(top_items: np.ndarray, item_category: np.ndarray, k: int) -> float:
    """Mean fraction of item pairs in a top-K list whose categories differ.

    1.0 means every recommended item of a list has its own category; 0.0 means
    the whole list is one category.

    Args:
      top_items: Int array ``(n_users, >= k)`` of ranked item indices (all
        valid, i.e. in ``[0, n_items)``).
      item_category: ``(n_items,)`` category id of each item.
      k: Cut-off, ``k >= 2`` (a single item has no pairs).

    Returns:
      Average over rows of ``#pairs with different categories / (k (k-1) / 2)``.
    """
    if k < 2:
        raise ValueError(f"intra_list_diversity needs k >= 2, got {k}")
    top = np.asarray(top_items)[:, :k]
    if top.shape[1] < k:
        raise ValueError(f"top_items has {top.shape[1]} columns, need {k}")
    if top.shape[0] == 0:
        raise ValueError("no lists to evaluate")
    cats = np.asarray(item_category)[top]
    # Sort categories within each list; equal categories form runs, and a run
    # of length c contributes c (c - 1) / 2 same-category pairs.
    cats = np.sort(cats, axis=1)
    new_run = np.ones_like(cats, dtype=bool)
    new_run[:, 1:] = cats[:, 1:] != cats[:, :-1]
    run_id = np.cumsum(new_run, axis=1) - 1 + (np.arange(top.shape[0]) * k)[:, None]
    run_len = np.bincount(run_id.ravel(), minlength=top.shape[0] * k).reshape(-1, k)
    same_pairs = (run_len * (run_len - 1) // 2).sum(axis=1)
    n_pairs = k * (k - 1) // 2
    return float(np.mean(1.0 - same_pairs / n_pairs))
