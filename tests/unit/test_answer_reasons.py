"""Why the service says an item is in a shopper's list: bought before, or bought together with one they have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys_pipeline.serving.answers import BOUGHT_BEFORE, recommend
from recsys_pipeline.serving.champion import LoadedChampion

pytestmark = pytest.mark.unit


def test_an_own_item_in_a_published_list_is_there_because_the_shopper_bought_it_before():
    """A "buy again" slot (or an own item ranked under ``include``) is not "bought together with" itself."""
    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = [0.9, 0.1, 0.0, 0.0]  # item d goes with item a
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    item_ids = np.array(["a", "b", "c", "d"], dtype=object)
    champion = LoadedChampion(
        dataset_key="shop",
        release_id="r1",
        model_version="v1",
        pointer=None,
        folder=Path("."),
        model=None,  # a published answer never asks the model
        item_ids=item_ids,
        item_index={item: i for i, item in enumerate(item_ids)},
        unit_item_vectors=vectors,
        popular_items=np.arange(4),
        published={"alice": (np.array([1, 3], np.int32), np.array([2.0, 0.5], np.float32))},
        published_k=2,
        known_items={"alice": np.array([0, 1], np.int32)},
    )
    answer = recommend(champion, "alice", 2)
    assert answer.source == "published" and [i.item_id for i in answer.items] == ["b", "d"]
    assert (answer.items[0].reason, answer.items[0].because_of) == (BOUGHT_BEFORE, "b")
    assert (answer.items[1].reason, answer.items[1].because_of) == ("bought together with a", "a")
