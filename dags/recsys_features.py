"""
### Feature refresh: raw events in, gated dbt features out (updates the `recsys_features` asset)

Every day at 02:00 UTC (`RECSYS_FEATURES_SCHEDULE`, a cron expression or `none`) on `RECSYS_DATASET`,
or when triggered, this DAG refreshes what the models learn from, without training:

1. **load_raw** — maps the dataset onto the raw contract and stages it in MySQL (`raw_*__new`);
   a file that breaks the contract fails here and is recorded in the `quarantine` table;
2. **validate_raw** — the raw gate (Great Expectations, `expectations/raw_*.json`): columns and types,
   ids, event types, quantity and price bounds, items in the catalogue, volume against the last good
   load, drift of the event-type mix and item popularity. Only a load that passes replaces the raw
   tables; a refused one is kept as `raw_*__rejected`, its rows go to `quarantine`, the run stops;
3. **features** — the dbt project, one task per seed and model with its tests (astronomer-cosmos);
   **document_features** writes the dbt docs site;
4. **check_quality** — the features gate (Great Expectations on the dbt models);
5. **announce_features** — updates the **`recsys_features` asset** with the load it built
   (dataset, load id, data version). That update triggers **`recsys_training`**, which trains on
   exactly this build (it checks the warehouse still holds it) and ships this run's Data Docs and
   dbt docs with its release.

Only one feature build runs at a time in the warehouse, whichever DAG starts it: `load_raw` waits for
the lease (`warehouse_lock`) that the features gate gives back.
A failure names the stage and the rule in the task log (and in `RECSYS_ALERT_WEBHOOK_URL`'s channel
when set); nothing downstream runs and the asset is not updated, so no training starts.

**Trigger with parameters** to choose the dataset (`online-retail`, `groceries`, or a folder of your own
`events`/`items`/`users` files) or to rebuild dbt's incremental models in full.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag

from recsys_pipeline.features.task_group import TEMPLATE_MACROS
from recsys_pipeline.orchestration.dag_defaults import (
    START_DATE,
    cron_from_env,
    dataset_param,
    default_args,
    full_refresh_param,
)
from recsys_pipeline.orchestration.feature_tasks import announce_features, build_and_check_features

DEFAULT_ARGS = default_args(execution_timeout=timedelta(hours=1))


@dag(
    dag_id="recsys_features",
    schedule=cron_from_env("RECSYS_FEATURES_SCHEDULE", "0 2 * * *"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "features"],
    doc_md=__doc__,
    params={
        "dataset": dataset_param(),
        "full_refresh": full_refresh_param(),
    },
    user_defined_macros=TEMPLATE_MACROS,
)
def recsys_features():
    _, admitted, checked = build_and_check_features()
    checked >> announce_features(admitted)


recsys_features()
