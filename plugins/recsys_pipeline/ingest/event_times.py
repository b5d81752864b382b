"""Event times, typed once, at load: every format shops export, read into UTC.

A shop's export writes its times as ISO 8601 (with ``T``, ``Z``, offsets, fractions),
as Unix epoch seconds or milliseconds, as ``2024-03-01 09:15:00 UTC``, as Parquet
timestamp columns, or day-first like ``21-07-2015``. Parsing them here, vectorised and
once, gives the raw table a typed ``event_at`` (UTC) beside the text as written, so dbt
never parses text. A date whose day and month cannot be told apart (``03/04/2024``
with no value above 12 in either place) is not guessed: the folder must declare its
format (``contract.json``), and the error says how.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# an epoch in seconds has up to 10 digits until 2286; milliseconds start at 11 (1973 on)
EPOCH_MS_FROM = 1e11
_EPOCH = re.compile(r"^\d{9,13}(\.\d+)?$")
_ISO = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")
# day and month in either order, then the year: 21-07-2015, 5/1/2015, 05.01.2015 10:30
_NUMERIC_DATE = r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?$"
_NUMERIC_DATE_START = r"^\s*\d{1,2}[/.-]\d{1,2}[/.-]\d{4}"
_UTC_SUFFIX = re.compile(r"\s*(?:UTC|GMT)$", re.IGNORECASE)


@dataclass(frozen=True)
class TimeFormat:
    """What a folder's ``contract.json`` may declare about its event times.

    ``format``: a ``strptime`` format for every value (e.g. ``%m/%d/%Y %H:%M``), or
    ``day_first`` / ``month_first`` for numeric dates; ``timezone``: the zone of times
    written without an offset (default UTC).
    """

    format: str | None = None
    timezone: str = "UTC"

    @classmethod
    def from_contract(cls, contract: dict) -> TimeFormat:
        """The declaration in a folder's contract; ValueError naming the key and rule when it is malformed."""
        times = contract.get("event_time") or {}
        if not isinstance(times, dict):
            raise ValueError(f"'event_time' must be an object with 'format' and/or 'timezone', not {times!r}")
        fmt, zone = times.get("format"), times.get("timezone") or "UTC"
        if fmt is not None and not isinstance(fmt, str):
            raise ValueError(f"'event_time.format' must be day_first, month_first or a strptime format, not {fmt!r}")
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"'event_time.timezone' {zone!r} is not a time zone name (e.g. Europe/Berlin)") from error
        return cls(format=fmt, timezone=str(zone))


class AmbiguousTimes(ValueError):
    """Day and month cannot be told apart, or the values contradict each other."""


def parse_event_times(values: pd.Series, declared: TimeFormat | None = None) -> tuple[pd.Series, pd.Series]:
    """(text as written, UTC times) of ``values``; an unparseable value is NaT with its text kept.

    Raises AmbiguousTimes when numeric dates could be day- or month-first and nothing
    declares which.
    """
    declared = declared or TimeFormat()
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values):
        times = _to_utc(pd.Series(values), declared.timezone)
        text = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").astype("string").where(times.notna())
        return text, _naive_ms(times)
    if pd.api.types.is_numeric_dtype(values):
        text = values.astype("string")
        return text, _naive_ms(_from_epoch(pd.to_numeric(values, errors="coerce")))
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    times = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    present = text.notna()
    if declared.format and declared.format not in ("day_first", "month_first"):
        parsed = pd.to_datetime(text[present], format=declared.format, errors="coerce")
        times[present] = _to_utc(parsed, declared.timezone)
        return text, _naive_ms(times)
    if declared.timezone == "UTC":  # the common case in one vectorised pass; the rest below, by format
        candidates = present & text.str.contains("-", regex=False, na=False)
        times[candidates] = pd.to_datetime(text[candidates], format="ISO8601", utc=True, errors="coerce")
        present &= times.isna()
    rest = text[present]  # what the common case left: read by format, each kind in its own pass
    stripped = rest.str.replace(_UTC_SUFFIX, "", regex=True)
    in_utc = rest.str.contains(_UTC_SUFFIX, na=False)
    epoch = stripped.str.match(_EPOCH, na=False)
    if epoch.any():
        times[epoch[epoch].index] = _from_epoch(pd.to_numeric(stripped[epoch], errors="coerce"))
    iso = ~epoch & stripped.str.match(_ISO, na=False)
    if iso.any():
        times[iso[iso].index] = _parse_iso(stripped[iso], in_utc[iso], declared.timezone)
    numeric = ~epoch & ~iso
    parts = stripped[numeric].str.extract(_NUMERIC_DATE)
    matched = parts[0].notna()
    if matched.any():
        parts = parts[matched]
        day, month = _day_and_month(parts, rest[numeric][matched], declared)
        rebuilt = parts[2] + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + (" " + parts[3]).fillna("")
        times[rebuilt.index] = _parse_iso(rebuilt, in_utc[rebuilt.index], declared.timezone)
    return text, _naive_ms(times)


def _day_and_month(parts: pd.DataFrame, text: pd.Series, declared: TimeFormat) -> tuple[pd.Series, pd.Series]:
    """Which of the first two numbers is the day: declared, or told by a value above 12."""
    if declared.format == "day_first":
        return parts[0], parts[1]
    if declared.format == "month_first":
        return parts[1], parts[0]
    order = _DateOrder()
    order.add(parts, text)
    return (parts[0], parts[1]) if order.decide() == "day_first" else (parts[1], parts[0])


class _DateOrder:
    """What the numeric dates seen so far say about day and month: a value above 12 tells which is which."""

    def __init__(self):
        self.day_first: str | None = None  # the first value only day-first reads
        self.month_first: str | None = None
        self.examples: list[str] = []

    def add(self, parts: pd.DataFrame, text: pd.Series) -> None:
        first, second = parts[0].astype(int), parts[1].astype(int)
        if self.day_first is None and (first > 12).any():
            self.day_first = text[first > 12].iloc[0]
        if self.month_first is None and (second > 12).any():
            self.month_first = text[second > 12].iloc[0]
        if len(self.examples) < 2:
            new = [v for v in text.drop_duplicates().head(2) if v not in self.examples]
            self.examples += new[: 2 - len(self.examples)]

    def decide(self) -> str:
        if self.day_first is not None and self.month_first is not None:
            raise AmbiguousTimes(
                f"dates read both day-first ({self.day_first!r}) and month-first ({self.month_first!r})"
            )
        if self.day_first is None and self.month_first is None:
            examples = ", ".join(repr(v) for v in self.examples)
            raise AmbiguousTimes(
                f"dates such as {examples} could be day-first or month-first; declare which in the folder's "
                'contract.json: {"event_time": {"format": "day_first"}} (or "month_first", or a strptime format)'
            )
        return "day_first" if self.day_first is not None else "month_first"


def _numeric_dates(values: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """The parts (day or month, day or month, year, time) of the values written as numeric dates, and their text."""
    text = values.astype("string").str.strip()
    parts = text.str.replace(_UTC_SUFFIX, "", regex=True).str.extract(_NUMERIC_DATE)
    matched = parts[0].notna()
    return parts[matched], text[matched]


def has_numeric_dates(values: pd.Series) -> bool:
    """Whether some text values are numeric dates (``21-07-2015``, ``5/1/2015``) whose order must be told."""
    if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
        return False
    # one pass per batch in Arrow's regex engine: pandas' ``str.match`` ran Python's ``re`` on every value
    # (0.13 s a batch of 131,072 events, every batch of a file whose times are not numeric dates)
    text = pa.array(values.astype("string"), type=pa.string(), from_pandas=True)
    return bool(pc.any(pc.match_substring_regex(text, _NUMERIC_DATE_START)).as_py())


def date_order(chunks) -> str:
    """``day_first`` or ``month_first``, told by the numeric dates of all ``chunks`` of one file's times.

    A file read in batches is decided as a whole, so one batch without a day above 12 is
    not refused and two batches cannot be read in two orders. Raises AmbiguousTimes.
    """
    order = _DateOrder()
    for values in chunks:
        order.add(*_numeric_dates(values))
    return order.decide()


def _parse_iso(text: pd.Series, in_utc: pd.Series, timezone: str) -> pd.Series:
    """ISO-like text to UTC: an offset or ``Z`` wins, ``... UTC`` is UTC, anything else is in ``timezone``."""
    normalised = text.str.replace(r"^(\d{4})-(\d{1,2})-(\d{1,2})", _pad_date, regex=True).str.replace(" ", "T", n=1)
    has_zone = normalised.str.contains(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$", regex=True) & normalised.str.contains("T")
    has_zone |= normalised.str.endswith("Z")
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    if has_zone.any():
        out[has_zone] = pd.to_datetime(normalised[has_zone], format="ISO8601", utc=True, errors="coerce")
    local = ~has_zone
    if local.any():
        naive = pd.to_datetime(normalised[local], format="ISO8601", errors="coerce")
        zone = pd.Series(np.where(in_utc[local], "UTC", timezone), index=naive.index)
        for name, rows in naive.groupby(zone):
            out[rows.index] = _to_utc(rows, name)
    return out


def _pad_date(match: re.Match) -> str:
    return f"{match.group(1)}-{int(match.group(2)):02d}-{int(match.group(3)):02d}"


def _from_epoch(numbers: pd.Series) -> pd.Series:
    millis = numbers.where(numbers >= EPOCH_MS_FROM, numbers * 1000)
    return pd.to_datetime(millis.round(), unit="ms", utc=True, errors="coerce")


def _to_utc(times: pd.Series, timezone: str) -> pd.Series:
    times = pd.to_datetime(times, errors="coerce")
    if getattr(times.dt, "tz", None) is None:
        times = times.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    return times.dt.tz_convert("UTC")


def _naive_ms(times: pd.Series) -> pd.Series:
    """UTC times without a zone, to the millisecond: what a ``DATETIME(3)`` column holds."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(None).dt.floor("ms").astype("datetime64[ms]")
