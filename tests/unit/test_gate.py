"""The promotion gate promotes only a model that clears every blocking check."""

from __future__ import annotations

import pytest

from ml.gate import GateConfig, decide

pytestmark = pytest.mark.unit

CONFIG = GateConfig(primary_metric="ndcg@20", minimum={"ndcg@20": 0.01}, champion_tolerance=0.05)


def _metrics(challenger: float, popular: float = 0.04, knn: float = 0.10) -> dict:
    return {"two_tower": {"ndcg@20": challenger}, "most_popular": {"ndcg@20": popular}, "item_knn": {"ndcg@20": knn}}


def test_promotes_a_model_that_beats_baselines_and_champion():
    decision = decide("two_tower", _metrics(0.12), ["most_popular", "item_knn"], {"ndcg@20": 0.11}, True, CONFIG)
    assert decision.promote
    assert all(check.passed for check in decision.checks)
    assert len(decision.reasons()) == 4


def test_refuses_a_model_below_a_baseline_and_says_which():
    decision = decide("two_tower", _metrics(0.09), ["most_popular", "item_knn"], None, False, CONFIG)
    assert not decision.promote
    failed = [c for c in decision.checks if not c.passed]
    assert [c.name for c in failed] == ["beats baseline item_knn"]
    assert "FAIL: beats baseline item_knn: ndcg@20 = 0.0900 vs 0.1000" in decision.reasons()


def test_champion_tolerance_is_relative():
    ok = decide("two_tower", _metrics(0.1140), ["item_knn"], {"ndcg@20": 0.12}, True, CONFIG)
    worse = decide("two_tower", _metrics(0.1139), ["item_knn"], {"ndcg@20": 0.12}, True, CONFIG)
    assert ok.promote and not worse.promote


def test_champion_on_other_data_is_reported_but_does_not_block():
    decision = decide("two_tower", _metrics(0.11), ["item_knn"], {"ndcg@20": 0.5}, False, CONFIG)
    assert decision.promote
    champion_check = decision.checks[-1]
    assert not champion_check.passed and not champion_check.blocking
    assert "not blocking" in champion_check.describe()


def test_absolute_floor():
    decision = decide(
        "two_tower", _metrics(0.005, popular=0.001, knn=0.002), ["most_popular", "item_knn"], None, False, CONFIG
    )
    assert not decision.promote
    assert decision.checks[0].name == "minimum ndcg@20" and not decision.checks[0].passed


def test_env_floor_follows_the_chosen_primary_metric(monkeypatch):
    monkeypatch.setenv("RECSYS_GATE_PRIMARY_METRIC", "recall@20")
    monkeypatch.setenv("RECSYS_GATE_MIN_PRIMARY", "0.3")
    config = GateConfig.from_env()
    assert config.primary_metric == "recall@20"
    assert config.minimum["recall@20"] == 0.3
    assert config.minimum["ndcg@20"] == 0.01
