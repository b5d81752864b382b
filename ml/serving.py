"""The serving artefact: a SavedModel that answers "top-K items for this shopper".

The exported module holds the trained item embeddings, each known user's embedding
(computed from the full history at export time), the items each user already has,
best-seller lists (everyone's, and one per segment) and, when given, the trained user
tower itself. Two signatures:

* ``recommend(user_id, k)`` (also ``serving_default``): a known user gets their
  personal top-K; a user the model has never seen gets the best-sellers, so a caller
  never receives an empty answer.
* ``recommend_in_context(user_id, k, recent_item_ids, segment)``: the shopper's latest
  items (oldest first, "" as padding) are read by the user tower -- after the history
  the model knows, for a known shopper -- so a shopper who signed up an hour ago, or a
  known one whose basket just changed, gets recommendations from what they did; a shopper
  with no known item falls back to the best-sellers of their ``segment`` (country), or
  everyone's when that is unknown too.

What a known shopper already has follows the dataset's repeat policy
(``ml.repeat_policy``), exactly as in the published tables: ``exclude`` never recommends
it back; ``include`` lets the model rank it like any item; ``N`` "buy again" slots put the
shopper's first ``N`` own items by ``buy_again_order`` (computed at export from everything
known, only items of their known history, stored as a [n_users, N] table) above the
model's best items they do not have. The recent items a caller passes are never
recommended back, whatever the policy. When the run chose the ranking stage
(``ml.reranker``), a personal answer's best candidates by the towers are re-ordered by
its MLP, as in the batch tables (it re-orders unseen candidates only, so it is not
applied under ``include``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from ml.repeat_policy import INCLUDE, SLOTS, RepeatPolicy, RepeatPolicyError, buy_again_order


def _string_table(keys: np.ndarray, values, default: int) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(keys).astype(str)), tf.constant(values, tf.int64)),
        default_value=default,
    )


class RecommenderModule(tf.Module):
    def __init__(
        self,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        user_embeddings: np.ndarray,
        item_embeddings: np.ndarray,
        seen: sp.csr_matrix,
        popularity: np.ndarray,
        model_version: str,
        user_tower=None,
        history_length: int = 50,
        segment_names: tuple[str, ...] = (),
        ranker=None,
        histories: np.ndarray | None = None,
        item_bias: np.ndarray | None = None,
        repeat_policy: RepeatPolicy | str = "exclude",
        repeats=None,
        ranked_lists: np.ndarray | None = None,
    ):
        """``popularity``: [n_items] counts, or [1 + len(segment_names), n_items] with everyone's in row 0
        and segment s's in row s. ``user_tower``: the trained ``ml.two_tower.UserTower`` (for
        ``recommend_in_context``); without it, recent items are only excluded, not read.
        ``ranker``: the ranking stage (``ml.reranker.Ranker``) that re-orders a personal answer's
        candidates, when the run chose to use it. ``histories``: [n_users, history_length] each known
        user's latest items (item index + 1, left-padded with 0; ``ml.two_tower.pad_histories``), read
        before the recent items a caller passes, so a known shopper's context extends their history.
        ``item_bias``: [n_items] added to every personal score (the popularity prior the run chose).
        ``repeat_policy``: what a known shopper's answer does with ``seen`` (``ml.repeat_policy``);
        ``repeats``: everything known as an ``ml.data.RepeatHistory``, needed for "buy again" slots.
        ``ranked_lists``: [n_users, L] each known user's list from the candidate ranking (item indices, -1
        none; ``recsys_pipeline.training.candidates``): their personal answer when given, as in the tables."""
        super().__init__()
        popularity = np.atleast_2d(np.asarray(popularity, np.float32))
        if popularity.shape[0] != len(segment_names) + 1:
            raise ValueError(
                f"popularity has {popularity.shape[0]} rows for {len(segment_names)} segments (+1 for everyone)"
            )
        self.user_table = _string_table(user_ids, np.arange(len(user_ids)), -1)
        self.item_table = _string_table(item_ids, np.arange(1, len(item_ids) + 1), 0)  # item index + 1, 0 = unknown
        self.segment_table = (
            _string_table(np.array(segment_names, dtype=object), np.arange(1, len(segment_names) + 1), 0)
            if segment_names
            else None
        )
        self.item_ids = tf.Variable(np.asarray(item_ids).astype(str), trainable=False, name="item_ids")
        self.user_embeddings = tf.Variable(user_embeddings.astype(np.float32), trainable=False, name="user_embeddings")
        self.item_embeddings = tf.Variable(item_embeddings.astype(np.float32), trainable=False, name="item_embeddings")
        self.item_bias = tf.Variable(
            np.zeros(len(item_ids), np.float32) if item_bias is None else np.asarray(item_bias, np.float32),
            trainable=False,
            name="item_bias",
        )
        policy = RepeatPolicy.parse(repeat_policy)
        if policy.mode == SLOTS and repeats is None:
            raise RepeatPolicyError(f"repeat_policy {policy}: 'buy again' slots need the shoppers' repeat history")
        self.policy_mode, self.n_slots = policy.mode, policy.slots
        self.repeat_policy = tf.Variable(str(policy), trainable=False, name="repeat_policy")
        self.buy_again = (
            tf.Variable(
                buy_again_order(repeats, np.arange(len(user_ids)), policy.slots, within=seen),
                trainable=False,
                name="buy_again",
            )
            if policy.mode == SLOTS
            else None
        )  # [n_users, N] each known shopper's "buy again" items in slot order, -1 where they have fewer
        self.seen_values = tf.Variable(seen.indices.astype(np.int64), trainable=False, name="seen_items")
        self.seen_splits = tf.Variable(seen.indptr.astype(np.int64), trainable=False, name="seen_row_splits")
        self.popularity = tf.Variable(popularity, trainable=False, name="popularity")
        self.model_version = tf.Variable(model_version, trainable=False, name="model_version")
        self.user_tower = user_tower
        self.history_length = history_length
        self.ranker = None if policy.mode == INCLUDE else ranker  # the stage re-orders unseen candidates only
        self.histories = (
            None if histories is None else tf.Variable(histories.astype(np.int32), trainable=False, name="histories")
        )
        self.ranked_lists = None
        if ranked_lists is not None:
            self.ranked_lists = tf.Variable(np.asarray(ranked_lists, np.int64), trainable=False, name="ranked_lists")
            self.ranker = None  # the lists are already the candidate ranking's order

    def _top_k(self, scores, seen_indices, k, known, personal_rows, extra=None, slots=None):
        """Top-K of ``scores`` [B, n_items] with ``seen_indices`` ([n, 2] row, item) set to -inf; the
        ``personal_rows`` re-ordered by the ranking stage when there is one; ``slots`` ([B, N] item
        indices, -1 for none): the "buy again" items put first."""
        if extra is not None:
            seen_indices = tf.concat([seen_indices, extra], axis=0)
        scores = tf.tensor_scatter_nd_update(
            scores, seen_indices, tf.fill([tf.shape(seen_indices)[0]], tf.constant(-np.inf, tf.float32))
        )
        n_items = tf.shape(scores)[1]
        if self.ranker is None:
            top = tf.math.top_k(scores, k=tf.minimum(k, n_items))
            items, values = top.indices, top.values
        else:
            candidates = tf.math.top_k(scores, k=tf.minimum(tf.maximum(k, self.ranker.n_candidates), n_items))
            seen = tf.minimum(
                tf.scatter_nd(seen_indices, tf.ones([tf.shape(seen_indices)[0]]), tf.shape(scores, out_type=tf.int64)),
                1.0,
            )
            ranked = self.ranker.rerank(seen, candidates.indices, candidates.values)
            ranked = tf.where(
                personal_rows[:, tf.newaxis], ranked, candidates.values
            )  # best-seller answers keep their order
            # candidates in item order, so equal scores go to the lower item index, as in the batch tables
            by_item = tf.argsort(candidates.indices, axis=1, stable=True)
            ranked = tf.gather(ranked, by_item, batch_dims=1)
            top = tf.math.top_k(ranked, k=tf.minimum(k, tf.shape(ranked)[1]))
            items, values = (
                tf.gather(tf.gather(candidates.indices, by_item, batch_dims=1), top.indices, batch_dims=1),
                top.values,
            )
        if slots is not None:
            items, values = self._buy_again_first(items, values, slots)
        return {
            "item_ids": tf.gather(self.item_ids, items),
            "scores": values,
            "known_user": known,
            "model_version": tf.fill(tf.shape(known), self.model_version),
        }

    def _buy_again_first(self, items, values, slots):
        """The answer [B, K] with the ``slots`` items ahead of the model's (scored as ``slot_scores``: above
        the row's best model score); the model's items fill the places the slots leave."""
        finite = tf.where(tf.math.is_finite(values), values, -np.inf)
        best = tf.reduce_max(tf.concat([finite, tf.fill([tf.shape(values)[0], 1], -np.inf)], axis=1), axis=1)
        best = tf.where(tf.math.is_finite(best), best, 0.0)
        offsets = tf.cast(tf.range(self.n_slots, 0, -1), tf.float32)
        slot_values = tf.where(slots >= 0, best[:, tf.newaxis] + offsets[tf.newaxis, :], -np.inf)
        # the model's items first in the pool, so that at equal (-inf) scores they win over empty slots
        pool_items = tf.concat([tf.cast(items, tf.int64), slots], axis=1)
        pool_values = tf.concat([values, slot_values], axis=1)
        top = tf.math.top_k(pool_values, k=tf.shape(items)[1])
        return tf.gather(pool_items, top.indices, batch_dims=1), top.values

    def _slots(self, rows, known, recent_items=None):
        """[B, N] the known shoppers' "buy again" items (-1: none, or among ``recent_items`` [B, R], -1 padded),
        or None when the policy has no slots."""
        if self.buy_again is None:
            return None
        none = tf.constant(-1, tf.int64)
        slots = tf.where(known[:, tf.newaxis], tf.gather(self.buy_again, tf.maximum(rows, 0)), none)
        if recent_items is not None:
            given = tf.reduce_any(slots[:, :, tf.newaxis] == recent_items[:, tf.newaxis, :], axis=2)
            slots = tf.where(given & (slots >= 0), none, slots)
        return slots

    def _list_scores(self, rows, known, n_items):
        """[B, n_items]: L - position for each of the known shoppers' listed items, -inf for every other (as
        ``candidates.list_score_fn`` scores the tables)."""
        lists = tf.gather(self.ranked_lists, tf.maximum(rows, 0))
        listed = tf.where((lists >= 0) & known[:, tf.newaxis])  # [n, 2] (row, position)
        items = tf.gather_nd(lists, listed)
        position_scores = tf.cast(tf.range(tf.shape(lists)[1], 0, -1), tf.float32)
        base = tf.fill(tf.stack([tf.shape(rows)[0], n_items]), tf.constant(-np.inf, tf.float32))
        return tf.tensor_scatter_nd_update(
            base, tf.stack([listed[:, 0], items], axis=1), tf.gather(position_scores, listed[:, 1])
        )

    def _personal_scores(self, user_embeddings):
        return tf.matmul(user_embeddings, self.item_embeddings, transpose_b=True) + self.item_bias[tf.newaxis, :]

    def _known_seen(self, rows, known):
        """[n, 2] (row in batch, item index) of the known users' items, to leave out of the model's answer;
        unknown users have none, and neither has anyone under ``include``."""
        if self.policy_mode == INCLUDE:
            return tf.zeros([0, 2], tf.int64)
        seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_splits)
        seen_rows = tf.gather(seen, tf.maximum(rows, 0))
        indices = tf.stack([tf.cast(seen_rows.value_rowids(), tf.int64), seen_rows.flat_values], axis=1)
        return tf.boolean_mask(indices, tf.gather(known, seen_rows.value_rowids()))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32)])
    def recommend(self, user_id, k):
        rows = self.user_table.lookup(user_id)
        known = rows >= 0
        personal = self._personal_scores(tf.gather(self.user_embeddings, tf.maximum(rows, 0)))
        if self.ranked_lists is not None:
            personal = self._list_scores(rows, known, tf.shape(personal)[1])
        popular = tf.broadcast_to(self.popularity[0][tf.newaxis, :], tf.shape(personal))
        scores = tf.where(known[:, tf.newaxis], personal, popular)
        return self._top_k(scores, self._known_seen(rows, known), k, known, known, slots=self._slots(rows, known))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([None, None], tf.string),
            tf.TensorSpec([None], tf.string),
        ]
    )
    def recommend_in_context(self, user_id, k, recent_item_ids, segment):
        rows = self.user_table.lookup(user_id)
        known = rows >= 0
        tokens = tf.cast(self.item_table.lookup(recent_item_ids), tf.int32)  # [B, R], 0 = padding or unknown item
        has_recent = tf.reduce_any(tokens > 0, axis=1)
        segments = self.segment_table.lookup(segment) if self.segment_table is not None else tf.zeros_like(rows)
        stored = tf.gather(self.user_embeddings, tf.maximum(rows, 0))
        if self.user_tower is not None:
            # a known shopper's stored history, then the recent items; known items to the right in that
            # order, then the latest `history_length`, left-padded
            context_tokens = tokens
            if self.histories is not None:
                stored_history = tf.where(known[:, tf.newaxis], tf.gather(self.histories, tf.maximum(rows, 0)), 0)
                context_tokens = tf.concat([stored_history, tokens], axis=1)
            order = tf.argsort(tf.cast(context_tokens > 0, tf.int32), axis=1, stable=True)
            tokens_right = tf.gather(context_tokens, order, batch_dims=1)
            width = tf.shape(tokens_right)[1]
            padded = tf.pad(tokens_right, [[0, 0], [tf.maximum(self.history_length - width, 0), 0]])[
                :, -self.history_length :
            ]
            user_tokens = tf.cast(tf.where(known, rows + 1, 0), tf.int32)
            context = self.user_tower(user_tokens, padded, segment=tf.cast(segments, tf.int32))
            embeddings = tf.where(has_recent[:, tf.newaxis], context, stored)
            personal_rows = tf.logical_or(known, has_recent)
        else:
            embeddings, personal_rows = stored, known
        personal = self._personal_scores(embeddings)
        if self.ranked_lists is not None:  # a known shopper with nothing new: their list, as `recommend` answers
            listed = self._list_scores(rows, known, tf.shape(personal)[1])
            personal = tf.where((known & ~has_recent)[:, tf.newaxis], listed, personal)
        popular = tf.gather(self.popularity, segments)  # segment 0 (unknown): everyone's best-sellers
        scores = tf.where(personal_rows[:, tf.newaxis], personal, popular)
        recent = tf.where(tokens > 0)  # [n, 2] (row, column) of the recent items given
        recent_items = tf.cast(tf.gather_nd(tokens, recent), tf.int64) - 1
        return self._top_k(
            scores,
            self._known_seen(rows, known),
            k,
            known,
            personal_rows,
            tf.stack([recent[:, 0], recent_items], axis=1),
            slots=self._slots(rows, known, tf.cast(tokens, tf.int64) - 1),
        )


def export_saved_model(module: RecommenderModule, path: Path) -> Path:
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.recommend,
            "recommend": module.recommend,
            "recommend_in_context": module.recommend_in_context,
        },
    )
    return path


def load_saved_model(path: Path):
    return tf.saved_model.load(str(path))
