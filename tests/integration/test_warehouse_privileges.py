"""Least privilege in the real MariaDB: what the pipeline's user, the analysts and a plain connection may do.

Each test logs in as the user ``warehouse.bootstrap`` created and tries what that role must
not do; MariaDB's own refusal (error 1044/1045/1142/1227/4166...) is the assertion.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import MySQLdb
import pandas as pd
import pytest

from recsys_pipeline import warehouse
from recsys_pipeline.settings import WarehouseAccess, mysql_admin_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def analysts(mysql_test_settings):
    """The analysts' role and login for the test databases (bootstrap run again, as `recsys services` does)."""
    access = WarehouseAccess(
        analyst_role=f"{mysql_test_settings.user}_reader",
        analyst_user=f"{mysql_test_settings.user}_analyst",
        analyst_password=secrets.token_hex(12),
        client_hosts=("localhost", "127.0.0.1"),
    )
    admin = mysql_admin_settings()
    databases = [mysql_test_settings.database, mysql_test_settings.raw_database]
    warehouse.bootstrap(admin, mysql_test_settings, databases, access)
    with warehouse.connect(mysql_test_settings) as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS privileges_demo")
        cur.execute("CREATE TABLE privileges_demo (user_id VARCHAR(64) PRIMARY KEY, n INT)")
        cur.execute("INSERT INTO privileges_demo VALUES ('u1', 1)")
        conn.commit()
    yield replace(mysql_test_settings, user=access.analyst_user, password=access.analyst_password), access
    with warehouse.connect(admin, database="") as conn:
        cur = conn.cursor()
        for host in access.client_hosts:
            cur.execute("DROP USER IF EXISTS %s@%s", (access.analyst_user, host))
        cur.execute(f"DROP ROLE IF EXISTS {warehouse.quote_identifier(access.analyst_role)}")
        conn.commit()


def _refused(settings, sql: str, database: str | None = None) -> str:
    """Run ``sql`` as ``settings.user``; the server's error message (the test fails when it is allowed)."""
    with warehouse.connect(settings, database=database) as conn, pytest.raises(MySQLdb.MySQLError) as refused:
        conn.cursor().execute(sql)
    return str(refused.value)


def test_the_pipeline_user_has_only_its_databases_privileges(mysql_test_settings):
    text = _grants(mysql_test_settings)
    grants = text.splitlines()
    assert "ALL PRIVILEGES" not in text and "GRANT OPTION" not in text, text
    assert f"GRANT USAGE ON *.* TO `{mysql_test_settings.user}`" in text  # nothing server-wide
    on_databases = [g for g in grants if " ON *.* " not in g]
    assert {g.split(" ON ")[1].split(" TO ")[0] for g in on_databases} == {
        f"`{mysql_test_settings.database}`.*",
        f"`{mysql_test_settings.raw_database}`.*",
    }


def _grants(settings) -> str:
    with warehouse.connect(settings) as conn:
        return "\n".join(row[0] for row in warehouse.read_frame(conn, "SHOW GRANTS").itertuples(index=False))


def test_bootstrap_narrows_the_all_privileges_an_older_version_granted(mysql_test_settings):
    admin = mysql_admin_settings()
    databases = [mysql_test_settings.database, mysql_test_settings.raw_database]
    with warehouse.connect(admin, database="") as conn:
        conn.cursor().execute(f"GRANT ALL ON `{databases[0]}`.* TO %s@'127.0.0.1'", (mysql_test_settings.user,))
    assert "ALL PRIVILEGES" in _grants(mysql_test_settings)
    warehouse.bootstrap(admin, mysql_test_settings, databases)
    narrowed = _grants(mysql_test_settings)
    assert "ALL PRIVILEGES" not in narrowed and "CREATE VIEW" in narrowed
    warehouse.bootstrap(admin, mysql_test_settings, databases)  # a rerun changes nothing
    assert _grants(mysql_test_settings) == narrowed


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE DATABASE recsys_not_ours",
        "DROP DATABASE mysql",
        "CREATE USER intruder@localhost IDENTIFIED BY 'x'",
        "SELECT user, password FROM mysql.user",
        "SET GLOBAL local_infile = 0",
        "SELECT 1 INTO OUTFILE '/tmp/recsys_privileges_outfile'",
        "CREATE PROCEDURE p() SELECT 1",
        "CREATE TRIGGER t BEFORE INSERT ON privileges_demo FOR EACH ROW SET NEW.n = 2",
    ],
)
def test_the_pipeline_user_cannot_administer_the_server(mysql_test_settings, analysts, sql):
    message = _refused(mysql_test_settings, sql)
    assert "denied" in message or "privilege" in message, message


def test_the_pipeline_user_cannot_grant_its_privileges(mysql_test_settings, analysts):
    analyst, _ = analysts
    message = _refused(mysql_test_settings, f"GRANT SELECT ON {mysql_test_settings.database}.* TO '{analyst.user}'")
    assert "denied" in message, message


def test_the_analysts_read_the_marts_and_change_nothing(mysql_test_settings, analysts):
    analyst, access = analysts
    with warehouse.connect(analyst) as conn:
        assert warehouse.scalar(conn, "SELECT n FROM privileges_demo WHERE user_id = 'u1'") == 1
        assert warehouse.scalar(conn, "SELECT CURRENT_ROLE()") == access.analyst_role
    for sql in (
        "INSERT INTO privileges_demo VALUES ('u2', 2)",
        "UPDATE privileges_demo SET n = 3",
        "DELETE FROM privileges_demo",
        "DROP TABLE privileges_demo",
        "CREATE TABLE analysts_table (a INT)",
    ):
        assert "denied" in _refused(analyst, sql), sql
    # the raw tables (and their quarantined rows) are not theirs to read
    raw = mysql_test_settings.raw_database
    with pytest.raises(MySQLdb.OperationalError, match="denied"), warehouse.connect(analyst, database=raw):
        pass


def test_a_plain_connection_cannot_send_local_files_only_the_loaders_can(mysql_test_settings, analysts, tmp_path):
    path = tmp_path / "rows.tsv"
    path.write_text("u9\t9\n")
    sql = f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE privileges_demo"
    assert "local infile" in _refused(mysql_test_settings, sql).lower()
    with warehouse.connect(mysql_test_settings, load_files=True) as conn:
        frame = pd.DataFrame({"user_id": ["u9"], "n": [9]})
        assert warehouse.load_frame(conn, "privileges_demo", frame, tmp_path) == 1
        conn.commit()
    with warehouse.connect(mysql_test_settings) as conn, pytest.raises(ValueError, match="load_files=True"):
        warehouse.load_frame(conn, "privileges_demo", frame, Path(tmp_path))


def test_the_compose_init_step_provisions_the_same_users(mysql_test_settings, analysts, tmp_path):
    """``python -m recsys_pipeline.provision`` (docker-compose's warehouse-init) with the admin password only there."""
    import subprocess
    import sys

    from recsys_pipeline.settings import s3_settings

    from conftest import pipeline_environment

    analyst, access = analysts
    env = pipeline_environment(
        mysql_test_settings,
        s3_settings(),  # not used: provisioning touches MySQL only
        tmp_path,
        tmp_path,
        RECSYS_MYSQL_ANALYST_ROLE=access.analyst_role,
        RECSYS_MYSQL_ANALYST_USER=access.analyst_user,
        RECSYS_MYSQL_ANALYST_PASSWORD=access.analyst_password,
    )
    result = subprocess.run(
        [sys.executable, "-m", "recsys_pipeline.provision"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"analysts' read-only role {access.analyst_role} on {mysql_test_settings.database}" in result.stdout
    with warehouse.connect(analyst) as conn:
        assert warehouse.scalar(conn, "SELECT COUNT(*) FROM privileges_demo") >= 1
    assert "denied" in _refused(analyst, "DELETE FROM privileges_demo")
