"""Inputs a run must not trust: a path in an asset event, names too long for the tables they end up in."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recsys_pipeline import warehouse
from recsys_pipeline.features.builds import record_checked_build, use_built_features
from recsys_pipeline.ingest.adapters import RawDataset
from recsys_pipeline.ingest.contract import check_frame
from recsys_pipeline.ingest.loader import live_load, load_raw
from recsys_pipeline.run import RunArtifacts, RunContext

pytestmark = pytest.mark.integration


def _tiny(n_events: int) -> RawDataset:
    events = pd.DataFrame(
        {
            "source_row_id": range(1, n_events + 1),
            "user_id": [f"u{i % 2}" for i in range(n_events)],
            "item_id": [f"i{i}" for i in range(n_events)],
            "event_type": "purchase",
            "event_time": "2024-01-02 03:04:05",
        }
    )
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_events)]})
    users = pd.DataFrame({"user_id": ["u0", "u1"]})
    checked = [check_frame(f, name, "t") for name, f in (("events", events), ("items", items), ("users", users))]
    return RawDataset("tiny", *checked, [])


def test_a_training_run_copies_feature_docs_from_the_folder_the_warehouse_recorded_not_the_event(
    mysql_test_settings, tmp_path
):
    work = tmp_path / "work"
    load_raw(_tiny(4), mysql_test_settings, "tiny:trusted")
    build = RunContext("tiny", "trusted", work_root=work)
    build.artifacts.write_json(RunArtifacts.QUALITY_FEATURES, {"passed": True, "written_by": "the features gate"})
    record_checked_build(mysql_test_settings, build)

    forged = tmp_path / "elsewhere"  # any folder on the worker a crafted asset event could name
    (forged / RunArtifacts.DATA_DOCS).mkdir(parents=True)
    (forged / RunArtifacts.DATA_DOCS / "secret.txt").write_text("not the pipeline's")
    (forged / RunArtifacts.QUALITY_FEATURES).write_text(json.dumps({"written_by": "someone else"}))
    load_id, data_version = live_load(mysql_test_settings)
    announced = {
        "dataset": "tiny",
        "load_id": load_id,
        "data_version": data_version,
        "features_run_folder": str(forged),
    }
    training = RunContext("tiny", "training", work_root=work)
    used = use_built_features(mysql_test_settings, announced, training)
    assert used["features_from"] == str(build.folder)
    assert training.artifacts.read_json(RunArtifacts.QUALITY_FEATURES)["written_by"] == "the features gate"
    assert not (training.folder / RunArtifacts.DATA_DOCS / "secret.txt").exists()

    load_raw(_tiny(3), mysql_test_settings, "tiny:unchecked")  # its features never passed the gate
    load_id, data_version = live_load(mysql_test_settings)
    with pytest.raises(warehouse.LoadError, match="load tiny:unchecked has no feature build that passed"):
        use_built_features(
            mysql_test_settings,
            announced | {"load_id": load_id, "data_version": data_version},
            RunContext("tiny", "training-2", work_root=work),
        )
