"""Candidates from several sources, re-ranked by one TensorFlow model with repeat-buying features.

A production recommender does not trust one retrieval model: each source (the two-tower
model, EASE, item-kNN, TIFU-KNN, popularity, the shopper's own past items) proposes its
best items, and a ranking model orders the union with what each source thought of the
item (its score, standardised per shopper, and its rank) beside what the sources cannot
see together: how often and how recently the shopper had the item (``RepeatHistory``),
how often the item is bought again by anyone, how popular it is lately, how active the
shopper is. Where the shop's list may show items bought before (``include_own``), the
shopper's own items are candidates too and the model learns when a repeat beats a new
item; otherwise they are left out.

It is trained the way the protocol tunes everything else: the sources fitted before the
validation period propose candidates, the items had in that period are the labels
(repeats counted or not, as the list will be), and a listwise softmax learns the order.
Half of the validation shoppers teach, a quarter chooses the epochs and the last quarter
-- for nothing else -- checks it beats the best single source; the report says which won.
At test time the same model ranks the candidates of the sources refitted before the cut,
with the repeat features computed at the cut.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from threadpoolctl import threadpool_limits

from ml import tuning_shoppers
from ml.data import RepeatHistory, stored_cells
from ml.metrics import per_user_ndcg
from ml.ranking import top_k, usable_cpus

log = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]
PER_SOURCE = 50  # candidates each source proposes per shopper (< 255: ranks are kept as bytes)
OWN_CANDIDATES = 100  # the shopper's own items proposed (most often, then most recently had, first)
RECENT_DAYS = 30  # "popular lately": shoppers who had the item in the last RECENT_DAYS before the reference
MIN_USERS = 10
MAX_EPOCHS = 20  # the ranker stops earlier when 2 epochs in a row do not improve the tuning users' NDCG@20
ITEM_FEATURES = ("item_log_popularity", "item_log_recent_popularity", "item_repurchase_rate")
OWN_FEATURES = ("own", "own_log_days", "own_log_days_since")
USER_FEATURES = ("user_log_items", "user_log_days")


class Context:
    """What the features know at one reference time: the shoppers' items and repeat history, item statistics."""

    def __init__(self, seen: sp.csr_matrix, repeats: RepeatHistory):
        self.seen = sp.csr_matrix(seen, dtype=np.float32)
        self.repeats = repeats
        days = repeats.days.tocsr()
        buyers = np.asarray((days > 0).sum(axis=0)).ravel().astype(np.float32)
        again = np.asarray((days > 1).sum(axis=0)).ravel().astype(np.float32)
        recent = repeats.days_since.tocsr().copy()
        recent.data = (recent.data <= RECENT_DAYS).astype(np.float32)
        recent.eliminate_zeros()
        counts = np.asarray(self.seen.sum(axis=0)).ravel()
        self.item = np.stack(
            [
                np.log1p(counts),
                np.log1p(np.asarray(recent.sum(axis=0)).ravel()),
                (again + 1.0) / (buyers + 10.0),  # smoothed toward 10%: an item with 1 buyer says little
            ],
            axis=1,
        ).astype(np.float32)
        self.user = np.stack(
            [np.log1p(np.diff(self.seen.indptr)), np.log1p(np.asarray(days.sum(axis=1)).ravel())], axis=1
        ).astype(np.float32)


def _row_stats(scores: np.ndarray, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and standard deviation (1 where it is 0) over its ``counted`` items ([b, 1] each).

    ``np.nanmean`` and ``np.nanstd``'s arithmetic, step for step (the same values to the bit), without
    their copies of the whole [b, n_items] block: a third of the time, on every source of every batch.
    """
    values = np.where(counted, scores, np.float32(0))
    count = counted.sum(axis=1, dtype=np.intp, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a row with nothing counted: NaN, as np.nanmean
        mean = values.sum(axis=1, keepdims=True)
        np.true_divide(mean, count, out=mean, casting="unsafe")
        deviation = np.subtract(values, mean, out=values)
        deviation[~counted] = 0
        std = np.square(deviation, out=deviation).sum(axis=1, keepdims=True)
        np.true_divide(std, count, out=std, casting="unsafe")
        np.sqrt(std, out=std)
    return mean, np.where(std > 0, std, 1.0)


def candidates_and_features(
    sources: dict[str, ScoreFn], context: Context, users: np.ndarray, include_own: bool, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates [b, width] (item index, -1 = none) and their features [b, width, F] for ``users``.

    Whole rows are read once per source for the candidates, the row statistics and the
    ranks; the features themselves are computed on the chosen candidates only (a few
    hundred a row, not the catalogue: 20,000 items at 10M events).
    """
    seen = context.seen[users]
    n_items = seen.shape[1]
    eligible = np.ones((len(users), n_items), bool)
    if not include_own:
        had = seen.data > 0  # what ``seen.toarray() > 0`` marks
        eligible[np.repeat(np.arange(len(users)), np.diff(seen.indptr))[had], seen.indices[had]] = False
    chosen = np.zeros_like(eligible)
    per_source = []
    rows = np.arange(len(users))[:, None]
    # each [b, n_items] pass below is ~5 ms at 256 x 20,000, times the sources, on every batch of every pass:
    # no copy where nothing needs replacing, ranks as bytes (PER_SOURCE + 1 <= 255)
    for fn in sources.values():
        scores = np.asarray(fn(users), dtype=np.float32)
        finite = np.isfinite(scores)
        if not finite.all():
            scores = np.where(finite, scores, np.nan)
        usable = np.logical_and(eligible, finite, out=finite)
        k = min(PER_SOURCE, n_items)
        # best first, ties to the lower item (``ml.ranking.top_k``'s compiled pass instead of a partition of the row)
        top, top_scores = top_k(np.where(usable, scores, np.float32(-np.inf)), k, overwrite=True)
        ranked = np.isfinite(top_scores)  # a row with fewer than k scored items: the rest are unranked
        rank = np.full(scores.shape, PER_SOURCE + 1, np.uint8)
        rank[rows, top] = np.where(ranked, np.arange(1, k + 1, dtype=np.uint8)[None, :], PER_SOURCE + 1)
        chosen[rows, top] |= ranked
        per_source.append((scores, *_row_stats(scores, usable), rank))
    days = context.repeats.days[users].toarray()
    since = context.repeats.days_since[users].toarray()
    if include_own:
        own_score = np.where(days > 0, days + 0.5 / np.maximum(since, 1.0), -np.inf)
        k = min(OWN_CANDIDATES, n_items)
        top = np.argpartition(-own_score, k - 1, axis=1)[:, :k]
        chosen[rows, top] |= np.isfinite(own_score[rows, top])
    # each row's candidates, padded with -1 to ``width``
    counts = chosen.sum(axis=1)
    candidates = np.full((len(users), width), -1, np.int64)
    r, c = np.nonzero(chosen)
    place = np.arange(len(r)) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
    keep = place < width
    candidates[r[keep], place[keep]] = c[keep]
    safe = np.maximum(candidates, 0)
    take = lambda matrix: np.take_along_axis(matrix, safe, axis=1)  # noqa: E731
    columns = []
    for scores, mean, std, rank in per_source:  # the score standardised per shopper, the log of its rank
        columns += [np.nan_to_num((take(scores) - mean) / std, nan=-3.0), np.log1p(take(rank).astype(np.float32))]
    own = take(days)
    columns += [(own > 0).astype(np.float32), np.log1p(own), np.where(own > 0, np.log1p(take(since)), np.log1p(1000.0))]
    columns += [context.item[safe, j] for j in range(context.item.shape[1])]
    columns += [np.broadcast_to(context.user[users, j][:, None], safe.shape) for j in range(context.user.shape[1])]
    features = np.stack(columns, axis=-1).astype(np.float32)
    features[candidates < 0] = 0.0
    return candidates, features


def candidate_labels(truth: sp.csr_matrix, candidates: np.ndarray) -> np.ndarray:
    """``truth``'s value for each row's candidates (0 where it has none, -1 for padding), float32 [rows, width]:
    looked up by sorted (row, item) keys (``ml.data.stored_cells``), never a dense copy of ``truth``."""
    labels = stored_cells(truth, candidates)[1].astype(np.float32)
    labels[candidates < 0] = -1.0
    return labels


def _listwise_loss(labels, logits):
    mask = labels >= 0
    labels = tf.where(mask, labels, 0.0)
    logits = tf.where(mask, logits, -1e9)
    weights = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1.0)
    return -tf.reduce_sum(weights * tf.nn.log_softmax(logits, axis=1), axis=1)


def _mlp(n_features: int, normalizer, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, n_features))
    x = normalizer(inputs)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x)[..., 0], name="candidate_ranker")


def _ndcg_at_20(scores: np.ndarray, candidates: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Per-user NDCG@20 of ordering ``candidates`` by ``scores`` (padding -1 last, never a hit)."""
    scores = np.where(candidates >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    top = np.take_along_axis(candidates, order, axis=1)
    if top.shape[1] < 20:
        top = np.pad(top, ((0, 0), (0, 20 - top.shape[1])), constant_values=-1)
    return per_user_ndcg(top, truth, truth.shape[1], 20)


class CandidateRanker:
    """The learned ranker over several sources' candidates. ``fit`` on validation, ``score_fn`` at test."""

    def __init__(self, include_own: bool, epochs: int = MAX_EPOCHS, patience: int = 2, seed: int = 42):
        self.include_own, self.epochs, self.patience, self.seed = include_own, epochs, patience, seed
        self.mlp: keras.Model | None = None
        self.width = 0
        self.source_names: list[str] = []
        self.record: dict = {}

    def _width(self, n_sources: int, n_items: int) -> int:
        return min(n_items, n_sources * PER_SOURCE + (OWN_CANDIDATES if self.include_own else 0))

    def _batches(self, sources, context, users, batch_size=256):  # [b, n_items] per source: bounded memory
        """Every user's candidates and features, written batch by batch into arrays allocated once (no
        concatenation: the features are the fit's largest array, ~32 KB a shopper), batches on every usable CPU with
        BLAS on one each (as ``ml.ranking.batched_top_k``: 1.4x on two cores, bench/README.md)."""
        first = candidates_and_features(sources, context, users[:batch_size], self.include_own, self.width)
        candidates = np.empty((len(users), *first[0].shape[1:]), first[0].dtype)
        features = np.empty((len(users), *first[1].shape[1:]), first[1].dtype)
        candidates[:batch_size], features[:batch_size] = first

        def write(start: int) -> None:
            part = candidates_and_features(
                sources, context, users[start : start + batch_size], self.include_own, self.width
            )
            candidates[start : start + batch_size], features[start : start + batch_size] = part

        starts = range(batch_size, len(users), batch_size)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(usable_cpus()) as pool:
            list(pool.map(write, starts))  # re-raises the first failed batch's error
        return candidates, features

    def fit(self, sources: dict[str, ScoreFn], context: Context, truth: sp.csr_matrix) -> CandidateRanker:
        """Learn to order ``sources``' candidates (fitted before the period of ``truth``) against ``truth``."""
        self.source_names = list(sources)
        self.width = self._width(len(sources), truth.shape[1])
        sampled = tuning_shoppers.note(truth)
        truth = tuning_shoppers.sampled(truth)  # past the bound, a seeded sample of the validation shoppers
        users = np.flatnonzero(np.diff(truth.indptr) > 0)
        role = np.random.default_rng(self.seed).random(len(users))
        learn, tune, check = role < 0.5, (role >= 0.5) & (role < 0.75), role >= 0.75
        self.record = {
            "sources": self.source_names,
            "repeats_are_candidates": self.include_own,
            "candidates_per_shopper": self.width,
            "improves": False,
        }
        if sampled is not None:
            self.record["validation_shoppers"] = sampled
        if min(learn.sum(), tune.sum(), check.sum()) < MIN_USERS:
            self.record["skipped"] = f"{len(users)} validation users: too few to learn, tune and check on"
            return self
        # the shoppers in role order (learn, tune, check; each in index order), so that the tuning and the
        # check shoppers' features are slices of one array, not copies of it
        order = np.concatenate([np.flatnonzero(learn), np.flatnonzero(tune), np.flatnonzero(check)])
        users = users[order]
        n_learn, n_tune = int(learn.sum()), int(tune.sum())
        tune, check = slice(n_learn, n_learn + n_tune), slice(n_learn + n_tune, len(users))
        candidates, features = self._batches(sources, context, users)
        truth_users = truth[users]
        labels = candidate_labels(truth_users, candidates)
        learn_rows = np.flatnonzero((labels[:n_learn] > 0).any(axis=1))
        learn_features, learn_labels = features[learn_rows], labels[learn_rows]
        del labels
        normalizer = keras.layers.Normalization(axis=-1)
        normalizer.adapt(learn_features[candidates[learn_rows] >= 0])
        self.mlp = _mlp(features.shape[-1], normalizer, self.seed)
        self.mlp.compile(optimizer=keras.optimizers.Adam(0.002), loss=_listwise_loss)

        def ndcg(rows, scores):
            return float(_ndcg_at_20(scores, candidates[rows], truth_users[rows]).mean())

        best, best_weights, best_epoch, history = -1.0, None, 0, []
        for epoch in range(self.epochs):
            self.mlp.fit(learn_features, learn_labels, batch_size=128, epochs=1, verbose=0, shuffle=True)
            value = ndcg(tune, self._predict(features[tune]))
            history.append(round(value, 5))
            if value > best:
                best, best_weights, best_epoch = value, self.mlp.get_weights(), epoch + 1
            elif epoch + 1 - best_epoch >= self.patience:
                break
        self.mlp.set_weights(best_weights)
        checked = {"ranker": ndcg(check, self._predict(features[check]))}
        for j, name in enumerate(self.source_names):  # each source alone: its own standardised score
            checked[name] = ndcg(check, features[check][..., 2 * j])
        best_source = max((n for n in checked if n != "ranker"), key=checked.get)
        self.record |= {
            "trained_users": int(len(learn_rows)),
            "tuning_users": n_tune,
            "held_out_users": len(users) - n_learn - n_tune,
            "best_epoch": best_epoch,
            "tuning_ndcg@20_per_epoch": history,
            "held_out_ndcg@20": {k: round(v, 5) for k, v in checked.items()},
            "best_source": best_source,
            "improves": bool(checked["ranker"] > checked[best_source]),
        }
        log.info("candidate ranker on held-out validation users: %s", self.record["held_out_ndcg@20"])
        return self

    def _predict(self, features: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """The ranker's scores, ``batch_size`` shoppers at a time, by calling the model: ``predict`` sets up a
        dataset per call, 0.10 s against 0.03 s for one batch of 256 shoppers (same values), and the published
        lists call it once a batch (bench/README.md)."""
        if len(features) == 0:
            return np.zeros(features.shape[:2], np.float32)
        starts = range(0, len(features), batch_size)
        return np.concatenate([np.asarray(self.mlp(features[i : i + batch_size], training=False)) for i in starts])

    def score_fn(self, sources: dict[str, ScoreFn], context: Context) -> CandidateScores:
        """Scores (users -> [b, n_items]): the ranker's for each shopper's candidates, -inf elsewhere."""
        if list(sources) != self.source_names:
            raise ValueError(f"the ranker was trained on sources {self.source_names}, not {list(sources)}")
        return CandidateScores(self, sources, context)


class CandidateScores:
    """A fitted ranker's score function: called, [b, n_items] rows with the ranker's score for each shopper's
    candidates and -inf elsewhere (as every ``ScoreFn``, for the metrics); ``top_n``, each shopper's best
    candidates straight from them, for the published lists."""

    def __init__(self, ranker: CandidateRanker, sources: dict[str, ScoreFn], context: Context):
        self.ranker, self.sources, self.context = ranker, sources, context

    def candidates(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each user's candidates [b, width] (-1 = none) and the ranker's scores for them [b, width]."""
        users = np.asarray(users).reshape(-1)
        ranker = self.ranker
        candidates, features = candidates_and_features(
            self.sources, self.context, users, ranker.include_own, ranker.width
        )
        return candidates, ranker._predict(features)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        candidates, values = self.candidates(users)
        out = np.full((len(candidates), self.context.seen.shape[1]), -np.inf, np.float32)
        rows, cols = np.nonzero(candidates >= 0)
        out[rows, candidates[rows, cols]] = values[rows, cols]
        return out

    def top_n(self, users: np.ndarray, n: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Each user's ``n`` best candidates, best first and ties to the lower item, as ``ml.ranking.batched_top_k``
        ranks this function's rows; item -1 and score -inf past a shorter list (``top_k`` pads with any item at
        -inf). The rows hold a few hundred candidates, the catalogue 20,000 items at 10M events: writing and
        ranking whole rows cost 1-14% of the published ranking there, the same lists (bench/README.md)."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        items = np.full((len(users), n), -1, np.int32)
        scores = np.full((len(users), n), -np.inf, np.float32)

        def rank(start: int) -> None:
            candidates, values = self.candidates(users[start : start + batch_size])
            values = np.where(candidates >= 0, values, -np.inf).astype(np.float32)
            order = np.lexsort((candidates, -values), axis=-1)[:, :n]  # score descending, then item ascending
            best, best_scores = np.take_along_axis(candidates, order, 1), np.take_along_axis(values, order, 1)
            listed = np.isfinite(best_scores)
            width = best.shape[1]
            items[start : start + len(best), :width] = np.where(listed, best, -1)
            scores[start : start + len(best), :width] = best_scores

        starts = range(0, len(users), batch_size)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(usable_cpus()) as pool:
            list(pool.map(rank, starts))  # re-raises the first failed batch's error
        return items, scores


def fit_sources(
    train: sp.csr_matrix,
    repeats: RepeatHistory,
    recipe: dict,
    include_own: bool,
    two_tower=None,
    fitted: dict | None = None,
) -> dict[str, ScoreFn]:
    """The candidate sources fitted on ``train`` and ``repeats`` with ``recipe``'s hyper-parameters (chosen on
    validation: EASE's L2, TIFU-KNN's decays and blend); EASE is left out where the recipe has none (too many
    items for its dense inverse). ``two_tower``: a fitted two-tower model scoring from the same side.

    ``fitted``: models the caller already fitted on this ``train`` and ``repeats``, by name (the backtest's
    baselines); one whose settings are the recipe's is used as it is, not fitted again -- at 10M events an
    item-kNN is 1.6 GB and ~10 s a fit, and the backtest held three of the same one.
    """
    from ml.baselines import AUTO, EASE, ItemKNN, MostPopular, UserKNN
    from ml.names import BOUGHT_BEFORE, ITEM_KNN, MOST_POPULAR, TIFU_KNN, TWO_TOWER, USER_KNN
    from ml.names import EASE as EASE_NAME
    from ml.repeat_buying import TIFUKNN, BuyAgain

    fitted = fitted or {}

    def source(name: str, same: Callable[[object], bool], fit: Callable[[], object]) -> ScoreFn:
        model = fitted.get(name)
        return (model if model is not None and _shaped_as(model, train) and same(model) else fit()).score

    tifu = recipe["tifu_knn"]
    tifu_settings = ("group_size", "basket_decay", "group_decay", "neighbours", "alpha")
    tifu_wanted = TIFUKNN(repeats, **tifu)  # its settings (nothing is fitted until ``fit``)
    sources: dict[str, ScoreFn] = {}
    if two_tower is not None:
        sources[TWO_TOWER] = two_tower.score
    if recipe.get("ease_l2"):
        sources[EASE_NAME] = source(
            EASE_NAME,
            lambda m: isinstance(m, EASE) and m.l2 == recipe["ease_l2"],
            lambda: EASE(recipe["ease_l2"]).fit(train),
        )
    sources[ITEM_KNN] = source(
        ITEM_KNN, lambda m: isinstance(m, ItemKNN) and m.neighbours == AUTO, lambda: ItemKNN().fit(train)
    )
    sources[USER_KNN] = source(
        USER_KNN,
        lambda m: isinstance(m, UserKNN) and m.neighbours == UserKNN().neighbours,
        lambda: UserKNN().fit(train),
    )
    sources[MOST_POPULAR] = source(MOST_POPULAR, lambda m: isinstance(m, MostPopular), lambda: MostPopular().fit(train))
    sources[TIFU_KNN] = source(
        TIFU_KNN,
        lambda m: (
            isinstance(m, TIFUKNN)
            and m.repeats is repeats
            and all(getattr(m, k) == getattr(tifu_wanted, k) for k in tifu_settings)
        ),
        lambda: tifu_wanted.fit(),
    )
    if include_own:
        sources[BOUGHT_BEFORE] = source(
            BOUGHT_BEFORE,
            lambda m: isinstance(m, BuyAgain) and m.repeats is repeats,
            lambda: BuyAgain(repeats).fit(train),
        )
    return sources


def _shaped_as(model: object, train: sp.csr_matrix) -> bool:
    """A guard on ``fit_sources``' reuse: a model fitted on a matrix of ``train``'s shape (its users x items, or
    its items for a popularity count)."""
    fitted_on = getattr(model, "train_", None)
    if fitted_on is not None:
        return fitted_on.shape == train.shape
    counts = getattr(model, "item_counts_", None)
    return counts is None or len(counts) == train.shape[1]


def train_candidate_ranking(
    data,
    recipe: dict,
    include_own: bool,
    truth: sp.csr_matrix,
    fit_two_tower=None,
    two_tower=None,
    max_epochs: int | None = None,
    fitted_train: dict | None = None,
) -> tuple[CandidateRanker, ScoreFn]:
    """The ranker trained on ``data``'s validation period (sources fitted on ``data.fit`` / ``fit_repeats``,
    labels ``truth``; at most ``max_epochs``, the run's bound on its TensorFlow models' epochs), and its score
    function over the sources refitted on ``data.train`` / ``repeats`` (``fitted_train``: models already fitted
    there, as ``fit_sources`` takes them)."""
    fit_side = fit_sources(data.fit, data.fit_repeats, recipe, include_own, fit_two_tower)
    epochs = MAX_EPOCHS if max_epochs is None else max(1, min(MAX_EPOCHS, int(max_epochs)))
    ranker = CandidateRanker(include_own, epochs=epochs).fit(fit_side, Context(data.fit, data.fit_repeats), truth)
    del fit_side  # before the refit: item-kNN's similarities alone are 1.6 GB a side at 20,000 items
    if ranker.mlp is None:
        return ranker, None
    train_side = fit_sources(data.train, data.repeats, recipe, include_own, two_tower, fitted=fitted_train)
    return ranker, ranker.score_fn(train_side, Context(data.train, data.repeats))
