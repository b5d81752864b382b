"""Read a user's file in batches, as shops export them, within the size caps.

A file is never loaded whole: CSV is parsed by Arrow block by block
(``pyarrow.csv.open_csv``), Parquet row group by row group (``ParquetFile.iter_batches``),
and each batch goes to MySQL before the next is read, so memory stays flat however
large the file. What a real shop sends is read as written: UTF-8 with or without a
byte-order mark, CRLF or LF line endings, quoted fields holding the delimiter, quotes
or line breaks, a delimiter other than a comma when the folder's contract declares
it, gzip-compressed CSV (``.csv.gz``), and Parquet with typed columns (integer ids are
read as their digits, decimals as numbers, timestamps as times). Every CSV column is
read as text, so ids keep their leading zeros and every script.

A file larger than ``RECSYS_MAX_INPUT_FILE_BYTES``, or one that expands to more than
``RECSYS_MAX_INPUT_DECOMPRESSED_BYTES`` when decompressed and decoded (a small, highly
compressed gzip or Parquet file), is refused with the file, the size and the setting.
"""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_pipeline.ingest.contract import CONTRACT, ContractError
from recsys_pipeline.ingest.inputs import refuse_link
from recsys_pipeline.settings import max_input_decompressed_bytes, max_input_file_bytes

BATCH_ROWS = 131_072  # Parquet rows per batch
CSV_BLOCK_BYTES = 8 << 20  # CSV bytes per batch; also the longest row a CSV file may have
SUFFIXES = (".parquet", ".csv", ".csv.gz")
ID_COLUMNS = frozenset(c.name for columns in CONTRACT.values() for c in columns if c.kind == "id")
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@dataclass(frozen=True)
class CsvFormat:
    """What a folder's contract may declare about its CSV files: ``{"csv": {"delimiter": ";"}}``."""

    delimiter: str = ","

    @classmethod
    def from_contract(cls, contract: dict) -> CsvFormat:
        """The declaration in a folder's contract; ValueError naming the key and the rule when malformed."""
        declared = contract.get("csv") or {}
        if not isinstance(declared, dict):
            raise ValueError(f'\'csv\' must be an object such as {{"delimiter": ";"}}, not {declared!r}')
        delimiter = declared.get("delimiter", ",")
        delimiter = _DELIMITER_NAMES.get(delimiter, delimiter) if isinstance(delimiter, str) else delimiter
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
            raise ValueError(
                f"'csv.delimiter' must be one character other than a quote or a line break "
                f'(e.g. ";", "|" or "tab"), not {delimiter!r}'
            )
        return cls(delimiter=delimiter)


def find_table_file(folder: Path, stem: str) -> Path | None:
    """``<stem>.parquet``, ``.csv`` or ``.csv.gz`` in ``folder`` (the first that exists); never a link."""
    for suffix in SUFFIXES:
        path = folder / f"{stem}{suffix}"
        refuse_link(path, "file")
        if path.exists():
            return path
    return None


def check_file_size(path: Path, entity: str) -> None:
    size = path.stat().st_size
    limit = max_input_file_bytes()
    if size > limit:
        raise ContractError(
            f"{path}: the file has {size:,} bytes, more than RECSYS_MAX_INPUT_FILE_BYTES ({limit:,}): "
            "split it, or raise the setting",
            str(path),
            entity,
        )


def read_batches(
    path: Path, entity: str, csv_format: CsvFormat | None = None, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of ``path`` as frames of at most a batch each (only ``columns`` when given).

    Raises ContractError naming the file (and the rule) when it is too large, expands too
    much, is not UTF-8, is not a CSV or Parquet file, or a row does not fit the header.
    """
    check_file_size(path, entity)
    budget = _DecodedBytes(path, entity)
    if path.suffix == ".parquet":
        yield from _parquet_batches(path, entity, budget, columns)
    else:
        yield from _csv_batches(path, entity, csv_format or CsvFormat(), budget, columns)


class _DecodedBytes:
    """How many bytes a file has expanded to so far; refuses it past the cap."""

    def __init__(self, path: Path, entity: str):
        self.path, self.entity, self.limit, self.used = path, entity, max_input_decompressed_bytes(), 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ContractError(
                f"{self.path}: expands to more than RECSYS_MAX_INPUT_DECOMPRESSED_BYTES ({self.limit:,} bytes) "
                f"when decompressed and decoded ({self.path.stat().st_size:,} bytes on disk); refused before "
                "it fills the worker: split it, or raise the setting",
                str(self.path),
                self.entity,
            )


def _parquet_batches(
    path: Path, entity: str, budget: _DecodedBytes, columns: list[str] | None
) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ContractError(f"{path}: not a readable Parquet file ({error})", str(path), entity) from error
    meta = parquet.metadata
    # what the pages hold once decompressed, from the footer: refused before a page is inflated
    _DecodedBytes(path, entity).spend(sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)))
    wanted = [c for c in columns if c in parquet.schema_arrow.names] if columns else None
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        budget.spend(batch.nbytes)
        yield _frame(batch)


def _frame(batch: pa.RecordBatch) -> pd.DataFrame:
    """A batch as pandas: ids of any type as their text, decimals as exact text (the contract reads the
    number), times as times."""
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if (name in ID_COLUMNS and not text) or pa.types.is_decimal(column.type):
            column = pc.cast(column, pa.string())
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pandas()


class _CountingReader(io.RawIOBase):
    """A decompressing reader that counts what it inflates (a gzip bomb stops at the cap)."""

    def __init__(self, raw, budget: _DecodedBytes):
        self.raw, self.budget = raw, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.budget.spend(n)
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _open(path: Path, budget: _DecodedBytes):
    """A Python file object, never Arrow's own: Arrow reads a native file ahead to its end, holding it whole,
    while from a Python file it reads one block as the next batch is asked for."""
    if path.name.endswith(".gz"):
        return _CountingReader(gzip.open(path, "rb"), budget)
    return path.open("rb")


def _csv_batches(
    path: Path, entity: str, csv_format: CsvFormat, budget: _DecodedBytes, columns: list[str] | None
) -> Iterator[pd.DataFrame]:
    parse = pacsv.ParseOptions(delimiter=csv_format.delimiter, newlines_in_values=True)
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    try:
        with _open(path, _DecodedBytes(path, entity)) as source:
            names = pacsv.open_csv(source, read_options=read, parse_options=parse).schema.names
        _check_header(path, entity, names, csv_format)
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},  # as written: leading zeros, any script
            null_values=[""],
            strings_can_be_null=True,
            include_columns=[c for c in columns if c in names] if columns else None,
        )
        with _open(path, budget) as source:
            reader = pacsv.open_csv(source, read_options=read, parse_options=parse, convert_options=convert)
            for batch in reader:
                if batch.num_rows:
                    yield batch.to_pandas()
    except pa.ArrowInvalid as error:
        raise _csv_error(path, entity, csv_format, error) from error
    except gzip.BadGzipFile as error:
        raise ContractError(f"{path}: not a gzip file ({error})", str(path), entity) from error


def _check_header(path: Path, entity: str, names: list[str], csv_format: CsvFormat) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ContractError(f"{path}: the header names column {repeated[0]!r} twice", str(path), entity)
    hint = _delimiter_hint(path, csv_format) if len(names) == 1 else ""
    if hint:
        raise ContractError(f"{path}: the header {names[0]!r} is one column{hint}", str(path), entity)


def _delimiter_hint(path: Path, csv_format: CsvFormat) -> str:
    """When the header splits better on another delimiter: how to declare it."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        header = handle.read(1 << 16).split(b"\n", 1)[0].decode("utf-8", errors="replace")
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    if best == csv_format.delimiter or counts[best] <= header.count(csv_format.delimiter):
        return ""
    name = "tab" if best == "\t" else best
    return (
        f"; the header seems separated by {best!r}, not {csv_format.delimiter!r}: declare it in the folder's "
        f'contract.json, e.g. {{"csv": {{"delimiter": "{name}"}}}}'
    )


def _csv_error(path: Path, entity: str, csv_format: CsvFormat, error: pa.ArrowInvalid) -> ContractError:
    message = str(error)
    if "Empty CSV file" in message:
        return ContractError(f"{path}: the file is empty (no header, no rows)", str(path), entity)
    if "invalid UTF8" in message:
        return ContractError(f"{path}: not valid UTF-8 text ({_first_invalid_utf8(path)})", str(path), entity)
    if "Expected" in message and "columns, got" in message:
        detail = message.removeprefix("CSV parse error: ")
        if len(detail) > 200:
            detail = detail[:200] + "..."
        return ContractError(
            f"{path}: a row does not fit the header ({detail}); rule: every row has the header's fields, "
            f"separated by {csv_format.delimiter!r}, and a field that holds the delimiter, a quote or a line "
            f'break is quoted ("a, b"; quotes doubled: "say ""hi"""){_delimiter_hint(path, csv_format)}',
            str(path),
            entity,
        )
    if "straddling" in message:
        return ContractError(
            f"{path}: a row is longer than {CSV_BLOCK_BYTES:,} bytes (or a quote is never closed)", str(path), entity
        )
    return ContractError(f"{path}: not a readable CSV file ({message})", str(path), entity)


def _first_invalid_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is, read in chunks (the file is never held whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                # the decoder may hold back the first bytes of a character split between chunks
                start = offset + error.start - len(error.object) + len(chunk)
                line += chunk[: max(start - offset, 0)].count(b"\n")
                return f"{error.reason} at byte {start}, line {line}"
            offset += len(chunk)
            line += chunk.count(b"\n")
    return "invalid byte sequence"
