"""The promotion gate decides on paired bootstrap intervals: a win, a tie and a loss on hand-made users."""

from __future__ import annotations

import numpy as np
import pytest

from ml.gate import NO_SIGNIFICANT_DIFFERENCE, PROMOTE, REFUSED, GateConfig, decide

pytestmark = pytest.mark.unit

CONFIG = GateConfig(minimum={"ndcg@20": 0.01})
BASELINES = ["most_popular", "ease"]
RNG = np.random.default_rng(0)
USERS = 400
POPULAR = RNG.uniform(0.0, 0.4, USERS)  # most_popular's per-user NDCG@20
EASE = np.clip(POPULAR + 0.05 + RNG.normal(0, 0.02, USERS), 0, 1)  # the best baseline, by 0.05


def _decide(challenger: np.ndarray, champion: np.ndarray | None = None, config: GateConfig = CONFIG):
    per_user = {"two_tower": challenger, "most_popular": POPULAR, "ease": EASE}
    metrics = {name: {"ndcg@20": float(np.mean(values))} for name, values in per_user.items()}
    return decide("two_tower", per_user, metrics, BASELINES, champion, config)


def test_a_model_that_wins_on_every_user_is_promoted():
    decision = _decide(EASE + 0.02, champion=EASE + 0.01)
    assert decision.promote and decision.outcome == PROMOTE and decision.best_baseline == "ease"
    best = next(c for c in decision.comparisons if c.against == "ease")
    assert best.interval.low > 0 and best.role == "best baseline"
    assert [c.against for c in decision.comparisons] == ["most_popular", "ease", "champion"]
    assert all(check.passed for check in decision.checks)
    assert decision.reasons()[-1].startswith("promote: significantly better than the best baseline (ease)")


def test_a_tie_with_the_best_baseline_keeps_the_champion():
    noise = RNG.normal(0, 0.05, USERS)
    decision = _decide(np.clip(EASE + noise - noise.mean(), 0, 1), champion=EASE)  # same mean, other users
    best = next(c for c in decision.comparisons if c.against == "ease")
    assert best.interval.low <= 0 <= best.interval.high
    assert not decision.promote and decision.outcome == NO_SIGNIFICANT_DIFFERENCE
    assert "the champion stays" in decision.reasons()[-1]
    failed = [c for c in decision.checks if not c.passed and c.blocking]
    assert [c.name for c in failed] == ["beats baseline ease (the best)"]
    assert decision.reasons()[0].startswith("pass: minimum ndcg@20")  # the floor still passes


def test_a_tie_on_the_first_run_promotes_nothing_and_says_why():
    decision = _decide(EASE.copy())
    assert not decision.promote and decision.outcome == NO_SIGNIFICANT_DIFFERENCE
    assert "no champion yet, so none is promoted" in decision.reasons()[-1]


def test_a_model_that_loses_significantly_is_refused():
    decision = _decide(POPULAR.copy(), champion=None)  # most-popular's lists: 0.05 below EASE on every user
    assert not decision.promote and decision.outcome == REFUSED
    assert "FAIL: beats baseline ease (the best)" in "\n".join(decision.reasons())
    assert decision.reasons()[-1] == "refused: significantly worse than the best baseline (ease)"
    # a non-best baseline's comparison is reported, not blocking
    popular = next(c for c in decision.checks if c.name == "beats baseline most_popular")
    assert not popular.blocking and not popular.passed


def test_significantly_worse_than_the_champion_is_refused_even_when_it_beats_every_baseline():
    decision = _decide(EASE + 0.02, champion=EASE + 0.06)
    champion = decision.checks[-1]
    assert champion.name.startswith("not significantly worse than the champion") and not champion.passed
    assert champion.high < 0 and decision.outcome == REFUSED


def test_no_significant_difference_from_the_champion_does_not_block():
    noise = RNG.normal(0, 0.05, USERS)
    decision = _decide(EASE + 0.02, champion=np.clip(EASE + 0.02 + noise - noise.mean(), 0, 1))
    assert decision.promote and decision.checks[-1].passed


def test_every_interval_is_in_the_record():
    record = _decide(EASE + 0.02, champion=EASE).to_dict()
    assert [c["against"] for c in record["comparisons"]] == ["most_popular", "ease", "champion"]
    for comparison in record["comparisons"]:
        assert comparison["low"] <= comparison["mean_difference"] <= comparison["high"]
        assert comparison["resamples"] == 1000 and comparison["users"] == USERS and comparison["level"] == 0.95
    assert record["outcome"] == PROMOTE and record["best_baseline"] == "ease"


def test_absolute_floor():
    decision = _decide(np.full(USERS, 0.005))  # far below everything, and below the floor
    assert not decision.promote and decision.checks[0].name == "minimum ndcg@20" and not decision.checks[0].passed
    assert decision.reasons()[-1] == "refused: below an absolute floor"


def test_env_settings(monkeypatch):
    monkeypatch.setenv("RECSYS_GATE_PRIMARY_METRIC", "recall@20")
    monkeypatch.setenv("RECSYS_GATE_MIN_PRIMARY", "0.3")
    monkeypatch.setenv("RECSYS_GATE_VIEW", "with_repeats")
    config = GateConfig.from_env()
    assert config.minimum["recall@20"] == 0.3 and config.minimum["ndcg@20"] == 0.01
    assert config.view == "with_repeats" and config.resamples == 1000
