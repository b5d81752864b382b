"""Events the shop posted to the real-time service, as raw events of the dataset they were posted for.

The feedback loop closes here: ``recsys serve`` writes each posted view, cart and purchase
to ``online_events`` in the raw database, and the next features run loads them beside the
dataset's files, through the same contract checks, raw gate and dbt staging, so the next
model trains on what shoppers did with the last one. Their row ids sit above any file's
(``ONLINE_ROW_ID_BASE`` + the event's arrival number), so they never collide with a line
of a file and keep their id from one load to the next (an unchanged event stays unchanged).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pandas as pd

from recsys_pipeline import warehouse
from recsys_pipeline.ingest.contract import check_frame
from recsys_pipeline.settings import MySQLSettings

ONLINE_ROW_ID_BASE = 10**15  # above the line numbers of any file the loader reads
TABLE = "online_events"
_COLUMNS = "seq, user_id, item_id, event_type, quantity, price, event_at"


def source_name(settings: MySQLSettings, dataset_key: str) -> str:
    return f"{settings.raw_database}.{TABLE} (dataset {dataset_key})"


def watermark(settings: MySQLSettings, dataset_key: str) -> tuple[int, int]:
    """(how many posted events the dataset has, the highest arrival number): part of the data version."""
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        if not warehouse.scalar(
            conn,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (settings.raw_database, TABLE),
        ):
            return 0, 0
        cur = conn.cursor()
        cur.execute(f"SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM {TABLE} WHERE dataset = %s", (dataset_key,))
        count, highest = cur.fetchone()
    return int(count), int(highest)


def data_version(files_version: str, online: tuple[int, int]) -> str:
    """The files' fingerprint, or -- when the service posted events -- one that changes with them."""
    if not online[0]:
        return files_version
    return hashlib.sha256(f"{files_version}+online:{online[0]}:{online[1]}".encode()).hexdigest()


def stream(settings: MySQLSettings, dataset_key: str, batch_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """The dataset's posted events in arrival order, in contract-checked batches (keyset pages on ``seq``)."""
    source = source_name(settings, dataset_key)
    last = 0
    with warehouse.connect(settings, database=settings.raw_database) as conn:
        while True:
            frame = warehouse.read_frame(
                conn,
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE dataset = %s AND seq > %s ORDER BY seq LIMIT %s",
                (dataset_key, last, batch_rows),
            )
            if frame.empty:
                return
            last = int(frame["seq"].iloc[-1])
            events = pd.DataFrame(
                {
                    "source_row_id": ONLINE_ROW_ID_BASE + frame["seq"].astype("int64"),
                    "user_id": frame["user_id"],
                    "item_id": frame["item_id"],
                    "event_type": frame["event_type"],
                    "quantity": frame["quantity"],
                    "price": frame["price"],
                    # UTC, as the service wrote it: ISO 8601 with Z, read back by the contract's parser
                    "event_time": pd.to_datetime(frame["event_at"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                }
            )
            yield check_frame(events, "events", source)
