"""
### Recommendation training: raw events in, published top-K recommendations out

Every week (or when triggered), this DAG:

1. **load_raw** — maps the dataset onto the raw contract and stages it in MySQL (`raw_*__new`);
   a file that breaks the contract (missing column, text in a number column, not UTF-8, empty)
   fails here and is recorded in the `quarantine` table;
2. **validate_raw** — the raw gate: Great Expectations suites (`expectations/raw_*.json`) on the
   staged load: columns, ids, event types, quantity and price bounds, items in the catalogue,
   volume against the last good load, and drift of the event-type mix and item popularity.
   Only a load that passes replaces the raw tables (one `RENAME`); a refused one is kept as
   `raw_*__rejected`, its offending rows go to `quarantine` with the rule, and the run stops.
   The Data Docs link is in the task log, passed or failed;
3. **features** — the dbt project, one task per seed, source and model (astronomer-cosmos), grouped by
   folder (staging, intermediate, marts, published); each model task builds the model and runs its tests.
   Incremental models update in place when the raw events only grew; otherwise (or with `full_refresh`)
   they are rebuilt. **document_features** then writes the dbt docs site into the release;
4. **check_quality** — the features gate: Great Expectations suites on the dbt models (keys,
   rates, split leakage, share of rows staging rejected); a failure stops the run here,
   naming the suite, expectation, table, column and observed value, and nothing is trained or published;
5. **train_two_tower** — the TensorFlow two-tower retrieval model;
6. **evaluate_models** / **score_users** — test metrics beside the baselines (most popular, item-kNN, user-kNN, EASE);
   top-K for every user;
7. **promotion_gate** — promote only if the model beats the baselines and is not worse than the champion;
8. **publish_release** — model, metrics and recommendations to object storage under a versioned
   prefix, a manifest with checksums, then the champion pointer (only if promoted);
9. **load_recommendations** — swaps the new `recommendations` table into MySQL (only if promoted).

**Trigger with parameters** to choose the dataset (`online-retail`, `groceries`, or a folder of your own
`events`/`items`/`users` files), the number of epochs, K, or to force publishing.
Re-running a run rewrites the same release; two runs never overlap (`max_active_runs=1`).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag

from recsys_pipeline.dag_defaults import START_DATE, default_args

from recsys_pipeline.dbt_task_group import TEMPLATE_MACROS, features_task_group
from recsys_pipeline.tasks import (
    check_quality,
    document_features,
    evaluate_models,
    load_raw,
    load_recommendations,
    promotion_gate,
    publish_release,
    score_users,
    train_two_tower,
    validate_raw,
)

DEFAULT_ARGS = default_args(execution_timeout=timedelta(hours=2))


@dag(
    dag_id="recsys_training",
    schedule="@weekly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "training"],
    doc_md=__doc__,
    params={
        "dataset": Param("online-retail", type="string", minLength=1, description="online-retail, groceries, or a folder with events/items/users .csv or .parquet files"),
        "epochs": Param(20, type="integer", minimum=1, maximum=200, description="most training epochs of the two-tower model (it stops early on the validation metric)"),
        "top_k": Param(20, type="integer", minimum=1, maximum=500, description="recommendations per user in the published tables"),
        "force_publish": Param(False, type="boolean", description="promote the model even if the gate says no"),
        "full_refresh": Param(False, type="boolean", description="rebuild dbt's incremental models from all raw rows (otherwise automatic when the rules or old raw rows changed)"),
    },
    user_defined_macros=TEMPLATE_MACROS,
)
def recsys_training():
    staged = load_raw()
    loaded = validate_raw(staged)
    features = features_task_group()
    documented = document_features(loaded)
    loaded >> features >> documented
    checked = check_quality(documented)
    trained = train_two_tower(loaded)
    checked >> trained
    metrics = evaluate_models(trained)
    scored = score_users(trained)
    decision = promotion_gate(loaded, metrics)
    scored >> decision
    published = publish_release(loaded, decision)
    load_recommendations(published)


recsys_training()
