"""Batch scoring speed and memory: top-100 over all items for every user, beside numpy's matmul.

Two parts, both on random unit embeddings of the model's width (64) -- the speed of
scoring does not depend on what the embeddings learned:

* **speed**: for one shape (``--users`` x ``--items``), the pipeline's scoring
  (``ml.ranking.batched_top_k`` over ``users @ items.T`` with each user's seen items
  excluded, as ``training.scoring.recommend`` runs it) and the same scoring with TensorFlow's
  ``tf.math.top_k`` (what the SavedModel's ``recommend`` signature runs), next to the
  throughput of the matrix multiply alone (``np.matmul`` on the same chunks) measured in
  the same run. The target: scoring reaches at least half of matmul's users/s.
* **scale** (``--scale-users``, ``--scale-items``; 1M x 100k by default): chunked
  scoring with the pipeline's ranking that writes each chunk's top-K to a Parquet file
  as it goes, so memory is bounded by one chunk's scores; prints time, users/s and the
  process's peak RSS.

    .venv/bin/python bench/batch_scoring.py                     # speed at 100k x 20k, scale 1M x 100k
    .venv/bin/python bench/batch_scoring.py --skip-scale        # speed only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from ml.ranking import batched_top_k

DIM = 64


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def embeddings(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((n, DIM), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def seen_items(n_users: int, n_items: int, per_user: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), per_user)
    cols = rng.integers(0, n_items, size=n_users * per_user)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    matrix.sum_duplicates()
    return matrix


def matmul_users_per_second(users: np.ndarray, items: np.ndarray, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(users), batch):
        np.matmul(users[start : start + batch], items.T)
    return len(users) / (time.perf_counter() - started)


def numpy_scoring_users_per_second(
    users: np.ndarray, items: np.ndarray, seen: sp.csr_matrix, k: int, batch: int, threads: int | None = None
) -> float:
    started = time.perf_counter()
    batched_top_k(
        lambda u: users[u] @ items.T, np.arange(len(users)), k, exclude=seen, batch_size=batch, threads=threads
    )
    return len(users) / (time.perf_counter() - started)


def tf_scoring_users_per_second(users: np.ndarray, items: np.ndarray, seen: sp.csr_matrix, k: int, batch: int) -> float:
    import tensorflow as tf

    item_matrix = tf.constant(items)

    @tf.function(input_signature=[tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([None, 2], tf.int64)])
    def score(user_batch, seen_indices):
        scores = tf.matmul(user_batch, item_matrix, transpose_b=True)
        scores = tf.tensor_scatter_nd_update(scores, seen_indices, tf.fill([tf.shape(seen_indices)[0]], float("-inf")))
        return tf.math.top_k(scores, k=k)

    def indices(start: int, stop: int) -> np.ndarray:
        block = seen[start:stop].tocoo()
        return np.stack([block.row, block.col], axis=1).astype(np.int64)

    score(users[:batch], indices(0, batch))  # trace once
    started = time.perf_counter()
    for start in range(0, len(users), batch):
        stop = min(start + batch, len(users))
        score(users[start:stop], indices(start, stop))
    return len(users) / (time.perf_counter() - started)


def speed(n_users: int, n_items: int, k: int, batch: int) -> dict:
    users, items = embeddings(n_users, 1), embeddings(n_items, 2)
    seen = seen_items(n_users, n_items, 20, 3)
    numpy_scoring_users_per_second(users[: 4 * batch], items, seen[: 4 * batch], k, batch)  # load the compiled ranking
    matmul = matmul_users_per_second(users, items, batch)
    numpy_scoring = numpy_scoring_users_per_second(users, items, seen, k, batch)
    one_thread = numpy_scoring_users_per_second(users, items, seen, k, batch, threads=1)
    tf_scoring = tf_scoring_users_per_second(users, items, seen, k, batch)
    return {
        "users": n_users,
        "items": n_items,
        "dim": DIM,
        "k": k,
        "batch": batch,
        "matmul_users_per_s": round(matmul),
        "gflops_matmul": round(matmul * 2 * DIM * n_items / 1e9, 1),
        "numpy_scoring_users_per_s": round(numpy_scoring),
        "numpy_scoring_one_thread_users_per_s": round(one_thread),
        "tf_scoring_users_per_s": round(tf_scoring),
        "numpy_scoring_vs_matmul": round(numpy_scoring / matmul, 3),
        "tf_scoring_vs_matmul": round(tf_scoring / matmul, 3),
    }


def scale(n_users: int, n_items: int, k: int, batch: int, out_dir: Path) -> dict:
    """Score every user in chunks with the pipeline's ranking, writing each chunk's top-K to Parquet as it goes.

    Memory stays a few batches' scores (one per thread) plus the item embeddings; user
    embeddings are drawn per chunk of 16 batches, as a job reading them from storage
    chunk by chunk would.
    """
    items = embeddings(n_items, 2)
    rng = np.random.default_rng(1)
    writer = None
    rows = 0
    chunk = 16 * batch
    started = time.perf_counter()
    path = out_dir / "top_k.parquet"
    for start in range(0, n_users, chunk):
        size = min(chunk, n_users - start)
        user_chunk = rng.standard_normal((size, DIM), dtype=np.float32)
        user_chunk /= np.linalg.norm(user_chunk, axis=1, keepdims=True)
        top_items, top_scores = batched_top_k(
            lambda u, chunk=user_chunk: chunk[u] @ items.T, np.arange(size), k, batch_size=batch
        )
        table = pa.table(
            {
                "user": np.repeat(np.arange(start, start + size, dtype=np.int64), k),
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int16), size),
                "item": top_items.ravel(),
                "score": top_scores.ravel(),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        rows += table.num_rows
        if start // chunk % 25 == 0:
            print(
                f"  scale: {start + size:,} users in {time.perf_counter() - started:.0f} s, "
                f"peak RSS {peak_rss_mb():.0f} MB",
                flush=True,
            )
    writer.close()
    seconds = time.perf_counter() - started
    return {
        "users": n_users,
        "items": n_items,
        "k": k,
        "batch": batch,
        "seconds": round(seconds, 1),
        "users_per_s": round(n_users / seconds),
        "rows": rows,
        "parquet_mb": round(path.stat().st_size / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--batch", type=int, default=256, help="users per chunk (small chunks keep the scores in cache)"
    )
    parser.add_argument("--scale-users", type=int, default=1_000_000)
    parser.add_argument("--scale-items", type=int, default=100_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("RECSYS_WORK_DIR", ".work")) / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"cpu_count": os.cpu_count()}
    if not args.skip_speed:
        results["speed"] = speed(args.users, args.items, args.k, args.batch)
        print(json.dumps(results["speed"], indent=1), flush=True)
    if not args.skip_scale:
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            results["scale"] = scale(args.scale_users, args.scale_items, args.k, args.batch, Path(tmp))
        print(json.dumps(results["scale"], indent=1), flush=True)
    (args.out / "batch_scoring.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
