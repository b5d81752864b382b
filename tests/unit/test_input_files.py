"""What a shop's folder may be and hold: allowed folders only, no links, size caps, every export format.

Each case is a file as a real shop writes it, read through the same adapter a load uses
(``contract_files``, batch by batch); it is read exactly or refused with the file, the
column (or setting) and the rule.
"""

from __future__ import annotations

import decimal
import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_pipeline.ingest import readers
from recsys_pipeline.ingest.adapters import contract_files, read_dataset
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.ingest.inputs import resolve_dataset_folder

pytestmark = pytest.mark.unit

HEADER = "user_id,item_id,event_type,event_time"


def _shop(root: Path, text: str | bytes, name: str = "events.csv") -> Path:
    folder = root / "shop"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.fixture
def allowed(tmp_path, monkeypatch) -> Path:
    """Only ``tmp_path/data`` (RECSYS_DATA_DIR) and ``tmp_path/uploads`` (RECSYS_DATASET_DIRS) are allowed."""
    for name in ("data", "uploads", "elsewhere"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECSYS_DATASET_DIRS", str(tmp_path / "uploads"))
    return tmp_path


# --- which folders a run may read ---------------------------------------------------------


def test_a_folder_outside_the_allowed_roots_is_refused_naming_the_path_and_the_settings(allowed):
    _shop(allowed / "elsewhere", f"{HEADER}\nu,i,view,2024-01-01\n")
    with pytest.raises(ContractError) as refused:
        read_dataset(str(allowed / "elsewhere" / "shop"))
    message = str(refused.value)
    assert str(allowed / "elsewhere" / "shop") in message
    assert "RECSYS_DATA_DIR" in message and "RECSYS_DATASET_DIRS" in message and str(allowed / "uploads") in message
    with pytest.raises(ContractError, match="'..' is not allowed"):
        read_dataset(str(allowed / "uploads" / ".." / "elsewhere" / "shop"))
    with pytest.raises(ContractError, match="is not inside RECSYS_DATA_DIR"):
        read_dataset("/etc")


def test_folders_inside_the_data_dir_or_a_listed_folder_are_read(allowed):
    _shop(allowed / "uploads", f"{HEADER}\nu,i,view,2024-01-01\n")
    _shop(allowed / "data", f"{HEADER}\nu,i,view,2024-01-01\nv,i,view,2024-01-02\n")
    assert len(read_dataset(str(allowed / "uploads" / "shop")).events) == 1
    assert len(read_dataset("shop").events) == 2  # a relative name is read inside RECSYS_DATA_DIR
    assert resolve_dataset_folder(str(allowed / "data" / "shop")) == (allowed / "data" / "shop").resolve()


def test_symbolic_links_are_refused_whether_folder_or_file(allowed):
    outside = _shop(allowed / "elsewhere", f"{HEADER}\nu,i,view,2024-01-01\n")
    (allowed / "uploads" / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ContractError, match=r"linked is a symbolic link; links are refused"):
        read_dataset(str(allowed / "uploads" / "linked"))
    folder = allowed / "uploads" / "shop"
    folder.mkdir()
    (folder / "events.csv").symlink_to(outside / "events.csv")
    with pytest.raises(ContractError, match=r"file .*events.csv is a symbolic link"):
        read_dataset(str(folder))


def test_a_folder_named_like_a_built_in_dataset_gets_its_own_key(allowed):
    data = read_dataset(str(_shop(allowed / "uploads", f"{HEADER}\nu,i,view,2024-01-01\n")))
    assert data.name == "shop"
    groceries = allowed / "uploads" / "groceries"
    groceries.mkdir()
    (groceries / "events.csv").write_text(f"{HEADER}\nu,i,view,2024-01-01\n")
    assert read_dataset(str(groceries)).name == "groceries-folder"


# --- size caps ----------------------------------------------------------------------------


def test_a_file_over_the_size_cap_is_refused_naming_the_setting(tmp_path, monkeypatch):
    folder = _shop(tmp_path, f"{HEADER}\n" + "u,i,view,2024-01-01\n" * 100)
    monkeypatch.setenv("RECSYS_MAX_INPUT_FILE_BYTES", "1000")
    with pytest.raises(ContractError, match=r"events.csv: the file has 2,038 bytes, more than RECSYS_MAX_INPUT_FILE"):
        contract_files(folder)


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    rows = f"{HEADER}\n".encode() + b"u,i,view,2024-01-01\n" * 500_000  # 10 MB of text, ~30 kB compressed
    folder = _shop(tmp_path, gzip.compress(rows), "events.csv.gz")
    assert (folder / "events.csv.gz").stat().st_size < 100_000
    monkeypatch.setenv("RECSYS_MAX_INPUT_DECOMPRESSED_BYTES", str(1_000_000))
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 16)
    with pytest.raises(ContractError, match=r"expands to more than RECSYS_MAX_INPUT_DECOMPRESSED_BYTES \(1,000,000"):
        _ = contract_files(folder).events
    monkeypatch.setenv("RECSYS_MAX_INPUT_DECOMPRESSED_BYTES", str(20_000_000))
    assert len(contract_files(folder).events) == 500_000  # the same file, under the cap, loads whole


def test_a_parquet_bomb_is_refused_from_its_footer(tmp_path, monkeypatch):
    n = 200_000
    table = pa.table(
        {
            "user_id": ["u"] * n,
            "item_id": ["i"] * n,
            "event_type": ["view"] * n,
            "event_time": ["2024-01-01"] * n,
            "attributes": ["x" * 200] * n,  # 40 MB of text, a few kB compressed
        }
    )
    folder = tmp_path / "shop"
    folder.mkdir()
    pq.write_table(table, folder / "events.parquet", compression="zstd", use_dictionary=False)
    assert (folder / "events.parquet").stat().st_size < 1_000_000
    monkeypatch.setenv("RECSYS_MAX_INPUT_DECOMPRESSED_BYTES", str(5_000_000))
    with pytest.raises(ContractError, match="events.parquet: expands to more than RECSYS_MAX_INPUT_DECOMPRESSED"):
        _ = contract_files(folder).events


# --- what a real shop sends ---------------------------------------------------------------


def test_utf8_with_a_byte_order_mark_and_crlf_line_endings_load_exactly(tmp_path):
    text = "\ufeff" + f"{HEADER}\r\n" + "u1,i1,view,2024-01-01 10:00:00\r\nu2,i2,purchase,2024-01-02\r\n"
    events = contract_files(_shop(tmp_path, text)).events
    assert events["user_id"].tolist() == ["u1", "u2"] and events["event_type"].tolist() == ["view", "purchase"]
    assert events["event_time"].tolist() == ["2024-01-01 10:00:00", "2024-01-02"]  # no stray '\r'


def test_quoted_fields_with_commas_quotes_and_line_breaks_are_kept(tmp_path):
    text = 'item_id,title,category\n"A,1","Mug ""Hello"", blue","kitchen|mugs"\n"B2","two\r\nlines, and a comma",\n'
    folder = _shop(tmp_path, f'{HEADER}\nu,"A,1",view,2024-01-01\nu,B2,view,2024-01-01\n')
    (folder / "items.csv").write_text(text, newline="")
    items = contract_files(folder).items
    assert items["item_id"].tolist() == ["A,1", "B2"]
    assert items["title"].tolist() == ['Mug "Hello", blue', "two\r\nlines, and a comma"]


def test_ids_in_any_script_are_kept_exactly_and_apart(tmp_path):
    ids = ["café", "cafe\u0301", "CAFÉ", "cafe", "商品-42", "🛒🍎", "ユーザー", "Ωmega", "x" * 64]
    rows = "".join(f"{i},{i},view,2024-01-01\n" for i in ids)
    events = contract_files(_shop(tmp_path, f"{HEADER}\n{rows}")).events
    assert events["user_id"].tolist() == ids and events["item_id"].nunique() == len(ids)


def test_missing_numbers_as_exports_write_them_are_null_and_an_id_na_stays_an_id(tmp_path):
    text = f"{HEADER},quantity,price\nNA,i,view,2024-01-01,NA,\nu,None,view,2024-01-01,NaN,#N/A\n"
    events = contract_files(_shop(tmp_path, text)).events
    assert events["user_id"].tolist() == ["NA", "u"] and events["item_id"].tolist() == ["i", "None"]
    assert events["quantity"].isna().all() and events["price"].isna().all()


def test_an_id_longer_than_the_contract_allows_is_refused_naming_file_column_and_row(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 10)  # many batches: the row is counted across them
    rows = "".join(f"u{i},i{i},view,2024-01-01\n" for i in range(300)) + f"{'é' * 65},i,view,2024-01-01\n"
    folder = _shop(tmp_path, f"{HEADER}\n{rows}")
    with pytest.raises(ContractError) as refused:
        _ = contract_files(folder).events
    assert str(folder / "events.csv") in str(refused.value)
    assert "column 'user_id' holds ids longer than 64 characters; 1 rows, first at data row 301" in str(refused.value)


def test_a_row_that_does_not_fit_the_header_is_refused_with_the_rule(tmp_path):
    folder = _shop(tmp_path, f"{HEADER}\nu,i,view,2024-01-01\nu,a, b,view,2024-01-01\n")
    with pytest.raises(ContractError, match=r"events.csv: a row does not fit the header .*Expected 4 columns, got 5"):
        _ = contract_files(folder).events


def test_a_delimiter_declared_by_the_contract_file_is_used(tmp_path):
    folder = _shop(tmp_path, "user_id;item_id;event_type;event_time;price\nu1;i,1;view;2024-01-01;3,5\n")
    with pytest.raises(
        ContractError, match=r"header seems separated by ';', not ',': .*\{\"csv\": \{\"delimiter\": \";\"\}\}"
    ):
        _ = contract_files(folder).events
    (folder / "contract.yaml").write_text("csv:\n  delimiter: ';'\n")
    with pytest.raises(ContractError, match=r"column 'price' must be numeric; 1 rows, first at data row 1: '3,5'"):
        _ = contract_files(folder).events  # a decimal comma is not a number: refused, naming the value
    (folder / "events.csv").write_text("user_id;item_id;event_type;event_time;price\nu1;i,1;view;2024-01-01;3.5\n")
    events = contract_files(folder).events
    assert events["item_id"].tolist() == ["i,1"] and events["price"].tolist() == [3.5]
    (folder / "contract.yaml").write_text("csv:\n  delimiter: ';;'\n")
    with pytest.raises(ContractError, match=r"contract.yaml: 'csv.delimiter' must be one character"):
        contract_files(folder)
    (folder / "contract.yaml").unlink()
    (folder / "contract.json").write_text('{"csv": {"delimiter": "tab"}}')
    (folder / "events.csv").write_text("user_id\titem_id\tevent_type\tevent_time\nu1\ti;1\tview\t2024-01-01\n")
    assert contract_files(folder).events["item_id"].tolist() == ["i;1"]


def test_parquet_with_typed_columns_loads_as_the_contract_says(tmp_path):
    times = pd.to_datetime(["2024-03-01 09:15:00", "2024-03-02 10:00:00.250"], format="ISO8601").tz_localize(
        "Europe/Berlin"
    )
    table = pa.table(
        {
            "source_row_id": pa.array([10, 11], pa.int32()),
            "user_id": pa.array([12345, None], pa.int64()),
            "item_id": pa.array([7, 8], pa.int16()),
            "event_type": pa.array(["purchase", "view"]).dictionary_encode(),
            "event_time": pa.array(times),
            "price": pa.array([decimal.Decimal("19.99"), decimal.Decimal("0.10")], pa.decimal128(10, 2)),
            "quantity": pa.array([2, 1], pa.uint8()),
        }
    )
    folder = tmp_path / "shop"
    folder.mkdir()
    pq.write_table(table, folder / "events.parquet")
    data = contract_files(folder)
    events = data.events
    assert events["user_id"].tolist()[0] == "12345" and pd.isna(events["user_id"].iloc[1])
    assert events["item_id"].tolist() == ["7", "8"] and events["source_row_id"].tolist() == [10, 11]
    assert events["price"].tolist() == [19.99, 0.1] and events["quantity"].tolist() == [2.0, 1.0]
    assert events["event_at"].tolist() == [pd.Timestamp("2024-03-01 08:15:00"), pd.Timestamp("2024-03-02 09:00:00.250")]
    assert data.items["item_id"].tolist() == ["7", "8"] and data.users["user_id"].tolist() == ["12345"]


def test_day_or_month_first_is_decided_over_the_whole_file_not_per_batch(tmp_path, monkeypatch):
    """The first batch has no day above 12; the last one does: the file is day-first."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 10)
    rows = "".join(f"u,i,view,0{d}/0{m}/2024\n" for d in range(1, 10) for m in range(1, 10)) * 3
    folder = _shop(tmp_path, f"{HEADER}\n{rows}u,i,view,25/12/2024\n")
    events = contract_files(folder).events
    assert events["event_at"].iloc[-1] == pd.Timestamp("2024-12-25") and events["event_at"].notna().all()
    assert events["event_at"].iloc[1] == pd.Timestamp("2024-02-01")  # 01/02/2024 read day-first
    (folder / "events.csv").write_text(f"{HEADER}\n{rows}u,i,view,25/12/2024\nu,i,view,12/25/2024\n")
    with pytest.raises(ContractError, match=r"dates read both day-first \('25/12/2024'\) and month-first"):
        _ = contract_files(folder).events


def test_a_file_is_read_in_batches_never_whole(tmp_path, monkeypatch):
    """Arrow holds one block at a time: its memory stays far below the file's size however many rows follow."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 18)
    rows = "".join(f"user-{i:07d},item-{i % 977:05d},view,2024-01-01 10:{i % 60:02d}:00\n" for i in range(200_000))
    folder = _shop(tmp_path, f"{HEADER}\n{rows}")
    size = (folder / "events.csv").stat().st_size
    arrow_bytes, n, batches = [], 0, 0
    before = pa.total_allocated_bytes()  # what other tests' frames hold in Arrow's pool
    for frame in contract_files(folder).stream("events"):
        arrow_bytes.append(pa.total_allocated_bytes() - before)
        n, batches = n + len(frame), batches + 1
    assert n == 200_000 and batches >= size // (1 << 18)
    assert max(arrow_bytes) < size / 4, f"Arrow held {max(arrow_bytes):,} bytes of a {size:,}-byte file"


def test_batches_name_the_row_in_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 10)
    rows = "".join(f"u{i},i{i},view,2024-01-01,{i}\n" for i in range(500)).replace(",417\n", ",four\n")
    folder = _shop(tmp_path, f"{HEADER},quantity\n{rows}")
    with pytest.raises(
        ContractError, match=r"column 'quantity' must be numeric; 1 rows, first at data row 418: 'four'"
    ):
        _ = contract_files(folder).events


def test_text_that_is_not_utf8_names_the_byte_and_line(tmp_path):
    folder = _shop(tmp_path, f"{HEADER}\nu,i,view,2024-01-01\nu,caf\xe9,view,2024-01-01\n".encode("latin-1"))
    with pytest.raises(ContractError, match=r"not valid UTF-8 text \(invalid continuation byte at byte 63, line 3\)"):
        _ = contract_files(folder).events


def test_the_environment_default_allows_only_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("RECSYS_DATASET_DIRS", raising=False)
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ContractError, match=r"RECSYS_DATASET_DIRS \(not set\)"):
        read_dataset(str(tmp_path))
