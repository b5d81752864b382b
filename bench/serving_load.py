"""Benchmark: the real-time service under load, on the demo's champion, with Locust on the same machine.

    .venv/bin/python bench/serving_load.py --dataset groceries      (or: make bench-serving DATASET=...)

Starts ``recsys serve`` as the user would (its own process, the demo's MySQL and object
storage), creates an API key for the run (revoked at the end), and drives each endpoint
with Locust (headless, ``.venv-bench``) at fixed request rates: the known shopper and
related items at 250/500/750 requests/s, the shopper in context at 100/200/300. For each
it records p50/p95/p99 latency, errors and the achieved rate, and the highest rate held
with p99 under the issue's target. Then a hot swap under a 200 requests/s mix: the
pointer is rewritten (a rollback to the previous promoted release when there is one, else
the same release re-pointed, which still downloads, checks, loads and swaps it) and moved
back, and every failed request is counted. Last, side by side, one client asking in turn:
the service's known-shopper answer against a primary-key lookup of the same list in
MySQL's ``recommendations`` table. Figures go to ``.work/bench/serving.json``; nothing is
asserted. Locust and the service share the machine's two cores, as the issue asks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))

from recsys_pipeline import storage, warehouse  # noqa: E402
from recsys_pipeline.release.layout import champion_key  # noqa: E402
from recsys_pipeline.run import dataset_key  # noqa: E402
from recsys_pipeline.serving import api_keys  # noqa: E402
from recsys_pipeline.settings import mysql_settings, s3_settings, work_dir  # noqa: E402

TARGETS_MS = {"known": 10.0, "context": 25.0, "related": 10.0}  # p99, issue 21
RATES = {"known": (250, 500, 750), "context": (100, 200, 300), "related": (250, 500, 750)}
ISSUE_RATE = {"known": 500, "context": 200, "related": 500}
NAMES = {"known": "known shopper", "context": "shopper in context", "related": "related items"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(dataset: str, port: int, folder: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        RECSYS_SERVING_POLL_SECONDS="1",
        RECSYS_SERVING_CACHE_DIR=str(folder / "releases"),
        RECSYS_SERVING_SPOOL=str(folder / "spool.jsonl"),
    )
    log = (folder / "service.log").open("w")
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "recsys"), "serve", "--dataset", dataset, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"recsys serve exited: {(folder / 'service.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("recsys serve did not answer within 120 s")


def sample_ids() -> dict:
    with warehouse.connect(mysql_settings()) as conn:
        users = [r[0] for r in _rows(conn, "SELECT DISTINCT user_id FROM recommendations LIMIT 2000")]
        items = [r[0] for r in _rows(conn, "SELECT DISTINCT item_id FROM recommendations LIMIT 2000")]
    if not users:
        raise SystemExit("MySQL's recommendations table is empty: run make demo first")
    return {"users": users, "items": items, "segment": None}


def _rows(conn, sql: str, params=None) -> list[tuple]:
    cur = conn.cursor()
    cur.execute(sql, params)
    return list(cur.fetchall())


def run_locust(locust: Path, url: str, key: str, ids_file: Path, scenario: str, rate: int, seconds: int, out: Path):
    users = max(4, rate // 25)  # each user at most 25 requests/s: Locust keeps the rate without queueing
    prefix = out / f"{scenario}-{rate}"
    env = dict(
        os.environ,
        SERVING_SCENARIO=scenario,
        SERVING_IDS_FILE=str(ids_file),
        SERVING_API_KEY=key,
        SERVING_RATE_PER_USER=str(rate / users),
    )
    subprocess.run(
        [
            str(locust),
            "-f",
            str(ROOT / "bench" / "locustfile_serving.py"),
            "--headless",
            "--host",
            url,
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["Name"] != "Aggregated"]
    total = {
        "requests": sum(int(r["Request Count"]) for r in rows),
        "failures": sum(int(r["Failure Count"]) for r in rows),
        "requests_per_s": round(sum(float(r["Requests/s"]) for r in rows), 1),
    }
    if scenario != "mixed":
        (row,) = rows
        total |= {f"p{p}_ms": float(row[f"{p}%"]) for p in (50, 95, 99)}
    total["target_rate"] = rate
    return total


def hot_swap(locust: Path, url: str, key: str, ids_file: Path, out: Path, dataset: str) -> dict:
    """A 200 requests/s mix while the pointer moves away and back; every failed request counted."""
    settings = s3_settings()
    s3 = storage.client(settings)
    pointer_key = champion_key(settings, dataset)
    original = s3.get_object(Bucket=settings.bucket, Key=pointer_key)["Body"].read()
    pointer = json.loads(original)
    history = [
        h for h in _promoted(s3, settings, dataset) if h != pointer["release_id"]
    ]  # a former champion: a real rollback
    moved = dict(pointer, bench_repointed_at=time.time())
    swaps = []
    load = subprocess.Popen(
        [sys.executable, __file__, "--_locust-only", str(locust), url, key, str(ids_file), str(out)]
    )
    time.sleep(8)
    try:
        if history:
            from recsys_pipeline.release.champion import move_champion

            move_champion(settings, dataset, history[-1])
            swaps.append(("rollback", history[-1], _wait_release(url, history[-1])))
        else:
            storage.put_json(s3, settings.bucket, pointer_key, moved)
            swaps.append(("re-pointed", pointer["release_id"], _wait_swaps(url, key, 1)))
        time.sleep(5)
    finally:
        s3.put_object(Bucket=settings.bucket, Key=pointer_key, Body=original, ContentType="application/json")
    swaps.append(("restored", pointer["release_id"], _wait_swaps(url, key, 2)))
    load.wait()
    result = json.loads((out / "swap.json").read_text())
    result["swaps"] = [{"kind": k, "release_id": r, "seconds_to_serve": s} for k, r, s in swaps]
    return result


def _promoted(s3, settings, dataset: str) -> list[str]:
    from recsys_pipeline.release.champion import read_history

    try:
        return [h["release_id"] for h in read_history(s3, settings, dataset) if h.get("event") == "promote"]
    except Exception:
        return []


def _wait_release(url: str, release_id: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if httpx.get(f"{url}/healthz", timeout=2).json()["release_id"] == release_id:
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return float("nan")


def _wait_swaps(url: str, key: str, count: int) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 60:
        metrics = httpx.get(f"{url}/metrics", headers={api_keys.HEADER: key}, timeout=2).text
        swaps = next(
            float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("recsys_serving_model_swaps")
        )
        if swaps >= count:
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return float("nan")


def side_by_side(url: str, key: str, users: list[str], n: int = 2000) -> dict:
    """One client, one request at a time: the service's answer vs a primary-key read of the same list in MySQL."""
    timings = {"service_ms": [], "mysql_ms": []}
    with (
        httpx.Client(base_url=url, headers={api_keys.HEADER: key}) as client,
        warehouse.connect(mysql_settings()) as conn,
    ):
        cur = conn.cursor()
        for i in range(n):
            user = users[i % len(users)]
            started = time.perf_counter()
            client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).raise_for_status()
            timings["service_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            cur.execute(
                "SELECT item_id, score FROM recommendations WHERE user_id = %s ORDER BY `rank` LIMIT 10", (user,)
            )
            cur.fetchall()
            timings["mysql_ms"].append((time.perf_counter() - started) * 1000)
    return {name: _percentiles(values) for name, values in timings.items()}


def _percentiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=100)
    return {"p50": round(q[49], 3), "p95": round(q[94], 3), "p99": round(q[98], 3), "n": len(values)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_locust-only":  # the hot swap's load, in a process of its own
        locust, url, key, ids_file, out = sys.argv[2:]
        result = run_locust(Path(locust), url, key, Path(ids_file), "mixed", 200, 30, Path(out))
        (Path(out) / "swap.json").write_text(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="online-retail")
    parser.add_argument("--seconds", type=int, default=20, help="length of each load step")
    parser.add_argument("--locust", type=Path, default=ROOT / ".venv-bench" / "bin" / "locust")
    args = parser.parse_args()
    dataset = dataset_key(args.dataset)
    out = work_dir() / "bench" / "serving"
    out.mkdir(parents=True, exist_ok=True)
    created = api_keys.create_key(mysql_settings(), f"bench-serving-{int(time.time())}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    service = start_service(dataset, port, out)
    try:
        health = httpx.get(f"{url}/healthz").json()
        ids = sample_ids()
        ids_file = out / "ids.json"
        ids_file.write_text(json.dumps(ids))
        results: dict = {"dataset": dataset, "release_id": health["release_id"], "seconds_per_step": args.seconds}
        results["cpu"] = os.cpu_count()
        results["endpoints"] = {}
        for scenario, rates in RATES.items():
            steps = [run_locust(args.locust, url, created.key, ids_file, scenario, r, args.seconds, out) for r in rates]
            held = [
                s["target_rate"]
                for s in steps
                if s["failures"] == 0
                and s["p99_ms"] <= TARGETS_MS[scenario]
                and s["requests_per_s"] >= 0.95 * s["target_rate"]
            ]
            results["endpoints"][scenario] = {
                "name": NAMES[scenario],
                "p99_target_ms": TARGETS_MS[scenario],
                "issue_rate": ISSUE_RATE[scenario],
                "steps": steps,
                "highest_rate_held": max(held) if held else None,
            }
            for s in steps:
                print(
                    f"{NAMES[scenario]:>20} @ {s['target_rate']:>4}/s: {s['requests_per_s']:>6}/s achieved, "
                    f"p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms "
                    f"(target {TARGETS_MS[scenario]:.0f}), {s['failures']} errors"
                )
        results["hot_swap"] = hot_swap(args.locust, url, created.key, ids_file, out, dataset)
        print(f"hot swap under a 200/s mix: {results['hot_swap']}")
        results["side_by_side"] = side_by_side(url, created.key, ids["users"])
        print(f"one request at a time, known shopper: {results['side_by_side']}")
        (work_dir() / "bench" / "serving.json").write_text(json.dumps(results, indent=2))
        print(f"written: {work_dir() / 'bench' / 'serving.json'}")
    finally:
        service.terminate()
        service.wait(30)
        api_keys.revoke_key(mysql_settings(), created.key_id)


if __name__ == "__main__":
    main()
