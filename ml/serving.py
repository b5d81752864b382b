"""The serving artefact: a SavedModel that answers "top-K items for this user id".

The exported module holds the trained item embeddings, each known user's embedding
(computed from the full history at export time), the items each user already has,
and a popularity list. Its ``recommend`` signature takes user ids (strings) and K,
and returns item ids and scores; a user the model has never seen gets the most
popular items, so a caller never receives an empty answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import tensorflow as tf


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
    ):
        super().__init__()
        self.user_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(user_ids.astype(str)), tf.range(len(user_ids), dtype=tf.int64)
            ),
            default_value=-1,
        )
        self.item_ids = tf.Variable(item_ids.astype(str), trainable=False, name="item_ids")
        self.user_embeddings = tf.Variable(user_embeddings.astype(np.float32), trainable=False, name="user_embeddings")
        self.item_embeddings = tf.Variable(item_embeddings.astype(np.float32), trainable=False, name="item_embeddings")
        self.seen_values = tf.Variable(seen.indices.astype(np.int64), trainable=False, name="seen_items")
        self.seen_splits = tf.Variable(seen.indptr.astype(np.int64), trainable=False, name="seen_row_splits")
        self.popularity = tf.Variable(popularity.astype(np.float32), trainable=False, name="popularity")
        self.model_version = tf.Variable(model_version, trainable=False, name="model_version")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32)])
    def recommend(self, user_id, k):
        rows = self.user_table.lookup(user_id)
        known = rows >= 0
        safe_rows = tf.maximum(rows, 0)
        personal = tf.matmul(tf.gather(self.user_embeddings, safe_rows), self.item_embeddings, transpose_b=True)
        popular = tf.broadcast_to(self.popularity[tf.newaxis, :], tf.shape(personal))
        scores = tf.where(known[:, tf.newaxis], personal, popular)
        seen = tf.RaggedTensor.from_row_splits(self.seen_values, self.seen_splits)
        seen_rows = tf.gather(seen, safe_rows)
        indices = tf.stack([tf.cast(seen_rows.value_rowids(), tf.int64), seen_rows.flat_values], axis=1)
        # an unknown user was looked up as row 0: drop those rows' seen items
        indices = tf.boolean_mask(indices, tf.gather(known, seen_rows.value_rowids()))
        scores = tf.tensor_scatter_nd_update(scores, indices, tf.fill([tf.shape(indices)[0]], tf.constant(-np.inf, tf.float32)))
        top = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[1]))
        return {
            "item_ids": tf.gather(self.item_ids, top.indices),
            "scores": top.values,
            "known_user": known,
            "model_version": tf.fill(tf.shape(user_id), self.model_version),
        }


def export_saved_model(module: RecommenderModule, path: Path) -> Path:
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.recommend, "recommend": module.recommend})
    return path


def load_saved_model(path: Path):
    return tf.saved_model.load(str(path))
