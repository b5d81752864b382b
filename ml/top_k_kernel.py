"""Compiled exact top-K of float32 score rows: the inner loop of batch scoring.

Ranking, not the matrix multiply, bounded batch scoring: in NumPy every row needs
several full passes (a threshold, a mask, a gather) and a partition, about 6x the time
of computing the scores. Compiled with Numba, one row costs one vectorised pass plus
work on a few hundred numbers:

1. the row's items are split into ``n_blocks`` interleaved blocks (item ``i`` is in
   block ``i % n_blocks``), so the block maxima are an element-wise maximum of
   contiguous slices, which the compiler vectorises;
2. the block maxima are split the same way into ``2k`` groups, and the k-th largest
   group maximum ``t`` is a score with at least ``k`` items at or above it (each of the
   ``k`` best groups holds one), so every item of the top K scores ``>= t``; on random
   scores about ``1.4 k`` items do;
3. only the blocks whose maximum reaches ``t`` are read again to collect those
   items, which are sorted by (descending score, ascending item index).

The result is exactly that of sorting the whole row with the same tie-break (tested
against it). NaN never reaches the maxima nor the candidates; items tied with the
threshold are kept in item order, the first ``k`` at most. A row whose threshold is
``-inf`` (fewer than ``k`` groups with a scored item) is reported back, for the
caller (``ml.ranking.compiled_top_k``).
"""

from __future__ import annotations

import typing

import numba
import numpy as np

__all__ = ["top_k_rows", "block_count"]


def block_count(n_items: int, k: int) -> int:
    """Blocks of about 10 items: fewer blocks make step 3 read more, more make step 2 cost more."""
    return int(min(n_items, max(2 * k, n_items // 10)))


@numba.njit(cache=True, nogil=True)
def _interleaved_max(values, width, out):
    """``out[c] = max(values[c::width])``, ignoring NaN (``-inf`` for a block of NaN only)."""
    out[:] = -np.inf
    n = values.shape[0]
    full = (n // width) * width
    for start in range(0, full, width):
        segment = values[start : start + width]
        for c in range(width):
            v = segment[c]
            m = out[c]
            out[c] = v if v > m else m
    for i in range(full, n):
        v = values[i]
        m = out[i - full]
        out[i - full] = v if v > m else m


@numba.njit(cache=True, nogil=True)
def _kth_largest(values, k):
    """The k-th largest of ``values`` (reordered in place): quickselect, median-of-three pivot."""
    lo, hi = 0, values.shape[0] - 1
    target = k - 1
    while lo < hi:
        a, b, c = values[lo], values[(lo + hi) >> 1], values[hi]
        if a < b:
            a, b = b, a
        if b < c:
            b = c
            if a < b:
                b = a
        pivot = b
        i, j = lo, hi
        while i <= j:
            while values[i] > pivot:
                i += 1
            while values[j] < pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return values[target]


@numba.njit(cache=True, nogil=True)
def _descending_keys(values, n, keys):
    """``keys[j]`` in [0, 2**32) for float32 ``values[j]``: ascending keys are descending scores; -0.0 equals +0.0."""
    bits = values.view(np.int32)
    for j in range(n):
        b = np.int64(bits[j])
        if b == -2147483648:
            b = 0
        keys[j] = 2147483647 - (b ^ 0x7FFFFFFF if b < 0 else b)  # integer order == float order


@numba.njit(cache=True, nogil=True)
def _radix_sort(keys, items, n, spare_keys, spare_items, counts):
    """Stable LSD sort of ``keys[:n]`` (< 2**32) in four 8-bit passes, ``items`` following.

    Branch-free, unlike a comparison sort of these nearly random keys; returns the arrays
    that hold the result (the inputs or the spares). Passes where all keys share the
    digit are skipped: candidates' scores are close, so their top bits often agree.
    """
    for shift in range(0, 32, 8):
        counts[:] = 0
        for j in range(n):
            counts[(keys[j] >> shift) & 255] += 1
        if n == 0 or counts[(keys[0] >> shift) & 255] == n:
            continue
        total = 0
        for d in range(256):
            c = counts[d]
            counts[d] = total
            total += c
        for j in range(n):
            d = (keys[j] >> shift) & 255
            p = counts[d]
            counts[d] = p + 1
            spare_keys[p] = keys[j]
            spare_items[p] = items[j]
        keys, items, spare_keys, spare_items = spare_keys, spare_items, keys, items
    return keys, items


class _Scratch(typing.NamedTuple):
    """Per-thread work arrays, allocated once per call and reused for every row."""

    block_max: np.ndarray
    group_max: np.ndarray
    blocks: np.ndarray
    gathered: np.ndarray
    gathered_items: np.ndarray
    values: np.ndarray
    items: np.ndarray
    keys: np.ndarray
    spare_keys: np.ndarray
    spare_items: np.ndarray
    counts: np.ndarray
    tied: np.ndarray


@numba.njit(cache=True, nogil=True)
def _row_top_k(row, k, s, out_items, out_scores):
    n_items = row.shape[0]
    n_blocks = s.block_max.shape[0]
    _interleaved_max(row, n_blocks, s.block_max)
    _interleaved_max(s.block_max, s.group_max.shape[0], s.group_max)
    threshold = _kth_largest(s.group_max, k)
    if not threshold > -np.inf:
        return False
    # Branch-free steps where a test is true for few, unpredictable entries.
    n_candidate_blocks = 0
    for c in range(n_blocks):
        s.blocks[n_candidate_blocks] = c
        n_candidate_blocks += s.block_max[c] >= threshold
    # Read the candidate blocks segment by segment, so items come in ascending order
    # (the stable sort then breaks ties by item index); reading first and filtering
    # after keeps the scattered loads independent of each other.
    n = 0
    for start in range(0, n_items, n_blocks):
        for j in range(n_candidate_blocks):
            i = start + s.blocks[j]
            if i >= n_items:
                break
            s.gathered[n] = row[i]
            s.gathered_items[n] = i
            n += 1
    # Items above the threshold are ranked; of those tied with it, only the first k
    # can be needed.
    n_above = 0
    n_tied = 0
    for j in range(n):
        v = s.gathered[j]
        s.values[n_above] = v
        s.items[n_above] = s.gathered_items[j]
        n_above += v > threshold
        if v == threshold and n_tied < k:
            s.tied[n_tied] = s.gathered_items[j]
            n_tied += 1
    _descending_keys(s.values, n_above, s.keys)
    _, items = _radix_sort(s.keys, s.items, n_above, s.spare_keys, s.spare_items, s.counts)
    for j in range(min(k, n_above)):
        out_items[j] = items[j]
        out_scores[j] = row[items[j]]
    for j in range(n_above, k):
        out_items[j] = s.tied[j - n_above]
        out_scores[j] = row[s.tied[j - n_above]]
    return True


@numba.njit(cache=True, nogil=True)
def _top_k_rows(work, k, n_blocks, out_items, out_scores, done):
    n_items = work.shape[1]
    s = _Scratch(
        np.empty(n_blocks, np.float32),
        np.empty(2 * k, np.float32),
        np.empty(n_blocks, np.int64),
        np.empty(n_items, np.float32),
        np.empty(n_items, np.int64),
        np.empty(n_items, np.float32),
        np.empty(n_items, np.int64),
        np.empty(n_items, np.int64),
        np.empty(n_items, np.int64),
        np.empty(n_items, np.int64),
        np.empty(256, np.int64),
        np.empty(k, np.int64),
    )
    for r in range(work.shape[0]):
        done[r] = _row_top_k(work[r], k, s, out_items[r], out_scores[r])


def top_k_rows(work: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-K of every row of a C-contiguous float32 ``work`` with ``n_items >= 2k``.

    Runs without the GIL, so threads can rank different batches at once. Returns
    ``(items int32, scores float32, done bool)``; rows with ``done`` False (fewer than
    ``k`` groups with a score above ``-inf``) are left for the caller.
    """
    n_rows, n_items = work.shape
    if work.dtype != np.float32 or not work.flags.c_contiguous or n_items < 2 * k:
        raise ValueError(
            f"need C-contiguous float32 scores with at least 2k={2 * k} items, got {work.dtype} {work.shape}"
        )
    items = np.empty((n_rows, k), np.int32)
    scores = np.empty((n_rows, k), np.float32)
    done = np.empty(n_rows, np.bool_)
    if n_rows:
        _top_k_rows(work, k, block_count(n_items, k), items, scores, done)
    return items, scores, done
