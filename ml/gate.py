"""The promotion gate: may the challenger replace the champion?

Like TFX's Evaluator "blessing", the decision is a list of named checks, each with its
metric, observed value and threshold, so the release manifest and the task log say
exactly why a model was or was not promoted. The checks run on the gate's view (the
global time cut, ``ml.time_cut``) and every comparison is a paired bootstrap over the
test users (``ml.bootstrap``) of the difference in NDCG@20, with its 95% interval:

* absolute floors on chosen metrics (the model must be useful at all);
* against the best baseline (highest mean NDCG@20 on the view) the interval's lower
  bound must be above zero: a win the noise could explain is no win. The other
  baselines' intervals are reported, not blocking;
* against the champion, re-evaluated on the same cut, the challenger must not be
  significantly worse (the interval's upper bound below zero refuses it).

Three outcomes: ``promote``; ``refused`` (a floor missed, significantly worse than the
best baseline or than the champion); ``no significant difference`` (better or worse
than the best baseline by less than the noise): the champion stays. With no champion
yet, nothing is promoted either -- the gate's rule is that a model must have shown it
beats what a shop gets without one; ``force_publish`` promotes by hand.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ml.bootstrap import LEVEL, RESAMPLES, SEED, WORSE, Interval, paired_bootstrap
from ml.names import NDCG_20, NEW_ITEMS, PRIMARY_METRIC, RECALL_20

PROMOTE = "promote"
REFUSED = "refused"
NO_SIGNIFICANT_DIFFERENCE = "no significant difference"
CHAMPION = "champion"


@dataclass(frozen=True)
class GateConfig:
    primary_metric: str = PRIMARY_METRIC
    minimum: dict[str, float] = field(default_factory=lambda: {NDCG_20: 0.01, RECALL_20: 0.01})
    must_beat_baselines: bool = True
    # which time-cut view decides (new items only, or repeat purchases counted): the one switch a
    # dataset's repeat policy turns
    view: str = NEW_ITEMS
    resamples: int = RESAMPLES
    seed: int = SEED
    level: float = LEVEL

    @classmethod
    def from_env(cls) -> GateConfig:
        """Settings from RECSYS_GATE_*; the floor RECSYS_GATE_MIN_PRIMARY applies to the chosen primary metric."""
        base = cls()
        primary = os.environ.get("RECSYS_GATE_PRIMARY_METRIC", base.primary_metric)
        minimum = {k: v for k, v in base.minimum.items() if k != primary}
        minimum[primary] = float(os.environ.get("RECSYS_GATE_MIN_PRIMARY", base.minimum.get(primary, 0.01)))
        return cls(
            primary_metric=primary,
            minimum=minimum,
            must_beat_baselines=os.environ.get("RECSYS_GATE_MUST_BEAT_BASELINES", "1") not in ("0", "false", "no"),
            view=os.environ.get("RECSYS_GATE_VIEW", base.view),
            resamples=int(os.environ.get("RECSYS_GATE_RESAMPLES", base.resamples)),
            seed=int(os.environ.get("RECSYS_GATE_SEED", base.seed)),
        )


@dataclass(frozen=True)
class Check:
    name: str
    metric: str
    value: float
    threshold: float
    passed: bool
    blocking: bool = True
    low: float | None = None  # a comparison's interval of the difference (value is its mean)
    high: float | None = None

    def describe(self) -> str:
        verdict = "pass" if self.passed else ("FAIL" if self.blocking else "fail (not blocking)")
        if self.low is None:
            return f"{verdict}: {self.name}: {self.metric} = {self.value:.4f} vs {self.threshold:.4f}"
        return (
            f"{verdict}: {self.name}: {self.metric} difference {self.value:+.4f}, 95% interval "
            f"[{self.low:+.4f}, {self.high:+.4f}]"
        )


@dataclass(frozen=True)
class Comparison:
    """The challenger against one other model on the same users."""

    against: str
    role: str  # "baseline", "best baseline" or "champion"
    challenger_mean: float
    other_mean: float
    interval: Interval

    def to_dict(self) -> dict:
        return {
            "against": self.against,
            "role": self.role,
            "challenger_ndcg@20": self.challenger_mean,
            "other_ndcg@20": self.other_mean,
        } | self.interval.to_dict()


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    challenger: str
    checks: list[Check]
    outcome: str = PROMOTE
    comparisons: list[Comparison] = field(default_factory=list)
    best_baseline: str | None = None
    explanation: str = ""

    def reasons(self) -> list[str]:
        return [check.describe() for check in self.checks] + ([self.explanation] if self.explanation else [])

    def to_dict(self) -> dict:
        return {
            "promote": self.promote,
            "outcome": self.outcome,
            "challenger": self.challenger,
            "best_baseline": self.best_baseline,
            "checks": [asdict(c) for c in self.checks],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "reasons": self.reasons(),
        }


def _compare(name: str, role: str, mine: np.ndarray, other: np.ndarray, config: GateConfig) -> Comparison:
    other = np.asarray(other, dtype=np.float64)
    interval = paired_bootstrap(mine, other, config.resamples, config.seed, config.level)
    return Comparison(name, role, float(mine.mean()), float(other.mean()), interval)


def decide(
    challenger: str,
    per_user: dict[str, np.ndarray],
    metrics: dict[str, dict[str, float]],
    baselines: list[str],
    champion: np.ndarray | None,
    config: GateConfig,
) -> GateDecision:
    """Decide whether ``challenger`` is promoted, from every model's per-user NDCG@20 on the gate's view.

    Args:
      per_user: model name -> NDCG@20 of each test user, aligned (entry u is the same user).
      metrics: the view's mean metrics per model (the floors read the challenger's).
      baselines: the names in ``per_user`` the challenger is compared with.
      champion: the champion's per-user NDCG@20 on the same view (re-evaluated there), or None.
    """
    mine = np.asarray(per_user[challenger], dtype=np.float64)
    checks = [
        Check(f"minimum {metric}", metric, metrics[challenger][metric], floor, metrics[challenger][metric] >= floor)
        for metric, floor in config.minimum.items()
        if metric in metrics[challenger]
    ]
    floors_pass = all(check.passed for check in checks)
    best = max(baselines, key=lambda name: float(np.mean(per_user[name]))) if baselines else None
    comparisons = [
        _compare(name, "best baseline" if name == best else "baseline", mine, per_user[name], config)
        for name in baselines
    ]
    for comparison in comparisons:
        interval = comparison.interval
        checks.append(
            Check(
                f"beats baseline {comparison.against}" + (" (the best)" if comparison.against == best else ""),
                NDCG_20,
                interval.mean_difference,
                0.0,
                interval.low > 0,
                blocking=config.must_beat_baselines and comparison.against == best,
                low=interval.low,
                high=interval.high,
            )
        )
    champion_worse = False
    if champion is not None:
        comparisons.append(_compare(CHAMPION, CHAMPION, mine, champion, config))
        interval = comparisons[-1].interval
        champion_worse = interval.verdict == WORSE
        checks.append(
            Check(
                "not significantly worse than the champion (re-evaluated on the same view)",
                NDCG_20,
                interval.mean_difference,
                0.0,
                not champion_worse,
                low=interval.low,
                high=interval.high,
            )
        )
    against_best = next((c.interval for c in comparisons if c.against == best), None)
    outcome, explanation = _outcome(floors_pass, champion_worse, against_best, best, champion is not None, config)
    return GateDecision(outcome == PROMOTE, challenger, checks, outcome, comparisons, best, explanation)


def _outcome(
    floors_pass: bool,
    champion_worse: bool,
    against_best: Interval | None,
    best: str | None,
    has_champion: bool,
    config: GateConfig,
) -> tuple[str, str]:
    """The decision and one sentence on why."""
    if not floors_pass:
        return REFUSED, "refused: below an absolute floor"
    if champion_worse:
        return REFUSED, "refused: significantly worse than the champion on the same view"
    if config.must_beat_baselines and against_best is not None and against_best.low <= 0:
        if against_best.verdict == WORSE:
            return REFUSED, f"refused: significantly worse than the best baseline ({best})"
        stays = (
            "the champion stays"
            if has_champion
            else "no champion yet, so none is promoted (a model must show it beats the best baseline; "
            "force_publish promotes by hand)"
        )
        return NO_SIGNIFICANT_DIFFERENCE, (
            f"{NO_SIGNIFICANT_DIFFERENCE} from the best baseline ({best}): the 95% interval "
            f"{against_best.describe()} contains zero; {stays}"
        )
    return PROMOTE, "promote: " + (
        f"significantly better than the best baseline ({best})" if against_best is not None else "every check passed"
    ) + (" and not significantly worse than the champion" if has_champion else "")
