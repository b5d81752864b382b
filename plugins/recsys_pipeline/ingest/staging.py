"""Stage a dataset for the raw gate: map it onto the raw contract and write ``raw_*__new``.

The live raw tables are untouched until the raw gate admits the load. A file that
breaks the contract is recorded in the quarantine (name, size, sha256, reason) before
the error goes up, so a refused file can be found again after the run failed.
"""

from __future__ import annotations

import json
from pathlib import Path

from recsys_pipeline.ingest import loader
from recsys_pipeline.ingest.adapters import read_dataset
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.quality import quarantine
from recsys_pipeline.run import dataset_key
from recsys_pipeline.settings import MySQLSettings


def stage(settings: MySQLSettings, dataset: str, load_id: str) -> dict:
    """Read ``dataset`` (a name or a folder), check it and stage it; the summary the raw gate takes.

    The files are read, checked and written in batches; a batch that breaks the contract
    stops the load, drops what was staged and quarantines the file.
    """
    try:
        raw = read_dataset(dataset)
        summary = loader.stage_raw(raw, settings, load_id=load_id, online_key=dataset_key(dataset))
    except ContractError as error:
        source = Path(error.source) if error.source else None
        if source is not None and source.is_symlink():  # never read what a link points at
            source = None
        quarantine.quarantine_file(settings, load_id, f"raw_{error.entity or 'events'}", source, str(error))
        raise
    return summary.to_dict() | {"dbt_vars": raw.dbt_vars, "dbt_vars_json": json.dumps(raw.dbt_vars)}
