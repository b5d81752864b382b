"""The published lists' model: the candidate ranking (``ml.candidate_ranking``) fitted on everything known.

The gate measures the candidate ranking on its time cut: sources fitted before the cut,
the ranker trained on the validation period before them. What is published is the same
recipe moved to the end of the data: the last ``test_days`` (the gate view's period) are
the ranker's validation period, the sources are refitted on everything, and the repeat
features are taken at midnight after the newest event. EASE's L2 and TIFU-KNN's decays
are chosen on that period, as the gate's refit chooses them on its own.

The ranked lists (``CANDIDATE_LISTS``: the best ``n`` items of every shopper, with their
scores) are what the published tables and the SavedModel's known-shopper answers read.
Where the gate's view falls back to the per-user holdout (few shoppers return, e.g.
ratings data) there is no period to learn repeats from and nothing is written: the
two-tower model's lists are published, as before.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.training import snapshot

log = logging.getLogger(__name__)


def end_of_data(artifacts: RunArtifacts):
    """The data as the published model sees it: everything before midnight after the newest event is "train",
    the gate view's last period its validation; None (with the reason) where the gate has no time cut."""
    from ml.backtest import time_cut_data
    from ml.time_cut import TIME_CUT, choose_cut, cut_frame

    frame = pd.read_parquet(artifacts.path(RunArtifacts.TIME_SPLIT))
    days = snapshot.read_days(artifacts)
    if days is None or frame.empty:
        return None, "no per-day interactions in the run's snapshot (int_interaction_days)"
    choice = choose_cut(frame, start=pd.Timestamp(pd.to_datetime(frame["cut_at"]).iloc[0]))
    if choice.view != TIME_CUT:
        return None, f"the gate's view is not a time cut ({choice.reason})"
    newest = max(pd.to_datetime(frame["first_event_at"]).max(), pd.to_datetime(frame["last_event_at"]).max())
    end = pd.Timestamp(newest).normalize() + pd.Timedelta(days=1)
    data, _ = time_cut_data(cut_frame(frame, end), validation_days=choice.test_days, days_frame=days)
    return data, f"validation period: the last {choice.test_days} days before {end}"


def fit_for_publishing(artifacts: RunArtifacts, data, include_own: bool, n: int, max_epochs: int = 20) -> dict:
    """Tune the sources and train the ranker on ``data`` (``end_of_data``), rank every shopper's best ``n``
    items (their own among them when ``include_own``) into ``CANDIDATE_LISTS``; the record."""
    from ml.backtest import candidate_recipe
    from ml.candidate_ranking import train_candidate_ranking
    from ml.data import bought_between
    from ml.evaluate import EASE_MAX_ITEMS, tuned_ease
    from ml.names import EASE, TIFU_KNN
    from ml.repeat_buying import tuned_tifu_knn

    tuning = {}
    if data.n_items <= EASE_MAX_ITEMS:
        _, tuning[EASE] = tuned_ease(data)
    validation_repeats = bought_between(data.repeats, data.fit_repeats)
    _, tuning[TIFU_KNN] = tuned_tifu_knn(data.fit_repeats, data.repeats, validation_repeats)
    recipe = candidate_recipe(tuning)
    truth = validation_repeats if include_own else data.validation
    ranker, score = train_candidate_ranking(data, recipe, include_own, truth, max_epochs=max_epochs)
    record = {"recipe": recipe, "ranker": ranker.record, "tuning": tuning, "used": score is not None}
    if score is None:
        return record
    n = min(n, data.n_items)
    # the ranker's candidates leave out what a shopper had unless ``include_own``: batched_top_k(score, ...,
    # exclude=data.train) ranks the same items first, after scoring the whole catalogue for each shopper
    top, scores = score.top_n(np.arange(data.n_users), n)
    np.savez(
        artifacts.path(RunArtifacts.CANDIDATE_LISTS),
        user_ids=data.user_ids.astype(str),
        item_ids=data.item_ids.astype(str),
        items=top.astype(np.int32),
        scores=scores.astype(np.float32),
    )
    log.info("candidate ranking: %d shoppers x %d items ranked for publishing (%s)", data.n_users, n, ranker.record)
    return record


def read_lists(artifacts: RunArtifacts) -> dict | None:
    """The run's ranked lists (``fit_for_publishing``), or None when the run publishes the two-tower's."""
    path = artifacts.path(RunArtifacts.CANDIDATE_LISTS)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def lists_for(lists: dict, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """The ranked lists as item indices of ``item_ids``, one row per user of ``user_ids`` ([n_users, L]; -1 where a
    list is shorter, or for a user without one)."""
    item_index = {item: i for i, item in enumerate(np.asarray(item_ids).astype(str))}
    remap = np.array([item_index.get(item, -1) for item in lists["item_ids"]] + [-1], dtype=np.int64)
    row_of = {user: r for r, user in enumerate(lists["user_ids"])}
    rows = np.array([row_of.get(user, -1) for user in np.asarray(user_ids).astype(str)], dtype=np.int64)
    items = np.where(np.isfinite(lists["scores"]), lists["items"], -1)
    mapped = remap[np.where(items >= 0, items, len(remap) - 1)]
    out = np.full((len(rows), items.shape[1]), -1, np.int64)
    out[rows >= 0] = mapped[rows[rows >= 0]]
    return out


def list_score_fn(ranked: np.ndarray, n_items: int):
    """A score function (user indices -> [b, n_items]) from ``lists_for``'s rows: L - position for each listed
    item (list order, whatever the raw scores; as the SavedModel scores them), -inf for every other item."""
    length = ranked.shape[1]
    position_scores = np.arange(length, 0, -1, dtype=np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        rows = ranked[np.asarray(users).reshape(-1)]
        out = np.full((len(rows), n_items), -np.inf, np.float32)
        r, c = np.nonzero(rows >= 0)
        out[r, rows[r, c]] = position_scores[c]
        return out

    return score
