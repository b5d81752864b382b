"""The loader's tab-separated files: what LOAD DATA reads back, value by value."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_pipeline import warehouse


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.array([1, 2, 3], np.int64),
            "text": pd.Series(["tab\there", "new\nline\r", None], dtype="string"),
            "path": pd.Series(["back\\slash", "quote \"'", "plain"], dtype=object),
            "value": pd.Series([0.1, None, 2.0], dtype="Float64"),
            "amount": np.array([1e16, 1e-7, np.nan]),
            "extreme": np.array([np.inf, -0.0, 12345678901234567.0]),
            "small": np.array([0.1, 1.5, 2.0], np.float32),
            "hash": np.array([18446744073709551615, 0, 7], np.uint64),
            "count": pd.Series([None, 4, 5], dtype="Int64"),
            "flag": np.array([True, False, True]),
            "at": pd.to_datetime(["2024-03-01 09:15:00", "1999-12-31 23:59:59", None]),
            "at_ms": pd.to_datetime(["2024-03-01 09:15:00.123456", "2024-03-01 09:15:01", None], format="ISO8601"),
            # text held in two Arrow chunks, as a column of frames read from Parquet in batches may be
            "chunked": pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([["a", None], ["c"]]))),
        }
    )


def test_every_kind_of_value_is_written_as_load_data_reads_it(tmp_path):
    path = tmp_path / "batch.tsv"
    warehouse.write_load_file(_frame(), path)
    assert path.read_bytes().decode("utf-8").split("\n") == [
        "1\ttab\\there\tback\\\\slash\t0.1\t10000000000000000\tinf\t0.10000000149011612\t18446744073709551615\t\\N\t1"
        "\t2024-03-01 09:15:00\t2024-03-01 09:15:00.123\ta",
        "2\tnew\\nline\\r\tquote \"'\t\\N\t9.9999999999999995e-08\t-0\t1.5\t0\t4\t0\t1999-12-31 23:59:59"
        "\t2024-03-01 09:15:01.000\t\\N",
        "3\t\\N\tplain\t2\t\\N\t12345678901234568\t2\t7\t5\t1\t\\N\t\\N\tc",
        "",
    ]


def test_the_file_holds_what_pandas_to_csv_wrote_before(tmp_path):
    """The text LOAD DATA parses is the old writer's, up to the shortest exact form of a float."""
    frame = _frame()
    old = frame.copy()
    for column in old.columns:
        if pd.api.types.is_string_dtype(old[column]) or old[column].dtype == object:
            text = old[column].astype("string")
            for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
                text = text.str.replace(char, escaped, regex=False)
            old[column] = text
        elif pd.api.types.is_datetime64_any_dtype(old[column]):
            fractions = (old[column].dt.microsecond.fillna(0) != 0).any()  # NaT: no fraction
            text = old[column].dt.strftime("%Y-%m-%d %H:%M:%S.%f" if fractions else "%Y-%m-%d %H:%M:%S")
            old[column] = text.str[:-3] if fractions else text
        elif pd.api.types.is_bool_dtype(old[column]):
            old[column] = old[column].astype("Int8")
    old_path, new_path = tmp_path / "old.tsv", tmp_path / "new.tsv"
    old.to_csv(
        old_path, sep="\t", header=False, index=False, na_rep="\\N", quoting=csv.QUOTE_NONE,
        lineterminator="\n", encoding="utf-8", float_format="%.17g",
    )  # fmt: skip
    warehouse.write_load_file(frame, new_path)
    old_rows = [line.split("\t") for line in old_path.read_text().splitlines()]
    new_rows = [line.split("\t") for line in new_path.read_text().splitlines()]
    assert len(old_rows) == len(new_rows) == 3
    for old_row, new_row in zip(old_rows, new_rows, strict=True):
        for name, before, after in zip(frame.columns, old_row, new_row, strict=True):
            if before != after:  # only a float, in a shorter form of the same double
                assert float(before) == float(after), f"column {name}: {before!r} -> {after!r}"


def test_an_empty_frame_writes_an_empty_file(tmp_path):
    path = tmp_path / "empty.tsv"
    warehouse.write_load_file(_frame().iloc[:0], path)
    assert path.read_bytes() == b""
