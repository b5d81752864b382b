"""The real-time service over real HTTP, on the real S3 API server and MariaDB.

Releases here are made of the pipeline's own parts -- ``ml.serving.RecommenderModule``
over an (untrained) ``TwoTowerModel``'s towers, exported as the training run exports it,
and a recommendations table computed by that SavedModel -- uploaded with a manifest and
a pointer in the layout ``publish`` writes. Small and fast, so every behaviour of the
service is checked here; tests/integration/test_training_dag.py serves a trained champion.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from tcp_proxy import TcpProxy

from recsys_pipeline import storage, warehouse
from recsys_pipeline.ingest import online_events
from recsys_pipeline.release.layout import champion_key, manifest_key, release_prefix
from recsys_pipeline.run import RunArtifacts
from recsys_pipeline.serving import api_keys
from recsys_pipeline.serving.champion import NoChampion, load_champion
from recsys_pipeline.serving.server import build_service, serving_settings

from conftest import _free_port

pytestmark = pytest.mark.integration

DATASET = "serving-shop"
N_USERS, N_ITEMS = 60, 400
USERS = np.array([f"shopper-{i}" for i in range(N_USERS)], dtype=object)
ITEMS = np.array([f"item-{i}" for i in range(N_ITEMS)], dtype=object)


def _module(seed: int, version: str):
    """The pipeline's serving module over an untrained two-tower model's towers (random weights, fixed seed)."""
    import tensorflow as tf

    from ml.serving import RecommenderModule
    from ml.two_tower import TwoTowerConfig, TwoTowerModel, pad_histories

    tf.keras.utils.set_random_seed(seed)
    config = TwoTowerConfig(embedding_dim=16, history_length=10, user_profile=False, item_attributes=False)
    model = TwoTowerModel(N_USERS, N_ITEMS, np.zeros(N_ITEMS, np.float32), config)
    rng = np.random.default_rng(seed)
    seen = sp.random(N_USERS, N_ITEMS, density=0.02, format="csr", random_state=seed, dtype=np.float32)
    seen.data[:] = 1
    histories = [row.indices for row in seen]
    padded = pad_histories(histories, config.history_length)
    item_vectors = model.item_tower(tf.range(1, N_ITEMS + 1)).numpy()
    user_vectors = model.user_tower(tf.zeros(N_USERS, tf.int32), tf.constant(padded)).numpy()
    return RecommenderModule(
        USERS,
        ITEMS,
        user_vectors,
        item_vectors,
        seen,
        rng.integers(1, 100, N_ITEMS).astype(np.float32),
        version,
        user_tower=model.user_tower,
        history_length=config.history_length,
        histories=padded,
    )


def publish_release(s3_settings, root: Path, release_id: str, seed: int, top_k: int = 20) -> dict:
    """Export, table, upload, manifest, pointer: a complete release, the champion when this returns."""
    import tensorflow as tf

    from ml.serving import export_saved_model

    folder = root / release_id
    module = _module(seed, f"two_tower-{release_id}")
    export_saved_model(module, folder / RunArtifacts.SAVED_MODEL)
    answer = module.recommend(user_id=tf.constant(USERS.astype(str)), k=tf.constant(top_k, tf.int32))
    pd.DataFrame(
        {
            "user_id": np.repeat(USERS.astype(str), top_k),
            "rank": np.tile(np.arange(1, top_k + 1), N_USERS),
            "item_id": [i.decode() for i in answer["item_ids"].numpy().ravel()],
            "score": answer["scores"].numpy().ravel(),
        }
    ).to_parquet(folder / RunArtifacts.RECOMMENDATIONS, index=False)
    s3 = storage.client(s3_settings)
    prefix = release_prefix(s3_settings, DATASET, release_id)
    objects = [
        storage.upload_file(s3, s3_settings.bucket, prefix + path.relative_to(folder).as_posix(), path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    manifest = {
        "release_id": release_id,
        "dataset": DATASET,
        "model_version": f"two_tower-{release_id}",
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
    }
    stored = storage.put_json(s3, s3_settings.bucket, manifest_key(s3_settings, DATASET, release_id), manifest)
    point_champion_at(s3_settings, release_id, stored)
    return {"module": module, "folder": folder}


def point_champion_at(s3_settings, release_id: str, manifest_object=None) -> None:
    s3 = storage.client(s3_settings)
    key = manifest_key(s3_settings, DATASET, release_id)
    if manifest_object is None:
        size, checksum = storage.download_sha256(s3, s3_settings.bucket, key)
        manifest_object = storage.StoredObject(key, size, checksum)
    pointer = {"release_id": release_id, "manifest": key, "manifest_sha256": manifest_object.sha256}
    storage.put_json(s3, s3_settings.bucket, champion_key(s3_settings, DATASET), pointer)


class RunningService:
    """The service under uvicorn in a thread, on a free port, with an API key; real HTTP to it."""

    def __init__(self, mysql, s3_settings, tmp: Path, dataset: str = DATASET):
        import uvicorn

        settings = serving_settings(
            dataset_key=dataset,
            port=_free_port(),
            poll_seconds=0.5,
            cache_dir=tmp / "cache",
            spool_path=tmp / "spool.jsonl",
        )
        self.key = api_keys.create_key(mysql, "tests").key
        self.service = build_service(settings, mysql, s3_settings)
        self.server = uvicorn.Server(
            uvicorn.Config(self.service.app, host="127.0.0.1", port=settings.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{settings.port}"
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        self.client = httpx.Client(base_url=self.url, headers={api_keys.HEADER: self.key}, timeout=10)

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.service.stop()


@pytest.fixture(scope="module")
def releases(s3_test_settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    first = publish_release(s3_test_settings, root, "20260101T000000Z", seed=1)
    return {"root": root, "first": first}


@pytest.fixture(scope="module")
def service(releases, mysql_test_settings, s3_test_settings, tmp_path_factory):
    running = RunningService(mysql_test_settings, s3_test_settings, tmp_path_factory.mktemp("serving"))
    yield running
    running.close()


def _items(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def test_a_known_shopper_gets_the_published_list_then_their_new_events_change_it(service, releases):
    published = pd.read_parquet(releases["first"]["folder"] / RunArtifacts.RECOMMENDATIONS)
    user = "shopper-3"
    expected = published[published["user_id"] == user].sort_values("rank")["item_id"].head(10).tolist()
    first = service.client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
    assert _items(first) == expected
    body = first.json()
    assert body["source"] == "published" and body["model_version"] == "two_tower-20260101T000000Z"
    assert len(body["request_id"]) == 32 and all(item["reason"] for item in body["items"])

    # the shopper buys two items: the next answer reads them, within a second, without a retraining
    bought = ["item-7", "item-250"]
    posted = service.client.post(
        "/v1/events",
        json={
            "events": [
                {"user_id": user, "item_id": item, "event_type": "purchase", "request_id": body["request_id"]}
                for item in bought
            ]
        },
    )
    assert posted.status_code == 202, posted.text
    second = service.client.get(f"/v1/users/{user}/recommendations", params={"k": 10})  # the very next request
    assert second.json()["source"] == "in_context"
    assert _items(second) != expected and not set(bought) & set(_items(second))
    assert any(item["because_of"] in bought for item in second.json()["items"])


def test_a_newcomer_in_context_gets_what_the_saved_model_answers(service, releases):
    import tensorflow as tf

    recent = ["item-11", "item-12", "item-13"]
    response = service.client.post(
        "/v1/recommendations",
        json={"recent_item_ids": recent + ["no-such-item"], "k": 15, "surface": "cart", "segment": "France"},
    )
    module = releases["first"]["module"]
    answer = module.recommend_in_context(
        user_id=tf.constant([""]),
        k=tf.constant(15, tf.int32),
        recent_item_ids=tf.constant([recent]),
        segment=tf.constant(["France"]),
    )
    assert _items(response) == [i.decode() for i in answer["item_ids"].numpy()[0]]
    assert response.json()["ignored_item_ids"] == ["no-such-item"]
    assert response.json()["source"] == "in_context"
    # nothing known: the best-sellers, said so
    cold = service.client.post("/v1/recommendations", json={"k": 5, "segment": "France"})
    assert cold.json()["source"] == "best_sellers"
    assert {item["reason"] for item in cold.json()["items"]} == {"popular in France"}
    # exclusions hold
    excluded = _items(response)[:3]
    again = service.client.post(
        "/v1/recommendations", json={"recent_item_ids": recent, "k": 15, "exclude_item_ids": excluded}
    )
    assert not set(excluded) & set(_items(again)) and len(_items(again)) == 15


def test_related_items_are_the_nearest_vectors_and_an_unknown_item_is_404(service):
    response = service.client.get("/v1/items/item-5/related", params={"k": 7})
    items = _items(response)
    assert len(items) == 7 and "item-5" not in items
    assert all(item["because_of"] == "item-5" for item in response.json()["items"])
    assert service.client.get("/v1/items/nope/related").status_code == 404


def test_keys_and_bad_requests_get_clear_4xx(service):
    anonymous = httpx.Client(base_url=service.url)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/v1/users/shopper-1/recommendations").status_code == 401
    wrong = anonymous.get("/v1/users/shopper-1/recommendations", headers={api_keys.HEADER: "rsk_wrong"})
    assert wrong.status_code == 401 and "recsys api-key create" in wrong.json()["detail"]
    assert anonymous.get("/metrics").status_code == 401
    bearer = anonymous.get("/v1/items/item-1/related", headers={"Authorization": f"Bearer {service.key}"})
    assert bearer.status_code == 200

    def problem(response, status: int, field: str, words: str):
        assert response.status_code == status, response.text
        body = response.json()
        assert body["field"] == field and words in body["error"], body

    problem(service.client.get("/v1/users/shopper-1/recommendations", params={"k": 0}), 422, "k", "greater than")
    problem(service.client.get("/v1/users/shopper-1/recommendations", params={"k": 501}), 422, "k", "less than")
    problem(service.client.get("/v1/users/shopper-1/recommendations", params={"surface": "tv"}), 422, "surface", "home")
    problem(
        service.client.post("/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "body",
        "malformed JSON",
    )
    problem(
        service.client.post("/v1/recommendations", json={"recent_item_ids": [f"item-{i}" for i in range(201)]}),
        422,
        "body",
        "at most 200",
    )
    problem(service.client.post("/v1/recommendations", json={"recent_item_ids": ["x" * 70_000]}), 413, "body", "65536")
    problem(
        service.client.post("/v1/events", json={"events": [{"user_id": "a", "item_id": "b", "event_type": "wink"}]}),
        422,
        "events.0.event_type",
        "view",
    )
    metrics = service.client.get("/metrics").text
    assert (
        "recsys_serving_request_seconds_bucket" in metrics
        and 'recsys_serving_model_info{model_version="two_tower-' in metrics
    )


def test_lists_and_events_reach_mysql_exactly_once_through_an_outage(
    releases, mysql_test_settings, s3_test_settings, tmp_path
):
    proxy = TcpProxy(mysql_test_settings.port)
    proxy.start()
    mysql = replace(mysql_test_settings, port=proxy.port)
    running = RunningService(mysql, s3_test_settings, tmp_path)
    try:
        marker = f"outage-{time.time_ns()}"

        def post(n: int, start: int) -> list[str]:
            events = [
                {"user_id": marker, "item_id": f"item-{i % N_ITEMS}", "event_type": "view"}
                for i in range(start, start + n)
            ]
            response = running.client.post("/v1/events", json={"events": events})
            assert response.status_code == 202, response.text
            return response.json()["event_ids"]

        ids = post(20, 0)
        assert running.service.feedback.flush(10)
        proxy.stop()  # MySQL away: the service keeps answering, rows go to the spool file
        ids += post(30, 20)
        assert len(_items(running.client.get(f"/v1/users/{marker}/recommendations"))) == 10  # still answering
        deadline = time.monotonic() + 10
        while not (tmp_path / "spool.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "spool.jsonl").exists(), "rows written while MySQL was away must be spooled"
        assert not running.service.feedback.mysql_up
        proxy.start()  # back: the spool is replayed, then new rows follow
        ids += post(10, 50)
        assert running.service.feedback.flush(30), "the spool was not replayed"
        with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
            rows = warehouse.read_frame(
                conn, "SELECT event_id, COUNT(*) AS n FROM online_events WHERE user_id = %s GROUP BY event_id", [marker]
            )
            lists = warehouse.scalar(conn, "SELECT COUNT(*) FROM served_lists WHERE user_id = %s", [marker])
            items = warehouse.scalar(
                conn,
                "SELECT COUNT(*) FROM served_items JOIN served_lists USING (request_id) "
                "WHERE served_lists.user_id = %s",
                [marker],
            )
        assert sorted(rows["event_id"]) == sorted(ids) and (rows["n"] == 1).all()
        assert lists == 1 and items == 10
        # what the next features run loads: the dataset's posted events as contract rows, times parsed back
        staged = pd.concat(list(online_events.stream(mysql_test_settings, DATASET, batch_rows=25)))
        mine = staged[staged["user_id"] == marker]
        assert len(mine) == 60 and mine["source_row_id"].min() > online_events.ONLINE_ROW_ID_BASE
        assert mine["event_at"].notna().all() and set(mine["event_type"]) == {"view"}
        assert online_events.watermark(mysql_test_settings, DATASET)[0] >= 60
    finally:
        running.close()
        proxy.stop()


def test_a_promotion_and_a_rollback_are_served_without_a_failed_request(service, releases, s3_test_settings):
    first = service.client.get("/healthz").json()["release_id"]
    stop = threading.Event()
    statuses: list[int] = []

    def hammer():
        with httpx.Client(base_url=service.url, headers={api_keys.HEADER: service.key}, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                if n % 2:
                    response = client.get(f"/v1/users/shopper-{n % N_USERS}/recommendations")
                else:
                    response = client.post("/v1/recommendations", json={"recent_item_ids": [f"item-{n % N_ITEMS}"]})
                statuses.append(response.status_code)

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(hammer) for _ in range(4)]
        publish_release(s3_test_settings, releases["root"], "20260102T000000Z", seed=2)
        _wait_for_release(service, "20260102T000000Z")
        point_champion_at(s3_test_settings, first)  # a rollback moves the pointer back
        _wait_for_release(service, first)
        stop.set()
        for worker in workers:
            worker.result()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert service.client.get("/v1/users/shopper-1/recommendations").json()["release_id"] == first


def _wait_for_release(service, release_id: str) -> None:
    """Until the service answers from ``release_id`` (how fast is the benchmark's business, not this test's)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if service.client.get("/healthz").json()["release_id"] == release_id:
            return
        time.sleep(0.2)
    raise AssertionError(f"release {release_id} was never served")


def test_no_complete_champion_means_no_service(releases, s3_test_settings, tmp_path):
    s3 = storage.client(s3_test_settings)
    with pytest.raises(NoChampion, match="has no champion to serve"):
        load_champion(s3_test_settings, "nobody-shop", tmp_path)
    # a champion whose recommendations were altered after the manifest was written
    release = "20260103T000000Z"
    publish_release(s3_test_settings, releases["root"], release, seed=3)
    key = release_prefix(s3_test_settings, DATASET, release) + RunArtifacts.RECOMMENDATIONS
    s3.put_object(Bucket=s3_test_settings.bucket, Key=key, Body=b"tampered")
    with pytest.raises(NoChampion, match="is not complete"):
        load_champion(s3_test_settings, DATASET, tmp_path)
    point_champion_at(s3_test_settings, "20260101T000000Z")
    assert (
        json.loads(
            s3.get_object(Bucket=s3_test_settings.bucket, Key=champion_key(s3_test_settings, DATASET))["Body"].read()
        )["release_id"]
        == "20260101T000000Z"
    )
