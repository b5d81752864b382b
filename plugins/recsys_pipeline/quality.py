"""The data gate: Great Expectations suites run against the warehouse tables.

Suites live in ``expectations/*.json`` next to the code (versioned with it); each
names the table it checks and lists GX 1.x expectations by type and kwargs. They run
through GX's own API (an ephemeral context with a SQL data source on MySQL) rather
than the provider's operators, so the gate is one plain function the DAG task, the
CLI and the tests all call. A failed expectation raises ``DataQualityError`` whose
message names the suite, expectation, table, column and observed value, so the
Airflow task log says why the run stopped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

from recsys_pipeline.settings import PROJECT_ROOT, MySQLSettings

log = logging.getLogger(__name__)

SUITES_DIR = PROJECT_ROOT / "expectations"


class DataQualityError(RuntimeError):
    """At least one expectation failed; training and publishing must not run."""


@dataclass
class SuiteResult:
    suite: str
    table: str
    success: bool
    evaluated: int
    failures: list[str] = field(default_factory=list)


def load_suite_files(suites_dir: Path = SUITES_DIR) -> list[dict]:
    suites = []
    for path in sorted(suites_dir.glob("*.json")):
        spec = json.loads(path.read_text())
        for key in ("name", "table", "expectations"):
            if key not in spec:
                raise ValueError(f"{path}: suite file needs '{key}'")
        suites.append(spec)
    return suites


def _describe_failure(suite: str, table: str, result) -> str:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = kwargs.pop("column", None) or kwargs.pop("column_list", None)
    details = result.result or {}
    observed = details.get("observed_value")
    if observed is None and "unexpected_count" in details:
        sample = [str(v) for v in details.get("partial_unexpected_list", [])[:5]]
        observed = f"{int(details['unexpected_count'])} unexpected rows ({details.get('unexpected_percent', 0):.2f}%), e.g. {sample}"
    rule = {k: (v if isinstance(v, (int, float, list, type(None))) else str(v)) for k, v in kwargs.items() if k not in ("batch_id", "result_format")}
    return f"suite {suite}: {config.type} failed on table {table}, column {column}: observed {observed}; rule {rule}"


def run_suites(settings: MySQLSettings, suites: list[dict] | None = None, raise_on_failure: bool = True) -> list[SuiteResult]:
    """Validate every suite against its table in ``settings.database``.

    Returns one SuiteResult per suite; raises DataQualityError listing every failed
    expectation when ``raise_on_failure`` and any failed.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suites = load_suite_files() if suites is None else suites
    context = gx.get_context(mode="ephemeral")
    url = (
        f"mysql+mysqldb://{quote_plus(settings.user)}:{quote_plus(settings.password)}"
        f"@{settings.host}:{settings.port}/{settings.database}?charset=utf8mb4"
    )
    source = context.data_sources.add_sql(name="warehouse", connection_string=url)
    results: list[SuiteResult] = []
    for spec in suites:
        asset = source.add_table_asset(name=spec["name"], table_name=spec["table"])
        batch = asset.add_batch_definition_whole_table("whole_table")
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=spec["name"],
                expectations=[ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"]).to_domain_obj() for e in spec["expectations"]],
            )
        )
        validation = context.validation_definitions.add(gx.ValidationDefinition(name=spec["name"], data=batch, suite=suite))
        outcome = validation.run(result_format="SUMMARY")
        failures = [_describe_failure(spec["name"], spec["table"], r) for r in outcome.results if not r.success]
        results.append(SuiteResult(spec["name"], spec["table"], bool(outcome.success), len(outcome.results), failures))
        log.info("suite %s on %s: %s (%d expectations)", spec["name"], spec["table"], "passed" if outcome.success else "FAILED", len(outcome.results))
    failed = [f for r in results for f in r.failures]
    if failed and raise_on_failure:
        raise DataQualityError("data quality gate failed:\n" + "\n".join(failed))
    return results
