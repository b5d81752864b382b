"""Run a local Airflow (api-server, scheduler, dag-processor, triggerer) with this project's DAGs.

``make airflow`` runs this in the foreground: it starts ``airflow standalone`` in a
process group of its own, waits until the API server answers, prints the URL and how
to log in, and stops every Airflow process (the whole group) on Ctrl-C or SIGTERM.
Authentication stays on: Airflow's simple auth manager with one ``admin`` user whose
password Airflow generates into ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``
(never admin/admin). With ``--background`` it returns once Airflow is healthy and
leaves the group's id in ``$AIRFLOW_HOME/standalone.pgid`` (what the tests use).
Once healthy it creates the one-slot ``recsys_release`` pool the publish, load and
rollback tasks run in (a task in a missing pool is never scheduled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def standalone_env(home: Path, port: int) -> dict:
    """The environment ``airflow standalone`` needs here, on top of the caller's."""
    env = dict(os.environ)
    venv_bin = Path(sys.executable).parent  # standalone starts its components as `airflow ...` from PATH
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    if len(env.get("AIRFLOW__API_AUTH__JWT_SECRET", "")) < 64:
        raise SystemExit("AIRFLOW__API_AUTH__JWT_SECRET must be set to 64+ characters (make writes one into .env)")
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT_ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST=env.get("AIRFLOW__API__HOST", "127.0.0.1"),
        AIRFLOW__API__BASE_URL=f"http://localhost:{port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://localhost:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",  # user "admin" with role ADMIN; password generated
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
    )
    return env


def create_release_pool(env: dict) -> str:
    """Create (or reset to one slot) the pool every writer of a champion and of ``recommendations`` runs in."""
    sys.path.insert(0, str(PROJECT_ROOT / "plugins"))
    from recsys_pipeline.orchestration.release_pool import DESCRIPTION, POOL, SLOTS

    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "pools", "set", POOL, str(SLOTS), DESCRIPTION],
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{POOL} ({SLOTS} slot)"


def password_file(home: Path) -> Path:
    return home / "simple_auth_manager_passwords.json.generated"


def is_healthy(url: str) -> bool:
    """Whether the Airflow API server at ``url`` answers and reports its metadatabase and scheduler healthy."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
            health = json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return False
    return all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler"))


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"airflow standalone exited with code {process.returncode} before it was healthy")
        if is_healthy(url):
            return
        time.sleep(2)
    raise SystemExit(f"Airflow at {url} was not healthy after {timeout:.0f} s")


def stop_group(pgid: int, grace: float = 20.0) -> None:
    """SIGTERM the whole process group, then SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", PROJECT_ROOT / ".airflow")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for a healthy Airflow")
    parser.add_argument("--background", action="store_true", help="return once healthy (stop with --stop)")
    parser.add_argument("--stop", action="store_true", help="stop an Airflow started with --background")
    args = parser.parse_args()
    home = args.home.resolve()
    pgid_file = home / "standalone.pgid"
    if args.stop:
        if pgid_file.exists():
            stop_group(int(pgid_file.read_text()))
            pgid_file.unlink()
        return
    home.mkdir(parents=True, exist_ok=True)
    env = standalone_env(home, args.port)
    log_path = home / "standalone.log"
    url = f"http://localhost:{args.port}"
    log = log_path.open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as one
    )
    pgid_file.write_text(str(process.pid))
    started = time.monotonic()
    try:
        wait_healthy(url, process, args.timeout)
    except BaseException:
        stop_group(process.pid)
        pgid_file.unlink(missing_ok=True)
        print(f"see {log_path}", file=sys.stderr)
        raise
    try:
        pool = create_release_pool(env)
    except (subprocess.CalledProcessError, OSError) as error:
        stop_group(process.pid)
        pgid_file.unlink(missing_ok=True)
        raise SystemExit(f"could not create the recsys_release pool: {getattr(error, 'stderr', error)}") from error
    password = json.loads(password_file(home).read_text()).get("admin", "?") if password_file(home).exists() else "?"
    print(f"Airflow is up after {time.monotonic() - started:.0f} s: {url}")
    print(f"  pool {pool}: publish, load and rollback tasks run one at a time")
    print(f"  log in as admin with the password in {password_file(home)}: {password}")
    print(f"  DAGs: recsys_features, recsys_training, recsys_rollback; models page: {url}/plugin/recsys-models")
    print(f"  logs of every component: {log_path}")
    if args.background:
        print(f"  stop it with: {sys.executable} {Path(__file__).relative_to(PROJECT_ROOT)} --home {home} --stop")
        return
    print("  Ctrl-C stops it")

    def _stop(*_):
        stop_group(process.pid)
        pgid_file.unlink(missing_ok=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        process.wait()
    except KeyboardInterrupt:
        _stop()
    finally:
        stop_group(process.pid)
        pgid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
