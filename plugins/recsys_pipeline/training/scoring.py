"""Score with the run's trained model: as evaluation needs it, and as the published tables carry it.

Batch tables and the SavedModel must rank alike (``recsys verify`` checks that they do),
so both score the same way: the saved embeddings' dot product plus the item bias (the
popularity prior), re-ordered by the ranking stage when the run chose to use it, and what
a shopper already has treated as the dataset's repeat policy says (``ml.repeat_policy``,
recorded in ``training.json``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.training import candidates, snapshot

SERVING_USERS = "serving_user_embeddings"  # every known item as input: what the tables and the SavedModel use
EVALUATION_USERS = "user_embeddings"  # train items only: what evaluation on the test split uses


def retrieval_scores(artifacts: RunArtifacts, users_key: str):
    """Score function (user indices -> [b, n_items]) of the run's saved two-tower embeddings."""
    saved = np.load(artifacts.path(RunArtifacts.EMBEDDINGS))
    users, items = saved[users_key], saved["item_embeddings"]
    bias = saved["item_bias"] if "item_bias" in saved.files else None  # absent before the popularity prior

    def score(u: np.ndarray) -> np.ndarray:
        scores = users[u] @ items.T
        if bias is not None:
            scores += bias
        return scores

    return score


def ranking_features(artifacts: RunArtifacts, item_ids: np.ndarray, interactions):
    """The ranking stage's features (``ml.reranker.RankingFeatures``) learned from ``interactions``, with the
    run's catalogue snapshot for categories and price bands."""
    from ml.evaluate import category_ids
    from ml.item_attributes import encode
    from ml.reranker import RankingFeatures

    frame = snapshot.read_catalogue(artifacts)
    return RankingFeatures(interactions, category_ids(item_ids, frame), encode(item_ids, frame).price_band)


def ranking_stage(artifacts: RunArtifacts, item_ids: np.ndarray, interactions, used_only: bool = True):
    """The run's trained ranking stage over features from ``interactions``; None when there is none
    (or, with ``used_only``, when the run chose not to use it)."""
    from ml.reranker import Ranker

    path = artifacts.path(RunArtifacts.RANKER)
    if not path.exists():
        return None
    if used_only and not artifacts.read_json(RunArtifacts.TRAINING).get("ranking_stage", {}).get("used"):
        return None
    return Ranker.load(path, ranking_features(artifacts, item_ids, interactions))


def repeat_policy(training: dict):
    """The run's repeat policy (``training.json["repeat_policy"]``, written by ``ml.repeat_policy.resolve``);
    ``exclude`` for a run that predates the setting."""
    from ml.repeat_policy import from_record

    return from_record(training.get("repeat_policy"))


def recommend(artifacts: RunArtifacts, top_k: int) -> dict:
    """Batch-score every user: top-K each, as Parquet, from the candidate ranking's lists where the run has
    them, else the two-tower model, following the run's repeat policy (no item the user has, every item, or
    "buy again" slots first from everything known)."""
    from ml.ranking import batched_top_k
    from ml.repeat_policy import INCLUDE, SLOTS, policy_score_fn, policy_top_k_of_lists

    training = artifacts.read_json(RunArtifacts.TRAINING)
    policy = repeat_policy(training)
    data = snapshot.read_split(artifacts, repeats=policy.mode == SLOTS)  # only "buy again" slots read the history
    lists = candidates.read_lists(artifacts)
    if lists is not None:  # the candidate ranking's lists (``training.candidates``), as the SavedModel answers
        ranked = candidates.lists_for(lists, data.user_ids, data.item_ids)
        top_items, top_scores = policy_top_k_of_lists(ranked, top_k, policy, data.all_interactions, data.all_repeats)
    else:
        score = retrieval_scores(artifacts, SERVING_USERS)
        # as the SavedModel ranks: the stage re-orders unseen candidates, so not under `include`
        ranker = None if policy.mode == INCLUDE else ranking_stage(artifacts, data.item_ids, data.all_interactions)
        if ranker is not None:
            score = ranker.score_fn(score, data.all_interactions, top_k)
        score = policy_score_fn(score, policy, data.all_interactions, data.all_repeats)
        top_items, top_scores = batched_top_k(score, np.arange(data.n_users), top_k)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(data.user_ids.astype(str), top_k),
            "rank": np.tile(np.arange(1, top_k + 1, dtype=np.int16), data.n_users),
            "item_id": data.item_ids.astype(str)[top_items.ravel()],
            "score": top_scores.ravel().astype(np.float32),
        }
    )
    frame = frame[np.isfinite(frame["score"])]
    frame["model_version"] = training["model_version"]
    frame["generated_at"] = pd.Timestamp(training["trained_at"]).tz_convert(None).floor("s")
    frame.to_parquet(artifacts.path(RunArtifacts.RECOMMENDATIONS), index=False)
    return {"users": int(data.n_users), "rows": int(len(frame)), "top_k": top_k, "repeat_policy": str(policy)}
