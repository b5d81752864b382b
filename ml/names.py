"""The names the pipeline's records use for models, metrics and evaluation views.

``metrics.json``, ``decision.json``, the release manifest and champion pointer are read
long after they were written, by the gate, the report, the model card, the CLI and the
models page. One spelling of each name, here, keeps those readers from drifting apart.
"""

from __future__ import annotations


def metric(name: str, k: int) -> str:
    """The key of a top-K metric (``metric("ndcg", 20)`` is ``"ndcg@20"``)."""
    return f"{name}@{k}"


# --- models ------------------------------------------------------------------------------
TWO_TOWER = "two_tower"  # the challenger: the two-tower retrieval model (and its ranking stage, when used)
TWO_TOWER_RANKED = "two_tower+ranking"  # the backtest's row for the two-tower model with its ranking stage
MOST_POPULAR = "most_popular"
ITEM_KNN = "item_knn"
USER_KNN = "user_knn"
EASE = "ease"
BOUGHT_BEFORE = "bought_before"  # the shopper's own past items, most often then most recently had (repeats counted)
TIFU_KNN = "tifu_knn"  # personal item frequency with time decay, blended with the nearest shoppers' (Hu et al. 2020)
CANDIDATE_RANKING = "candidates+ranking"  # several sources' candidates re-ranked with repeat-buying features
REPEAT_BASELINES = (BOUGHT_BEFORE, TIFU_KNN)  # baselines that read how often and how recently (time-cut views)

CHALLENGER = TWO_TOWER
BASELINES = (MOST_POPULAR, ITEM_KNN, USER_KNN, EASE)  # what the gate compares the challenger with

# --- metrics -----------------------------------------------------------------------------
KS = (10, 20)
NDCG_20 = metric("ndcg", 20)
RECALL_20 = metric("recall", 20)
PRIMARY_METRIC = NDCG_20  # what the gate, early stopping and every "best" choice go by

# the table every summary shows (CLI, model card, report's backtest and ranking-stage tables)
SUMMARY_METRICS = (
    metric("recall", 10),
    metric("ndcg", 10),
    RECALL_20,
    NDCG_20,
    metric("hit_rate", 20),
    metric("map", 20),
    metric("coverage", 10),
)
# what the models page compares first, primary metric first
KEY_METRICS = (NDCG_20, RECALL_20, metric("hit_rate", 20), metric("map", 20), metric("coverage", 10))
# the report's full table: accuracy, beyond-accuracy and the cold-start slice
REPORT_METRICS = (
    metric("ndcg", 10),
    metric("recall", 10),
    NDCG_20,
    RECALL_20,
    metric("hit_rate", 20),
    metric("map", 20),
    metric("coverage", 10),
    metric("novelty", 20),
    metric("diversity", 20),
    f"cold_start_{NDCG_20}",
    f"cold_start_{RECALL_20}",
)

# --- evaluation views --------------------------------------------------------------------
PER_USER_HOLDOUT = "per-user temporal holdout, full ranking; hyper-parameters chosen on validation"
NEW_ITEMS = "new_items"  # the backtest without the shopper's past items
WITH_REPEATS = "with_repeats"  # the backtest with repeat purchases counted
BACKTEST_VIEWS = {
    NEW_ITEMS: "new items only (already-bought items excluded)",
    WITH_REPEATS: "repeat purchases counted (every item ranked)",
}
# the ranking stage's two orders, both measured on test
RETRIEVAL_ORDER = "retrieval_order"
RERANKED = "reranked"
