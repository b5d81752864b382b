"""The two-tower model's training input: every example once per epoch, each with exactly the
items before it (causal) or its shopper's history, in a new, seeded order every epoch."""

from __future__ import annotations

import numpy as np
import pytest

from ml.two_tower import causal_training_dataset, shuffled_batches, training_dataset

pytestmark = pytest.mark.unit


def _passes(dataset, n=2):
    return [[batch.numpy().tolist() for batch in dataset] for _ in range(n)]


def test_shuffled_batches_hold_every_index_once_per_pass_in_a_new_order_each_pass():
    first, second = _passes(shuffled_batches(103, 10, seed=7))
    for batches in (first, second):
        assert [len(b) for b in batches] == [10] * 10 + [3]
        assert sorted(sum(batches, [])) == list(range(103))
    assert first != second  # reshuffled between epochs
    assert _passes(shuffled_batches(103, 10, seed=7)) == [first, second]  # the same orders on a rerun
    assert _passes(shuffled_batches(103, 10, seed=8))[0] != first


def test_shuffled_batches_of_fewer_indices_than_a_batch():
    assert [sorted(b) for b in _passes(shuffled_batches(3, 10, seed=1), 1)[0]] == [[0, 1, 2]]


def test_causal_examples_each_once_with_the_items_before_them():
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, 30, n).astype(np.int32) for n in (0, 1, 5, 12, 3, 8)]
    length = 4
    expected = []
    for user, items in enumerate(histories):
        for position, item in enumerate(items):
            before = [int(i) + 1 for i in items[max(0, position - length) : position]]
            expected.append((user + 1, int(item) + 1, tuple([0] * (length - len(before)) + before)))
    seen = []
    for batch in causal_training_dataset(histories, length, batch_size=5, seed=3):
        seen += zip(
            batch["user"].numpy().tolist(),
            batch["item"].numpy().tolist(),
            map(tuple, batch["history"].numpy().tolist()),
            strict=True,
        )
    assert sorted(seen) == sorted(expected)
    assert seen != expected  # shuffled


def test_pair_examples_each_once_with_their_users_history():
    users, items = np.array([0, 0, 1, 2, 2, 2]), np.array([4, 5, 1, 0, 2, 3])
    padded = np.arange(3 * 2, dtype=np.int32).reshape(3, 2)
    seen = []
    for batch in training_dataset(users, items, padded, batch_size=4, seed=1):
        seen += zip(
            batch["user"].numpy().tolist(),
            batch["item"].numpy().tolist(),
            map(tuple, batch["history"].numpy().tolist()),
            strict=True,
        )
    assert sorted(seen) == sorted((u + 1, i + 1, tuple(padded[u])) for u, i in zip(users, items, strict=True))


def test_no_examples_no_batches():
    assert _passes(shuffled_batches(0, 4, seed=1), 1)[0] == []
