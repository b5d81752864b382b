"""Load profiles: what each admitted load looked like, so the next one can be compared with it.

A silent upstream change -- a tracking bug that logs every click as a view, a feed that
drops half the catalogue -- passes every row-level rule. The data gate catches it the
way TFX's ExampleValidator does, by comparing this load's statistics with the last good
load's, per dataset:

* **event-type mix**: the L-infinity distance between the two event-type share
  vectors, ``max_t |p_now(t) - p_before(t)|`` (TFX's ``infinity_norm`` for categorical
  features): 0.10 means some event type's share moved by 10 percentage points;
* **item popularity**: the Jensen-Shannon divergence (base 2, so in [0, 1]) between the
  two distributions of events over items, on the last good load's ``TOP_ITEMS`` most
  popular items plus one bucket for all others (TFX's ``jensen_shannon_divergence``):
  0 for the same popularity, 1 for disjoint catalogues;
* **volume**: row counts, for the gate's bounds on growth and drop.

Profiles are stored in the raw database (``load_profiles``, one row per load id, so a
rerun replaces its own) and written only when a load passes the raw gate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings

PROFILE_TABLE = "load_profiles"
TOP_ITEMS = 1000
OTHER_ITEMS = "__other__"

PROFILE_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
  `load_id` VARCHAR(64) NOT NULL PRIMARY KEY,
  `dataset` VARCHAR(255) NOT NULL,
  `profile` LONGTEXT NOT NULL,
  `admitted_at` DATETIME NOT NULL,
  KEY `dataset_admitted` (`dataset`, `admitted_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""


@dataclass
class LoadProfile:
    load_id: str
    dataset: str
    rows: dict[str, int]
    # share of events per event type (raw values, as loaded)
    event_types: dict[str, float]
    # share of events per item for the TOP_ITEMS most frequent items, the rest under OTHER_ITEMS
    item_shares: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoadProfile:
        return cls(**json.loads(text))


def profile_tables(settings: MySQLSettings, dataset: str, load_id: str, tables: dict[str, str]) -> LoadProfile:
    """Profile the raw tables named in ``tables`` (entity -> table in the raw database)."""
    db = warehouse.quote_identifier(settings.raw_database)
    events = f"{db}.{warehouse.quote_identifier(tables['events'])}"
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        rows = {
            entity: int(warehouse.query_one(conn, f"SELECT COUNT(*) FROM {db}.{warehouse.quote_identifier(table)}")[0])
            for entity, table in tables.items()
        }
        cur = conn.cursor()
        cur.execute(f"SELECT COALESCE(event_type, ''), COUNT(*) FROM {events} GROUP BY 1")
        type_counts = {str(t): int(n) for t, n in cur.fetchall()}
        cur.execute(
            f"SELECT item_id, COUNT(*) AS n FROM {events} WHERE item_id IS NOT NULL "
            f"GROUP BY item_id ORDER BY n DESC, item_id LIMIT {TOP_ITEMS}"
        )
        top = {str(i): int(n) for i, n in cur.fetchall()}
    total = max(rows["events"], 1)
    item_shares = {item: n / total for item, n in top.items()}
    item_shares[OTHER_ITEMS] = max(0.0, 1.0 - sum(item_shares.values()))
    return LoadProfile(load_id, dataset, rows, {t: n / total for t, n in type_counts.items()}, item_shares)


def event_type_mix_linf(now: LoadProfile, before: LoadProfile) -> float:
    """L-infinity distance between the event-type shares of two loads."""
    types = set(now.event_types) | set(before.event_types)
    return max((abs(now.event_types.get(t, 0.0) - before.event_types.get(t, 0.0)) for t in types), default=0.0)


def _on_support(shares: dict[str, float], support: list[str]) -> list[float]:
    known = [shares.get(item, 0.0) for item in support[:-1]]
    return known + [max(0.0, 1.0 - sum(known))]


def jensen_shannon(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)."""

    def kl(a: list[float], b: list[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    sp, sq = sum(p) or 1.0, sum(q) or 1.0
    p, q = [x / sp for x in p], [x / sq for x in q]
    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    return max(0.0, min(1.0, (kl(p, m) + kl(q, m)) / 2))


def item_popularity_jsd(now_item_counts: dict[str, int], total_events: int, before: LoadProfile) -> float:
    """JSD between this load's item popularity and the last good load's, on that load's top items + the rest.

    ``now_item_counts`` holds this load's counts for (at least) the items of
    ``before``'s top list; everything else falls into the "other" bucket.
    """
    support = [item for item in before.item_shares if item != OTHER_ITEMS] + [OTHER_ITEMS]
    now_shares = {item: now_item_counts.get(item, 0) / max(total_events, 1) for item in support[:-1]}
    return jensen_shannon(_on_support(now_shares, support), _on_support(before.item_shares, support))


def item_counts_for(settings: MySQLSettings, events_table: str, items: list[str]) -> dict[str, int]:
    """Event counts in ``events_table`` (raw database) for the given items."""
    if not items:
        return {}
    db = warehouse.quote_identifier(settings.raw_database)
    placeholders = ", ".join(["%s"] * len(items))
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(
            f"SELECT item_id, COUNT(*) FROM {db}.{warehouse.quote_identifier(events_table)} "
            f"WHERE item_id IN ({placeholders}) GROUP BY item_id",
            items,
        )
        return {str(i): int(n) for i, n in cur.fetchall()}


def last_good_profile(settings: MySQLSettings, dataset: str, exclude_load_id: str) -> LoadProfile | None:
    """The most recently admitted profile of ``dataset`` other than ``exclude_load_id`` (a rerun's own)."""
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if not warehouse.table_exists(conn, settings.raw_database, PROFILE_TABLE):
            return None
        row = warehouse.query_one(
            conn,
            f"SELECT profile FROM {warehouse.quote_identifier(settings.raw_database)}.`{PROFILE_TABLE}` "
            "WHERE dataset = %s AND load_id <> %s ORDER BY admitted_at DESC, load_id DESC LIMIT 1",
            (dataset, exclude_load_id),
        )
    return LoadProfile.from_json(row[0]) if row else None


def record_profile(settings: MySQLSettings, profile: LoadProfile) -> None:
    """Remember ``profile`` as an admitted (good) load; a rerun of the same load replaces its row."""
    table = f"{warehouse.quote_identifier(settings.raw_database)}.`{PROFILE_TABLE}`"
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute(PROFILE_DDL.format(table=table))
        cur.execute(
            f"REPLACE INTO {table} VALUES (%s, %s, %s, %s)",
            (profile.load_id, profile.dataset, profile.to_json(), datetime.now(UTC).replace(tzinfo=None)),
        )
        conn.commit()
