"""MariaDB killed in the middle of the dbt build, then restarted: the rerun completes, with no duplicates.

The shared server cannot be restarted under other tests, so this one runs its own MariaDB
(``mariadb-install-db`` into a temporary datadir, a free port, small buffers) and kills it
with SIGKILL -- a crash, not a shutdown -- once the build has started writing tables. The
build fails with the connection lost; after a restart the same ``dbt.build`` call, as the
DAG's retry would make it, rebuilds what the crash left half-written, and every dbt test
(unique keys, every raw row accounted for) passes.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_dbt_models import _events, _items

from recsys_pipeline import warehouse
from recsys_pipeline.features import dbt
from recsys_pipeline.ingest.adapters import RawDataset
from recsys_pipeline.ingest.contract import check_frame
from recsys_pipeline.ingest.loader import load_raw
from recsys_pipeline.release.recommendations_table import ensure_recommendations_table
from recsys_pipeline.settings import mysql_admin_settings

from conftest import _free_port

pytestmark = pytest.mark.integration

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"


class PrivateMariaDB:
    def __init__(self, datadir: Path):
        self.datadir = datadir
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if not (self.datadir / "mysql").exists():
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", f"--user={getpass.getuser()}",
                 "--auth-root-authentication-method=normal"],
                check=True, capture_output=True,
            )  # fmt: skip
        self.process = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.datadir}/mysqld.sock", f"--user={getpass.getuser()}", "--skip-log-bin",
             "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M", f"--log-error={self.datadir}/error.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        admin = self.admin()
        while time.monotonic() < deadline:
            try:
                with warehouse.connect(admin, database=""):
                    return
            except Exception:
                time.sleep(0.2)
        raise AssertionError(f"private MariaDB did not start: {(self.datadir / 'error.log').read_text()[-2000:]}")

    def crash(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def admin(self):
        return replace(mysql_admin_settings(), host="127.0.0.1", port=self.port, user="root", password="")


@pytest.fixture()
def server(tmp_path):
    if not Path(MARIADBD).exists() or not shutil.which("mariadb-install-db"):
        pytest.skip("mariadbd / mariadb-install-db not installed")
    private = PrivateMariaDB(tmp_path / "datadir")
    private.start()
    yield private
    private.stop()


def test_a_crash_of_mariadb_mid_build_then_a_rerun_leaves_no_duplicates(server, mysql_test_settings, monkeypatch):
    monkeypatch.setenv("RECSYS_MAX_UNPARSEABLE_EVENT_TIME_SHARE", "0.1")  # the hand-made set's bad date
    app = replace(mysql_test_settings, host="127.0.0.1", port=server.port)
    warehouse.bootstrap(server.admin(), app, [app.database, app.raw_database])
    events = check_frame(_events(), "events", "synthetic")
    load_raw(RawDataset("synthetic", events, check_frame(_items(events), "items", "synthetic"),
                        check_frame(events[["user_id"]].dropna().drop_duplicates(), "users", "synthetic"), []),
             app, "restart-test")  # fmt: skip
    ensure_recommendations_table(app)

    failure: list[BaseException] = []

    def build() -> None:
        try:
            dbt.build(app, {"time_cut_days": 15})
        except BaseException as error:
            failure.append(error)

    builder = threading.Thread(target=build)
    builder.start()
    deadline = time.monotonic() + 120
    with warehouse.connect(server.admin(), database="") as conn:
        while time.monotonic() < deadline:  # the build is writing: staging exists, the marts not yet all
            if warehouse.scalar(
                conn,
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = 'stg_raw__events'",
                (app.database,),
            ):
                break
            time.sleep(0.1)
    server.crash()
    builder.join(300)
    assert failure and isinstance(failure[0], dbt.DbtError), failure  # the build saw the server go

    server.start()  # the same datadir: InnoDB recovers, half-built tables included
    dbt.build(app, {"time_cut_days": 15})  # what the DAG's retry calls; every dbt test runs in it
    with warehouse.connect(app) as conn:
        staged = warehouse.scalar(conn, "SELECT COUNT(*) FROM stg_raw__events")
        distinct = warehouse.scalar(conn, "SELECT COUNT(DISTINCT source_row_id) FROM stg_raw__events")
        rejected = warehouse.scalar(conn, "SELECT COUNT(*) FROM stg_raw__rejected_events")
        pairs = warehouse.scalar(conn, "SELECT COUNT(*) FROM int_interactions")
        distinct_pairs = warehouse.scalar(conn, "SELECT COUNT(DISTINCT user_id, item_id) FROM int_interactions")
    assert staged == distinct and pairs == distinct_pairs and staged + rejected == len(events)
