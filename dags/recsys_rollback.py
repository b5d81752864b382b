"""
### Roll the champion back to an earlier release

Triggered by hand (never scheduled). Give the **dataset** and the **release_id** to return to
(the ids are the folders under `s3://<bucket>/<prefix>/<dataset>/releases/`; `history/` beside them
holds every promotion and rollback, one object each).

The task first checks that the release is complete — its manifest exists and every object it lists
is in the bucket with the recorded size and sha256 — and that the promotion gate promoted it when
it ran. Only then does it rewrite `champion.json` (recording the release it replaced) and reload
that release's recommendations into MySQL with the same atomic table swap as training. A refused
rollback changes nothing. The same step from a shell: `recsys rollback --dataset D --release R`.

One writer at a time: the task runs in the one-slot pool `recsys_release` with the training DAG's
`publish_release` and `load_recommendations`, and holds the dataset's writer lock (a MySQL named lock
the shell command takes too) from reading the pointer to swapping MySQL's table. A training run that
published meanwhile finds the pointer moved and says so instead of loading its own recommendations.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag

from recsys_pipeline.orchestration.dag_defaults import START_DATE, dataset_param, default_args
from recsys_pipeline.orchestration.training_tasks import rollback_champion

DEFAULT_ARGS = default_args(execution_timeout=timedelta(minutes=30))


@dag(
    dag_id="recsys_rollback",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "release"],
    doc_md=__doc__,
    params={
        "dataset": dataset_param(" (the dataset whose champion moves)"),
        "release_id": Param(
            "", type="string", minLength=1, description="the release to make champion again (a folder under releases/)"
        ),
    },
)
def recsys_rollback():
    rollback_champion()


recsys_rollback()
