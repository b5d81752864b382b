"""Training the two-tower model, and scoring with it like any baseline.

``TwoTowerRecommender`` has the same ``fit`` / ``score`` shape as the baselines in
``ml.baselines`` so the evaluation treats every model alike. Training takes its
``tf.distribute`` strategy from configuration (one device by default) and reads its
input through ``tf.data`` in batches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from ml import tuning_shoppers
from ml.names import NDCG_20
from ml.two_tower import TwoTowerConfig, TwoTowerModel, causal_training_dataset, pad_histories, training_dataset

log = logging.getLogger(__name__)


def set_seeds(seed: int) -> None:
    """Fix every random source training touches, so a rerun learns the same model."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def distribution_strategy(name: str | None = None) -> tf.distribute.Strategy:
    """The strategy named by ``name`` or RECSYS_TF_STRATEGY: default (one device), mirrored, multi_worker."""
    name = (name or os.environ.get("RECSYS_TF_STRATEGY", "default")).lower()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":  # reads TF_CONFIG, as set on each Celery/Kubernetes worker
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"RECSYS_TF_STRATEGY={name!r}: expected default, mirrored or multi_worker")


class ValidationRanking(keras.callbacks.Callback):
    """Early stopping on the validation split's primary ranking metric (never on test).

    After each check (Keras' epoch: a whole epoch, or a part of one past the config's
    ``examples_per_check``), ranks every item for the validation users (their ``seen``
    items excluded), keeps the weights of the best check and stops after ``patience``
    checks without improvement; the best weights are restored when training ends.
    """

    def __init__(
        self,
        recommender: TwoTowerRecommender,
        histories,
        seen: sp.csr_matrix,
        truth: sp.csr_matrix,
        patience: int = 2,
        epochs_per_check: float = 1.0,
    ):
        super().__init__()
        self.recommender, self.histories, self.seen, self.truth, self.patience = (
            recommender,
            histories,
            seen,
            truth,
            patience,
        )
        self.epochs_per_check = epochs_per_check
        # The shoppers a check ranks: when they are a small part of the shop (a sample past
        # ml.tuning_shoppers' bound), only theirs are embedded (at 10M events 20,000 of 200,000 users).
        checked = np.flatnonzero(np.diff(tuning_shoppers.sampled(truth).indptr) > 0)
        self.users = checked if len(checked) < len(histories) // 2 else None
        self.best, self.best_epoch, self.best_weights, self.scores = -1.0, -1, None, []

    def on_epoch_end(self, epoch, logs=None):
        self.recommender.use_histories(self.histories, users=self.users)
        value = validation_ndcg(self.recommender.score, self.seen, self.truth)
        self.scores.append(value)
        log.info("epoch %g: validation ndcg@20 = %.4f", round((epoch + 1) * self.epochs_per_check, 3), value)
        if value > self.best:
            self.best, self.best_epoch, self.best_weights = value, epoch, self.model.get_weights()
        elif epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def training_rounds(steps_per_epoch: int, config: TwoTowerConfig, validating: bool) -> tuple[int, int]:
    """Keras epochs to run and steps in each: ``(config.epochs, steps_per_epoch)`` for whole epochs.

    Validating, an epoch of more than ``config.examples_per_check`` examples is cut into equal
    rounds of about that many, each ending with a validation check, up to ``config.epochs`` epochs.
    Without validation, ``config.epochs`` may be a fraction: its steps are spread over whole-epoch-
    sized rounds (rounded to whole steps).
    """
    if validating:
        examples = steps_per_epoch * config.batch_size
        if config.examples_per_check <= 0 or examples <= config.examples_per_check:
            return math.ceil(config.epochs), steps_per_epoch
        checks = math.ceil(examples / config.examples_per_check)
        per_round = math.ceil(steps_per_epoch / checks)
        return math.ceil(config.epochs * steps_per_epoch / per_round), per_round
    steps = max(1, round(config.epochs * steps_per_epoch))
    rounds = math.ceil(steps / steps_per_epoch)
    return rounds, math.ceil(steps / rounds)


def epochs_of(rounds: int, steps_per_round: int, steps_per_epoch: int) -> int | float:
    """``rounds`` training rounds in epochs: whole when they are, else to three decimals."""
    if steps_per_round == steps_per_epoch:
        return rounds
    return round(rounds * steps_per_round / steps_per_epoch, 3)


class TwoTowerRecommender:
    """Fit on a binary interaction matrix plus time-ordered histories; score users against all items.

    ``fit(fit_matrix, fit_histories, validation=...)`` trains with early stopping on the
    validation items; ``use_histories(h)`` then computes every user's embedding from the
    histories ``h`` (train items for the test evaluation, everything for serving).
    """

    def __init__(
        self,
        config: TwoTowerConfig | None = None,
        strategy: tf.distribute.Strategy | None = None,
        item_attributes=None,
        user_segments=None,
    ):
        self.config = config or TwoTowerConfig()
        self.item_attributes = item_attributes  # ml.item_attributes.ItemAttributes aligned with the item index, or None
        self.user_segments = user_segments  # ml.user_segments.UserSegments aligned with the user index, or None
        self.strategy = strategy or distribution_strategy()
        self.model: TwoTowerModel | None = None
        self.loss_history: list[float] = []
        self.validation_history: list[float] = []
        self.best_check: int | None = None  # the best validation check, counted from 1 (an epoch, or a part of one)
        self.best_epoch: int | float | None = None  # ... in epochs: a fraction when checks fall inside epochs
        self.epochs_per_check: float = 1.0
        self.examples_per_second: float = 0.0

    def fit(
        self, interactions: sp.csr_matrix, histories: list[np.ndarray], validation: sp.csr_matrix | None = None
    ) -> TwoTowerRecommender:
        """Train on ``interactions`` (users x items, binary); early-stop on ``validation`` when given."""
        config = self.config
        set_seeds(config.seed)
        coo = interactions.tocoo()
        users, items = coo.row.astype(np.int32), coo.col.astype(np.int32)
        counts = np.asarray(interactions.sum(axis=0)).ravel()
        log_frequency = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))
        self.item_log_frequency = log_frequency.astype(np.float32)
        if config.causal_history:
            dataset = causal_training_dataset(histories, config.history_length, config.batch_size, config.seed)
        else:
            dataset = training_dataset(
                users, items, pad_histories(histories, config.history_length), config.batch_size, config.seed
            )
        with self.strategy.scope():
            self.model = TwoTowerModel(
                interactions.shape[0],
                interactions.shape[1],
                log_frequency,
                config,
                self.item_attributes,
                self.user_segments,
            )
            self.model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        steps_per_epoch = int(dataset.cardinality())
        rounds, steps_per_round = training_rounds(steps_per_epoch, config, validation is not None)
        self.epochs_per_check = steps_per_round / steps_per_epoch
        callbacks = []
        if validation is not None:
            callbacks.append(
                ValidationRanking(self, histories, interactions, validation, config.patience, self.epochs_per_check)
            )
        started = time.perf_counter()
        # tf.data shuffles; whole epochs: Keras starts a new pass (a new order) each epoch
        if steps_per_round == steps_per_epoch:
            history = self.model.fit(dataset, epochs=rounds, verbose=2, callbacks=callbacks, shuffle=False)
        else:  # rounds of part of an epoch: one endless stream of passes, each in a new order
            history = self.model.fit(
                dataset.repeat(),
                epochs=rounds,
                steps_per_epoch=steps_per_round,
                verbose=2,
                callbacks=callbacks,
                shuffle=False,
            )
        seconds = time.perf_counter() - started
        self.loss_history = [float(v) for v in history.history["loss"]]
        self.examples_per_second = len(users) * len(self.loss_history) * self.epochs_per_check / seconds
        if callbacks:
            self.validation_history = callbacks[0].scores
            self.best_check = callbacks[0].best_epoch + 1
            self.best_epoch = epochs_of(self.best_check, steps_per_round, steps_per_epoch)
        self.item_embeddings = np.asarray(
            self.model.item_tower(np.arange(1, interactions.shape[1] + 1, dtype=np.int32))
        )
        self.use_histories(histories)
        return self

    def embed_users(
        self, histories: list[np.ndarray], batch_size: int = 4096, users: np.ndarray | None = None
    ) -> np.ndarray:
        """Embeddings of users 0..n-1 from their ``histories`` (time-ordered item indices); of ``users``
        alone (their rows, in that order) when given."""
        assert self.model is not None, "fit first"
        if users is None:
            users = np.arange(len(histories))
        else:
            histories = [histories[user] for user in users]
        padded = pad_histories(histories, self.config.history_length)
        tokens = (np.asarray(users) + 1).astype(np.int32)
        parts = [
            np.asarray(self.model.user_tower(tokens[i : i + batch_size], padded[i : i + batch_size]))
            for i in range(0, len(tokens), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.config.embedding_dim), np.float32)

    def use_histories(self, histories: list[np.ndarray], users: np.ndarray | None = None) -> TwoTowerRecommender:
        """Score from now on with user embeddings computed from ``histories``: of ``users`` alone when given
        (a validation check ranks its shoppers only; the other users' rows are left zero)."""
        assert self.model is not None, "fit first"
        self.item_embeddings = np.asarray(
            self.model.item_tower(np.arange(1, self.model.item_tower.item_embedding.input_dim, dtype=np.int32))
        )
        if users is None:
            self.user_embeddings = self.embed_users(histories)
        else:
            self.user_embeddings = np.zeros((len(histories), self.config.embedding_dim), np.float32)
            self.user_embeddings[users] = self.embed_users(histories, users=users)
        return self

    @property
    def item_bias(self) -> np.ndarray:
        """What ranking adds to each item's score: the popularity prior (zeros when its weight is 0)."""
        return (self.config.popularity_prior * self.item_log_frequency).astype(np.float32)

    def with_popularity_prior(self, weight: float) -> TwoTowerRecommender:
        """Rank from now on with ``weight`` times the items' training log-frequency added to the scores."""
        self.config = dataclasses.replace(self.config, popularity_prior=float(weight))
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        scores = self.user_embeddings[user_idx] @ self.item_embeddings.T
        if self.config.popularity_prior:
            scores += self.item_bias
        return scores


# Popularity-prior weights tried on validation; 0 comes first so that, on a tie, the towers' own
# scores are kept. Negative weights demote best-sellers further than the training's logQ correction
# did, positive ones put popularity back. Log-frequencies spread over a few units and the towers'
# scores over tenths, so past 1 the prior all but decides the order (most-popular, unseen items first).
POPULARITY_PRIOR_CHOICES = (0.0, -0.05, -0.02, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def validation_ndcg(score_fn, seen: sp.csr_matrix, truth: sp.csr_matrix) -> float:
    """NDCG@20 of ``score_fn`` over the users with ``truth`` items (a seeded sample past ``ml.tuning_shoppers``'
    bound), their ``seen`` items excluded."""
    from ml.metrics import ranking_metrics
    from ml.ranking import batched_top_k

    truth = tuning_shoppers.sampled(truth)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    top, _ = batched_top_k(score_fn, users, 20, exclude=seen)
    return float(ranking_metrics(top, truth[users], truth.shape[1], ks=(20,))[NDCG_20])


def choose_popularity_prior(tuned: TwoTowerRecommender, data, weights=POPULARITY_PRIOR_CHOICES) -> tuple[float, dict]:
    """The prior weight with the best validation NDCG@20 for ``tuned`` (fitted on ``data.fit``), which is left using it.

    No refit is needed: the prior only shifts scores. Returns ``(weight, {weight: validation ndcg@20})``.
    """
    tuned.use_histories(data.fit_histories)
    scores = {}
    for weight in dict.fromkeys(weights):
        scores[weight] = validation_ndcg(tuned.with_popularity_prior(weight).score, data.fit, data.validation)
        log.info("validation ndcg@20 %.4f with popularity prior %g", scores[weight], weight)
    best = max(scores, key=scores.get)  # first best on ties
    tuned.with_popularity_prior(best)
    return best, scores


def tune_on_validation(
    data, config: TwoTowerConfig, choices: dict[str, tuple], item_attributes=None, user_segments=None
):
    """The two-tower model refitted on train with the setting and epochs that scored best on validation.

    Every combination of ``choices`` (config field -> values to try) is fitted on
    ``data.fit`` with early stopping on ``data.validation`` -- never on test; the best
    validation NDCG@20 picks the setting, its best epoch the number of epochs, and then
    the popularity prior's weight (``choose_popularity_prior``); the model is refitted on
    all of train (the most recent interactions, which validation holds out, matter most).
    Returns ``(model, chosen config, tuned fit model, record)``: the record has each
    candidate's validation curve under its label.
    """
    import itertools

    names = sorted(choices)
    candidates = [
        dataclasses.replace(config, **dict(zip(names, values, strict=True)))
        for values in itertools.product(*(choices[name] for name in names))
    ] or [config]
    tried = []
    for candidate in dict.fromkeys(candidates):  # the same setting once, in the order given
        tuned = TwoTowerRecommender(candidate, item_attributes=item_attributes, user_segments=user_segments).fit(
            data.fit, data.fit_histories, validation=data.validation
        )
        label = ",".join(f"{name}={getattr(candidate, name)}" for name in names) or "default"
        tried.append((max(tuned.validation_history, default=0.0), label, candidate, tuned))
        log.info("validation ndcg@20 %.4f with %s", tried[-1][0], label)
    best_score, label, candidate, tuned = max(tried, key=lambda entry: entry[0])  # first best on ties
    prior, prior_scores = choose_popularity_prior(tuned, data, (config.popularity_prior, *POPULARITY_PRIOR_CHOICES))
    chosen = dataclasses.replace(candidate, epochs=tuned.best_epoch or candidate.epochs, popularity_prior=prior)
    model = TwoTowerRecommender(chosen, item_attributes=item_attributes, user_segments=user_segments).fit(
        data.train, data.histories
    )
    record = {
        "chosen": label,
        "validation_ndcg@20": {entry[1]: round(entry[0], 5) for entry in tried},
        "validation_ndcg@20_per_epoch": {entry[1]: entry[3].validation_history for entry in tried},
        **(
            {"epochs_per_check": {entry[1]: round(entry[3].epochs_per_check, 4) for entry in tried}}
            if any(entry[3].epochs_per_check != 1.0 for entry in tried)
            else {}
        ),
        "popularity_prior": {
            "chosen": prior,
            "validation_ndcg@20": {str(w): round(v, 5) for w, v in prior_scores.items()},
        },
    }
    if (sampled := tuning_shoppers.note(data.validation)) is not None:
        record["validation_shoppers"] = sampled
    return model, chosen, tuned, record
