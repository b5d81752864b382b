"""The compiled sparse x sparse product gives SciPy's values, written dense (the same sums in the same order: bit-equal
here; 1e-6 relative allowed for a SciPy build that fuses multiply-adds, e.g. on aarch64)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.sparse_product_kernel import product_to_dense

pytestmark = pytest.mark.unit


def _random(shape, density, dtype, seed):
    matrix = sp.random(*shape, density=density, format="csr", random_state=seed, dtype=np.float64)
    matrix.data = (matrix.data - 0.3).astype(dtype)  # signs mixed: sums that cancel to zero are possible
    return matrix


@pytest.mark.parametrize(("a_dtype", "b_dtype"), [(np.float32, np.float32), (np.float32, np.float64)])
def test_the_product_is_scipys_in_the_common_dtype(a_dtype, b_dtype):
    a = _random((40, 70), 0.2, a_dtype, 1)
    b = _random((70, 55), 0.3, b_dtype, 2)
    a = a.tolil()
    a[5] = 0  # an empty row
    a = a.tocsr()
    dense = product_to_dense(a, b)
    expected = (a @ b).toarray()
    assert dense.dtype == expected.dtype and dense.flags.c_contiguous
    np.testing.assert_allclose(dense, expected, rtol=1e-6, atol=1e-7)


def test_stored_order_duplicates_and_an_output_block_are_taken_as_scipy_takes_them():
    rng = np.random.default_rng(4)
    rows, cols = rng.integers(0, 12, 90), rng.integers(0, 30, 90)  # duplicates, indices not sorted
    a = sp.csr_matrix((rng.random(90).astype(np.float32), (rows, cols)), shape=(12, 30))
    a.has_canonical_format = False
    a = sp.csr_matrix((a.data[::-1].copy(), a.indices, a.indptr), shape=a.shape)  # another stored order
    b = sp.csr_matrix(rng.random((30, 8)).astype(np.float32) * (rng.random((30, 8)) < 0.4))
    whole = np.zeros((20, 8), np.float32)
    block = product_to_dense(a, b, out=whole[4:16])
    np.testing.assert_allclose(block, (a @ b).toarray(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole[4:16], block)
    assert not whole[:4].any() and not whole[16:].any()
    with pytest.raises(ValueError, match="out must be"):
        product_to_dense(a, b, out=np.zeros((12, 8), np.float64))
    with pytest.raises(ValueError, match="do not multiply"):
        product_to_dense(a, b.T)
