"""Links to the models page, for logs, summaries and the page itself.

A task log or a summary names what it wrote by its ``s3://`` key and by the models page's
link, never by a presigned URL: a presigned URL is a bearer credential (signed with the
writer's key, valid for days) that anyone who reads the log could use. The page checks
the reader's Airflow login on every request instead.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote

MOUNT = "/recsys"  # where the plugin mounts the page's app on Airflow's API server
MODELS_PATH = f"{MOUNT}/models"


def airflow_base_url() -> str:
    """Airflow's ``[api] base_url`` (e.g. ``https://airflow.example.com``); empty where it is unset.

    Read from Airflow's configuration only where Airflow is loaded already (a task, the API
    server): importing it elsewhere would write an ``airflow.cfg`` as a side effect.
    """
    value = os.environ.get("AIRFLOW__API__BASE_URL")
    configuration = sys.modules.get("airflow.configuration")
    if not value and configuration is not None:
        value = configuration.conf.get("api", "base_url", fallback="")
    return (value or "").rstrip("/")


def models_page_url(dataset_key: str | None = None) -> str:
    """The models page (at the dataset's section when given), absolute when Airflow knows its base URL."""
    anchor = f"#dataset-{quote(dataset_key)}" if dataset_key else ""
    return f"{airflow_base_url()}{MODELS_PATH}{anchor}"


def release_file_path(dataset_key: str, release_id: str, path: str) -> str:
    """The page's route to one file of a release (relative to the API server)."""
    return f"{MOUNT}/files/{quote(dataset_key)}/{quote(release_id)}/{quote(path)}"
