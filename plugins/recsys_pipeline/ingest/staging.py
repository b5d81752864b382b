"""Stage a dataset for the raw gate: map it onto the raw contract and write ``raw_*__new``.

The live raw tables are untouched until the raw gate admits the load. A file that
breaks the contract is recorded in the quarantine (name, size, sha256, reason) before
the error goes up, so a refused file can be found again after the run failed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from recsys_pipeline.ingest import loader
from recsys_pipeline.ingest.adapters import RawDataset, read_dataset
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.quality import quarantine
from recsys_pipeline.settings import MySQLSettings


def stage(settings: MySQLSettings, dataset: str, load_id: str) -> dict:
    """Read ``dataset`` (a name or a folder), check it and stage it; the summary the raw gate takes."""
    try:
        raw = read_dataset(dataset)
        check_event_times(raw)
    except ContractError as error:
        source = Path(error.source) if error.source else None
        quarantine.quarantine_file(settings, load_id, f"raw_{error.entity or 'events'}", source, str(error))
        raise
    summary = loader.stage_raw(raw, settings, load_id=load_id)
    return summary.to_dict() | {"dbt_vars": raw.dbt_vars, "dbt_vars_json": json.dumps(raw.dbt_vars)}


def max_unparseable_share() -> float:
    """The share of event times no format may read before a load is refused (the rest are quarantined)."""
    return float(os.environ.get("RECSYS_MAX_UNPARSEABLE_EVENT_TIME_SHARE", "0.01"))


def check_event_times(raw: RawDataset) -> None:
    """Refuse a load whose event times mostly fail to parse: a wrong or undeclared format, not a few bad rows.

    Below the share, the rows are kept and dbt's staging lists them as
    ``unparseable_event_time`` in ``stg_raw__rejected_events``.
    """
    events = raw.events
    written = events["event_time"].notna()
    failed = written & events["event_at"].isna()
    limit = max_unparseable_share()
    share = float(failed.sum()) / max(int(written.sum()), 1)
    if share <= limit:
        return
    source = str(raw.source_files[0]) if raw.source_files else raw.name
    examples = ", ".join(repr(v) for v in pd.unique(events.loc[failed, "event_time"])[:3])
    raise ContractError(
        f"{source}: column 'event_time': {share:.1%} of {int(written.sum()):,} values match no time format "
        f"(rule unparseable_event_time: at most {limit:.1%}, RECSYS_MAX_UNPARSEABLE_EVENT_TIME_SHARE), "
        f"e.g. {examples}; "
        'declare the format in the folder\'s contract.json, e.g. {"event_time": {"format": "%d.%m.%Y %H:%M"}}',
        source,
        "events",
    )
