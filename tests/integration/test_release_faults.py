"""Faults while publishing, on the real servers: the S3 API server stops, MySQL drops the connection.

The S3 server is reached through a small TCP proxy that the test can stop and start
again, so from the pipeline's side the server goes away mid-upload while the objects
already stored stay on the (moto) server behind it, as they would on MinIO or S3. The
MySQL fault is the server killing the loading connection (``KILL CONNECTION``): the
client sees "Lost connection to MySQL server during query", as when the server goes
away.

The run folders hold what ``publish`` reads -- training.json, metrics.json,
decision.json, recommendations.parquet and a large model file -- written here as test
input; ``publish`` itself is the pipeline's own, unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tcp_proxy import TcpProxy

from recsys_pipeline import storage, warehouse
from recsys_pipeline.release.champion import (
    ChampionMoved,
    champion_pointer,
    read_champion_tagged,
    read_history,
    record_history,
    write_champion,
)
from recsys_pipeline.release.layout import ReleaseError, champion_key, release_prefix
from recsys_pipeline.release.publish import publish
from recsys_pipeline.release.recommendations_table import load_recommendations, loaded_release, replace_recommendations
from recsys_pipeline.release.rollback import rollback
from recsys_pipeline.release.verify import check_complete
from recsys_pipeline.release.writer_lock import champion_lock, champion_lock_name
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import mysql_admin_settings

pytestmark = pytest.mark.integration

DATASET = "faulty-shop"


def run_folder(root: Path, release_id: str, model_bytes: int, dataset: str = DATASET) -> RunContext:
    """A run whose folder holds what ``publish`` reads, for a promoted model."""
    run = RunContext(dataset, release_id, work_root=root)
    folder = run.artifacts.folder
    (folder / "two_tower" / "saved_model" / "variables").mkdir(parents=True, exist_ok=True)
    metrics = {
        "recall@10": 0.2,
        "ndcg@10": 0.1,
        "recall@20": 0.3,
        "ndcg@20": 0.15,
        "hit_rate@20": 0.5,
        "map@20": 0.1,
        "coverage@10": 0.2,
    }
    (folder / "two_tower" / "training.json").write_text(
        json.dumps(
            {
                "release_id": release_id,
                "model_version": f"two_tower-{release_id}",
                "config": {"epochs": 1},
                "code_version": {"git": "test"},
                "trained_at": "2026-01-05T00:00:00+00:00",
                "examples": 100,
                "best_epoch": 1,
            }
        )
    )
    (folder / "metrics.json").write_text(json.dumps({"models": {"two_tower": metrics}, "protocol": "test"}))
    (folder / "decision.json").write_text(json.dumps({"promote": True, "reasons": ["pass: test"]}))
    (folder / "two_tower" / "saved_model" / "variables" / "variables.data-00000-of-00001").write_bytes(
        os.urandom(model_bytes)
    )
    pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "rank": [1, 2],
            "item_id": ["a", "b"],
            "score": [0.9, 0.8],
            "model_version": f"two_tower-{release_id}",
            "generated_at": pd.Timestamp("2026-01-05"),
        }
    ).to_parquet(folder / RunArtifacts.RECOMMENDATIONS, index=False)
    return run


@pytest.fixture
def proxy(s3_test_settings):
    port = int(s3_test_settings.endpoint_url.rsplit(":", 1)[1])
    tcp = TcpProxy(port)
    tcp.start()
    yield tcp
    tcp.stop()


def test_the_s3_server_stopping_mid_publish_leaves_the_previous_champion_and_the_next_run_completes(
    s3_test_settings, mysql_test_settings, proxy, tmp_path
):
    through_proxy = replace(s3_test_settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
    s3 = storage.client(s3_test_settings)  # the test's own view, straight to the server
    bucket = s3_test_settings.bucket
    first = publish(through_proxy, run_folder(tmp_path, "20260105T000000Z-aaaa", 1024), "data-1", mysql_test_settings)
    pointer = storage.get_json(s3, bucket, champion_key(s3_test_settings, DATASET))
    assert pointer["release_id"] == first["release_id"]

    second_run = run_folder(tmp_path, "20260112T000000Z-bbbb", 64 * 1024 * 1024)  # a multipart upload
    second_prefix = release_prefix(s3_test_settings, DATASET, "20260112T000000Z-bbbb")
    outcome: dict = {}

    def publish_second():
        try:
            outcome["result"] = publish(through_proxy, second_run, "data-2", mysql_test_settings)
        except Exception as error:  # the failure is what the test looks at
            outcome["error"] = error

    worker = threading.Thread(target=publish_second)
    worker.start()
    deadline = time.monotonic() + 60
    while not storage.list_keys(s3, bucket, second_prefix) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert storage.list_keys(s3, bucket, second_prefix), "the second release never started uploading"
    proxy.stop()  # the server goes away in the middle of the release
    worker.join(300)
    assert "error" in outcome, f"publishing went on without the server: {outcome}"

    assert storage.get_json(s3, bucket, champion_key(s3_test_settings, DATASET)) == pointer
    assert storage.get_json(s3, bucket, second_prefix + "manifest.json") is None
    check_complete(s3, s3_test_settings, DATASET, first["release_id"])  # the champion is whole
    with pytest.raises(ReleaseError, match="no manifest"):
        check_complete(s3, s3_test_settings, DATASET, "20260112T000000Z-bbbb")

    proxy.start()  # the server is back: the retried run completes
    second = publish(through_proxy, second_run, "data-2", mysql_test_settings)
    pointer = storage.get_json(s3, bucket, champion_key(s3_test_settings, DATASET))
    assert pointer["release_id"] == second["release_id"] == "20260112T000000Z-bbbb"
    manifest, _ = check_complete(s3, s3_test_settings, DATASET, second["release_id"])
    assert sorted(storage.list_keys(s3, bucket, second_prefix)) == sorted(
        [o["key"] for o in manifest["objects"]] + [second_prefix + "manifest.json"]
    )
    assert [e["release_id"] for e in read_history(s3, s3_test_settings, DATASET)] == [
        first["release_id"],
        second["release_id"],
    ]


def _recommendations(model: str, users: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user_id": np.repeat([f"u{u}" for u in range(users)], 20),
            "rank": np.tile(np.arange(1, 21, dtype=np.int16), users),
            "item_id": [f"i{i}" for i in rng.integers(0, 5000, users * 20)],
            "score": rng.random(users * 20).astype(np.float32),
            "model_version": model,
            "generated_at": pd.Timestamp("2026-01-05"),
        }
    )


def _table_state(settings) -> tuple:
    with warehouse.connect(settings) as conn:
        return tuple(
            warehouse.read_frame(
                conn, "SELECT model_version, COUNT(*) AS n FROM recommendations GROUP BY model_version"
            ).itertuples(index=False)
        )


def test_mysql_going_away_during_the_recommendations_load_leaves_the_old_table_and_the_retry_completes(
    mysql_test_settings,
):
    replace_recommendations(mysql_test_settings, _recommendations("old-model", 1000))
    before = _table_state(mysql_test_settings)
    assert before == (("old-model", 20_000),)
    admin = mysql_admin_settings()
    killed: list[int] = []
    statements: list[str] = []

    def kill_the_load():
        deadline = time.monotonic() + 120
        with warehouse.connect(admin, database="") as conn:
            while time.monotonic() < deadline and not killed:
                frame = warehouse.read_frame(
                    conn,
                    "SELECT id, info FROM information_schema.processlist WHERE user = %s AND info LIKE %s",
                    (mysql_test_settings.user, "LOAD DATA%recommendations__new%"),
                )
                if not frame.empty:
                    conn.cursor().execute(f"KILL CONNECTION {int(frame['id'].iloc[0])}")
                    killed.append(int(frame["id"].iloc[0]))
                    statements.append(str(frame["info"].iloc[0]))
                time.sleep(0.01)

    killer = threading.Thread(target=kill_the_load)
    killer.start()
    with pytest.raises(
        Exception, match="Lost connection|server has gone away|Query execution was interrupted|2013|2006|1927"
    ):
        replace_recommendations(mysql_test_settings, _recommendations("new-model", 40_000))
    killer.join()
    assert killed, "the load finished before it could be interrupted"
    # the writer loaded through a staging table of its own, never a shared recommendations__new
    assert re.search(r"recommendations__new_[0-9a-f]{12}", statements[0]), statements[0]
    assert _table_state(mysql_test_settings) == before, "the live table must be untouched and queryable"

    loaded = replace_recommendations(mysql_test_settings, _recommendations("new-model", 40_000))  # the retry
    assert loaded["rows"] == 800_000 and _table_state(mysql_test_settings) == (("new-model", 800_000),)
    with warehouse.connect(mysql_test_settings) as conn:
        previous = warehouse.read_frame(
            conn, "SELECT model_version, COUNT(*) AS n FROM recommendations__previous GROUP BY model_version"
        )
    assert tuple(previous.itertuples(index=False)) == before  # kept for one release, to roll back
    with warehouse.connect(mysql_test_settings) as conn:  # the killed writer's staging table is gone too
        leftovers = warehouse.read_frame(
            conn,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_name LIKE %s",
            (mysql_test_settings.database, "recommendations\\_\\_new%"),
        )
    assert leftovers.empty, leftovers


# --- one writer of the champion and of `recommendations` ----------------------------------------


def _promoted(tmp_path: Path, dataset: str, release_id: str, mysql, s3_settings, model_bytes: int = 1024):
    """A training run's publish and load, one after the other (as the DAG runs them)."""
    run = run_folder(tmp_path, release_id, model_bytes, dataset)
    published = publish(s3_settings, run, "data", mysql)
    load_recommendations(mysql, run.artifacts, s3_settings)
    return run, published


def _in_thread(name: str, finished: list[str], outcome: dict, function, *args) -> threading.Thread:
    def work():
        try:
            outcome[name] = function(*args)
        except Exception as error:  # what the test looks at
            outcome[name] = error
        finished.append(name)

    worker = threading.Thread(target=work)
    worker.start()
    return worker


def _wait_for_keys(s3, bucket: str, prefix: str) -> None:
    deadline = time.monotonic() + 60
    while not storage.list_keys(s3, bucket, prefix) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert storage.list_keys(s3, bucket, prefix), f"nothing was uploaded under {prefix}"


def _consistent_champion(s3, s3_settings, mysql, dataset: str) -> str:
    """The release that the pointer, the last history event and MySQL's table all name."""
    pointer = storage.get_json(s3, s3_settings.bucket, champion_key(s3_settings, dataset))
    history = read_history(s3, s3_settings, dataset)
    assert history[-1]["release_id"] == pointer["release_id"], (pointer, history[-1])
    assert loaded_release(mysql) == pointer["release_id"]
    assert {model for model, _ in _table_state(mysql)} == {pointer["model_version"]}
    check_complete(s3, s3_settings, dataset, pointer["release_id"])
    return pointer["release_id"]


def _third_release_publishing(tmp_path: Path, dataset: str, tag: str, mysql, s3_settings):
    """Releases <tag>0 and <tag>1 promoted in turn, then <tag>2 (64 MB) publishing in a thread, mid-upload."""
    for week, number in (("05", 0), ("12", 1)):
        _promoted(tmp_path, dataset, f"202601{week}T000000Z-{tag}{number}", mysql, s3_settings)
    training = run_folder(tmp_path, f"20260119T000000Z-{tag}2", 64 * 1024 * 1024, dataset)
    finished: list[str] = []
    outcome: dict = {}
    publishing = _in_thread("publish", finished, outcome, publish, s3_settings, training, "d", mysql)
    s3 = storage.client(s3_settings)
    _wait_for_keys(s3, s3_settings.bucket, release_prefix(s3_settings, dataset, f"20260119T000000Z-{tag}2"))
    return training, publishing, finished, outcome


def test_a_rollback_started_while_a_training_run_publishes_waits_and_the_training_load_says_why(
    s3_test_settings, mysql_test_settings, tmp_path
):
    dataset = "race-shop"
    s3 = storage.client(s3_test_settings)
    training, publishing, finished, outcome = _third_release_publishing(
        tmp_path, dataset, "r", mysql_test_settings, s3_test_settings
    )
    rolling = _in_thread(  # the operator rolls back while the release uploads
        "rollback", finished, outcome, rollback, s3_test_settings, mysql_test_settings, dataset, "20260105T000000Z-r0"
    )
    publishing.join(300)
    rolling.join(300)
    assert finished == ["publish", "rollback"], outcome  # the rollback waited for the publish's lock
    assert outcome["publish"]["champion_pointer"], outcome
    assert outcome["rollback"]["rolled_back_from"] == "20260119T000000Z-r2"

    # the training run's load comes after the rollback: it loses, says why, and MySQL keeps r0's rows
    with pytest.raises(ChampionMoved, match=r"champion of race-shop is now 20260105T000000Z-r0 \(rollback at"):
        load_recommendations(mysql_test_settings, training.artifacts, s3_test_settings)
    assert _consistent_champion(s3, s3_test_settings, mysql_test_settings, dataset) == "20260105T000000Z-r0"
    assert [(e["event"], e["release_id"]) for e in read_history(s3, s3_test_settings, dataset)] == [
        ("promote", "20260105T000000Z-r0"),
        ("promote", "20260112T000000Z-r1"),
        ("promote", "20260119T000000Z-r2"),
        ("rollback", "20260105T000000Z-r0"),
    ]


def test_a_publish_that_starts_after_a_rollback_promotes_over_it_in_order(
    s3_test_settings, mysql_test_settings, tmp_path
):
    dataset = "order-shop"
    s3 = storage.client(s3_test_settings)
    _promoted(tmp_path, dataset, "20260105T000000Z-o0", mysql_test_settings, s3_test_settings, 64 * 1024 * 1024)
    _promoted(tmp_path, dataset, "20260112T000000Z-o1", mysql_test_settings, s3_test_settings)
    finished: list[str] = []
    outcome: dict = {}
    lock = champion_lock_name(mysql_test_settings, s3_test_settings, dataset)
    rolling = _in_thread(  # checking o0's 64 MB keeps the rollback in its lock for a while
        "rollback", finished, outcome, rollback, s3_test_settings, mysql_test_settings, dataset, "20260105T000000Z-o0"
    )
    with warehouse.connect(mysql_test_settings) as conn:
        deadline = time.monotonic() + 60
        while warehouse.read_frame(conn, "SELECT IS_USED_LOCK(%s) AS c", (lock,))["c"].isna().all():
            assert time.monotonic() < deadline and rolling.is_alive(), f"the rollback never took its lock: {outcome}"
            time.sleep(0.01)
    _promoted(tmp_path, dataset, "20260119T000000Z-o2", mysql_test_settings, s3_test_settings)  # waits, then wins
    rolling.join(300)
    assert finished == ["rollback"] and outcome["rollback"]["champion"] == "20260105T000000Z-o0"
    assert _consistent_champion(s3, s3_test_settings, mysql_test_settings, dataset) == "20260119T000000Z-o2"
    assert [(e["event"], e.get("from")) for e in read_history(s3, s3_test_settings, dataset)][-2:] == [
        ("rollback", "20260112T000000Z-o1"),
        ("promote", "20260105T000000Z-o0"),  # the promotion replaced the rolled-back champion, not o1
    ]


def test_a_writer_without_the_lock_moving_the_pointer_mid_publish_makes_the_publish_refuse(
    s3_test_settings, mysql_test_settings, tmp_path
):
    """Another deployment (or a lost lock connection) writes the pointer: the compare-and-swap refuses."""
    dataset, bucket = "cas-shop", s3_test_settings.bucket
    s3 = storage.client(s3_test_settings)
    key = champion_key(s3_test_settings, dataset)
    _, publishing, _, outcome = _third_release_publishing(tmp_path, dataset, "c", mysql_test_settings, s3_test_settings)
    manifest, manifest_object = check_complete(s3, s3_test_settings, dataset, "20260105T000000Z-c0")
    theirs = champion_pointer(manifest, manifest_object, "2026-01-20T00:00:00+00:00", written_by="elsewhere")
    storage.put_json(s3, bucket, key, theirs)  # no lock, no condition: as an older version would
    publishing.join(300)

    assert isinstance(outcome["publish"], ChampionMoved), outcome
    assert "moved from 20260112T000000Z-c1 to 20260105T000000Z-c0" in str(outcome["publish"])
    assert storage.get_json(s3, bucket, key) == theirs  # left as the other writer set it
    check_complete(s3, s3_test_settings, dataset, "20260119T000000Z-c2")  # the release itself is whole


def test_the_dataset_s_first_champion_is_written_only_where_there_is_none(
    s3_test_settings, mysql_test_settings, tmp_path
):
    dataset = "first-shop"
    s3 = storage.client(s3_test_settings)
    key = champion_key(s3_test_settings, dataset)
    with champion_lock(mysql_test_settings, s3_test_settings, dataset, "test") as lock:
        read = read_champion_tagged(s3, s3_test_settings, dataset)
        assert read == (None, None)
        storage.put_json(s3, s3_test_settings.bucket, key, {"release_id": "someone-else"})  # appears meanwhile
        with pytest.raises(ChampionMoved, match="moved from none to someone-else"):
            write_champion(s3, s3_test_settings, dataset, {"release_id": "mine"}, read, lock, "test write")
    assert storage.get_json(s3, s3_test_settings.bucket, key) == {"release_id": "someone-else"}


def test_the_server_itself_refuses_a_pointer_write_whose_etag_moved(s3_test_settings):
    """The S3 server's own condition (If-Match / If-None-Match), which guards writers that skip the lock."""
    s3 = storage.client(s3_test_settings)
    bucket, key = s3_test_settings.bucket, f"{s3_test_settings.prefix}/conditional/champion.json"
    storage.put_json(s3, bucket, key, {"v": 1}, if_absent=True)
    with pytest.raises(storage.PreconditionFailed):
        storage.put_json(s3, bucket, key, {"v": 2}, if_absent=True)
    _, tag = storage.get_json_tagged(s3, bucket, key)
    storage.put_json(s3, bucket, key, {"v": 3}, if_match=tag)
    with pytest.raises(storage.PreconditionFailed):
        storage.put_json(s3, bucket, key, {"v": 4}, if_match=tag)  # the ETag read before moved
    assert storage.get_json(s3, bucket, key) == {"v": 3}


def test_history_events_written_at_once_are_all_kept(s3_test_settings):
    """Writers that skip the lock (or two deployments) recording at the same moment lose nothing."""
    dataset = "history-shop"
    s3 = storage.client(s3_test_settings)
    barrier = threading.Barrier(16)

    def record(n: int) -> None:
        barrier.wait()
        record_history(s3, s3_test_settings, dataset, {"event": "promote", "release_id": f"r{n}", "at": "now"})

    workers = [threading.Thread(target=record, args=(n,)) for n in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sorted(e["release_id"] for e in read_history(s3, s3_test_settings, dataset)) == sorted(
        f"r{n}" for n in range(16)
    )


# --- releases are immutable; a rerun of a promoted release id ------------------------------------


def servable_run(root: Path, release_id: str, dataset: str, seed: int) -> RunContext:
    """A run folder with a real (small) SavedModel, its recommendations, and a 64 MB object uploaded last."""
    import scipy.sparse as sp
    import tensorflow as tf

    from ml.serving import RecommenderModule, export_saved_model, load_saved_model

    run = run_folder(root, release_id, 1, dataset)
    folder = run.artifacts.folder
    shutil.rmtree(folder / RunArtifacts.SAVED_MODEL)
    rng = np.random.default_rng(seed)
    users = np.array(["u1", "u2", "u3"], dtype=object)
    items = np.array([f"i{i}" for i in range(50)], dtype=object)
    module = RecommenderModule(
        users,
        items,
        rng.normal(size=(3, 8)).astype(np.float32),
        rng.normal(size=(50, 8)).astype(np.float32),
        sp.csr_matrix((3, 50), dtype=np.float32),
        rng.random(50).astype(np.float32),
        f"two_tower-{release_id}",
    )
    model = load_saved_model(export_saved_model(module, folder / RunArtifacts.SAVED_MODEL))
    answer = model.recommend(user_id=tf.constant(users.astype(str)), k=tf.constant(10, tf.int32))
    pd.DataFrame(
        {
            "user_id": np.repeat(users.astype(str), 10),
            "rank": np.tile(np.arange(1, 11, dtype=np.int16), 3),
            "item_id": answer["item_ids"].numpy().astype(str).ravel(),
            "score": answer["scores"].numpy().ravel(),
            "model_version": f"two_tower-{release_id}",
            "generated_at": pd.Timestamp("2026-01-05"),
        }
    ).to_parquet(folder / RunArtifacts.RECOMMENDATIONS, index=False)
    # large enough for a multipart upload that the test can cut; sorted after every other object
    (folder / "two_tower" / "zz_large_object.bin").write_bytes(os.urandom(64 * 1024 * 1024))
    return run


def test_a_rerun_of_the_champion_s_release_id_never_touches_it_and_the_champion_still_verifies(
    s3_test_settings, mysql_test_settings, proxy, tmp_path
):
    from recsys_pipeline.release.verify import verify

    dataset, release_id, bucket = "rerun-shop", "20260105T000000Z-v1", s3_test_settings.bucket
    s3 = storage.client(s3_test_settings)
    first = servable_run(tmp_path / "first", release_id, dataset, seed=1)
    publish(s3_test_settings, first, "d", mysql_test_settings)
    load_recommendations(mysql_test_settings, first.artifacts, s3_test_settings)
    assert verify(s3_test_settings, dataset)["matches_published"]
    pointer = storage.get_json(s3, bucket, champion_key(s3_test_settings, dataset))

    # the same bytes again (a retried task): proven identical, nothing rewritten, the pointer as it was
    again = publish(s3_test_settings, first, "d", mysql_test_settings)
    assert again["reused"] and again["release_id"] == release_id
    assert storage.get_json(s3, bucket, champion_key(s3_test_settings, dataset)) == pointer
    assert len(read_history(s3, s3_test_settings, dataset)) == 1

    # a retrained model under the same release id, and the S3 server drops in the middle of it
    retrained = servable_run(tmp_path / "retrained", release_id, dataset, seed=2)
    through_proxy = replace(s3_test_settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
    outcome: dict = {}
    worker = _in_thread("publish", [], outcome, publish, through_proxy, retrained, "d", mysql_test_settings)
    releases = f"{s3_test_settings.prefix}/{dataset}/releases/"
    deadline = time.monotonic() + 120
    while not s3.list_multipart_uploads(Bucket=bucket, Prefix=releases).get("Uploads"):
        assert time.monotonic() < deadline and worker.is_alive(), f"no multipart upload was cut: {outcome}"
        time.sleep(0.01)
    proxy.stop()
    worker.join(300)
    assert isinstance(outcome["publish"], Exception), outcome
    assert storage.get_json(s3, bucket, champion_key(s3_test_settings, dataset)) == pointer
    checked = verify(s3_test_settings, dataset)  # every sha256 of the champion still matches its manifest
    assert checked["release_id"] == release_id and checked["matches_published"]

    proxy.start()  # the retry completes, as a new attempt beside the champion's release
    second = publish(through_proxy, retrained, "d", mysql_test_settings)
    assert second["release_id"] == f"{release_id}-attempt2" and second["attempt"] == 2 and not second["reused"]
    load_recommendations(mysql_test_settings, retrained.artifacts, s3_test_settings)
    assert verify(s3_test_settings, dataset)["release_id"] == f"{release_id}-attempt2"
    assert verify(s3_test_settings, dataset, release_id=release_id)["matches_published"]  # the first, untouched
    assert _consistent_champion(s3, s3_test_settings, mysql_test_settings, dataset) == f"{release_id}-attempt2"


# --- the publish task retried by Airflow's own retry loop -----------------------------------------

RETRY_DAG = """
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from recsys_pipeline.orchestration.training_tasks import load_recommendations, publish_release


@task
def features_ready() -> dict:
    return {{"data_version": "data-retry"}}


@task
def promotion_gate() -> dict:
    return {{"promote": True, "reasons": ["pass: test"]}}


@dag(
    dag_id="{dag_id}",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={{"retries": 3, "retry_delay": timedelta(seconds=2)}},
    params={{"dataset": "{dataset}", "dry_run": False}},
)
def publish_with_retries():
    load_recommendations(publish_release(features_ready(), promotion_gate()))


publish_with_retries()
"""


def _task_state(dag_id: str, task_id: str) -> tuple[str | None, int]:
    import sqlite3

    from conftest import TEST_AIRFLOW_HOME

    with contextlib.closing(sqlite3.connect(TEST_AIRFLOW_HOME / "airflow.db", timeout=30)) as db:
        row = db.execute(
            "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND task_id = ?", (dag_id, task_id)
        ).fetchone()
    return (row[0], row[1]) if row else (None, 0)


def test_airflow_retries_the_publish_task_after_the_s3_server_drops_and_the_release_completes(
    s3_test_settings, mysql_test_settings, proxy, airflow_home, tmp_path
):
    from conftest import PROJECT_ROOT, pipeline_environment

    dataset, release_id, bucket = "retry-shop", "20260302T000000Z", s3_test_settings.bucket
    dag_id = f"recsys_publish_retry_{uuid.uuid4().hex[:8]}"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(RETRY_DAG.format(dag_id=dag_id, dataset=dataset))
    run_folder(tmp_path / "work", release_id, 64 * 1024 * 1024, dataset)  # what training left for this run
    through_proxy = replace(s3_test_settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
    env = pipeline_environment(
        mysql_test_settings, through_proxy, tmp_path / "work", tmp_path, AIRFLOW__CORE__DAGS_FOLDER=str(dags)
    )
    s3 = storage.client(s3_test_settings)
    prefix = release_prefix(s3_test_settings, dataset, release_id)
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "dags", "test", dag_id, "2026-03-02"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not storage.list_keys(s3, bucket, prefix):
            assert time.monotonic() < deadline and process.poll() is None, "".join(output)[-3000:]
            time.sleep(0.02)
        proxy.stop()  # the S3 server goes away in the middle of the first try
        while _task_state(dag_id, "publish_release")[0] != "up_for_retry":
            assert time.monotonic() < deadline and process.poll() is None, "".join(output)[-3000:]
            time.sleep(0.2)
        proxy.start()  # back before Airflow's retry delay is over
        assert process.wait(600) == 0, "".join(output)[-5000:]
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)

    assert _task_state(dag_id, "publish_release") == ("success", 2), "".join(output)[-3000:]
    assert _task_state(dag_id, "load_recommendations")[0] == "success"
    manifest, _ = check_complete(s3, s3_test_settings, dataset, release_id)  # the retry wrote the same prefix
    assert sorted(storage.list_keys(s3, bucket, prefix)) == sorted(
        [o["key"] for o in manifest["objects"]] + [prefix + "manifest.json"]
    )
    assert _consistent_champion(s3, s3_test_settings, mysql_test_settings, dataset) == release_id
    assert [e["release_id"] for e in read_history(s3, s3_test_settings, dataset)] == [release_id]
