"""The evaluation report of a run: one self-contained HTML file a person would rather look at.

A run's numbers are only trusted once someone has looked at them, and a page opened
from the release bucket is looked at where a JSON file is not: the curves show whether
training converged and where early stopping chose, the bars put the challenger next to
every baseline and the gate's bar to clear, the tables keep every metric, and the
gate's reasons say why the champion changed or stayed. The page fetches nothing when
opened: its charts (``charts``) are inline SVG, so the file alone is the whole report,
renders the same in any browser, and is identical for identical inputs.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from ml.names import NDCG_20, RECALL_20, REPORT_METRICS, RERANKED, RETRIEVAL_ORDER, SUMMARY_METRICS
from recsys_pipeline.reporting.charts import bar_chart, interval_chart, line_chart
from recsys_pipeline.reporting.summary import RunSummary
from recsys_pipeline.run import RunArtifacts

log = logging.getLogger(__name__)


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _table(first_header: str, metrics: tuple[str, ...], rows: list[tuple[str, dict]]) -> str:
    header = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(values.get(m))}</td>" for m in metrics) + "</tr>"
        for name, values in rows
    )
    return f"<table><thead><tr><th>{html.escape(first_header)}</th>{header}</tr></thead><tbody>{body}</tbody></table>"


def skipped_note(tuning: dict) -> str:
    """The baselines a view left out and why (their tuning record's ``skipped``: too large for the data), and
    those it bounded (``approximated``: item-kNN's nearest items, user-based neighbours among the most active
    users of a large shop), and those whose settings were chosen on a sample of the validation shoppers
    (``validation_shoppers``)."""
    parts = []
    for key, title, css in (
        ("skipped", "Not evaluated on this view:", "skipped"),
        ("approximated", "Approximated on this view:", "approximated"),
        ("validation_shoppers", "Settings chosen on a sample of the validation shoppers:", "sampled"),
    ):
        found = {
            name: record[key] for name, record in sorted(tuning.items()) if isinstance(record, dict) and key in record
        }
        if found:
            items = "".join(
                f"<li>{html.escape(name)}: {html.escape(str(reason))}</li>" for name, reason in found.items()
            )
            parts.append(f"<p><small>{title}</small></p><ul class={css}>{items}</ul>")
    return "".join(parts)


def backtest_section(summary: RunSummary) -> str:
    """The gate's view (the global time cut, or its fallback): a chart and a table per variant."""
    views = summary.backtest_views()
    if not views:
        return ""
    primary = summary.primary_metric
    window = summary.backtest_window
    backtest = summary.metrics.get("backtest") or {}
    users = backtest.get("users", "?")
    view = backtest.get("view") or {}
    if window.get("cut_at"):
        span = (
            f"Fitted on interactions first seen {html.escape(window.get('train_from', '?'))} to "
            f"{html.escape(window.get('cut_at', '?'))} (hyper-parameters chosen on the period from "
            f"{html.escape(window.get('validation_from', '?'))}), tested on the {users} known users' "
            f"items up to {html.escape(window.get('test_until', '?'))}."
        )
    else:
        span = f"Each of the {users} users' last 20% of items held out, a basket never split."
    role = "The gate decides on this view." if view else "Reported, not gated on."
    parts = [
        f"<h2>The gate's view: {html.escape(view.get('label', 'backtest on a global time cut'))}</h2>",
        f"<p><small>{span} {role} {html.escape(view.get('reason', ''))}</small></p>",
        "<div class=charts>",
    ]
    tables = []
    for view in views:
        scores = {m: v[primary] for m, v in view.models.items() if primary in v}
        parts.append(bar_chart(f"{primary}: {view.label}", scores))
        ranked = sorted(view.models.items(), key=lambda kv: -kv[1].get(primary, 0))
        users = view.evaluated_users if view.evaluated_users is not None else "?"
        tables.append(f"<h3>{html.escape(view.label)}: {users} users</h3>" + _table("model", SUMMARY_METRICS, ranked))
    return "".join(parts) + "</div>" + "".join(tables) + skipped_note(backtest.get("tuning") or {})


def gate_section(summary: RunSummary) -> str:
    """The decision: which view decided and why, every comparison's 95% interval (plotted and tabled), the reasons."""
    decision = summary.decision or {}
    reasons = "".join(
        f"<li class={'fail' if r.startswith('FAIL') else 'pass'}>{html.escape(r)}</li>" for r in summary.reasons
    )
    comparisons = decision.get("comparisons", [])
    if not comparisons:
        return f"<h2>Promotion gate</h2><ul>{reasons or '<li>not decided</li>'}</ul>"
    view = decision.get("view", {})
    challenger = decision.get("challenger", "challenger")

    def label(c: dict) -> str:
        return f"{challenger} − {c['against']}" + (f" ({c['role']})" if c["role"] != "baseline" else "")

    chart = interval_chart(
        f"NDCG@20 difference, 95% paired bootstrap interval ({view.get('variant', '')})",
        {label(c): (c["mean_difference"], c["low"], c["high"]) for c in comparisons},
        x_label=f"{challenger} minus the other model (right of 0: {challenger} better)",
    )
    rows = "".join(
        f"<tr><th>{html.escape(label(c))}</th><td>{_cell(c['challenger_ndcg@20'])}</td>"
        f"<td>{_cell(c['other_ndcg@20'])}</td><td>{c['mean_difference']:+.4f}</td>"
        f"<td>[{c['low']:+.4f}, {c['high']:+.4f}]</td><td>{html.escape(c['verdict'])}</td></tr>"
        for c in comparisons
    )
    first = comparisons[0]
    champion = decision.get("champion_evaluation", {}).get("note", "")
    return (
        f"<h2>Promotion gate: {html.escape(decision.get('outcome', '?'))}</h2>"
        f"<p><small>Decided on the {html.escape(view.get('label', '?'))} ({html.escape(view.get('variant', '?'))}, "
        f"{view.get('test_users', '?')} test users): {html.escape(view.get('reason', ''))}. Each comparison is a "
        f"paired bootstrap over the test users ({first['resamples']} resamples, seed {first['seed']}) of the "
        f"difference in NDCG@20. Champion: {html.escape(champion)}. Repeat policy: "
        f"{html.escape(summary.repeat_policy_line())}</small></p>"
        f"<div class=charts>{chart}</div>"
        "<table><thead><tr><th>comparison</th><th>challenger ndcg@20</th><th>other ndcg@20</th>"
        f"<th>difference</th><th>95% interval</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<ul>{reasons}</ul>"
    )


def ranking_stage_section(summary: RunSummary) -> str:
    """The ranking stage: the validation check that decided, the held-out curve, and both orders on test --
    reported whether the run used the stage or not."""
    stage = summary.ranking_stage
    if not stage:
        return ""
    if stage.get("skipped"):
        return f"<h2>Ranking stage</h2><p>Not trained: {html.escape(stage['skipped'])}.</p>"
    held = stage.get("held_out_ndcg@20", {})
    used = "used" if stage.get("used") else "not used: it did not beat the retrieval order"
    orders = [(name.replace("_", " "), values) for name, values in summary.ranking_stage_orders().items()]
    curve = line_chart(
        f"Ranking MLP: {NDCG_20} of the epoch-choosing users",
        {RERANKED: stage.get("tuning_ndcg@20_per_epoch", [])},
        marker=stage.get("best_epoch"),
        y_label=NDCG_20,
    )
    features = ", ".join(html.escape(f) for f in stage.get("features", []))
    return (
        f"<h2>Ranking stage: {used}</h2>"
        f"<p><small>An MLP over {features} re-orders the two-tower model's {stage.get('candidates', '?')} best "
        f"candidates. On {stage.get('held_out_users', '?')} validation users kept for this check alone (neither "
        f"learned from nor used to choose epochs): {NDCG_20} {_cell(held.get(RETRIEVAL_ORDER))} in retrieval order, "
        f"{_cell(held.get(RERANKED))} re-ordered. Test metrics of both orders below (the challenger's row above is "
        f"the order the run chose).</small></p>"
        + (f"<p><small>{html.escape(stage['test_shoppers'])}.</small></p>" if stage.get("test_shoppers") else "")
        + f"<div class=charts>{curve}</div>"
        + (_table("order", SUMMARY_METRICS, orders) if orders else "")
    )


def _check_label(epochs_per_check: float) -> str:
    """The validation curve's x axis: epochs, or checks inside them on a large shop."""
    if not epochs_per_check or epochs_per_check >= 1:
        return "epoch"
    return f"check ({round(1 / epochs_per_check)} an epoch)"


def _round_label(epochs_per_round: float) -> str:
    """The final fit's loss curve's x axis: epochs, or rounds of part of one (a fractional refit on a large shop)."""
    if not epochs_per_round or epochs_per_round >= 1:
        return "epoch"
    return f"round ({epochs_per_round:g} of an epoch)"


def render(summary: RunSummary, title: str) -> str:
    """The report of a run as one HTML page."""
    training, models, primary = summary.training, summary.models, summary.primary_metric
    best = summary.best_baseline()
    curves = line_chart(
        "Training loss (final fit)",
        {"loss": training.get("loss_per_epoch", [])},
        y_label="summed softmax loss",
        x_label=_round_label(training.get("epochs_per_loss_point", 1.0)),
    )
    validation = line_chart(
        f"Validation {primary} (tuning fit, early stopping)",
        {primary: training.get("validation_ndcg@20_per_epoch", [])},
        marker=training.get("best_check", training.get("best_epoch")),
        y_label=primary,
        x_label=_check_label(training.get("epochs_per_check", 1.0)),
    )
    bars = bar_chart(
        f"Test {primary}, every model",
        {m: v[primary] for m, v in models.items() if primary in v},
        (f"best baseline ({best[0]})", best[1]) if best else None,
    )
    recall = bar_chart(f"Test {RECALL_20}", {m: v[RECALL_20] for m, v in models.items() if RECALL_20 in v})
    cold_metric = f"cold_start_{NDCG_20}"
    cold = {m: v[cold_metric] for m, v in models.items() if cold_metric in v}
    cold_chart = bar_chart(f"Cold-start slice {primary}", cold) if cold else ""
    tuning = summary.metrics.get("tuning", {})
    cold_users = next((v.get("cold_start_users") for v in models.values() if v.get("cold_start_users")), None)
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; max-width: 1100px; }}
 .charts {{ display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }}
 .charts svg {{ flex: 0 1 auto; max-width: 100%; height: auto; background: #fafbfc; border: 1px solid #e1e4e8; }}
 table {{ border-collapse: collapse; font-size: .85rem; }}
 th, td {{ border: 1px solid #dde; padding: .25rem .45rem; text-align: right; }}
 th:first-child {{ text-align: left; }} li.fail {{ color: #b3261e; }} li.pass {{ color: #2a6b3c; }}
 small {{ color: #57606a; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><b>{summary.verdict}</b> · model <code>{html.escape(str(training.get("model_version", "?")))}</code> ·
{training.get("examples", "?")} training examples, {training.get("examples_per_second", "?")} examples/s,
best epoch {training.get("best_epoch", "?")}</p>
<p><small>{html.escape(summary.protocol)}. Cold-start slice: evaluated users with at most 5 train items
({cold_users if cold_users is not None else "none"} users).
EASE's L2 chosen on validation: {html.escape(str(tuning.get("ease", {}).get("l2", "–")))}.
{html.escape(summary.two_tower_choices())}</small></p>
<p><small>Repeat policy (what the published lists and the SavedModel do with a shopper's own items):
{html.escape(summary.repeat_policy_line())}</small></p>
<h2>Training</h2><div class=charts>{curves}{validation}</div>
<h2>Basket completion: the per-user holdout (not the gate's view)</h2>
<p><small>Each user's last 20% of items held out: items bought in one basket fall on both sides, so this
view rewards completing a basket (cart and product-page surfaces); the gate decides on the view below.</small></p>
<div class=charts>{bars}{recall}{cold_chart}</div>
{_table("model", REPORT_METRICS, summary.ranked_models())}
{skipped_note(tuning)}
{ranking_stage_section(summary)}
{backtest_section(summary)}
{gate_section(summary)}
<p><small>Hyper-parameters: <code>{html.escape(str(summary.config))}</code></small></p>
</body></html>"""


def write_report(artifacts: RunArtifacts, dataset_key: str) -> Path:
    """``report.html`` of the run in ``artifacts``, from what it has recorded so far."""
    summary = RunSummary.from_artifacts(artifacts)
    title = f"Evaluation report: {dataset_key}, release {summary.training.get('release_id', '?')}"
    path = artifacts.path(RunArtifacts.REPORT)
    path.write_text(render(summary, title))
    log.info("evaluation report: file://%s", path.resolve())
    return path
