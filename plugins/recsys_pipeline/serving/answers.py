"""Lists the service returns: from the published table, the SavedModel in context, or item vectors.

Every answer is a list of (item, score, reason) from one champion, so the caller can show
why an item is there and the feedback log can judge that champion by what shoppers did.
A known shopper with nothing new gets exactly the published list (the tables analysts
query and the service agree); any event since the release sends the shopper through
``recommend_in_context``, which reads those events after the history the model knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_pipeline.serving.champion import LoadedChampion
from recsys_pipeline.serving.sessions import RecentEvent

BOUGHT_WITH = "bought together with {item}"
BOUGHT_BEFORE = "you bought it before"  # an own item the dataset's repeat policy lets a list show again
IN_CART = "goes with {item} in your cart"
VIEWED = "similar to {item}, which you viewed"
ANSWER_CACHE_SIZE = 200_000  # published answers kept per release (a few hundred bytes each)
_EVENT_REASONS = {"purchase": BOUGHT_WITH, "cart": IN_CART}  # any other event type: VIEWED


@dataclass(frozen=True)
class Recommended:
    item_id: str
    score: float
    reason: str
    because_of: str | None = None


@dataclass(frozen=True)
class Answer:
    items: list[Recommended]
    source: str  # published | in_context | best_sellers | related
    known_user: bool
    ignored_item_ids: tuple[str, ...] = ()


def _context_items(champion: LoadedChampion, item_ids: list[str]) -> tuple[list[str], list[str]]:
    """(known item ids, oldest first and each once -- its latest occurrence --; unknown ids)."""
    known, unknown, seen = [], [], set()
    for item in reversed(item_ids):
        if item in seen:
            continue
        seen.add(item)
        (known if item in champion.item_index else unknown).append(item)
    return known[::-1], unknown[::-1]


def _reasons(
    champion: LoadedChampion, items: np.ndarray, anchors: list[tuple[int, str]], fallback: str, user_id=None
) -> list[tuple[str, str | None]]:
    """For each recommended item, the anchor (an item the shopper has) its vector is closest to; an item that
    is itself one of the shopper's known items (a "buy again" slot, or ranked under ``include``) is there
    because they bought it before."""
    if not anchors or not len(items):
        return [(fallback, None)] * len(items)
    anchor_items = np.fromiter((a for a, _ in anchors), np.int32, len(anchors))
    similarity = champion.unit_item_vectors[items] @ champion.unit_item_vectors[anchor_items].T
    best = similarity.argmax(axis=1)
    own = set(champion.known_items.get(user_id, np.empty(0, np.int32)).tolist()) if user_id is not None else set()
    out = []
    for recommended, b in zip(items, best, strict=True):
        if int(recommended) in own:
            out.append((BOUGHT_BEFORE, str(champion.item_ids[recommended])))
            continue
        item, template = anchors[b]
        anchor = str(champion.item_ids[item])
        out.append((template.format(item=anchor), anchor))
    return out


def _anchors(
    champion: LoadedChampion, user_id: str | None, recent: list[RecentEvent], viewed: list[str], cart: list[str]
):
    """Items the shopper has, each with the reason template it gives ('bought together with {item}')."""
    anchors: dict[int, str] = {}
    if user_id is not None:
        for item in champion.known_items.get(user_id, np.empty(0, np.int32))[-50:]:
            anchors[int(item)] = BOUGHT_WITH
    for event in recent:
        index = champion.item_index.get(event.item_id)
        if index is not None:
            anchors[index] = _EVENT_REASONS.get(event.event_type, VIEWED)
    for item in viewed:
        index = champion.item_index.get(item)
        if index is not None:
            anchors[index] = VIEWED
    for item in cart:
        index = champion.item_index.get(item)
        if index is not None:
            anchors[index] = IN_CART
    return list(anchors.items())


def _fallback_reason(segment: str | None) -> str:
    return f"popular in {segment}" if segment else "popular with every shopper"


def _model_answer(champion: LoadedChampion, user_id: str, k: int, recent: list[str], segment: str | None):
    import tensorflow as tf

    result = champion.model.recommend_in_context(
        user_id=tf.constant([user_id]),
        k=tf.constant(k, tf.int32),
        recent_item_ids=tf.constant([recent or [""]]),
        segment=tf.constant([segment or ""]),
    )
    items = np.fromiter(
        (champion.item_index[i.decode()] for i in result["item_ids"].numpy()[0]), np.int32
    )  # the model only returns its own items
    scores = result["scores"].numpy()[0]
    keep = np.isfinite(scores)
    return items[keep], scores[keep], bool(result["known_user"].numpy()[0])


def recommend(
    champion: LoadedChampion,
    user_id: str | None,
    k: int,
    recent: list[RecentEvent] = (),
    context_item_ids: list[str] = (),
    cart_item_ids: list[str] = (),
    segment: str | None = None,
    exclude_item_ids: list[str] = (),
) -> Answer:
    """Top-``k`` for a shopper: the published list when nothing changed, else the model in context.

    ``recent``: what the service saw the shopper do since the release; ``context_item_ids``
    and ``cart_item_ids``: what the caller says they just looked at / hold. Items in the
    context, the cart and ``exclude_item_ids`` are never returned.
    """
    context, unknown = _context_items(
        champion, [e.item_id for e in recent] + list(context_item_ids) + list(cart_item_ids)
    )
    _, unknown_excluded = _context_items(champion, list(exclude_item_ids))
    ignored = tuple(dict.fromkeys(unknown + unknown_excluded))
    excluded = {champion.item_index[i] for i in exclude_item_ids if i in champion.item_index}
    published = champion.published.get(user_id) if user_id is not None else None
    if published is not None and not context and k <= len(published[0]) and not excluded:
        key = (user_id, k, segment)
        cached = champion.answer_cache.get(key)
        if cached is None:  # the same release answers the same list: build it (and its reasons) once
            items, scores = published[0][:k], published[1][:k]
            anchors = _anchors(champion, user_id, [], [], [])
            reasons = _reasons(champion, items, anchors, _fallback_reason(segment), user_id)
            cached = Answer(_listed(champion, items, scores, reasons), "published", True)
            if len(champion.answer_cache) < ANSWER_CACHE_SIZE:
                champion.answer_cache[key] = cached
        return Answer(cached.items, cached.source, cached.known_user, ignored)
    wanted = min(k + len(excluded), len(champion.item_ids))
    items, scores, known = _model_answer(champion, user_id or "", wanted, context, segment)
    if excluded:
        keep = np.fromiter((i not in excluded for i in items), bool, len(items))
        items, scores = items[keep], scores[keep]
    items, scores = items[:k], scores[:k]
    personal = known or bool(context)
    anchors = _anchors(champion, user_id, recent, list(context_item_ids), list(cart_item_ids)) if personal else []
    reasons = _reasons(champion, items, anchors, _fallback_reason(segment), user_id)
    source = "in_context" if context else ("published" if known else "best_sellers")
    return Answer(_listed(champion, items, scores, reasons), source, known, ignored)


def related(champion: LoadedChampion, item_id: str, k: int) -> Answer | None:
    """The ``k`` items whose vectors are closest to ``item_id``'s (None for an item the release lacks)."""
    index = champion.item_index.get(item_id)
    if index is None:
        return None
    similarity = champion.unit_item_vectors @ champion.unit_item_vectors[index]
    similarity[index] = -np.inf
    k = min(k, len(similarity) - 1)
    top = np.argpartition(-similarity, k - 1)[:k] if k > 0 else np.empty(0, np.int64)
    top = top[np.argsort(-similarity[top], kind="stable")]
    reason = BOUGHT_WITH.format(item=item_id)
    return Answer(_listed(champion, top, similarity[top], [(reason, item_id)] * len(top)), "related", False)


def _listed(champion: LoadedChampion, items, scores, reasons) -> list[Recommended]:
    return [
        Recommended(str(champion.item_ids[i]), float(s), reason, anchor)
        for i, s, (reason, anchor) in zip(items, scores, reasons, strict=True)
    ]
