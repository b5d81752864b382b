"""The evaluation report of a run: one self-contained HTML file a person would rather look at.

Training curves (loss per epoch of the final fit, validation NDCG@20 per epoch of the
tuning fit, the chosen epoch marked), the primary metric of every model side by side
with the gate's bar to clear, a table of every metric (accuracy at 10 and 20,
coverage, novelty, diversity, the cold-start slice) and the gate's decision with each
reason. Charts are inline SVG drawn here: no plotting library in the Airflow worker,
nothing fetched when the file is opened, and it renders the same in any browser.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

CHART_W, CHART_H, PAD = 460, 240, 44
COLORS = {"two_tower": "#2f6fdb", "ease": "#c9842c", "item_knn": "#2e9e55", "user_knn": "#8e5bd6", "most_popular": "#7a7f87",
          "bought_before": "#b5485d"}
TABLE_METRICS = (
    "ndcg@10", "recall@10", "ndcg@20", "recall@20", "hit_rate@20", "map@20", "coverage@10",
    "novelty@20", "diversity@20", "cold_start_ndcg@20", "cold_start_recall@20",
)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def line_chart(title: str, series: dict[str, Sequence[float]], marker: int | None = None, y_label: str = "") -> str:
    """An SVG line chart of one or more series over epochs 1..n; ``marker`` draws a vertical line at that epoch."""
    points = [v for values in series.values() for v in values if v is not None and math.isfinite(v)]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    n = max(len(v) for v in series.values())
    low, high = min(points), max(points)
    if high == low:
        low, high = low - 0.5 * abs(low or 1), high + 0.5 * abs(high or 1)
    span = high - low
    low, high = low - 0.05 * span, high + 0.05 * span

    def x(i: int) -> float:
        return PAD + (CHART_W - 2 * PAD) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return CHART_H - PAD + (-(CHART_H - 2 * PAD)) * ((v - low) / (high - low))

    parts = [f'<svg viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{CHART_W / 2}" y="16" text-anchor="middle" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{PAD}" y1="{CHART_H - PAD}" x2="{CHART_W - PAD}" y2="{CHART_H - PAD}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{CHART_H - PAD}" stroke="#888"/>']
    for frac in (0, 0.5, 1):
        value = low + frac * (high - low)
        parts.append(f'<text x="{PAD - 4}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="10">{value:.4g}</text>')
    for i in range(n):
        if n <= 12 or i % math.ceil(n / 12) == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{CHART_H - PAD + 14}" text-anchor="middle" font-size="10">{i + 1}</text>')
    parts.append(f'<text x="{CHART_W / 2}" y="{CHART_H - 8}" text-anchor="middle" font-size="11">epoch</text>')
    if y_label:
        parts.append(f'<text x="12" y="{CHART_H / 2}" font-size="11" transform="rotate(-90 12 {CHART_H / 2})" text-anchor="middle">{html.escape(y_label)}</text>')
    if marker is not None and 1 <= marker <= n:
        parts.append(f'<line x1="{x(marker - 1):.1f}" y1="{PAD}" x2="{x(marker - 1):.1f}" y2="{CHART_H - PAD}" stroke="#c33" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x(marker - 1) + 3:.1f}" y="{PAD + 10}" font-size="10" fill="#c33">chosen: {marker}</text>')
    palette = ["#2f6fdb", "#c9842c", "#2e9e55", "#8e5bd6"]
    for k, (name, values) in enumerate(series.items()):
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values) if v is not None and math.isfinite(v))
        color = palette[k % len(palette)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
        for i, v in enumerate(values):
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"><title>{html.escape(name)} epoch {i + 1}: {v:.4f}</title></circle>')
        parts.append(f'<text x="{CHART_W - PAD}" y="{PAD + 12 * k}" text-anchor="end" font-size="10" fill="{color}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, values: dict[str, float], threshold: tuple[str, float] | None = None) -> str:
    """Horizontal bars, one per model, best first; ``threshold`` (label, value) draws the bar to clear."""
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    ordered = sorted(values.items(), key=lambda kv: -kv[1])
    row, label_w = 26, 110
    height = PAD + row * len(ordered) + 20
    top = _nice_max(max(max(values.values()), threshold[1] if threshold else 0))
    width = CHART_W - label_w - 60

    def x(v: float) -> float:
        return label_w + width * v / top

    parts = [f'<svg viewBox="0 0 {CHART_W} {height}" width="{CHART_W}" height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{CHART_W / 2}" y="16" text-anchor="middle" font-weight="600">{html.escape(title)}</text>']
    for i, (name, value) in enumerate(ordered):
        y0 = 30 + i * row
        color = COLORS.get(name, "#5b8")
        parts.append(f'<text x="{label_w - 6}" y="{y0 + 15}" text-anchor="end" font-size="12">{html.escape(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y0 + 3}" width="{max(x(value) - label_w, 1):.1f}" height="{row - 8}" fill="{color}"><title>{html.escape(name)}: {value:.4f}</title></rect>')
        parts.append(f'<text x="{x(value) + 4:.1f}" y="{y0 + 15}" font-size="11">{value:.4f}</text>')
    if threshold:
        label, value = threshold
        parts.append(f'<line x1="{x(value):.1f}" y1="26" x2="{x(value):.1f}" y2="{height - 18}" stroke="#c33" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x(value):.1f}" y="{height - 6}" text-anchor="middle" font-size="10" fill="#c33">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


BACKTEST_METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20", "hit_rate@20", "map@20", "coverage@10")
BACKTEST_VARIANTS = {"new_items": "new items only (already-bought items excluded)",
                     "with_repeats": "repeat purchases counted (every item ranked)"}


def backtest_section(backtest: dict | None, primary: str) -> str:
    """The global time-cut backtest (``metrics.json``'s ``backtest``): a chart and a table per variant."""
    if not backtest:
        return ""
    window = backtest.get("window", {})
    header = "".join(f"<th>{html.escape(m)}</th>" for m in BACKTEST_METRICS)
    parts = [
        "<h2>Backtest on a global time cut</h2>",
        f"<p><small>Fitted on interactions first seen {html.escape(window.get('train_from', '?'))} to "
        f"{html.escape(window.get('cut_at', '?'))} (hyper-parameters chosen on the period from "
        f"{html.escape(window.get('validation_from', '?'))}), tested on the {backtest.get('users', '?')} known users' "
        f"items up to {html.escape(window.get('test_until', '?'))}. Reported, not gated on.</small></p><div class=charts>",
    ]
    tables = []
    for variant, label in BACKTEST_VARIANTS.items():
        result = backtest.get("variants", {}).get(variant)
        if not result:
            continue
        models = result["models"]
        parts.append(bar_chart(f"{primary}: {label}", {m: v[primary] for m, v in models.items() if primary in v}))
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(values.get(m))}</td>" for m in BACKTEST_METRICS) + "</tr>"
            for name, values in sorted(models.items(), key=lambda kv: -kv[1].get(primary, 0))
        )
        tables.append(f"<h3>{html.escape(label)}: {result.get('evaluated_users', '?')} users</h3>"
                      f"<table><thead><tr><th>model</th>{header}</tr></thead><tbody>{rows}</tbody></table>")
    return "".join(parts) + "</div>" + "".join(tables)


def ranking_stage_section(stage: dict | None, primary: str) -> str:
    """The ranking stage (``metrics.json``'s ``ranking_stage``): the validation check that decided, the
    held-out curve, and both orders on test -- reported whether the run used the stage or not."""
    if not stage:
        return ""
    if stage.get("skipped"):
        return f"<h2>Ranking stage</h2><p>Not trained: {html.escape(stage['skipped'])}.</p>"
    held = stage.get("held_out_ndcg@20", {})
    used = "used" if stage.get("used") else "not used: it did not beat the retrieval order"
    orders = stage.get("test", {})
    header = "".join(f"<th>{html.escape(m)}</th>" for m in BACKTEST_METRICS)
    rows = "".join(f"<tr><th>{html.escape(name.replace('_', ' '))}</th>" + "".join(f"<td>{_cell(values.get(m))}</td>" for m in BACKTEST_METRICS)
                   + "</tr>" for name, values in orders.items())
    curve = line_chart("Ranking MLP: ndcg@20 of the epoch-choosing users", {"reranked": stage.get("tuning_ndcg@20_per_epoch", [])},
                       marker=stage.get("best_epoch"), y_label="ndcg@20")
    return (
        f"<h2>Ranking stage: {used}</h2>"
        f"<p><small>An MLP over {', '.join(html.escape(f) for f in stage.get('features', []))} re-orders the two-tower model's "
        f"{stage.get('candidates', '?')} best candidates. On {stage.get('held_out_users', '?')} validation users kept for "
        f"this check alone (neither learned from nor used to choose epochs): ndcg@20 {_cell(held.get('retrieval_order'))} in retrieval order, {_cell(held.get('reranked'))} re-ordered. "
        f"Test metrics of both orders below (the challenger's row above is the order the run chose).</small></p>"
        f"<div class=charts>{curve}</div>"
        + (f"<table><thead><tr><th>order</th>{header}</tr></thead><tbody>{rows}</tbody></table>" if rows else "")
    )


def two_tower_choices(tuning: dict) -> str:
    """One sentence on what the run chose for the two-tower model on validation (``training.json`` -> ``tuning``)."""
    if not tuning:
        return ""
    settings = ", ".join(f"{label} {score:.4f}" for label, score in tuning.get("validation_ndcg@20", {}).items())
    text = f"Two-tower setting chosen on validation: {tuning.get('chosen', '?')} (validation ndcg@20: {settings})."
    prior = tuning.get("popularity_prior")
    if prior:
        by_weight = sorted(prior.get("validation_ndcg@20", {}).items(), key=lambda kv: float(kv[0]))
        weights = ", ".join(f"{weight} {score:.4f}" for weight, score in by_weight)
        text += f" Popularity prior weight: {prior.get('chosen')} (validation ndcg@20 by weight: {weights})."
    return text


def render(training: dict, metrics_report: dict, decision: dict | None, title: str) -> str:
    """The report as one HTML page (``training.json``, ``metrics.json`` and ``decision.json`` of a run)."""
    models = metrics_report.get("models", {})
    primary = metrics_report.get("primary_metric", "ndcg@20")
    challenger = training.get("model", "two_tower")
    best_baseline = max(((m, v[primary]) for m, v in models.items() if m != challenger and primary in v), key=lambda kv: kv[1], default=None)
    curves = line_chart("Training loss (final fit)", {"loss": training.get("loss_per_epoch", [])}, y_label="summed softmax loss")
    validation = line_chart(
        f"Validation {primary} (tuning fit, early stopping)",
        {primary: training.get("validation_ndcg@20_per_epoch", [])}, marker=training.get("best_epoch"), y_label=primary,
    )
    bars = bar_chart(
        f"Test {primary}, every model", {m: v[primary] for m, v in models.items() if primary in v},
        (f"best baseline ({best_baseline[0]})", best_baseline[1]) if best_baseline else None,
    )
    recall = bar_chart("Test recall@20", {m: v["recall@20"] for m, v in models.items() if "recall@20" in v})
    cold = {m: v["cold_start_ndcg@20"] for m, v in models.items() if "cold_start_ndcg@20" in v}
    cold_chart = bar_chart(f"Cold-start slice {primary}", cold) if cold else ""
    header = "".join(f"<th>{html.escape(m)}</th>" for m in TABLE_METRICS)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(values.get(m))}</td>" for m in TABLE_METRICS) + "</tr>"
        for name, values in sorted(models.items(), key=lambda kv: -kv[1].get(primary, 0))
    )
    reasons = "".join(
        f"<li class={'fail' if r.startswith('FAIL') else 'pass'}>{html.escape(r)}</li>" for r in (decision or {}).get("reasons", [])
    )
    verdict = "no decision yet" if decision is None else ("PROMOTED" if decision.get("promote") else "NOT PROMOTED: the champion stays")
    tuning = metrics_report.get("tuning", {})
    cold_users = next((v.get("cold_start_users") for v in models.values() if v.get("cold_start_users")), None)
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; max-width: 1100px; }}
 .charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }} svg {{ background: #fafbfc; border: 1px solid #e1e4e8; font-family: inherit; }}
 table {{ border-collapse: collapse; font-size: .85rem; }} th, td {{ border: 1px solid #dde; padding: .25rem .45rem; text-align: right; }}
 th:first-child {{ text-align: left; }} li.fail {{ color: #b3261e; }} li.pass {{ color: #2a6b3c; }} small {{ color: #57606a; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><b>{verdict}</b> · model <code>{html.escape(str(training.get('model_version', '?')))}</code> ·
{training.get('examples', '?')} training examples, {training.get('examples_per_second', '?')} examples/s, best epoch {training.get('best_epoch', '?')}</p>
<p><small>{html.escape(metrics_report.get('protocol', ''))}. Cold-start slice: evaluated users with at most 5 train items
({cold_users if cold_users is not None else 'none'} users). EASE's L2 chosen on validation: {html.escape(str(tuning.get('ease', {}).get('l2', '–')))}.
{html.escape(two_tower_choices(training.get('tuning', {})))}</small></p>
<h2>Training</h2><div class=charts>{curves}{validation}</div>
<h2>Models on the test split</h2><div class=charts>{bars}{recall}{cold_chart}</div>
<table><thead><tr><th>model</th>{header}</tr></thead><tbody>{rows}</tbody></table>
{ranking_stage_section(metrics_report.get("ranking_stage"), primary)}
{backtest_section(metrics_report.get("backtest"), primary)}
<h2>Promotion gate</h2><ul>{reasons or '<li>not decided</li>'}</ul>
<p><small>Hyper-parameters: <code>{html.escape(str(training.get('config', {})))}</code></small></p>
</body></html>"""
