"""The gate's view of the data: where the global time cut falls, or why the gate falls back.

The evaluation protocol's "gate's view" (``docs/evaluation-protocol.md`` of the shared
docs): fit on what happened before one cut T, test on what the known shoppers did after
it -- what a weekly retraining faces in production. ``choose_cut`` places T: midnight of
the newest event's day minus 30 days (or the ``interactions_time_split`` mart's own cut,
which is that unless ``time_cut_at`` says otherwise), moved back in 30-day steps until
1,000 known users (users with an event before T) have a positive event at or after T,
as long as at least half of the data stays before T. Data where few shoppers return
(ratings data) never gets there: with fewer than 200 known test users the gate falls
back to the per-user holdout with **baskets kept whole** (``basket_holdout``), and the
choice records why and how many returning users there were.

Everything is computed from the mart's one row per (user, item) with its first and last
positive event: a pair first seen at or after T is a test item, a pair first seen
before T and seen again at or after T is a repeat purchase; nothing at or after T ever
reaches the train rows. The mart holds pairs, not single events, so "half of the data"
is counted in (user, item) pairs first seen before T.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ml.data import InteractionData, SplitError, binary_matrix, index_ids, time_ordered_histories

TIME_CUT = "time_cut"
BASKET_HOLDOUT = "per_user_holdout_baskets_whole"
VIEW_LABELS = {
    TIME_CUT: "global time cut",
    BASKET_HOLDOUT: "per-user holdout, baskets kept whole (fallback: too few returning users)",
}
STEP_DAYS = 30
MIN_TEST_USERS = 1000
FALLBACK_BELOW = 200
MIN_SHARE_BEFORE = 0.5
MIN_HOLDOUT_ITEMS = 5  # protocol rule 2: users with fewer distinct items only train
TRAIN_SHARE = 0.8  # protocol rule 3: floor(0.8 n) items kept for train


@dataclass(frozen=True)
class ViewChoice:
    """Which view the gate decides on, and the figures that chose it."""

    view: str
    cut_at: str | None  # the time cut T (None for the fallback)
    test_days: int  # length of the test period in days (also the validation period's)
    known_test_users: int  # known users with a positive event at or after T, at the chosen cut
    reason: str
    tried: list[dict] = field(default_factory=list)  # each cut tried: cut_at, known_test_users, share_before

    def to_dict(self) -> dict:
        return asdict(self) | {"label": VIEW_LABELS[self.view]}

    @classmethod
    def from_dict(cls, record: dict) -> ViewChoice:
        return cls(**{k: record[k] for k in ("view", "cut_at", "test_days", "known_test_users", "reason", "tried")})


def _last_seen(frame: pd.DataFrame) -> pd.Series:
    times = frame["last_event_at"] if "last_event_at" in frame.columns else frame["first_event_at"]
    return pd.to_datetime(times)


def _counts_at(first: pd.Series, last: pd.Series, users: pd.Series, cut: pd.Timestamp) -> tuple[int, float]:
    before = (first < cut).to_numpy()
    known = set(users[before])
    returning = set(users[(last >= cut).to_numpy()])
    return len(known & returning), float(before.mean())


def choose_cut(
    frame: pd.DataFrame,
    start: pd.Timestamp | None = None,
    step_days: int = STEP_DAYS,
    min_test_users: int = MIN_TEST_USERS,
    fallback_below: int = FALLBACK_BELOW,
) -> ViewChoice:
    """The cut T for ``frame`` (user_id, first_event_at, last_event_at per pair), or the fallback view.

    ``start`` is the first cut tried (default: midnight of the newest event's day minus
    ``step_days``). Each step back is taken only while at least half of the pairs stay
    before the cut; the first cut with ``min_test_users`` known test users wins, else
    the one with the most. Fewer than ``fallback_below`` there: the per-user holdout.
    """
    first, last = pd.to_datetime(frame["first_event_at"]), _last_seen(frame)
    users = frame["user_id"].astype(str)
    newest = max(first.max(), last.max())
    newest_day = pd.Timestamp(newest).normalize()
    cut = pd.Timestamp(start) if start is not None else newest_day - pd.Timedelta(days=step_days)
    tried: list[dict] = []
    while True:
        known_test, share = _counts_at(first, last, users, cut)
        if share < MIN_SHARE_BEFORE:
            break
        tried.append({"cut_at": str(cut), "known_test_users": known_test, "share_before": round(share, 4)})
        if known_test >= min_test_users:
            break
        cut -= pd.Timedelta(days=step_days)
    if not tried:
        return ViewChoice(
            BASKET_HOLDOUT, None, 0, 0, f"no cut keeps half of the interactions before it (newest event {newest})"
        )
    best = next((t for t in tried if t["known_test_users"] >= min_test_users), None) or max(
        tried, key=lambda t: t["known_test_users"]
    )
    chosen = pd.Timestamp(best["cut_at"])
    test_days = max(1, (newest_day - chosen).days)
    n = best["known_test_users"]
    if n < fallback_below:
        return ViewChoice(
            BASKET_HOLDOUT,
            None,
            0,
            n,
            f"only {n} returning users (known before the cut, back at the test period at or after it) at best "
            f"(cut {chosen.date()}), fewer than {fallback_below}: few shoppers come back, so the gate decides on "
            "the per-user holdout with baskets kept whole",
            tried,
        )
    steps = tried.index(best)
    why = (
        f"{n} known users have a positive event in the {test_days}-day test period"
        + (f" after moving the cut back {steps} x {step_days} days" if steps else "")
        + (
            ""
            if n >= min_test_users
            else f" (fewer than {min_test_users}: moving back further leaves under half the data before the cut)"
        )
    )
    return ViewChoice(TIME_CUT, str(chosen), test_days, n, why, tried)


def _matrix(rows: pd.DataFrame, shape: tuple[int, int]):
    return binary_matrix(rows["user"].to_numpy(), rows["item"].to_numpy(), shape)


def cut_frame(frame: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    """``frame`` relabelled at ``cut``: ``split`` (train: first seen before it) and ``is_repeat_after_cut``.

    Recomputed from the pairs' first and last event, whatever cut the mart itself used.
    """
    frame = frame.copy()
    first = pd.to_datetime(frame["first_event_at"])
    before = first < cut
    frame["first_event_at"] = first
    frame["split"] = np.where(before, "train", "test")
    frame["is_repeat_after_cut"] = (before & (_last_seen(frame) >= cut)).astype(int)
    frame["cut_at"] = cut
    return frame


def basket_holdout(frame: pd.DataFrame, train_share: float = TRAIN_SHARE) -> InteractionData:
    """The per-user temporal holdout with a user's baskets kept whole (the gate's fallback view).

    Each user's distinct items in order of first interaction; the last 20% are test
    items, except that items sharing the first test item's time (one basket: the mart
    has no basket id, so the same timestamp) all move to test with it. A user whose
    train side would be empty, or with fewer than five items, only trains. Validation is
    carved from train the same way.
    """
    frame = frame[["user_id", "item_id", "first_event_at"]].copy()
    frame["user_id"], frame["item_id"] = frame["user_id"].astype(str), frame["item_id"].astype(str)
    frame["first_event_at"] = pd.to_datetime(frame["first_event_at"])
    user_ids, item_ids = index_ids(frame)
    frame = frame.sort_values(["user", "first_event_at", "item"], kind="mergesort").reset_index(drop=True)
    frame["item_rank"] = frame.groupby("user").cumcount() + 1
    is_test = _holdout_side(frame, train_share)
    train = frame[~is_test]
    is_validation = _holdout_side(train.reset_index(drop=True), train_share)
    shape = (len(user_ids), len(item_ids))
    fit, validation = train[~is_validation], train[is_validation]
    histories = time_ordered_histories(train, len(user_ids))
    return InteractionData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=_matrix(train, shape),
        test=_matrix(frame[is_test], shape),
        fit=_matrix(fit, shape),
        validation=_matrix(validation, shape),
        histories=histories,
        fit_histories=time_ordered_histories(fit, len(user_ids)),
        full_histories=time_ordered_histories(frame, len(user_ids)),
    )


def _holdout_side(frame: pd.DataFrame, train_share: float) -> np.ndarray:
    """Boolean per row of ``frame`` (sorted by user, then time): on the held-out side, baskets whole."""
    users = frame["user"].to_numpy()
    times = frame["first_event_at"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    n_train = np.floor(train_share * sizes).astype(np.int64)
    boundary = times[starts + np.minimum(n_train, sizes - 1)]  # the first held-out item's time
    per_row = np.repeat(np.arange(len(starts)), sizes)
    held = times >= boundary[per_row]
    first_held_is_first = boundary == times[starts]  # the whole history would be held out
    evaluated = (sizes >= MIN_HOLDOUT_ITEMS) & ~first_held_is_first
    return held & evaluated[per_row]


def view_data(
    frame: pd.DataFrame, choice: ViewChoice, days_frame: pd.DataFrame | None = None
) -> tuple[InteractionData, object | None]:
    """The gate view's ``InteractionData`` (test: new items) and, on a time cut, the with-repeats test matrix
    (with ``days_frame``, the data carries its repeat histories: ``ml.backtest.time_cut_data``)."""
    if choice.view == BASKET_HOLDOUT:
        return basket_holdout(frame), None
    if choice.cut_at is None:
        raise SplitError("a time-cut view needs its cut")
    from ml.backtest import time_cut_data

    cut = pd.Timestamp(choice.cut_at)
    return time_cut_data(cut_frame(frame, cut), validation_days=choice.test_days, days_frame=days_frame)
