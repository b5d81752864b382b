"""The popularity prior: its weight is chosen on validation, and only shifts the towers' scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.unit


def _split(baskets: list[list[int]]) -> pd.DataFrame:
    """Each shopper's items in time order: the last is test, the one before validation, the rest fit."""
    rows = []
    for user, items in enumerate(baskets):
        for rank, item in enumerate(items):
            rows.append(
                {
                    "user_id": f"u{user:03d}",
                    "item_id": f"i{item:02d}",
                    "split": "test" if rank == len(items) - 1 else "train",
                    "is_validation": int(rank == len(items) - 2),
                    "item_rank": rank + 1,
                }
            )
    return pd.DataFrame(rows)


def _fit(baskets):
    from ml.data import from_split_frame
    from ml.train import TwoTowerRecommender
    from ml.two_tower import TwoTowerConfig

    data = from_split_frame(_split(baskets))
    config = TwoTowerConfig(
        embedding_dim=8, history_length=8, epochs=8, batch_size=64, item_attributes=False, user_profile=False
    )
    return data, TwoTowerRecommender(config).fit(data.fit, data.fit_histories)


def test_a_prior_is_chosen_where_shoppers_follow_popularity():
    from ml.train import choose_popularity_prior

    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, 31) ** 1.5
    # the best-sellers get the highest ids, so no tie-break among equal scores ranks them first by accident
    baskets = [
        (29 - rng.choice(30, size=8, replace=False, p=popularity / popularity.sum())).tolist() for _ in range(150)
    ]
    data, tuned = _fit(baskets)
    # towers that learned nothing of these shoppers (every user embedding zero, every score equal):
    # what the validation items share is only their popularity, which the prior alone puts back
    projection = tuned.model.user_tower.project
    projection.kernel.assign(np.zeros(projection.kernel.shape, "float32"))
    projection.bias.assign(np.zeros(projection.bias.shape, "float32"))
    weight, scores = choose_popularity_prior(tuned, data)
    assert weight > 0 and scores[weight] > scores[0.0] + 0.05, scores
    assert tuned.config.popularity_prior == weight  # the tuned model is left ranking with it
    plain = tuned.user_embeddings[:5] @ tuned.item_embeddings.T
    np.testing.assert_allclose(tuned.score(np.arange(5)), plain + weight * tuned.item_log_frequency, rtol=1e-6)


def test_a_strong_prior_loses_where_popularity_misleads():
    from ml.train import choose_popularity_prior

    rng = np.random.default_rng(1)
    # 120 shoppers buy 10 of items 0-11, 40 shoppers 10 of items 12-23: for the 40, the best-sellers are the wrong half
    baskets = [rng.permutation(np.arange(12) + (0 if u < 120 else 12))[:10].tolist() for u in range(160)]
    data, tuned = _fit(baskets)
    weight, scores = choose_popularity_prior(tuned, data)
    # within a half every item sells about as well, so small weights only reshuffle near-ties
    assert weight <= 0.2 and tuned.config.popularity_prior == weight, scores
    assert scores[1.0] < scores[0.0] - 0.05 and scores[0.5] < scores[0.0] - 0.05, scores
