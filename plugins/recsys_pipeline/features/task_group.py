"""The dbt project as Airflow tasks: one task per seed, source, model and its tests (astronomer-cosmos).

Cosmos's watcher execution mode: one task (``dbt_producer_watcher``) runs a single
``dbt build`` of the whole project, which builds each model and runs its tests right
after it, with dbt's threads, and logs its progress live; every seed, source, model and
model's tests is also a task of its own that reports that node's status from the
build's events, so a failed model or test is the red task in the grid. One dbt
invocation instead of one per node: with ``ExecutionMode.LOCAL`` each of the ~45 tasks
would start dbt on its own, several seconds each.

Sources are not rendered as tasks, and tests with several parents stay with their
models: cosmos's watchers for those wait for statuses a single ``dbt build`` does
not report (sources without a freshness rule, detached tests) and never finish. The
build still runs every source test and every test. ``dbt source freshness`` is not
part of the run: right after ``validate_raw`` admits a load the raw tables are fresh by construction
(``loaded_at`` is the load's time); it is for warehouses other loaders feed.

Choices made for dbt-mysql 1.7 on MariaDB:

* the project's own ``profiles.yml`` (``type: mariadb``), not cosmos's MySQL profile
  mapping, which writes ``type: mysql`` -- with it a view whose SQL starts with
  ``WITH`` fails (error 1064);
* dbt runs from its own virtual environment (``dbt_executable_path``), as a
  subprocess: dbt-core 1.7 cannot share an environment with Airflow 3;
* the DAG is parsed with ``dbt ls`` (``LoadMode.DBT_LS``), which cosmos caches
  keyed by the project's files, so the scheduler runs it only when the project
  changes.

Per run, templates fill in what the load decided: the dataset's dbt vars and
whether incremental models are rebuilt in full (``dbt_plan`` in ``validate_raw``'s
XCom); credentials come from the ``recsys_mysql`` connection or the environment
through the ``recsys_mysql`` template macro (never written into the DAG).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TriggerRule
from airflow.sdk.exceptions import AirflowSkipException
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, SourceRenderingBehavior, TestBehavior
from cosmos.operators._watcher.base import BaseConsumerSensor

from recsys_pipeline.orchestration import warehouse_lock
from recsys_pipeline.settings import dbt_executable, dbt_project_dir, dbt_threads, mysql_settings_for_task

# the task that admits the raw load (after the raw gate); its XCom says how dbt must build
LOAD_TASK_ID = "validate_raw"
# how often a watcher task looks at the build's progress, and how long it waits at most
WATCHER_POKE_SECONDS = 5
WATCHER_TIMEOUT = timedelta(hours=3)
PRODUCER_TASK_SUFFIX = "dbt_producer_watcher"

# dbt's profiles.yml reads these; the values are rendered per task from the connection
_ENV_FROM_SETTINGS = {
    "RECSYS_MYSQL_HOST": "host",
    "RECSYS_MYSQL_PORT": "port",
    "RECSYS_MYSQL_USER": "user",
    "RECSYS_MYSQL_PASSWORD": "password",
    "RECSYS_MYSQL_DATABASE": "database",
    "RECSYS_RAW_DATABASE": "raw_database",
}


def recsys_mysql(field: str) -> str:
    """Template macro: one field of the task's MySQL settings (connection ``recsys_mysql`` or env)."""
    return str(getattr(mysql_settings_for_task(), field))


TEMPLATE_MACROS = {"recsys_mysql": recsys_mysql}


def _from_load(*keys: str, default: str) -> str:
    """A template of a value in ``validate_raw``'s XCom, ``default`` (a Jinja literal) when the
    load pushed nothing: a watcher's templates are rendered even when it is then skipped."""
    expression = "(ti.xcom_pull(task_ids='" + LOAD_TASK_ID + "') or {})"
    for key in keys[:-1]:
        expression = f"({expression}.get('{key}') or {{}})"
    return "{{ " + f"{expression}.get('{keys[-1]}', {default})" + " }}"


def _skip_unless_loaded(context) -> None:
    """A watcher has nothing to report when the load failed or the raw gate refused it: the build never ran.

    The watchers run after a *failed* build too (``all_done``), so this tells the two
    apart; without it they would fall back to running their dbt node on their own,
    against raw tables the failed load did not write.
    """
    if context["ti"].xcom_pull(task_ids=LOAD_TASK_ID) is None:
        raise AirflowSkipException(f"{LOAD_TASK_ID} did not succeed: dbt did not run, there is nothing to report")


def features_task_group(group_id: str = "features") -> DbtTaskGroup:
    """The dbt project (seeds, sources, staging, intermediate, marts, published views) as a task group.

    The DAG using it must pass ``user_defined_macros=TEMPLATE_MACROS`` and have a
    ``validate_raw`` task upstream whose XCom holds ``dbt_vars_json`` and ``dbt_plan``.
    """
    project = dbt_project_dir()
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(dbt_project_path=project, install_dbt_deps=False),
        profile_config=ProfileConfig(
            profile_name="recsys", target_name="dev", profiles_yml_filepath=project / "profiles.yml"
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=str(dbt_executable()),
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=str(dbt_executable()),
            test_behavior=TestBehavior.AFTER_EACH,
            should_detach_multiple_parents_tests=False,
            source_rendering_behavior=SourceRenderingBehavior.NONE,
            group_nodes_by_folder=True,
            emit_datasets=False,
            enable_mock_profile=False,
        ),
        operator_args={
            "install_deps": False,
            "vars": _from_load("dbt_vars_json", default="'{}'"),
            "full_refresh": _from_load("dbt_plan", "full_refresh", default="False"),
            "env": {name: "{{ recsys_mysql('" + field + "') }}" for name, field in _ENV_FROM_SETTINGS.items()}
            | {"RECSYS_DBT_THREADS": str(dbt_threads()), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
            "append_env": True,
            # a failed dbt test will fail again: one quick retry for a dropped connection only
            "retries": 1,
            "retry_delay": timedelta(seconds=10),
            "retry_exponential_backoff": False,
        },
    )
    _watch_after_the_build(group)
    return group


def _watch_after_the_build(group: DbtTaskGroup) -> None:
    """Start the watcher tasks once the build task has finished, and never let them defer.

    Cosmos starts the watchers beside the build so they can turn green while it runs.
    ``airflow dags test`` (the tests, ``make demo``) runs one task at a time in no fixed
    order: a watcher picked before the build waits for ever when deferred, and when
    rescheduled the build task's try number goes up and cosmos skips it as a retry. So
    the first watchers depend on the build (``all_done``: they still run, and report the
    failed node, when the build fails); the build task's log shows its progress live.
    """
    tasks = list(group.iter_tasks())
    producer = next(task for task in tasks if task.task_id.endswith(PRODUCER_TASK_SUFFIX))
    # cosmos asks dbt for JSON logs with `--log-format json` after the subcommand, which
    # dbt 1.7 refuses for `dbt source freshness`; the environment variable works for both
    producer.log_format = None
    producer.env = {**producer.env, "DBT_LOG_FORMAT": "json"}
    # the build is the long task of the run's warehouse lease: renewed while dbt runs
    producer.execute = warehouse_lock.execute_holding_warehouse
    in_group = {task.task_id for task in tasks}
    for task in tasks:
        if not isinstance(task, BaseConsumerSensor):
            continue
        task.deferrable = False
        task.mode = "reschedule"
        task.poke_interval = WATCHER_POKE_SECONDS
        task.timeout = WATCHER_TIMEOUT.total_seconds()
        if not task.upstream_task_ids & in_group:
            producer >> task
            task.trigger_rule = TriggerRule.ALL_DONE
            task.pre_execute = _skip_unless_loaded
