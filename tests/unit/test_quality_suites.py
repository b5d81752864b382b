"""The Great Expectations suites are well-formed and agree with the dbt project."""

from __future__ import annotations

import csv
import json
import re

import pytest

from recsys_pipeline.quality.suites import (
    SUITES_DIR,
    UNEXPECTED_ROWS,
    _expectations,
    load_suite_files,
    suite_parameters,
)
from recsys_pipeline.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit


def _parameter_names(value) -> set[str]:
    if isinstance(value, dict):
        if "$PARAMETER" in value:
            return {value["$PARAMETER"]}
        return set().union(*(_parameter_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_parameter_names(v) for v in value)) if value else set()
    return set()


def test_every_suite_builds_into_gx_expectations():
    suites = load_suite_files()
    assert {s["table"] for s in suites} >= {
        "raw_events",
        "raw_items",
        "raw_users",
        "stg_raw__events",
        "interactions_split",
        "user_features",
        "item_features",
        "stg_raw__rejected_events",
    }
    assert {s["stage"] for s in suites} == {"raw", "features"}
    tables = {"raw_events": "`db`.`raw_events`", "raw_items": "`db`.`raw_items`"}
    for suite in suites:
        parameters = suite_parameters(suite, {"min_events": 1, "max_events": 2})
        built = _expectations(suite, tables, parameters)
        assert len(built) == len(suite["expectations"])


def test_every_parameter_a_suite_uses_has_a_default_or_is_computed():
    computed = {"min_events", "max_events"}  # from the last good load (quality.raw_gate._gate_inputs)
    for suite in load_suite_files():
        defaults = set(suite.get("parameters", {}))
        used = _parameter_names(suite["expectations"])
        for spec in suite["expectations"]:
            if spec["type"] == UNEXPECTED_ROWS:
                used |= set(re.findall(r"\$\{(\w+)\}", spec["kwargs"]["unexpected_rows_query"])) - {
                    "raw_events",
                    "raw_items",
                }
        assert used <= defaults | computed, f"suite {suite['name']} uses {used - defaults - computed} without a default"


def test_parameters_can_be_overridden_from_the_environment(monkeypatch):
    (drift,) = [s for s in load_suite_files(stage="raw") if s["name"] == "raw_events_drift"]
    assert suite_parameters(drift)["max_event_type_mix_linf"] == 0.1
    monkeypatch.setenv("RECSYS_DQ_MAX_EVENT_TYPE_MIX_LINF", "0.25")
    assert suite_parameters(drift)["max_event_type_mix_linf"] == 0.25
    assert suite_parameters(drift, {"max_event_type_mix_linf": 0.3})["max_event_type_mix_linf"] == 0.3


@pytest.mark.parametrize("table", ["stg_raw__events", "raw_events"])
def test_allowed_event_types_are_the_seeds(table):
    with (PROJECT_ROOT / "dbt_project" / "seeds" / "event_weights.csv").open() as handle:
        seeded = {row["event_type"] for row in csv.DictReader(handle)}
    (events,) = [s for s in load_suite_files(SUITES_DIR) if s["table"] == table and s.get("source") != "statistics"]
    (in_set,) = [e for e in events["expectations"] if e["type"] == "expect_column_values_to_be_in_set"]
    assert set(in_set["kwargs"]["value_set"]) == seeded


def test_raw_suites_expect_exactly_the_contracts_columns():
    from recsys_pipeline.ingest.contract import CONTRACT

    for suite in load_suite_files(stage="raw"):
        if suite.get("source") == "statistics":
            continue
        entity = suite["table"].removeprefix("raw_")
        (columns,) = [e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set"]
        assert columns["kwargs"]["column_set"] == [c.name for c in CONTRACT[entity]] + [
            "row_hash",
            "load_id",
            "loaded_at",
        ]
        types = {
            e["kwargs"]["column"]: e["kwargs"]["type_"]
            for e in suite["expectations"]
            if e["type"] == "expect_column_values_to_be_of_type"
        }
        assert types == {c.name: c.sql_type.split()[0].split("(")[0] for c in CONTRACT[entity]}


def test_suite_files_are_formatted_json():
    for path in SUITES_DIR.glob("*.json"):
        assert json.loads(path.read_text())["name"] == path.stem
