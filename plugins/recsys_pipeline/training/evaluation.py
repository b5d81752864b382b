"""Measure the challenger beside every baseline, on the same split and under the same protocol.

``evaluate`` writes ``metrics.json``: the per-user holdout that the gate decides on,
with both orders of the ranking stage. ``backtest`` adds the protocol's global time
cut beside it (refitting every model), reported and never gated on.
"""

from __future__ import annotations

import logging

import pandas as pd

from ml.names import CHALLENGER, KS, NDCG_20, PER_USER_HOLDOUT, PRIMARY_METRIC, RECALL_20, RERANKED, RETRIEVAL_ORDER
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.training import scoring, snapshot

log = logging.getLogger(__name__)


def evaluate(artifacts: RunArtifacts) -> dict:
    """Test metrics of the two-tower model and every baseline, on the run's split."""
    from ml.evaluate import category_ids, evaluate_baselines, evaluate_scores

    data = snapshot.read_split(artifacts)
    item_category = None
    if artifacts.exists(RunArtifacts.ITEM_ATTRIBUTES):
        item_category = category_ids(data.item_ids, snapshot.read_catalogue(artifacts))
    metrics, tuning = evaluate_baselines(data, item_category)
    retrieval = scoring.retrieval_scores(artifacts, scoring.EVALUATION_USERS)
    # both orders are measured (the report shows them); the challenger is the one the run chose on validation
    ranking = artifacts.read_json(RunArtifacts.TRAINING).get("ranking_stage", {})
    ranker = scoring.ranking_stage(artifacts, data.item_ids, data.train, used_only=False)
    orders = {RETRIEVAL_ORDER: evaluate_scores(retrieval, data, item_category=item_category)}
    if ranker is not None:
        orders[RERANKED] = evaluate_scores(
            ranker.score_fn(retrieval, data.train, max(KS)), data, item_category=item_category
        )
    metrics[CHALLENGER] = orders[RERANKED if ranking.get("used") and ranker is not None else RETRIEVAL_ORDER]
    report = {
        "primary_metric": PRIMARY_METRIC,
        "models": metrics,
        "tuning": tuning,
        "ranking_stage": ranking | {"test": orders},
        "protocol": PER_USER_HOLDOUT,
        "data_window": snapshot.data_window(pd.read_parquet(artifacts.path(RunArtifacts.SPLIT))),
    }
    artifacts.write_json(RunArtifacts.METRICS, report)
    for name, values in metrics.items():
        log.info("%-14s %s=%.4f %s=%.4f", name, RECALL_20, values[RECALL_20], NDCG_20, values[NDCG_20])
    return {name: {m: round(values[m], 4) for m in (RECALL_20, NDCG_20)} for name, values in metrics.items()}


def backtest(artifacts: RunArtifacts, max_epochs: int) -> dict:
    """The protocol's global time-cut backtest (``ml.backtest``) of every baseline and the run's two-tower
    configuration, added to ``metrics.json`` under ``backtest``: beside the gate's metrics, not in them."""
    from ml.backtest import run_backtest
    from ml.two_tower import TwoTowerConfig

    frame = pd.read_parquet(artifacts.path(RunArtifacts.TIME_SPLIT))
    config = TwoTowerConfig(**(artifacts.read_json(RunArtifacts.TRAINING)["config"] | {"epochs": max_epochs}))
    result = run_backtest(
        frame, config, catalogue=snapshot.read_catalogue(artifacts), user_segments=snapshot.read_segments(artifacts)
    )
    artifacts.write_json(RunArtifacts.METRICS, artifacts.read_json(RunArtifacts.METRICS) | {"backtest": result})
    for view, values in result["variants"].items():
        for name, metrics in sorted(values["models"].items(), key=lambda kv: -kv[1][NDCG_20]):
            log.info(
                "backtest %-12s %-14s %s=%.4f %s=%.4f",
                view,
                name,
                RECALL_20,
                metrics[RECALL_20],
                NDCG_20,
                metrics[NDCG_20],
            )
    return {
        view: {name: round(m[NDCG_20], 4) for name, m in values["models"].items()}
        for view, values in result["variants"].items()
    } | {"cut_at": result["window"]["cut_at"]}
