"""Event times as shops export them, read into UTC once, at load."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys_pipeline.ingest.adapters import contract_files
from recsys_pipeline.ingest.contract import ContractError
from recsys_pipeline.ingest.event_times import AmbiguousTimes, TimeFormat, parse_event_times

pytestmark = pytest.mark.unit

UTC_0915 = pd.Timestamp("2024-03-01 09:15:00")


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-03-01T09:15:00Z", UTC_0915),
        ("2024-03-01T10:15:00+01:00", UTC_0915),
        ("2024-03-01T14:45:00.250+0530", UTC_0915 + pd.Timedelta(milliseconds=250)),
        ("2024-03-01 09:15:00 UTC", UTC_0915),
        ("2024-03-01T09:15", UTC_0915),
        ("2024-3-1 9:15:00", UTC_0915),
        ("1709284500", UTC_0915),  # epoch seconds
        ("1709284500250", UTC_0915 + pd.Timedelta(milliseconds=250)),  # epoch milliseconds
        ("2011-12-09", pd.Timestamp("2011-12-09")),
        ("  21-07-2015 ", pd.Timestamp("2015-07-21")),  # day first, as groceries writes it
        ("31-02-2015", pd.NaT),  # no such day: unparseable, the text is kept
        ("next tuesday", pd.NaT),
        (None, pd.NaT),
    ],
)
def test_each_format_shops_export_is_read_into_utc(written, expected):
    text, times = parse_event_times(pd.Series([written, "13-01-2015"], dtype="string"))
    assert times.dtype == "datetime64[ms]"
    if expected is pd.NaT:
        assert pd.isna(times.iloc[0])
    else:
        assert times.iloc[0] == expected
    if written is None:
        assert pd.isna(text.iloc[0])
    else:
        assert text.iloc[0] == written.strip()  # the text as written is kept beside the time


def test_a_day_above_12_tells_the_order_and_without_one_the_folder_must_say():
    _, times = parse_event_times(pd.Series(["5/1/2015", "21/1/2015"]))
    assert times.tolist() == [pd.Timestamp("2015-01-05"), pd.Timestamp("2015-01-21")]
    _, times = parse_event_times(pd.Series(["1/5/2015", "1/21/2015"]))  # month first
    assert times.tolist() == [pd.Timestamp("2015-01-05"), pd.Timestamp("2015-01-21")]
    with pytest.raises(AmbiguousTimes, match=r"'03/04/2024', '05/06/2024' could be day-first or month-first"):
        parse_event_times(pd.Series(["03/04/2024", "05/06/2024", "03/04/2024"]))
    with pytest.raises(AmbiguousTimes, match="both day-first .'21/01/2024'. and month-first .'01/21/2024'."):
        parse_event_times(pd.Series(["21/01/2024", "01/21/2024"]))
    _, times = parse_event_times(pd.Series(["03/04/2024"]), TimeFormat(format="month_first"))
    assert times.tolist() == [pd.Timestamp("2024-03-04")]


def test_a_declared_format_and_time_zone_are_used():
    declared = TimeFormat(format="%d.%m.%Y %H:%M", timezone="Europe/Berlin")
    _, times = parse_event_times(pd.Series(["01.03.2024 10:15", "01.07.2024 11:15", "bad"]), declared)
    assert times.tolist()[:2] == [UTC_0915, pd.Timestamp("2024-07-01 09:15:00")]  # CET, then CEST
    assert pd.isna(times.iloc[2])
    _, times = parse_event_times(
        pd.Series(["2024-03-01 10:15:00", "2024-03-01T09:15:00Z"]), declared.__class__(timezone="Europe/Berlin")
    )
    assert times.tolist() == [UTC_0915, UTC_0915]  # a written offset wins over the declared zone


def test_parquet_timestamps_and_numbers_are_times_too(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    stamps = pd.Series(pd.to_datetime(["2024-03-01 10:15:00"]).tz_localize("Europe/Berlin"))
    events = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "event_type": ["view"], "event_time": stamps})
    events.to_parquet(folder / "events.parquet", index=False)
    data = contract_files(folder)
    assert data.events["event_at"].tolist() == [UTC_0915]
    assert data.events["event_time"].tolist() == ["2024-03-01T09:15:00.000000Z"]
    _, times = parse_event_times(pd.Series([1709284500, 1709284500250]))
    assert times.tolist() == [UTC_0915, UTC_0915 + pd.Timedelta(milliseconds=250)]


def test_a_folder_that_declares_nothing_about_ambiguous_dates_is_refused_with_the_option(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "events.csv").write_text(
        "user_id,item_id,event_type,event_time\nu,i,view,03/04/2024\nu,j,view,05/06/2024\n"
    )
    with pytest.raises(
        ContractError, match=r"events.csv: column 'event_time': dates such as '03/04/2024', '05/06/2024'"
    ):
        _ = contract_files(folder).events
    (folder / "contract.yaml").write_text("event_time:\n  format: day_first\n")
    assert contract_files(folder).events["event_at"].tolist() == [
        pd.Timestamp("2024-04-03"),
        pd.Timestamp("2024-06-05"),
    ]


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ('{"event_time": "day_first"}', "'event_time' must be an object"),
        ('{"event_time": {"format": 5}}', "'event_time.format' must be day_first, month_first or a strptime"),
        ('{"event_time": {"timezone": "Mars/Olympus"}}', "'event_time.timezone' 'Mars/Olympus' is not a time zone"),
    ],
)
def test_a_malformed_declaration_is_refused_naming_the_file_and_the_key(tmp_path, declared, message):
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "events.csv").write_text("user_id,item_id,event_type,event_time\nu,i,view,2024-01-01\n")
    (folder / "contract.json").write_text(declared)
    with pytest.raises(ContractError, match=r"contract.json: " + message):
        _ = contract_files(folder).events
