"""Two-tower retrieval model in plain Keras 3 on TensorFlow.

Why plain Keras 3 and not tensorflow-recommenders: TFRS 0.7.7 only imports with the
legacy ``tf-keras`` package and ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow is
first imported, which would pin the whole Airflow worker to Keras 2. The retrieval
task TFRS provides is a few lines: an in-batch softmax whose loss is *summed* over
the batch (as TFRS does), with a log-frequency ("logQ") correction so popular items
are not over-penalised for appearing as negatives more often, and accidental hits
(the positive item repeated in the batch) masked out.

The user tower reads the user's recent items -- a learned weight per position, most
recent first, over their embeddings, a GRU over them in time order, or a self-attention
block (a Transformer encoder layer with learned positions, as in SASRec) -- optionally the
user id, and a profile (``UserProfile``: activity, price level and preferred categories of
those same items, and the shopper's segment; whether it is used is chosen on validation
in every run, since it helps on some shops and not others). The item tower reads the item
id and, from the catalogue, its category, price band and title words
(``ml.item_attributes``), so a rarely bought item is placed near items like it. Training
is causal by default: each purchase is predicted from the items the user had *before* it,
which is what the temporal holdout asks of the model. Index 0 of every embedding table is
reserved for "unknown"/padding, so a user unseen in training still gets an embedding from
their history. The log-frequency correction is over-weighted and 30% of history items are
hidden at random in each step, which kept the model from over-fitting (the measurements
behind these choices are in bench/README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops


@dataclass(frozen=True)
class TwoTowerConfig:
    embedding_dim: int = 64
    history_length: int = 50
    # An upper bound when fitting with validation (training stops early on the validation metric);
    # without it, the epochs trained: a fraction past examples_per_check (a refit of a large shop's
    # best point between two epochs).
    epochs: int | float = 20
    patience: int = 2  # validation checks without improvement before stopping
    # Early stopping checks validation after every epoch, or after every ~this many examples when an
    # epoch holds more: a large shop's epoch is long (6.6M examples at 10M events), and checking only
    # at its end spends `patience` whole epochs past the best point and rounds that point to whole
    # epochs. 0: once an epoch, whatever its size.
    examples_per_check: int = 1_000_000
    batch_size: int = 1024
    learning_rate: float = 0.005
    temperature: float = 0.1
    use_user_id: bool = False  # False: users are described by their history alone
    history_dropout: float = 0.3  # share of history items hidden at random in each training step
    logq_correction: float = 1.5  # weight of the log-frequency correction (0 = plain in-batch softmax)
    causal_history: bool = True  # train on "next item from the items before it" (matches a temporal holdout)
    recency_weights: bool = True  # learn a weight per history position (most recent first) instead of a plain mean
    item_attributes: bool = True  # the item tower also embeds category, price band and title words (when known)
    # "pooling" (weighted mean of recent items), "gru" (a GRU over them, in time order) or "attention"
    # (one self-attention block over them with learned positions; its output at the most recent item)
    sequence_encoder: str = "pooling"
    user_profile: bool = True  # the user tower also reads a profile: activity, price level, categories, segment
    # Weight of the items' training log-frequency added to every score when ranking: the logQ
    # correction takes popularity out of what the towers learn; this sets how much of it the
    # ranking carries (chosen on validation by ml.train.choose_popularity_prior; 0 = the towers' scores alone).
    popularity_prior: float = 0.0
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


SEQUENCE_ENCODERS = ("pooling", "gru", "attention")
ATTENTION_HEADS = 2


class SelfAttentionEncoder(keras.layers.Layer):
    """One Transformer encoder block over the recent items (SASRec's, Kang and McAuley 2018): learned
    position embeddings, multi-head self-attention that sees only real (unmasked) items, a feed-forward
    layer, residuals and layer norms; the summary is the output at the most recent real item."""

    def __init__(self, dim: int, history_length: int, **kwargs):
        super().__init__(**kwargs)
        self.positions = layers.Embedding(history_length, dim, name="history_positions")
        self.attention = layers.MultiHeadAttention(ATTENTION_HEADS, dim // ATTENTION_HEADS, name="history_attention")
        self.norm_attention = layers.LayerNormalization(name="attention_norm")
        self.feed_forward = layers.Dense(dim, activation="relu", name="attention_feed_forward")
        self.norm_output = layers.LayerNormalization(name="attention_output_norm")

    def call(self, embedded, mask, training=False):
        length = ops.shape(embedded)[1]
        x = embedded + self.positions(ops.arange(length))[None, :, :]
        visible = ops.cast(mask[:, None, :] * mask[:, :, None], "bool")  # real items attend to real items
        x = self.norm_attention(x + self.attention(x, x, attention_mask=visible, training=training))
        x = self.norm_output(x + self.feed_forward(x))
        # histories are left-padded, most recent last: the last position holds the latest real item
        last = ops.cast(ops.sum(mask, axis=1) > 0, "float32")[:, None]
        return x[:, -1, :] * last


def _lookup_table(values: np.ndarray, name: str) -> tf.Tensor:
    """``values`` (one row per index) with a leading zero row, so row 0 answers for "unknown"."""
    padded = np.concatenate([np.zeros((1,) + values.shape[1:], values.dtype), values]).astype("int32")
    return tf.constant(padded, name=name)


class UserProfile(keras.layers.Layer):
    """The shopper's profile, computed from the same visible history the tower reads, plus their segment.

    Activity (how many items), price level (the share of each price band) and preferred
    categories (the mean of their categories' embeddings) come from the history *as the
    tower sees it* -- in causal training, the items before the predicted one -- so the
    profile never knows the future the way dbt's all-time ``user_features`` would; the
    segment (country) is static. A new shopper's profile is their first items and segment.
    """

    def __init__(self, dim: int, history_length: int, item_attributes=None, user_segments=None, **kwargs):
        super().__init__(**kwargs)
        self.history_length = history_length
        self.category_table = self.price_table = self.segment_table = None
        if item_attributes is not None:
            self.category_table = _lookup_table(item_attributes.category, "history_item_category")
            self.price_table = _lookup_table(item_attributes.price_band, "history_item_price_band")
            self.n_price_bands = item_attributes.n_price_bands
            self.category_embedding = layers.Embedding(
                item_attributes.n_categories, dim // 2, name="preferred_category_embedding"
            )
        if user_segments is not None and user_segments.n_segments > 1:
            self.segment_table = _lookup_table(user_segments.segment, "user_segment")
            self.segment_embedding = layers.Embedding(user_segments.n_segments, dim // 4, name="segment_embedding")

    def call(self, user, history, mask, segment=None):
        """``mask`` [B, L]: which history items are visible; ``segment`` [B] overrides the user's own (0 = unknown)."""
        count = ops.sum(mask, axis=1, keepdims=True)
        parts = [ops.log1p(count) / np.log1p(self.history_length)]  # activity, 0..1
        if self.category_table is not None:
            weights = ops.expand_dims(mask / ops.maximum(count, 1.0), -1)
            categories = self.category_embedding(tf.gather(self.category_table, history))
            bands = ops.one_hot(tf.gather(self.price_table, history), self.n_price_bands)
            parts += [ops.sum(categories * weights, axis=1), ops.sum(bands * weights, axis=1)]
        if self.segment_table is not None:
            own = tf.gather(self.segment_table, user)
            segment = own if segment is None else tf.where(segment > 0, segment, own)
            parts.append(self.segment_embedding(segment))
        return ops.concatenate(parts, axis=-1)


class UserTower(keras.layers.Layer):
    """User id + the user's recent item embeddings, pooled or read by a GRU -> unit vector."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        use_user_id: bool = True,
        history_dropout: float = 0.0,
        history_length: int | None = None,
        sequence_encoder: str = "pooling",
        profile: UserProfile | None = None,
        history_length_for_attention: int = 50,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.profile = profile
        if sequence_encoder not in SEQUENCE_ENCODERS:
            raise ValueError(f"sequence_encoder={sequence_encoder!r}: expected one of {SEQUENCE_ENCODERS}")
        self.use_user_id = use_user_id
        self.gru = layers.GRU(dim, name="history_gru") if sequence_encoder == "gru" else None
        self.attention = (
            SelfAttentionEncoder(dim, history_length_for_attention, name="history_self_attention")
            if sequence_encoder == "attention"
            else None
        )
        self.history_dropout = history_dropout
        # one logit per history position (histories are left-padded, most recent last)
        self.position_logits = (
            self.add_weight(shape=(history_length,), initializer="zeros", name="position_logits")
            if history_length
            else None
        )
        self.user_embedding = layers.Embedding(n_users + 1, dim, name="user_id_embedding") if use_user_id else None
        self.history_embedding = layers.Embedding(n_items + 1, dim, name="history_item_embedding")
        self.hidden = layers.Dense(dim * 2, activation="relu", name="user_hidden")
        self.project = layers.Dense(dim, name="user_projection")

    def call(self, user, history, exclude=None, training=False, segment=None):
        """Args: user [B] int (0 = unknown), history [B, L] int (item index + 1, 0 = padding),
        exclude [B] int or None (an item index + 1 to leave out of the history: the target),
        segment [B] int or None (overrides the user's own segment: for shoppers unseen in training).
        Returns [B, dim] unit-norm user embeddings."""
        mask = ops.cast(history > 0, "float32")
        if training and self.history_dropout > 0:
            mask = mask * ops.cast(keras.random.uniform(ops.shape(mask)) >= self.history_dropout, "float32")
        if exclude is not None:
            mask = mask * ops.cast(history != ops.expand_dims(exclude, 1), "float32")
        profile = self.profile(user, history, mask, segment) if self.profile is not None else None
        embedded = self.history_embedding(history)
        if self.gru is not None:
            # masked steps carry the state over, so hidden and padded items are skipped;
            # the state after the most recent item is the summary
            pooled = self.gru(embedded * ops.expand_dims(mask, -1), mask=mask > 0, training=training)
        elif self.attention is not None:
            pooled = self.attention(embedded * ops.expand_dims(mask, -1), mask, training=training)
        else:
            if self.position_logits is not None:
                mask = mask * ops.exp(self.position_logits)[None, :]
            items = embedded * ops.expand_dims(mask, -1)
            pooled = ops.sum(items, axis=1) / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1e-6)
        parts = [pooled]
        if self.use_user_id:
            parts.append(self.user_embedding(user))
        if profile is not None:
            parts.append(profile)
        x = ops.concatenate(parts, axis=-1) if len(parts) > 1 else pooled
        return ops.normalize(self.project(self.hidden(x)), axis=-1)


class ItemTower(keras.Model):
    """Item id (+ category, price band and title words, when given) -> unit vector.

    The attributes are lookup tables inside the tower, indexed like the ids (row 0 =
    unknown item), so callers still pass item indices only; an item whose id embedding
    learned little (rare, or unseen in training) is described by its attributes.
    """

    def __init__(self, n_items: int, dim: int, attributes=None, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = layers.Embedding(n_items + 1, dim, name="item_id_embedding")
        self.attributes = attributes
        if attributes is not None:
            self.category_table = _lookup_table(attributes.category, "item_category")
            self.price_table = _lookup_table(attributes.price_band, "item_price_band")
            self.title_table = _lookup_table(attributes.title_tokens, "item_title_tokens")
            self.category_embedding = layers.Embedding(attributes.n_categories, dim, name="category_embedding")
            self.price_embedding = layers.Embedding(attributes.n_price_bands, dim // 4, name="price_band_embedding")
            self.word_embedding = layers.Embedding(attributes.n_words, dim, name="title_word_embedding")
        self.project = layers.Dense(dim, name="item_projection")

    def call(self, item):
        """Args: item [B] int (item index + 1, 0 = unknown). Returns [B, dim] unit-norm embeddings."""
        x = self.item_embedding(item)
        if self.attributes is not None:
            words = tf.gather(self.title_table, item)
            word_mask = ops.cast(words > 0, "float32")[..., None]
            title = ops.sum(self.word_embedding(words) * word_mask, axis=1) / ops.maximum(
                ops.sum(word_mask, axis=1), 1.0
            )
            x = ops.concatenate(
                [
                    x,
                    self.category_embedding(tf.gather(self.category_table, item)),
                    self.price_embedding(tf.gather(self.price_table, item)),
                    title,
                ],
                axis=-1,
            )
        return ops.normalize(self.project(x), axis=-1)


class TwoTowerModel(keras.Model):
    """Both towers and the in-batch softmax retrieval loss."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        item_log_frequency: np.ndarray,
        config: TwoTowerConfig,
        item_attributes=None,
        user_segments=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.config = config
        profile = (
            UserProfile(
                config.embedding_dim, config.history_length, item_attributes, user_segments, name="user_profile"
            )
            if config.user_profile
            else None
        )
        self.user_tower = UserTower(
            n_users,
            n_items,
            config.embedding_dim,
            config.use_user_id,
            config.history_dropout,
            config.history_length if config.recency_weights and config.sequence_encoder == "pooling" else None,
            config.sequence_encoder,
            profile,
            history_length_for_attention=config.history_length,
            name="user_tower",
        )
        self.item_tower = ItemTower(
            n_items, config.embedding_dim, item_attributes if config.item_attributes else None, name="item_tower"
        )
        # log sampling probability per item (index + 1; 0 = unknown), for the logQ correction
        self.item_log_frequency = tf.constant(np.concatenate([[0.0], item_log_frequency]).astype("float32"))
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=False):
        user = self.user_tower(inputs["user"], inputs["history"], inputs.get("exclude"), training=training)
        item = self.item_tower(inputs["item"])
        return user, item

    def retrieval_loss(self, inputs) -> tf.Tensor:
        user, item = self(inputs | {"exclude": inputs["item"]}, training=True)
        logits = tf.matmul(user, item, transpose_b=True) / self.config.temperature
        logits -= self.config.logq_correction * tf.gather(self.item_log_frequency, inputs["item"])[tf.newaxis, :]
        same_item = tf.equal(inputs["item"][:, tf.newaxis], inputs["item"][tf.newaxis, :])
        accidental = tf.logical_and(same_item, tf.logical_not(tf.eye(tf.shape(logits)[0], dtype=tf.bool)))
        logits = tf.where(accidental, tf.fill(tf.shape(logits), -1e9), logits)
        labels = tf.range(tf.shape(logits)[0])
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_sum(losses)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self.retrieval_loss(data)
        gradients = tape.gradient(loss, self.trainable_variables)
        # The embeddings' gradients stay sparse (a row per lookup): summing them into dense tables here
        # made a step 1.3x faster but changes Adam's second moment for items looked up more than once
        # in a batch, and test NDCG@20 fell ~0.0015 on both datasets (bench/README.md); kept as Keras does.
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def pad_histories(histories: list[np.ndarray], length: int) -> np.ndarray:
    """Each user's last ``length`` items (index + 1), left-padded with 0, as an [n_users, length] array."""
    out = np.zeros((len(histories), length), dtype=np.int32)
    for row, items in enumerate(histories):
        recent = items[-length:]
        if len(recent):
            out[row, length - len(recent) :] = recent + 1
    return out


def shuffled_batches(n: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches of the indices 0..n-1, in a new order on every pass over the dataset (every epoch).

    The order is drawn as one tensor per pass and cut into batches: shuffling and batching the
    examples one element at a time took ~10 ms a batch of 1,024 here (1.3 ms this way), on the
    same two cores as the ~30 ms training step (bench/README.md). Seeded, so a rerun sees the
    same orders.
    """
    n_batches = -(-n // batch_size)

    def in_batches(pass_seed):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([pass_seed, 0]))
        padded = tf.concat([order, tf.fill([n_batches * batch_size - n], tf.constant(-1, tf.int64))], axis=0)
        return tf.data.Dataset.from_tensor_slices(tf.reshape(padded, [n_batches, batch_size]))

    return (
        tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        .take(1)
        .flat_map(in_batches)
        .map(lambda batch: tf.boolean_mask(batch, batch >= 0))  # the last batch is the short one
        .apply(tf.data.experimental.assert_cardinality(n_batches))  # so Keras knows an epoch's steps
    )


def training_dataset(
    users: np.ndarray, items: np.ndarray, padded_histories: np.ndarray, batch_size: int, seed: int
) -> tf.data.Dataset:
    """(user, item) positives as a shuffled, batched tf.data pipeline; histories are gathered per batch."""
    histories = tf.constant(padded_histories)
    users, items = tf.constant(users.astype("int32")), tf.constant(items.astype("int32"))

    def to_inputs(batch):
        user = tf.gather(users, batch)
        return {"user": user + 1, "item": tf.gather(items, batch) + 1, "history": tf.gather(histories, user)}

    return (
        shuffled_batches(int(users.shape[0]), batch_size, seed)
        .map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def causal_training_dataset(histories: list[np.ndarray], length: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """Every (user, item) of the time-ordered ``histories`` with, as input, the ``length`` items
    the user had *before* it: the model learns to predict what comes next, as the temporal
    holdout asks. Windows are cut per batch from one flat array, so memory stays O(examples).
    """
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat_tokens = tf.constant(np.concatenate(list(histories) + [np.zeros(0, np.int32)]).astype(np.int32) + 1)
    example_users = tf.constant(np.repeat(np.arange(len(histories), dtype=np.int32), lengths))
    user_starts = tf.constant(starts)
    window = tf.range(length, dtype=tf.int64)[tf.newaxis, :] - length

    def to_inputs(position):  # the examples' positions in the flat array
        user = tf.gather(example_users, position)
        offsets = position[:, tf.newaxis] + window  # the `length` positions before each example
        valid = offsets >= tf.gather(user_starts, user)[:, tf.newaxis]
        history = tf.where(valid, tf.gather(flat_tokens, tf.maximum(offsets, 0)), 0)
        return {"user": user + 1, "item": tf.gather(flat_tokens, position), "history": history}

    return (
        shuffled_batches(int(lengths.sum()), batch_size, seed)
        .map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
