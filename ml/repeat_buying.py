"""Models of buying again: the count-then-recency "buy again" list and TIFU-KNN.

Where shoppers re-order (a wholesale customer's weekly staples, a household's milk), a
list of what they bought most often and most recently is hard to beat: "A Next Basket
Recommendation Reality Check" (Li et al., TOIS 2023) found deep models rarely do. Both
models read a ``ml.data.RepeatHistory`` (how often and how recently each shopper had each
item before a reference time), never the binary matrix alone, and follow the baselines'
``fit(train)`` / ``score(users)`` contract.

* ``BuyAgain``: the shopper's own items by the number of days they had them, then by how
  recently; everything else after them, by popularity.
* ``TIFUKNN`` (Hu et al., KDD 2020, "Modeling Personalized Item Frequency Information for
  Next-basket Recommendation"): each shopper's item-frequency vector with time decay --
  baskets (here: days) in groups of ``group_size`` from the newest, decayed within a group
  by ``basket_decay`` and across groups by ``group_decay`` -- blended with the mean vector
  of the ``neighbours`` most similar shoppers (``alpha`` on one's own).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ml import tuning_shoppers
from ml.baselines import binarize, neighbour_pool, pooled_similarity
from ml.data import RepeatHistory
from ml.metrics import ranking_metrics
from ml.names import NDCG_20
from ml.ranking import top_k, usable_cpus
from ml.sparse_product_kernel import product_to_dense


class BuyAgain:
    """A shopper's own items, most often then most recently had first; then the most popular others."""

    def __init__(self, repeats: RepeatHistory) -> None:
        self.repeats = repeats
        self.own_: sp.csr_matrix | None = None
        self.popularity_: np.ndarray | None = None

    def fit(self, train: sp.spmatrix | sp.sparray) -> BuyAgain:
        counts = np.asarray(binarize(train).sum(axis=0), dtype=np.float32).ravel()
        self.popularity_ = counts / (counts.max() + 1.0) if counts.size else counts  # in [0, 1): below any own item
        own = self.repeats.days.copy().tocsr()
        since = self.repeats.days_since.tocsr()
        # days first (integers >= 1), then recency as a fraction below the next count: 0.5 / days_since < 1
        own.data = 1.0 + own.data + 0.5 / np.maximum(since.data, 1.0)
        self.own_ = own.astype(np.float32)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        users = np.asarray(user_idx).reshape(-1)
        own = self.own_[users].toarray()
        return np.where(own > 0, own, self.popularity_[None, :]).astype(np.float32)


def decayed_frequency(
    repeats: RepeatHistory, group_size: int, basket_decay: float, group_decay: float
) -> sp.csr_matrix:
    """TIFU-KNN's user vectors: each day a basket, newest first, decayed within and across groups of days."""
    users, items, ago = repeats.occasions
    shape = repeats.days.shape
    if len(users) == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    # each user's distinct days, newest first: its rank j, group j // m and place in the group j % m
    ago = ago.astype(np.int64)
    span = int(ago.max()) + 1
    keys, day_of_event = np.unique(users.astype(np.int64) * span + ago, return_inverse=True)  # by user, newest first
    day_users = keys // span
    starts = np.flatnonzero(np.r_[True, day_users[1:] != day_users[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    rank = np.arange(len(keys)) - np.repeat(starts, sizes)
    groups = np.repeat((sizes + group_size - 1) // group_size, sizes)
    weight = group_decay ** (rank // group_size) * basket_decay ** (rank % group_size) / (group_size * groups)
    per_event = weight[day_of_event]
    vectors = sp.csr_matrix((per_event, (users, items)), shape=shape)
    vectors.sum_duplicates()
    return vectors.astype(np.float32)


class TIFUKNN:
    """Personal item frequency with time decay, blended with the nearest shoppers' (TIFU-KNN)."""

    def __init__(
        self,
        repeats: RepeatHistory,
        group_size: int = 7,
        basket_decay: float = 0.9,
        group_decay: float = 0.7,
        neighbours: int = 300,
        alpha: float = 0.7,
    ) -> None:
        self.repeats, self.group_size, self.basket_decay, self.group_decay = (
            repeats,
            group_size,
            basket_decay,
            group_decay,
        )
        self.neighbours, self.alpha = neighbours, alpha
        self.vectors_: sp.csr_matrix | None = None
        self.normalized_: sp.csr_matrix | None = None

    def fit(self, train: sp.spmatrix | sp.sparray | None = None) -> TIFUKNN:
        vectors = decayed_frequency(self.repeats, self.group_size, self.basket_decay, self.group_decay)
        norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1), dtype=np.float64).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.vectors_ = vectors
        self.normalized_ = sp.csr_matrix(vectors.multiply(inv[:, None]), dtype=np.float32)
        self.pool_ = neighbour_pool(np.diff(self.normalized_.indptr))  # the most active shoppers, past a size
        self.pool_t_ = None if self.pool_ is None else sp.csr_matrix(self.normalized_[self.pool_].T)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        users = np.asarray(user_idx).reshape(-1)
        return _blend(self.vectors_[users].toarray(), self._neighbours(users), self.alpha)

    def top_per_alpha(self, users: np.ndarray, alphas, k: int, batch_size: int = 256) -> dict[float, np.ndarray]:
        """Each blend's top-``k`` items for ``users`` (as ``ml.ranking.batched_top_k`` ranks ``score`` with
        ``alpha``), the neighbours computed once a batch for every ``alpha``: tuning the blend then costs one
        neighbour pass, not one per value (the neighbours are most of a pass's time, bench/README.md)."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        tops = {float(alpha): np.empty((len(users), k), np.int32) for alpha in alphas}

        def rank(start: int) -> None:
            batch = users[start : start + batch_size]
            own, others = self.vectors_[batch].toarray(), self._neighbours(batch)
            for alpha, top in tops.items():
                top[start : start + len(batch)] = top_k(_blend(own, others, alpha), k, overwrite=True)[0]

        starts = range(0, len(users), batch_size)
        threads = max(1, min(usable_cpus(), len(starts)))
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
            list(pool.map(rank, starts))  # re-raises the first failed batch's error
        return tops

    def _neighbours(self, users: np.ndarray) -> np.ndarray:
        """The mean vector of each user's ``neighbours`` most similar other users."""
        sim = pooled_similarity(self.normalized_, users, self.pool_, self.pool_t_, self.neighbours)
        sim.data[:] = 1.0 / self.neighbours  # the mean of the neighbours' vectors
        return np.asarray(product_to_dense(sim, self.vectors_), dtype=np.float32)


def _blend(own: np.ndarray, others: np.ndarray, alpha: float) -> np.ndarray:
    return (alpha * own + (1.0 - alpha) * others).astype(np.float32)


TIFU_GRID = ((0.9, 0.7), (1.0, 1.0), (0.8, 0.5))  # (basket decay, group decay) tried on validation
TIFU_ALPHAS = (0.3, 0.5, 0.7, 0.9)


def tuned_tifu_knn(fit_repeats: RepeatHistory, repeats: RepeatHistory, truth: sp.csr_matrix) -> tuple[TIFUKNN, dict]:
    """TIFU-KNN with its decays and blend chosen by NDCG@20 on ``truth`` (what shoppers had in the validation
    period, repeats counted: nothing excluded; a seeded sample of them past ``ml.tuning_shoppers``' bound), the
    model fitted on ``fit_repeats``; then rebuilt on ``repeats`` (everything before the cut)."""
    sample_note = tuning_shoppers.note(truth)
    truth = tuning_shoppers.sampled(truth)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    scores = {}
    for basket_decay, group_decay in TIFU_GRID:
        model = TIFUKNN(fit_repeats, basket_decay=basket_decay, group_decay=group_decay).fit()
        for alpha, top in model.top_per_alpha(users, TIFU_ALPHAS, 20).items():
            ndcg = ranking_metrics(top, truth[users], truth.shape[1], ks=(20,))[NDCG_20]
            scores[(basket_decay, group_decay, alpha)] = float(ndcg)
    best = max(scores, key=scores.get)
    model = TIFUKNN(repeats, basket_decay=best[0], group_decay=best[1], alpha=best[2]).fit()
    record = {
        "basket_decay": best[0],
        "group_decay": best[1],
        "alpha": best[2],
        "validation_ndcg@20": {f"rb={k[0]},rg={k[1]},alpha={k[2]}": round(v, 5) for k, v in scores.items()},
    }
    if sample_note is not None:
        record["validation_shoppers"] = sample_note
    return model, record
