"""Offline evaluation under the project's protocol, the same for every model.

Full ranking: each evaluated user's scores over every item, train items excluded,
cut at the largest K; then ``ml.metrics.ranking_metrics`` against the held-out
items. ``holdout="validation"`` evaluates a model fitted on ``fit`` against the
validation items, which is where hyper-parameters are chosen (never on test).

Beside accuracy, on the test holdout: ``novelty@20`` (mean self-information of the
recommended items, in bits; higher = longer tail), ``diversity@20`` (share of item
pairs of a list in different categories, when categories are given) and the
**cold-start slice**: the same accuracy metrics over the evaluated users with the
shortest train histories (at most ``COLD_START_MAX_TRAIN_ITEMS`` items), the
shoppers a model knows least about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ml.data import InteractionData
from ml.metrics import intra_list_diversity, novelty, per_user_ndcg, popularity_share, ranking_metrics
from ml.names import BASELINES, EASE, KS, PRIMARY_METRIC
from ml.ranking import batched_top_k

log = logging.getLogger(__name__)

COLD_START_MAX_TRAIN_ITEMS = 5
PER_USER_NDCG = "per_user_ndcg@20"


def evaluate_scores(
    score_fn: Callable[[np.ndarray], np.ndarray],
    data: InteractionData,
    holdout: str = "test",
    ks: Sequence[int] = KS,
    item_category: np.ndarray | None = None,
    exclude_seen: bool = True,
    per_user: bool = False,
) -> dict[str, float]:
    """Metrics of ``score_fn`` on ``holdout`` ('test': seen = train; 'validation': seen = fit).

    On 'test' also novelty, diversity (with ``item_category``: one category id per item)
    and the cold-start slice (keys prefixed ``cold_start_``). ``exclude_seen=False`` ranks
    the seen items too (the backtest's repeat purchases); the protocol excludes them.
    ``per_user=True`` adds ``PER_USER_NDCG``: every evaluated user's NDCG@20 (sorted user
    index order), for the gate's paired bootstrap.
    """
    if holdout == "test":
        seen, truth = data.train, data.test
    elif holdout == "validation":
        seen, truth = data.fit, data.validation
    else:
        raise ValueError(f"holdout must be 'test' or 'validation', not {holdout!r}")
    users = data.evaluated_users(truth)
    top_items, _ = batched_top_k(score_fn, users, max(ks), exclude=seen if exclude_seen else None)
    metrics = ranking_metrics(top_items, truth[users], data.n_items, ks)
    metrics["evaluated_users"] = int(len(users))
    if per_user:
        metrics[PER_USER_NDCG] = per_user_ndcg(top_items, truth[users], data.n_items, 20)
    if holdout != "test":
        return metrics
    k = max(ks)
    metrics[f"novelty@{k}"] = novelty(top_items, popularity_share(seen), k)
    if item_category is not None:
        metrics[f"diversity@{k}"] = intra_list_diversity(top_items, item_category, k)
    train_sizes = np.diff(seen.indptr)[users]
    cold = train_sizes <= COLD_START_MAX_TRAIN_ITEMS
    if cold.any():
        sliced = ranking_metrics(top_items[cold], truth[users[cold]], data.n_items, ks)
        metrics |= {f"cold_start_{name}": value for name, value in sliced.items() if not name.startswith("coverage")}
        metrics["cold_start_users"] = int(cold.sum())
    return metrics


def category_ids(item_ids: np.ndarray, catalogue) -> np.ndarray:
    """One integer per item (aligned with ``item_ids``) for its category, from the ``catalogue`` frame
    (item_id, category: the ``item_features`` mart); unknown items share one id."""
    categories = dict(zip(catalogue["item_id"].astype(str), catalogue["category"], strict=True))
    names = np.array([categories.get(str(item), "") or "" for item in item_ids], dtype=object)
    _, ids = np.unique(names.astype(str), return_inverse=True)
    return ids.astype(np.int64)


BASELINE_NAMES = BASELINES
EASE_L2_GRID = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
EASE_MAX_ITEMS = 20_000  # its dense item x item inverse: 3.2 GB at 20k items


def tuned_ease(data: InteractionData):
    """EASE with its L2 weight chosen on the validation split (fit on ``fit``), refitted on train."""
    from ml.baselines import EASE

    scores = {
        l2: evaluate_scores(EASE(l2).fit(data.fit).score, data, holdout="validation")[PRIMARY_METRIC]
        for l2 in EASE_L2_GRID
    }
    best = max(scores, key=scores.get)
    log.info("EASE l2 on validation: %s -> %s", {k: round(v, 4) for k, v in scores.items()}, best)
    return EASE(best).fit(data.train), {
        "l2": best,
        f"validation_{PRIMARY_METRIC}": {str(k): v for k, v in scores.items()},
    }


def fit_baselines(data: InteractionData, names: Sequence[str] = BASELINE_NAMES) -> tuple[dict, dict, dict[str, float]]:
    """Each baseline fitted on ``data.train`` (EASE tuned on validation): models, tuning record, seconds."""
    import time

    from ml.baselines import BASELINES

    models: dict[str, object] = {}
    tuning: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        if name == EASE:
            if data.n_items > EASE_MAX_ITEMS:
                log.warning("EASE skipped: %d items exceed its %d-item limit", data.n_items, EASE_MAX_ITEMS)
                continue
            models[name], tuning[name] = tuned_ease(data)
        else:
            models[name] = BASELINES[name]().fit(data.train)
        seconds[name] = round(time.perf_counter() - started, 2)
    return models, tuning, seconds


def evaluate_baselines(
    data: InteractionData, item_category: np.ndarray | None = None, names: Sequence[str] = BASELINE_NAMES
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Test metrics of every baseline on ``data`` (EASE tuned on validation), and the tuning record."""
    models, tuning, seconds = fit_baselines(data, names)
    metrics = {
        name: evaluate_scores(model.score, data, item_category=item_category) | {"seconds": seconds[name]}
        for name, model in models.items()
    }
    return metrics, tuning
