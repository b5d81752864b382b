"""Every DAG file imports cleanly and carries what production runs need."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert "recsys_training" in dag_bag.dags


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
    order = ["load_raw", "build_features", "check_quality", "train_two_tower", "evaluate_models",
             "promotion_gate", "publish_release", "load_recommendations"]
    for upstream, downstream in zip(order, order[1:]):
        assert upstream in dag.get_task(downstream).upstream_task_ids or upstream in {
            t for t in dag.get_task(downstream).get_flat_relative_ids(upstream=True)
        }, f"{upstream} must run before {downstream}"
    assert "score_users" in dag.get_task("promotion_gate").upstream_task_ids


@pytest.mark.parametrize("name, bad_value", [("top_k", 0), ("epochs", 1000), ("dataset", ""), ("force_publish", "yes")])
def test_params_have_defaults_and_reject_bad_values(dag_bag, name, bad_value):
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dag_bag.dags["recsys_training"].params)
    assert params.validate() == {"dataset": "online-retail", "epochs": 20, "top_k": 20, "force_publish": False}
    with pytest.raises(ParamValidationError):
        params[name] = bad_value
