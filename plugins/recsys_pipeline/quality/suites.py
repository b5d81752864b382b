"""The data gates: Great Expectations suites run against the warehouse, with Data Docs.

Suites live in ``expectations/*.json`` next to the code (versioned with it). Each names
its ``stage`` -- ``raw`` (the staged load, before it replaces the live raw tables),
``features`` (the dbt models, before training) -- the table it checks, its tunable
``parameters`` with defaults, and GX 1.x expectations by type and kwargs:

* kwargs may use GX suite parameters (``{"$PARAMETER": "max_events"}``), filled per run
  from the suite's defaults, ``RECSYS_DQ_<NAME>`` environment variables, and values the
  caller computes (bounds from the last good load);
* SQL of ``unexpected_rows_expectation`` may name other tables as ``${raw_items}`` and
  parameters as ``${max_rejected_share}``; GX fills ``{batch}``; such a rule names the
  column(s) it is about in its ``column`` (GX's query rule has no column of its own);
* a suite with ``"source": "statistics"`` checks a one-row frame of statistics the caller
  computes (the drift between this load and the last good one, ``profiles.py``).

Why not the provider's ``GXValidateCheckpointOperator``: it runs a checkpoint with
batch parameters only (no suite parameters, so no bounds from the previous load), and
its failure is a dump of the whole result. A gate here must also decide what happens
next -- quarantine the offending rows, keep or swap the staged tables -- so it is one
plain function over GX's own API that the DAG task, the CLI and the tests all call.

Keys of the large tables (staged events, the split) are checked unique by an
``unexpected_rows_expectation`` grouping on the key, not by GX's uniqueness expectations:
those count every row's copies with a window over the whole table, twice (the count,
then the examples), 62 of the features gate's 89 s at 10M events; grouped on the
table's primary key or unique index, 1.4 s a query (bench/README.md).

A failed expectation raises ``DataQualityError`` whose message names the suite,
expectation, table, column and observed value. Data Docs are built for every run,
passed or failed, into the run's folder (``data_docs/<stage>/index.html``).
"""

from __future__ import annotations

import json
import logging
import os
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

from recsys_pipeline.settings import PROJECT_ROOT, MySQLSettings

log = logging.getLogger(__name__)

SUITES_DIR = PROJECT_ROOT / "expectations"
STAGES = ("raw", "features")
UNEXPECTED_ROWS = "unexpected_rows_expectation"
EXAMPLE_ROWS = 3  # rows a failed unexpected-rows rule names


class DataQualityError(RuntimeError):
    """At least one expectation failed; training and publishing must not run."""

    def __init__(self, message: str, results: list[SuiteResult] | None = None, docs_index: Path | None = None):
        super().__init__(message)
        self.results = results or []
        self.docs_index = docs_index


@dataclass
class Failure:
    suite: str
    table: str
    expectation: str
    column: str | None
    observed: str
    rule: dict
    # keys of the offending rows where the expectation is about rows (empty for table-level rules);
    # GX lists only the first 20, its ``index_query`` (SQL on the checked table) selects them all
    row_keys: list = field(default_factory=list)
    index_query: str | None = None

    @property
    def rule_name(self) -> str:
        return f"{self.suite}.{self.expectation}" + (f"({self.column})" if self.column else "")

    def describe(self) -> str:
        return (
            f"suite {self.suite}: {self.expectation} failed on table {self.table}, column {self.column}: "
            f"observed {self.observed}; rule {self.rule}"
        )


@dataclass
class SuiteResult:
    suite: str
    table: str  # what was validated, as the messages name it (database.table)
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    # the suite's own table name (e.g. raw_events for the staged raw_events__new)
    checks: str = ""

    def to_dict(self) -> dict:
        return {
            "table": self.table,
            "success": self.success,
            "expectations": self.evaluated,
            "failures": [f.describe() for f in self.failures],
        }


def load_suite_files(suites_dir: Path = SUITES_DIR, stage: str | None = None) -> list[dict]:
    suites = []
    for path in sorted(suites_dir.glob("*.json")):
        spec = json.loads(path.read_text())
        for key in ("name", "stage", "table", "expectations"):
            if key not in spec:
                raise ValueError(f"{path}: suite file needs '{key}'")
        if spec["stage"] not in STAGES:
            raise ValueError(f"{path}: stage must be one of {STAGES}, not {spec['stage']!r}")
        if stage is None or spec["stage"] == stage:
            suites.append(spec)
    return suites


def suite_parameters(spec: dict, computed: dict | None = None) -> dict:
    """The suite's parameter defaults, overridden by ``RECSYS_DQ_<NAME>`` and then by ``computed``."""
    values = dict(spec.get("parameters", {}))
    for name, default in list(values.items()):
        env = os.environ.get(f"RECSYS_DQ_{name.upper()}")
        if env is not None:
            values[name] = (
                type(default)(env) if isinstance(default, (int, float)) and not isinstance(default, bool) else env
            )
    return values | (computed or {})


def _fill_sql(query: str, tables: dict[str, str], parameters: dict) -> str:
    """``${name}`` in a suite's SQL: a table of this stage (qualified) or a parameter."""
    names = {k: str(v) for k, v in parameters.items()} | tables
    try:
        return string.Template(query).substitute(names)
    except KeyError as error:
        raise ValueError(f"suite SQL names ${{{error.args[0]}}}, which is neither a table nor a parameter") from error


def _expectations(spec: dict, tables: dict[str, str], parameters: dict) -> list:
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for item in spec["expectations"]:
        kwargs = dict(item["kwargs"])
        if item["type"] == UNEXPECTED_ROWS:
            built.append(
                gx.expectations.UnexpectedRowsExpectation(
                    unexpected_rows_query=_fill_sql(kwargs["unexpected_rows_query"], tables, parameters),
                    description=item.get("description") or kwargs.get("description"),
                    meta={"rule": item.get("description", ""), "column": item.get("column")},
                )
            )
            continue
        built.append(ExpectationConfiguration(type=item["type"], kwargs=kwargs, meta=item.get("meta")).to_domain_obj())
    return built


def _observed(result, details: dict) -> str:
    raised = [info for info in _exception_infos(result) if info.get("raised_exception")]
    if raised:  # the check itself could not run (bad SQL, missing table): say so, not "None"
        return "an error while checking: " + str(raised[0].get("exception_message", "")).splitlines()[0]
    if result.expectation_config.type == UNEXPECTED_ROWS:
        rows = (details.get("details") or {}).get("unexpected_rows") or []
        return _unexpected_rows_text(details.get("observed_value"), rows)
    observed = details.get("observed_value")
    if observed is None and "unexpected_count" in details:
        sample = [str(v) for v in details.get("partial_unexpected_list", [])[:5]]
        share = details.get("unexpected_percent", 0)
        return f"{int(details['unexpected_count'])} unexpected rows ({share:.2f}%), e.g. {sample}"
    return str(observed)


def _add_example_rows(settings: MySQLSettings, database: str, table: str, result, failure: Failure) -> None:
    """Name a few of the rows an ``unexpected_rows_expectation`` found when GX's result left them out.

    GX returns those rows only with the COMPLETE result format, which for the column
    expectations of the same suite would mean every unexpected value of a 10M-row table;
    under SUMMARY its message said "1 unexpected rows, e.g. []". The rule's own query is
    run again on the checked table, for ``EXAMPLE_ROWS`` rows.
    """
    if result.expectation_config.type != UNEXPECTED_ROWS:
        return
    if any(info.get("raised_exception") for info in _exception_infos(result)):
        return
    details = result.result or {}
    if (details.get("details") or {}).get("unexpected_rows"):
        return
    import MySQLdb

    from recsys_pipeline import warehouse

    query = result.expectation_config.kwargs["unexpected_rows_query"].replace("{batch}", f"`{database}`.`{table}`")
    try:
        with warehouse.connect(settings, database=database) as conn:
            rows = warehouse.read_frame(conn, f"SELECT * FROM ({query}) AS unexpected LIMIT {EXAMPLE_ROWS}")
    except MySQLdb.Error as error:  # the rule's failure still stands; say why it has no examples
        log.warning("suite %s: no example rows for %s: %s", failure.suite, failure.rule_name, error)
        return
    examples = json.loads(rows.to_json(orient="records", date_format="iso", default_handler=str))
    failure.observed = _unexpected_rows_text(details.get("observed_value"), examples)


def _unexpected_rows_text(count, rows: list) -> str:
    return f"{count} unexpected rows, e.g. {json.dumps(rows[:EXAMPLE_ROWS], default=str)}"


def _exception_infos(result) -> list[dict]:
    info = result.exception_info or {}
    if "raised_exception" in info:
        return [info]
    return [v for v in info.values() if isinstance(v, dict)]


def _failure(spec: dict, table: str, result) -> Failure:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = kwargs.pop("column", None) or kwargs.pop("column_list", None) or (config.meta or {}).get("column")
    details = result.result or {}
    rule = {
        k: (v if isinstance(v, (int, float, list, type(None))) else str(v))
        for k, v in kwargs.items()
        if k not in ("batch_id", "result_format", "unexpected_rows_query")
    }
    if config.type == UNEXPECTED_ROWS:
        rule = {"rule": config.description}
    key = spec.get("key")
    row_keys: list = []
    if key:
        for row in details.get("unexpected_index_list") or []:
            if isinstance(row, dict) and key in row:
                row_keys.append(row[key])
        for row in (details.get("details") or {}).get("unexpected_rows") or []:
            if isinstance(row, dict) and key in row:
                row_keys.append(row[key])
    index_query = details.get("unexpected_index_query")
    return Failure(
        spec["name"],
        table,
        config.type,
        column if isinstance(column, str) else (str(column) if column else None),
        _observed(result, details),
        rule,
        row_keys,
        index_query if isinstance(index_query, str) else None,
    )


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(
            site_name="run",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _run_id(run_name: str | None):
    """GX names Data Docs pages by run name and time: the run's own, not the wall clock, so reruns match."""
    from great_expectations.core.run_identifier import RunIdentifier

    if run_name is None:
        return None
    try:
        run_time = datetime.strptime(run_name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        run_time = datetime(1970, 1, 1, tzinfo=UTC)
    return RunIdentifier(run_name=run_name, run_time=run_time)


def _url(settings: MySQLSettings, database: str) -> str:
    return (
        f"mysql+mysqldb://{quote_plus(settings.user)}:{quote_plus(settings.password)}"
        f"@{settings.host}:{settings.port}/{database}?charset=utf8mb4"
    )


def run_suites(
    settings: MySQLSettings,
    stage: str = "features",
    suites: list[dict] | None = None,
    tables: dict[str, tuple[str, str]] | None = None,
    computed_parameters: dict[str, dict] | None = None,
    statistics=None,
    docs_dir: Path | None = None,
    raise_on_failure: bool = True,
    run_name: str | None = None,
) -> list[SuiteResult]:
    """Validate the ``stage``'s suites and build their Data Docs into ``docs_dir``.

    ``tables`` maps a suite's logical table name to the (database, table) it checks
    (default: the features database, same name); ``computed_parameters`` holds
    per-suite parameter values; ``statistics`` is the frame for statistics suites
    (those are skipped when it is None: nothing to compare with yet). ``run_name`` (the
    run's release id) names the validation runs, so a rerun writes the same Data Docs pages.
    Raises DataQualityError listing every failed expectation when ``raise_on_failure``.
    """
    import great_expectations as gx

    suites = load_suite_files(stage=stage) if suites is None else suites
    tables = tables or {}
    computed_parameters = computed_parameters or {}
    context = _context(docs_dir)
    sources: dict[str, object] = {}
    qualified = {name: f"`{db}`.`{table}`" for name, (db, table) in tables.items()}
    results: list[SuiteResult] = []
    run_id = _run_id(run_name) or _run_id(datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))  # one for both passes
    for spec in suites:
        parameters = suite_parameters(spec, computed_parameters.get(spec["name"]))
        if spec.get("source") == "statistics":
            if statistics is None:
                log.info("suite %s skipped: no earlier good load to compare with", spec["name"])
                continue
            source = sources.get("__statistics__") or context.data_sources.add_pandas("statistics")
            sources["__statistics__"] = source
            batch = source.add_dataframe_asset(name=spec["name"]).add_batch_definition_whole_dataframe("all")
            batch_parameters = {"dataframe": statistics}
            table_label = f"{spec['table']} ({spec.get('compares', 'statistics')})"
        else:
            database, table = tables.get(spec["table"], (settings.database, spec["table"]))
            if database not in sources:
                sources[database] = context.data_sources.add_sql(
                    name=f"mysql_{database}", connection_string=_url(settings, database)
                )
            batch = (
                sources[database]
                .add_table_asset(name=spec["name"], table_name=table)
                .add_batch_definition_whole_table("whole_table")
            )
            batch_parameters = None
            table_label = f"{database}.{table}"
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=spec["name"],
                expectations=_expectations(spec, qualified, parameters),
                meta={"description": spec.get("description", "")},
            )
        )
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=spec["name"], data=batch, suite=suite)
        )
        actions = (
            [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["run"])] if docs_dir is not None else []
        )
        # The verdict first, then the details only where a rule failed. With the details asked for, GX
        # looks for every rule's unexpected values and rows whatever the counts said: at 10M raw events 13
        # of the raw gate's 16 full scans (70 of 102 s of statements) found nothing on a passing load. A
        # failed suite runs again with them, under the same run id, so its Data Docs page and the gate's
        # message name the rows; a passing suite's page marks each rule passed, without observed values.
        detailed = (
            {"result_format": "COMPLETE", "unexpected_index_column_names": [spec["key"]]}
            if spec.get("key")
            else "SUMMARY"
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=spec["name"],
                validation_definitions=[validation],
                actions=actions,
                result_format="BOOLEAN_ONLY",
            )
        )
        outcome = checkpoint.run(batch_parameters=batch_parameters, expectation_parameters=parameters, run_id=run_id)
        if not next(iter(outcome.run_results.values())).success:
            checkpoint.result_format = detailed
            checkpoint.save()  # GX refuses to run a checkpoint changed since it was stored
            outcome = checkpoint.run(
                batch_parameters=batch_parameters, expectation_parameters=parameters, run_id=run_id
            )
        validation_result = next(iter(outcome.run_results.values()))
        failures = []
        for result in validation_result.results:
            if not result.success:
                failures.append(_failure(spec, table_label, result))
                if batch_parameters is None:
                    _add_example_rows(settings, database, table, result, failures[-1])
        results.append(
            SuiteResult(
                spec["name"],
                table_label,
                bool(validation_result.success),
                len(validation_result.results),
                failures,
                checks=spec["table"],
            )
        )
        log.info(
            "suite %s on %s: %s (%d expectations)",
            spec["name"],
            table_label,
            "passed" if validation_result.success else "FAILED",
            len(validation_result.results),
        )
    failed = [f.describe() for r in results for f in r.failures]
    if failed and raise_on_failure:
        index = docs_dir / "index.html" if docs_dir is not None else None
        raise DataQualityError(f"data quality gate ({stage}) failed:\n" + "\n".join(failed), results, index)
    return results
