"""``recsys serve``: build the service from settings and run it under uvicorn.

Settings come from the environment with defaults that work on this machine (the same
MySQL user and object storage as the pipeline). The service refuses to start without a
complete champion: a shop's backend must never get answers from half a release.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from recsys_pipeline import warehouse
from recsys_pipeline.serving import feedback as feedback_log
from recsys_pipeline.serving.api_keys import ApiKeyCheck
from recsys_pipeline.serving.hot_swap import ChampionHolder
from recsys_pipeline.serving.sessions import RecentActivity
from recsys_pipeline.settings import MySQLSettings, S3Settings, mysql_settings, s3_readonly_settings, work_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingSettings:
    dataset_key: str
    host: str
    port: int
    poll_seconds: float  # how often the champion pointer's ETag is compared
    cache_dir: Path  # downloaded releases
    spool_path: Path  # feedback rows waiting for MySQL
    max_shoppers: int  # active shoppers whose recent events are kept
    items_per_shopper: int


def serving_settings(**overrides) -> ServingSettings:
    folder = work_dir() / "serving"
    values = {
        "dataset_key": os.environ.get("RECSYS_SERVING_DATASET", "online-retail"),
        "host": os.environ.get("RECSYS_SERVING_HOST", "127.0.0.1"),
        "port": int(os.environ.get("RECSYS_SERVING_PORT", "8000")),
        "poll_seconds": float(os.environ.get("RECSYS_SERVING_POLL_SECONDS", "3")),
        "cache_dir": Path(os.environ.get("RECSYS_SERVING_CACHE_DIR", folder / "releases")),
        "spool_path": Path(os.environ.get("RECSYS_SERVING_SPOOL", folder / "feedback-spool.jsonl")),
        "max_shoppers": int(os.environ.get("RECSYS_SERVING_MAX_SHOPPERS", "100000")),
        "items_per_shopper": int(os.environ.get("RECSYS_SERVING_ITEMS_PER_SHOPPER", "50")),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServingSettings(**values)


@dataclass
class Service:
    """The running parts, so tests and benchmarks can start, swap and stop them in one process."""

    app: object
    holder: ChampionHolder
    activity: RecentActivity
    feedback: feedback_log.FeedbackLog
    keys: ApiKeyCheck

    def stop(self) -> None:
        self.holder.stop()
        self.keys.stop()
        self.feedback.stop()


def build_service(settings: ServingSettings, mysql: MySQLSettings, s3: S3Settings) -> Service:
    from recsys_pipeline.serving.app import create_app

    holder = ChampionHolder(s3, settings.dataset_key, settings.cache_dir, settings.poll_seconds)  # refuses first
    try:
        with warehouse.connect(mysql) as conn:
            feedback_log.create_tables(conn, mysql.raw_database)
    except Exception as error:
        log.warning("could not create the feedback tables (%s): rows are spooled until MySQL answers", error)
    activity = RecentActivity(settings.max_shoppers, settings.items_per_shopper)
    feedback = feedback_log.FeedbackLog(mysql, settings.spool_path).start()
    keys = ApiKeyCheck(mysql).start()
    if not len(keys):
        log.warning("no API key is active: every request but /healthz gets 401 (create one: recsys api-key create)")
    holder.start()
    return Service(create_app(holder, activity, feedback, keys), holder, activity, feedback, keys)


def serve(settings: ServingSettings) -> None:
    import uvicorn

    service = build_service(settings, mysql_settings(), s3_readonly_settings())  # it only reads releases
    try:
        uvicorn.run(service.app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        service.stop()
