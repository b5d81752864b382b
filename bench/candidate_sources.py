"""What the candidate sources and their features cost per batch of shoppers, at a synthetic shop's size.

The candidate ranking (``ml.candidate_ranking``) scores every shopper with each source (two-tower,
item-kNN, user-kNN, popularity, TIFU-KNN) and turns the scores into candidates and features, 256
shoppers at a time: the ranker's training, the published lists of every shopper, the backtest. At
10M events (199,666 shoppers x 20,000 items) that is ~780 batches a pass, so a batch's cost is the
figure to watch. This prints, for a shop of ``--events`` events (``bench/synthetic_events.py``):

* item-kNN's fit: seconds, its peak memory (in a forked process: RSS above the fork's), what its
  similarities hold;
* each source's ``score`` per 256 shoppers (median of ``--batches``, BLAS on one thread, as the
  pipeline's scoring threads run it);
* ``candidates_and_features`` per 256 shoppers, the sources included.

The matrices approximate the pipeline's snapshot without MySQL or dbt: every event but returns is an
interaction, its day the event's date (no validation period is split off). The two-tower model is
stood in for by random 64-wide embeddings (its cost is one small matrix product). Writes
``.work/bench/candidate_sources.json``.

    .venv/bin/python bench/candidate_sources.py --events 10000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ml.baselines import ItemKNN
from ml.candidate_ranking import OWN_CANDIDATES, PER_SOURCE, Context, candidates_and_features, fit_sources
from ml.data import RepeatHistory

from synthetic_events import Params, ensure_dataset

WORK = Path(os.environ.get("RECSYS_WORK_DIR", ".work")) / "bench"
RECIPE = {"tifu_knn": {"basket_decay": 0.9, "group_decay": 0.7, "alpha": 0.7}}  # TIFU-KNN's defaults


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shop_matrices(events_path: Path) -> tuple[sp.csr_matrix, RepeatHistory]:
    """The binary shopper x item matrix and the repeat history of every event but returns."""
    events = pq.read_table(events_path, columns=["user_id", "item_id", "event_type", "event_time"]).to_pandas()
    events = events[events["user_id"].notna() & (events["event_type"] != "return")]
    users, user_ids = pd.factorize(events["user_id"], sort=True)
    items, item_ids = pd.factorize(events["item_id"], sort=True)
    day = pd.to_datetime(events["event_time"].str.slice(0, 10)).to_numpy().astype("datetime64[D]").astype(np.int64)
    occasions = pd.DataFrame({"user": users, "item": items, "day": day}).drop_duplicates()
    reference = int(occasions["day"].max()) + 1
    pairs = occasions.groupby(["user", "item"])["day"].agg(["count", "max"]).reset_index()
    shape = (len(user_ids), len(item_ids))
    at = (pairs["user"].to_numpy(), pairs["item"].to_numpy())
    days = sp.csr_matrix((pairs["count"].to_numpy(np.float32), at), shape=shape)
    since = sp.csr_matrix(((reference - pairs["max"]).to_numpy(np.float32), at), shape=shape)
    ago = (reference - occasions["day"]).to_numpy().astype(float)
    history = RepeatHistory(
        days,
        since,
        pd.Timestamp(reference, unit="D"),
        (occasions["user"].to_numpy(), occasions["item"].to_numpy(), ago),
    )
    train = days.copy()
    train.data[:] = 1.0
    return train, history


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def _fit_item_knn(train: sp.csr_matrix, answer) -> None:
    start = rss_mb()
    started = time.perf_counter()
    similarity = ItemKNN().fit(train).similarity_
    seconds = time.perf_counter() - started
    dense = isinstance(similarity, np.ndarray)
    held = (
        similarity.nbytes if dense else sum(a.nbytes for a in (similarity.data, similarity.indices, similarity.indptr))
    )
    answer.send(
        {
            "seconds": round(seconds, 1),
            "peak_mb_above_start": round(peak_rss_mb() - start),
            "similarities": type(similarity).__name__,
            "similarities_mb": round(held / 2**20),
        }
    )


def item_knn_fit(train: sp.csr_matrix) -> dict:
    """Item-kNN's fit in a forked process: its own peak memory, not the matrices' build before it."""
    context = multiprocessing.get_context("fork")
    receive, answer = context.Pipe(duplex=False)
    child = context.Process(target=_fit_item_knn, args=(train, answer))
    child.start()
    answer.close()  # the child's end only: a child killed before it answers ends recv() with EOFError
    try:
        figures = receive.recv()
    except EOFError:
        figures = None
    child.join()
    if figures is None or child.exitcode != 0:
        raise RuntimeError(f"item-kNN's fit ended with exit code {child.exitcode} (killed for memory?)")
    return figures


def median_seconds(fn, batches) -> float:
    times = []
    for batch in batches:
        started = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)), 4)


class RandomTwoTower:
    """Stands in for the two-tower model: user x item dot products of 64-wide embeddings."""

    def __init__(self, n_users: int, n_items: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.users = rng.standard_normal((n_users, 64), dtype=np.float32)
        self.items = rng.standard_normal((n_items, 64), dtype=np.float32)

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.users[users] @ self.items.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batches", type=int, default=6, help="batches of 256 shoppers timed (medians)")
    parser.add_argument("--include-own", action="store_true", help="the shoppers' own items are candidates too")
    parser.add_argument("--out", type=Path, default=WORK / "candidate_sources.json")
    args = parser.parse_args()

    dataset = WORK / "data" / f"synthetic-{args.events}"
    ensure_dataset(Params(events=args.events), dataset)
    started = time.perf_counter()
    train, history = shop_matrices(dataset / "events.parquet")
    result: dict = {
        "events": args.events,
        "shoppers": train.shape[0],
        "items": train.shape[1],
        "interactions": int(train.nnz),
        "matrices_seconds": round(time.perf_counter() - started, 1),
    }
    result["item_knn_fit"] = item_knn_fit(train)
    print(json.dumps(result), flush=True)

    sources = fit_sources(train, history, RECIPE, args.include_own, RandomTwoTower(*train.shape))
    context = Context(train, history)
    width = min(train.shape[1], len(sources) * PER_SOURCE + (OWN_CANDIDATES if args.include_own else 0))
    rng = np.random.default_rng(1)
    batches = [np.sort(rng.choice(train.shape[0], 256, replace=False)) for _ in range(args.batches)]
    with threadpool_limits(limits=1, user_api="blas"):
        result["score_seconds_per_256"] = {name: median_seconds(fn, batches) for name, fn in sources.items()}
        result["candidates_and_features_seconds_per_256"] = median_seconds(
            lambda users: candidates_and_features(sources, context, users, args.include_own, width), batches
        )
    result["include_own"] = args.include_own
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
