"""Non-neural baselines for implicit-feedback recommendation.

Every model follows the same two-method contract so the evaluation and
publishing code can treat them (and the neural models) alike:

* ``fit(train) -> self``: ``train`` is a ``scipy.sparse`` CSR matrix
  ``(n_users, n_items)``; any stored non-zero is a positive interaction (the
  matrix is binarised, so repeated events do not weigh more).
* ``score(user_idx) -> float32 (len(user_idx), n_items)``: relevance scores
  for those users' rows, computed from ``train`` only. Scores are *not*
  masked; pass ``exclude=train`` to ``ml.ranking.batched_top_k`` for that.

``BASELINES`` maps config names to constructors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from ml import names
from ml.ranking import compiled_top_k
from ml.sparse_product_kernel import product_to_dense

log = logging.getLogger(__name__)

__all__ = [
    "Recommender",
    "MostPopular",
    "ItemKNN",
    "UserKNN",
    "EASE",
    "BASELINES",
]


class Recommender(Protocol):
    """Interface shared by all models."""

    def fit(self, train: sp.spmatrix | sp.sparray) -> Recommender: ...

    def score(self, user_idx: np.ndarray) -> np.ndarray: ...


def binarize(train: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """Returns a float32 CSR copy with 1.0 at every stored non-zero.

    Args:
      train: Sparse ``(n_users, n_items)`` interactions (any values).

    Returns:
      Binary CSR matrix with sorted indices and no explicit zeros.
    """
    mat = sp.csr_matrix(train, dtype=np.float32, copy=True)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    mat.data[:] = 1.0
    return mat


def keep_top_n_per_row(mat: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keeps the ``n`` largest stored values of every row of a CSR matrix.

    Ties keep the lower column index. Rows are taken in blocks of at most
    ``_TOP_N_BLOCK_CELLS`` cells: a block whose rows are mostly filled (user-user
    similarities, where nearly everyone shares an item with everyone) is ranked in a
    dense array by ``_top_n_cells`` (the compiled top-K), O(cells); a sparse block by one
    ``lexsort`` of its non-zeros, O(nnz log nnz). Either gives the same entries (the
    lexsort alone cost 0.8 s for 256 users x 20,000 of a 1M-event shop's similarities,
    most of the candidate ranking's time: bench/README.md).

    Args:
      mat: CSR matrix.
      n: Entries to keep per row (``n >= 0``).

    Returns:
      A new CSR matrix with at most ``n`` stored entries per row (sorted indices).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    mat = sp.csr_matrix(mat)
    n_rows, n_cols = mat.shape
    block_rows = max(1, _TOP_N_BLOCK_CELLS // max(n_cols, 1))
    blocks = []
    for start in range(0, n_rows, block_rows):
        block = mat[start : start + block_rows]  # a copy: the caller's matrix is never changed
        if block.nnz * _DENSE_SHARE >= block.shape[0] * n_cols:
            blocks.append(_top_n_dense(block, n))
        else:
            block.sum_duplicates()
            blocks.append(_top_n_sorted(block, n))
    if not blocks:
        return sp.csr_matrix(mat.shape, dtype=mat.dtype)
    return sp.csr_matrix(sp.vstack(blocks, format="csr"), shape=mat.shape)


_TOP_N_BLOCK_CELLS = 1 << 24  # a dense block of float64: 128 MB
_DENSE_SHARE = 8  # a block is ranked densely when at least 1/8 of its cells are stored


def _top_n_sorted(mat: sp.csr_matrix, n: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    order = np.lexsort((mat.indices, -mat.data, rows))
    rank = np.arange(order.size) - mat.indptr[rows[order]]
    keep = np.sort(order[rank < n])
    return sp.csr_matrix((mat.data[keep], (rows[keep], mat.indices[keep])), shape=mat.shape)


def _top_n_dense(mat: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """``_top_n_sorted``'s entries, found per row of the block written out dense (``_top_n_cells``)."""
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    cells = rows * mat.shape[1] + mat.indices  # duplicates summed, any index order (no sort needed)
    size = mat.shape[0] * mat.shape[1]
    absent = (np.bincount(cells, minlength=size) == 0).reshape(mat.shape)
    dtype = np.result_type(mat.dtype, np.float32)
    dense = np.bincount(cells, weights=mat.data, minlength=size).astype(dtype).reshape(mat.shape)
    dense[absent] = -np.inf
    r, c = _top_n_cells(dense, n)
    return sp.csr_matrix((dense[r, c].astype(mat.dtype), (r, c)), shape=mat.shape)


def _top_n_cells(work: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The cells (rows, columns; row by row, columns ascending) of each row's ``n`` largest values of ``work``,
    ties to the lower column; a cell holding -inf is never kept (the caller marks what is not stored so).

    Every batch of every scoring pass of user-kNN and TIFU-KNN ranks a [256, 20,000] block of similarities to
    the neighbour pool at 10M events. A float32 block goes through the compiled selection
    (``ml.ranking.compiled_top_k``), the same cells as a partition of each row in 2-5 ms against 55 ms
    (bench/README.md); ``work`` is only read. Other blocks: a row's n-th largest value
    is found by one partition; every value above it is kept, and of the values equal to it the lowest columns
    fill the rest, ranked among the few tied cells.
    """
    width = work.shape[1]
    if n <= 0 or width == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    if n >= width:
        return np.nonzero(work > -np.inf)
    if work.dtype == np.float32 and work.flags.c_contiguous and width >= 2 * n:
        items, values = compiled_top_k(work, n)
        columns = np.sort(np.where(values > -np.inf, items, width), axis=1)  # -inf: not kept, sorted last
        kept = columns < width
        return np.nonzero(kept)[0], columns[kept]
    nth = np.partition(work, width - n, axis=1)[:, width - n : width - n + 1]  # -inf: fewer than n stored
    keep = work > nth
    room = n - keep.sum(axis=1)
    r, c = np.nonzero((work == nth) & (nth > -np.inf))  # the ties, row by row, columns ascending
    tie_rank = np.arange(len(r)) - np.searchsorted(r, r)
    fits = tie_rank < room[r]
    keep[r[fits], c[fits]] = True
    return np.nonzero(keep)


def _top_n_csr(work: np.ndarray, n: int, columns: np.ndarray | None = None, n_cols: int | None = None):
    """``_top_n_cells`` of a dense block as CSR, its values taken from ``work``; ``columns`` maps the block's
    columns to the matrix's (increasing: the pool's users among all users), ``n_cols`` wide."""
    r, c = _top_n_cells(work, n)
    indptr = np.zeros(work.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(r, minlength=work.shape[0]), out=indptr[1:])
    indices = c if columns is None else columns[c]
    shape = (work.shape[0], work.shape[1] if n_cols is None else n_cols)
    return sp.csr_matrix((work[r, c], indices, indptr), shape=shape)


NEIGHBOUR_POOL = 20_000  # RECSYS_KNN_NEIGHBOUR_POOL: the most users a user-based model looks for neighbours among


# Item-kNN past a catalogue size: each item keeps only its most similar items. Scoring reads, for every
# shopper, the similarity row of each item they have, so an exact pass costs shoppers x history x items:
# at 10M events (200,000 shoppers, 20,000 items, 41% of the item pairs similar) evaluate_models' item-kNN
# took 72 s of its 120 (0.2 s at 1M events: 360x for 10x the data). Kept rows make it linear in the items.
ITEM_KNN_EXACT_ITEMS = 10_000  # RECSYS_ITEM_KNN_EXACT_ITEMS: the largest catalogue item-kNN keeps every pair of
ITEM_KNN_NEIGHBOURS = 500  # RECSYS_ITEM_KNN_NEIGHBOURS: neighbours kept per item past it
AUTO = "auto"  # ItemKNN(neighbours=AUTO): every pair up to ITEM_KNN_EXACT_ITEMS items, else ITEM_KNN_NEIGHBOURS


def item_neighbours_bound(n_items: int) -> int | None:
    """The neighbours item-kNN keeps per item in a catalogue of ``n_items`` (``ItemKNN(AUTO)``): all (None) up to
    ``RECSYS_ITEM_KNN_EXACT_ITEMS`` items (Online Retail, groceries, the 1M- and 3M-event synthetic shops), else
    ``RECSYS_ITEM_KNN_NEIGHBOURS``."""
    exact = int(os.environ.get("RECSYS_ITEM_KNN_EXACT_ITEMS", ITEM_KNN_EXACT_ITEMS))
    kept = int(os.environ.get("RECSYS_ITEM_KNN_NEIGHBOURS", ITEM_KNN_NEIGHBOURS))
    if kept < 1:
        raise ValueError(f"RECSYS_ITEM_KNN_NEIGHBOURS must be >= 1, got {kept}")
    return None if n_items <= exact or kept >= n_items - 1 else kept


def neighbour_pool_size() -> int:
    return int(os.environ.get("RECSYS_KNN_NEIGHBOUR_POOL", NEIGHBOUR_POOL))


def neighbour_pool(activity: np.ndarray, size: int | None = None) -> np.ndarray | None:
    """The users a user-based model takes neighbours from: all (None) up to ``size`` users, else the ``size``
    most active (ties to the lower index), in index order.

    Exact neighbours cost a batch of users a product and a top-n over every user, so a
    whole scoring pass grows with the square of the shop's users: user-kNN scored 256 users
    in 5.8 s at 200,000 users, about 76 minutes a pass (bench/README.md). The most active users carry
    most of the co-occurrence evidence; with the pool the pass grows linearly. Shops up to
    ``size`` users (Online Retail, groceries, the 1M-event synthetic shop) are unaffected.
    """
    size = neighbour_pool_size() if size is None else size
    if size < 1:
        raise ValueError(f"RECSYS_KNN_NEIGHBOUR_POOL must be >= 1, got {size}")
    if len(activity) <= size:
        return None
    return np.sort(np.argsort(-np.asarray(activity), kind="stable")[:size])


def pooled_similarity(normalized: sp.csr_matrix, users: np.ndarray, pool: np.ndarray | None, pool_t, n: int | None):
    """Cosine similarities of ``users`` to the pool's users (every user when ``pool`` is None), a user never its
    own neighbour, at most ``n`` per row (ties to the lower user index); CSR over all users' columns."""
    width = normalized.shape[0] if pool is None else len(pool)
    if n is not None and len(users) * width <= _TOP_N_BLOCK_CELLS:  # nearly dense: no sparse round trip
        return _pooled_similarity_dense(normalized, users, pool, pool_t, n)
    sim = sp.csr_matrix(normalized[users] @ (normalized.T if pool is None else pool_t)).tocoo()
    owner = sim.col if pool is None else pool[sim.col]
    not_self = owner != users[sim.row]
    sim = sp.csr_matrix((sim.data[not_self], (sim.row[not_self], sim.col[not_self])), shape=sim.shape)
    sim.eliminate_zeros()
    if n is not None:
        sim = keep_top_n_per_row(sim, n)  # over the pool's columns, whose order is the users' order
    if pool is not None:
        sim = sp.csr_matrix((sim.data, pool[sim.indices], sim.indptr), shape=(len(users), normalized.shape[0]))
    return sim


def _pooled_similarity_dense(normalized: sp.csr_matrix, users: np.ndarray, pool, pool_t, n: int) -> sp.csr_matrix:
    """``pooled_similarity`` for a batch whose similarities fit one dense block: a sparse product written out
    as one [users, pool] array and ranked per row by ``_top_n_cells`` (user-user similarities are nearly all non-zero;
    ranking them as CSR cost 10x the product).

    The product is sparse x sparse, the batch's rows against the pool's item lists (``pool_t``, items x pool
    users), added straight into the array by ``ml.sparse_product_kernel``: it touches only the items the
    batch's shoppers had, and its result is laid out row by row as the ranking reads it; the same sums in the
    same item order as the sparse x dense product it replaced, ~0.02 s against 0.18 s (with the transposed
    copy that product needed) for 256 shoppers against a pool of 20,000 (bench/README.md).
    """
    by_item = pool_t if pool_t is not None else sp.csr_matrix(normalized.T)  # items x pool users
    sim = product_to_dense(normalized[users], by_item)  # [users, pool]
    owner = np.arange(normalized.shape[0]) if pool is None else pool
    at = np.minimum(np.searchsorted(owner, users), len(owner) - 1)
    mine = owner[at] == users  # a user is not their own neighbour
    sim[np.flatnonzero(mine), at[mine]] = 0
    sim[sim == 0] = -np.inf  # not stored: never a neighbour
    return _top_n_csr(sim, n, owner, normalized.shape[0])


_DENSE_SIMILARITY_SHARE = 3  # item similarities are held dense once over 1/3 of the pairs are stored
_DENSITY_SAMPLE = 512  # items whose rows estimate that share


def item_cosine(normalized: sp.csr_matrix, keep: int | None = None) -> sp.csr_matrix | np.ndarray:
    """Item-item cosine similarities of ``normalized``'s unit columns, an item never its own neighbour (float32,
    ``(n_items, n_items)``): CSR, or one dense array once more than a third of the pairs are similar.

    Computed ``_TOP_N_BLOCK_CELLS`` cells of items at a time, so that no whole sparse product and no copy of
    it (the diagonal's removal, the float32 cast) are ever held. Dense past a third, because a dense array
    then costs at most 1.5 times CSR's 8 bytes a stored pair, and scoring 256 shoppers becomes one sparse x
    dense product with the same values to the bit: at 10M events 41% of the 20,000^2 pairs are similar,
    1.6 GB dense against 1.3 GB as CSR, and a batch scores in 0.07 s against 0.25 s (bench/README.md). The
    share is estimated first on the rows of a seeded sample of 512 items (item ids may be ordered by
    popularity, so the first rows would not do); the values do not depend on the choice. With ``keep``
    each row keeps its ``keep`` most similar items (as ``keep_top_n_per_row``; a mostly filled block ranked in
    one dense array), block by block: CSR, and
    the whole unpruned product (1.3 GB at 10M events) is never held.
    """
    n = normalized.shape[1]
    by_item = sp.csr_matrix(normalized.T)
    dense = None
    if keep is None and n > 0:  # the share of similar pairs, estimated on a seeded sample of the items' rows
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, _DENSITY_SAMPLE), replace=False))
        sampled = sp.csr_matrix(by_item[sample] @ normalized)
        if sampled.nnz * _DENSE_SIMILARITY_SHARE > len(sample) * n:
            dense = np.zeros((n, n), np.float32)
    step = max(1, _TOP_N_BLOCK_CELLS // max(n, 1))
    blocks: list[sp.csr_matrix] = []
    for start in range(0, n, step):
        items = by_item[start : start + step]
        rows = np.arange(items.shape[0])
        if dense is not None:
            block = product_to_dense(items, normalized, out=dense[start : start + items.shape[0]])
            block[rows, rows + start] = 0  # an item does not recommend itself
            continue
        if keep is not None:
            work = product_to_dense(items, normalized)
            work[rows, rows + start] = 0
            if np.count_nonzero(work) * _DENSE_SHARE >= work.size:  # mostly filled: ranked as one dense block
                work[work == 0] = -np.inf  # not stored (SciPy's product stores no zero sum): never kept
                blocks.append(_top_n_csr(work, keep))
            else:
                blocks.append(keep_top_n_per_row(sp.csr_matrix(work), keep))
            continue
        part = sp.csr_matrix(items @ normalized)
        owner = np.repeat(rows, np.diff(part.indptr))
        part.data[part.indices == owner + start] = 0
        part.eliminate_zeros()
        blocks.append(part)
    if dense is not None:
        return dense
    if not blocks:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.csr_matrix(sp.vstack(blocks, format="csr"), shape=(n, n))


def _check_fitted(model: object, attr: str) -> None:
    if getattr(model, attr, None) is None:
        raise RuntimeError(f"{type(model).__name__} is not fitted; call fit(train) first")


class MostPopular:
    """Scores every item by its number of distinct train users.

    The non-personalised floor any real model must beat. All users get the
    same scores.
    """

    def __init__(self) -> None:
        self.item_counts_: np.ndarray | None = None

    def fit(self, train: sp.spmatrix | sp.sparray) -> MostPopular:
        """Counts users per item.

        Args:
          train: Sparse ``(n_users, n_items)`` interactions.

        Returns:
          self.
        """
        x = binarize(train)
        self.item_counts_ = np.asarray(x.sum(axis=0), dtype=np.float32).ravel()
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Returns float32 ``(len(user_idx), n_items)``: item counts per row."""
        _check_fitted(self, "item_counts_")
        n = len(np.asarray(user_idx).reshape(-1))
        return np.tile(self.item_counts_, (n, 1))


class ItemKNN:
    """Item-based nearest neighbours with cosine similarity.

    ``S[j, i] = cos(X[:, j], X[:, i])`` over the binary user-item matrix X,
    with ``S[i, i] = 0`` so an item does not recommend itself. With
    ``neighbours=n`` each row j keeps only its n most similar items (item j,
    if in a user's history, votes only for its n nearest neighbours).
    ``score(u) = x_u @ S``. The default, ``AUTO``, keeps every pair up to a
    catalogue size and a bounded number past it (``item_neighbours_bound``);
    ``bounded_neighbours_`` then says how many.

    Complexity: fitting computes ``X^T X`` sparsely, a block of items at a time,
    O(sum_u |I_u|^2) time and O(nnz(S)) <= O(n_items^2) memory: CSR, or a dense
    float32 array where more than a third of the pairs are similar (``item_cosine``;
    pruning keeps CSR and bounds it to ``n_items * neighbours``). Scoring a batch
    of b users is a sparse x sparse or sparse x dense product into a dense
    ``b x n_items`` output.

    Args:
      neighbours: Neighbours kept per item; ``None`` keeps all; ``AUTO`` all
        up to ``RECSYS_ITEM_KNN_EXACT_ITEMS`` items, else
        ``RECSYS_ITEM_KNN_NEIGHBOURS``.
    """

    def __init__(self, neighbours: int | None | str = AUTO) -> None:
        if neighbours != AUTO and neighbours is not None and (not isinstance(neighbours, int) or neighbours < 1):
            raise ValueError(f"neighbours must be >= 1, None or {AUTO!r}, got {neighbours!r}")
        self.neighbours = neighbours
        self.similarity_: sp.csr_matrix | np.ndarray | None = None  # dense past a third full: ``item_cosine``
        self.train_: sp.csr_matrix | None = None
        self.bounded_neighbours_: int | None = None  # what AUTO kept per item, past the catalogue size

    def fit(self, train: sp.spmatrix | sp.sparray) -> ItemKNN:
        """Builds the (optionally pruned) item-item cosine matrix.

        Args:
          train: Sparse ``(n_users, n_items)`` interactions.

        Returns:
          self.
        """
        x = binarize(train)
        norms = np.sqrt(np.asarray(x.sum(axis=0), dtype=np.float64).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        xn = sp.csr_matrix(x.multiply(inv[None, :]), dtype=np.float32)
        keep = self.neighbours
        if keep == AUTO:
            keep = self.bounded_neighbours_ = item_neighbours_bound(x.shape[1])
        self.similarity_ = item_cosine(xn, keep=keep)
        self.train_ = x
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Returns float32 ``(len(user_idx), n_items)``: ``X[user_idx] @ S``."""
        _check_fitted(self, "similarity_")
        rows = self.train_[np.asarray(user_idx).reshape(-1)]
        scores = rows @ self.similarity_  # sparse x dense where the similarities are dense: no sparse result
        return np.asarray(scores.toarray() if sp.issparse(scores) else scores, dtype=np.float32)


class UserKNN:
    """User-based nearest neighbours with cosine similarity.

    ``r_hat(u, i) = sum_{v in N(u)} s(u, v) * r(v, i)`` where ``N(u)`` are the
    ``neighbours`` users most cosine-similar to u (u itself excluded).

    Similarities are computed at scoring time per batch of users, so memory
    is O(batch * n_users) rather than O(n_users^2); a batch costs a sparse
    ``X_b @ X^T`` product.

    Args:
      neighbours: Number of most similar users used per user; ``None`` uses
        all.
    """

    def __init__(self, neighbours: int | None = 50) -> None:
        if neighbours is not None and neighbours < 1:
            raise ValueError(f"neighbours must be >= 1 or None, got {neighbours}")
        self.neighbours = neighbours
        self.train_: sp.csr_matrix | None = None
        self.normalized_: sp.csr_matrix | None = None

    def fit(self, train: sp.spmatrix | sp.sparray) -> UserKNN:
        """Stores the binary matrix and its row-normalised copy.

        Args:
          train: Sparse ``(n_users, n_items)`` interactions.

        Returns:
          self.
        """
        x = binarize(train)
        norms = np.sqrt(np.asarray(x.sum(axis=1), dtype=np.float64).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.train_ = x
        self.normalized_ = sp.csr_matrix(x.multiply(inv[:, None]), dtype=np.float32)
        self.pool_ = neighbour_pool(np.diff(x.indptr))
        self.pool_t_ = None if self.pool_ is None else sp.csr_matrix(self.normalized_[self.pool_].T)
        if self.pool_ is not None:
            log.info("user-kNN: neighbours among the %d most active of %d users", len(self.pool_), x.shape[0])
        return self

    def user_similarity(self, user_idx: np.ndarray) -> sp.csr_matrix:
        """Cosine similarities of the given users to all users, pruned.

        Args:
          user_idx: 1-D int array of user indices.

        Returns:
          CSR ``(len(user_idx), n_users)`` with self-similarity removed and at
          most ``neighbours`` entries per row.
        """
        _check_fitted(self, "normalized_")
        user_idx = np.asarray(user_idx).reshape(-1)
        return pooled_similarity(self.normalized_, user_idx, self.pool_, self.pool_t_, self.neighbours)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Returns float32 ``(len(user_idx), n_items)``: ``S_top @ X``."""
        sim = self.user_similarity(user_idx)
        return np.asarray(product_to_dense(sim, self.train_), dtype=np.float32)


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck, 2019).

    Closed form: ``P = (X^T X + l2 I)^-1``, ``B = I - P / diag(P)`` (each
    column j divided by ``P[j, j]``), which makes ``diag(B) = 0`` so an item
    cannot predict itself. ``score(u) = x_u @ B``.

    Complexity: O(n_items^3) time and O(n_items^2) memory (a dense float64
    inverse), so it suits catalogues up to a few tens of thousands of items.

    Args:
      l2: L2 regularisation added to the Gram diagonal.
    """

    def __init__(self, l2: float = 200.0) -> None:
        if l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2 = l2
        self.weights_: np.ndarray | None = None
        self.train_: sp.csr_matrix | None = None

    def fit(self, train: sp.spmatrix | sp.sparray) -> EASE:
        """Solves for the item-item weight matrix B.

        Args:
          train: Sparse ``(n_users, n_items)`` interactions.

        Returns:
          self.
        """
        x = binarize(train)
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self.weights_ = b.astype(np.float32)
        self.train_ = x
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Returns float32 ``(len(user_idx), n_items)``: ``X[user_idx] @ B``."""
        _check_fitted(self, "weights_")
        rows = self.train_[np.asarray(user_idx).reshape(-1)]
        return np.asarray(rows @ self.weights_, dtype=np.float32)


class BoughtBefore:
    """A shopper's own past items first (the most popular of them first), then the most popular others.

    The replenishment floor: where repeat purchases count (the backtest's with_repeats
    variant), buying again what one bought before is what a model must beat.
    """

    def __init__(self) -> None:
        self.train_: sp.csr_matrix | None = None
        self.popularity_: np.ndarray | None = None

    def fit(self, train: sp.spmatrix | sp.sparray) -> BoughtBefore:
        self.train_ = binarize(train)
        counts = np.asarray(self.train_.sum(axis=0), dtype=np.float32).ravel()
        self.popularity_ = counts / (counts.max() + 1.0) if counts.size else counts  # in [0, 1): below any own item
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Returns float32 ``(len(user_idx), n_items)``: 1 + popularity for own items, popularity for the rest."""
        _check_fitted(self, "train_")
        own = self.train_[np.asarray(user_idx).reshape(-1)].toarray()
        return (own + self.popularity_[None, :]).astype(np.float32)


BASELINES: dict[str, Callable[..., Recommender]] = {
    names.MOST_POPULAR: MostPopular,
    names.ITEM_KNN: ItemKNN,
    names.USER_KNN: UserKNN,
    names.EASE: EASE,
    names.BOUGHT_BEFORE: BoughtBefore,
}
