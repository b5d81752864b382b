"""The Airflow Asset that joins feature refresh to training.

``recsys_features`` updates it after the features gate passes; ``recsys_training``
runs when it updates (and weekly). Its event's ``extra`` names the load the warehouse
now holds (dataset, load id, data version) and the folder with that run's Data Docs
and dbt docs, so the training run trains on exactly that build and ships its docs.
"""

from __future__ import annotations

from airflow.sdk import Asset

FEATURES = Asset(
    name="recsys_features",
    uri="mysql://warehouse/recsys/interactions_split",
    group="recsys",
    extra={"tables": "user_features, item_features, interactions_split, interactions_time_split"},
)


def announced_features(context) -> dict | None:
    """The ``extra`` of the latest FEATURES event that triggered this run, or None (a manual or timed run)."""
    events = (context.get("triggering_asset_events") or {}).get(FEATURES) or []
    return dict(events[-1].extra) if events else None
