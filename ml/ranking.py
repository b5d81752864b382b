"""Top-K retrieval from dense score matrices.

Offline evaluation and batch publishing both need "the K best unseen items per
user". Doing this naively (``np.argsort`` over the full score matrix of every
user) is O(n_items log n_items) per user and needs the whole
``n_users x n_items`` matrix in memory. The functions here work
in linear time (a compiled candidate selection on large catalogues, ``np.argpartition``
on small ones) and on chunks of users, so ranking 100k users only ever materialises
``threads x batch_size x n_items`` scores.

Ordering contract (relied on by metrics and by the publishing step):

* items are sorted by descending score;
* ties are broken by the lower item index, so results are deterministic and
  independent of NumPy's partition algorithm;
* items marked in ``exclude`` (e.g. the user's training interactions) get a
  score of ``-inf`` and therefore are only returned when a user has fewer than
  ``k`` other items; they then come last, with score ``-inf``, again in
  ascending item-index order. ``NaN`` scores are treated as ``-inf`` too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ml.top_k_kernel import top_k_rows

__all__ = ["top_k", "batched_top_k", "compiled_top_k"]


def _mask_excluded(scores: np.ndarray, exclude: sp.spmatrix | sp.sparray) -> None:
    """Sets ``scores[u, i] = -inf`` in place for every stored non-zero of ``exclude``.

    Args:
      scores: Writable float array of shape ``(n_rows, n_items)``.
      exclude: Sparse matrix of the same shape; any stored non-zero entry marks
        an item to exclude for that row (explicitly stored zeros are ignored).
    """
    if exclude.shape != scores.shape:
        raise ValueError(f"exclude has shape {exclude.shape}, expected {scores.shape} (same as scores)")
    excl = sp.csr_matrix(exclude)
    rows = np.repeat(np.arange(excl.shape[0]), np.diff(excl.indptr))
    keep = excl.data != 0
    scores[rows[keep], excl.indices[keep]] = -np.inf


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.spmatrix | sp.sparray | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the ``k`` highest-scoring items of every row.

    Runs in O(n_rows * n_items) time: on large catalogues (float32 scores) one
    compiled pass per row picks about ``1.4 k`` candidates (``ml.top_k_kernel``),
    otherwise one ``argpartition`` of the row. Works on a copy of ``scores`` unless ``overwrite``
    (then ``scores`` is used as scratch space: pass it only for an array nobody reads
    afterwards, such as a batch of scores computed just for this call).

    Tie-break: among equal scores the lower item index ranks first, including
    at the K-th position boundary (which ``argpartition`` alone does not
    guarantee).

    Args:
      scores: Float array ``(n_rows, n_items)``; higher means more relevant.
      k: Number of items to return per row, ``1 <= k <= n_items``.
      exclude: Optional sparse matrix ``(n_rows, n_items)``; non-zero entries
        are items that must not be recommended (typically the training
        interactions of each user). If a row has fewer than ``k`` non-excluded
        items, the list is still filled to length ``k`` with excluded items,
        which come last with score ``-inf``.
      overwrite: Use ``scores`` itself as the working array (no copy).

    Returns:
      ``(items, item_scores)``: ``items`` is int32 ``(n_rows, k)`` with item
      indices sorted by descending score; ``item_scores`` is float32
      ``(n_rows, k)`` with the matching (masked) scores.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    n_rows, n_items = scores.shape
    if not 1 <= k <= n_items:
        raise ValueError(f"k must be in [1, n_items={n_items}], got {k}")

    dtype = np.result_type(scores.dtype, np.float32)
    if overwrite and scores.dtype == dtype and scores.flags.writeable and scores.flags.c_contiguous:
        work = scores
    else:
        work = np.array(scores, dtype=dtype, copy=True)
    if n_rows == 0:
        return np.empty((0, k), np.int32), np.empty((0, k), np.float32)
    if exclude is not None:
        _mask_excluded(work, exclude)
    if dtype == np.float32 and n_items >= CANDIDATE_FILTER_MIN_ITEMS and n_items >= 8 * k:
        return compiled_top_k(work, k)
    return _exact_top_k(_nan_to_minus_inf(work), k)


def compiled_top_k(work: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``top_k`` of a C-contiguous float32 ``work`` (at least ``2k`` columns; already masked, only read):
    ``ml.top_k_kernel``'s compiled selection, and ``_scored_top_k`` for the rows it hands back (no finite
    threshold: mostly rows with few scored items). NaN counts as ``-inf``."""
    items, item_scores, done = top_k_rows(work, k)
    rest = np.flatnonzero(~done)
    if rest.size:
        items[rest], item_scores[rest] = _scored_top_k(work[rest], k)
    return items, item_scores


# From this many items on, rows go through the compiled candidate selection (ml.top_k_kernel).
CANDIDATE_FILTER_MIN_ITEMS = 2048


def _nan_to_minus_inf(work: np.ndarray) -> np.ndarray:
    if np.isnan(work.max()):  # one reduction instead of a mask pass when (as usual) there is no NaN
        work[np.isnan(work)] = -np.inf
    return work


def _exact_top_k(work: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-K of every row of ``work`` (already masked; modified in place is allowed), ties by lower index."""
    n_rows, n_items = work.shape
    # Threshold = k-th largest score of every row.
    kth = np.partition(work, n_items - k, axis=1)[:, n_items - k][:, None]
    above = work > kth
    # Fill the remaining slots with the lowest-index items tied at the threshold.
    n_missing = k - above.sum(axis=1, keepdims=True)
    tied = work == kth
    selected = above | tied
    # Only rows with more tied items than free slots need the (costlier)
    # running count; with continuous scores that is almost never the case.
    crowded = np.flatnonzero(tied.sum(axis=1) > n_missing[:, 0])
    if crowded.size:
        t = tied[crowded]
        rank_in_tie = np.cumsum(t, axis=1, dtype=np.int32)
        selected[crowded] = above[crowded] | (t & (rank_in_tie <= n_missing[crowded]))

    # np.nonzero walks rows in order and columns ascending: exactly k per row.
    cand = np.nonzero(selected)[1].reshape(n_rows, k)
    cand_scores = np.take_along_axis(work, cand, axis=1)
    # Stable sort keeps ascending item index among equal scores.
    order = np.argsort(-cand_scores, axis=1, kind="stable")
    items = np.take_along_axis(cand, order, axis=1).astype(np.int32)
    item_scores = np.take_along_axis(cand_scores, order, axis=1).astype(np.float32)
    return items, item_scores


def _scored_top_k(work: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``_exact_top_k`` of the rows the compiled selection hands back (``work`` is only read; NaN counts as
    ``-inf``): a row with few scored items (above ``-inf``) is ranked from those items alone, sorted by
    (descending score, ascending item), then, where it has fewer than ``k``, its lowest-index unscored items
    with score ``-inf``, as ``_exact_top_k`` fills them; a row with many goes through ``_exact_top_k``.

    The rows handed back are mostly of the first kind: a ranking stage scores its few hundred candidates
    and leaves the rest of the catalogue at ``-inf``, and partitioning the whole row to find them cost 0.43 s
    per 256 shoppers at 20,000 items, more than scoring them (bench/README.md). A row is handed back when
    fewer than ``k`` of the kernel's groups hold a score, which a row with thousands of scored items in a
    few groups can be too; sorting those would cost more than the partition.
    """
    n_rows, n_items = work.shape
    scored = work > -np.inf
    n_scored = scored.sum(axis=1)
    many = n_scored > max(8 * k, n_items // 16)
    if many.any():
        items = np.empty((n_rows, k), np.int32)
        item_scores = np.empty((n_rows, k), np.float32)
        items[many], item_scores[many] = _exact_top_k(_nan_to_minus_inf(np.array(work[many])), k)
        few = np.flatnonzero(~many)
        if few.size:
            items[few], item_scores[few] = _scored_top_k(work[few], k)
        return items, item_scores
    rows, cols = np.nonzero(scored)
    values = work[rows, cols]
    order = np.lexsort((cols, -values, rows))  # by row, then descending score, then ascending item
    rows, cols, values = rows[order], cols[order], values[order]
    place = np.arange(len(rows)) - np.repeat(np.cumsum(n_scored) - n_scored, n_scored)
    keep = place < k
    items = np.empty((n_rows, k), np.int32)
    item_scores = np.full((n_rows, k), -np.inf, np.float32)
    items[rows[keep], place[keep]] = cols[keep]
    item_scores[rows[keep], place[keep]] = values[keep]
    short = np.flatnonzero(n_scored < k)
    if short.size:
        # a row with s < k scored items has at least k - s unscored ones among its first min(n_items, 2k)
        unscored = ~scored[short, : min(n_items, 2 * k)]
        rank = np.cumsum(unscored, axis=1, dtype=np.int64)
        wanted = unscored & (rank <= (k - n_scored[short])[:, None])
        r, c = np.nonzero(wanted)
        items[short[r], n_scored[short[r]] + rank[r, c] - 1] = c
    return items, item_scores


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports one, e.g. Linux; else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def batched_top_k(
    score_fn: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    k: int,
    exclude: sp.spmatrix | sp.sparray | None = None,
    batch_size: int = 256,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K for many users without materialising the full score matrix.

    Batches are scored and ranked on ``threads`` threads at once, each batch start to
    finish on one thread with BLAS held to one thread meanwhile: the matrix multiply
    and the ranking then share no cores and caches, where a multi-threaded multiply
    followed by ranking left half the machine idle during the ranking
    (bench/batch_scoring.py). Peak memory is about ``threads * batch_size * n_items``
    scores plus the outputs.

    Args:
      score_fn: Maps an int array of user indices ``(b,)`` to float scores
        ``(b, n_items)`` (e.g. a baseline's ``score`` method). It must return a
        new array on every call (the ranking works in place in it) and may be
        called from several threads at once.
      users: 1-D int array of user indices to rank, in output order.
      k: Number of items per user.
      exclude: Optional sparse ``(n_users_total, n_items)`` matrix indexed by
        *user index* (not by position in ``users``); its non-zeros are never
        recommended (see ``top_k`` for the fewer-than-k rule).
      batch_size: Users scored per call of ``score_fn``. 256 keeps a batch's scores
        in cache while they are ranked.
      threads: Batches in flight at once; default: the CPUs this process may use.

    Returns:
      ``(items, item_scores)`` as in ``top_k``, with one row per entry of
      ``users``.
    """
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    excl = sp.csr_matrix(exclude) if exclude is not None else None
    starts = range(0, len(users), batch_size)
    threads = max(1, min(threads or usable_cpus(), len(starts)))

    items = np.empty((len(users), k), dtype=np.int32)
    item_scores = np.empty((len(users), k), dtype=np.float32)

    def rank_batch(start: int) -> None:
        batch = users[start : start + batch_size]
        batch_scores = np.asarray(score_fn(batch))
        if batch_scores.shape[0] != len(batch):
            raise ValueError(f"score_fn returned {batch_scores.shape[0]} rows for {len(batch)} users")
        batch_excl = excl[batch] if excl is not None else None
        items[start : start + len(batch)], item_scores[start : start + len(batch)] = top_k(
            batch_scores, k, batch_excl, overwrite=True
        )

    if threads == 1:
        for start in starts:
            rank_batch(start)
    else:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
            list(pool.map(rank_batch, starts))  # re-raises the first failed batch's error
    return items, item_scores
