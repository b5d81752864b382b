"""Adapters: map each source onto the raw data contract (events, items, users).

An adapter decides only what the source's columns *mean*; it keeps every row,
including anonymous baskets, fees and cancellations, so nothing is lost before the
documented cleaning rules in dbt's staging models. Supported sources:

* ``online-retail``: UCI Online Retail (Chen, 2015; DOI 10.24432/C5BW33), one Parquet file.
* ``groceries``: the Kaggle groceries purchase log, one CSV (``Member_number, Date, itemDescription``).
* a folder of the user's own files ``events``, ``items`` (optional), ``users`` (optional),
  each ``.csv`` or ``.parquet``, already in the contract's column names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from recsys_pipeline.ingest.contract import ContractError, check_frame
from recsys_pipeline.ingest.event_times import TimeFormat
from recsys_pipeline.settings import data_dir


@dataclass
class RawDataset:
    """One source mapped onto the contract, with what dbt needs to know about it."""

    name: str
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    source_files: list[Path]
    # dbt vars for this dataset (e.g. which item ids are products)
    dbt_vars: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 over the source files' bytes: the version of the data a model was trained on."""
        digest = hashlib.sha256()
        for path in sorted(self.source_files):
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


def _most_common(frame: pd.DataFrame, key: str, value: str) -> pd.Series:
    """Per ``key``, the most frequent non-null ``value`` (ties: the smallest value)."""
    counts = frame.dropna(subset=[value]).groupby([key, value], sort=True).size().rename("n").reset_index()
    counts = counts.sort_values([key, "n", value], ascending=[True, False, True], kind="mergesort")
    return counts.drop_duplicates(key).set_index(key)[value]


ONLINE_RETAIL_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]

# Online Retail's products have five-digit stock codes with an optional letter suffix;
# everything else (POST, M, BANK CHARGES, gift_0001_10, ...) is a fee or an adjustment.
ONLINE_RETAIL_PRODUCT_PATTERN = "^[0-9]{5}[A-Za-z]?$"


def online_retail(path: Path) -> RawDataset:
    """Every invoice line becomes an event: a ``return`` when the invoice is a cancellation
    (number starting with C) or the quantity is negative, else a ``purchase``. Lines
    without CustomerID keep a NULL user (anonymous baskets). Items take their most
    common description as title and most common positive unit price; users their country.
    """
    source = pd.read_parquet(path)
    missing = [c for c in ONLINE_RETAIL_COLUMNS if c not in source.columns]
    if missing:
        raise ContractError(
            f"{path}: Online Retail columns {missing} are missing; found {list(source.columns)}", str(path), "events"
        )
    invoice = source["InvoiceNo"].astype("string").str.strip()
    quantity = pd.to_numeric(source["Quantity"], errors="raise")
    is_return = invoice.str.upper().str.startswith("C") | (quantity < 0)
    customer = pd.to_numeric(source["CustomerID"], errors="raise").astype("Int64").astype("string")
    events = pd.DataFrame(
        {
            "source_row_id": pd.RangeIndex(1, len(source) + 1),
            "user_id": customer,
            # Stock codes are case-insensitive in this source (15056bl and 15056BL are one
            # product), so they are upper-cased.
            "item_id": source["StockCode"].astype("string").str.strip().str.upper(),
            "event_type": is_return.map({True: "return", False: "purchase"}).astype("string"),
            "quantity": quantity,
            "price": pd.to_numeric(source["UnitPrice"], errors="raise"),
            "event_time": pd.to_datetime(source["InvoiceDate"]).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "basket_id": invoice,
        }
    )
    lines = events.assign(title=source["Description"].astype("string").str.strip())
    titles = _most_common(lines, "item_id", "title")
    prices = _most_common(lines[lines["price"] > 0], "item_id", "price")
    item_ids = pd.Index(events["item_id"].dropna().unique()).sort_values()
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles.reindex(item_ids).to_numpy(),
            "price": prices.reindex(item_ids).to_numpy(),
        }
    )
    countries = _most_common(events.assign(country=source["Country"].astype("string")), "user_id", "country")
    users = pd.DataFrame({"user_id": countries.index, "country": countries.to_numpy()})
    return RawDataset(
        name="online-retail",
        events=check_frame(events, "events", str(path)),
        items=check_frame(items, "items", str(path)),
        users=check_frame(users, "users", str(path)),
        source_files=[path],
        dbt_vars={"product_id_pattern": ONLINE_RETAIL_PRODUCT_PATTERN},
    )


def slugify(text: str) -> str:
    """A stable item id from a description: lower case, runs of non-alphanumerics as '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64]


def groceries(path: Path) -> RawDataset:
    """Every row is a ``purchase`` of quantity 1 on its date (kept as written: the file mixes
    ``dd-mm-yyyy`` and ``d/m/yyyy``, parsed in staging). A member's purchases on one day
    form one basket. Items are identified by a slug of their description.
    """
    first = pd.read_csv(path, nrows=1, header=None, dtype="string")
    has_header = not str(first.iloc[0, 0]).strip().isdigit()
    source = pd.read_csv(path, header=0 if has_header else None, dtype="string")
    if source.shape[1] != 3:
        raise ContractError(
            f"{path}: expected 3 columns (Member_number, Date, itemDescription), found {source.shape[1]}",
            str(path),
            "events",
        )
    source.columns = ["member", "date", "description"]
    description = source["description"].str.strip()
    if description.isna().any():
        raise ContractError(
            f"{path}: column 'itemDescription' is empty at row "
            f"{int(description.isna().to_numpy().nonzero()[0][0]) + 1}",
            str(path),
            "events",
        )
    item_id = description.map(slugify).astype("string")
    events = pd.DataFrame(
        {
            "source_row_id": pd.RangeIndex(1, len(source) + 1),
            "user_id": source["member"].str.strip(),
            "item_id": item_id,
            "event_type": "purchase",
            "quantity": 1.0,
            "event_time": source["date"].str.strip(),
            "basket_id": source["member"].str.strip() + "@" + source["date"].str.strip(),
        }
    )
    titles = _most_common(pd.DataFrame({"item_id": item_id, "title": description}), "item_id", "title")
    items = pd.DataFrame({"item_id": titles.index, "title": titles.to_numpy()})
    users = pd.DataFrame({"user_id": events["user_id"].dropna().drop_duplicates().sort_values().to_numpy()})
    return RawDataset(
        name="groceries",
        events=check_frame(events, "events", str(path)),
        items=check_frame(items, "items", str(path)),
        users=check_frame(users, "users", str(path)),
        source_files=[path],
    )


def _read_table_file(folder: Path, stem: str, required: bool) -> tuple[pd.DataFrame | None, Path | None]:
    for suffix, reader in (
        (".parquet", pd.read_parquet),
        (".csv", lambda p: pd.read_csv(p, dtype="string", encoding="utf-8")),
    ):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            try:
                return reader(path), path
            except UnicodeDecodeError as error:
                raise ContractError(
                    f"{path}: not valid UTF-8 text ({error.reason} at byte {error.start})", str(path), stem
                ) from error
            except pd.errors.EmptyDataError as error:
                raise ContractError(f"{path}: the file is empty (no header, no rows)", str(path), stem) from error
    if required:
        raise ContractError(f"{folder}: no {stem}.csv or {stem}.parquet found", str(folder), stem)
    return None, None


CONTRACT_FILES = ("contract.json", "contract.yaml", "contract.yml")


def read_contract(folder: Path) -> tuple[dict, Path | None]:
    """What the folder declares about its files (``contract.json`` or ``.yaml``), e.g.
    ``{"event_time": {"format": "day_first", "timezone": "Europe/Berlin"}}``."""
    for name in CONTRACT_FILES:
        path = folder / name
        if path.exists():
            try:
                declared = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
            except (ValueError, yaml.YAMLError) as error:
                raise ContractError(
                    f"{path}: not a valid {path.suffix[1:]} file: {error}", str(path), "events"
                ) from error
            if not isinstance(declared, dict):
                raise ContractError(f'{path}: must hold an object, e.g. {{"event_time": {{...}}}}', str(path), "events")
            return declared, path
    return {}, None


def contract_files(folder: Path) -> RawDataset:
    """A user's own files, already in the contract's column names.

    ``events`` is required; ``items`` and ``users`` are derived from the events' ids when
    absent. ``source_row_id`` is the row number when the file has none.
    """
    declared, contract_path = read_contract(folder)
    events, events_path = _read_table_file(folder, "events", required=True)
    assert events is not None and events_path is not None
    if events.empty:
        raise ContractError(f"{events_path}: the file has a header but no rows", str(events_path), "events")
    if "source_row_id" not in events.columns:
        events.insert(0, "source_row_id", range(1, len(events) + 1))
    try:
        times = TimeFormat.from_contract(declared)
    except ValueError as error:
        raise ContractError(f"{contract_path}: {error}", str(contract_path), "events") from error
    events = check_frame(events, "events", str(events_path), times)
    items, items_path = _read_table_file(folder, "items", required=False)
    if items is None:
        items = pd.DataFrame({"item_id": events["item_id"].dropna().drop_duplicates().sort_values().to_numpy()})
    users, users_path = _read_table_file(folder, "users", required=False)
    if users is None:
        users = pd.DataFrame({"user_id": events["user_id"].dropna().drop_duplicates().sort_values().to_numpy()})
    files = [p for p in (events_path, items_path, users_path, contract_path) if p is not None]
    return RawDataset(
        name=folder.name,
        events=events,
        items=check_frame(items, "items", str(items_path or events_path)),
        users=check_frame(users, "users", str(users_path or events_path)),
        source_files=files,
    )


BUILTIN: dict[str, tuple[Callable[[Path], RawDataset], str]] = {
    "online-retail": (online_retail, "online-retail/online_retail.parquet"),
    "groceries": (groceries, "groceries/Groceries_dataset.csv"),
}


def read_dataset(dataset: str) -> RawDataset:
    """Resolve ``dataset`` -- a built-in name or a path to a folder of contract files -- and map it."""
    if dataset in BUILTIN:
        adapter, relative = BUILTIN[dataset]
        path = data_dir() / relative
        if not path.exists():
            raise ContractError(
                f"dataset {dataset!r}: {path} not found (set RECSYS_DATA_DIR to the folder that holds it)"
            )
        return adapter(path)
    path = Path(dataset).expanduser()
    if path.is_dir():
        return contract_files(path)
    raise ContractError(
        f"dataset {dataset!r} is neither a built-in ({', '.join(BUILTIN)}) nor a folder with events.csv/events.parquet"
    )
