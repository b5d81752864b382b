"""``recsys``: the command line around the pipeline (services, the demo summary).

    recsys services          make sure MariaDB, the pipeline's databases and user, and object storage are up
    recsys summary           print what the last run of a dataset loaded, checked, measured and published
    recsys quarantine        list what the gates refused for a load: rule, reason, rows
    recsys verify            download the champion, check every checksum, load its SavedModel, recommend
    recsys rollback          point the champion back to an earlier complete release (and reload MySQL)
    recsys unlock            show who holds the warehouse for a feature build (--force: free it)
    recsys stop              stop the local S3 API server
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from recsys_pipeline import services, stages, storage, warehouse
from recsys_pipeline.settings import mysql_admin_settings, mysql_settings, s3_settings, work_dir


def cmd_services(args: argparse.Namespace) -> int:
    app = mysql_settings()
    services.ensure_mariadb(app)
    databases = [app.database, app.raw_database]
    warehouse.bootstrap(mysql_admin_settings(), app, databases)
    print(f"MySQL    {app.user}@{app.host}:{app.port} databases {', '.join(databases)}")
    s3 = s3_settings()
    if s3.endpoint_url and urlparse(s3.endpoint_url).hostname in services.LOCAL_HOSTS:
        pid = services.start_local_s3(s3.endpoint_url)
        print(f"S3 API   {s3.endpoint_url} ({f'started a local moto server, pid {pid}' if pid else 'already answering'})")
    else:
        print(f"S3 API   {s3.endpoint_url or 'AWS S3'}")
    client = storage.client(s3)
    storage.ensure_bucket(client, s3.bucket)
    print(f"bucket   s3://{s3.bucket}/{s3.prefix}/ (private)")
    return 0


def _latest_run_folder(dataset: str) -> Path:
    base = work_dir() / stages.dataset_key(dataset)
    folders = [p for p in base.glob("*") if p.is_dir()] if base.exists() else []
    if not folders:
        raise SystemExit(f"no run of dataset {dataset!r} under {base}: run `make demo` first")
    return max(folders, key=lambda p: p.stat().st_mtime)


def _fmt_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> int:
    folder = Path(args.run_folder) if args.run_folder else _latest_run_folder(args.dataset)
    app = mysql_settings()
    s3 = s3_settings()
    print(f"\n=== recsys-pipeline run {folder.name} (dataset {args.dataset}) ===\n")
    with warehouse.connect(app) as conn:
        raw_gate = folder / "quality_raw.json"
        if raw_gate.exists():
            q = json.loads(raw_gate.read_text())
            if not q.get("passed"):
                print(f"Raw gate    REFUSED the load (live raw tables unchanged; kept as {', '.join(q.get('kept_as', []))}):")
                print("  " + q.get("error", "").replace("\n", "\n  "))
                print(f"  Data Docs: file://{(folder / 'data_docs' / 'raw' / 'index.html').resolve()}")
                print(f"  Quarantine: recsys quarantine --load-id '{stages.load_id_for(args.dataset, folder.name)}'")
                return 1
            total = sum(s["expectations"] for s in q["suites"].values())
            print(f"Raw gate    passed: {len(q['suites'])} suites, {total} expectations on the staged load")
        audit = pd.DataFrame() if not warehouse.table_exists(conn, app.raw_database, "load_audit") else warehouse.read_frame(
            conn, f"SELECT events, items, users, seconds FROM {warehouse.quote_identifier(app.raw_database)}.load_audit WHERE load_id = %s", (stages.load_id_for(args.dataset, folder.name),)
        )
        if not audit.empty:
            row = audit.iloc[0]
            print(f"Loaded      {int(row.events):,} events, {int(row['items']):,} items, {int(row.users):,} users into {app.raw_database} in {row.seconds:.1f} s")
        counts = {m: warehouse.scalar(conn, f"SELECT COUNT(*) FROM {warehouse.quote_identifier(m)}") for m in stages.DBT_MARTS}
        print("Features    " + ", ".join(f"{m}: {int(n):,} rows" for m, n in counts.items()) + f" (database {app.database})")
        quality_file = folder / "quality.json"
        if quality_file.exists():
            q = json.loads(quality_file.read_text())
            if q.get("passed"):
                total = sum(s["expectations"] for s in q["suites"].values())
                print(f"Data checks passed: {len(q['suites'])} Great Expectations suites, {total} expectations; "
                      f"Data Docs file://{(folder / 'data_docs').resolve()}/{{raw,features}}/index.html")
            else:
                print(f"Data checks FAILED: {q.get('error')}")
        metrics_file = folder / "metrics.json"
        if metrics_file.exists():
            report = json.loads(metrics_file.read_text())
            names = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit_rate@20", "map@20", "coverage@10"]
            rows = [["model", *names]] + [[model, *(f"{values[n]:.4f}" for n in names)] for model, values in report["models"].items()]
            print("\nOffline metrics (test split, full ranking):\n" + _fmt_table(rows))
            training_file = folder / "two_tower" / "training.json"
            if training_file.exists():
                from ml.report import two_tower_choices

                choices = two_tower_choices(json.loads(training_file.read_text()).get("tuning", {}))
                if choices:
                    print("\n" + choices)
            stage = report.get("ranking_stage") or {}
            if stage.get("test") and stage.get("held_out_ndcg@20"):
                held = stage["held_out_ndcg@20"]
                print(f"\nRanking stage {'USED' if stage.get('used') else 'not used'} (held-out validation ndcg@20 "
                      f"{held['retrieval_order']:.4f} retrieval order -> {held['reranked']:.4f} re-ordered); two_tower on test:")
                rows = [["order", *names]] + [[order.replace("_", " "), *(f"{values[n]:.4f}" for n in names)]
                                              for order, values in stage["test"].items()]
                print(_fmt_table(rows))
            backtest = report.get("backtest")
            for variant, label in (("new_items", "new items only"), ("with_repeats", "repeat purchases counted")):
                if backtest and variant in backtest["variants"]:
                    models = sorted(backtest["variants"][variant]["models"].items(), key=lambda kv: -kv[1]["ndcg@20"])
                    rows = [["model", *names]] + [[model, *(f"{values[n]:.4f}" for n in names)] for model, values in models]
                    print(f"\nBacktest, global cut at {backtest['window']['cut_at']}, {label} "
                          f"({backtest['variants'][variant]['evaluated_users']:,} users):\n" + _fmt_table(rows))
        decision_file = folder / "decision.json"
        if decision_file.exists():
            decision = json.loads(decision_file.read_text())
            print(f"\nPromotion gate: {'PROMOTED' if decision['promote'] else 'NOT promoted (champion unchanged)'}")
            for reason in decision["reasons"]:
                print(f"  - {reason}")
        published = folder / "published.json"
        if not published.exists():
            print("\nRelease     none (the run stopped before publishing)")
            return 0
        prefix = json.loads(published.read_text())["prefix"]
        client = storage.client(s3)
        keys = storage.list_keys(client, s3.bucket, prefix)
        print(f"\nRelease     s3://{s3.bucket}/{prefix} ({len(keys)} objects, endpoint {s3.endpoint_url or 'AWS'})")
        sites: dict[str, int] = {}
        for key in keys:
            relative = key[len(prefix):]
            site = relative.split("/")[0] if relative.startswith(("data_docs/", "dbt_docs/")) else None
            if site:  # a docs site is many files: one line each
                sites[site] = sites.get(site, 0) + 1
            else:
                print(f"              {relative}")
        for site, n in sites.items():
            print(f"              {site}/ ({n} files; open {site}/{'raw/' if site == 'data_docs' else ''}index.html)")
        pointer = storage.get_json(client, s3.bucket, stages.champion_key(s3, args.dataset))
        if pointer:
            print(f"Champion    s3://{s3.bucket}/{stages.champion_key(s3, args.dataset)} -> release {pointer['release_id']}")
        if decision_file.exists() and not json.loads(decision_file.read_text())["promote"]:
            print("MySQL       recommendations table left as it was (the gate kept the champion)")
        if warehouse.table_exists(conn, app.database, "recommendations"):
            n, users, version = warehouse.read_frame(
                conn, "SELECT COUNT(*), COUNT(DISTINCT user_id), MAX(model_version) FROM recommendations"
            ).iloc[0]
            user = warehouse.scalar(conn, "SELECT MIN(user_id) FROM interactions_split WHERE split = 'test'")
            print(f"MySQL       {app.database}.recommendations: {int(n):,} rows for {int(users):,} users (model {version})")
            print(
                f"\nSee one user's recommendations (mariadb -h {app.host} -P {app.port} -u {app.user} -p {app.database};\n"
                "the password is RECSYS_MYSQL_PASSWORD in .env):\n"
                "  SELECT r.rank, r.item_id, i.title, ROUND(r.score, 3) AS score\n"
                "  FROM recommendations r LEFT JOIN item_features i ON i.item_id = r.item_id\n"
                f"  WHERE r.user_id = '{user}' ORDER BY r.rank;"
            )
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from recsys_pipeline import quarantine

    app = mysql_settings()
    load_id = args.load_id
    if load_id is None:
        with warehouse.connect(app, database=app.raw_database) as conn:
            if not warehouse.table_exists(conn, app.raw_database, quarantine.QUARANTINE_TABLE):
                print("the quarantine is empty: no load has been refused")
                return 0
            load_id = warehouse.scalar(conn, f"SELECT load_id FROM `{app.raw_database}`.quarantine ORDER BY quarantined_at DESC, load_id DESC LIMIT 1")
    rows = quarantine.rows_for_load(app, load_id)
    if not rows:
        print(f"nothing quarantined for load {load_id}")
        return 0
    print(f"quarantine of load {load_id} ({app.raw_database}.quarantine):")
    by_rule: dict[tuple, list] = {}
    for row in rows:
        by_rule.setdefault((row["source_table"], row["rule"]), []).append(row)
    for (table, rule), group in by_rule.items():
        print(f"\n  {table}  {rule}: {len(group)} row(s)\n    {group[0]['reason']}")
        for row in group[: args.show]:
            print(f"    {row['row_key']}: {json.dumps(row['row'], default=str)[:200]}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from recsys_pipeline import releases

    try:
        result = releases.verify(s3_settings(), stages.dataset_key(args.dataset), args.release, args.user, args.k)
    except releases.ReleaseError as error:
        print(f"verify FAILED: {error}")
        return 1
    print(f"release {result['release_id']}: {result['objects']} objects, {result['bytes']:,} bytes, every sha256 matches the manifest")
    print(f"SavedModel loaded; top {len(result['items'])} for user {result['user_id']}: {', '.join(result['items'])}")
    print(f"  same as the published recommendations table: {'yes' if result['matches_published'] else 'NO (published: ' + ', '.join(result['published_items']) + ')'}")
    print(f"an unknown user gets the popularity fallback: {', '.join(result['unknown_user_items'])}")
    if result.get("new_shopper_in_context"):
        context = result["new_shopper_in_context"]
        print(f"a new shopper whose recent items are {', '.join(context['recent_items'])} "
              f"(recommend_in_context): {', '.join(context['items'])}")
    return 0 if result["matches_published"] else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys_pipeline import releases

    try:
        result = stages.rollback(s3_settings(), mysql_settings(), args.dataset, args.release)
    except releases.ReleaseError as error:
        print(f"rollback refused, nothing changed: {error}")
        return 1
    print(f"champion of {stages.dataset_key(args.dataset)}: {result['rolled_back_from']} -> {result['champion']}")
    print(f"MySQL {result['recommendations']['table']}: {result['recommendations']['rows']:,} rows of model "
          f"{', '.join(result['recommendations']['model_versions'])} (the replaced table is kept as recommendations__previous)")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    from recsys_pipeline import warehouse_lock

    held = warehouse_lock.current(mysql_settings())
    if held is None:
        print("the warehouse is free: no feature build holds it")
        return 0
    holder, acquired_at, expires_at = held
    print(f"held by {holder} since {acquired_at} UTC (lease until {expires_at} UTC)")
    if not args.force:
        print("if that DAG run is no longer running, `recsys unlock --force` frees the warehouse")
        return 1
    warehouse_lock.break_lease(mysql_settings())
    print(f"freed: {holder} no longer holds the warehouse")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print("stopped the local S3 API server" if services.stop_local_s3() else "no local S3 API server was started by this project")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("services", help="start/check MariaDB and object storage; create databases, user and bucket").set_defaults(func=cmd_services)
    summary = sub.add_parser("summary", help="print the summary of a dataset's last run")
    summary.add_argument("--dataset", default="online-retail")
    summary.add_argument("--run-folder", help="a run's folder under the work dir (default: the latest)")
    summary.set_defaults(func=cmd_summary)
    refused = sub.add_parser("quarantine", help="list what the gates refused for a load (default: the latest refused load)")
    refused.add_argument("--load-id", help="the load id (<dataset>:<run>); default: the most recent in the quarantine")
    refused.add_argument("--show", type=int, default=3, help="rows to print per rule (default 3)")
    refused.set_defaults(func=cmd_quarantine)
    verify = sub.add_parser("verify", help="check the champion release end to end and recommend with its SavedModel")
    verify.add_argument("--dataset", default="online-retail")
    verify.add_argument("--release", help="a release id (default: the champion)")
    verify.add_argument("--user", help="a user id (default: the first in the published recommendations)")
    verify.add_argument("-k", type=int, default=10)
    verify.set_defaults(func=cmd_verify)
    rollback = sub.add_parser("rollback", help="point the champion back to an earlier release (checked complete) and reload MySQL")
    rollback.add_argument("--dataset", default="online-retail")
    rollback.add_argument("--release", required=True, help="the release id to make champion again")
    rollback.set_defaults(func=cmd_rollback)
    unlock = sub.add_parser("unlock", help="show who holds the warehouse for a feature build; --force frees it")
    unlock.add_argument("--force", action="store_true", help="free it (only when that DAG run is no longer running)")
    unlock.set_defaults(func=cmd_unlock)
    sub.add_parser("stop", help="stop the local S3 API server").set_defaults(func=cmd_stop)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
