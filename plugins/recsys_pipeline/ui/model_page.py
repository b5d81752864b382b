"""The "Recsys models" page of the Airflow UI: releases, metrics beside baselines, gate decisions.

A FastAPI app that the plugin in ``plugins/recsys_models_plugin.py`` mounts on
Airflow's API server at ``/recsys``; the UI shows ``/recsys/models`` in its menu
(inside an iframe, same origin). Every route needs a logged-in Airflow user: the
JWT in the ``_token`` cookie the UI sets at login (or a Bearer token), checked by
Airflow's own ``get_user``; a browser without one is sent to Airflow's login page.
Release files are streamed from object storage through ``/recsys/files/...``, so the
bucket stays private and relative links inside the Data Docs site keep working; only
the report, model card, metrics, decision and docs are served there, each with a
sandboxing Content-Security-Policy and a size cap (``release_files``). The page reads
the bucket as the read-only identity (``s3_readonly_settings``), never the pipeline's.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from ml.names import CHALLENGER, KEY_METRICS, NDCG_20, PER_USER_HOLDOUT, RECALL_20
from recsys_pipeline import storage
from recsys_pipeline.release import layout
from recsys_pipeline.settings import models_page_max_file_bytes, mysql_readonly_settings, s3_readonly_settings
from recsys_pipeline.ui import links, model_registry, online_metrics, release_files

# the page itself: its own <style>, nothing else; not sandboxed, so the Airflow UI's frame can show it
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
app = FastAPI(title="recsys models", docs_url=None, redoc_url=None, openapi_url=None)


class LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


async def logged_in_user(request: Request):
    """Airflow's own authentication (cookie or Bearer); a browser without it goes to the login page."""
    from airflow.api_fastapi.core_api.security import get_user

    authorization = request.headers.get("authorization", "")
    bearer = None
    if authorization.lower().startswith("bearer "):
        from fastapi.security import HTTPAuthorizationCredentials

        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=authorization[7:])
    try:
        return await get_user(request, oauth_token=None, bearer_credentials=bearer)
    except HTTPException as error:
        if error.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
            raise LoginRequired(str(request.url.path)) from error
        raise


User = Annotated[object, Depends(logged_in_user)]


@app.exception_handler(LoginRequired)
async def _to_login(request: Request, error: LoginRequired):
    return RedirectResponse(f"/auth/login?next={quote(error.next_url)}", status_code=303)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def _file_link(dataset: str, release_id: str, path: str, label: str) -> str:
    href = links.release_file_path(dataset, release_id, path)
    return f'<a href="{html.escape(href)}" target="_blank" rel="noopener">{html.escape(label)}</a>'


def _window(view: model_registry.ReleaseView) -> str:
    train, test = view.data_window.get("train"), view.data_window.get("test")
    if not train:
        return "–"
    text = f"train {train['first_event_at'][:10]} → {train['last_event_at'][:10]}"
    if test:
        text += f"<br>test → {test['last_event_at'][:10]}"
    return text


def _online_cell(online: dict | None) -> str:
    if not online:
        return "<td><small>not served</small></td>"
    rates = ", ".join(
        f"{name} {_fmt(online[f'{name}_rate'])}"
        for name in ("click", "cart", "purchase")
        if online[f"{name}_rate"] is not None
    )
    return (
        f"<td><small>{online['lists_served']:,} lists, {online['items_shown']:,} items shown<br>"
        f"{rates}<br>{html.escape(online['days'])}</small></td>"
    )


def _release_row(dataset: str, view: model_registry.ReleaseView, online: dict | None = None) -> str:
    challenger = view.metrics.get(CHALLENGER, {})
    baselines = {m: v for m, v in view.metrics.items() if m != CHALLENGER}
    best = view.best_baseline
    metric_cells = "".join(f"<td class=num>{_fmt(challenger.get(m))}</td>" for m in KEY_METRICS)
    baseline_list = "".join(
        f"<li>{html.escape(name)}: {NDCG_20} {_fmt(values.get(NDCG_20))}, "
        f"{RECALL_20} {_fmt(values.get(RECALL_20))}</li>"
        for name, values in sorted(baselines.items(), key=lambda kv: -(kv[1].get(NDCG_20) or 0))
    )
    decision = "PROMOTED" if view.promoted else "not promoted"
    reasons = "".join(
        f"<li class={'fail' if r.startswith('FAIL') else 'pass'}>{html.escape(r)}</li>" for r in view.reasons
    )
    links = " · ".join(_file_link(dataset, view.release_id, path, label) for label, path in view.links.items())
    champion = ' <span class="badge champion">champion</span>' if view.is_champion else ""
    encoder = view.config.get("sequence_encoder")
    stage = view.ranking_stage
    ranking = ""
    if stage.get("held_out_ndcg@20"):
        held = stage["held_out_ndcg@20"]
        ranking = (
            f"<br><small>ranking stage {'used' if stage.get('used') else 'not used'} "
            f"(validation {_fmt(held.get('retrieval_order'))} → {_fmt(held.get('reranked'))})</small>"
        )
    backtest = "".join(
        f"<li>{html.escape(variant.replace('_', ' '))}: "
        + ", ".join(
            f"{html.escape(model)} {_fmt(value)}"
            for model, value in sorted(models.items(), key=lambda kv: -(kv[1] or 0))
        )
        + "</li>"
        for variant, models in view.backtest.items()
    )
    backtest = f"<details><summary>backtest ndcg@20</summary><ul>{backtest}</ul></details>" if backtest else ""
    created = f"created {html.escape(view.created_at)}" + (f" · encoder {html.escape(encoder)}" if encoder else "")
    return f"""
<tr class="{"promoted" if view.promoted else "refused"}">
  <td><code>{html.escape(view.release_id)}</code>{champion}<br><small>{html.escape(view.model_version)}</small>
      <br><small>{created}</small>{ranking}</td>
  <td><small>{_window(view)}</small></td>
  {metric_cells}
  <td class=num>{_fmt(best[1]) if best else "–"}<br><small>{html.escape(best[0]) if best else ""}</small></td>
  <td><details><summary><b>{decision}</b></summary><ul>{reasons}</ul></details>
      <details><summary>baselines</summary><ul>{baseline_list}</ul></details>{backtest}</td>
  {_online_cell(online)}
  <td>{links}</td>
</tr>"""


def _history_rows(history: list[dict]) -> str:
    return "".join(
        f"<tr><td>{html.escape(str(e.get('at', '')))}</td><td>{html.escape(str(e.get('event', '')))}</td>"
        f"<td><code>{html.escape(str(e.get('release_id', '')))}</code></td>"
        f"<td><code>{html.escape(str(e.get('from') or '–'))}</code></td></tr>"
        for e in history
    )


def render(datasets: list[model_registry.DatasetView], bucket: str, prefix: str, online: dict | None = None) -> str:
    """The whole page as HTML (no JavaScript: it renders the same in any browser, headless included).

    ``online``: (dataset, model version) -> what shoppers did with its served lists (``online_metrics``)."""
    online = online or {}
    sections = []
    for view in datasets:
        champion = view.champion
        headline = (
            f"champion <code>{html.escape(champion['release_id'])}</code> "
            f"({html.escape(champion.get('model_version', ''))}), "
            f"{NDCG_20} {_fmt(champion.get('metrics', {}).get(NDCG_20))}, "
            f"promoted {html.escape(champion.get('promoted_at', ''))}"
            + (
                f", rolled back from <code>{html.escape(champion['rolled_back_from'])}</code>"
                if champion.get("rolled_back_from")
                else ""
            )
            if champion
            else "no champion yet"
        )
        header = "".join(f"<th>{m}</th>" for m in KEY_METRICS)
        rows = (
            "".join(_release_row(view.dataset, r, online.get((view.dataset, r.model_version))) for r in view.releases)
            or "<tr><td colspan=10>no complete release yet</td></tr>"
        )
        sections.append(f"""
<section id="dataset-{html.escape(view.dataset)}">
  <h2>{html.escape(view.dataset)}</h2>
  <p class=champion-line>{headline}</p>
  <table>
    <thead><tr><th>release / model version</th><th>data window</th>{header}
      <th>best baseline {NDCG_20}</th><th>gate decision</th>
      <th>online (served lists; rates per item shown, 24 h)</th><th>links</th></tr></thead>
    <tbody>{rows}</tbody>
  </table>
  <p><small>{len(view.releases)} newest of {view.total_releases} releases shown.</small></p>
  <h3>Champion history</h3>
  <table class=history><thead><tr><th>at</th><th>event</th><th>release</th><th>replaced</th></tr></thead>
  <tbody>{_history_rows(view.history) or "<tr><td colspan=4>none</td></tr>"}</tbody></table>
</section>""")
    body = "".join(sections) or "<p>No releases in the bucket yet: run the <code>recsys_training</code> DAG.</p>"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Recsys models</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.2rem; color: #1b1f24; }}
 h1 {{ font-size: 1.4rem; margin: 0 0 .3rem; }} h2 {{ margin-top: 1.6rem; border-bottom: 1px solid #ccd; }}
 table {{ border-collapse: collapse; width: 100%; font-size: .86rem; }}
 th, td {{ border: 1px solid #dde; padding: .3rem .45rem; vertical-align: top; text-align: left; }}
 th {{ background: #f1f3f7; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
 tr.promoted td:first-child {{ border-left: 4px solid #2e9e55; }}
 tr.refused td:first-child {{ border-left: 4px solid #c9842c; }}
 .badge {{ background: #2e9e55; color: white; border-radius: 3px; padding: 0 .3rem; font-size: .75rem; }}
 li.fail {{ color: #b3261e; }} li.pass {{ color: #2a6b3c; }} ul {{ margin: .2rem 0; padding-left: 1.1rem; }}
 small {{ color: #57606a; }} .history {{ width: auto; }}
</style></head>
<body>
<h1>Recsys models</h1>
<p><small>Releases in <code>s3://{html.escape(bucket)}/{html.escape(prefix)}/</code>, newest first;
metrics on the test split ({html.escape(PER_USER_HOLDOUT)}); read at {now}.</small></p>
{body}
</body></html>"""


@app.get("/models", response_class=HTMLResponse)
def models_page(user: User) -> HTMLResponse:
    settings = s3_readonly_settings()
    return HTMLResponse(
        render(
            model_registry.registry(settings),
            settings.bucket,
            settings.prefix,
            online_metrics.online_by_model(mysql_readonly_settings()),
        ),
        headers={"Content-Security-Policy": PAGE_CSP},
    )


@app.get("/api/releases")
def releases_json(user: User) -> JSONResponse:
    settings = s3_readonly_settings()
    from dataclasses import asdict

    return JSONResponse([asdict(view) for view in model_registry.registry(settings)])


@app.get("/files/{dataset}/{release_id}/{path:path}")
def release_file(dataset: str, release_id: str, path: str, user: User) -> Response:
    """One file of a release that the page serves (``release_files``), streamed from the private bucket."""
    if path == "" or path.endswith("/"):
        path += "index.html"
    try:
        kind = release_files.kind_of(path)
        settings = s3_readonly_settings()
        s3 = storage.client(settings)
        prefix = layout.release_prefix(settings, dataset, release_id)
        manifest = storage.get_json(s3, settings.bucket, layout.manifest_key(settings, dataset, release_id))
        listed = {o["key"] for o in (manifest or {}).get("objects", [])}
        if prefix + path not in listed:
            raise release_files.Refused(404, f"{path} is not part of release {release_id} of {dataset}")
        limit = models_page_max_file_bytes()
        if kind is release_files.DBT_DOCS:
            return _dbt_docs(s3, settings.bucket, prefix, listed, limit)
        obj = s3.get_object(Bucket=settings.bucket, Key=prefix + path)
        if obj["ContentLength"] > limit:
            obj["Body"].close()
            raise release_files.too_large(path, obj["ContentLength"], limit)
    except release_files.Refused as refused:
        raise HTTPException(status_code=refused.status, detail=str(refused)) from None
    return StreamingResponse(
        release_files.chunks(obj["Body"]),
        media_type=kind.media_type,
        headers={"Content-Length": str(obj["ContentLength"]), **_served_headers(kind)},
    )


def _dbt_docs(s3, bucket: str, prefix: str, listed: set[str], limit: int) -> Response:
    """dbt's docs page with its manifest and catalog inlined (a sandboxed page cannot fetch them)."""
    paths = [release_files.DBT_DOCS_INDEX, *release_files.DBT_DOCS_INLINED.values()]
    absent = [p for p in paths if prefix + p not in listed]
    if absent:
        raise release_files.Refused(404, f"the release's dbt docs lack {', '.join(absent)}")
    objects = {p: s3.get_object(Bucket=bucket, Key=prefix + p) for p in paths}
    try:
        size = sum(o["ContentLength"] for o in objects.values())
        if size > limit:
            raise release_files.too_large(f"{release_files.DBT_DOCS_INDEX} with its manifest and catalog", size, limit)
        index = b"".join(release_files.chunks(objects[release_files.DBT_DOCS_INDEX]["Body"]))
        parts = {m: release_files.chunks(objects[p]["Body"]) for m, p in release_files.DBT_DOCS_INLINED.items()}
        page = release_files.inline_dbt_docs(index, parts)
    except release_files.Refused:
        for obj in objects.values():
            obj["Body"].close()
        raise
    return StreamingResponse(
        page,
        media_type=release_files.DBT_DOCS.media_type,
        headers=_served_headers(release_files.DBT_DOCS),
    )


def _served_headers(kind: release_files.FileKind) -> dict[str, str]:
    return {
        "Content-Security-Policy": kind.csp,
        "Cache-Control": "private, no-store",
        "Referrer-Policy": "no-referrer",
    }


@app.middleware("http")
async def _security_headers(request: Request, call_next):
    """Every answer: no MIME sniffing, and a CSP that lets nothing run unless the route set its own."""
    response = await call_next(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Content-Security-Policy", release_files.TEXT_CSP)
    return response
