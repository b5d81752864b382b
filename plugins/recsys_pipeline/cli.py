"""``recsys``: the command line around the pipeline (services, the demo summary).

recsys services          make sure MariaDB, the pipeline's databases and user, and object storage are up
recsys summary           print what the last run of a dataset loaded, checked, measured and published
recsys quarantine        list what the gates refused for a load: rule, reason, rows
recsys verify            download the champion, check every checksum, load its SavedModel, recommend
recsys rollback          point the champion back to an earlier complete release (and reload MySQL)
recsys unlock            show who holds the warehouse for a feature build (--force: free it)
recsys serve             answer recommendation requests over HTTP from the champion, in real time
recsys api-key           create, list or revoke the API keys the shop's backend sends to the service
recsys stop              stop the local S3 API server
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from ml.names import NDCG_20, SUMMARY_METRICS
from recsys_pipeline import services, storage, warehouse
from recsys_pipeline.features.builds import MARTS
from recsys_pipeline.release import layout
from recsys_pipeline.reporting.summary import RunSummary
from recsys_pipeline.run import RunArtifacts, RunContext, dataset_key
from recsys_pipeline.settings import (
    mysql_admin_settings,
    mysql_settings,
    s3_settings,
    warehouse_access_settings,
    work_dir,
)


def cmd_services(args: argparse.Namespace) -> int:
    app = mysql_settings()
    services.ensure_mariadb(app)
    databases = [app.database, app.raw_database]
    warehouse.bootstrap(mysql_admin_settings(), app, databases, warehouse_access_settings())
    print(f"MySQL    {app.user}@{app.host}:{app.port} databases {', '.join(databases)}")
    s3 = s3_settings()
    if s3.endpoint_url and urlparse(s3.endpoint_url).hostname in services.LOCAL_HOSTS:
        pid = services.start_local_s3(s3.endpoint_url)
        print(
            f"S3 API   {s3.endpoint_url} ({f'started a local moto server, pid {pid}' if pid else 'already answering'})"
        )
    else:
        print(f"S3 API   {s3.endpoint_url or 'AWS S3'}")
    client = storage.client(s3)
    storage.ensure_bucket(client, s3.bucket)
    print(f"bucket   s3://{s3.bucket}/{s3.prefix}/ (private)")
    return 0


def _latest_run(dataset: str) -> RunContext:
    base = work_dir() / dataset_key(dataset)
    folders = [p for p in base.glob("*") if p.is_dir()] if base.exists() else []
    if not folders:
        raise SystemExit(f"no run of dataset {dataset!r} under {base}: run `make demo` first")
    return RunContext.from_folder(max(folders, key=lambda p: p.stat().st_mtime), dataset)


def _fmt_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> int:
    try:
        run = (
            RunContext.from_folder(Path(args.run_folder), args.dataset)
            if args.run_folder
            else _latest_run(args.dataset)
        )
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"recsys summary: {error}") from error
    artifacts = run.artifacts
    summary = RunSummary.from_artifacts(artifacts)
    app = mysql_settings()
    print(f"\n=== recsys-pipeline run {run.release_id} (dataset {run.dataset}) ===\n")
    with warehouse.connect(app) as conn:
        if not _print_feature_build(conn, app, run, summary):
            return 1
        if summary.metrics:
            _print_metrics(summary)
        if summary.decision is not None:
            print(f"\nPromotion gate: {'PROMOTED' if summary.promoted else 'NOT promoted (champion unchanged)'}")
            for reason in summary.reasons:
                print(f"  - {reason}")
        published = artifacts.read_json_if_exists(RunArtifacts.PUBLISHED)
        if published is None:
            print("\nRelease     none (the run stopped before publishing)")
            return 0
        _print_release(published["prefix"], run)
        if summary.promoted is False:
            print("MySQL       recommendations table left as it was (the gate kept the champion)")
        _print_recommendations_table(conn, app)
    return 0


def _print_feature_build(conn, app, run: RunContext, summary: RunSummary) -> bool:
    """The load, the gates and the marts; False when the raw gate refused the load."""
    q = summary.quality_raw
    if q is not None:
        if not q.get("passed"):
            print(
                f"Raw gate    REFUSED the load (live raw tables unchanged; kept as {', '.join(q.get('kept_as', []))}):"
            )
            print("  " + q.get("error", "").replace("\n", "\n  "))
            print(f"  Data Docs: file://{(run.artifacts.data_docs('raw') / 'index.html').resolve()}")
            print(f"  Quarantine: recsys quarantine --load-id '{run.load_id}'")
            return False
        total = sum(s["expectations"] for s in q["suites"].values())
        print(f"Raw gate    passed: {len(q['suites'])} suites, {total} expectations on the staged load")
    audit = pd.DataFrame()
    if warehouse.table_exists(conn, app.raw_database, "load_audit"):
        audit = warehouse.read_frame(
            conn,
            f"SELECT events, items, users, seconds FROM {warehouse.quote_identifier(app.raw_database)}.load_audit "
            "WHERE load_id = %s",
            (run.load_id,),
        )
    if not audit.empty:
        row = audit.iloc[0]
        print(
            f"Loaded      {int(row.events):,} events, {int(row['items']):,} items, {int(row.users):,} users "
            f"into {app.raw_database} in {row.seconds:.1f} s"
        )
    counts = {m: warehouse.scalar(conn, f"SELECT COUNT(*) FROM {warehouse.quote_identifier(m)}") for m in MARTS}
    print(
        "Features    " + ", ".join(f"{m}: {int(n):,} rows" for m, n in counts.items()) + f" (database {app.database})"
    )
    q = summary.quality_features
    if q is not None:
        if q.get("passed"):
            total = sum(s["expectations"] for s in q["suites"].values())
            print(
                f"Data checks passed: {len(q['suites'])} Great Expectations suites, {total} expectations; "
                f"Data Docs file://{run.artifacts.path(RunArtifacts.DATA_DOCS).resolve()}/{{raw,features}}/index.html"
            )
        else:
            print(f"Data checks FAILED: {q.get('error')}")
    return True


def _print_metrics(summary: RunSummary) -> None:
    print("\nOffline metrics (test split, full ranking):\n" + _fmt_table(summary.metric_rows(SUMMARY_METRICS)))
    if summary.two_tower_choices():
        print("\n" + summary.two_tower_choices())
    stage = summary.ranking_stage
    if summary.ranking_stage_orders() and stage.get("held_out_ndcg@20"):
        held = stage["held_out_ndcg@20"]
        print(
            f"\nRanking stage {'USED' if stage.get('used') else 'not used'} (held-out validation ndcg@20 "
            f"{held['retrieval_order']:.4f} retrieval order -> {held['reranked']:.4f} re-ordered); two_tower on test:"
        )
        orders = {order.replace("_", " "): values for order, values in summary.ranking_stage_orders().items()}
        rows = summary.metric_rows(SUMMARY_METRICS, orders)
        rows[0][0] = "order"
        print(_fmt_table(rows))
    for view in summary.backtest_views():
        models = dict(sorted(view.models.items(), key=lambda kv: -kv[1][NDCG_20]))
        print(
            f"\nBacktest, global cut at {summary.backtest_window.get('cut_at')}, {view.label} "
            f"({view.evaluated_users:,} users):\n" + _fmt_table(summary.metric_rows(SUMMARY_METRICS, models))
        )
    if summary.training:
        print(f"\nRepeat policy: {summary.repeat_policy_line()}")


def _print_release(prefix: str, run: RunContext) -> None:
    s3 = s3_settings()
    client = storage.client(s3)
    keys = storage.list_keys(client, s3.bucket, prefix)
    print(f"\nRelease     s3://{s3.bucket}/{prefix} ({len(keys)} objects, endpoint {s3.endpoint_url or 'AWS'})")
    sites: dict[str, int] = {}
    for key in keys:
        relative = key[len(prefix) :]
        site = (
            relative.split("/")[0]
            if relative.startswith((RunArtifacts.DATA_DOCS + "/", RunArtifacts.DBT_DOCS + "/"))
            else None
        )
        if site:  # a docs site is many files: one line each
            sites[site] = sites.get(site, 0) + 1
        else:
            print(f"              {relative}")
    for site, n in sites.items():
        print(
            f"              {site}/ ({n} files; "
            f"open {site}/{'raw/' if site == RunArtifacts.DATA_DOCS else ''}index.html)"
        )
    champion = layout.champion_key(s3, run.dataset_key)
    pointer = storage.get_json(client, s3.bucket, champion)
    if pointer:
        print(f"Champion    s3://{s3.bucket}/{champion} -> release {pointer['release_id']}")


def _print_recommendations_table(conn, app) -> None:
    if not warehouse.table_exists(conn, app.database, "recommendations"):
        return
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


def cmd_quarantine(args: argparse.Namespace) -> int:
    from recsys_pipeline.quality import quarantine

    app = mysql_settings()
    load_id = args.load_id
    if load_id is None:
        with warehouse.connect(app, database=app.raw_database) as conn:
            if not warehouse.table_exists(conn, app.raw_database, quarantine.QUARANTINE_TABLE):
                print("the quarantine is empty: no load has been refused")
                return 0
            load_id = warehouse.scalar(
                conn,
                f"SELECT load_id FROM `{app.raw_database}`.quarantine "
                "ORDER BY quarantined_at DESC, load_id DESC LIMIT 1",
            )
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
    from recsys_pipeline.release.layout import ReleaseError
    from recsys_pipeline.release.verify import verify

    try:
        result = verify(s3_settings(), dataset_key(args.dataset), args.release, args.user, args.k)
    except ReleaseError as error:
        print(f"verify FAILED: {error}")
        return 1
    print(
        f"release {result['release_id']}: {result['objects']} objects, {result['bytes']:,} bytes, "
        "every sha256 matches the manifest"
    )
    print(f"SavedModel loaded; top {len(result['items'])} for user {result['user_id']}: {', '.join(result['items'])}")
    print(
        "  same as the published recommendations table: "
        + ("yes" if result["matches_published"] else f"NO (published: {', '.join(result['published_items'])})")
    )
    print(f"an unknown user gets the popularity fallback: {', '.join(result['unknown_user_items'])}")
    if result.get("new_shopper_in_context"):
        context = result["new_shopper_in_context"]
        print(
            f"a new shopper whose recent items are {', '.join(context['recent_items'])} "
            f"(recommend_in_context): {', '.join(context['items'])}"
        )
    return 0 if result["matches_published"] else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys_pipeline.release.layout import ReleaseError
    from recsys_pipeline.release.rollback import rollback

    try:
        result = rollback(s3_settings(), mysql_settings(), dataset_key(args.dataset), args.release)
    except ReleaseError as error:
        print(f"rollback refused, nothing changed: {error}")
        return 1
    print(f"champion of {dataset_key(args.dataset)}: {result['rolled_back_from']} -> {result['champion']}")
    print(
        f"MySQL {result['recommendations']['table']}: {result['recommendations']['rows']:,} rows of model "
        f"{', '.join(result['recommendations']['model_versions'])} "
        "(the replaced table is kept as recommendations__previous)"
    )
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    from recsys_pipeline.orchestration import warehouse_lock

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


def cmd_serve(args: argparse.Namespace) -> int:
    from recsys_pipeline.serving.champion import NoChampion
    from recsys_pipeline.serving.server import serve, serving_settings

    settings = serving_settings(
        dataset_key=dataset_key(args.dataset) if args.dataset else None, host=args.host, port=args.port
    )
    print(f"serving {settings.dataset_key}'s champion on http://{settings.host}:{settings.port} (docs: /docs)")
    try:
        serve(settings)
    except NoChampion as error:
        print(f"recsys serve: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    from recsys_pipeline.serving import api_keys

    if args.action == "create":
        created = api_keys.create_key(mysql_settings(), args.name)
        print(f"API key {created.key_id} for {created.name!r} (shown once; send it as {api_keys.HEADER}):")
        print(created.key)
    elif args.action == "revoke":
        if not api_keys.revoke_key(mysql_settings(), args.key_id):
            print(f"no active API key {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}: the service refuses it within seconds")
    else:
        rows = [["key id", "name", "created (UTC)", "revoked (UTC)"]]
        rows += [
            [k["key_id"], k["name"], str(k["created_at"]), str(k["revoked_at"] or "")]
            for k in api_keys.list_keys(mysql_settings())
        ]
        print(_fmt_table(rows))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    print(
        "stopped the local S3 API server"
        if services.stop_local_s3()
        else "no local S3 API server was started by this project"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "services", help="start/check MariaDB and object storage; create databases, user and bucket"
    ).set_defaults(func=cmd_services)
    summary = sub.add_parser("summary", help="print the summary of a dataset's last run")
    summary.add_argument("--dataset", default="online-retail")
    summary.add_argument("--run-folder", help="a run's folder under the work dir (default: the latest)")
    summary.set_defaults(func=cmd_summary)
    refused = sub.add_parser(
        "quarantine", help="list what the gates refused for a load (default: the latest refused load)"
    )
    refused.add_argument("--load-id", help="the load id (<dataset>:<run>); default: the most recent in the quarantine")
    refused.add_argument("--show", type=int, default=3, help="rows to print per rule (default 3)")
    refused.set_defaults(func=cmd_quarantine)
    verify = sub.add_parser("verify", help="check the champion release end to end and recommend with its SavedModel")
    verify.add_argument("--dataset", default="online-retail")
    verify.add_argument("--release", help="a release id (default: the champion)")
    verify.add_argument("--user", help="a user id (default: the first in the published recommendations)")
    verify.add_argument("-k", type=int, default=10)
    verify.set_defaults(func=cmd_verify)
    rollback = sub.add_parser(
        "rollback", help="point the champion back to an earlier release (checked complete) and reload MySQL"
    )
    rollback.add_argument("--dataset", default="online-retail")
    rollback.add_argument("--release", required=True, help="the release id to make champion again")
    rollback.set_defaults(func=cmd_rollback)
    unlock = sub.add_parser("unlock", help="show who holds the warehouse for a feature build; --force frees it")
    unlock.add_argument("--force", action="store_true", help="free it (only when that DAG run is no longer running)")
    unlock.set_defaults(func=cmd_unlock)
    serve = sub.add_parser("serve", help="answer recommendation requests over HTTP from the champion, in real time")
    serve.add_argument("--dataset", help="the dataset whose champion to serve (default: RECSYS_SERVING_DATASET)")
    serve.add_argument("--host", help="address to listen on (default: RECSYS_SERVING_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: RECSYS_SERVING_PORT or 8000)")
    serve.set_defaults(func=cmd_serve)
    keys = sub.add_parser("api-key", help="create, list or revoke the service's API keys (stored hashed)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    key_actions.add_parser("create", help="create a key and print it once").add_argument(
        "--name", required=True, help="who or what uses it, e.g. shop-backend"
    )
    key_actions.add_parser("list", help="list keys (ids and names, never the keys)")
    key_actions.add_parser("revoke", help="revoke a key by its id").add_argument("key_id")
    keys.set_defaults(func=cmd_api_key)
    sub.add_parser("stop", help="stop the local S3 API server").set_defaults(func=cmd_stop)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
