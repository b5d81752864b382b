"""May a list show what the shopper already bought? One dataset setting, for every surface.

Shops differ: a fashion shop's "for you" list should show new things, a grocer's or a
wholesaler's should bring back what the customer buys every week. ``repeat_policy``
decides it for the published top-K tables, the SavedModel's answers for known shoppers
(and so the real-time service) and the gate's time-cut view, so that what is published is
what was measured:

* ``exclude`` -- never an item the shopper already has (the gate decides on new items only);
* ``include`` -- the model ranks every item, the shopper's own ones too (the gate decides
  with repeat purchases counted);
* a number ``N`` -- "buy again" slots: the first ``N`` places are the shopper's own items
  that they bought on the most distinct days, then the most recently (``buy_again_order``),
  the rest the model's best items they do not have (gated with repeat purchases counted).

Where the setting comes from (``resolve``): the training DAG's ``repeat_policy`` parameter,
else ``RECSYS_REPEAT_POLICY_<DATASET KEY>`` (upper case, ``-`` as ``_``), else
``RECSYS_REPEAT_POLICY``, else the data: ``include`` when at least ``REPEAT_SHARE_THRESHOLD``
of the validation period's purchases were repeat purchases, ``exclude`` below it.

Pure NumPy/SciPy: the batch tables use it directly, ``ml.serving`` builds the SavedModel's
buy-again table with ``buy_again_order`` so both surfaces rank alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ml.data import RepeatHistory, stored_cells
from ml.names import NEW_ITEMS, WITH_REPEATS

SETTING = "repeat_policy"
ENV = "RECSYS_REPEAT_POLICY"
EXCLUDE, INCLUDE, SLOTS = "exclude", "include", "slots"
MAX_SLOTS = 500  # the most recommendations a published list holds (the DAG's top_k)
# Below this share of repeat purchases in the validation period, shoppers rarely buy the same thing twice
# (ratings data, fashion, one-off gifts) and showing them what they have only wastes a place in the list;
# from it on, what they buy again is a real part of what they will buy. Measured on the 30 days before the
# gate's cut (shoppers known before them): Online Retail 37% (wholesale re-orders), groceries 13-17%
# (milk, bread, vegetables), both above; a dataset's owner overrides the choice with the setting.
REPEAT_SHARE_THRESHOLD = 0.1
ALLOWED = f"{EXCLUDE}, {INCLUDE} or a number of 'buy again' slots from 1 to {MAX_SLOTS}"
# where ``resolve`` found the setting (the record's ``source``)
FROM_PARAMETER, FROM_DATA = "parameter", "data"


class RepeatPolicyError(ValueError):
    """A ``repeat_policy`` value that is not one of the allowed ones: a retry cannot fix it."""


@dataclass(frozen=True)
class RepeatPolicy:
    """``mode`` is ``exclude``, ``include`` or ``slots`` (with ``slots`` "buy again" places)."""

    mode: str = EXCLUDE
    slots: int = 0

    def __post_init__(self):
        if self.mode not in (EXCLUDE, INCLUDE, SLOTS) or (self.mode == SLOTS) != (1 <= self.slots <= MAX_SLOTS):
            raise RepeatPolicyError(f"RepeatPolicy({self.mode!r}, {self.slots}): expected {ALLOWED}")

    @classmethod
    def parse(cls, value, setting: str = SETTING) -> RepeatPolicy:
        """``exclude``, ``include`` or a whole number of slots (an int, or text such as ``"3"``); ``setting``
        names where the value came from in the error."""
        if isinstance(value, RepeatPolicy):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if text in (EXCLUDE, INCLUDE):
            return cls(text)
        if text is not None and re.fullmatch(r"[0-9]+", text) and 1 <= int(text) <= MAX_SLOTS:
            return cls(SLOTS, int(text))
        raise RepeatPolicyError(f"{setting} = {value!r}: expected {ALLOWED}")

    def __str__(self) -> str:
        return str(self.slots) if self.mode == SLOTS else self.mode

    @property
    def excludes_own_items(self) -> bool:
        """Whether the model's part of a list leaves out what the shopper has (``exclude`` and slots)."""
        return self.mode != INCLUDE

    def describe(self) -> str:
        if self.mode == EXCLUDE:
            return "exclude: lists never show an item the shopper already has"
        if self.mode == INCLUDE:
            return "include: the model ranks every item, the shopper's own ones too"
        return (
            f"{self.slots} 'buy again' slot{'s' if self.slots > 1 else ''}: the shopper's own items bought on the "
            "most distinct days (then the most recent) first, then the model's best items they do not have"
        )


def gate_view(policy: RepeatPolicy) -> str:
    """The time-cut variant the gate decides on: the one that measures lists like the published ones."""
    return NEW_ITEMS if policy.mode == EXCLUDE else WITH_REPEATS


def dataset_variable(dataset_key: str) -> str:
    """The dataset's own environment variable (as ``RECSYS_GATE_APPROVAL_<KEY>`` is named)."""
    return f"{ENV}_{dataset_key.upper().replace('-', '_')}"


def resolve(
    dataset_key: str,
    requested=None,
    repeat_share: float | None = None,
    threshold: float = REPEAT_SHARE_THRESHOLD,
) -> tuple[RepeatPolicy, dict]:
    """The dataset's repeat policy and the record of how it was chosen (``training.json["repeat_policy"]``).

    First found wins: ``requested`` (the DAG's ``repeat_policy`` parameter; None or "" for
    none), ``RECSYS_REPEAT_POLICY_<DATASET KEY>``, ``RECSYS_REPEAT_POLICY``, else the data:
    ``repeat_share`` -- of the known shoppers' positive (user, item) pairs in the validation
    period, the share whose item the shopper had before that period -- ``include`` at or above
    ``threshold``, ``exclude`` below it (and ``exclude``, the pipeline's behaviour before the
    setting, when the share could not be measured: None).

    The record (JSON)::

        {"policy": "exclude" | "include" | "<N>",   # str(policy); RepeatPolicy.parse reads it back
         "mode": "exclude" | "include" | "slots", "slots": N or 0,
         "source": "parameter" | "RECSYS_REPEAT_POLICY_<KEY>" | "RECSYS_REPEAT_POLICY" | "data",
         "repeat_share": float or None, "threshold": float,
         "gate_view": "new_items" | "with_repeats",
         "reason": one sentence: which source decided, and the share beside it}

    Raises ``RepeatPolicyError`` naming the setting for a value outside ``ALLOWED``.
    """
    share = None if repeat_share is None else float(repeat_share)
    share_text = "not measured" if share is None else f"{share:.1%}"
    candidates = [(FROM_PARAMETER, requested, f"the training DAG's {SETTING} parameter")] + [
        (variable, os.environ.get(variable), variable) for variable in (dataset_variable(dataset_key), ENV)
    ]
    given = [c for c in candidates if c[1] is not None and not (isinstance(c[1], str) and not c[1].strip())]
    if given:
        source, value, where = given[0]
        policy = RepeatPolicy.parse(value, where)
        reason = f"set by {where} = {value!r} (repeat purchases in the validation period: {share_text})"
    else:
        source = FROM_DATA
        if share is None:
            policy = RepeatPolicy(EXCLUDE)
            reason = (
                "the share of repeat purchases in the validation period could not be measured, so nothing a "
                "shopper has is shown again (set RECSYS_REPEAT_POLICY to choose)"
            )
        else:
            policy = RepeatPolicy(INCLUDE if share >= threshold else EXCLUDE)
            reason = (
                f"{share_text} of the validation period's purchases were repeat purchases, "
                f"{'at or above' if share >= threshold else 'below'} the {threshold:.0%} threshold, so "
                + ("the model ranks the shopper's own items too" if policy.mode == INCLUDE else "lists show new items")
            )
    record = {
        "policy": str(policy),
        "mode": policy.mode,
        "slots": policy.slots,
        "source": source,
        "repeat_share": share,
        "threshold": threshold,
        "gate_view": gate_view(policy),
        "reason": reason,
    }
    return policy, record


def from_record(record: dict | None) -> RepeatPolicy:
    """The policy ``resolve`` recorded; ``exclude`` for a run that predates the setting (no record)."""
    return RepeatPolicy(EXCLUDE) if not record else RepeatPolicy.parse(record["policy"], f"{SETTING} (record)")


def _own_items(
    repeats: RepeatHistory, users: np.ndarray, within: sp.spmatrix | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row in ``users``, item, distinct days, days since the last) of every stored pair of the users (only
    those stored in ``within`` too, when given)."""
    users = np.asarray(users, dtype=np.int64)
    block = sp.csr_matrix(repeats.days)[users]
    if within is not None:
        block = block.multiply(sp.csr_matrix(within)[users] != 0).tocsr()
        block.eliminate_zeros()
    block = block.tocoo()
    since = sp.csr_matrix(repeats.days_since)[users]
    recency = np.asarray(since[block.row, block.col], dtype=np.float64).ravel()
    return block.row, block.col, block.data.astype(np.float64), recency


def buy_again_order(repeats: RepeatHistory, users: np.ndarray, n: int, within: sp.spmatrix | None = None) -> np.ndarray:
    """[len(users), n] item indices: each user's own items (those also in ``within``, when given) by
    distinct days bought (most first), then the last of those days (most recent first), then item index;
    -1 where a user has fewer than ``n``."""
    rows, items, days, since = _own_items(repeats, users, within)
    order = np.lexsort((items, since, -days, rows))
    rows, items = rows[order], items[order]
    place = np.arange(len(rows)) - np.searchsorted(rows, rows)  # rank within the user's own items
    keep = place < n
    out = np.full((len(users), n), -1, dtype=np.int64)
    out[rows[keep], place[keep]] = items[keep]
    return out


def buy_again_scores(repeats: RepeatHistory, users: np.ndarray) -> np.ndarray:
    """[len(users), n_items] float64: the users' own items ranked by distinct days bought, then recency
    (the fewer days since the last, the higher); every other item -inf. Exact in float64: the score is
    ``days * (most days_since + 1) - days_since``, so more days always ranks first; equal scores (same
    days, same last day) are left to the caller's tie-break (``ml.ranking``: the lower item index)."""
    span = float(sp.csr_matrix(repeats.days_since).data.max(initial=0.0)) + 1.0
    rows, items, days, since = _own_items(repeats, users)
    out = np.full((len(users), repeats.days.shape[1]), -np.inf)
    out[rows, items] = days * span - since
    return out


def slot_scores(model_top: np.ndarray, n_slots: int) -> np.ndarray:
    """[b, n_slots] scores of the buy-again places: above every model score of the row (``model_top``: its
    best finite model score, 0 where it has none), slot j at ``model_top + n_slots - j``. Shared with
    ``ml.serving`` so that the tables and the SavedModel give the same numbers."""
    top = np.where(np.isfinite(model_top), model_top, 0.0).astype(np.float32)
    return top[:, None] + np.arange(n_slots, 0, -1, dtype=np.float32)[None, :]


def _check_repeats(policy: RepeatPolicy, repeats: RepeatHistory | None) -> None:
    if policy.mode == SLOTS and repeats is None:
        raise RepeatPolicyError(
            f"{SETTING} = {policy}: 'buy again' slots need the shoppers' repeat history (the run's "
            "interaction_days snapshot), which this run does not have"
        )


def policy_score_fn(
    score_fn: Callable[[np.ndarray], np.ndarray],
    policy: RepeatPolicy,
    seen: sp.csr_matrix,
    repeats: RepeatHistory | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A score function (user indices -> float32 [b, n_items]) whose plain top-K is the policy's list.

    ``exclude``: the shopper's items (``seen``) -inf. ``include``: ``score_fn`` itself.
    ``N`` slots: the user's first ``N`` items of ``seen`` by ``buy_again_order`` (of
    ``repeats``) score above every other item (``slot_scores``), their other items in ``seen``
    -inf, the rest keep the model's scores.
    """
    if policy.mode == INCLUDE:
        return score_fn
    seen = sp.csr_matrix(seen)
    _check_repeats(policy, repeats)

    def score(users: np.ndarray) -> np.ndarray:
        users = np.asarray(users)
        scores = np.array(score_fn(users), dtype=np.float32)  # a copy: the caller's scores stay as they were
        block = seen[users]
        rows = np.repeat(np.arange(len(users)), np.diff(block.indptr))
        scores[rows, block.indices] = -np.inf
        if policy.mode == SLOTS:
            slots = buy_again_order(repeats, users, policy.slots, within=seen)
            finite = np.where(np.isfinite(scores), scores, -np.inf)
            values = slot_scores(finite.max(axis=1, initial=-np.inf), policy.slots)
            row, col = np.nonzero(slots >= 0)
            scores[row, slots[row, col]] = values[row, col]
        return scores

    return score


def policy_top_k_of_lists(
    ranked: np.ndarray,
    k: int,
    policy: RepeatPolicy,
    seen: sp.csr_matrix,
    repeats: RepeatHistory | None = None,
    batch_size: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """``batched_top_k(policy_score_fn(list_score_fn(ranked)))`` without its dense rows: the same items and
    scores from the lists themselves (``ranked``: [n_users, L] item indices, best first, -1 = none).

    A listed item scores ``L - position``, so the policy's list is the listed items it keeps, in list
    order, after the buy-again slots (which score above all of them). Scoring every item of the
    catalogue for this cost O(users x items): at 10M events 200,000 x 20,000 scores to read back 20 of
    each row's 100 (bench/README.md); this costs O(users x L). Rows with fewer than ``k`` items are
    padded with item 0 at ``-inf``, as ``top_k`` pads them with excluded items.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    n_users, length = ranked.shape
    seen = sp.csr_matrix(seen)
    _check_repeats(policy, repeats)
    position_scores = np.arange(length, 0, -1, dtype=np.float32)
    items = np.zeros((n_users, k), np.int32)
    scores = np.full((n_users, k), -np.inf, np.float32)
    for start in range(0, n_users, batch_size):
        users = np.arange(start, min(start + batch_size, n_users))
        block = ranked[users]
        keep = block >= 0
        if policy.mode != INCLUDE:  # the shopper's own items leave the list
            keep &= ~stored_cells(seen[users], block)[0]
        values = np.where(keep, position_scores[None, :], np.float32(-np.inf))
        if policy.mode == SLOTS:
            slots = buy_again_order(repeats, users, policy.slots, within=seen)
            top = values.max(axis=1, initial=-np.inf)  # the best kept list score; slot_scores: 0 when none
            block = np.concatenate([slots, block], axis=1)
            values = np.concatenate([slot_scores(top, policy.slots), values], axis=1)
            keep = np.concatenate([slots >= 0, keep], axis=1)
        # each row's kept entries first, in order (slots, then the list): best first, as the scores say
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        taken = np.take_along_axis(keep, order, axis=1)
        width = min(k, order.shape[1])
        items[users, :width] = np.where(taken, np.take_along_axis(block, order, axis=1), 0)
        scores[users, :width] = np.where(taken, np.take_along_axis(values, order, axis=1), -np.inf)
    return items, scores
