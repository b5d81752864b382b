"""Offline evaluation under the project's protocol, the same for every model.

Full ranking: each evaluated user's scores over every item, train items excluded,
cut at the largest K; then ``ml.metrics.ranking_metrics`` against the held-out
items. ``holdout="validation"`` evaluates a model fitted on ``fit`` against the
validation items, which is where hyper-parameters are chosen (never on test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ml.data import InteractionData
from ml.metrics import ranking_metrics
from ml.ranking import batched_top_k

KS = (10, 20)
PRIMARY_METRIC = "ndcg@20"


def evaluate_scores(
    score_fn: Callable[[np.ndarray], np.ndarray],
    data: InteractionData,
    holdout: str = "test",
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Metrics of ``score_fn`` on ``holdout`` ('test': seen = train; 'validation': seen = fit)."""
    if holdout == "test":
        seen, truth = data.train, data.test
    elif holdout == "validation":
        seen, truth = data.fit, data.validation
    else:
        raise ValueError(f"holdout must be 'test' or 'validation', not {holdout!r}")
    users = data.evaluated_users(truth)
    top_items, _ = batched_top_k(score_fn, users, max(ks), exclude=seen)
    metrics = ranking_metrics(top_items, truth[users], data.n_items, ks)
    metrics["evaluated_users"] = int(len(users))
    return metrics
