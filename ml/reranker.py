"""The ranking stage: a small MLP that re-orders the two-tower model's candidates.

The source articles describe recommendation in two steps: retrieval narrows the
catalogue to a few hundred items per shopper, and a ranking model scores each
(shopper, item) pair with features neither tower sees together. Here the features are

* the retrieval score and rank of the candidate;
* the item's popularity (log count) and how similar it is to the shopper's own items
  by co-occurrence (item-kNN cosine summed over them, ``NEIGHBOURS`` kept per item);
* the shopper-item fit: the share of the shopper's items in the candidate's category and
  the distance between the candidate's price band and the shopper's average band;
* the shopper's activity (log item count).

They are computed in TensorFlow (``RankingFeatures``), so the batch tables and the
SavedModel's online answer run the same code. The MLP is trained the way the protocol
tunes everything else: the retrieval model fitted on ``fit`` proposes candidates for the
validation users, whose validation items are the labels; a listwise softmax loss over
each shopper's candidates learns the order. Its epochs are chosen on a quarter of those
users kept out of training, and the pipeline uses the stage only where it beats the
retrieval order on another quarter, kept for that check alone -- the issue's rule, "only
if it improves the primary metric".
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from ml.baselines import ItemKNN
from ml.metrics import ranking_metrics
from ml.ranking import batched_top_k, top_k

log = logging.getLogger(__name__)

FEATURES = (
    "retrieval_score",
    "retrieval_rank",
    "item_log_popularity",
    "item_knn_score",
    "category_share",
    "price_band_distance",
    "user_log_activity",
)
N_CANDIDATES = (
    100  # candidates per shopper the stage re-orders, whatever K is asked (the rest follow in retrieval order)
)
MIN_USERS = 10  # validation users needed in each group (learning, choosing epochs, deciding) to train the stage at all
NEIGHBOURS = 100  # co-occurrence neighbours kept per item: bounds the similarity table at n_items x 100


class RankingFeatures(tf.Module):
    """``FEATURES`` of candidates, from what shoppers had (``interactions``) and the catalogue.

    The co-occurrence table and the popularity are learned from ``interactions``; a call
    describes candidates against the shoppers' own items, given as a dense multi-hot batch.
    """

    def __init__(
        self,
        interactions: sp.csr_matrix,
        item_category: np.ndarray | None = None,
        item_price_band: np.ndarray | None = None,
    ):
        super().__init__()
        n_items = interactions.shape[1]
        similarity = sp.csr_matrix(ItemKNN(NEIGHBOURS).fit(interactions).similarity_)
        similarity.sort_indices()
        # each item's neighbours as one padded row (item 0 with weight 0 fills a short row): the co-occurrence
        # score is then a gather of the shopper's own items' rows, not a product with the whole table
        width = max(int(np.diff(similarity.indptr).max(initial=0)), 1)
        rows = np.repeat(np.arange(n_items), np.diff(similarity.indptr))
        slot = np.arange(similarity.nnz) - similarity.indptr[rows]
        neighbour_items = np.zeros((n_items, width), np.int64)
        neighbour_weights = np.zeros((n_items, width), np.float32)
        neighbour_items[rows, slot] = similarity.indices
        neighbour_weights[rows, slot] = similarity.data
        self.n_items = n_items
        self.neighbour_items = tf.constant(neighbour_items)
        self.neighbour_weights = tf.constant(neighbour_weights)
        counts = np.asarray(sp.csr_matrix(interactions).sum(axis=0)).ravel()
        self.log_popularity = tf.constant(np.log1p(counts).astype(np.float32))
        category = np.zeros(n_items, np.int64) if item_category is None else np.asarray(item_category, np.int64)
        self.category = tf.constant(category)
        self.category_one_hot = tf.sparse.SparseTensor(
            np.stack([np.arange(n_items), category], axis=1).astype(np.int64),
            np.ones(n_items, np.float32),
            (n_items, int(category.max(initial=0)) + 1),
        )
        band = np.zeros(n_items, np.float32) if item_price_band is None else np.asarray(item_price_band, np.float32)
        self.price_band = tf.constant(band)

    def __call__(self, seen, candidates, retrieval_scores):
        """seen [B, n_items] float multi-hot, candidates [B, N] int (retrieval order), retrieval_scores [B, N]
        -> [B, N, len(FEATURES)] float32."""
        seen = tf.cast(seen, tf.float32)
        candidates = tf.cast(candidates, tf.int64)
        count = tf.reduce_sum(seen, axis=1, keepdims=True)  # [B, 1]
        per_item = tf.maximum(count, 1.0)
        knn = self._knn(seen)
        categories = tf.transpose(
            tf.sparse.sparse_dense_matmul(self.category_one_hot, seen, adjoint_a=True, adjoint_b=True)
        )
        user_price = tf.linalg.matvec(seen, self.price_band)[:, tf.newaxis] / per_item
        n = tf.shape(candidates)[1]
        features = [
            tf.cast(retrieval_scores, tf.float32),
            tf.broadcast_to(tf.math.log1p(tf.cast(tf.range(n), tf.float32))[tf.newaxis, :], tf.shape(candidates)),
            tf.gather(self.log_popularity, candidates),
            tf.gather(knn, candidates, batch_dims=1),
            tf.gather(categories / per_item, tf.gather(self.category, candidates), batch_dims=1),
            tf.abs(tf.gather(self.price_band, candidates) - user_price),
            tf.broadcast_to(tf.math.log1p(count), tf.shape(candidates, out_type=tf.int32)),
        ]
        values = tf.stack([tf.cast(f, tf.float32) for f in features], axis=-1)
        return tf.where(tf.math.is_finite(values), values, -1.0)  # a retrieval score of -inf: an excluded filler

    def _knn(self, seen):
        """[B, n_items]: each item's co-occurrence similarity summed over the shopper's own items (``seen @ S``).

        Built from the shopper's items' neighbour rows, a scatter of (items had x ``NEIGHBOURS``) values, the
        same values (to the bit on the 10M-event shop): the product with the whole table (n_items x ``NEIGHBOURS`` x B
        multiply-adds a batch) made the features of 512 shoppers at 20,000 items take 1.60 s, 0.16 s
        this way (bench/README.md).
        """
        had = tf.where(seen != 0)  # [nnz, 2]: (row, item), row by row
        weights = tf.gather(self.neighbour_weights, had[:, 1]) * tf.gather_nd(seen, had)[:, tf.newaxis]
        cells = had[:, :1] * self.n_items + tf.gather(self.neighbour_items, had[:, 1])  # [nnz, width]
        batch = tf.shape(seen, out_type=tf.int64)[0]
        summed = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), tf.reshape(cells, [-1]), batch * self.n_items)
        return tf.reshape(summed, [batch, self.n_items])


def _mlp(n_features: int, normalizer: keras.layers.Normalization, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, n_features))
    x = normalizer(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x)[..., 0], name="ranking_mlp")


def _listwise_loss(labels, logits):
    """Softmax cross-entropy of each user's candidates against their share of the positives."""
    weights = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1.0)
    return -tf.reduce_sum(weights * tf.nn.log_softmax(logits, axis=1), axis=1)


def _ndcg(
    order_scores: np.ndarray, users: np.ndarray, candidates: np.ndarray, truth: sp.csr_matrix, k: int = 20
) -> float:
    k = min(k, candidates.shape[1])  # fewer candidates than K: NDCG over all of them
    top = np.take_along_axis(candidates, np.argsort(-order_scores, axis=1, kind="stable")[:, :k], axis=1)
    return float(ranking_metrics(top, truth[users], truth.shape[1], ks=(k,))[f"ndcg@{k}"])


def fit_on_validation(
    data, tuned, item_category: np.ndarray | None = None, item_price_band: np.ndarray | None = None
) -> Ranker:
    """The stage as the pipeline trains it: on the candidates of ``tuned`` (the two-tower model fitted on
    ``data.fit``, read from the fit histories) against the validation items."""
    return Ranker(RankingFeatures(data.fit, item_category, item_price_band)).fit(
        tuned.use_histories(data.fit_histories).score, data.fit, data.validation
    )


class Ranker(tf.Module):
    """The features and the MLP: ``fit`` on validation candidates, then score any candidates.

    A ``tf.Module`` so the SavedModel carries it as it is; ``score_fn`` wraps a retrieval
    score function into one that ranks by the stage (for evaluation and batch tables).
    """

    def __init__(
        self,
        features: RankingFeatures,
        epochs: int = 30,
        patience: int = 3,
        held_out_share: float = 0.5,
        seed: int = 42,
        n_candidates: int = N_CANDIDATES,
    ):
        super().__init__()
        self.features, self.n_candidates = features, n_candidates
        self.epochs, self.patience, self.held_out_share, self.seed = epochs, patience, held_out_share, seed
        self.mlp: keras.Model | None = None
        self.record: dict = {}

    def using(self, features: RankingFeatures) -> Ranker:
        """The same trained MLP over features learned from other interactions (train, or everything known)."""
        ranker = Ranker(features, self.epochs, self.patience, self.held_out_share, self.seed, self.n_candidates)
        ranker.mlp, ranker.record = self.mlp, self.record
        return ranker

    def save(self, path) -> None:
        self.mlp.save(path)

    @classmethod
    def load(cls, path, features: RankingFeatures, n_candidates: int = N_CANDIDATES) -> Ranker:
        ranker = cls(features, n_candidates=n_candidates)
        ranker.mlp = keras.models.load_model(path, compile=False)
        return ranker

    def candidate_scores(self, seen, candidates, retrieval_scores):
        """The MLP's score of each candidate [B, N] (higher first)."""
        return self.mlp(self.features(seen, candidates, retrieval_scores))

    def _values(
        self, seen: sp.csr_matrix, users: np.ndarray, candidates: np.ndarray, scores: np.ndarray, batch_size: int = 512
    ) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(
                    self.features(
                        seen[users[i : i + batch_size]].toarray(),
                        candidates[i : i + batch_size],
                        scores[i : i + batch_size],
                    )
                )
                for i in range(0, len(users), batch_size)
            ]
        )

    def fit(self, retrieval_score_fn, seen: sp.csr_matrix, truth: sp.csr_matrix) -> Ranker:
        """Learn the order of ``retrieval_score_fn``'s candidates (unseen items) against ``truth``'s items.

        ``seen`` is what the retrieval model and the features know of each user (the fit
        split); ``truth`` the held-out items (validation). The validation users are split
        three ways: the MLP learns from half of them, a quarter chooses its epochs, and the
        last quarter -- used for nothing else -- decides whether the stage beats the
        retrieval order (choosing the epoch and judging on the same users would favour the
        stage by chance). Past ``ml.tuning_shoppers``' bound, on a seeded sample of the validation users.
        """
        from ml import tuning_shoppers

        sample_note = tuning_shoppers.note(truth)
        truth = tuning_shoppers.sampled(truth)
        users = np.flatnonzero(np.diff(truth.indptr) > 0)
        role = np.random.default_rng(self.seed).random(len(users))
        tune = (role >= 1 - self.held_out_share) & (role < 1 - self.held_out_share / 2)
        check = role >= 1 - self.held_out_share / 2
        learn = ~(tune | check)
        n_candidates = min(self.n_candidates, seen.shape[1])
        self.record = {"features": list(FEATURES), "candidates": n_candidates, "improves": False}
        if sample_note is not None:
            self.record = self.record | {"validation_shoppers": sample_note}
        if min(learn.sum(), tune.sum(), check.sum()) < MIN_USERS:
            return self._skip(
                f"{len(users)} validation users: fewer than {MIN_USERS} to learn from, to choose epochs on "
                f"or to check on"
            )
        candidates, scores = batched_top_k(retrieval_score_fn, users, n_candidates, exclude=seen)
        values = self._values(seen, users, candidates, scores)
        labels = np.take_along_axis(np.asarray(truth[users].todense()), candidates, axis=1).astype(np.float32)
        learn_rows = np.flatnonzero(learn & (labels.sum(axis=1) > 0))  # users with no positive teach nothing
        if len(learn_rows) < MIN_USERS:
            return self._skip(
                f"{len(learn_rows)} validation users with a positive candidate to learn from: fewer than {MIN_USERS}"
            )
        normalizer = keras.layers.Normalization(axis=-1)
        normalizer.adapt(values[learn_rows].reshape(-1, values.shape[-1]))
        self.mlp = _mlp(values.shape[-1], normalizer, self.seed)
        self.mlp.compile(optimizer=keras.optimizers.Adam(0.003), loss=_listwise_loss)

        def ndcg(rows, order_scores=None):
            if order_scores is None:  # retrieval order
                order_scores = -np.arange(n_candidates, dtype=np.float32)[None, :].repeat(rows.sum(), 0)
            return _ndcg(order_scores, users[rows], candidates[rows], truth)

        best, best_weights, history, best_epoch = -1.0, None, [], 0
        for epoch in range(self.epochs):
            self.mlp.fit(values[learn_rows], labels[learn_rows], batch_size=64, epochs=1, verbose=0, shuffle=True)
            value = ndcg(tune, np.asarray(self.mlp.predict(values[tune], batch_size=512, verbose=0)))
            history.append(round(value, 5))
            if value > best:
                best, best_weights, best_epoch = value, self.mlp.get_weights(), epoch + 1
            elif epoch + 1 - best_epoch >= self.patience:
                break
        self.mlp.set_weights(best_weights)
        retrieval = ndcg(check)
        reranked = ndcg(check, np.asarray(self.mlp.predict(values[check], batch_size=512, verbose=0)))
        self.record = dict(self.record) | {  # a new dict: tf.Module tracks attributes, and in-place edits break saving
            "trained_users": int(len(learn_rows)),
            "tuning_users": int(tune.sum()),
            "held_out_users": int(check.sum()),
            "best_epoch": best_epoch,
            "tuning_ndcg@20_per_epoch": history,
            "held_out_ndcg@20": {"retrieval_order": round(retrieval, 5), "reranked": round(reranked, 5)},
            "improves": bool(reranked > retrieval),
        }
        log.info(
            "ranking stage, %d held-out validation users: ndcg@20 %.4f in retrieval order, %.4f reranked "
            "(epoch %d): %s",
            check.sum(),
            retrieval,
            reranked,
            best_epoch,
            "used" if reranked > retrieval else "not used",
        )
        return self

    def _skip(self, reason: str) -> Ranker:
        self.record = dict(self.record) | {"skipped": reason}
        log.info("ranking stage not trained: %s", reason)
        return self

    def rerank(self, seen, items, scores):
        """Re-order candidate lists: ``items`` / ``scores`` [B, M] in retrieval order (M >= 1). The first
        ``n_candidates`` get the MLP's score; the rest keep their retrieval order below all of them.
        Returns the new scores [B, M] (items are unchanged; -inf stays -inf). The batch tables and the
        SavedModel both call this, so they rank alike whatever K they ask for."""
        scores = tf.cast(scores, tf.float32)
        n = tf.minimum(self.n_candidates, tf.shape(scores)[1])
        head_scores = scores[:, :n]
        ranked = self.candidate_scores(seen, items[:, :n], head_scores)
        ranked = tf.where(tf.math.is_finite(head_scores), ranked, -np.inf)
        floor = tf.reduce_min(tf.where(tf.math.is_finite(ranked), ranked, np.inf), axis=1, keepdims=True) - 1.0
        shift = floor - head_scores[:, n - 1 : n]  # the n-th candidate lands just below the lowest MLP score
        shift = tf.where(tf.math.is_finite(shift), shift, 0.0)
        return tf.concat([ranked, scores[:, n:] + shift], axis=1)

    def score_fn(self, retrieval_score_fn, seen: sp.csr_matrix, k: int):
        """A score function (users -> [b, n_items]) ranking by the stage: the best ``max(k, n_candidates)``
        unseen items by retrieval get ``rerank``'s scores, every other item -inf."""

        def score(users: np.ndarray) -> np.ndarray:
            retrieval = np.asarray(retrieval_score_fn(users), dtype=np.float32)
            wanted = min(max(k, self.n_candidates), retrieval.shape[1])
            candidates, scores = top_k(retrieval, wanted, exclude=seen[users], overwrite=True)
            ranked = np.asarray(self.rerank(seen[users].toarray(), candidates, scores))
            out = np.full(retrieval.shape, -np.inf, dtype=np.float32)
            np.put_along_axis(out, candidates.astype(np.int64), ranked, axis=1)
            return out

        return score
