"""The evaluation split as index-based sparse matrices, shared by every model.

dbt's ``interactions_split`` mart holds one row per (user, item) with its split and
position in the user's history; this module turns it into integer indices and CSR
matrices once, so baselines, the TensorFlow model and the metrics all see the same
users, items and holdout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

SPLIT_COLUMNS = ["user_id", "item_id", "split", "is_validation", "item_rank"]
DAYS_COLUMNS = ["user_id", "item_id", "event_date"]  # the int_interaction_days model: one row per pair and day


class SplitError(ValueError):
    """A split table the models cannot use (a missing column, nothing to train on): retrying the
    same table cannot fix it, so the pipeline fails the task at once with this message."""


@dataclass(frozen=True)
class RepeatHistory:
    """Per (user, item) pair known before a reference time: on how many distinct days the user had it, and how
    long ago the last was -- what "buy again" rankings and repeat-buying features read (the binary matrices
    cannot tell a weekly staple from a one-off)."""

    days: sp.csr_matrix  # float32: distinct days with a positive event before the reference (>= 1 where stored)
    days_since: sp.csr_matrix  # float32, same sparsity: whole days from the last such day to the reference (>= 1)
    reference: pd.Timestamp
    # every (user, item, day) before the reference: user index, item index, whole days ago (>= 1)
    occasions: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))


def repeat_history(
    days_frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, reference: pd.Timestamp
) -> RepeatHistory:
    """The ``RepeatHistory`` of ``days_frame`` (``DAYS_COLUMNS``: one row per pair and day) before ``reference``.

    Users and items outside ``user_ids`` / ``item_ids`` (sorted, as ``index_ids`` makes them) are left out.
    """
    reference = pd.Timestamp(reference)
    frame = checked_columns(days_frame, DAYS_COLUMNS, "int_interaction_days")
    dates = pd.to_datetime(frame["event_date"])
    before = (dates < reference).to_numpy()
    frame, dates = frame[before], dates[before]
    users, items = id_positions(frame["user_id"], user_ids), id_positions(frame["item_id"], item_ids)
    known = (users >= 0) & (items >= 0)
    ago = np.maximum(np.ceil((reference - dates).dt.total_seconds().to_numpy() / 86400.0), 1.0)
    shape = (len(user_ids), len(item_ids))
    users, items, ago = users[known], items[known], ago[known]
    days = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)  # duplicates summed
    days.sum_duplicates()
    # the smallest "days ago" per pair, as a maximum of its negation (CSR sums duplicates, so reduce first)
    order = np.lexsort((ago, items, users))
    first = np.r_[True, (np.diff(users[order]) != 0) | (np.diff(items[order]) != 0)]
    pick = order[first]
    since = sp.csr_matrix((ago[pick].astype(np.float32), (users[pick], items[pick])), shape=shape)
    since.sum_duplicates()
    return RepeatHistory(days.astype(np.float32), since, reference, (users, items, ago))


def bought_between(later: RepeatHistory, earlier: RepeatHistory) -> sp.csr_matrix:
    """Binary (user, item) pairs with a day between ``earlier.reference`` and ``later.reference``: what
    shoppers had in that period, repeat purchases included."""
    more = (later.days - earlier.days).tocsr()
    more.data = (more.data > 0).astype(np.float32)
    more.eliminate_zeros()
    return more


def repeat_share(later: RepeatHistory, earlier: RepeatHistory) -> float:
    """Share of the (user, item) pairs had between the two references that were had before ``earlier``'s."""
    period = bought_between(later, earlier)
    if period.nnz == 0:
        return 0.0
    return float(period.multiply(earlier.days > 0).nnz / period.nnz)


@dataclass
class InteractionData:
    """Users and items as indices 0..n-1, and the protocol's splits as binary CSR matrices.

    ``train`` is what models learn from for the test evaluation; ``fit`` and
    ``validation`` carve train the same way for choosing hyper-parameters (never test).
    ``histories`` lists each user's train items in time order (oldest first);
    ``fit_histories`` the same for ``fit`` and ``full_histories`` for train and test.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    test: sp.csr_matrix
    fit: sp.csr_matrix
    validation: sp.csr_matrix
    histories: list[np.ndarray]
    fit_histories: list[np.ndarray]
    full_histories: list[np.ndarray]  # train and test items: what serving knows of each user
    repeats: RepeatHistory | None = None  # how often and how recently, on the train side (before the cut)
    fit_repeats: RepeatHistory | None = None  # the same before the validation period
    all_repeats: RepeatHistory | None = None  # everything known: what publishing and serving use

    @property
    def all_interactions(self) -> sp.csr_matrix:
        """Every known (user, item): what a published recommendation must not repeat."""
        both = (self.train + self.test).tocsr()
        both.data[:] = 1.0
        return both

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def evaluated_users(self, holdout: sp.csr_matrix | None = None) -> np.ndarray:
        """Indices of users with at least one held-out item (test by default)."""
        holdout = self.test if holdout is None else holdout
        return np.flatnonzero(np.diff(holdout.indptr) > 0)


def binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR users x items with 1 at every (row, col) pair, duplicates collapsed."""
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def time_ordered_histories(frame: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    """Each user's items (``frame``'s user, item, item_rank) oldest first: the user tower's input."""
    return ordered_histories(frame["user"].to_numpy(), frame["item"].to_numpy(), frame["item_rank"].to_numpy(), n_users)


def ordered_histories(users: np.ndarray, items: np.ndarray, ranks: np.ndarray, n_users: int) -> list[np.ndarray]:
    """``time_ordered_histories`` of aligned arrays: a stable sort by (user, rank), as the frame's was."""
    order = np.lexsort((ranks, users))
    bounds = np.searchsorted(users[order], np.arange(n_users + 1))
    ordered = items[order].astype(np.int32)
    return [ordered[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def checked_columns(frame: pd.DataFrame, columns: list[str], table: str) -> pd.DataFrame:
    """``frame``'s ``columns`` (a copy) with user and item ids as text; a clear error naming what is missing."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SplitError(f"{table}: columns {missing} are missing")
    frame = frame[columns].copy()
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    return frame


def stored_cells(matrix: sp.spmatrix | sp.sparray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row's ``columns`` ([rows, w] column indices of ``matrix``'s rows; < 0 = none): whether the cell
    holds a non-zero, and its value (0 where not). Looked up by sorted (row, column) keys, never a dense
    [rows x columns] copy of ``matrix`` (16 GB at 10M events); duplicates are summed and explicit zeros dropped on
    a copy (``sum_duplicates``), the caller's matrix is untouched."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()  # sorted indices, so the keys below are in order
    n_columns = matrix.shape[1]
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * n_columns + matrix.indices
    wanted = np.arange(len(columns), dtype=np.int64)[:, None] * n_columns + np.maximum(columns, 0)
    found = np.zeros(np.shape(columns), bool)
    values = np.zeros(np.shape(columns), matrix.dtype)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        found = (keys[at] == wanted) & (columns >= 0)
        values[found] = matrix.data[at[found]]
    return found, values


def index_ids(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Sorted user and item ids of ``frame``; adds its ``user`` and ``item`` index columns (in place)."""
    user_ids = np.array(sorted(frame["user_id"].unique()), dtype=object)
    item_ids = np.array(sorted(frame["item_id"].unique()), dtype=object)
    frame["user"] = id_positions(frame["user_id"], user_ids)
    frame["item"] = id_positions(frame["item_id"], item_ids)
    return user_ids, item_ids


def id_positions(values: pd.Series, ids: np.ndarray) -> np.ndarray:
    """Each of ``values``' position in ``ids`` (int64; -1 where it is not there), compared as text.

    A hash lookup in Arrow: every stage reads its run's 6.6-6.9M snapshot rows at 10M events,
    where a binary search over the sorted ids as NumPy text took 15x longer, plus the copy
    into fixed-width text it needs (bench/README.md).
    """
    text = pa.array(values.astype(str), type=pa.string())
    found = pc.index_in(text, value_set=pa.array(np.asarray(ids).astype(str), type=pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def from_split_frame(split: pd.DataFrame) -> InteractionData:
    """Build InteractionData from rows of the ``interactions_split`` mart.

    Users and items are indexed in sorted id order, so the same table always gives
    the same indices (reproducible runs).
    """
    frame = checked_columns(split, SPLIT_COLUMNS, "interactions_split")
    user_ids, item_ids = index_ids(frame)
    shape = (len(user_ids), len(item_ids))
    # the parts as index arrays: selecting rows of the frame copied its id text (6.6M rows at 10M events) 4 times
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    ranks = frame["item_rank"].astype(int).to_numpy()
    is_train = frame["split"].to_numpy() == "train"
    is_validation = frame["is_validation"].astype(int).to_numpy() == 1
    is_fit = is_train & ~is_validation

    def matrix(rows: np.ndarray) -> sp.csr_matrix:
        return binary_matrix(users[rows], items[rows], shape)

    def histories(rows: np.ndarray) -> list[np.ndarray]:
        return ordered_histories(users[rows], items[rows], ranks[rows], len(user_ids))

    return InteractionData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=matrix(is_train),
        test=matrix(~is_train),
        fit=matrix(is_fit),
        validation=matrix(is_train & is_validation),
        histories=histories(is_train),
        fit_histories=histories(is_fit),
        full_histories=ordered_histories(users, items, ranks, len(user_ids)),
    )
