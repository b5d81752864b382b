"""Measure the challenger beside every baseline, on the same split and under the same protocol.

``evaluate`` writes ``metrics.json``: the per-user holdout (the "basket completion" view:
it splits baskets, so it is reported, never gated on), with both orders of the ranking
stage. ``backtest`` adds the gate's view: the protocol's global time cut, placed by
``ml.time_cut`` (or its fallback, the per-user holdout with baskets kept whole), with the
run's configuration and every baseline refitted on what came before the cut and each
model's per-user NDCG@20 kept for the gate's bootstrap. ``champion_on_gate_view``
refits the champion's recorded configuration on the same data, so that the gate
compares the two on the same users.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from ml.names import CHALLENGER, KS, NDCG_20, PER_USER_HOLDOUT, PRIMARY_METRIC, RECALL_20, RERANKED, RETRIEVAL_ORDER
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.training import scoring, snapshot

log = logging.getLogger(__name__)

BASKET_COMPLETION = "basket completion: the per-user holdout splits baskets; reported, never the gate's view"


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
    orders, sample_note = _ranking_stage_orders(data, retrieval, ranker, bool(ranking.get("used")), item_category)
    if ranking.get("used") and ranker is not None:
        metrics[CHALLENGER] = orders[RERANKED]
    elif sample_note is None:
        metrics[CHALLENGER] = orders[RETRIEVAL_ORDER]
    else:  # the orders were compared on a sample: the challenger's own row covers every shopper
        metrics[CHALLENGER] = evaluate_scores(retrieval, data, item_category=item_category)
    report = {
        "primary_metric": PRIMARY_METRIC,
        "models": metrics,
        "tuning": tuning,
        "ranking_stage": ranking | {"test": orders} | ({"test_shoppers": sample_note} if sample_note else {}),
        "protocol": PER_USER_HOLDOUT,
        "role": BASKET_COMPLETION,
        "data_window": snapshot.data_window(pd.read_parquet(artifacts.path(RunArtifacts.SPLIT))),
    }
    artifacts.write_json(RunArtifacts.METRICS, report)
    for name, values in metrics.items():
        log.info("%-14s %s=%.4f %s=%.4f", name, RECALL_20, values[RECALL_20], NDCG_20, values[NDCG_20])
    return {name: {m: round(values[m], 4) for m in (RECALL_20, NDCG_20)} for name, values in metrics.items()}


def _ranking_stage_orders(data, retrieval, ranker, used: bool, item_category) -> tuple[dict, str | None]:
    """Test metrics of the retrieval order and, where the run has a ranking stage, the re-ordered one; and what
    says so when they were compared on a sample.

    A stage the run does not use is a diagnostic, not what is published, and re-ordering costs
    far more than retrieval (its features per candidate; ~280 of `evaluate_models`' 520 s at 10M
    events, bench/README.md). So past ``ml.tuning_shoppers``' bound of test shoppers an unused
    stage's two orders are compared side by side on the same seeded sample; a used stage, the
    challenger itself, is measured on every shopper.
    """
    import dataclasses

    import numpy as np

    from ml import tuning_shoppers
    from ml.evaluate import evaluate_scores

    compared, note = data, None
    if ranker is not None and not used and tuning_shoppers.note(data.test) is not None:
        compared = dataclasses.replace(data, test=tuning_shoppers.sampled(data.test))
        shoppers = int((np.diff(data.test.indptr) > 0).sum())
        note = (
            f"both orders on a seeded sample of {tuning_shoppers.bound():,} of the {shoppers:,} test shoppers "
            "(RECSYS_TUNING_SHOPPERS): the run does not use the stage; the challenger's row covers every shopper"
        )
    orders = {RETRIEVAL_ORDER: evaluate_scores(retrieval, compared, item_category=item_category)}
    if ranker is not None:
        reranked = ranker.score_fn(retrieval, data.train, max(KS))
        orders[RERANKED] = evaluate_scores(reranked, compared, item_category=item_category)
    return orders, note


def backtest(artifacts: RunArtifacts, max_epochs: int) -> dict:
    """The gate's view (``ml.backtest`` on the cut ``ml.time_cut`` places) of every baseline and the run's
    two-tower configuration -- its objective, profile and ranking stage as the run chose them, epochs up to
    ``max_epochs`` chosen again before the cut -- added to ``metrics.json`` under ``backtest``."""
    from ml.backtest import run_backtest
    from ml.time_cut import choose_cut
    from ml.two_tower import TwoTowerConfig

    frame = pd.read_parquet(artifacts.path(RunArtifacts.TIME_SPLIT))
    training = artifacts.read_json(RunArtifacts.TRAINING)
    config = TwoTowerConfig(**(training["config"] | {"epochs": max_epochs}))
    candidates_published = bool((training.get("candidate_ranking") or {}).get("used"))
    if candidates_published and os.environ.get("RECSYS_BACKTEST_TWO_TOWER", "0").lower() not in ("1", "true", "yes"):
        # the published lists are the candidate ranking's (the two-tower model answers in context only): the
        # gate does not need the two-tower refitted on the cut, which is the longest fit of the backtest
        config = None
    choice = choose_cut(frame, start=pd.Timestamp(pd.to_datetime(frame["cut_at"]).iloc[0]) if len(frame) else None)
    log.info("gate's view: %s (%s)", choice.view, choice.reason)
    result = run_backtest(
        frame,
        config,
        catalogue=snapshot.read_catalogue(artifacts),
        user_segments=snapshot.read_segments(artifacts),
        choice=choice,
        recipe={
            "ranking_stage": bool(training.get("ranking_stage", {}).get("used")),
            "repeat_policy": training.get("repeat_policy"),
            # the gate measures what is published: the candidate ranking only where the run fitted it
            "candidate_ranking": bool((training.get("candidate_ranking") or {}).get("used")),
            "max_epochs": max_epochs,
        },
        days_frame=snapshot.read_days(artifacts),
    )
    if config is None:
        result["two_tower"] = (
            "not refitted on the cut: the published lists are the candidate ranking's "
            "(RECSYS_BACKTEST_TWO_TOWER=1 measures it too)"
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
    } | {"view": choice.view, "cut_at": choice.cut_at}


def _candidate_ranking_champion(data, recipe: dict, variant: str, champion_training: dict) -> tuple[dict, list]:
    """A candidate-ranking champion on this view: its sources' hyper-parameters as it recorded them, its
    ranker trained again on this view's validation period (as the challenger's is), scored on ``variant``."""
    from ml.candidate_ranking import train_candidate_ranking
    from ml.data import bought_between
    from ml.evaluate import PER_USER_NDCG, evaluate_scores
    from ml.names import WITH_REPEATS
    from ml.repeat_policy import INCLUDE, from_record, policy_score_fn

    policy = from_record(champion_training.get("repeat_policy"))
    include_own = policy.mode == INCLUDE and variant == WITH_REPEATS
    truth = bought_between(data.repeats, data.fit_repeats) if include_own else data.validation
    _, score = train_candidate_ranking(data, recipe, include_own, truth)
    if score is None:
        raise RuntimeError("the champion's candidate ranking could not be trained on this view")
    if variant == WITH_REPEATS and not include_own:
        score = policy_score_fn(score, policy, data.train, data.repeats)
    metrics = evaluate_scores(score, data, exclude_seen=variant != WITH_REPEATS, per_user=True)
    per_user = [round(float(v), 6) for v in metrics.pop(PER_USER_NDCG)]
    log.info("champion (candidate ranking) on the gate's view (%s): %s=%.4f", variant, NDCG_20, metrics[NDCG_20])
    return metrics, per_user


def champion_on_gate_view(artifacts: RunArtifacts, champion_training: dict, variant: str) -> tuple[dict, list]:
    """The champion's configuration (its ``training.json``: hyper-parameters and epochs as it chose them)
    refitted on the train side of this run's gate view and scored on ``variant``: its metrics and per-user
    NDCG@20, aligned with the challenger's. Its ranking stage is not replayed (retrieval order)."""
    import dataclasses

    from ml.evaluate import PER_USER_NDCG, evaluate_scores
    from ml.item_attributes import encode as encode_item_attributes
    from ml.names import NEW_ITEMS
    from ml.time_cut import ViewChoice, view_data
    from ml.train import TwoTowerRecommender
    from ml.two_tower import TwoTowerConfig
    from ml.user_segments import encode as encode_segments

    frame = pd.read_parquet(artifacts.path(RunArtifacts.TIME_SPLIT))
    choice = ViewChoice.from_dict(artifacts.read_json(RunArtifacts.METRICS)["backtest"]["view"])
    data, repeats = view_data(frame, choice, snapshot.read_days(artifacts))
    if variant != NEW_ITEMS:
        data = dataclasses.replace(data, test=repeats)
    recorded = champion_training.get("candidate_ranking") or {}
    if recorded.get("used") and data.repeats is not None:
        return _candidate_ranking_champion(data, recorded["recipe"], variant, champion_training)
    known = {f.name for f in dataclasses.fields(TwoTowerConfig)}
    config = TwoTowerConfig(**{k: v for k, v in champion_training["config"].items() if k in known})
    catalogue, segments = snapshot.read_catalogue(artifacts), snapshot.read_segments(artifacts)
    attributes = encode_item_attributes(data.item_ids, catalogue) if config.item_attributes else None
    user_segments = encode_segments(data.user_ids, segments) if segments is not None else None
    model = TwoTowerRecommender(config, item_attributes=attributes, user_segments=user_segments)
    model.fit(data.train, data.histories)
    metrics = evaluate_scores(model.score, data, exclude_seen=variant == NEW_ITEMS, per_user=True)
    per_user = [round(float(v), 6) for v in metrics.pop(PER_USER_NDCG)]
    log.info(
        "champion %s on the gate's view (%s): %s=%.4f",
        champion_training.get("model_version"),
        variant,
        NDCG_20,
        metrics[NDCG_20],
    )
    return metrics, per_user
