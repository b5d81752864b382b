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
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from ml import tuning_shoppers
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
    elif holdout == "validation":  # choosing a setting: a seeded sample of the shoppers past a bound
        seen, truth = data.fit, tuning_shoppers.sampled(data.validation)
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
# EASE's fit holds four dense item x item float64 matrices at once (the Gram matrix, np.linalg.inv's
# working copy and its result, then the weights beside them): peak RSS measured at 32.6-33.3 bytes
# per item pair (3k-5k items), so 13 GB at 20k items. The limit keeps it under 4 GiB, half of
# issue 19's 8 GB peak for a stage: 11,408 items (Online Retail has 3,675). A machine with more
# memory raises it with RECSYS_EASE_MAX_ITEMS.
EASE_BYTES_PER_ITEM_PAIR = 33
EASE_MEMORY_BUDGET_BYTES = 4 * 1024**3
EASE_MAX_ITEMS = math.isqrt(EASE_MEMORY_BUDGET_BYTES // EASE_BYTES_PER_ITEM_PAIR)
SKIPPED = "skipped"  # a baseline's tuning record carries this key, with the reason, when it was not fitted
APPROXIMATED = "approximated"  # ... and this one when it was fitted with a bound that changes its scores


def ease_max_items() -> int:
    """The largest catalogue EASE is fitted on: ``RECSYS_EASE_MAX_ITEMS``, else ``EASE_MAX_ITEMS``."""
    value = os.environ.get("RECSYS_EASE_MAX_ITEMS", "").strip()
    return int(value) if value else EASE_MAX_ITEMS


def too_large(name: str, data: InteractionData) -> str | None:
    """Why baseline ``name`` cannot be fitted on ``data`` within the memory goal, or None when it can."""
    if name != EASE:
        return None
    limit = ease_max_items()
    if data.n_items <= limit:
        return None
    gigabytes = EASE_BYTES_PER_ITEM_PAIR * data.n_items**2 / 1e9
    return (
        f"{data.n_items:,} items: its dense item x item fit would hold about {gigabytes:.1f} GB at once, "
        f"past the {limit:,}-item limit (RECSYS_EASE_MAX_ITEMS) that keeps a stage under 8 GB"
    )


def approximation(model) -> str | None:
    """How a fitted kNN model (item-kNN, user-kNN, TIFU-KNN) was bounded for a large shop, or None when it is exact."""
    kept = getattr(model, "bounded_neighbours_", None)
    if kept is not None:
        return (
            f"each item's {kept:,} most similar of {model.train_.shape[1]:,} items (RECSYS_ITEM_KNN_NEIGHBOURS, "
            "past RECSYS_ITEM_KNN_EXACT_ITEMS items): exact scores read every item's similarities for every shopper"
        )
    pool = getattr(model, "pool_", None)
    if pool is None:
        return None
    return (
        f"neighbours among the {len(pool):,} most active of {model.normalized_.shape[0]:,} users "
        "(RECSYS_KNN_NEIGHBOUR_POOL): exact neighbours grow with the square of the users"
    )


def tuned_ease(data: InteractionData):
    """EASE with its L2 weight chosen on the validation split (fit on ``fit``), refitted on train."""
    from ml.baselines import EASE

    scores = {
        l2: evaluate_scores(EASE(l2).fit(data.fit).score, data, holdout="validation")[PRIMARY_METRIC]
        for l2 in EASE_L2_GRID
    }
    best = max(scores, key=scores.get)
    log.info("EASE l2 on validation: %s -> %s", {k: round(v, 4) for k, v in scores.items()}, best)
    record = {"l2": best, f"validation_{PRIMARY_METRIC}": {str(k): v for k, v in scores.items()}}
    if (sampled := tuning_shoppers.note(data.validation)) is not None:
        record["validation_shoppers"] = sampled
    return EASE(best).fit(data.train), record


def fit_baselines(data: InteractionData, names: Sequence[str] = BASELINE_NAMES) -> tuple[dict, dict, dict[str, float]]:
    """Each baseline fitted on ``data.train`` (EASE tuned on validation): models, tuning record, seconds.

    A baseline too large for ``data`` (``too_large``) is left out of the models; its tuning record
    says so, ``{"skipped": reason}``, and that record goes into ``metrics.json`` under the view
    that left it out (``tuning``, or ``backtest.tuning``), where the report shows it.
    """
    import time

    from ml.baselines import BASELINES

    models: dict[str, object] = {}
    tuning: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        reason = too_large(name, data)
        if reason is not None:
            log.warning("%s skipped: %s", name, reason)
            tuning[name] = {SKIPPED: reason}
            continue
        if name == EASE:
            models[name], tuning[name] = tuned_ease(data)
        else:
            models[name] = BASELINES[name]().fit(data.train)
        if (bound := approximation(models[name])) is not None:
            tuning[name] = tuning.get(name, {}) | {APPROXIMATED: bound}
        seconds[name] = round(time.perf_counter() - started, 2)
    return models, tuning, seconds


def evaluate_baselines(
    data: InteractionData, item_category: np.ndarray | None = None, names: Sequence[str] = BASELINE_NAMES
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Test metrics of every baseline on ``data`` (EASE tuned on validation), and the tuning record."""
    import time

    models, tuning, seconds = fit_baselines(data, names)
    metrics = {}
    for name, model in models.items():
        started = time.perf_counter()
        metrics[name] = evaluate_scores(model.score, data, item_category=item_category) | {"seconds": seconds[name]}
        # ranking every test shopper against the catalogue: the stage's cost on a large shop, so it is logged
        log.info(
            "%s ranked for %d test users in %.1f s",
            name,
            metrics[name]["evaluated_users"],
            time.perf_counter() - started,
        )
    return metrics, tuning
