"""The Great Expectations suites are well-formed and agree with the dbt project."""

from __future__ import annotations

import csv

import pytest

from recsys_pipeline.quality import SUITES_DIR, load_suite_files
from recsys_pipeline.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit


def test_every_suite_builds_into_gx_expectations():
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suites = load_suite_files()
    assert {s["table"] for s in suites} >= {"stg_raw__events", "interactions_split", "user_features", "item_features"}
    for suite in suites:
        for spec in suite["expectations"]:
            ExpectationConfiguration(type=spec["type"], kwargs=spec["kwargs"]).to_domain_obj()


def test_allowed_event_types_are_the_seeds():
    with (PROJECT_ROOT / "dbt_project" / "seeds" / "event_weights.csv").open() as handle:
        seeded = {row["event_type"] for row in csv.DictReader(handle)}
    (events,) = [s for s in load_suite_files(SUITES_DIR) if s["table"] == "stg_raw__events"]
    (in_set,) = [e for e in events["expectations"] if e["type"] == "expect_column_values_to_be_in_set"]
    assert set(in_set["kwargs"]["value_set"]) == seeded
