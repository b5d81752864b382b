"""Make sure the services a run needs are up: MariaDB, and object storage.

On a developer machine without configured object storage the project runs its own
S3 API server (moto's server mode) on loopback, so the pipeline talks to it over HTTP
with boto3 exactly as it would to MinIO or AWS S3. It keeps running after the demo
(until ``make stop``) so the published release can be inspected.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from recsys_pipeline.settings import PROJECT_ROOT, MySQLSettings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def ensure_mariadb(settings: MySQLSettings) -> None:
    """Start the local MariaDB server if nothing answers on its port (local hosts only)."""
    if port_open(settings.host, settings.port):
        return
    if settings.host not in LOCAL_HOSTS:
        raise RuntimeError(f"MySQL at {settings.host}:{settings.port} does not answer")
    daemon = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    subprocess.run(
        ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", daemon],
        check=True,
    )
    if not wait_for_port(settings.host, settings.port, 60):
        raise RuntimeError(f"started {daemon} but nothing answers on {settings.host}:{settings.port} after 60 s")


def run_dir() -> Path:
    path = Path(os.environ.get("RECSYS_RUN_DIR", PROJECT_ROOT / ".run"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_local_s3(endpoint_url: str, name: str = "moto") -> int | None:
    """Start a moto S3 API server for ``endpoint_url`` unless one answers there already.

    Returns the new server's pid, or None when a server was already up. The pid is
    written to ``.run/<name>.pid`` for ``stop_local_s3``.
    """
    url = urlparse(endpoint_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in LOCAL_HOSTS:
        raise RuntimeError(f"refusing to start a local S3 server for non-local endpoint {endpoint_url}")
    if port_open(host, port):
        return None
    moto_server = Path(sys.executable).with_name("moto_server")
    log_file = (run_dir() / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [str(moto_server), "-H", host, "-p", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # survives the make target that started it
    )
    (run_dir() / f"{name}.pid").write_text(str(process.pid))
    if not wait_for_port(host, port, 30):
        process.kill()
        raise RuntimeError(f"moto_server did not answer on {host}:{port} within 30 s (see .run/{name}.log)")
    return process.pid


def stop_local_s3(name: str = "moto") -> bool:
    pid_file = run_dir() / f"{name}.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    pid_file.unlink(missing_ok=True)
    return True
