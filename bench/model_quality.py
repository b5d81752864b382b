"""Model quality under the offline protocol: every model, every metric, on the runs' own splits.

Reads the split a training run snapshotted into its run folder (``split.parquet`` and
``item_attributes.parquet``, written by ``training.snapshot.snapshot_split``; ``make demo`` and
``make demo DATASET=groceries`` leave one under ``.work/<dataset>/``), then on exactly
that split:

* the baselines as the DAG evaluates them (EASE's L2 chosen on validation);
* each two-tower variant named with ``--variants`` (``pooling``, ``pooling+attributes``,
  ``pooling+attributes+profile``, the same with ``gru``; ``+profile``: the user tower's
  profile and segment): epochs chosen by early stopping on validation and the popularity
  prior's weight on validation (``ml.train.tune_on_validation``, as a training run chooses
  them), refitted on all of train, then tested -- also reporting the validation NDCG@20
  that chose it, and training examples per second.

Prints one table per dataset (test metrics; validation NDCG@20 of the two-tower
variants beside them) and writes ``.work/bench/model_quality.json``.

    .venv/bin/python bench/model_quality.py --dataset online-retail groceries
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from ml.data import from_split_frame
from ml.evaluate import category_ids, evaluate_baselines, evaluate_scores
from ml.item_attributes import encode
from ml.user_segments import encode as encode_segments

COLUMNS = (
    "ndcg@10",
    "recall@10",
    "ndcg@20",
    "recall@20",
    "hit_rate@20",
    "map@20",
    "coverage@10",
    "novelty@20",
    "diversity@20",
    "cold_start_ndcg@20",
)
VARIANTS = {
    "pooling": {"sequence_encoder": "pooling", "item_attributes": False, "user_profile": False},
    "pooling+attributes": {"sequence_encoder": "pooling", "item_attributes": True, "user_profile": False},
    "pooling+attributes+profile": {"sequence_encoder": "pooling", "item_attributes": True, "user_profile": True},
    "gru": {"sequence_encoder": "gru", "item_attributes": False, "user_profile": False},
    "gru+attributes": {"sequence_encoder": "gru", "item_attributes": True, "user_profile": False},
    "gru+attributes+profile": {"sequence_encoder": "gru", "item_attributes": True, "user_profile": True},
}
# "<variant>@logq<w>": the same with another weight of the log-frequency correction
VARIANTS |= {
    f"{name}@logq{w}": values | {"logq_correction": w}
    for name, values in list(VARIANTS.items())
    for w in (0.5, 1.0, 2.0, 3.0)
}


def latest_run_folder(work: Path, dataset: str) -> Path:
    runs = sorted((work / dataset).glob("*/split.parquet"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(
            f"no run folder with split.parquet under {work / dataset}: run `make demo DATASET={dataset}` first"
        )
    return runs[-1].parent


def two_tower(data, attributes, overrides: dict, item_category, segments=None) -> dict:
    from ml.train import tune_on_validation
    from ml.two_tower import TwoTowerConfig

    started = time.perf_counter()
    # no setting to compare: the run's own steps -- epochs and popularity prior on validation, refit on train
    model, chosen, tuned, record = tune_on_validation(data, TwoTowerConfig(**overrides), {}, attributes, segments)
    metrics = evaluate_scores(model.use_histories(data.histories).score, data, item_category=item_category)
    return metrics | {
        "validation_ndcg@20": max(tuned.validation_history),
        "popularity_prior": chosen.popularity_prior,
        "best_epoch": tuned.best_epoch,
        "examples_per_second": round(model.examples_per_second),
        "seconds": round(time.perf_counter() - started, 1),
    }


def run(folder: Path, variants: list[str], epochs: int) -> dict:
    split = pd.read_parquet(folder / "split.parquet")
    data = from_split_frame(split)
    frame = pd.read_parquet(folder / "item_attributes.parquet")
    attributes = encode(data.item_ids, frame)
    item_category = category_ids(data.item_ids, frame)
    segment_path = folder / "user_segments.parquet"
    segments = encode_segments(data.user_ids, pd.read_parquet(segment_path)) if segment_path.exists() else None
    metrics = {}
    # the two-tower variants first: once numpy's BLAS threads have run (EASE), they keep spinning
    # and TensorFlow's steps ran ~7x slower in the same process here
    for name in variants:
        metrics[f"two_tower[{name}]"] = two_tower(
            data, attributes, VARIANTS[name] | {"epochs": epochs}, item_category, segments
        )
        print(
            f"  two_tower[{name}]: validation ndcg@20 {metrics[f'two_tower[{name}]']['validation_ndcg@20']:.4f}, "
            f"test ndcg@20 {metrics[f'two_tower[{name}]']['ndcg@20']:.4f}",
            flush=True,
        )
    baselines, tuning = evaluate_baselines(data, item_category)
    metrics |= baselines
    return {
        "folder": str(folder),
        "users": data.n_users,
        "items": data.n_items,
        "train_interactions": int(data.train.nnz),
        "models": metrics,
        "tuning": tuning,
    }


def table(dataset: str, result: dict) -> str:
    lines = [
        f"### {dataset} ({result['users']:,} users, {result['items']:,} items, "
        f"{result['train_interactions']:,} train interactions)",
        "",
        "| model | " + " | ".join(COLUMNS) + " | validation ndcg@20 | popularity prior |",
        "|---" * (len(COLUMNS) + 3) + "|",
    ]
    for name, values in sorted(result["models"].items(), key=lambda kv: -kv[1]["ndcg@20"]):
        cells = [f"{values[c]:.4f}" if c in values else "–" for c in COLUMNS]
        validation = f"{values['validation_ndcg@20']:.4f}" if "validation_ndcg@20" in values else "–"
        prior = f"{values['popularity_prior']:g}" if "popularity_prior" in values else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {validation} | {prior} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["online-retail", "groceries"])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["pooling", "pooling+attributes", "pooling+attributes+profile", "gru"],
        choices=sorted(VARIANTS),
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("RECSYS_WORK_DIR", ".work")))
    args = parser.parse_args()
    for_each_run(
        args.dataset, args.work, lambda folder: run(folder, args.variants, args.epochs), table, "model_quality.json"
    )


def for_each_run(datasets: list[str], work: Path, measure, table, out_name: str) -> dict:
    """``measure`` each dataset's latest run folder, print its ``table``, and keep the figures in
    ``<work>/bench/<out_name>`` (one entry per dataset, the latest)."""
    results = {}
    for dataset in datasets:
        folder = latest_run_folder(work, dataset)
        print(f"{dataset}: {folder}", flush=True)
        results[dataset] = measure(folder)
        print(table(dataset, results[dataset]), flush=True)
    out = work / "bench"
    out.mkdir(parents=True, exist_ok=True)
    path = out / out_name
    earlier = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(earlier | results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
