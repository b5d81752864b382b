"""The candidate ranker's per-source features: each candidate's score standardised over the shopper's
eligible scored items (NumPy's nanmean and nanstd, to the bit) and the log of its rank in the source (ties to
the lower item)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytestmark = pytest.mark.unit


def _context(n_users: int, n_items: int):
    from ml.candidate_ranking import Context
    from ml.data import RepeatHistory

    rng = np.random.default_rng(5)
    seen = sp.random(n_users, n_items, density=0.1, format="csr", random_state=6, dtype=np.float32)
    seen.data[:] = 1.0
    days = seen.copy()
    days.data = rng.integers(1, 4, seen.nnz).astype(np.float32)
    since = seen.copy()
    since.data = rng.integers(1, 300, seen.nnz).astype(np.float32)
    return Context(seen, RepeatHistory(days, since, pd.Timestamp("2024-01-01")))


@pytest.mark.parametrize("n_items", [300, 4096])  # 4096: each source's top ranked by the compiled pass
@pytest.mark.parametrize("include_own", [False, True])
def test_scores_standardised_over_the_eligible_finite_items_and_ranks_per_source(include_own, n_items):
    from ml.candidate_ranking import PER_SOURCE, candidates_and_features

    n_users = 6
    context = _context(n_users, n_items)
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((n_users, n_items)).astype(np.float32) * 3 + 1
    raw[:, ::9] = np.nan
    raw[:, 4::13] = -np.inf
    raw[2] = -np.inf  # a shopper the source scores nothing for
    raw[3] = 0.5  # ... and one it scores all alike
    plain = np.where(np.isfinite(raw), np.arange(n_items, dtype=np.float32), raw)
    sources = {"noisy": lambda users: raw[users], "plain": lambda users: plain[users]}
    users = np.arange(n_users)
    candidates, features = candidates_and_features(sources, context, users, include_own, 200)

    seen = context.seen.toarray() > 0
    for s, source in enumerate(sources.values()):
        scores = source(users).astype(np.float32)
        counted = np.isfinite(scores) & (True if include_own else ~seen)
        masked = np.where(counted, scores, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"), pytest.warns(RuntimeWarning):
            mean = np.nanmean(masked, axis=1, keepdims=True)
            std = np.nanstd(masked, axis=1, keepdims=True)
        std = np.where(std > 0, std, 1.0)
        ranked = np.where(counted, scores, -np.inf)
        for u in users:
            real = candidates[u] >= 0
            items = candidates[u][real]
            finite = np.where(np.isfinite(scores[u, items]), scores[u, items], np.nan)
            expected = np.nan_to_num((finite - mean[u]) / std[u], nan=-3.0)
            # the same arithmetic as NumPy's (bit-identical here); a tolerance for another CPU's summation
            np.testing.assert_allclose(features[u, real, 2 * s], expected.astype(np.float32), rtol=1e-5, atol=1e-6)
            if u == 3 and s == 0:  # all alike: std 0 counts as 1, and the ranks go to the lowest items (below)
                assert (features[u, real, 0] == 0).all()
            order = np.argsort(-ranked[u], kind="stable")[:PER_SOURCE]
            rank = {int(item): place + 1 for place, item in enumerate(order) if np.isfinite(ranked[u, item])}
            expected_rank = [np.log1p(rank.get(int(item), PER_SOURCE + 1)) for item in items]
            np.testing.assert_allclose(features[u, real, 2 * s + 1], expected_rank, rtol=1e-6)
            assert not features[u, ~real].any()
    # nothing scored: the floor value, and no rank (before, a row with fewer than 50 scored items
    # ranked arbitrary unscored items 1-50)
    assert (features[2, candidates[2] >= 0, 0] == -3.0).all()
    assert np.allclose(features[2, candidates[2] >= 0, 1], np.log1p(PER_SOURCE + 1))


def test_sources_reuse_the_callers_models_fitted_with_the_same_settings_and_refit_the_others():
    from ml.baselines import ItemKNN, MostPopular, UserKNN
    from ml.candidate_ranking import fit_sources
    from ml.names import BOUGHT_BEFORE, ITEM_KNN, MOST_POPULAR, TIFU_KNN, USER_KNN
    from ml.repeat_buying import TIFUKNN, BuyAgain

    context = _context(40, 30)
    train, repeats = context.seen, context.repeats
    recipe = {"ease_l2": None, "tifu_knn": {"basket_decay": 0.9, "group_decay": 0.7, "alpha": 0.7}}
    fitted = {
        ITEM_KNN: ItemKNN().fit(train),
        USER_KNN: UserKNN(neighbours=5).fit(train),  # not the sources' 50 neighbours: fitted again
        MOST_POPULAR: MostPopular().fit(train),
        TIFU_KNN: TIFUKNN(repeats, basket_decay=0.9, group_decay=0.7, alpha=0.5).fit(),  # another blend: again
        BOUGHT_BEFORE: BuyAgain(repeats).fit(train),
    }
    sources = fit_sources(train, repeats, recipe, include_own=True, fitted=fitted)
    for name in (ITEM_KNN, MOST_POPULAR, BOUGHT_BEFORE):
        assert sources[name].__self__ is fitted[name]
    for name in (USER_KNN, TIFU_KNN):
        assert sources[name].__self__ is not fitted[name]
    assert sources[USER_KNN].__self__.neighbours == 50 and sources[TIFU_KNN].__self__.alpha == 0.7
    fresh = fit_sources(train, repeats, recipe, include_own=True)
    users = np.arange(40)
    for name, score in sources.items():
        np.testing.assert_array_equal(score(users), fresh[name](users))
    other_history = fit_sources(train, _context(40, 30).repeats, recipe, include_own=True, fitted=fitted)
    assert other_history[BOUGHT_BEFORE].__self__ is not fitted[BOUGHT_BEFORE]  # another history: fitted again
    fewer_users = _context(30, 30)
    elsewhere = fit_sources(fewer_users.seen, fewer_users.repeats, recipe, include_own=False, fitted=fitted)
    assert elsewhere[ITEM_KNN].__self__ is not fitted[ITEM_KNN]  # fitted on another matrix's shape: fitted again
