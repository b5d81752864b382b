"""Does a ranking stage (``ml.reranker``) over the two-tower candidates improve NDCG@20?

On a run folder's own split (``make demo`` leaves one under ``.work/<dataset>/``):

1. the two-tower model is tuned as the pipeline tunes it (profile on or off, epochs, on
   validation), and its fit on ``fit`` proposes ``ml.reranker.N_CANDIDATES`` (100) items per validation user;
2. the ranking MLP learns to re-order them against the validation items (epochs chosen on
   a quarter of those users kept out);
3. the two-tower model is refitted on all of train, proposes candidates for the test
   users, and both orders -- retrieval and reranked -- are scored on the test items under
   the protocol (full ranking of the unseen items, the K best of them kept).

Prints, per dataset, the held-out validation figures that would decide whether the
pipeline uses the stage, and the test metrics of both orders; writes
``.work/bench/ranking_stage.json``.

    .venv/bin/python bench/ranking_stage.py --dataset online-retail groceries
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
from model_quality import for_each_run

from ml.data import from_split_frame
from ml.evaluate import KS, category_ids, evaluate_scores
from ml.item_attributes import encode
from ml.metrics import ranking_metrics
from ml.ranking import batched_top_k
from ml.reranker import N_CANDIDATES, RankingFeatures, fit_on_validation
from ml.train import tune_on_validation
from ml.two_tower import TwoTowerConfig
from ml.user_segments import encode as encode_segments

COLUMNS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "hit_rate@20", "map@20")


def run(folder: Path, epochs: int) -> dict:
    data = from_split_frame(pd.read_parquet(folder / "split.parquet"))
    frame = pd.read_parquet(folder / "item_attributes.parquet")
    attributes = encode(data.item_ids, frame)
    category = category_ids(data.item_ids, frame)
    segment_path = folder / "user_segments.parquet"
    segments = encode_segments(data.user_ids, pd.read_parquet(segment_path)) if segment_path.exists() else None
    started = time.perf_counter()
    config = TwoTowerConfig(epochs=epochs)
    model, config, tuned, _ = tune_on_validation(data, config, {"user_profile": (True, False)}, attributes, segments)
    ranker = fit_on_validation(data, tuned, category, attributes.price_band)
    trained = time.perf_counter() - started
    retrieval = model.use_histories(data.histories).score
    test_ranker = ranker.using(RankingFeatures(data.train, category, attributes.price_band))
    started = time.perf_counter()
    reranked = evaluate_scores(test_ranker.score_fn(retrieval, data.train, max(KS)), data)
    rerank_seconds = time.perf_counter() - started
    users = data.evaluated_users()
    n_candidates = min(N_CANDIDATES, data.n_items)
    candidates, _ = batched_top_k(retrieval, users, n_candidates, exclude=data.train)
    return {
        "candidates": n_candidates,
        "candidate_recall": float(
            ranking_metrics(candidates, data.test[users], data.n_items, ks=(n_candidates,))[f"recall@{n_candidates}"]
        ),
        "two_tower_config": {"user_profile": config.user_profile, "epochs": config.epochs},
        "ranking_stage": ranker.record,
        "test": {"two_tower (retrieval order)": evaluate_scores(retrieval, data), "two_tower + ranking MLP": reranked},
        "seconds": {
            "training (two-tower tuning, refit, ranking MLP)": round(trained, 1),
            f"test ranking of {len(users)} users with the stage": round(rerank_seconds, 1),
        },
    }


def table(dataset: str, result: dict) -> str:
    stage = result["ranking_stage"]
    lines = [
        f"### {dataset}: {result['candidates']} candidates per user (recall@{result['candidates']} "
        f"{result['candidate_recall']:.4f}); held-out validation ndcg@20 retrieval "
        f"{stage['held_out_ndcg@20']['retrieval_order']:.4f} -> reranked {stage['held_out_ndcg@20']['reranked']:.4f} "
        f"(the pipeline would {'use' if stage['improves'] else 'not use'} the stage)",
        "",
        "| order | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, values in result["test"].items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.4f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["online-retail", "groceries"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("RECSYS_WORK_DIR", ".work")))
    args = parser.parse_args()
    for_each_run(args.dataset, args.work, lambda folder: run(folder, args.epochs), table, "ranking_stage.json")


if __name__ == "__main__":
    main()
