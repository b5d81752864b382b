"""The raw gate: Great Expectations suites on a staged load, before dbt sees it.

Only a load that passes replaces the live raw tables. A refused load leaves them as
they were: its offending rows go to the quarantine with their rule, a table-level
failure (volume, drift) records the whole load there, the staged tables are kept as
``raw_*__rejected`` for inspection, and ``DataQualityError`` names the suite,
expectation, table, column and observed value.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd

from recsys_pipeline import warehouse
from recsys_pipeline.features import builds
from recsys_pipeline.ingest import loader
from recsys_pipeline.quality import profiles, quarantine, suites
from recsys_pipeline.run import RunArtifacts, RunContext, dataset_key
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

GATE = "raw"
SUMMARY_KEYS = (
    "load_id",
    "dataset",
    "data_version",
    "rows",
    "seconds",
    "rows_per_second",
    "new_events",
    "changed_or_removed_events",
)


def validate_raw(settings: MySQLSettings, run: RunContext, staged: dict, full_refresh: bool = False) -> dict:
    """Run the raw gate on ``staged`` (``ingest.staging.stage``'s summary); admit the load only if it passes.

    Returns the staged summary with the next dbt build's plan (``dbt_plan``) and each
    suite's outcome. A retry after the load was admitted finds it admitted and plans again.
    """
    state = loader.staged_state(settings, staged["load_id"], staged["data_version"])
    if state == "missing":
        raise warehouse.LoadError(
            f"load {staged['load_id']} is not staged in {settings.raw_database}.raw_*__new (refused earlier and set "
            "aside as raw_*__rejected?): run load_raw again (clear it too in the Airflow UI)"
        )
    if state == "admitted":  # a retry after the swap: the gate passed then
        log.info("load %s was already admitted by an earlier attempt", staged["load_id"])
        return _admitted(settings, staged, full_refresh, gate={})
    artifacts = run.artifacts
    profile, computed, statistics = _gate_inputs(settings, staged)
    tables = {
        entity_table: (settings.raw_database, staged_table)
        for entity_table, staged_table in zip(loader.RAW_TABLES.values(), loader.STAGED_TABLES.values(), strict=True)
    }
    docs_dir = artifacts.data_docs(GATE)
    shutil.rmtree(docs_dir, ignore_errors=True)
    try:
        results = suites.run_suites(
            settings,
            GATE,
            tables=tables,
            computed_parameters=computed,
            statistics=statistics,
            docs_dir=docs_dir,
            run_name=run.release_id,
        )
    except suites.DataQualityError as error:
        kept = _quarantine_refused_load(settings, staged, error)
        artifacts.write_json(RunArtifacts.QUALITY_RAW, {"passed": False, "error": str(error), "kept_as": kept})
        raise
    loader.admit_staged(settings, loader.LoadSummary(**{k: staged[k] for k in SUMMARY_KEYS}))
    profiles.record_profile(settings, profile)
    gate = {r.suite: r.to_dict() for r in results}
    artifacts.write_json(RunArtifacts.QUALITY_RAW, {"passed": True, "suites": gate})
    return _admitted(settings, staged, full_refresh, gate)


def _admitted(settings: MySQLSettings, staged: dict, full_refresh: bool, gate: dict) -> dict:
    plan = builds.prepare_build(settings, staged["dbt_vars"], full_refresh)
    log.info(
        "raw load %s admitted; next dbt build: %s (%s)",
        staged["load_id"],
        "full refresh" if plan.full_refresh else "incremental",
        plan.reason,
    )
    return staged | {"dbt_plan": plan.to_dict(), "raw_gate": {name: r["success"] for name, r in gate.items()}}


def _gate_inputs(settings: MySQLSettings, staged: dict) -> tuple[profiles.LoadProfile, dict, pd.DataFrame | None]:
    """This load's profile, the suites' computed parameters and the drift statistics (None on a first load)."""
    dataset = dataset_key(staged["dataset"])
    profile = profiles.profile_tables(settings, dataset, staged["load_id"], loader.STAGED_TABLES)
    before = profiles.last_good_profile(settings, dataset, exclude_load_id=staged["load_id"])
    events_suite = next(s for s in suites.load_suite_files(stage=GATE) if s["name"] == "raw_events")
    defaults = suites.suite_parameters(events_suite)
    computed: dict[str, dict] = {}
    statistics = None
    if before is not None:
        previous = before.rows["events"]
        computed["raw_events"] = {
            "min_events": max(1, int(np.ceil(previous * (1 - float(defaults["max_row_drop_share"]))))),
            "max_events": int(previous * float(defaults["max_row_growth"])),
        }
        top = [item for item in before.item_shares if item != profiles.OTHER_ITEMS]
        counts = profiles.item_counts_for(settings, loader.STAGED_TABLES["events"], top)
        statistics = pd.DataFrame(
            {
                "event_type_mix_linf": [round(profiles.event_type_mix_linf(profile, before), 6)],
                "item_popularity_jsd": [round(profiles.item_popularity_jsd(counts, profile.rows["events"], before), 6)],
                "compared_with_load": [before.load_id],
            }
        )
        log.info(
            "raw gate: comparing with the last good load %s (%s events): %s",
            before.load_id,
            previous,
            statistics.drop(columns="compared_with_load").to_dict("records")[0],
        )
    else:
        log.info("raw gate: first load of %s, no earlier load to compare volume and distributions with", dataset)
    return profile, computed, statistics


def _quarantine_refused_load(settings: MySQLSettings, staged: dict, error: suites.DataQualityError) -> list[str]:
    load_id = staged["load_id"]
    quarantine.clear_load(settings, load_id)
    for result in error.results:
        entity_table = result.checks
        entity = entity_table.removeprefix("raw_")
        for failure in result.failures:
            if failure.row_keys or failure.index_query:
                key = loader.PRIMARY_KEYS[entity]
                keys = (
                    quarantine.keys_from_query(settings, failure.index_query, key)
                    if failure.index_query
                    else failure.row_keys
                )
                copied = quarantine.quarantine_rows(
                    settings,
                    load_id,
                    entity_table,
                    loader.STAGED_TABLES[entity],
                    key,
                    keys,
                    failure.rule_name,
                    failure.describe(),
                )
                log.warning("quarantined %d rows of %s: %s", copied, entity_table, failure.rule_name)
            else:
                quarantine.quarantine_load(
                    settings, load_id, entity_table, failure.rule_name, failure.describe(), staged["rows"]
                )
    kept = loader.reject_staged(settings)
    log.warning("refused load %s kept as %s; the live raw tables are unchanged", load_id, ", ".join(kept))
    return kept
