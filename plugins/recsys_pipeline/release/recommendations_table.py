"""The ``recommendations`` table analysts query: replaced whole, in one RENAME, by each new champion.

Readers see the old table until the swap; the old one stays as
``recommendations__previous`` for one release. If the connection dies during the load,
the live table was never touched and a retry starts over.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from recsys_pipeline import warehouse
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

TABLE = "recommendations"
RECOMMENDATIONS_DDL = """
CREATE TABLE {table} (
  `user_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `rank` SMALLINT NOT NULL,
  `item_id` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `score` FLOAT NOT NULL,
  `model_version` VARCHAR(128) NOT NULL,
  `generated_at` DATETIME NOT NULL,
  PRIMARY KEY (`user_id`, `rank`),
  KEY `item_id` (`item_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


def ensure_recommendations_table(settings: MySQLSettings) -> None:
    """Create the (empty) recommendations table if no release has been loaded yet."""
    table = f"{warehouse.quote_identifier(settings.database)}.`{TABLE}`"
    with warehouse.connect(settings) as conn:
        ddl = RECOMMENDATIONS_DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)
        conn.cursor().execute(ddl.format(table=table))
        conn.commit()


def load_recommendations(settings: MySQLSettings, artifacts: RunArtifacts) -> dict:
    """Replace the table with the run's published recommendations."""
    return replace_recommendations(settings, pd.read_parquet(artifacts.path(RunArtifacts.RECOMMENDATIONS)))


def replace_recommendations(settings: MySQLSettings, frame: pd.DataFrame) -> dict:
    """Load ``frame`` into ``recommendations__new``, then swap it in with one RENAME."""
    database = settings.database
    new_table = f"{warehouse.quote_identifier(database)}.`{TABLE}__new`"
    with warehouse.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {new_table}")
        cur.execute(RECOMMENDATIONS_DDL.format(table=new_table))
        with tempfile.TemporaryDirectory() as tmp:
            rows = warehouse.load_frame(conn, f"{database}.{TABLE}__new", frame, Path(tmp))
        conn.commit()
        warehouse.swap_in(conn, database, [TABLE], keep_previous=True)
    versions = sorted(frame["model_version"].unique().tolist()) if "model_version" in frame else []
    log.info("%s.%s now holds %s rows of model %s", database, TABLE, rows, ", ".join(versions))
    return {
        "table": f"{database}.{TABLE}",
        "rows": rows,
        "users": int(frame["user_id"].nunique()),
        "model_versions": versions,
    }
