"""Every DAG file imports cleanly and carries what production runs need."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dag_bag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert set(dag_bag.dags) == {"recsys_features", "recsys_training", "recsys_rollback"}


def test_no_cycles(dag_bag):
    for dag in dag_bag.dags.values():
        dag.check_cycle()  # raises AirflowDagCycleException


def test_every_task_alerts_on_failure_with_its_stage(dag_bag):
    from recsys_pipeline.orchestration.alerts import notify_failure, stage_of

    for dag_id, dag in dag_bag.dags.items():
        for task in dag.tasks:
            assert notify_failure in (
                task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
            ), f"{dag_id}.{task.task_id} has no failure alert"
            if not task.task_id.startswith("features."):
                assert stage_of(task.task_id) != task.task_id, (
                    f"{dag_id}.{task.task_id} has no stage name for its alerts"
                )


def test_features_update_the_asset_that_schedules_training(dag_bag):
    from airflow.sdk import AssetOrTimeSchedule

    from recsys_pipeline.orchestration.assets import FEATURES

    features, training = dag_bag.dags["recsys_features"], dag_bag.dags["recsys_training"]
    assert features.get_task("announce_features").outlets == [FEATURES]
    assert "check_quality" in features.get_task("announce_features").upstream_task_ids
    assert isinstance(training.timetable, AssetOrTimeSchedule)
    assert training.timetable.asset_condition == FEATURES
    assert training.timetable.timetable.expression == "0 3 * * 1"  # weekly as well
    # training's own feature build must never announce the asset (it would trigger itself)
    assert not any(task.outlets for task in training.tasks)
    plan = training.get_task("plan_features")
    assert plan.downstream_task_ids == {"load_raw", "use_built_features"}
    ready = training.get_task("features_ready")
    assert ready.upstream_task_ids == {"check_quality", "use_built_features"}
    assert ready.trigger_rule == "none_failed_min_one_success"


def test_every_dag_is_documented_owned_tagged_and_retried(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no doc_md"
        assert dag.max_active_runs == 1, f"{dag_id} may run twice at once"
        assert not dag.catchup, f"{dag_id} would backfill"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id} never retries"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} may hang forever"


def test_training_dag_wires_the_stages_in_order(dag_bag):
    dag = dag_bag.dags["recsys_training"]
    order = [
        "plan_features",
        "load_raw",
        "validate_raw",
        "features.dbt_producer_watcher",
        "features.models.marts.interactions_split.test",
        "document_features",
        "check_quality",
        "features_ready",
        "train_two_tower",
        "evaluate_models",
        "promotion_gate",
        "publish_release",
        "load_recommendations",
    ]
    for upstream, downstream in itertools.pairwise(order):
        before = dag.get_task(downstream).get_flat_relative_ids(upstream=True)
        assert upstream in before, f"{upstream} must run before {downstream}"
    assert "score_users" in dag.get_task("promotion_gate").upstream_task_ids
    # the optional backtest runs before the gate (its figures go into the report), and skipping it skips nothing else
    assert dag.get_task("backtest").upstream_task_ids == {"evaluate_models"}
    assert "backtest" in dag.get_task("promotion_gate").upstream_task_ids
    assert dag.get_task("promotion_gate").trigger_rule == "none_failed"


def test_every_param_has_a_description(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        for name, param in dag.params.items():
            assert param.description and len(param.description) > 20, f"{dag_id} param {name} is not described"
            assert param.schema.get("type"), f"{dag_id} param {name} has no type"


@pytest.mark.parametrize(
    "name, bad_value",
    [
        ("top_k", 0),
        ("epochs", 1000),
        ("dataset", ""),
        ("force_publish", "yes"),
        ("model_family", "gpt"),
        ("dry_run", "no"),
        ("backtest", "yes"),
        ("repeat_policy", "sometimes"),
        ("repeat_policy", 0),
        ("repeat_policy", "2.5"),
        ("candidate_ranking", "yes"),
    ],
)
def test_params_have_defaults_and_reject_bad_values(dag_bag, name, bad_value):
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dag_bag.dags["recsys_training"].params)
    assert params.validate() == {
        "dataset": "online-retail",
        "model_family": "two_tower",
        "epochs": 20,
        "top_k": 20,
        "force_publish": False,
        "dry_run": False,
        "backtest": False,
        "build_features": True,
        "full_refresh": False,
        "repeat_policy": None,  # the dataset's setting, else the data's
        "candidate_ranking": True,
    }
    with pytest.raises(ParamValidationError):
        params[name] = bad_value


@pytest.mark.parametrize("value", ["exclude", "include", "3", 3, None])
def test_the_repeat_policy_param_takes_each_allowed_value(dag_bag, value):
    import copy

    params = copy.deepcopy(dag_bag.dags["recsys_training"].params)
    params["repeat_policy"] = value
    assert params.validate()["repeat_policy"] == value


def test_every_dbt_model_is_its_own_task_with_its_tests(dag_bag):
    """Cosmos (watcher mode) renders one task per model and one for its tests, grouped by
    folder, all fed by the single `dbt build` of the producer task."""
    dag = dag_bag.dags["recsys_training"]
    task_ids = set(dag.task_ids)
    models = [path.stem for path in (DAGS_FOLDER.parent / "dbt_project" / "models").rglob("*.sql")]
    assert len(models) >= 12
    for model in models:
        for kind in ("run", "test"):
            matches = [t for t in task_ids if t.startswith("features.models.") and t.endswith(f".{model}.{kind}")]
            assert len(matches) == 1, (
                f"dbt model {model} has no {kind} task: {sorted(t for t in task_ids if model in t)}"
            )
    producer = dag.get_task("features.dbt_producer_watcher")
    assert producer.upstream_task_ids == {"validate_raw"}
    user_features = dag.get_task("features.models.marts.user_features.run")
    assert "features.models.marts.user_top_categories.test" in user_features.upstream_task_ids
    # the watchers start after the build (all_done: they report a failed build too),
    # and skip when the load failed or the raw gate refused it and there was no build
    seed = dag.get_task("features.seeds.event_weights.seed")
    assert seed.upstream_task_ids == {"features.dbt_producer_watcher"}
    assert seed.trigger_rule == "all_done" and seed.mode == "reschedule" and not seed.deferrable
    assert seed.pre_execute.__name__ == "_skip_unless_loaded"
    assert "features.models.marts.interactions_split.test" in dag.get_task("document_features").get_flat_relative_ids(
        upstream=True
    )
