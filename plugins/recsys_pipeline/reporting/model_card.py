"""``model_card.md``: what a reader of a release needs before trusting its model.

Written into the release at publishing time: what the model is, what it was trained
on and when, how it did against every baseline, why the gate decided as it did, and
where it is known to be weak.
"""

from __future__ import annotations

import json
from pathlib import Path

from ml.names import SUMMARY_METRICS
from recsys_pipeline.reporting.summary import RunSummary
from recsys_pipeline.run import RunArtifacts

KNOWN_LIMITS = (
    "Users with fewer than 5 distinct items are not evaluated; their recommendations lean on popularity.",
    "Users unseen in training get recommendations from the recent items the caller passes "
    "(`recommend_in_context`); with none, their segment's best-sellers, or everyone's.",
    "Offline metrics on one shop's history (a global time cut, or a per-user holdout where few shoppers return); "
    "no online test has measured this model.",
)
# what the repeat policy leaves out, by its mode (``ml.repeat_policy``)
REPEAT_LIMITS = {
    "exclude": "Recommendations exclude every item the user already interacted with, including repeat-purchase "
    "staples.",
    "include": "Own items are ranked by the candidate ranking with how often and how recently they were bought "
    "where the run has it; the two-tower model alone (no candidate ranking) ranks them like any other item, "
    "without a count of purchases, and its ranking stage (trained on unseen items) is not applied.",
    "slots": "The 'buy again' slots rank own items by how many days they were bought, then recency, whatever the "
    "model thinks of them; the rest of the list never repeats an own item.",
}


def render_model_card(summary: RunSummary, dataset_key: str, data_version: str, release_id: str) -> str:
    training = summary.training
    lines = [
        f"# Model card: {training['model_version']}",
        "",
        f"- **Release**: `{release_id}` of dataset `{dataset_key}` (data version `{data_version[:16]}`)",
        f"- **Trained**: {training.get('trained_at')} on {training.get('examples', '?')} examples, "
        f"best epoch {training.get('best_epoch', '?')}",
        f"- **Model**: {summary.model_description()}",
        f"- **Ranking stage**: {summary.ranking_stage_line()}",
        f"- **Repeat policy**: {summary.repeat_policy_line()}",
        f"- **Hyper-parameters**: `{json.dumps(summary.config, sort_keys=True)}`",
        f"- **Code**: `{json.dumps(training.get('code_version', {}), sort_keys=True)}`",
        "",
        "## Data window",
        "",
        "| split | first interaction | last interaction | interactions | users | items |",
        "|---|---|---|---|---|---|",
    ]
    for split, window in sorted(summary.data_window.items()):
        lines.append(
            f"| {split} | {window['first_event_at']} | {window['last_event_at']} | "
            f"{window['interactions']:,} | {window['users']:,} | {window['items']:,} |"
        )
    header, *rows = summary.metric_rows(SUMMARY_METRICS)
    lines += [
        "",
        f"## Basket completion view, not the gate's ({summary.protocol})",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += _gate_view_lines(summary)
    lines += ["", f"## Promotion gate: {'PROMOTED' if summary.promoted else 'not promoted'}", ""]
    lines += [f"- {reason}" for reason in summary.reasons]
    comparisons = (summary.decision or {}).get("comparisons", [])
    if comparisons:
        lines += ["", "| comparison (NDCG@20) | difference | 95% interval | verdict |", "|---|---|---|---|"]
        lines += [
            f"| {c['against']} ({c['role']}) | {c['mean_difference']:+.4f} | [{c['low']:+.4f}, {c['high']:+.4f}] "
            f"| {c['verdict']} |"
            for c in comparisons
        ]
    mode = (summary.repeat_policy or {}).get("mode", "exclude")
    limits = (*KNOWN_LIMITS, REPEAT_LIMITS.get(mode, REPEAT_LIMITS["exclude"]))
    lines += ["", "## Known limits", ""] + [f"- {limit}" for limit in limits]
    return "\n".join(lines) + "\n"


def _gate_view_lines(summary: RunSummary) -> list[str]:
    """NDCG@20 of every model on the gate's view, one column per variant."""
    scores = summary.backtest_scores()
    if not scores:
        return []
    view = (summary.metrics.get("backtest") or {}).get("view", {})
    variants = list(scores)
    models = sorted({m for v in scores.values() for m in v}, key=lambda m: -max(v.get(m) or 0 for v in scores.values()))
    lines = ["", f"## The gate's view: {view.get('label', 'global time cut')} (NDCG@20)", ""]
    if view.get("reason"):
        lines += [view["reason"], ""]
    lines += ["| model | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for model in models:
        cells = [f"{scores[v][model]:.4f}" if scores[v].get(model) is not None else "–" for v in variants]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_model_card(artifacts: RunArtifacts, dataset_key: str, data_version: str, release_id: str) -> Path:
    card = render_model_card(RunSummary.from_artifacts(artifacts), dataset_key, data_version, release_id)
    path = artifacts.path(RunArtifacts.MODEL_CARD)
    path.write_text(card)
    return path
