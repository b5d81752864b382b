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
    "Offline metrics on a temporal holdout of one shop's history; no online test has measured this model.",
    "Recommendations exclude every item the user already interacted with, including repeat-purchase staples.",
)


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
        f"## Offline metrics ({summary.protocol})",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"## Promotion gate: {'PROMOTED' if summary.promoted else 'not promoted'}", ""]
    lines += [f"- {reason}" for reason in summary.reasons]
    lines += ["", "## Known limits", ""] + [f"- {limit}" for limit in KNOWN_LIMITS]
    return "\n".join(lines) + "\n"


def write_model_card(artifacts: RunArtifacts, dataset_key: str, data_version: str, release_id: str) -> Path:
    card = render_model_card(RunSummary.from_artifacts(artifacts), dataset_key, data_version, release_id)
    path = artifacts.path(RunArtifacts.MODEL_CARD)
    path.write_text(card)
    return path
