"""Catalogue attributes as the item tower's integer inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.item_attributes import TITLE_TOKENS, encode

pytestmark = pytest.mark.unit


def test_attributes_align_with_the_item_index_and_unknowns_are_zero():
    frame = pd.DataFrame(
        {
            "item_id": ["b", "a", "c", "a"],  # out of order, a duplicate
            "category": ["kitchen", "garden", None, "garden"],
            "price_band": [5, 1, None, 1],
            "title": ["RED Heart Mug", "red garden heart", "", "red garden heart"],
        }
    )
    attributes = encode(np.array(["a", "b", "c", "d"], dtype=object), frame)
    assert attributes.category.tolist() == [1, 2, 0, 0]  # garden, kitchen, unknown, not in the frame
    assert attributes.price_band.tolist() == [1, 5, 0, 0]
    assert attributes.n_categories == 3 and attributes.n_price_bands == 6
    # only words shared by two items are kept ("heart", "red"); lower-cased, in title order
    assert attributes.n_words == 3
    assert attributes.title_tokens.shape == (4, TITLE_TOKENS)
    assert attributes.title_tokens[0, :2].tolist() == [2, 1] and attributes.title_tokens[1, :2].tolist() == [2, 1]
    assert not attributes.title_tokens[2:].any()


def test_a_tower_with_attributes_embeds_an_item_it_never_trained_on_like_its_neighbours():
    from ml.item_attributes import ItemAttributes
    from ml.two_tower import ItemTower

    attributes = ItemAttributes(
        np.array([1, 1, 2], np.int32),
        np.array([1, 1, 5], np.int32),
        np.array([[1, 0], [1, 0], [2, 0]], np.int32),
        3,
        6,
        3,
    )
    tower = ItemTower(3, 8, attributes)
    embeddings = np.asarray(tower(np.array([1, 2, 3], np.int32)))
    assert embeddings.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    # with the id embeddings zeroed (an unseen item), items 1 and 2 share every attribute: same vector
    tower.item_embedding.embeddings.assign(np.zeros_like(tower.item_embedding.embeddings.numpy()))
    embeddings = np.asarray(tower(np.array([1, 2, 3], np.int32)))
    np.testing.assert_allclose(embeddings[0], embeddings[1], rtol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[2])
