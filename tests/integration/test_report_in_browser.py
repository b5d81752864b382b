"""The evaluation report as a browser draws it: no chart's text is cut at the chart's edge.

The report is opened from a file in headless Chromium (what a person does with the file
from the release bucket), with titles, model names and labels as long as a real run's;
every <text> of every chart must lie inside its <svg>, on a wide screen and on a phone's.
Set RECSYS_SCREENSHOT_DIR to keep the screenshots (never written into the repository).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys_pipeline.reporting.report import render
from recsys_pipeline.reporting.summary import RunSummary

from browser import CHROMIUM, Browser

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"),
]

MODELS = ("two_tower", "ease", "item_knn", "user_knn", "most_popular")
TRAINING = {
    "model": "two_tower",
    "model_version": "two_tower-20111209T125000-r1",
    "examples": 391_000,
    "examples_per_second": 48_000.0,
    "best_epoch": 22,
    "loss_per_epoch": [9000.0 - 180 * i for i in range(30)],
    "validation_ndcg@20_per_epoch": [0.10 + 0.002 * i for i in range(24)] + [0.146, 0.145, 0.145, 0.144, 0.144, 0.143],
    "config": {"embedding_dim": 64, "epochs": 30},
    "tuning": {
        "chosen": "user_profile=False",
        "validation_ndcg@20": {"user_profile=False": 0.1493, "user_profile=True": 0.1472},
    },
}
REPORT = {
    "primary_metric": "ndcg@20",
    "protocol": "per-user temporal holdout",
    "tuning": {"ease": {"l2": 200}},
    "models": {
        name: {
            "ndcg@20": 0.152 - 0.02 * i,
            "recall@20": 0.19 - 0.025 * i,
            "cold_start_ndcg@20": 0.08 - 0.01 * i,
            "cold_start_users": 40,
        }
        for i, name in enumerate(MODELS)
    },
    "ranking_stage": {
        "features": ["retrieval_score", "item_knn_score", "popularity"],
        "candidates": 100,
        "held_out_users": 700,
        "best_epoch": 4,
        "tuning_ndcg@20_per_epoch": [0.1500, 0.1550, 0.1562, 0.1571, 0.1565, 0.1560],
        "used": True,
        "held_out_ndcg@20": {"retrieval_order": 0.1527, "reranked": 0.1551},
        "test": {"retrieval_order": {"ndcg@20": 0.1531}, "reranked": {"ndcg@20": 0.1568}},
    },
    "backtest": {
        "window": {
            "cut_at": "2011-11-09 00:00:00",
            "validation_from": "2011-10-10 00:00:00",
            "train_from": "2010-12-01 08:26:00",
            "test_until": "2011-12-09 12:50:00",
        },
        "users": 3700,
        "variants": {
            "new_items": {
                "evaluated_users": 1500,
                "models": {
                    "two_tower+ranking": {"ndcg@20": 0.0552},
                    "two_tower": {"ndcg@20": 0.0531},
                    "ease": {"ndcg@20": 0.0604},
                    "item_knn": {"ndcg@20": 0.0488},
                    "most_popular": {"ndcg@20": 0.0201},
                },
            },
            "with_repeats": {
                "evaluated_users": 1800,
                "models": {
                    "bought_before": {"ndcg@20": 0.2012},
                    "two_tower+ranking": {"ndcg@20": 0.0903},
                    "ease": {"ndcg@20": 0.0702},
                    "most_popular": {"ndcg@20": 0.0305},
                },
            },
        },
    },
}
DECISION = {
    "promote": True,
    "reasons": ["PASS: ndcg@20 0.1520 >= 0.0100", "PASS: beats the best baseline (ease): 0.1520 > 0.1320"],
}
# loss, validation, test ndcg@20 bars, recall@20 bars, cold-start bars, ranking MLP curve,
# one bar chart per backtest variant
CHARTS = 8

# every <text> of every <svg>, in page pixels, against its own <svg>'s box; ``cut`` lists the ones that stick out
CHECK = """(() => {
  const svgs = [...document.querySelectorAll('svg')];
  const cut = [], tooWide = [];
  let texts = 0;
  for (const svg of svgs) {
    const box = svg.getBoundingClientRect();
    if (box.right > document.documentElement.clientWidth + 1) tooWide.push(svg.getAttribute('aria-label'));
    for (const text of svg.querySelectorAll('text')) {
      const r = text.getBoundingClientRect();
      texts += 1;
      if (r.left < box.left - 1 || r.top < box.top - 1 || r.right > box.right + 1 || r.bottom > box.bottom + 1)
        cut.push(`${svg.getAttribute('aria-label')} | "${text.textContent}"`
                 + ` | text ${[r.left, r.top, r.right, r.bottom].map(Math.round)}`
                 + ` svg ${[box.left, box.top, box.right, box.bottom].map(Math.round)}`);
    }
  }
  return {svgs: svgs.length, texts, cut, tooWide, width: document.documentElement.clientWidth,
          height: document.documentElement.scrollHeight};
})()"""


@pytest.mark.parametrize("width", [1300, 400], ids=["desktop", "phone"])
def test_no_chart_text_sticks_out_of_its_chart(tmp_path, width):
    page = tmp_path / "report.html"
    page.write_text(
        render(RunSummary(TRAINING, REPORT, DECISION), "Evaluation report: online-retail"), encoding="utf-8"
    )
    with Browser(width=width, height=900) as browser:
        browser.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        browser.goto(page.as_uri(), settle=0.5)
        result = browser.evaluate(CHECK)
        if os.environ.get("RECSYS_SCREENSHOT_DIR"):  # the whole page, not just the first screen
            browser.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=result["height"],
                deviceScaleFactor=1,
                mobile=False,
            )
            browser.screenshot(Path(os.environ["RECSYS_SCREENSHOT_DIR"]) / f"report-{width}px.png")
    assert result["svgs"] == CHARTS
    assert result["texts"] > 10 * CHARTS  # the check saw the charts' text, not an empty page
    assert result["cut"] == [], "chart text outside its chart:\n" + "\n".join(result["cut"])
    assert result["tooWide"] == [], f"charts wider than the {result['width']} px page: {result['tooWide']}"
