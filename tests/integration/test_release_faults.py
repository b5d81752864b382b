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
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_pipeline import storage, warehouse
from recsys_pipeline.release.layout import ReleaseError, champion_key, release_prefix
from recsys_pipeline.release.publish import publish
from recsys_pipeline.release.recommendations_table import replace_recommendations
from recsys_pipeline.release.verify import check_complete
from recsys_pipeline.run import RunArtifacts, RunContext
from recsys_pipeline.settings import mysql_admin_settings

pytestmark = pytest.mark.integration

DATASET = "faulty-shop"


class TcpProxy:
    """Forward 127.0.0.1:<port> to a target; ``stop`` drops the listener and every open connection."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def run_folder(root: Path, release_id: str, model_bytes: int) -> RunContext:
    """A run whose folder holds what ``publish`` reads, for a promoted model."""
    run = RunContext(DATASET, release_id, work_root=root)
    folder = run.artifacts.folder
    (folder / "two_tower" / "saved_model" / "variables").mkdir(parents=True)
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
    s3_test_settings, proxy, tmp_path
):
    through_proxy = replace(s3_test_settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
    s3 = storage.client(s3_test_settings)  # the test's own view, straight to the server
    bucket = s3_test_settings.bucket
    first = publish(through_proxy, run_folder(tmp_path, "20260105T000000Z-aaaa", 1024), "data-1")
    pointer = storage.get_json(s3, bucket, champion_key(s3_test_settings, DATASET))
    assert pointer["release_id"] == first["release_id"]

    second_run = run_folder(tmp_path, "20260112T000000Z-bbbb", 64 * 1024 * 1024)  # a multipart upload
    second_prefix = release_prefix(s3_test_settings, DATASET, "20260112T000000Z-bbbb")
    outcome: dict = {}

    def publish_second():
        try:
            outcome["result"] = publish(through_proxy, second_run, "data-2")
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
    second = publish(through_proxy, second_run, "data-2")
    pointer = storage.get_json(s3, bucket, champion_key(s3_test_settings, DATASET))
    assert pointer["release_id"] == second["release_id"] == "20260112T000000Z-bbbb"
    manifest, _ = check_complete(s3, s3_test_settings, DATASET, second["release_id"])
    assert sorted(storage.list_keys(s3, bucket, second_prefix)) == sorted(
        [o["key"] for o in manifest["objects"]] + [second_prefix + "manifest.json"]
    )
    history = (
        s3.get_object(Bucket=bucket, Key=f"{s3_test_settings.prefix}/{DATASET}/champion_history.jsonl")["Body"]
        .read()
        .decode()
    )
    assert [json.loads(line)["release_id"] for line in history.splitlines()] == [
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

    def kill_the_load():
        deadline = time.monotonic() + 120
        with warehouse.connect(admin, database="") as conn:
            while time.monotonic() < deadline and not killed:
                frame = warehouse.read_frame(
                    conn,
                    "SELECT id FROM information_schema.processlist WHERE user = %s AND info LIKE %s",
                    (mysql_test_settings.user, "LOAD DATA%recommendations__new%"),
                )
                if not frame.empty:
                    conn.cursor().execute(f"KILL CONNECTION {int(frame['id'].iloc[0])}")
                    killed.append(int(frame["id"].iloc[0]))
                time.sleep(0.01)

    killer = threading.Thread(target=kill_the_load)
    killer.start()
    with pytest.raises(
        Exception, match="Lost connection|server has gone away|Query execution was interrupted|2013|2006|1927"
    ):
        replace_recommendations(mysql_test_settings, _recommendations("new-model", 40_000))
    killer.join()
    assert killed, "the load finished before it could be interrupted"
    assert _table_state(mysql_test_settings) == before, "the live table must be untouched and queryable"

    loaded = replace_recommendations(mysql_test_settings, _recommendations("new-model", 40_000))  # the retry
    assert loaded["rows"] == 800_000 and _table_state(mysql_test_settings) == (("new-model", 800_000),)
    with warehouse.connect(mysql_test_settings) as conn:
        previous = warehouse.read_frame(
            conn, "SELECT model_version, COUNT(*) AS n FROM recommendations__previous GROUP BY model_version"
        )
    assert tuple(previous.itertuples(index=False)) == before  # kept for one release, to roll back
