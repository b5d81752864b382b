"""A baseline too large for the data is skipped, and every reader is told which and why (issue 19)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline.reporting.report import render
from recsys_pipeline.reporting.summary import RunSummary

pytestmark = pytest.mark.unit


def _data(n_users: int = 40, n_items: int = 30):
    """Six items per shopper in time order: the last is test, the one before validation, the rest fit."""
    from ml.data import from_split_frame

    rng = np.random.default_rng(0)
    items = np.concatenate([rng.choice(n_items, size=6, replace=False) for _ in range(n_users)])
    rank = np.tile(np.arange(1, 7), n_users)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{user:03d}" for user in np.repeat(np.arange(n_users), 6)],
            "item_id": [f"i{item:02d}" for item in items],
            "split": np.where(rank == 6, "test", "train"),
            "is_validation": (rank == 5).astype(int),
            "item_rank": rank,
        }
    )
    return from_split_frame(frame)


def test_ease_past_its_item_limit_is_skipped_with_the_reason(monkeypatch):
    from ml.evaluate import evaluate_baselines, fit_baselines
    from ml.names import EASE, ITEM_KNN, MOST_POPULAR

    data = _data()
    monkeypatch.setenv("RECSYS_EASE_MAX_ITEMS", str(data.n_items - 1))
    models, tuning, seconds = fit_baselines(data)
    assert EASE not in models and EASE not in seconds
    reason = tuning[EASE]["skipped"]
    assert f"{data.n_items:,} items" in reason and f"{data.n_items - 1:,}-item limit" in reason
    assert "RECSYS_EASE_MAX_ITEMS" in reason
    metrics, tuning = evaluate_baselines(data)  # what metrics.json gets: the models measured, the skip recorded
    assert {MOST_POPULAR, ITEM_KNN} <= set(metrics) and EASE not in metrics
    assert tuning[EASE] == {"skipped": reason}

    monkeypatch.setenv("RECSYS_EASE_MAX_ITEMS", str(data.n_items))  # at the limit it is fitted
    models, tuning, _ = fit_baselines(data, (EASE,))
    assert EASE in models and "l2" in tuning[EASE]


def test_the_default_limit_keeps_ease_within_the_memory_goal(monkeypatch):
    from ml import evaluate

    monkeypatch.delenv("RECSYS_EASE_MAX_ITEMS", raising=False)
    limit = evaluate.ease_max_items()
    assert limit == evaluate.EASE_MAX_ITEMS
    assert evaluate.EASE_BYTES_PER_ITEM_PAIR * limit**2 <= evaluate.EASE_MEMORY_BUDGET_BYTES
    assert limit < 20_000  # the 10M-event synthetic shop's catalogue is skipped, Online Retail's 3,675 kept
    assert limit >= 3_675


def test_the_report_names_each_skipped_baseline_under_its_view():
    reason = "20,000 items: its dense item x item fit would hold about 12.8 GB at once"
    training = {"model": "two_tower", "model_version": "two_tower-r1", "config": {}}
    metrics = {
        "primary_metric": "ndcg@20",
        "protocol": "per-user temporal holdout",
        "tuning": {"ease": {"skipped": reason}},
        "models": {"two_tower": {"ndcg@20": 0.15}, "item_knn": {"ndcg@20": 0.10}},
        "backtest": {
            "window": {"cut_at": "2024-03-01 00:00:00"},
            "users": 10,
            "tuning": {"ease": {"skipped": reason + " (the cut)"}, "two_tower": {"chosen": "default"}},
            "variants": {"new_items": {"evaluated_users": 10, "models": {"two_tower": {"ndcg@20": 0.05}}}},
        },
    }
    page = render(RunSummary(training, metrics, None), "r")
    holdout = page[page.index("Basket completion") : page.index("The gate's view")]
    gate_view = page[page.index("The gate's view") :]
    assert "Not evaluated on this view" in holdout and f"<li>ease: {reason}</li>" in holdout
    assert f"<li>ease: {reason} (the cut)</li>" in gate_view
    assert "<li>two_tower" not in gate_view  # only skipped baselines are listed

    measured = metrics | {"tuning": {"ease": {"l2": 200}}}
    measured.pop("backtest")
    assert "Not evaluated" not in render(RunSummary(training, measured, None), "r")


def test_user_knn_past_its_neighbour_pool_is_recorded_as_approximated_and_reported(monkeypatch):
    from ml.evaluate import evaluate_baselines
    from ml.names import ITEM_KNN, USER_KNN

    data = _data()
    monkeypatch.setenv("RECSYS_KNN_NEIGHBOUR_POOL", str(data.n_users - 5))
    metrics, tuning = evaluate_baselines(data, names=(USER_KNN, ITEM_KNN))
    assert USER_KNN in metrics  # evaluated, with its bound said
    bound = tuning[USER_KNN]["approximated"]
    assert (
        f"{data.n_users - 5:,} most active of {data.n_users:,} users" in bound and "RECSYS_KNN_NEIGHBOUR_POOL" in bound
    )
    assert ITEM_KNN not in tuning  # item-based: no bound

    monkeypatch.setenv("RECSYS_KNN_NEIGHBOUR_POOL", str(data.n_users))  # every user fits: exact, nothing said
    assert USER_KNN not in evaluate_baselines(data, names=(USER_KNN,))[1]

    training = {"model": "two_tower", "model_version": "two_tower-r1", "config": {}}
    report = {"primary_metric": "ndcg@20", "tuning": tuning, "models": {"two_tower": {"ndcg@20": 0.15}}}
    page = render(RunSummary(training, report, None), "r")
    assert "Approximated on this view" in page and f"<li>user_knn: {bound}</li>" in page


def test_settings_chosen_on_a_sample_are_said_in_the_records_and_the_report(monkeypatch):
    from ml.evaluate import tuned_ease

    data = _data()
    shoppers = int((np.diff(data.validation.indptr) > 0).sum())
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", str(shoppers - 3))
    _, record = tuned_ease(data)
    sampled = record["validation_shoppers"]
    assert (
        f"{shoppers - 3:,} of the {shoppers:,} validation shoppers" in sampled and "RECSYS_TUNING_SHOPPERS" in sampled
    )
    training = {"model": "two_tower", "model_version": "two_tower-r1", "config": {}}
    metrics = {
        "primary_metric": "ndcg@20",
        "protocol": "per-user temporal holdout",
        "tuning": {"ease": record},
        "models": {"two_tower": {"ndcg@20": 0.15}, "ease": {"ndcg@20": 0.10}},
    }
    page = render(RunSummary(training, metrics, None), "r")
    assert "Settings chosen on a sample" in page and f"<li>ease: {sampled}</li>" in page
    monkeypatch.setenv("RECSYS_TUNING_SHOPPERS", str(shoppers))  # every shopper fits: nothing said
    _, record = tuned_ease(data)
    assert "validation_shoppers" not in record
    assert "Settings chosen on a sample" not in render(
        RunSummary(training, metrics | {"tuning": {"ease": record}}, None), "r"
    )


def test_the_loss_and_validation_curves_say_when_their_points_are_parts_of_an_epoch():
    metrics = {"primary_metric": "ndcg@20", "protocol": "per-user temporal holdout", "models": {}}
    large = {
        "model": "two_tower",
        "config": {},
        "loss_per_epoch": [3.1],
        "epochs_per_loss_point": 0.2,  # a refit of 0.2 epochs: one round of a fifth of an epoch
        "validation_ndcg@20_per_epoch": [0.1, 0.11, 0.105],
        "epochs_per_check": 0.2,
        "best_check": 2,
    }
    page = render(RunSummary(large, metrics, None), "r")
    assert "round (0.2 of an epoch)" in page and "check (5 an epoch)" in page
    small = large | {"epochs_per_loss_point": 1.0, "epochs_per_check": 1.0}
    page = render(RunSummary(small, metrics, None), "r")
    assert "of an epoch" not in page and "an epoch)" not in page
