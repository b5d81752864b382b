"""How sure is a difference between two models? A paired bootstrap over the test users.

Two models scored on the same users give one difference per user; resampling users
with replacement (the same users for both models: paired) and taking the mean
difference of each resample gives its sampling distribution, and the 2.5th and 97.5th
percentiles the 95% interval (the evaluation protocol's rule 6). A gate that compares
means alone promotes on noise: on groceries every model lies within 0.002 NDCG@20 of
most-popular while the standard error is about 0.005.

The seed is fixed, so the same per-user values always give the same interval (a run's
decision is reproducible); resamples are drawn in chunks so that memory stays bounded
at any number of users, one ``rng.integers(0, n, (chunk, n))`` call per chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 1000
SEED = 20
LEVEL = 0.95
CHUNK_CELLS = 4_000_000  # resampled indices held at once (32 MB of int64)

BETTER = "better"
WORSE = "worse"
NO_SIGNIFICANT_DIFFERENCE = "no significant difference"


@dataclass(frozen=True)
class Interval:
    """The mean of ``a - b`` over the users and its bootstrap percentile interval."""

    mean_difference: float
    low: float
    high: float
    users: int
    resamples: int
    seed: int
    level: float

    @property
    def verdict(self) -> str:
        """``better`` when the whole interval is above zero, ``worse`` when below, else no significant difference."""
        if self.low > 0:
            return BETTER
        if self.high < 0:
            return WORSE
        return NO_SIGNIFICANT_DIFFERENCE

    def describe(self) -> str:
        return f"{self.mean_difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The mean of ``values`` over ``resamples`` resamples with replacement (seeded)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        raise ValueError("bootstrap over no users: the two models share no evaluated user")
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        means[start : start + size] = values[rng.integers(0, n, (size, n))].mean(axis=1)
    return means


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> Interval:
    """The difference ``mean(a) - mean(b)`` of two models' per-user values (aligned: entry u is the same user)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired bootstrap needs two equal 1-D arrays (one value per user), got {a.shape}, {b.shape}")
    differences = a - b
    means = bootstrap_means(differences, resamples, seed)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(differences.mean()), float(low), float(high), int(a.size), resamples, seed, level)
