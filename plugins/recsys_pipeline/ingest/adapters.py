"""Adapters: map each source onto the raw data contract (events, items, users).

An adapter decides only what the source's columns *mean*; it keeps every row,
including anonymous baskets, fees and cancellations, so nothing is lost before the
documented cleaning rules in dbt's staging models. Supported sources:

* ``online-retail``: UCI Online Retail (Chen, 2015; DOI 10.24432/C5BW33), one Parquet file.
* ``groceries``: the Kaggle groceries purchase log, one CSV (``Member_number, Date, itemDescription``).
* a folder of the user's own files ``events``, ``items`` (optional), ``users`` (optional),
  each ``.csv``, ``.csv.gz`` or ``.parquet``, already in the contract's column names: read in
  batches (``readers``), never whole, and only from an allowed folder (``inputs``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from recsys_pipeline.ingest.contract import CONTRACT, ContractError, EventTimeTally, check_frame
from recsys_pipeline.ingest.event_times import AmbiguousTimes, TimeFormat, date_order, has_numeric_dates
from recsys_pipeline.ingest.inputs import BUILTIN_DATASETS, dataset_key, refuse_link, resolve_dataset_folder
from recsys_pipeline.ingest.readers import CsvFormat, check_file_size, find_table_file, read_batches
from recsys_pipeline.settings import data_dir


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the source files' bytes: the version of the data a model was trained on."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class RawDataset:
    """One source mapped onto the contract, with what dbt needs to know about it (held in memory)."""

    name: str
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    source_files: list[Path]
    # dbt vars for this dataset (e.g. which item ids are products)
    dbt_vars: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        return fingerprint(self.source_files)

    def source_of(self, entity: str) -> str:
        return str(self.source_files[0]) if self.source_files else self.name

    def stream(self, entity: str) -> Iterator[pd.DataFrame]:
        """The checked rows of ``entity`` in batches (here one); events end with the unparseable-times rule."""
        frame = getattr(self, entity)
        if entity == "events":
            tally = EventTimeTally(self.source_of(entity))
            tally.add(frame)
            tally.check()
        yield frame


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


CONTRACT_FILES = ("contract.json", "contract.yaml", "contract.yml")
CONTRACT_FILE_MAX_BYTES = 1 << 20


def read_contract(folder: Path) -> tuple[dict, Path | None]:
    """What the folder declares about its files (``contract.json`` or ``.yaml``), e.g.
    ``{"event_time": {"format": "day_first", "timezone": "Europe/Berlin"}, "csv": {"delimiter": ";"}}``."""
    for name in CONTRACT_FILES:
        path = folder / name
        refuse_link(path, "contract file")
        if path.exists():
            if path.stat().st_size > CONTRACT_FILE_MAX_BYTES:
                raise ContractError(f"{path}: larger than {CONTRACT_FILE_MAX_BYTES:,} bytes", str(path), "events")
            try:
                text = path.read_text(encoding="utf-8-sig")
                declared = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (ValueError, yaml.YAMLError) as error:
                raise ContractError(
                    f"{path}: not a valid {path.suffix[1:]} file: {error}", str(path), "events"
                ) from error
            if not isinstance(declared, dict):
                raise ContractError(f'{path}: must hold an object, e.g. {{"event_time": {{...}}}}', str(path), "events")
            return declared, path
    return {}, None


class FolderDataset:
    """A user's folder of contract files, read in batches while it is loaded.

    ``stream(entity)`` checks each batch against the contract as it goes; ``events``,
    ``items`` and ``users`` read everything at once, for tools and tests only. Items and
    users absent from the folder are derived from the ids the events stream saw, so
    ``events`` must be streamed first.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.name = dataset_key(str(folder.absolute()))
        self.dbt_vars: dict[str, str] = {}
        declared, self.contract_path = read_contract(folder)
        try:
            self.times = TimeFormat.from_contract(declared)
            self.csv = CsvFormat.from_contract(declared)
        except ValueError as error:
            raise ContractError(f"{self.contract_path}: {error}", str(self.contract_path), "events") from error
        self.files = {entity: find_table_file(folder, entity) for entity in CONTRACT}
        if self.files["events"] is None:
            raise ContractError(
                f"{folder}: no events.csv, events.csv.gz or events.parquet found", str(folder), "events"
            )
        for entity, path in self.files.items():
            if path is not None:
                check_file_size(path, entity)
        self._seen_ids: dict[str, set] | None = None

    @property
    def source_files(self) -> list[Path]:
        return [p for p in (*self.files.values(), self.contract_path) if p is not None]

    def fingerprint(self) -> str:
        return fingerprint(self.source_files)

    def source_of(self, entity: str) -> str:
        return str(self.files[entity] or self.files["events"])

    def stream(self, entity: str) -> Iterator[pd.DataFrame]:
        if entity == "events":
            yield from self._events()
            return
        path = self.files[entity]
        if path is not None:
            row = 0
            for frame in read_batches(path, entity, self.csv):
                yield check_frame(frame, entity, str(path), first_row=row)
                row += len(frame)
            return
        if self._seen_ids is None:
            raise RuntimeError(f"{entity} of {self.folder} are derived from the events: stream the events first")
        key = f"{entity.removesuffix('s')}_id"
        derived = pd.DataFrame({key: sorted(self._seen_ids[key])}, dtype="string")
        yield check_frame(derived, entity, self.source_of(entity))

    def _events(self) -> Iterator[pd.DataFrame]:
        path = self.files["events"]
        source = str(path)
        tally = EventTimeTally(source)
        # the ids of the entities the folder has no file for: their rows are derived from them
        seen: dict[str, set] = {f"{e.removesuffix('s')}_id": set() for e in ("items", "users") if not self.files[e]}
        times, decided, row = self.times, self.times.format is not None, 0
        for frame in read_batches(path, "events", self.csv):
            if "source_row_id" not in frame.columns:
                frame.insert(0, "source_row_id", range(row + 1, row + len(frame) + 1))
            if not decided and "event_time" in frame.columns and has_numeric_dates(frame["event_time"]):
                times, decided = self._date_order(path, times), True
            checked = check_frame(frame, "events", source, times, first_row=row)
            tally.add(checked)
            for column, ids in seen.items():
                ids.update(checked[column].dropna().unique())
            row += len(frame)
            yield checked
        if row == 0:
            raise ContractError(f"{path}: the file has a header but no rows", source, "events")
        tally.check()
        self._seen_ids = seen

    def _date_order(self, path: Path, times: TimeFormat) -> TimeFormat:
        """Day- or month-first, decided over the whole file's times (a column-only pass)."""
        chunks = (f["event_time"] for f in read_batches(path, "events", self.csv, columns=["event_time"]))
        try:
            return dataclasses.replace(times, format=date_order(chunks))
        except AmbiguousTimes as error:
            raise ContractError(f"{path}: column 'event_time': {error}", str(path), "events") from error

    def _read_all(self, entity: str) -> pd.DataFrame:
        if entity != "events" and self.files[entity] is None and self._seen_ids is None:
            for _ in self.stream("events"):  # the ids the derived rows come from
                pass
        return pd.concat(list(self.stream(entity)), ignore_index=True)

    @property
    def events(self) -> pd.DataFrame:
        return self._read_all("events")

    @property
    def items(self) -> pd.DataFrame:
        return self._read_all("items")

    @property
    def users(self) -> pd.DataFrame:
        return self._read_all("users")


def contract_files(folder: Path) -> FolderDataset:
    """A user's own files, already in the contract's column names (read in batches when loaded).

    ``events`` is required; ``items`` and ``users`` are derived from the events' ids when
    absent. ``source_row_id`` is the row number when the file has none.
    """
    return FolderDataset(Path(folder))


BUILTIN: dict[str, tuple[Callable[[Path], RawDataset], str]] = {
    "online-retail": (online_retail, "online-retail/online_retail.parquet"),
    "groceries": (groceries, "groceries/Groceries_dataset.csv"),
}


assert tuple(BUILTIN) == BUILTIN_DATASETS, "inputs.BUILTIN_DATASETS names the built-in adapters"


def read_dataset(dataset: str) -> RawDataset | FolderDataset:
    """Resolve ``dataset`` -- a built-in name or a folder inside an allowed root -- and map it."""
    if dataset in BUILTIN:
        adapter, relative = BUILTIN[dataset]
        path = data_dir() / relative
        if not path.exists():
            raise ContractError(
                f"dataset {dataset!r}: {path} not found (set RECSYS_DATA_DIR to the folder that holds it)"
            )
        return adapter(path)
    return contract_files(resolve_dataset_folder(dataset))
