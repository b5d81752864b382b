"""What each active shopper did since the release: the memory that makes answers real-time.

The champion knows a shopper's history up to its training cut; the shop posts views,
carts and purchases as they happen. Keeping each active shopper's latest items lets the
next answer read them (the SavedModel's ``recommend_in_context``) without a retraining.
Memory is bounded twice: a fixed number of items per shopper, and a fixed number of
shoppers, the least recently active evicted first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RecentEvent:
    item_id: str
    event_type: str
    at: float  # seconds since the epoch


class RecentActivity:
    """Shopper -> their latest events (oldest first); thread-safe, bounded, least-recently-active evicted."""

    def __init__(self, max_shoppers: int = 100_000, items_per_shopper: int = 50):
        if max_shoppers < 1 or items_per_shopper < 1:
            raise ValueError("max_shoppers and items_per_shopper must be at least 1")
        self.max_shoppers = max_shoppers
        self.items_per_shopper = items_per_shopper
        self._events: OrderedDict[str, deque[RecentEvent]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def record(self, user_id: str, item_id: str, event_type: str, at: float) -> None:
        with self._lock:
            events = self._events.get(user_id)
            if events is None:
                events = self._events[user_id] = deque(maxlen=self.items_per_shopper)
                while len(self._events) > self.max_shoppers:
                    self._events.popitem(last=False)
                    self.evicted += 1
            else:
                self._events.move_to_end(user_id)
            events.append(RecentEvent(item_id, event_type, at))

    def recent(self, user_id: str) -> list[RecentEvent]:
        """The shopper's events, oldest first ([] for a shopper with none kept)."""
        with self._lock:
            events = self._events.get(user_id)
            return list(events) if events else []

    def __len__(self) -> int:
        return len(self._events)
