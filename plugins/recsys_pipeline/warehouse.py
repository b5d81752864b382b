"""MySQL (MariaDB) access: bootstrap, bulk loads that refuse to lose rows, atomic swaps.

Bulk loads go through ``LOAD DATA LOCAL INFILE`` (about ten times faster here than
batched inserts), which turns bad values into warnings instead of errors; so every
load is checked for row count and warnings, and a load that lost or mangled rows is
refused. Tables that readers query are replaced by loading a new table and swapping
names in one ``RENAME TABLE`` statement, so readers see the old or the new table,
never a half-loaded one.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import MySQLdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from MySQLdb.constants import FIELD_TYPE

from recsys_pipeline.settings import MySQLSettings, WarehouseAccess

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]+$")


class LoadError(RuntimeError):
    """A bulk load lost rows or produced warnings; nothing was published."""


def quote_identifier(name: str) -> str:
    """Backquote a database, table or column name after checking it is a plain identifier."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"refusing unsafe SQL identifier {name!r}")
    return f"`{name}`"


@contextlib.contextmanager
def connect(
    settings: MySQLSettings, database: str | None = None, *, load_files: bool = False
) -> Iterator[MySQLdb.Connection]:
    """A connection with autocommit off; closed on exit.

    ``load_files=True`` (the loader's connections only) lets the client send local files
    for ``LOAD DATA LOCAL INFILE``. Every other connection refuses that, so a server (or
    whoever answers in its place) can never ask it for a file of this machine.
    """
    conn = MySQLdb.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        database=database if database is not None else settings.database,
        charset="utf8mb4",
        local_infile=1 if load_files else 0,
        connect_timeout=10,
    )
    conn.recsys_loads_files = load_files
    try:
        yield conn
    finally:
        conn.close()


# What the pipeline's user may do on its databases: the loader's and dbt's tables, indexes,
# renames (ALTER and DROP), dbt's temporary tables and, in the marts database, its views.
# No GRANT OPTION, FILE, SUPER, PROCESS, user administration, routines, triggers or events,
# and nothing on any other database.
RAW_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES"
MARTS_PRIVILEGES = RAW_PRIVILEGES + ", CREATE VIEW, SHOW VIEW"
ANALYST_PRIVILEGES = "SELECT"


def bootstrap(
    admin: MySQLSettings,
    app: MySQLSettings,
    databases: Sequence[str],
    access: WarehouseAccess | None = None,
) -> None:
    """Create ``databases``, the pipeline's user and the analysts' read-only role, idempotently.

    The pipeline's user gets ``MARTS_PRIVILEGES`` on ``app.database`` and
    ``RAW_PRIVILEGES`` on the others, nothing global; whatever it held before is revoked
    first, so rerunning this narrows an older, broader grant. The analysts' role
    (``access``) gets SELECT on ``app.database`` only, and its login has that role by
    default. ``LOAD DATA LOCAL`` needs no FILE privilege (the client reads the file), but
    the server must allow it: this checks, and never changes a server-wide setting.
    """
    if not app.password:
        raise ValueError("RECSYS_MYSQL_PASSWORD is empty: `make setup` writes a generated one into .env")
    hosts = sorted(set(access.client_hosts if access else ()) | {"localhost", "127.0.0.1", app.host})
    with connect(admin, database="") as conn:
        cur = conn.cursor()
        for database in databases:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        wanted = {database: MARTS_PRIVILEGES if database == app.database else RAW_PRIVILEGES for database in databases}
        for host in hosts:
            account = _create_user(cur, app.user, host, app.password)
            _narrow(cur, account, wanted)
            for database, privileges in wanted.items():
                cur.execute(f"GRANT {privileges} ON {quote_identifier(database)}.* TO {account}")
        if access is not None:
            _analysts(cur, app.database, access, hosts)
        _check_local_infile(cur)
        conn.commit()
        if app.raw_database in databases:
            from recsys_pipeline.serving.feedback import create_tables  # the service's log: dbt reads it

            create_tables(conn, app.raw_database)


def _create_user(cur, user: str, host: str, password: str) -> str:
    """The user with this password; returns the account as SQL (``'user'@'host'``, quoted by the driver)."""
    cur.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password))
    cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
    return cur.connection.literal(user).decode() + "@" + cur.connection.literal(host).decode()


_GRANT_LINE = re.compile(r"^GRANT (.+?) ON (\S+) TO .*?( WITH GRANT OPTION)?$")


def _narrow(cur, account: str, wanted: dict[str, str]) -> None:
    """Revoke everything from ``account`` if it holds more than ``wanted`` (database -> privileges).

    An account created by an older version (``ALL PRIVILEGES``) is narrowed; one that
    already has no more than this keeps its grants, so tasks running during a rerun of
    bootstrap never find their privileges missing for a moment.
    """
    allowed = {"*.*": {"USAGE"}} | {f"`{db}`.*": {p.strip() for p in privs.split(",")} for db, privs in wanted.items()}
    cur.execute(f"SHOW GRANTS FOR {account}")
    for (line,) in cur.fetchall():
        match = _GRANT_LINE.match(line)
        if match is None:  # a role granted to the account, or its password
            continue
        privileges = {p.strip() for p in match.group(1).split(",")}
        if match.group(3) or not privileges <= allowed.get(match.group(2), set()):
            log.info("narrowing %s: it held %s", account, line.split(" IDENTIFIED ")[0])
            cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}")
            return


def _analysts(cur, marts_database: str, access: WarehouseAccess, hosts: Sequence[str]) -> None:
    """The read-only role on the marts, and (when a password is set) the analysts' login with it."""
    role = quote_identifier(access.analyst_role)
    cur.execute(f"CREATE ROLE IF NOT EXISTS {role}")
    _narrow(cur, role, {marts_database: ANALYST_PRIVILEGES})
    cur.execute(f"GRANT {ANALYST_PRIVILEGES} ON {quote_identifier(marts_database)}.* TO {role}")
    if not access.analyst_password:
        log.info("RECSYS_MYSQL_ANALYST_PASSWORD is not set: role %s created, no analysts' login", access.analyst_role)
        return
    for host in hosts:
        account = _create_user(cur, access.analyst_user, host, access.analyst_password)
        _narrow(cur, account, {})  # its only privilege is the role
        cur.execute(f"GRANT {role} TO {account}")
        cur.execute(f"SET DEFAULT ROLE {role} FOR {account}")


def _check_local_infile(cur) -> None:
    """The loader needs a server that allows ``LOAD DATA LOCAL``; MariaDB's default does."""
    cur.execute("SHOW GLOBAL VARIABLES LIKE 'local_infile'")
    row = cur.fetchone()
    if row is None or str(row[1]).upper() != "ON":
        raise RuntimeError(
            "the MySQL server has local_infile OFF, and the loader stages raw files with LOAD DATA LOCAL INFILE: "
            "set local_infile = 1 in the server's configuration (MariaDB's default; see "
            "deploy/mariadb/recsys-warehouse.cnf). Only the loader's connections ask for it."
        )


def _escape_for_load_data(series: pd.Series) -> pd.Series:
    """Escape text the way LOAD DATA's default ``ESCAPED BY '\\\\'`` expects."""
    return (
        series.str.replace("\\", "\\\\", regex=False)
        .str.replace("\t", "\\t", regex=False)
        .str.replace("\n", "\\n", regex=False)
        .str.replace("\r", "\\r", regex=False)
    )


LOAD_FILE_ROWS = 262_144  # rows made into text at a time by write_load_file


def write_load_file(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as a tab-separated file LOAD DATA reads back exactly (NULL as \\N).

    Each column of a slice of rows becomes Arrow text in one vectorised pass and the rows are
    joined in Arrow, so each slice is written from one buffer: pandas' ``to_csv`` formatted every
    value in Python, 1.14 of the 1.35 s a 131,072-event batch spent here (bench/README.md). The
    values are those ``to_csv`` wrote: text escaped for ``ESCAPED BY '\\\\'``, times to the second (to
    the millisecond where a slice's column has fractions), booleans as 0/1, floats in their shortest
    exact form (``%.17g`` where that has an exponent, as before).
    """
    with path.open("wb") as out:
        # in slices: the text of 4M rows at once (the 10M-event shop's recommendations) is ~2 GB of fresh Arrow
        # buffers, 5.1 s where 400k rows took 0.38; a slice's buffers are reused by the next one
        for start in range(0, len(frame), LOAD_FILE_ROWS):
            part = frame.iloc[start : start + LOAD_FILE_ROWS]
            columns = [pc.fill_null(_load_data_text(part[name]), "\\N") for name in part.columns]
            lines = pc.binary_join_element_wise(*columns, "\t")
            lines = pc.binary_join_element_wise(lines, "", "\n").cast(pa.large_string())  # each line ends in \n
            if isinstance(lines, pa.ChunkedArray):  # from a column already held in Arrow chunks
                lines = lines.combine_chunks()
            offsets = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset : lines.offset + len(lines) + 1]
            out.write(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def _load_data_text(column: pd.Series) -> pa.Array:
    """One column as LOAD DATA text, nulls left null."""
    if pd.api.types.is_bool_dtype(column):
        column = column.astype("Int8")
    if pd.api.types.is_datetime64_any_dtype(column) and getattr(column.dt, "tz", None) is None:
        # milliseconds: a DATETIME(3) column (NaT has none: its NaN microsecond once made every such column one)
        fractions = bool((column.dt.microsecond.fillna(0) != 0).any())
        times = pa.array(column, from_pandas=True)
        return times.cast(pa.timestamp("ms" if fractions else "s"), safe=False).cast(pa.string())
    if pd.api.types.is_datetime64_any_dtype(column):  # zoned: its wall-clock time, as strftime writes it
        fractions = bool((column.dt.microsecond.fillna(0) != 0).any())
        text = column.dt.strftime("%Y-%m-%d %H:%M:%S.%f" if fractions else "%Y-%m-%d %H:%M:%S")
        return pa.array(text.str[:-3] if fractions else text, type=pa.string(), from_pandas=True)
    if pd.api.types.is_float_dtype(column):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        text = pa.array(values, from_pandas=True).cast(pa.string())
        exponent = pc.fill_null(pc.match_substring(text, "e"), False).to_numpy(zero_copy_only=False)
        if exponent.any():  # where the shortest form has an exponent, ``%.17g`` as to_csv wrote it
            written = np.asarray(text.to_pylist(), dtype=object)
            written[exponent] = [f"{value:.17g}" for value in values[exponent]]
            text = pa.array(written, type=pa.string())
        return text
    if pd.api.types.is_integer_dtype(column):
        return pa.array(column, from_pandas=True).cast(pa.string())
    return pa.array(_escape_for_load_data(column.astype("string")), type=pa.string(), from_pandas=True)


def load_frame(conn: MySQLdb.Connection, table: str, frame: pd.DataFrame, tmp_dir: Path) -> int:
    """Bulk-load ``frame`` into existing ``table`` (``db.table`` allowed); refuse any lost row.

    Returns the number of rows loaded. Raises LoadError naming the table and the first
    warnings when MySQL skipped, truncated or coerced anything.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"{table.replace('.', '__')}.tsv"
    write_load_file(frame, path)
    return load_file(conn, table, path, list(frame.columns), len(frame))


def load_file(conn: MySQLdb.Connection, table: str, path: Path, columns: Sequence[str], rows: int) -> int:
    """LOAD DATA ``path`` (``write_load_file``'s, of ``rows`` rows of ``columns``) into ``table``, then delete it.

    As ``load_frame``: the rows loaded, or LoadError when MySQL warned or kept fewer rows.
    Separate from writing the file so that a loader may write the next batch's file while
    this one loads (``ingest.loader``): mysqlclient releases the GIL while the statement runs.
    """
    if not getattr(conn, "recsys_loads_files", False):
        path.unlink(missing_ok=True)
        raise ValueError(f"load into {table}: use a connection from warehouse.connect(..., load_files=True)")
    target = ".".join(quote_identifier(part) for part in table.split("."))
    names = ", ".join(quote_identifier(c) for c in columns)
    cur = conn.cursor()
    try:
        cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {target} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({names})",
            (str(path),),
        )
        loaded = cur.rowcount
        cur.execute("SHOW WARNINGS LIMIT 5")
        warnings = cur.fetchall()
    finally:
        path.unlink(missing_ok=True)
    if warnings:
        details = "; ".join(f"{level} {code}: {message}" for level, code, message in warnings)
        raise LoadError(f"load into {table} produced warnings, refusing it: {details}")
    if loaded != rows:
        raise LoadError(f"load into {table} kept {loaded} of {rows} rows, refusing it")
    return loaded


def swap_in(conn: MySQLdb.Connection, database: str, tables: Sequence[str], keep_previous: bool = True) -> None:
    """Atomically replace each ``table`` by ``table__new``, keeping the old one as ``table__previous``.

    One ``RENAME TABLE`` statement moves every name at once, so a reader querying any
    of ``tables`` sees either all old rows or all new ones.
    """
    db = quote_identifier(database)
    cur = conn.cursor()
    renames = []
    for table in tables:
        live, new, previous = (quote_identifier(n) for n in (table, f"{table}__new", f"{table}__previous"))
        cur.execute(f"DROP TABLE IF EXISTS {db}.{previous}")
        if table_exists(conn, database, table):
            renames.append(f"{db}.{live} TO {db}.{previous}")
        renames.append(f"{db}.{new} TO {db}.{live}")
    cur.execute("RENAME TABLE " + ", ".join(renames))
    if not keep_previous:
        for table in tables:
            cur.execute(f"DROP TABLE IF EXISTS {db}.{quote_identifier(table + '__previous')}")
    conn.commit()


def table_exists(conn: MySQLdb.Connection, database: str, table: str) -> bool:
    cur = conn.cursor()
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (database, table),
    )
    return cur.fetchone()[0] > 0


def column_exists(conn: MySQLdb.Connection, database: str, table: str, column: str) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT COUNT(*) FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s AND column_name = %s",
            (database, table, column),
        )
    )


_TIME_TYPES = (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATE)


def read_frame(conn: MySQLdb.Connection, sql: str, params: Sequence | None = None) -> pd.DataFrame:
    """Run ``sql`` and return its rows as a DataFrame with the query's column names.

    Date and time columns arrive as text and are parsed by pandas a column at a time, into what MySQLdb's
    own conversion gives (datetime64 for DATETIME and TIMESTAMP, ``datetime.date`` objects for DATE, None
    where MySQL has NULL or a zero date): MySQLdb parses each value in Python, ~1.6 us against ~0.3 us,
    and a 10M-event run's snapshot reads ~33M of them (bench/README.md).
    """
    converter = conn.converter
    saved = {code: converter.get(code) for code in _TIME_TYPES}
    converter.update(dict.fromkeys(_TIME_TYPES, str))
    try:
        cur = conn.cursor()
        cur.execute(sql, params)  # the result takes its converters here; the connection's are restored below
    finally:
        for code, convert in saved.items():
            if convert is None:
                converter.pop(code, None)
            else:
                converter[code] = convert
    columns = [d[0] for d in cur.description]
    frame = pd.DataFrame(list(cur.fetchall()), columns=columns)
    for position, description in enumerate(cur.description):
        if description[1] in _TIME_TYPES:
            frame.isetitem(position, _parsed_times(frame.iloc[:, position], description[1] == FIELD_TYPE.DATE))
    return frame


def _parsed_times(text: pd.Series, dates: bool) -> pd.Series:
    if not text.notna().any():
        return text  # all NULL: MySQLdb's None, as before
    values = pd.to_datetime(text, format="ISO8601", errors="coerce")  # a zero date: NaT
    if not dates:
        return values
    return pd.Series(np.where(values.isna(), None, values.dt.date), index=text.index, dtype=object)


def scalar(conn: MySQLdb.Connection, sql: str, params: Sequence | None = None):
    cur = conn.cursor()
    cur.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else row[0]


def query_one(conn: MySQLdb.Connection, sql: str, params: Sequence | None = None) -> tuple | None:
    """Run ``sql`` and return its first row (None when it has none)."""
    cur = conn.cursor()
    cur.execute(sql, params)
    return cur.fetchone()
