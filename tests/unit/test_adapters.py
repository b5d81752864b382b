"""The adapters map real sources onto the raw contract without losing or inventing rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys_pipeline.ingest.adapters import contract_files, groceries, online_retail, read_dataset, slugify
from recsys_pipeline.ingest.contract import CONTRACT, ContractError, check_frame

pytestmark = pytest.mark.unit


def test_online_retail_keeps_every_line_with_documented_meaning(online_retail_path):
    data = online_retail(online_retail_path)
    events = data.events
    # verified figures of the UCI file (../shared/data/README.md)
    assert len(events) == 541_909
    assert events["user_id"].isna().sum() == 135_080  # anonymous baskets kept, as NULL users
    cancellations = events["basket_id"].str.startswith("C")
    assert cancellations.sum() == 9_288
    assert (events.loc[cancellations, "event_type"] == "return").all()
    assert (events.loc[events["quantity"] < 0, "event_type"] == "return").all()
    assert (events["price"] <= 0).sum() == 2_517
    assert round(float((events["quantity"] * events["price"]).sum()), 2) == 9_747_747.93
    assert list(events.columns) == [c.name for c in CONTRACT["events"]]
    assert events["source_row_id"].is_unique
    # every item and user referenced by an event is described
    assert set(events["item_id"].dropna()) == set(data.items["item_id"])
    assert set(events["user_id"].dropna()) == set(data.users["user_id"])
    assert data.users.set_index("user_id").loc["17850", "country"] == "United Kingdom"
    assert data.dbt_vars["product_id_pattern"]


def test_online_retail_stock_codes_are_case_insensitive(online_retail_path):
    data = online_retail(online_retail_path)
    ids = data.items["item_id"]
    assert ids.is_unique and (ids == ids.str.upper()).all()


def test_groceries_keeps_dates_as_written(groceries_path):
    data = groceries(groceries_path)
    assert len(data.events) == 38_765
    assert data.users["user_id"].nunique() == 3_898
    assert len(data.items) == 167
    # both date formats survive to staging, which parses them
    assert data.events["event_time"].str.match(r"^\d{2}-\d{2}-\d{4}$").any()
    assert data.events["event_time"].str.match(r"^\d{1,2}/\d{1,2}/\d{4}$").any()
    assert (data.events["event_type"] == "purchase").all()


def test_slugify_is_stable():
    assert slugify("Artif. Sweetener") == "artif-sweetener"
    assert slugify("  UHT-milk ") == "uht-milk"


def _write(folder: Path, name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / name, index=False)


def test_contract_files_derive_missing_items_and_users(tmp_path):
    _write(
        tmp_path,
        "events.csv",
        pd.DataFrame(
            {
                "user_id": ["u1", "u1", "u2"],
                "item_id": ["a", "b", "a"],
                "event_type": ["view", "cart", "purchase"],
                "event_time": ["2024-01-01 10:00:00"] * 3,
            }
        ),
    )
    data = contract_files(tmp_path)
    assert list(data.events["source_row_id"]) == [1, 2, 3]
    assert set(data.items["item_id"]) == {"a", "b"}
    assert set(data.users["user_id"]) == {"u1", "u2"}


@pytest.mark.parametrize(
    "events, message",
    [
        (
            pd.DataFrame({"user_id": ["u"], "event_type": ["view"], "event_time": ["2024-01-01"]}),
            "required column 'item_id'",
        ),
        (
            pd.DataFrame(
                {"user_id": ["u"], "item_id": ["i"], "event_type": ["view"], "event_time": ["x"], "quantity": ["two"]}
            ),
            "column 'quantity' must be numeric; 1 rows, first at data row 1: 'two'",
        ),
        (
            pd.DataFrame(
                {"user_id": ["u" * 65], "item_id": ["i"], "event_type": ["view"], "event_time": ["2024-01-01"]}
            ),
            "column 'user_id' holds ids longer than 64",
        ),
    ],
)
def test_contract_refuses_bad_files_naming_file_column_and_problem(tmp_path, events, message):
    _write(tmp_path, "events.csv", events)
    with pytest.raises(ContractError) as error:
        _ = contract_files(tmp_path).events
    assert str(tmp_path / "events.csv") in str(error.value)
    assert message in str(error.value)


def test_contract_refuses_empty_and_non_utf8_files(tmp_path):
    (tmp_path / "events.csv").write_bytes(b"")
    with pytest.raises(ContractError, match="empty"):
        _ = contract_files(tmp_path).events
    (tmp_path / "events.csv").write_bytes(
        "user_id,item_id,event_type,event_time\nu,caf\xe9,view,2024-01-01\n".encode("latin-1")
    )
    with pytest.raises(ContractError, match="not valid UTF-8"):
        _ = contract_files(tmp_path).events


def test_duplicate_primary_keys_are_refused():
    frame = pd.DataFrame({"item_id": ["a", "a"], "title": ["x", "y"]})
    with pytest.raises(ContractError, match="column 'item_id' must be unique"):
        check_frame(frame, "items", "items.csv")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ContractError, match="online-retail, groceries"):
        read_dataset("no-such-dataset")
