"""
### Recommendation training: raw events in, published top-K recommendations out

Runs **every Monday at 03:00 UTC** (`RECSYS_TRAINING_SCHEDULE`, a cron expression or `none`) on
`RECSYS_DATASET`, **whenever the `recsys_features` asset updates** (a passing
`recsys_features` run), or when triggered from the form. **plan_features** picks the path:

* triggered by the asset: **use_built_features** checks the warehouse still holds the announced load
  and brings that run's Data Docs and dbt docs along — no second load or dbt build;
* with **build_features** off (a form parameter): the same, on the warehouse's current features, which
  must be this dataset's and have passed the features gate — to try another model family or more
  epochs without reloading;
* weekly or manual: the run builds its own features first, exactly as `recsys_features` does —
  **load_raw** (file contract) → **validate_raw** (raw gate, Great Expectations: columns, types, ids,
  event types, bounds, catalogue, volume and drift; a refused load is quarantined and the live raw
  tables stay) → **features** (dbt, one task per model and its tests) → **document_features** →
  **check_quality** (features gate). This path does not update the asset, so it never triggers itself.

Then, on the load **features_ready** names:

1. **train_two_tower** — the TensorFlow two-tower retrieval model (the form's *model family* picks the
   user tower's sequence encoder: weighted pooling or a GRU over the recent items); epochs are chosen on
   the validation split, never on test. The dataset's **repeat policy** is fixed here (the form's
   *repeat_policy*, else `RECSYS_REPEAT_POLICY_<DATASET>` / `RECSYS_REPEAT_POLICY`, else from the share of
   repeat purchases in the validation period): `exclude` (never what a shopper has), `include` (the model
   ranks their own items too) or N "buy again" slots first; the tables, the SavedModel and the gate's
   variant all follow it;
2. **evaluate_models** / **score_users** — test metrics beside the baselines (most popular, item-kNN,
   user-kNN, EASE) on the per-user holdout (the "basket completion" view, reported); top-K for every user;
   **backtest** — the gate's view: the run's configuration and every baseline refitted before the global
   time cut (the last 30 days, moved back until 1,000 known shoppers return; the per-user holdout with
   baskets kept whole where few ever do) and tested after it, with already-bought items excluded and with
   repeat purchases counted;
3. **promotion_gate** — on that view, promote only if the model clears the absolute floors, beats the
   best baseline with a 95% paired bootstrap interval above zero, and is not significantly worse than
   the champion refitted on the same cut; the decision, every interval and reason are in its log;
   **approve_promotion** — where the gate found no significant difference and the dataset's setting
   `RECSYS_GATE_APPROVAL` asks for it, a data engineer approves or rejects promotion (Airflow's
   human-in-the-loop approval, with the report's link); no answer within the timeout keeps the champion,
   and scheduled runs never wait unless the setting is `always`. Otherwise it passes the gate's decision on;
4. **publish_release** — model, metrics, model card, recommendations, Data Docs and dbt docs to object
   storage under a versioned prefix, a manifest with checksums, then the champion pointer (only if
   promoted). Skipped in a **dry run**;
5. **load_recommendations** — swaps the new `recommendations` table into MySQL (only if promoted, and only
   while its release is still the champion: a rollback meanwhile wins, and the task says so).

A "no" from the gate is an outcome, not a crash: the run succeeds, the release is still published
for inspection, `load_recommendations` is skipped with the reasons. A failure names its stage and
reason in the log (and in `RECSYS_ALERT_WEBHOOK_URL`'s channel when set).

**Trigger with parameters** to choose the dataset (`online-retail`, `groceries`, or a folder of your own
`events`/`items`/`users` files), the model family, epochs, K, to force publishing or to make a dry run.
A rerun proves its release byte-identical (sha256) or publishes the next attempt (`<release id>-attempt<n>`)
beside it; two runs never overlap (`max_active_runs=1`), and publish, load and rollback tasks of every DAG
take turns in the one-slot pool `recsys_release`.
Models and releases: the **Recsys models** page in the Airflow menu.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag

from recsys_pipeline.features.task_group import TEMPLATE_MACROS
from recsys_pipeline.orchestration.approval import PromotionApproval
from recsys_pipeline.orchestration.assets import FEATURES
from recsys_pipeline.orchestration.dag_defaults import (
    START_DATE,
    cron_from_env,
    dataset_param,
    default_args,
    full_refresh_param,
)
from recsys_pipeline.orchestration.feature_tasks import (
    build_and_check_features,
    features_ready,
    plan_features,
    use_built_features,
)
from recsys_pipeline.orchestration.training_tasks import (
    MODEL_FAMILIES,
    backtest,
    evaluate_models,
    load_recommendations,
    promotion_gate,
    publish_release,
    score_users,
    train_two_tower,
)

DEFAULT_ARGS = default_args(execution_timeout=timedelta(hours=2))
TRAINING_CRON = cron_from_env("RECSYS_TRAINING_SCHEDULE", "0 3 * * 1")
# weekly, and whenever the features asset updates (or only the latter when the cron is off)
SCHEDULE = (
    AssetOrTimeSchedule(timetable=CronTriggerTimetable(TRAINING_CRON, timezone="UTC"), assets=FEATURES)
    if TRAINING_CRON
    else FEATURES
)


@dag(
    dag_id="recsys_training",
    schedule=SCHEDULE,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "training"],
    doc_md=__doc__,
    params={
        "dataset": dataset_param(" (a run triggered by the features asset uses the dataset it announced)"),
        "model_family": Param(
            "two_tower",
            type="string",
            enum=sorted(MODEL_FAMILIES),
            description="two_tower: the user tower pools the recent items with learned position weights; "
            "two_tower_gru: a GRU reads them in time order; two_tower_attention: a self-attention block "
            "(Transformer encoder layer, learned positions) reads them",
        ),
        "epochs": Param(
            20,
            type="integer",
            minimum=1,
            maximum=200,
            description="most training epochs of the two-tower model (it stops early on the validation metric)",
        ),
        "top_k": Param(
            20, type="integer", minimum=1, maximum=500, description="recommendations per user in the published tables"
        ),
        "repeat_policy": Param(
            None,
            type=["null", "string", "integer"],
            pattern="^(exclude|include|[0-9]+)$",
            minimum=1,
            maximum=500,
            description="may the lists show what a shopper already bought? exclude, include, or a number of 'buy "
            "again' slots first; empty: RECSYS_REPEAT_POLICY_<DATASET>, else RECSYS_REPEAT_POLICY, else chosen "
            "from the data (include when at least 10% of the validation period's purchases are repeat purchases)",
        ),
        "candidate_ranking": Param(
            True,
            type="boolean",
            description="publish the candidate ranking's lists (every source's candidates re-ranked with "
            "repeat-buying features) where the data has a time cut; off: the two-tower model's lists",
        ),
        "force_publish": Param(False, type="boolean", description="promote the model even if the gate says no"),
        "dry_run": Param(
            False,
            type="boolean",
            description="train, evaluate and decide, but publish nothing: no release, champion and MySQL table "
            "unchanged",
        ),
        "backtest": Param(
            False,
            type="boolean",
            description="no longer used: the global time cut is the gate's view and always runs (kept so that "
            "older trigger forms and configurations still validate)",
        ),
        "build_features": Param(
            True,
            type="boolean",
            description="load the dataset and build its features first; off: train on the warehouse's current "
            "features (they must be this dataset's and have passed the features gate), e.g. to try another model "
            "family quickly",
        ),
        "full_refresh": full_refresh_param(),
    },
    user_defined_macros=TEMPLATE_MACROS,
)
def recsys_training():
    plan = plan_features()
    staged, _, checked = build_and_check_features()
    built = use_built_features()
    plan >> [staged, built]
    ready = features_ready()
    [checked, built] >> ready
    trained = train_two_tower(ready)
    measured, scored, backtested = evaluate_models(), score_users(), backtest()
    trained >> [measured, scored]
    measured >> backtested
    decision = promotion_gate(ready)
    [measured, scored, backtested] >> decision
    approved = PromotionApproval(task_id="approve_promotion")  # asks only where the dataset's setting says so
    decision >> approved
    published = publish_release(ready, approved.output)
    load_recommendations(published)


recsys_training()
