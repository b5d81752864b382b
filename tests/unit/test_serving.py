"""The exported SavedModel recommends unseen items, and popular items to unknown users."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ml.serving import RecommenderModule, export_saved_model, load_saved_model

from rankings import assert_same_ranking

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


def _trained_recommender(sequence_encoder: str = "pooling"):
    """A small two-tower model with profile and segments, trained for two epochs on clustered shoppers."""
    from ml.item_attributes import ItemAttributes
    from ml.train import TwoTowerRecommender
    from ml.two_tower import TwoTowerConfig
    from ml.user_segments import UserSegments

    rng = np.random.default_rng(0)
    n_users, n_items = 60, 12
    # shoppers 0-29 buy items 0-5, the others items 6-11; the first half live in segment 1 (FR)
    histories = [rng.permutation(np.arange(6) + (0 if u < 30 else 6))[:5].astype(np.int32) for u in range(n_users)]
    rows = np.repeat(np.arange(n_users), [len(h) for h in histories])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, np.concatenate(histories))), shape=(n_users, n_items)
    )
    attributes = ItemAttributes(
        np.repeat([1, 2], 6).astype(np.int32),
        np.tile([1, 2, 3, 4, 5, 1], 2).astype(np.int32),
        np.zeros((n_items, 2), np.int32),
        3,
        6,
        1,
    )
    segments = UserSegments(np.where(np.arange(n_users) < 30, 1, 2).astype(np.int32), ("FR", "UK"))
    config = TwoTowerConfig(
        embedding_dim=8, history_length=6, epochs=2, batch_size=32, sequence_encoder=sequence_encoder
    )
    model = TwoTowerRecommender(config, item_attributes=attributes, user_segments=segments).fit(matrix, histories)
    return model, matrix, histories, segments


@pytest.mark.parametrize("sequence_encoder", ["pooling", "attention"])  # the self-attention tower is saved alike
def test_the_context_signature_reads_recent_items_with_the_user_tower_and_falls_back_by_segment(
    tmp_path, sequence_encoder
):
    from ml.user_segments import segment_popularity

    model, matrix, histories, segments = _trained_recommender(sequence_encoder)
    user_ids = np.array([f"u{u:02d}" for u in range(matrix.shape[0])], dtype=object)
    item_ids = np.array([f"i{i:02d}" for i in range(matrix.shape[1])], dtype=object)
    popularity = segment_popularity(matrix, segments)
    popularity[1, 3] += 100  # FR's best-seller is i03; everyone's is something else
    from ml.two_tower import pad_histories

    stored = pad_histories(histories, model.config.history_length)
    bias = model.with_popularity_prior(0.5).item_bias  # personal scores carry the popularity prior
    assert np.ptp(bias) > 0
    module = RecommenderModule(
        user_ids,
        item_ids,
        model.user_embeddings,
        model.item_embeddings,
        matrix,
        popularity,
        "v2",
        user_tower=model.model.user_tower,
        history_length=model.config.history_length,
        segment_names=segments.names,
        histories=stored,
        item_bias=bias,
    )
    loaded = load_saved_model(export_saved_model(module, tmp_path / "model"))
    recommend = loaded.signatures["recommend_in_context"]

    recent = np.array([[b"i07", b"i08", b""], [b"", b"", b""], [b"", b"", b""], [b"", b"", b""]])
    out = recommend(
        user_id=np.array([b"new1", b"new2", b"new3", b"u00"]),
        k=np.int32(3),
        recent_item_ids=recent,
        segment=np.array([b"UK", b"FR", b"Mars", b""]),
    )
    ids = out["item_ids"].numpy().astype(str)
    assert out["known_user"].numpy().tolist() == [False, False, False, True]
    # a new shopper with recent items: scored by the user tower on them (in the order given), which are not repeated
    expected = (
        np.asarray(
            model.model.user_tower(
                np.array([0], np.int32), np.array([[0, 0, 0, 0, 8, 9]], np.int32), segment=np.array([2], np.int32)
            )
        )
        @ model.item_embeddings.T
        + bias
    )
    expected[0, [7, 8]] = -np.inf
    assert ids[0].tolist() == [item_ids[i] for i in np.argsort(-expected[0], kind="stable")[:3]]
    assert not {"i07", "i08"} & set(ids[0])
    # no recent item: the segment's best-sellers, everyone's for an unknown segment
    assert ids[1][0] == "i03"
    assert ids[2].tolist() == [item_ids[i] for i in np.argsort(-popularity[0], kind="stable")[:3]]
    # a known shopper with nothing new: the stored embedding, as `recommend` answers
    plain = loaded.signatures["recommend"](user_id=np.array([b"u00"]), k=np.int32(3))
    assert ids[3].tolist() == plain["item_ids"].numpy().astype(str)[0].tolist()
    assert not set(ids[3]) & {item_ids[i] for i in histories[0]}
    # a known shopper with a new item: read after their stored history (the oldest item drops out of the window)
    new_item = next(i for i in range(12) if i not in set(histories[0]))
    out = recommend(
        user_id=np.array([b"u00"]),
        k=np.int32(3),
        recent_item_ids=np.array([[item_ids[new_item].encode()]]),
        segment=np.array([b""]),
    )
    window = np.concatenate([stored[0], [new_item + 1]])[-model.config.history_length :][None, :].astype(np.int32)
    expected = np.asarray(model.model.user_tower(np.array([1], np.int32), window)) @ model.item_embeddings.T + bias
    expected[0, list(histories[0]) + [new_item]] = -np.inf
    assert out["item_ids"].numpy().astype(str)[0].tolist() == [
        item_ids[i] for i in np.argsort(-expected[0], kind="stable")[:3]
    ]


def test_the_profile_reads_the_visible_history_and_the_segment():
    model, _, histories, segments = _trained_recommender()
    profile = model.model.user_tower.profile
    history = np.array([[0, 0, 0, 0, 1, 7]], np.int32)  # items 0 (category 1, band 1) and 6 (category 2, band 1)
    values = np.asarray(profile(np.array([1], np.int32), history, np.array([[0, 0, 0, 0, 1, 1]], np.float32)))
    dim = model.config.embedding_dim
    assert values.shape == (1, 1 + dim // 2 + 6 + dim // 4)
    np.testing.assert_allclose(values[0, 0], np.log1p(2) / np.log1p(6), rtol=1e-6)  # activity
    np.testing.assert_allclose(values[0, 1 + dim // 2 : 1 + dim // 2 + 6], [0, 1, 0, 0, 0, 0], atol=1e-6)  # price level
    # hiding an item (causal training hides the target and later items) changes the profile
    hidden = np.asarray(profile(np.array([1], np.int32), history, np.array([[0, 0, 0, 0, 1, 0]], np.float32)))
    assert not np.allclose(values, hidden)
    # user 1 (token 1) is in FR; an explicit segment overrides it, 0 keeps it
    own = np.asarray(
        profile(np.array([1], np.int32), history, np.ones((1, 6), np.float32), segment=np.array([0], np.int32))
    )
    other = np.asarray(
        profile(np.array([1], np.int32), history, np.ones((1, 6), np.float32), segment=np.array([2], np.int32))
    )
    np.testing.assert_allclose(own, np.asarray(profile(np.array([1], np.int32), history, np.ones((1, 6), np.float32))))
    assert not np.allclose(own, other)


def test_segments_fold_rare_countries_into_unknown_and_count_their_own_best_sellers():
    import pandas as pd

    from ml.user_segments import encode, segment_popularity

    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(8)], "country": ["UK"] * 5 + ["FR", None, "UK"]})
    segments = encode(np.array([f"u{i}" for i in range(8)] + ["nobody"], dtype=object), frame, min_users=2)
    assert segments.names == ("UK",)
    assert segments.segment.tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 0]
    matrix = sp.csr_matrix(np.eye(9, 3, dtype=np.float32))
    counts = segment_popularity(matrix, segments)
    assert counts.shape == (2, 3)
    assert counts[0].tolist() == [1, 1, 1] and counts[1].tolist() == [1, 1, 1]
    assert encode(np.array(["a"], dtype=object), pd.DataFrame(columns=["user_id", "country"])).n_segments == 1


def _ranked_recommender():
    """``_trained_recommender``'s model with a popularity prior (the tables and the SavedModel both rank with
    it) and a ranking stage trained on one unseen item per shopper."""
    from ml.reranker import Ranker, RankingFeatures

    model, matrix, histories, _ = _trained_recommender()
    model.with_popularity_prior(0.3)
    rng = np.random.default_rng(3)
    held_out = [
        rng.choice(np.flatnonzero(np.asarray(matrix[u].todense()).ravel() == 0)) for u in range(60)
    ]  # one unseen item each
    truth = sp.csr_matrix((np.ones(60, np.float32), (np.arange(60), held_out)), shape=matrix.shape)
    ranker = Ranker(RankingFeatures(matrix), epochs=3, n_candidates=6, held_out_share=0.6).fit(
        model.score, matrix, truth
    )
    assert ranker.mlp is not None, ranker.record
    return model, matrix, histories, ranker


def test_a_saved_model_with_the_ranking_stage_answers_as_the_batch_tables_rank(tmp_path):
    from ml.ranking import batched_top_k

    model, matrix, _, ranker = _ranked_recommender()
    user_ids = np.array([f"u{u:02d}" for u in range(60)], dtype=object)
    item_ids = np.array([f"i{i:02d}" for i in range(12)], dtype=object)

    def module(version: str) -> RecommenderModule:
        popularity = np.asarray(matrix.sum(axis=0)).ravel()
        return RecommenderModule(
            user_ids,
            item_ids,
            model.user_embeddings,
            model.item_embeddings,
            matrix,
            popularity,
            version,
            ranker=ranker,
            item_bias=model.item_bias,
        )

    loaded = load_saved_model(export_saved_model(module("v3"), tmp_path / "model"))
    answer = loaded.signatures["recommend"](
        user_id=np.array([u.encode() for u in user_ids] + [b"nobody"]), k=np.int32(4)
    )
    tables, table_scores = batched_top_k(ranker.score_fn(model.score, matrix, 4), np.arange(60), 4, exclude=matrix)
    # TensorFlow and NumPy sum the dot products in their own order: the same ranking up to near-ties
    assert_same_ranking(
        answer["item_ids"].numpy().astype(str)[:60],
        answer["scores"].numpy()[:60],
        item_ids[tables],
        table_scores,
        rtol=1e-4,
        atol=1e-5,
    )
    # a table with more rows than the stage re-orders ranks its head exactly as a short answer does
    long_tables, _ = batched_top_k(ranker.score_fn(model.score, matrix, 7), np.arange(60), 7, exclude=matrix)
    assert long_tables[:, :4].tolist() == tables.tolist()
    popular = np.argsort(-np.asarray(matrix.sum(axis=0)).ravel(), kind="stable")[:4]
    assert (
        answer["item_ids"].numpy().astype(str)[60].tolist() == item_ids[popular].tolist()
    )  # no reranking of best-sellers

    # an MLP that scores every candidate alike: only the tie-break orders them, the same on both sides
    for weight in ranker.mlp.weights:
        weight.assign(np.zeros(weight.shape, np.float32))
    tied = load_saved_model(export_saved_model(module("v4"), tmp_path / "tied"))
    answer = tied.signatures["recommend"](user_id=np.array([u.encode() for u in user_ids]), k=np.int32(4))
    tables, _ = batched_top_k(ranker.score_fn(model.score, matrix, 4), np.arange(60), 4, exclude=matrix)
    assert (np.diff(tables, axis=1) > 0).all()  # ties: lower item index first
    assert answer["item_ids"].numpy().astype(str).tolist() == item_ids[tables].tolist()


def _repeat_history(matrix: sp.csr_matrix, seed: int = 5):
    """Days and recency for every pair of ``matrix`` (1-4 days, last 1-30 days ago), and one more day for
    shopper 0 of an item the matrix does not give them (never one of their slots)."""
    import pandas as pd

    from ml.data import RepeatHistory

    rng = np.random.default_rng(seed)
    coo = matrix.tocoo()
    extra = next(i for i in range(matrix.shape[1]) if matrix[0, i] == 0)
    rows, cols = np.r_[coo.row, 0], np.r_[coo.col, extra]
    days = np.r_[rng.integers(1, 5, coo.nnz), 50].astype(np.float32)
    since = rng.integers(1, 31, len(rows)).astype(np.float32)
    shape = matrix.shape
    return RepeatHistory(
        sp.csr_matrix((days, (rows, cols)), shape=shape),
        sp.csr_matrix((since, (rows, cols)), shape=shape),
        pd.Timestamp("2024-01-01"),
    )


@pytest.mark.parametrize("policy", ["2", "include"])
def test_the_saved_model_follows_the_repeat_policy_as_the_batch_tables_do(tmp_path, policy):
    """A known shopper's answer is the published list under every policy: "buy again" slots first (then the
    ranking stage's order of unseen items), or every item ranked by the model under ``include``."""
    from ml.ranking import batched_top_k
    from ml.repeat_policy import RepeatPolicy, buy_again_order, policy_score_fn
    from ml.two_tower import pad_histories

    model, matrix, histories, ranker = _ranked_recommender()
    repeats = _repeat_history(matrix)
    user_ids = np.array([f"u{u:02d}" for u in range(60)], dtype=object)
    item_ids = np.array([f"i{i:02d}" for i in range(12)], dtype=object)
    module = RecommenderModule(
        user_ids,
        item_ids,
        model.user_embeddings,
        model.item_embeddings,
        matrix,
        np.asarray(matrix.sum(axis=0)).ravel(),
        "v5",
        ranker=ranker,
        item_bias=model.item_bias,
        repeat_policy=policy,
        repeats=repeats,
        user_tower=model.model.user_tower,
        history_length=model.config.history_length,
        histories=pad_histories(histories, model.config.history_length),
    )
    loaded = load_saved_model(export_saved_model(module, tmp_path / "model"))
    assert loaded.repeat_policy.numpy().decode() == policy
    answer = loaded.signatures["recommend"](user_id=np.array([u.encode() for u in user_ids]), k=np.int32(5))
    parsed = RepeatPolicy.parse(policy)
    score = model.score if parsed.mode == "include" else ranker.score_fn(model.score, matrix, 5)
    tables, table_scores = batched_top_k(policy_score_fn(score, parsed, matrix, repeats), np.arange(60), 5)
    items = answer["item_ids"].numpy().astype(str)
    assert_same_ranking(items, answer["scores"].numpy(), item_ids[tables], table_scores, rtol=1e-4, atol=1e-5)
    own = [{item_ids[i] for i in h} for h in histories]
    if parsed.mode == "include":  # the model ranks own items like any other: some lists hold them
        assert any(set(row) & own[u] for u, row in enumerate(items))
        return
    slots = buy_again_order(repeats, np.arange(60), 2, within=matrix)
    assert items[:, :2].tolist() == item_ids[slots].tolist()  # every shopper here has at least 2 own items
    assert all(not set(row[2:]) & own[u] for u, row in enumerate(items))
    extra = np.argmax(repeats.days[0].toarray())  # shopper 0's most-days item, absent from their known items
    assert buy_again_order(repeats, np.array([0]), 1)[0, 0] == extra and item_ids[extra] not in items[0, :2]

    # in context: the slots stay first, except one the caller passes as recent (never recommended back)
    recent = item_ids[slots[0, 0]]
    context = loaded.signatures["recommend_in_context"](
        user_id=np.array([b"u00"]),
        k=np.int32(5),
        recent_item_ids=np.array([[recent.encode()]]),
        segment=np.array([b""]),
    )
    in_context = context["item_ids"].numpy().astype(str)[0]
    assert in_context[0] == item_ids[slots[0, 1]] and recent not in in_context
    assert not set(in_context[1:]) & own[0]
