"""Tests for ml.baselines on tiny hand-made matrices and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.baselines import (
    BASELINES,
    EASE,
    ItemKNN,
    MostPopular,
    UserKNN,
    item_cosine,
    keep_top_n_per_row,
)
from ml.ranking import batched_top_k, top_k

pytestmark = pytest.mark.unit

# Users 0-2 like items {0, 1} (+2 for user 2); users 3-4 like {3, 4}.
# Item 0 and item 1 always co-occur; item 2 co-occurs with {0, 1}.
DENSE = np.array(
    [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 0],
    ],
    dtype=np.float32,
)
TRAIN = sp.csr_matrix(DENSE)


def random_binary(seed: int, shape=(30, 15), density=0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < density).astype(np.float32)


def dense_top_n_per_row(mat: np.ndarray, n: int) -> np.ndarray:
    """Reference pruning: keep the n largest positive entries per row, lower index on ties."""
    out = np.zeros_like(mat)
    for r, row in enumerate(mat):
        order = sorted((j for j in range(len(row)) if row[j] != 0), key=lambda j: (-row[j], j))
        out[r, order[:n]] = row[order[:n]]
    return out


def cosine_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """Reference: cos = sum_i x_i y_i / (|x| |y|); 0.0 when either vector is all zeros."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    denom = np.sqrt(np.dot(x, x)) * np.sqrt(np.dot(y, y))
    return float(np.dot(x, y) / denom) if denom > 0 else 0.0


def test_cosine_similarity_formula_example():
    u = np.array([4, 3, 5, 2, 4])
    v = np.array([5, 3, 4, 2, 4])
    assert cosine_similarity(u, v) == pytest.approx(69 / 70)
    assert cosine_similarity(u, v) == pytest.approx(0.985714, abs=1e-6)
    assert cosine_similarity(u, np.zeros(5)) == 0.0
    assert cosine_similarity(u, 2 * u) == pytest.approx(1.0)


def test_most_popular_ranks_by_user_count():
    dense = DENSE.copy()
    dense[0, 4] = 5.0  # repeated events count once: item 4 now has 2 users
    train = sp.csr_matrix(dense)
    model = MostPopular().fit(train)
    scores = model.score(np.array([0, 3]))
    assert scores.shape == (2, 5) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores[0], [3, 3, 1, 2, 2])
    items, _ = top_k(scores, 5)
    np.testing.assert_array_equal(items[1], [0, 1, 3, 4, 2])


def test_item_knn_similarity_equals_brute_force_cosine():
    dense = random_binary(0)
    model = ItemKNN().fit(sp.csr_matrix(dense))
    n_items = dense.shape[1]
    ref = np.array([[cosine_similarity(dense[:, a], dense[:, b]) for b in range(n_items)] for a in range(n_items)])
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(as_dense(model.similarity_), ref, atol=1e-6)
    users = np.arange(dense.shape[0])
    np.testing.assert_allclose(model.score(users), dense @ ref, atol=1e-5)


def test_item_knn_neighbour_pruning_matches_reference():
    dense = random_binary(1)
    full = as_dense(ItemKNN().fit(sp.csr_matrix(dense)).similarity_)
    model = ItemKNN(neighbours=3).fit(sp.csr_matrix(dense))
    np.testing.assert_allclose(model.similarity_.toarray(), dense_top_n_per_row(full, 3), atol=1e-7)
    assert np.diff(model.similarity_.indptr).max() <= 3


def test_item_knn_keeps_every_pair_up_to_a_catalogue_size_and_the_nearest_past_it(monkeypatch):
    from ml.baselines import item_neighbours_bound
    from ml.evaluate import approximation

    matrix = sp.csr_matrix(random_binary(1))
    n_items = matrix.shape[1]
    exact = ItemKNN(None).fit(matrix)
    monkeypatch.setenv("RECSYS_ITEM_KNN_NEIGHBOURS", "3")
    monkeypatch.setenv("RECSYS_ITEM_KNN_EXACT_ITEMS", str(n_items))  # the catalogue at the bound: exact
    model = ItemKNN().fit(matrix)
    np.testing.assert_array_equal(as_dense(model.similarity_), as_dense(exact.similarity_))
    assert model.bounded_neighbours_ is None and approximation(model) is None
    monkeypatch.setenv("RECSYS_ITEM_KNN_EXACT_ITEMS", str(n_items - 1))  # one item past it: the 3 nearest
    model = ItemKNN().fit(matrix)
    np.testing.assert_array_equal(model.similarity_.toarray(), ItemKNN(3).fit(matrix).similarity_.toarray())
    assert model.bounded_neighbours_ == 3
    assert approximation(model).startswith(f"each item's 3 most similar of {n_items} items")
    assert ItemKNN(None).fit(matrix).bounded_neighbours_ is None  # an explicit setting is the model's, not a bound
    assert item_neighbours_bound(n_items + 5) == 3
    monkeypatch.setenv("RECSYS_ITEM_KNN_NEIGHBOURS", str(n_items - 1))  # every other item: exact
    assert item_neighbours_bound(n_items) is None


def as_dense(similarity) -> np.ndarray:
    return similarity.toarray() if sp.issparse(similarity) else np.asarray(similarity)


def test_item_cosine_is_dense_past_a_third_full_and_csr_below_with_the_same_values():
    rng = np.random.default_rng(7)
    crowded = sp.csr_matrix((rng.random((300, 700)) < 0.05).astype(np.float32))  # nearly every pair co-occurs
    sparse = sp.csr_matrix((rng.random((300, 700)) < 0.002).astype(np.float32))  # few pairs do
    for matrix, dense_expected in ((crowded, True), (sparse, False)):
        norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
        normalized = sp.csr_matrix(matrix.multiply(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)))
        normalized = sp.csr_matrix(normalized, dtype=np.float32)
        built = item_cosine(normalized)
        reference = sp.csr_matrix(normalized.T @ normalized)
        reference.setdiag(0)
        reference.eliminate_zeros()
        assert isinstance(built, np.ndarray) == dense_expected
        np.testing.assert_array_equal(as_dense(built), reference.toarray())  # block by block: the same sums
        users = np.arange(0, 300, 7)
        model = ItemKNN().fit(matrix)
        assert isinstance(model.similarity_, np.ndarray) == dense_expected
        expected = (sp.csr_matrix(matrix[users] > 0, dtype=np.float32) @ sp.csr_matrix(model.similarity_)).toarray()
        # the same order of sums (bit-equal here); a tolerance for a build that fuses multiply-adds in one kernel only
        np.testing.assert_allclose(model.score(users), expected, rtol=1e-6, atol=1e-7)


def test_item_knn_hand_ranking():
    model = ItemKNN().fit(TRAIN)
    items, _ = top_k(model.score(np.array([0, 4])), 1, TRAIN[[0, 4]])
    # User 0 ({0,1}) -> item 2 is the only unseen item similar to 0 and 1.
    # User 4 ({3}) -> item 4 co-occurs with item 3.
    np.testing.assert_array_equal(items[:, 0], [2, 4])


def test_user_knn_matches_brute_force():
    dense = random_binary(2)
    n_users = dense.shape[0]
    sim = np.array([[cosine_similarity(dense[a], dense[b]) for b in range(n_users)] for a in range(n_users)])
    np.fill_diagonal(sim, 0.0)
    for n in (None, 1, 4):
        model = UserKNN(neighbours=n).fit(sp.csr_matrix(dense))
        ref_sim = sim if n is None else dense_top_n_per_row(sim, n)
        users = np.array([5, 0, 29, 5])
        np.testing.assert_allclose(model.user_similarity(users).toarray(), ref_sim[users], atol=1e-6)
        np.testing.assert_allclose(model.score(users), ref_sim[users] @ dense, atol=1e-5)


def test_user_knn_hand_ranking():
    model = UserKNN(neighbours=2).fit(TRAIN)
    items, _ = top_k(model.score(np.array([0, 4])), 1, TRAIN[[0, 4]])
    # User 0's neighbours are users 1 and 2; only user 2 has an unseen item (2).
    # User 4's nearest neighbour is user 3, who also has item 4.
    np.testing.assert_array_equal(items[:, 0], [2, 4])


def test_ease_matches_numpy_reference_and_zero_diagonal():
    dense = random_binary(3).astype(np.float64)
    l2 = 5.0
    model = EASE(l2=l2).fit(sp.csr_matrix(dense))
    p = np.linalg.inv(dense.T @ dense + l2 * np.eye(dense.shape[1]))
    ref = np.eye(dense.shape[1]) - p @ np.diag(1.0 / np.diag(p))
    np.testing.assert_allclose(np.diag(model.weights_), 0.0, atol=0)
    np.testing.assert_allclose(model.weights_, ref, atol=1e-6)
    users = np.array([3, 1])
    np.testing.assert_allclose(model.score(users), dense[users] @ ref, atol=1e-5)


def test_ease_hand_ranking():
    model = EASE(l2=1.0).fit(TRAIN)
    items, _ = top_k(model.score(np.array([0, 4])), 1, TRAIN[[0, 4]])
    np.testing.assert_array_equal(items[:, 0], [2, 4])


def test_keep_top_n_per_row_ties_keep_lower_column():
    mat = sp.csr_matrix(np.array([[0.5, 0.5, 0.5, 0.0], [0.1, 0.0, 0.9, 0.3]]))
    np.testing.assert_array_equal(keep_top_n_per_row(mat, 2).toarray(), [[0.5, 0.5, 0, 0], [0, 0, 0.9, 0.3]])


def _top_n_by_rows(mat: sp.csr_matrix, n: int) -> dict:
    """Brute force: per row, the stored (column, value) pairs sorted by value desc, then column asc; first n."""
    kept = {}
    for r in range(mat.shape[0]):
        pairs = {}
        row = slice(mat.indptr[r], mat.indptr[r + 1])
        for c, v in zip(mat.indices[row], mat.data[row], strict=True):
            pairs[int(c)] = pairs.get(int(c), 0.0) + float(v)  # duplicates are summed
        kept |= {(r, c): v for c, v in sorted(pairs.items(), key=lambda cv: (-cv[1], cv[0]))[:n]}
    return kept


@pytest.mark.parametrize("density", [0.05, 0.5, 1.0, 2.0])  # sparse blocks (sorted) and dense ones (partition)
@pytest.mark.parametrize("n", [0, 1, 3, 50])
def test_keep_top_n_per_row_matches_brute_force_on_ties_duplicates_and_negatives(density, n):
    rng = np.random.default_rng(int(density * 100) + n)
    for _ in range(20):
        shape = (int(rng.integers(1, 25)), int(rng.integers(1, 30)))
        nnz = int(density * shape[0] * shape[1])
        rows, cols = rng.integers(0, shape[0], nnz), rng.integers(0, shape[1], nnz)
        order = np.argsort(rows, kind="stable")  # CSR with duplicate and unsorted column indices
        indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=shape[0]))]
        data = (rng.integers(-2, 4, nnz) / 2).astype(np.float32)  # many ties, negatives and stored zeros
        mat = sp.csr_matrix((data[order], cols[order], indptr), shape=shape)
        untouched = mat.copy()
        kept = keep_top_n_per_row(mat, n)
        coo = kept.tocoo()
        got = {(int(r), int(c)): float(v) for r, c, v in zip(coo.row, coo.col, coo.data, strict=True)}
        assert got == _top_n_by_rows(mat, n)
        assert kept.has_sorted_indices
        np.testing.assert_array_equal(mat.data, untouched.data)  # the caller's matrix is not changed
        np.testing.assert_array_equal(mat.indices, untouched.indices)


@pytest.mark.parametrize("n", [1, 40, 300])
def test_the_compiled_top_n_keeps_the_cells_a_partition_of_each_row_keeps(n, monkeypatch):
    """A float32 block (a batch's similarities to the neighbour pool) is ranked by the compiled selection, a
    float64 one by a partition of each row: the same cells, ties to the lower column, -inf never kept."""
    import ml.baselines
    from ml.baselines import _top_n_cells

    compiled = []
    selection = ml.baselines.compiled_top_k
    monkeypatch.setattr(
        ml.baselines, "compiled_top_k", lambda work, k: compiled.append(work.dtype) or selection(work, k)
    )

    rng = np.random.default_rng(n)
    block = (rng.integers(0, 60, size=(48, 5000)) / 7).astype(np.float32)  # many ties
    block[rng.random(block.shape) < 0.3] = -np.inf  # not stored
    block[3] = -np.inf  # nothing stored
    block[4, : n // 2] = 1.0  # fewer than n stored
    block[4, n // 2 :] = -np.inf
    block[5, -(n + 3) :] = 9.0  # stored only at the row's end, tied
    block[5, : -(n + 3)] = -np.inf
    untouched = block.copy()
    rows, columns = _top_n_cells(block, n)
    want_rows, want_columns = _top_n_cells(block.astype(np.float64), n)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(columns, want_columns)
    np.testing.assert_array_equal(block, untouched)  # only read: callers take the kept values from it
    assert compiled == [np.float32]  # the float32 block took the compiled path, the float64 one the partition
    assert not np.isin(rows, 3).any() and (rows == 4).sum() == n // 2 and (rows == 5).sum() == n


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_registry_models_share_the_contract(name):
    model = BASELINES[name]()
    with pytest.raises(RuntimeError):
        model.score(np.array([0]))
    assert model.fit(TRAIN) is model
    scores = model.score(np.array([4, 0, 2]))
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    items, _ = batched_top_k(model.score, np.arange(5), 2, TRAIN, batch_size=2)
    for u, row in enumerate(items):
        unseen = set(np.flatnonzero(DENSE[u] == 0))
        if len(unseen) >= 2:
            assert set(row) <= unseen


def _brute_user_knn(x: np.ndarray, pool: list[int], neighbours: int) -> np.ndarray:
    """r(u, i) = sum of cosine(u, v) x[v, i] over u's ``neighbours`` most similar users v of ``pool`` (v != u;
    ties to the lower index), by loops."""
    norms = np.sqrt(x.sum(axis=1))
    scores = np.zeros(x.shape, dtype=np.float64)
    for u in range(x.shape[0]):
        sims = [(float(x[u] @ x[v]) / (norms[u] * norms[v]), v) for v in pool if v != u and norms[u] * norms[v] > 0]
        sims = [(s, v) for s, v in sims if s > 0]
        for s, v in sorted(sims, key=lambda sv: (-sv[0], sv[1]))[:neighbours]:
            scores[u] += s * x[v]
    return scores


@pytest.mark.parametrize("pool_size", [3, 5, 1000])  # 1000: every user (the exact model)
def test_user_knn_takes_neighbours_among_the_most_active_users_past_the_pool_size(monkeypatch, pool_size):
    rng = np.random.default_rng(7)
    x = (rng.random((14, 12)) < np.linspace(0.1, 0.6, 14)[:, None]).astype(np.float32)  # later users more active
    x[3] = x[12]  # a twin of an active user outside a small pool's reach, unless the pool is everyone
    monkeypatch.setenv("RECSYS_KNN_NEIGHBOUR_POOL", str(pool_size))
    activity = x.sum(axis=1)
    pool = sorted(sorted(range(14), key=lambda u: (-activity[u], u))[:pool_size])
    model = UserKNN(neighbours=2).fit(sp.csr_matrix(x))
    assert (model.pool_ is None) == (pool_size >= 14)
    np.testing.assert_allclose(model.score(np.arange(14)), _brute_user_knn(x, pool, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool_size", [40, 1000])
def test_pooled_similarity_is_the_same_from_its_dense_and_its_sparse_path(monkeypatch, pool_size):
    from ml import baselines

    rng = np.random.default_rng(11)
    x = sp.random(300, 50, density=0.15, format="csr", random_state=3, dtype=np.float32)  # weighted, like TIFU's
    x.data = np.round(x.data * 4) / 4 + 0.25  # ties
    normalized = sp.csr_matrix(x.multiply(1 / np.sqrt(np.maximum(x.multiply(x).sum(axis=1), 1e-12))), dtype=np.float32)
    pool = baselines.neighbour_pool(np.diff(normalized.indptr), pool_size)
    pool_t = None if pool is None else sp.csr_matrix(normalized[pool].T)
    users = rng.choice(300, 64, replace=False)
    dense = baselines.pooled_similarity(normalized, users, pool, pool_t, 7)
    monkeypatch.setattr(baselines, "_TOP_N_BLOCK_CELLS", 0)  # every batch through the sparse product and lexsort
    sparse = baselines.pooled_similarity(normalized, users, pool, pool_t, 7)
    np.testing.assert_array_equal(dense.indptr, sparse.indptr)
    np.testing.assert_array_equal(dense.indices, sparse.indices)
    np.testing.assert_allclose(dense.data, sparse.data, rtol=1e-6)
    assert not any(u in dense[i].indices for i, u in enumerate(users))  # never one's own neighbour
    assert np.diff(dense.indptr).max() <= 7


@pytest.mark.parametrize("keep", [None, 4])
def test_item_cosine_block_by_block_is_the_whole_product(monkeypatch, keep):
    from ml import baselines

    rng = np.random.default_rng(8)
    matrix = sp.csr_matrix((rng.random((200, 90)) < 0.08).astype(np.float32))
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
    normalized = sp.csr_matrix(
        matrix.multiply(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)), dtype=np.float32
    )
    whole = sp.csr_matrix(normalized.T @ normalized)
    whole.setdiag(0)
    whole.eliminate_zeros()
    if keep is not None:
        whole = keep_top_n_per_row(whole, keep)
    monkeypatch.setattr(baselines, "_TOP_N_BLOCK_CELLS", 90 * 7)  # blocks of 7 items: 13 blocks, a short last one
    built = item_cosine(normalized, keep=keep)
    assert isinstance(built, np.ndarray) == (keep is None)  # ~half of these pairs are similar: dense unless pruned
    np.testing.assert_array_equal(as_dense(built), whole.toarray())
