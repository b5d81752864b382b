"""Airflow plugin: the "Recsys models" page in the Airflow UI's menu.

Mounts ``recsys_pipeline.ui.model_page`` on the API server at ``/recsys`` and adds a
top-level menu entry that shows ``/recsys/models`` inside the UI.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from recsys_pipeline.ui.links import MOUNT
from recsys_pipeline.ui.model_page import app


class RecsysModelsPlugin(AirflowPlugin):
    name = "recsys_models"
    fastapi_apps = [{"app": app, "url_prefix": MOUNT, "name": "Recsys models"}]
    external_views = [
        {
            "name": "Recsys models",
            "href": f"{MOUNT}/models",
            "url_route": "recsys-models",
            "destination": "nav",
        }
    ]
