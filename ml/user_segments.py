"""Shopper segments (the country, where the data has one) as integers the user tower can embed.

A segment is what a shop knows of a shopper before their first purchase; the user tower
embeds it beside the history-derived profile, and the serving artefact falls back to the
segment's own best-sellers for a shopper it has never seen. It is the ``stg_raw__users``
row, one value per shopper (the Online Retail adapter takes their most common country over
all their invoices, holdout included: a country rarely changes, so the leak is at most a
shopper who moved). Index 0 means "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

MIN_SEGMENT_USERS = 5  # rarer segments are folded into "unknown": too few shoppers to learn anything from


@dataclass(frozen=True)
class UserSegments:
    """``segment[u]`` for user index u (0 = unknown) and the segment names, ``names[s - 1]`` for s >= 1."""

    segment: np.ndarray  # int32 [n_users]
    names: tuple[str, ...]

    @property
    def n_segments(self) -> int:  # "unknown" included
        return len(self.names) + 1

    def index_of(self, names) -> np.ndarray:
        """Segment indices of ``names`` (unknown or missing -> 0)."""
        lookup = {name: i + 1 for i, name in enumerate(self.names)}
        return np.array(
            [lookup.get(str(n), 0) if n is not None and not pd.isna(n) else 0 for n in names], dtype=np.int32
        )


def encode(user_ids: np.ndarray, frame: pd.DataFrame, min_users: int = MIN_SEGMENT_USERS) -> UserSegments:
    """``frame`` has user_id and country (``stg_raw__users``); rows align with ``user_ids``."""
    if frame.empty or "country" not in frame:
        return UserSegments(np.zeros(len(user_ids), np.int32), ())
    frame = frame.assign(user_id=frame["user_id"].astype(str)).drop_duplicates("user_id").set_index("user_id")
    countries = frame["country"].reindex(pd.Index(np.asarray(user_ids).astype(str)))
    counts = countries.dropna().astype(str).value_counts()
    names = tuple(sorted(name for name, n in counts.items() if n >= min_users and name))
    segments = UserSegments(np.zeros(len(user_ids), np.int32), names)
    return UserSegments(segments.index_of(countries.to_numpy(dtype=object)), names)


def segment_popularity(interactions: sp.csr_matrix, segments: UserSegments) -> np.ndarray:
    """[n_segments, n_items] interaction counts per segment; row 0 (unknown) holds everyone's."""
    n_segments = segments.n_segments
    membership = sp.csr_matrix(
        (np.ones(len(segments.segment), np.float32), (segments.segment, np.arange(len(segments.segment)))),
        shape=(n_segments, interactions.shape[0]),
    )
    counts = np.asarray((membership @ interactions).todense(), dtype=np.float32)
    counts[0] = np.asarray(interactions.sum(axis=0)).ravel()
    return counts
