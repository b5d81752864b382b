"""The gate's paired bootstrap against SciPy's and a plain NumPy loop on a hand-made case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ml.bootstrap import BETTER, NO_SIGNIFICANT_DIFFERENCE, WORSE, paired_bootstrap

pytestmark = pytest.mark.unit

# ten users' NDCG@20 under two models: b is a except for three users
A = np.array([0.0, 0.5, 1.0, 0.25, 0.0, 0.75, 0.5, 0.1, 0.0, 0.9])
B = np.array([0.0, 0.5, 0.4, 0.25, 0.2, 0.75, 0.5, 0.1, 0.0, 0.3])


def test_matches_scipy_paired_percentile_bootstrap_with_the_same_seed():
    ours = paired_bootstrap(A, B, resamples=1000, seed=7)
    scipy_result = stats.bootstrap(
        (A, B),
        lambda a, b, axis=-1: (a - b).mean(axis=axis),
        paired=True,
        n_resamples=1000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(7),
        vectorized=True,
    )
    assert ours.low == pytest.approx(scipy_result.confidence_interval.low, abs=1e-12)
    assert ours.high == pytest.approx(scipy_result.confidence_interval.high, abs=1e-12)
    assert ours.mean_difference == pytest.approx((0.6 - 0.2 + 0.6) / 10)


def test_matches_an_explicit_numpy_loop_over_resamples():
    rng = np.random.default_rng(20)
    means = []
    for _ in range(1000):
        users = rng.integers(0, len(A), len(A))  # the same users for both models: paired
        means.append(A[users].mean() - B[users].mean())
    low, high = np.percentile(means, [2.5, 97.5])
    ours = paired_bootstrap(A, B)  # the gate's defaults: 1,000 resamples, seed 20
    assert (ours.low, ours.high) == pytest.approx((low, high), abs=1e-12)
    assert ours.resamples == 1000 and ours.users == 10


def test_chunked_resampling_gives_the_same_interval(monkeypatch):
    import ml.bootstrap

    whole = paired_bootstrap(A, B, seed=3)
    monkeypatch.setattr(ml.bootstrap, "CHUNK_CELLS", 25)  # two resamples at a time
    assert paired_bootstrap(A, B, seed=3) == whole


def test_verdicts():
    assert paired_bootstrap(A + 0.5, A).verdict == BETTER
    assert paired_bootstrap(A, A + 0.5).verdict == WORSE
    assert paired_bootstrap(A, A).verdict == NO_SIGNIFICANT_DIFFERENCE  # an interval [0, 0] holds zero
    assert paired_bootstrap(A, B).verdict == NO_SIGNIFICANT_DIFFERENCE  # three users of ten: noise


def test_unaligned_users_are_refused():
    with pytest.raises(ValueError, match="one value per user"):
        paired_bootstrap(A, B[:5])
