"""A run's identity and folder: the names every stage finds its inputs by."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.run import RunArtifacts, RunContext, dataset_key

pytestmark = pytest.mark.unit


def test_a_run_is_named_by_its_logical_date_and_its_dataset_key(tmp_path):
    run = RunContext.for_run("/data/shops/My Shop!", datetime(2026, 1, 5, tzinfo=UTC), "manual__x")
    assert run.release_id == "20260105T000000Z" and run.dataset_key == "My-Shop" == dataset_key("/x/My Shop!")
    assert run.load_id == "My-Shop:20260105T000000Z"
    assert RunContext.for_run("groceries", None, "manual__2026-01-05T00:00:00+00:00").release_id == (
        "manual__2026-01-05T00-00-00-00-00"
    )


def test_long_names_and_run_ids_are_refused_or_keep_their_load_ids_apart():
    """Dataset names of 63+ characters once gave every run the same (truncated) load id."""
    with pytest.raises(ContractError, match="has 80 characters, at most 40 .* give the folder a shorter name"):
        RunContext("x" * 80, "r")
    with pytest.raises(ContractError, match="release id of 129 characters; it must have 1 to 100"):
        RunContext.for_run("shop", None, "r" * 129)
    longest = "s" * 40
    runs = [RunContext(longest, f"manual__2026-01-05T00-00-00-{i:06d}-00-00") for i in range(2)]
    assert runs[0].load_id != runs[1].load_id
    assert all(len(r.load_id) == 64 and r.load_id.startswith(longest + ":") for r in runs)
    assert RunContext(longest, "r" * 100).load_id != RunContext(longest, "r" * 99 + "s").load_id


def test_a_folder_never_takes_a_built_in_datasets_key():
    assert dataset_key("groceries") == "groceries" and dataset_key("online-retail") == "online-retail"
    assert dataset_key("/data/groceries") == "groceries-folder" == dataset_key("/x/Groceries").lower()
    assert dataset_key("/data/online retail/") == "online-retail-folder"
    assert dataset_key(dataset_key("/data/groceries")) == "groceries-folder"  # stable: the gate keys by it again
    with pytest.raises(ContractError, match="no letter or digit"):
        dataset_key("/data/!!!")


def test_a_release_carries_every_file_but_the_run_only_working_copies(tmp_path):
    artifacts = RunContext("groceries", "r1", work_root=tmp_path).artifacts
    for name in (RunArtifacts.METRICS, RunArtifacts.TRAINING, RunArtifacts.EMBEDDINGS, RunArtifacts.SPLIT):
        artifacts.write_json(name, {})
    released = {p.relative_to(artifacts.folder).as_posix() for p in artifacts.release_files()}
    assert released == {RunArtifacts.METRICS, RunArtifacts.TRAINING}  # not run.json, embeddings or the split


def test_a_folder_names_its_run_and_an_older_folder_its_dataset(tmp_path):
    run = RunContext("/data/My Shop", "r1", work_root=tmp_path)
    run.prepare()
    assert RunContext.from_folder(run.folder) == RunContext("/data/My Shop", "r1", tmp_path.resolve())
    older = tmp_path / "groceries" / "20250101T000000Z"
    older.mkdir(parents=True)  # made before runs recorded run.json
    assert RunContext.from_folder(older, "groceries").release_id == "20250101T000000Z"
    with pytest.raises(ValueError, match="is not where run"):
        RunContext.from_folder(older, "online-retail")
