"""The ``recommendations`` table analysts query: replaced whole, in one RENAME, by each new champion.

Readers see the old table until the swap; the old one stays as
``recommendations__previous`` for one release. If the connection dies during the load,
the live table was never touched and a retry starts over.

Each writer loads through a staging table of its own (``recommendations__new_<token>``)
while it holds the table's writer lock, so two writers never fill or swap in each
other's rows; what a crashed writer left is dropped by the next one. The table's
comment names the release its rows come from, so the table, the champion pointer and
the history can be compared. A training run loads only while its release is still the
champion (``load_published``): a rollback that happened since wins, and the run says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import uuid
from pathlib import Path

import pandas as pd

from recsys_pipeline import storage, warehouse
from recsys_pipeline.release.champion import ChampionMoved, read_champion, read_history
from recsys_pipeline.release.writer_lock import champion_lock, table_lock
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import MySQLSettings, S3Settings, s3_settings

log = logging.getLogger(__name__)

TABLE = "recommendations"
STAGING_PREFIX = f"{TABLE}__new"
COMMENT_PREFIX = "recsys release "
_RELEASE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
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


def load_recommendations(
    settings: MySQLSettings, artifacts: RunArtifacts, s3: S3Settings | None = None, release_id: str | None = None
) -> dict:
    """Replace the table with the run's published recommendations, if its release is still the champion."""
    release_id = release_id or artifacts.read_json(RunArtifacts.PUBLISHED)["release_id"]
    dataset_key = RunContext.from_folder(artifacts.folder).dataset_key
    frame = pd.read_parquet(artifacts.path(RunArtifacts.RECOMMENDATIONS))
    return load_published(settings, s3 or s3_settings(), dataset_key, release_id, frame)


def load_published(
    settings: MySQLSettings, s3_config: S3Settings, dataset_key: str, release_id: str, frame: pd.DataFrame
) -> dict:
    """Load ``frame`` (release ``release_id``'s recommendations) while that release is the champion."""
    purpose = f"recommendations load of {dataset_key} release {release_id}"
    with champion_lock(settings, s3_config, dataset_key, purpose):
        s3 = storage.client(s3_config)
        pointer = read_champion(s3, s3_config, dataset_key)
        if pointer is None or pointer["release_id"] != release_id:
            history = read_history(s3, s3_config, dataset_key)
            last = f" ({history[-1]['event']} at {history[-1]['at']})" if history else ""
            raise ChampionMoved(
                f"{purpose} refused: the champion of {dataset_key} is now "
                f"{pointer['release_id'] if pointer else 'none'}{last}, not {release_id}; the {TABLE} table keeps "
                f"the rows of release {loaded_release(settings) or 'unknown'}"
            )
        return replace_recommendations(settings, frame, release_id)


def replace_recommendations(settings: MySQLSettings, frame: pd.DataFrame, release_id: str | None = None) -> dict:
    """Load ``frame`` into a staging table of this writer's own, then swap it in with one RENAME."""
    database = settings.database
    db = warehouse.quote_identifier(database)
    staging = f"{STAGING_PREFIX}_{uuid.uuid4().hex[:12]}"
    comment = ""
    if release_id is not None:
        if not _RELEASE_ID.match(release_id):
            raise ValueError(f"refusing release id {release_id!r} in a table comment")
        comment = f" COMMENT='{COMMENT_PREFIX}{release_id}'"
    with table_lock(settings, f"{TABLE} load into {database}"), warehouse.connect(settings, load_files=True) as conn:
        cur = conn.cursor()
        for leftover in _staging_tables(conn, database):  # a crashed writer's: nobody else holds the lock
            cur.execute(f"DROP TABLE IF EXISTS {db}.{warehouse.quote_identifier(leftover)}")
        cur.execute(RECOMMENDATIONS_DDL.format(table=f"{db}.`{staging}`") + comment)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rows = warehouse.load_frame(conn, f"{database}.{staging}", frame, Path(tmp))
            conn.commit()
            _swap(conn, database, staging)
        except BaseException:
            # the load's own connection may be the one that died; if MySQL is gone, the next writer drops it
            with contextlib.suppress(Exception), warehouse.connect(settings) as cleanup:
                cleanup.cursor().execute(f"DROP TABLE IF EXISTS {db}.`{staging}`")
            raise
    versions = sorted(frame["model_version"].unique().tolist()) if "model_version" in frame else []
    log.info("%s.%s now holds %s rows of model %s", database, TABLE, rows, ", ".join(versions))
    return {
        "table": f"{database}.{TABLE}",
        "rows": rows,
        "users": int(frame["user_id"].nunique()),
        "model_versions": versions,
        "release_id": release_id,
    }


def _staging_tables(conn, database: str) -> list[str]:
    cur = conn.cursor()
    cur.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_name LIKE %s",
        (database, STAGING_PREFIX.replace("_", "\\_") + "%"),
    )
    return [row[0] for row in cur.fetchall()]


def _swap(conn, database: str, staging: str) -> None:
    """``recommendations`` -> ``recommendations__previous`` and the staging table -> ``recommendations``, at once."""
    db = warehouse.quote_identifier(database)
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {db}.`{TABLE}__previous`")
    renames = [f"{db}.`{staging}` TO {db}.`{TABLE}`"]
    if warehouse.table_exists(conn, database, TABLE):
        renames.insert(0, f"{db}.`{TABLE}` TO {db}.`{TABLE}__previous`")
    cur.execute("RENAME TABLE " + ", ".join(renames))
    conn.commit()


def loaded_release(settings: MySQLSettings) -> str | None:
    """The release whose rows ``recommendations`` holds (from the table's comment), or None when unknown."""
    with warehouse.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(
            "SELECT table_comment FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (settings.database, TABLE),
        )
        row = cur.fetchone()
    comment = row[0] if row else ""
    return comment[len(COMMENT_PREFIX) :] if comment and comment.startswith(COMMENT_PREFIX) else None
