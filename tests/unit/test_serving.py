"""The exported SavedModel recommends unseen items, and popular items to unknown users."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.serving import RecommenderModule, export_saved_model, load_saved_model

pytestmark = pytest.mark.unit


def test_saved_model_recommends_top_k_excluding_seen_and_falls_back_to_popularity(tmp_path):
    user_ids = np.array(["alice", "bob"], dtype=object)
    item_ids = np.array(["a", "b", "c", "d"], dtype=object)
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.5, 0.5]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))  # alice has item a
    popularity = np.array([1.0, 5.0, 3.0, 4.0], dtype=np.float32)
    module = RecommenderModule(user_ids, item_ids, users, items, seen, popularity, "v1")
    path = export_saved_model(module, tmp_path / "model")
    loaded = load_saved_model(path)
    out = loaded.signatures["serving_default"](user_id=np.array([b"alice", b"bob", b"stranger"]), k=np.int32(2))
    ids = out["item_ids"].numpy().astype(str)
    assert ids[0].tolist() == ["b", "d"]  # a is seen; then by dot product
    assert ids[1].tolist() == ["c", "d"]
    assert ids[2].tolist() == ["b", "d"]  # unknown user: most popular
    assert out["known_user"].numpy().tolist() == [True, True, False]
    assert out["model_version"].numpy()[0] == b"v1"
    np.testing.assert_allclose(out["scores"].numpy()[0], [0.8, 0.5], rtol=1e-6)
