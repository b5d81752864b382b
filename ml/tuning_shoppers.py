"""The validation shoppers hyper-parameters are chosen on: all of them up to a bound, a seeded sample past it.

Every choice made on validation (EASE's L2, TIFU-KNN's decays and blend, the two-tower's
epochs and popularity prior, the candidate ranker's training, epochs and check) ranks the
validation shoppers once per setting tried. That is a pass over the shop per setting: at
10M events (about 170,000 validation shoppers) TIFU-KNN's twelve settings alone would take
longer than the 10-minute training goal (bench/README.md). A choice between settings
needs far fewer shoppers than the shop has: the standard error of a mean NDCG@20 over
20,000 shoppers is about 0.002, and paired differences between settings are tighter still.

So past ``RECSYS_TUNING_SHOPPERS`` (20,000) validation shoppers the choices are made on a
sample of that many, drawn with a fixed seed from the shoppers who have validation items:
the same data gives the same sample, so a rerun chooses the same settings. Shops up to the
bound (Online Retail, groceries, the 1M-event synthetic shop) are unchanged: they tune on
every validation shopper, as before. The test evaluation, the gate and the published
lists always cover every shopper; only the choosing is sampled, and the records say so.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

TUNING_SHOPPERS = 20_000
SEED = 20_240_101


def bound() -> int:
    """The most validation shoppers a choice is made on (``RECSYS_TUNING_SHOPPERS``; 0 or less: all)."""
    value = os.environ.get("RECSYS_TUNING_SHOPPERS", str(TUNING_SHOPPERS))
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"RECSYS_TUNING_SHOPPERS must be a whole number of shoppers (0: every shopper), got {value!r}"
        ) from None


def sampled(truth: sp.csr_matrix, most: int | None = None) -> sp.csr_matrix:
    """``truth`` (validation items per shopper) with only a seeded sample of ``most`` of its shoppers' rows kept,
    the other rows emptied (same shape, so user indices keep their meaning); ``truth`` itself up to ``most``."""
    most = bound() if most is None else most
    truth = sp.csr_matrix(truth)
    counts = np.diff(truth.indptr)
    shoppers = np.flatnonzero(counts > 0)
    if most <= 0 or len(shoppers) <= most:
        return truth
    keep = np.zeros(truth.shape[0], bool)
    keep[np.random.default_rng(SEED).choice(shoppers, most, replace=False)] = True
    indptr = np.r_[0, np.cumsum(np.where(keep, counts, 0))]
    rows = np.repeat(keep, counts)
    return sp.csr_matrix((truth.data[rows], truth.indices[rows], indptr), shape=truth.shape)


def note(truth: sp.csr_matrix, most: int | None = None) -> str | None:
    """What a record says when ``sampled`` sampled ``truth``'s shoppers; None when it kept them all."""
    most = bound() if most is None else most
    shoppers = int((np.diff(sp.csr_matrix(truth).indptr) > 0).sum())
    if most <= 0 or shoppers <= most:
        return None
    return (
        f"chosen on a seeded sample of {most:,} of the {shoppers:,} validation shoppers (RECSYS_TUNING_SHOPPERS); "
        "the test evaluation covers every shopper"
    )
