"""Catalogue attributes of the items as integer arrays the item tower can embed.

Category, price band and title words describe an item before anyone has bought it: an
item with few interactions borrows what the tower learned from others of its category,
price level and wording, and an item never seen in training still gets an embedding
from them. Index 0 of every vocabulary means "unknown" (and, for title words, padding).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

TITLE_TOKENS = 8  # words kept per title
MIN_WORD_ITEMS = 2  # a word describes something only if at least this many items share it
_WORD = re.compile(r"[a-z][a-z0-9]+")


@dataclass(frozen=True)
class ItemAttributes:
    """Arrays aligned with the item index (row i describes item i)."""

    category: np.ndarray  # int32 [n_items], 0 = unknown
    price_band: np.ndarray  # int32 [n_items], 0 = unknown, 1..5 = cheapest..dearest fifth
    title_tokens: np.ndarray  # int32 [n_items, TITLE_TOKENS], 0 = padding
    n_categories: int  # vocabulary sizes, "unknown" included
    n_price_bands: int
    n_words: int


def title_words(title: str | None) -> list[str]:
    return _WORD.findall((title or "").lower())


def encode(item_ids: np.ndarray, frame: pd.DataFrame) -> ItemAttributes:
    """``frame`` has item_id and any of category, price_band, title (the ``item_features`` mart)."""
    frame = frame.assign(item_id=frame["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    frame = frame.reindex(pd.Index(np.asarray(item_ids).astype(str)))
    categories = frame["category"] if "category" in frame else pd.Series(index=frame.index, dtype=object)
    names = sorted({str(c) for c in categories.dropna() if str(c)})
    category_index = {name: i + 1 for i, name in enumerate(names)}
    category = np.array([category_index.get(str(c), 0) if pd.notna(c) else 0 for c in categories], dtype=np.int32)
    bands = (
        pd.to_numeric(frame["price_band"], errors="coerce")
        if "price_band" in frame
        else pd.Series(np.nan, index=frame.index)
    )
    price_band = np.nan_to_num(bands.to_numpy(dtype=float), nan=0.0).clip(0, 5).astype(np.int32)
    titles = frame["title"] if "title" in frame else pd.Series(index=frame.index, dtype=object)
    words_per_item = [list(dict.fromkeys(title_words(t if isinstance(t, str) else None))) for t in titles]
    counts = Counter(word for words in words_per_item for word in words)
    vocabulary = {w: i + 1 for i, w in enumerate(sorted(w for w, n in counts.items() if n >= MIN_WORD_ITEMS))}
    tokens = np.zeros((len(words_per_item), TITLE_TOKENS), dtype=np.int32)
    for row, words in enumerate(words_per_item):
        ids = [vocabulary[w] for w in words if w in vocabulary][:TITLE_TOKENS]
        tokens[row, : len(ids)] = ids
    return ItemAttributes(category, price_band, tokens, len(names) + 1, 6, len(vocabulary) + 1)
