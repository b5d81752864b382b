"""The evaluation report: every model, the curves, the gate's reasons, in one HTML file."""

from __future__ import annotations

import html
import re

import pytest

from recsys_pipeline.reporting.charts import bar_chart, line_chart
from recsys_pipeline.reporting.report import render
from recsys_pipeline.reporting.summary import RunSummary

pytestmark = pytest.mark.unit

TRAINING = {
    "model": "two_tower",
    "model_version": "two_tower-r1",
    "examples": 1000,
    "examples_per_second": 5000.0,
    "best_epoch": 3,
    "loss_per_epoch": [900.0, 700.0, 650.0],
    "validation_ndcg@20_per_epoch": [0.10, 0.14, 0.15, 0.149],
    "config": {"embedding_dim": 64},
}
REPORT = {
    "primary_metric": "ndcg@20",
    "protocol": "per-user temporal holdout",
    "tuning": {"ease": {"l2": 200}},
    "models": {
        "two_tower": {
            "ndcg@20": 0.152,
            "recall@20": 0.19,
            "cold_start_ndcg@20": 0.08,
            "cold_start_users": 40,
            "novelty@20": 9.1,
        },
        "ease": {"ndcg@20": 0.129, "recall@20": 0.167, "cold_start_ndcg@20": 0.07},
        "most_popular": {"ndcg@20": 0.043, "recall@20": 0.057},
    },
}
DECISION = {
    "promote": False,
    "reasons": ["PASS: ndcg@20 0.1520 >= 0.0100", "FAIL: not worse than champion: 0.1520 < 0.1700 - 0.01"],
}


def test_the_report_shows_every_model_the_curves_and_each_reason():
    page = render(RunSummary(TRAINING, REPORT, DECISION), "Evaluation report: online-retail")
    assert page.count("<svg") == 5  # loss, validation, ndcg bars, recall bars, cold-start bars
    for model in ("two_tower", "ease", "most_popular"):
        assert f"<th>{model}</th>" in page
    assert "NOT PROMOTED: the champion stays" in page
    assert "<li class=fail>FAIL: not worse than champion" in page and "<li class=pass>PASS: ndcg@20" in page
    assert "chosen: 3" in page and "best baseline (ease)" in page
    assert "40 users" in page
    # the table's rows are sorted by the primary metric
    assert (
        page.index("<tr><th>two_tower</th>") < page.index("<tr><th>ease</th>") < page.index("<tr><th>most_popular</th>")
    )


def _texts(svg: str, bold: bool = False) -> list[str]:
    pattern = r"<text\b[^>]*font-weight: 700[^>]*>([^<]*)</text>" if bold else r"<text\b[^>]*>([^<]*)</text>"
    return [html.unescape(text) for text in re.findall(pattern, svg)]


def test_bars_scale_to_the_largest_value_and_the_threshold():
    svg = bar_chart("t", {"a": 0.2, "b": 0.1}, ("bar", 0.3))
    # each bar is a rectangle path after its tooltip, best first: its width is the span of its x coordinates
    bars = re.findall(r"<title>(\w+): [\d.]+</title>\s*<path d=\"([^\"]+)\"", svg)
    assert [name for name, _ in bars] == ["a", "b"]
    widths = []
    for _, path in bars:
        xs = [float(x) for x in re.findall(r"[ML] ([\d.]+) [\d.]+", path)]
        widths.append(max(xs) - min(xs))
    assert widths[0] == pytest.approx(2 * widths[1], rel=0.01)
    assert "bar" in _texts(svg) and "0.2000" in _texts(svg)


def test_a_chart_without_data_says_so():
    assert line_chart("loss", {"loss": []}) == "<p>loss: no data</p>"
    assert line_chart("loss", {"loss": [None, float("nan")]}) == "<p>loss: no data</p>"
    assert line_chart("a <b>", {}) == "<p>a &lt;b&gt;: no data</p>"
    assert bar_chart("t", {}) == "<p>t: no data</p>"


def test_charts_are_inline_svg_labelled_for_screen_readers_with_their_text_as_text():
    for svg in (
        line_chart("Training loss", {"loss": [3.0, 2.0]}, marker=2, y_label="loss"),
        bar_chart("Test recall@20", {"ease": 0.1}),
    ):
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<metadata>" not in svg
        assert re.match(r'<svg role="img" aria-label="(Training loss|Test recall@20)"', svg)
        assert "<text" in svg and "<image" not in svg and "@font-face" not in svg
        assert len(svg) < 40_000
    assert "<title>loss epoch 2: 2.0000</title>" in line_chart("t", {"loss": [3.0, 2.0]})  # a tooltip per point
    assert "<title>ease: 0.1000</title>" in bar_chart("t", {"ease": 0.1})  # and per bar


def test_the_same_input_gives_the_same_bytes():
    def draw() -> str:
        return line_chart(
            "Validation ndcg@20", {"ndcg@20": [0.1, 0.14, 0.15]}, marker=3, y_label="ndcg@20"
        ) + bar_chart("Test ndcg@20", {"two_tower": 0.15, "ease": 0.13}, ("best baseline (ease)", 0.13))

    assert draw() == draw()
    assert render(RunSummary(TRAINING, REPORT, DECISION), "r") == render(RunSummary(TRAINING, REPORT, DECISION), "r")


def test_long_titles_and_model_names_are_written_out_in_full():
    title = "ndcg@20: new items only (already-bought items excluded), on the users the backtest kept"
    svg = bar_chart(title, {"two_tower+ranking": 0.051, "bought_before": 0.2, "a_model_with_an_even_longer_name": 0.03})
    assert (
        len(_texts(svg, bold=True)) > 1 and " ".join(_texts(svg, bold=True)) == title
    )  # wrapped over lines, never cut
    texts = _texts(svg)
    assert {"two_tower+ranking", "bought_before", "a_model_with_an_even_longer_name", "0.0510"} <= set(texts)
    curve = line_chart(
        "Ranking MLP: ndcg@20 of the epoch-choosing users, held out from the fit", {"two_tower+ranking": [0.1, 0.2]}
    )
    assert (
        " ".join(_texts(curve, bold=True)) == "Ranking MLP: ndcg@20 of the epoch-choosing users, held out from the fit"
    )
    assert "two_tower+ranking" in _texts(curve)
    assert "$x$" in _texts(bar_chart("t", {"$x$": 0.1}))  # a name is no mathtext


def test_the_backtest_gets_a_chart_and_a_table_per_variant():
    backtest = {
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
                "models": {"two_tower": {"ndcg@20": 0.05}, "ease": {"ndcg@20": 0.06}},
            },
            "with_repeats": {
                "evaluated_users": 1800,
                "models": {"bought_before": {"ndcg@20": 0.2}, "ease": {"ndcg@20": 0.07}},
            },
        },
    }
    page = render(RunSummary(TRAINING, REPORT | {"backtest": backtest}, DECISION), "r")
    assert page.count("<svg") == 7
    assert "The gate's view: backtest on a global time cut" in page and "2011-11-09 00:00:00" in page
    assert "new items only (already-bought items excluded): 1500 users" in page
    assert "repeat purchases counted (every item ranked): 1800 users" in page
    section = page[page.index("The gate's view") :]
    assert section.index("<tr><th>ease</th>") < section.index("<tr><th>two_tower</th>")  # sorted by ndcg@20
    assert "The gate's view" not in render(RunSummary(TRAINING, REPORT, DECISION), "r")


def _comparison(against: str, role: str, mean: float, low: float, high: float, verdict: str) -> dict:
    return {
        "against": against,
        "role": role,
        "challenger_ndcg@20": 0.30,
        "other_ndcg@20": 0.30 - mean,
        "mean_difference": mean,
        "low": low,
        "high": high,
        "users": 1330,
        "resamples": 1000,
        "seed": 20,
        "level": 0.95,
        "verdict": verdict,
    }


def test_the_gate_section_says_which_view_decided_and_plots_every_interval():
    decision = {
        "promote": False,
        "outcome": "no significant difference",
        "challenger": "two_tower",
        "view": {
            "label": "global time cut",
            "variant": "new_items",
            "test_users": 1330,
            "reason": "1330 known users have a positive event in the 90-day test period",
        },
        "champion_evaluation": {"note": "no champion yet"},
        "comparisons": [
            _comparison("most_popular", "best baseline", 0.001, -0.004, 0.006, "no significant difference"),
            _comparison("item_knn", "baseline", 0.012, 0.003, 0.021, "better"),
        ],
        "reasons": ["FAIL: beats baseline most_popular (the best): ndcg@20 difference +0.0010"],
    }
    page = render(RunSummary(TRAINING, REPORT, decision), "r")
    section = page[page.index("Promotion gate: no significant difference") :]
    assert "global time cut (new_items, 1330 test users)" in section and "90-day test period" in section
    assert "1000 resamples, seed 20" in section and "no champion yet" in section
    assert "95% paired bootstrap interval" in section and section.count("<svg") == 1
    for row in ("two_tower − most_popular (best baseline)", "two_tower − item_knn"):
        assert f"<tr><th>{row}</th>" in section
    assert "[-0.0040, +0.0060]" in section and "[+0.0030, +0.0210]" in section
    # the chart's tooltips carry each interval
    assert "two_tower − item_knn: +0.0120 [+0.0030, +0.0210]" in section
    assert "<li class=fail>FAIL: beats baseline most_popular" in section


def test_the_ranking_stage_shows_the_check_that_decided_and_both_orders_on_test():
    stage = {
        "features": ["retrieval_score", "item_knn_score"],
        "candidates": 100,
        "held_out_users": 700,
        "best_epoch": 2,
        "tuning_ndcg@20_per_epoch": [0.150, 0.155, 0.154],
        "used": True,
        "held_out_ndcg@20": {"retrieval_order": 0.1527, "reranked": 0.1551},
        "test": {"retrieval_order": {"ndcg@20": 0.1531}, "reranked": {"ndcg@20": 0.1568}},
    }
    page = render(RunSummary(TRAINING, REPORT | {"ranking_stage": stage}, DECISION), "r")
    section = page[page.index("<h2>Ranking stage: used</h2>") :]
    assert "ndcg@20 0.1527 in retrieval order, 0.1551 re-ordered" in section
    assert "<tr><th>retrieval order</th>" in section and "<td>0.1568</td>" in section
    refused = render(RunSummary(TRAINING, REPORT | {"ranking_stage": stage | {"used": False}}, DECISION), "r")
    assert "Ranking stage: not used: it did not beat the retrieval order" in refused
    sampled = "both orders on a seeded sample of 20,000 of the 195,273 test shoppers"
    on_sample = stage | {"used": False, "test_shoppers": sampled}
    assert sampled in render(RunSummary(TRAINING, REPORT | {"ranking_stage": on_sample}, DECISION), "r")
    assert "seeded sample" not in refused
    assert "Not trained: too few" in render(
        RunSummary(TRAINING, REPORT | {"ranking_stage": {"skipped": "too few users"}}, DECISION), "r"
    )


def test_the_report_names_the_two_tower_choices_made_on_validation():
    tuning = {
        "chosen": "user_profile=False",
        "validation_ndcg@20": {"user_profile=False": 0.1493, "user_profile=True": 0.1472},
        "popularity_prior": {"chosen": -0.02, "validation_ndcg@20": {"0.0": 0.1493, "-0.02": 0.1501, "1.0": 0.0523}},
    }
    page = render(RunSummary(TRAINING | {"tuning": tuning}, REPORT, DECISION), "Evaluation report")
    assert (
        "Two-tower setting chosen on validation: user_profile=False (validation ndcg@20: user_profile=False 0.1493"
        in page
    )
    assert "Popularity prior weight: -0.02 (validation ndcg@20 by weight: -0.02 0.1501, 0.0 0.1493, 1.0 0.0523)" in page
    assert "Two-tower setting" not in render(
        RunSummary(TRAINING, REPORT, DECISION), "Evaluation report"
    )  # older runs: nothing to say


def test_the_model_card_shows_the_gate_view_and_every_interval():
    from recsys_pipeline.reporting.model_card import render_model_card

    backtest = {
        "view": {"label": "global time cut", "reason": "1330 known users have a positive event in the 90-day period"},
        "variants": {
            "new_items": {"models": {"two_tower": {"ndcg@20": 0.348}, "most_popular": {"ndcg@20": 0.3456}}},
            "with_repeats": {"models": {"two_tower": {"ndcg@20": 0.352}, "bought_before": {"ndcg@20": 0.286}}},
        },
    }
    decision = {
        "promote": False,
        "reasons": ["FAIL: beats baseline most_popular (the best)"],
        "comparisons": [
            _comparison("most_popular", "best baseline", 0.0024, -0.001, 0.005, "no significant difference")
        ],
    }
    card = render_model_card(
        RunSummary(TRAINING, REPORT | {"backtest": backtest}, decision), "groceries", "v" * 16, "r1"
    )
    assert "## The gate's view: global time cut (NDCG@20)" in card and "90-day period" in card
    assert "| model | new_items | with_repeats |" in card
    assert "| two_tower | 0.3480 | 0.3520 |" in card and "| bought_before | – | 0.2860 |" in card
    assert "| most_popular (best baseline) | +0.0024 | [-0.0010, +0.0050] | no significant difference |" in card
    assert "## Basket completion view, not the gate's" in card


def test_the_card_and_report_state_the_repeat_policy_and_why():
    from recsys_pipeline.reporting.model_card import REPEAT_LIMITS, render_model_card

    policy = {
        "policy": "3",
        "mode": "slots",
        "slots": 3,
        "source": "RECSYS_REPEAT_POLICY_ONLINE_RETAIL",
        "repeat_share": 0.41,
        "reason": "set by RECSYS_REPEAT_POLICY_ONLINE_RETAIL = '3' (repeat purchases in the validation period: 41.0%)",
        "gate_view": "with_repeats",
        "gate_variant": "with_repeats",
    }
    decision = {"promote": True, "reasons": ["promote"], "repeat_policy": policy}
    card = render_model_card(RunSummary(TRAINING, REPORT, decision), "online-retail", "v" * 16, "r1")
    line = next(line for line in card.splitlines() if line.startswith("- **Repeat policy**"))
    assert "3 'buy again' slots" in line and "RECSYS_REPEAT_POLICY_ONLINE_RETAIL = '3'" in line and "41.0%" in line
    assert "The gate decides on with_repeats." in line
    assert f"- {REPEAT_LIMITS['slots']}" in card and REPEAT_LIMITS["exclude"] not in card
    page = render(RunSummary(TRAINING, REPORT, decision), "r")
    assert html.escape("3 'buy again' slots") in page and "41.0%" in page

    # a run before the setting: it published lists without own items, and says so
    old = render_model_card(RunSummary(TRAINING, REPORT, {"promote": True, "reasons": []}), "g", "v" * 16, "r0")
    assert "- **Repeat policy**: exclude: lists never show an item the shopper already has (the run predates" in old
    assert f"- {REPEAT_LIMITS['exclude']}" in old
