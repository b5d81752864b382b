"""The promotion gate: may the challenger replace the champion?

Like TFX's Evaluator "blessing", the decision is a list of named checks, each with
its metric, observed value and threshold, so the release manifest and the task log
say exactly why a model was or was not promoted:

* absolute floors on chosen metrics (the model must be useful at all);
* the challenger must beat every baseline on the primary metric;
* the challenger must not be worse than the current champion beyond a relative
  tolerance (when the champion was measured on the same data version; otherwise the
  comparison is reported but cannot block, since the test sets differ).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ml.names import NDCG_20, PRIMARY_METRIC, RECALL_20


@dataclass(frozen=True)
class GateConfig:
    primary_metric: str = PRIMARY_METRIC
    minimum: dict[str, float] = field(default_factory=lambda: {NDCG_20: 0.01, RECALL_20: 0.01})
    champion_tolerance: float = 0.01  # relative: 0.01 allows 1% below the champion
    must_beat_baselines: bool = True

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
            champion_tolerance=float(os.environ.get("RECSYS_GATE_CHAMPION_TOLERANCE", base.champion_tolerance)),
            must_beat_baselines=os.environ.get("RECSYS_GATE_MUST_BEAT_BASELINES", "1") not in ("0", "false", "no"),
        )


@dataclass(frozen=True)
class Check:
    name: str
    metric: str
    value: float
    threshold: float
    passed: bool
    blocking: bool = True

    def describe(self) -> str:
        verdict = "pass" if self.passed else ("FAIL" if self.blocking else "fail (not blocking)")
        return f"{verdict}: {self.name}: {self.metric} = {self.value:.4f} vs {self.threshold:.4f}"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    challenger: str
    checks: list[Check]

    def reasons(self) -> list[str]:
        return [check.describe() for check in self.checks]

    def to_dict(self) -> dict:
        return {
            "promote": self.promote,
            "challenger": self.challenger,
            "checks": [asdict(c) for c in self.checks],
            "reasons": self.reasons(),
        }


def decide(
    challenger: str,
    metrics: dict[str, dict[str, float]],
    baselines: list[str],
    champion_metrics: dict[str, float] | None,
    champion_comparable: bool,
    config: GateConfig,
) -> GateDecision:
    """Decide whether ``challenger`` (a key of ``metrics``) is promoted.

    Args:
      metrics: test metrics per model name, for the challenger and every baseline.
      baselines: the names in ``metrics`` the challenger must beat.
      champion_metrics: the current champion's recorded test metrics, or None.
      champion_comparable: whether the champion was measured on the same data version.
    """
    mine = metrics[challenger]
    primary = config.primary_metric
    checks = [
        Check(f"minimum {metric}", metric, mine[metric], floor, mine[metric] >= floor)
        for metric, floor in config.minimum.items()
    ]
    if config.must_beat_baselines:
        for name in baselines:
            checks.append(
                Check(
                    f"beats baseline {name}",
                    primary,
                    mine[primary],
                    metrics[name][primary],
                    mine[primary] > metrics[name][primary],
                )
            )
    if champion_metrics is not None and primary in champion_metrics:
        threshold = champion_metrics[primary] * (1.0 - config.champion_tolerance)
        checks.append(
            Check(
                "not worse than champion" + ("" if champion_comparable else " (other data version)"),
                primary,
                mine[primary],
                threshold,
                mine[primary] >= threshold,
                blocking=champion_comparable,
            )
        )
    promote = all(check.passed for check in checks if check.blocking)
    return GateDecision(promote=promote, challenger=challenger, checks=checks)
