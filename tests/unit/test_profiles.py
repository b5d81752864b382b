"""The drift statistics of the raw gate (profiles.py) on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from recsys_pipeline.quality.profiles import (
    OTHER_ITEMS,
    LoadProfile,
    event_type_mix_linf,
    item_popularity_jsd,
    jensen_shannon,
)

pytestmark = pytest.mark.unit


def profile(event_types: dict, item_shares: dict | None = None, events: int = 100) -> LoadProfile:
    return LoadProfile(
        "load", "shop", {"events": events, "items": 1, "users": 1}, event_types, item_shares or {OTHER_ITEMS: 1.0}
    )


def test_event_type_mix_linf_is_the_largest_change_of_any_share():
    before = profile({"view": 0.7, "cart": 0.2, "purchase": 0.1})
    assert event_type_mix_linf(before, before) == 0
    now = profile({"view": 0.5, "cart": 0.2, "purchase": 0.3})
    assert event_type_mix_linf(now, before) == pytest.approx(0.2)
    # a type that appears or disappears counts with its whole share
    assert event_type_mix_linf(
        profile({"view": 0.6, "cart": 0.2, "purchase": 0.1, "teleport": 0.1}), before
    ) == pytest.approx(0.1)


def test_jensen_shannon_in_bits():
    assert jensen_shannon([0.5, 0.5], [0.5, 0.5]) == 0
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    # [1, 0] vs [0.5, 0.5]: m = [0.75, 0.25]; KL(p||m) = log2(4/3), KL(q||m) = 0.5 log2(2/3) + 0.5 log2(2)
    expected = (math.log2(4 / 3) + 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)) / 2
    assert jensen_shannon([1.0, 0.0], [0.5, 0.5]) == pytest.approx(expected)


def test_item_popularity_jsd_uses_the_last_loads_top_items_and_a_rest_bucket():
    before = profile({"purchase": 1.0}, {"a": 0.5, "b": 0.3, OTHER_ITEMS: 0.2}, events=100)
    assert item_popularity_jsd({"a": 50, "b": 30}, 100, before) == pytest.approx(0)
    # the same shares at ten times the volume: no drift
    assert item_popularity_jsd({"a": 500, "b": 300}, 1000, before) == pytest.approx(0)
    # the top items vanished: everything is in the rest bucket
    gone = item_popularity_jsd({}, 100, before)
    assert gone == pytest.approx(jensen_shannon([0, 0, 1.0], [0.5, 0.3, 0.2]))
    assert 0.5 < gone < 1


def test_profiles_round_trip_through_json():
    p = profile({"view": 1.0}, {"a": 1.0, OTHER_ITEMS: 0.0})
    assert LoadProfile.from_json(p.to_json()) == p
