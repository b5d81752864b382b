"""The training DAG end to end in a real Airflow (`airflow dags test`), on real data.

Groceries (38,765 purchases) is small enough to run the whole pipeline -- load, dbt
build, Great Expectations, TensorFlow training, evaluation, gate, publish to the S3
API server, MySQL swap -- in about a minute, and running it twice checks that a
rerun of the same DAG run rewrites the same tables and release instead of adding.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys_pipeline import storage, warehouse
from recsys_pipeline.release.layout import champion_key, release_prefix
from recsys_pipeline.run import RunArtifacts

from conftest import pipeline_environment

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOGICAL_DATE = "2026-01-05"


def run_dag(
    env: dict, conf: dict, logical_date: str = LOGICAL_DATE, dag_id: str = "recsys_training"
) -> subprocess.CompletedProcess:
    """``airflow dags test`` of a DAG (the training DAG by default); its output goes to a log file as it
    runs (``$RECSYS_WORK_DIR/dag-<date>-<n>.log``, readable while a run hangs) and is returned."""
    airflow = Path(sys.executable).with_name("airflow")
    work = Path(env["RECSYS_WORK_DIR"])
    log_path = work / f"dag-{logical_date}-{len(list(work.glob(f'dag-{logical_date}-*.log'))) + 1}.log"
    with log_path.open("w") as log:
        result = subprocess.run(
            [str(airflow), "dags", "test", dag_id, logical_date, "--conf", json.dumps(conf)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
        )
    result.stdout, result.stderr = log_path.read_text(), ""
    return result


@pytest.fixture(scope="module")
def pipeline_env(mysql_test_settings, s3_test_settings, airflow_home, tmp_path_factory, groceries_path):
    return pipeline_environment(
        mysql_test_settings,
        s3_test_settings,
        tmp_path_factory.mktemp("work"),
        groceries_path.parents[1],
        AIRFLOW_HOME=str(airflow_home),
    )


def _table_counts(settings) -> dict:
    with warehouse.connect(settings) as conn:
        return {
            table: warehouse.scalar(conn, f"SELECT COUNT(*) FROM {table}")
            for table in ("recommendations", "interactions_split", "user_features", "item_features")
        }


def test_training_dag_publishes_and_reruns_idempotently(pipeline_env, mysql_test_settings, s3_test_settings):
    # the repeat policy from the form: lists without anything a shopper has (groceries' own default, from its
    # share of repeat purchases, is include: the weakened run below takes it)
    # the two-tower model's lists (the candidate ranking is published and verified by the forced run below)
    conf = {
        "dataset": "groceries",
        "epochs": 2,
        "top_k": 10,
        "force_publish": True,
        "repeat_policy": "exclude",
        "candidate_ranking": False,
    }
    first = run_dag(pipeline_env, conf)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    counts = _table_counts(mysql_test_settings)

    with warehouse.connect(mysql_test_settings) as conn:
        recs = warehouse.read_frame(conn, "SELECT user_id, `rank`, item_id, model_version FROM recommendations")
        evaluated = warehouse.read_frame(conn, "SELECT DISTINCT user_id FROM interactions_split WHERE split = 'test'")
        seen = warehouse.read_frame(conn, "SELECT user_id, item_id FROM interactions_split")
    # top-K rows for every evaluated user, ranks 1..K, never an item the user already has
    per_user = recs.groupby("user_id")["rank"].agg(["count", "min", "max"])
    assert set(evaluated["user_id"]) <= set(per_user.index)
    assert (per_user["count"] == 10).all() and (per_user["min"] == 1).all() and (per_user["max"] == 10).all()
    assert recs.merge(seen, on=["user_id", "item_id"]).empty
    assert recs["model_version"].nunique() == 1

    # the release is complete: every manifest object exists with its checksum; the pointer names it
    s3 = storage.client(s3_test_settings)
    pointer = storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "groceries"))
    assert pointer is not None
    manifest = storage.get_json(s3, s3_test_settings.bucket, pointer["manifest"])
    keys = {o["key"] for o in manifest["objects"]}
    prefix = release_prefix(s3_test_settings, "groceries", pointer["release_id"])
    assert set(storage.list_keys(s3, s3_test_settings.bucket, prefix)) == keys | {pointer["manifest"]}
    assert any(k.endswith("saved_model/saved_model.pb") for k in keys)
    assert not {k[len(prefix) :] for k in keys} & set(
        RunArtifacts.RUN_ONLY
    )  # working copies and personal data stay behind
    assert {prefix + f"dbt_docs/{name}" for name in ("index.html", "manifest.json", "catalog.json")} <= keys
    # one dbt build; every dbt model and its tests reported by a task of its own (cosmos watchers)
    log = first.stdout
    dbt_commands = [line for line in log.splitlines() if "Running command: [" in line and "/bin/dbt'" in line]
    assert len(dbt_commands) == 1 and "'build'" in dbt_commands[0], dbt_commands
    for model in (
        "stg_raw__events",
        "int_interactions",
        "user_features",
        "interactions_split",
        "recommendations_explained",
    ):
        layer = {"int": "intermediate", "stg": "staging", "recommendations": "published"}.get(
            model.split("_")[0], "marts"
        )
        for kind in ("run", "test"):
            assert f"end task task_id=features.models.{layer}.{model}.{kind}" in log, (model, kind)
    for obj in manifest["objects"]:
        assert storage.download_sha256(s3, s3_test_settings.bucket, obj["key"]) == (obj["size"], obj["sha256"])
    assert {"most_popular", "item_knn", "two_tower"} <= set(
        json.loads(s3.get_object(Bucket=s3_test_settings.bucket, Key=prefix + "metrics.json")["Body"].read())["models"]
    )
    training = storage.get_json(s3, s3_test_settings.bucket, prefix + "two_tower/training.json")
    prior = training["tuning"]["popularity_prior"]  # its weight chosen on validation; the trained model ranks with it
    assert (
        training["config"]["popularity_prior"] == prior["chosen"]
        and str(prior["chosen"]) in prior["validation_ndcg@20"]
    )
    assert training["repeat_policy"]["policy"] == "exclude" and training["repeat_policy"]["source"] == "parameter"
    decision = storage.get_json(s3, s3_test_settings.bucket, prefix + "decision.json")
    assert decision["repeat_policy"]["gate_variant"] == "new_items" and decision["view"]["variant"] == "new_items"

    # the same DAG run again: same tables, no duplicates; the first release is immutable and stays byte for
    # byte, and the retrained model (never bit-identical: its training.json has a new trained_at) is published
    # beside it as the next attempt of the same release id
    second = run_dag(pipeline_env, conf)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "dbt build will be incremental" in second.stdout + second.stderr  # same raw rows: nothing to rebuild
    assert _table_counts(mysql_test_settings) == counts
    assert sorted(storage.list_keys(s3, s3_test_settings.bucket, prefix)) == sorted(keys | {pointer["manifest"]})
    releases = {
        k.split("/releases/")[1].split("/")[0]
        for k in storage.list_keys(s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/groceries/releases/")
    }
    rerun = storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "groceries"))
    assert rerun["release_id"] != pointer["release_id"]  # <id>-attempt2 (a new id if a commit landed in between)
    assert releases == {pointer["release_id"], rerun["release_id"]}


def test_a_file_that_breaks_the_contract_stops_the_run_before_anything_is_published(
    pipeline_env, mysql_test_settings, s3_test_settings, tmp_path
):
    s3 = storage.client(s3_test_settings)
    pointer_before = storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "bad_shop"))
    bad = tmp_path / "bad_shop"
    bad.mkdir()
    pd.DataFrame({"user_id": ["u1"], "event_type": ["purchase"], "event_time": ["2024-01-01"]}).to_csv(
        bad / "events.csv", index=False
    )
    result = run_dag(pipeline_env, {"dataset": str(bad), "epochs": 1}, logical_date="2026-01-12")
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "required column 'item_id'" in log and "events.csv" in log
    # dbt never ran: the dbt tasks skip (they do not run their node on their own)
    assert "Running command:" not in log
    assert "validate_raw did not succeed: dbt did not run" in log
    assert "Exception rendering Jinja template" not in log
    assert storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "bad_shop")) == pointer_before
    assert storage.list_keys(s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/bad_shop/") == []


def test_a_refused_raw_load_stops_before_dbt_keeps_the_champion_and_links_its_data_docs(
    pipeline_env, mysql_test_settings, s3_test_settings, tmp_path, groceries_path
):
    """Groceries as the user's own files, with an event type the pipeline has never seen."""
    from recsys_pipeline.ingest.adapters import groceries
    from recsys_pipeline.quality import quarantine

    raw = groceries(groceries_path)
    shop = tmp_path / "groceries"  # named like the built-in, but keyed apart: never the real groceries' champion
    shop.mkdir()
    events = raw.events.copy()
    events.loc[:49, "event_type"] = "teleport"
    events.to_csv(shop / "events.csv", index=False)
    raw.items.to_csv(shop / "items.csv", index=False)
    raw.users.to_csv(shop / "users.csv", index=False)
    s3 = storage.client(s3_test_settings)
    pointer_before = storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "groceries"))
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute("CHECKSUM TABLE raw_events")
        raw_before = cur.fetchone()[1]
    result = run_dag(pipeline_env, {"dataset": str(shop), "epochs": 1}, logical_date="2026-01-19")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "suite raw_events: expect_column_values_to_be_in_set failed on table" in log
    assert "column event_type: observed 50 unexpected rows" in log and "teleport" in log
    assert "Data Docs (raw gate): s3://" in log
    assert "Running command:" not in log and "validate_raw did not succeed: dbt did not run" in log
    assert storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "groceries")) == pointer_before
    docs = storage.list_keys(
        s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/groceries-folder/data-docs/20260119T000000Z"
    )
    assert any(k.endswith("/raw/index.html") for k in docs)
    assert not storage.list_keys(
        s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/groceries-folder/releases/20260119T000000Z"
    )
    with warehouse.connect(mysql_test_settings, database=mysql_test_settings.raw_database) as conn:
        cur = conn.cursor()
        cur.execute("CHECKSUM TABLE raw_events")
        assert cur.fetchone()[1] == raw_before, "the live raw events are the last good load's"
        load_id = warehouse.scalar(
            conn, "SELECT DISTINCT load_id FROM quarantine WHERE load_id LIKE 'groceries-folder:20260119%'"
        )
    teleports = [
        r
        for r in quarantine.rows_for_load(mysql_test_settings, load_id)
        if r["row"] and r["row"].get("event_type") == "teleport"
    ]
    assert len(teleports) == 50


def test_a_weakened_challenger_is_refused_and_nothing_moves(pipeline_env, mysql_test_settings, s3_test_settings):
    s3 = storage.client(s3_test_settings)
    pointer_before = storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "groceries"))
    with warehouse.connect(mysql_test_settings) as conn:
        table_before = (
            warehouse.read_frame(
                conn, "SELECT model_version, COUNT(*) AS n FROM recommendations GROUP BY model_version"
            )
            if warehouse.table_exists(conn, mysql_test_settings.database, "recommendations")
            else None
        )
    # one epoch of the two-tower model alone (the candidate ranking off): on groceries it is worse than the
    # promoted champion (and, depending on the run, than a baseline); the same logical date as the
    # promoted run above: a weaker rerun must not touch the champion's release; on the features the first
    # run built and checked (build_features off: no reload, no dbt build), with the time-cut backtest beside
    # the metrics
    result = run_dag(
        pipeline_env,
        {
            "dataset": "groceries",
            "epochs": 1,
            "top_k": 10,
            "build_features": False,
            "backtest": True,
            "candidate_ranking": False,
        },
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]  # a refusal is an outcome, not a crash
    assert "the promotion gate kept the current champion" in log
    # the refusal names the check it failed: a baseline it did not beat, or the champion it fell behind
    assert re.search(r"FAIL: (beats baseline|not significantly worse than the champion)", log), log[-4000:]
    assert "build_features is off: training on the warehouse's current features" in log
    pointer_after = storage.get_json(s3, s3_test_settings.bucket, champion_key(s3_test_settings, "groceries"))
    assert pointer_after == pointer_before
    if pointer_after:  # the champion's release is untouched: its manifest still has the recorded checksum
        manifest_key = pointer_after["manifest"]
        assert storage.download_sha256(s3, s3_test_settings.bucket, manifest_key)[1] == pointer_after["manifest_sha256"]
    champion_release = pointer_after["release_id"] if pointer_after else None
    releases = storage.list_keys(
        s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/groceries/releases/20260105T000000Z-"
    )
    # this run's own release (its run folder says which: the forced releases of that date are promoted ones)
    published = json.loads(
        (Path(pipeline_env["RECSYS_WORK_DIR"]) / "groceries" / "20260105T000000Z" / "published.json").read_text()
    )
    assert published["release_id"] != champion_release
    decision_key = release_prefix(s3_test_settings, "groceries", published["release_id"]) + "decision.json"
    assert decision_key in releases
    decision = storage.get_json(s3, s3_test_settings.bucket, decision_key)
    assert decision["promote"] is False and any(r.startswith("FAIL") for r in decision["reasons"])
    # the backtest's figures are in the release's metrics, both variants, every model; the gate ignored them
    backtest = storage.get_json(s3, s3_test_settings.bucket, decision_key.replace("/decision.json", "/metrics.json"))[
        "backtest"
    ]
    assert backtest["window"]["cut_at"] < backtest["window"]["test_until"]
    stage = backtest["tuning"]["two_tower"][
        "ranking_stage"
    ]  # replayed on the cut; reported when it beat retrieval there
    assert (
        str(backtest["tuning"]["two_tower"]["popularity_prior"]["chosen"])
        in backtest["tuning"]["two_tower"]["popularity_prior"]["validation_ndcg@20"]
    )
    assert set(backtest["variants"]["new_items"]["models"]) == {
        "two_tower",
        "most_popular",
        "item_knn",
        "user_knn",
        "ease",
    } | ({"two_tower+ranking"} if stage["used"] else set())
    assert set(backtest["variants"]["with_repeats"]["models"]) == {
        "two_tower",
        "most_popular",
        "item_knn",
        "user_knn",
        "ease",
        "bought_before",
        "tifu_knn",
    }
    assert all(0 < m["ndcg@20"] < 1 for v in backtest["variants"].values() for m in v["models"].values())
    assert "backtest with_repeats" in log and "backtest new_items" in log
    # no repeat policy given: the data chose it -- groceries' shoppers re-buy (13-17% of a month's purchases
    # are items they had), so the model ranks their own items too and the gate counts repeat purchases
    policy = decision["repeat_policy"]
    assert policy["source"] == "data" and policy["repeat_share"] >= policy["threshold"], policy
    assert policy["policy"] == "include" and policy["gate_variant"] == decision["view"]["variant"] == "with_repeats"
    assert any(r.startswith("repeat policy: include") for r in decision["reasons"])
    run_folder = Path(pipeline_env["RECSYS_WORK_DIR"]) / "groceries" / "20260105T000000Z"
    lists = pd.read_parquet(run_folder / RunArtifacts.RECOMMENDATIONS)
    with warehouse.connect(mysql_test_settings) as conn:
        own = warehouse.read_frame(conn, "SELECT user_id, item_id FROM interactions_split")
    assert not lists.merge(own, on=["user_id", "item_id"]).empty  # some lists bring back a shopper's items
    if table_before is not None:
        with warehouse.connect(mysql_test_settings) as conn:
            table_after = warehouse.read_frame(
                conn, "SELECT model_version, COUNT(*) AS n FROM recommendations GROUP BY model_version"
            )
        assert table_after.equals(table_before)


def test_a_failed_data_check_stops_the_feature_refresh_before_the_asset_and_names_the_rule(
    pipeline_env, mysql_test_settings, s3_test_settings, tmp_path
):
    """Rows that pass the contract and dbt but break a data expectation (an event in 1990), through the
    feature-refresh DAG: the features gate stops it, so the asset that would start training is not updated."""
    shop = tmp_path / "ancient_shop"
    shop.mkdir()
    rows = [
        (f"u{u}", f"i{(u + k) % 8}", "purchase", f"2024-01-{k + 1:02d} 10:00:00") for u in range(6) for k in range(6)
    ]
    rows[0] = ("u0", "i0", "purchase", "1990-01-01 10:00:00")
    pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_time"]).to_csv(
        shop / "events.csv", index=False
    )
    result = run_dag(pipeline_env, {"dataset": str(shop)}, logical_date="2026-01-26", dag_id="recsys_features")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        "suite staged_events: expect_column_values_to_be_between failed on table "
        f"{mysql_test_settings.database}.stg_raw__events, column event_at" in log
    )
    assert "1990-01-01" in log
    finished = {
        line.split("task_id=")[1].split(",")[0].strip("'\"")
        for line in log.splitlines()
        if "Pushing xcom" in line and "task_id=" in line
    }
    assert {"load_raw", "validate_raw", "document_features"} <= finished  # the stages before the gate ran
    assert not finished & {"check_quality", "announce_features"}
    # the failure alert names the stage; the warehouse lease went back with it
    assert (
        "[recsys] recsys_features: stage 'features data gate (Great Expectations)' failed at task check_quality" in log
    )
    from recsys_pipeline.orchestration import warehouse_lock

    assert warehouse_lock.current(mysql_test_settings) is None
    s3 = storage.client(s3_test_settings)
    assert storage.list_keys(s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/ancient_shop/releases/") == []
    # both gates' Data Docs are published for the failed run, outside releases/, and linked from the log
    docs = storage.list_keys(s3, s3_test_settings.bucket, f"{s3_test_settings.prefix}/ancient_shop/data-docs/")
    assert any(k.endswith("/raw/index.html") for k in docs) and any(k.endswith("/features/index.html") for k in docs)
    assert "Data Docs (features gate): s3://" in log


def run_rollback_dag(env: dict, conf: dict) -> subprocess.CompletedProcess:
    airflow = Path(sys.executable).with_name("airflow")
    return subprocess.run(
        [str(airflow), "dags", "test", "recsys_rollback", "2026-03-02", "--conf", json.dumps(conf)],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_verify_the_champion_then_roll_back_to_it_after_a_forced_release(
    pipeline_env, mysql_test_settings, s3_test_settings
):
    from recsys_pipeline.release.layout import ReleaseError, manifest_key
    from recsys_pipeline.release.rollback import rollback
    from recsys_pipeline.release.verify import list_releases, verify

    s3 = storage.client(s3_test_settings)
    bucket = s3_test_settings.bucket
    champion = storage.get_json(s3, bucket, champion_key(s3_test_settings, "groceries"))
    checked = verify(s3_test_settings, "groceries", k=10)
    assert checked["release_id"] == champion["release_id"] and checked["objects"] > 10
    assert checked["matches_published"], checked  # the SavedModel answers as the published table says
    assert len(checked["unknown_user_items"]) == 10
    context = checked["new_shopper_in_context"]  # a newcomer is read from their recent items, which are not repeated
    assert len(context["items"]) == 10 and not set(context["items"]) & set(context["recent_items"])

    # a forced release with three "buy again" slots replaces the champion; then the rollback DAG brings the
    # first one back
    forced = run_dag(
        pipeline_env,
        {"dataset": "groceries", "epochs": 1, "force_publish": True, "repeat_policy": 3},
        logical_date="2026-02-02",
    )
    assert forced.returncode == 0, forced.stdout[-3000:]
    newer = storage.get_json(s3, bucket, champion_key(s3_test_settings, "groceries"))
    assert newer["release_id"] != champion["release_id"]
    trained = storage.get_json(
        s3, bucket, release_prefix(s3_test_settings, "groceries", newer["release_id"]) + RunArtifacts.TRAINING
    )
    assert trained["candidate_ranking"]["used"], trained["candidate_ranking"]  # its lists are what is published
    _assert_buy_again_slots_first(mysql_test_settings, 3)
    slotted = verify(s3_test_settings, "groceries", k=10)  # the SavedModel answers the same slots and items
    assert slotted["release_id"] == newer["release_id"] and slotted["matches_published"], slotted
    rolled = run_rollback_dag(pipeline_env, {"dataset": "groceries", "release_id": champion["release_id"]})
    assert rolled.returncode == 0, rolled.stdout[-3000:] + rolled.stderr[-3000:]
    pointer = storage.get_json(s3, bucket, champion_key(s3_test_settings, "groceries"))
    assert pointer["release_id"] == champion["release_id"] and pointer["rolled_back_from"] == newer["release_id"]
    with warehouse.connect(mysql_test_settings) as conn:
        assert set(
            warehouse.read_frame(conn, "SELECT DISTINCT model_version FROM recommendations")["model_version"]
        ) == {champion["model_version"]}
        assert set(
            warehouse.read_frame(conn, "SELECT DISTINCT model_version FROM recommendations__previous")["model_version"]
        ) == {newer["model_version"]}

    # refused, and nothing moves: a release the gate did not promote, and an incomplete one
    unpromoted = next(
        r
        for r in list_releases(s3, s3_test_settings, "groceries")
        if not (storage.get_json(s3, bucket, manifest_key(s3_test_settings, "groceries", r)) or {})
        .get("gate", {})
        .get("promote", True)
    )
    with pytest.raises(ReleaseError, match="was not promoted"):
        rollback(s3_test_settings, mysql_test_settings, "groceries", unpromoted)
    manifest = storage.get_json(s3, bucket, newer["manifest"])
    s3.delete_object(
        Bucket=bucket, Key=next(o["key"] for o in manifest["objects"] if o["key"].endswith("recommendations.parquet"))
    )
    refused = run_rollback_dag(pipeline_env, {"dataset": "groceries", "release_id": newer["release_id"]})
    assert refused.returncode != 0 and "is not complete" in refused.stdout + refused.stderr
    assert storage.get_json(s3, bucket, champion_key(s3_test_settings, "groceries")) == pointer


def _assert_buy_again_slots_first(settings, slots: int) -> None:
    """MySQL's ``recommendations``: each shopper's first ``slots`` places are their own items by distinct days
    bought, then the latest day, then item id; no later place repeats an own item."""
    with warehouse.connect(settings) as conn:
        recs = warehouse.read_frame(conn, "SELECT user_id, `rank`, item_id FROM recommendations")
        own = warehouse.read_frame(
            conn,
            "SELECT d.user_id, d.item_id, COUNT(DISTINCT d.event_date) AS days, MAX(d.event_date) AS last_day "
            "FROM int_interaction_days d JOIN interactions_split s ON s.user_id = d.user_id AND s.item_id = d.item_id "
            "GROUP BY d.user_id, d.item_id",
        )
    own["item_id"], own["user_id"] = own["item_id"].astype(str), own["user_id"].astype(str)
    recs["item_id"], recs["user_id"] = recs["item_id"].astype(str), recs["user_id"].astype(str)
    own = own.sort_values(["user_id", "days", "last_day", "item_id"], ascending=[True, False, False, True])
    expected = own.groupby("user_id")["item_id"].apply(lambda items: items.head(slots).tolist())
    published = recs.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].apply(list)
    owned = own.groupby("user_id")["item_id"].apply(set)
    checked = 0
    for user, items in published.items():
        first = expected.get(user, [])
        assert items[: len(first)] == first, (user, items, first)
        assert not set(items[len(first) :]) & owned.get(user, set()), (user, items)
        checked += len(first) == slots
    assert checked > 100, checked  # most shoppers have three items of their own


def test_the_service_answers_from_the_trained_champion_as_the_recommendations_table(
    pipeline_env, mysql_test_settings, s3_test_settings, tmp_path
):
    """``recsys serve`` on the champion the DAG published (and the rollback restored): a known shopper gets
    exactly the rows analysts read in MySQL's ``recommendations``; a newcomer's recent items are read."""
    from test_realtime_service import RunningService

    with warehouse.connect(mysql_test_settings) as conn:
        table = warehouse.read_frame(conn, "SELECT user_id, `rank`, item_id, model_version FROM recommendations")
    running = RunningService(mysql_test_settings, s3_test_settings, tmp_path, dataset="groceries")
    try:
        for user in sorted(table["user_id"].unique())[:25]:
            expected = table[table["user_id"] == user].sort_values("rank")["item_id"].head(10).tolist()
            body = running.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            assert [item["item_id"] for item in body["items"]] == expected, user
            assert body["model_version"] == table["model_version"].iloc[0] and body["source"] == "published"
        recent = table["item_id"].value_counts().index[:3].tolist()
        newcomer = running.client.post("/v1/recommendations", json={"recent_item_ids": recent, "k": 10}).json()
        assert newcomer["source"] == "in_context" and len(newcomer["items"]) == 10
        assert not set(recent) & {item["item_id"] for item in newcomer["items"]}

        # the shop reports what five shoppers then did: each bought the first item of the list they saw
        shoppers = sorted(table["user_id"].unique())[:5]
        events = []
        for user in shoppers:
            seen = running.client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            first = seen["items"][0]["item_id"]
            events.append(
                {"user_id": user, "item_id": first, "event_type": "purchase", "request_id": seen["request_id"]}
            )
        posted = running.client.post("/v1/events", json={"events": events})
        assert posted.status_code == 202, posted.text
        assert running.service.feedback.flush(30)
    finally:
        running.close()

    # the next features run loads them as raw events, through the contract and gates, and online_metrics
    # counts the five purchases against the model version that served the lists
    features = run_dag(pipeline_env, {"dataset": "groceries"}, logical_date="2026-03-09", dag_id="recsys_features")
    assert features.returncode == 0, features.stdout[-4000:]
    with warehouse.connect(mysql_test_settings) as conn:
        staged = warehouse.read_frame(
            conn, "SELECT user_id, item_id, event_type FROM stg_raw__events WHERE source_row_id >= %s", [10**15]
        )
        online = warehouse.read_frame(conn, "SELECT * FROM online_metrics WHERE dataset = 'groceries'")
    assert sorted(zip(staged["user_id"], staged["item_id"], strict=True)) == sorted(
        (e["user_id"], e["item_id"]) for e in events
    )
    served = online.set_index("model_version").loc[table["model_version"].iloc[0]]
    # each of the five saw the bought item at the top of two lists within the day (the 25 compared above, then
    # the one they came from): a purchase counts for every list that showed the item in the 24 hours before it
    assert int(served["items_purchased"]) == 10 and int(served["lists_served"]) == 25 + 1 + 5
