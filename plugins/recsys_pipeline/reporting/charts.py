"""The evaluation report's charts, as inline SVG drawn by matplotlib.

Charts placed by hand at fixed coordinates clipped as soon as a title or a model's name
grew longer than the box guessed for it; matplotlib measures its text and lays the
figure out around it, so the same code holds for any title, label or value.

The SVG goes straight into the report's HTML: text stays text (searchable, selectable,
no embedded fonts), nothing is fetched when the page opens. The same input gives the
same bytes, because a run's report is part of its idempotent release. Figures are
built with the object-oriented API only, never pyplot, whose global figure state does
not belong in an Airflow worker that may run tasks in threads; the few settings the
SVG writer reads from the global ``rcParams`` are set under a lock for the same reason.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
import textwrap
import threading
from collections.abc import Sequence

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLORS = {
    "two_tower": "#2f6fdb",
    "ease": "#c9842c",
    "item_knn": "#2e9e55",
    "user_knn": "#8e5bd6",
    "most_popular": "#7a7f87",
    "bought_before": "#b5485d",
    "tifu_knn": "#d0679a",
    "candidates+ranking": "#1b3f8f",
}
PALETTE = ("#2f6fdb", "#c9842c", "#2e9e55", "#8e5bd6")
BAR_DEFAULT = "#55bb88"
MARKER_COLOR = "#cc3333"
WIDTH_IN = 5.0  # about 480 CSS px: two charts side by side in the report's 1100 px column
TITLE_CHARS = 52  # a wrapped title line at 10 pt bold fits the chart's width

_STYLE = {
    "svg.fonttype": "none",  # <text>, not glyph outlines
    "figure.facecolor": "none",  # the page's background shows through
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
_LOCK = threading.Lock()  # rcParams is process-wide: one chart at a time keeps each one's hash salt its own
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_TIP_GROUP = re.compile(r'<g id="(tip-[0-9a-f]+-\d+)">')
_GROUP_ID = re.compile(r'<g id="[^"]*"(/?)>')


def _no_data(title: str) -> str:
    return f"<p>{html.escape(title)}: no data</p>"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, TITLE_CHARS, break_long_words=False, break_on_hyphens=False)) or text


def _key(*parts) -> str:
    """A short digest of the chart's input: its hash salt (ids unique per chart, stable per input) and tooltip ids."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _svg(fig: Figure, title: str, tips: dict[str, str]) -> str:
    """``fig`` as an inline <svg>: no prolog, no metadata, labelled for screen readers, a <title> tooltip per tip id."""
    buffer = io.StringIO()
    FigureCanvasSVG(fig)  # the SVG canvas itself: no backend chosen, no pyplot
    fig.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.06, metadata={"Date": None})
    svg = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1), count=1)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(title)}" ', 1)
    svg = _TIP_GROUP.sub(
        lambda m: f"<g><title>{html.escape(tips[m.group(1)])}</title>" if m.group(1) in tips else "<g>", svg
    )
    # matplotlib names every group (figure_1, axes_1, ...): the same ids in each chart of a page; nothing refers to them
    return _GROUP_ID.sub(r"<g\1>", svg).strip()


def _plain(*texts) -> None:
    """Show labels as written: a "$" in a model's name is no mathtext."""
    for text in texts:
        text.set_parse_math(False)


def line_chart(
    title: str, series: dict[str, Sequence[float]], marker: int | None = None, y_label: str = "", x_label: str = "epoch"
) -> str:
    """A line chart of one or more series over epochs (or ``x_label``'s points) 1..n; ``marker`` draws a
    vertical line at that point."""
    clean = {name: [float(v) if _finite(v) else math.nan for v in values] for name, values in series.items()}
    if not any(math.isfinite(v) for values in clean.values() for v in values):
        return _no_data(title)
    n = max(len(values) for values in clean.values())
    key = _key("line", title, clean, marker, y_label, *([x_label] if x_label != "epoch" else []))
    tips: dict[str, str] = {}
    with _LOCK, matplotlib.rc_context(_STYLE | {"svg.hashsalt": key}):
        fig = Figure(figsize=(WIDTH_IN, 2.7), layout="constrained")
        ax = fig.add_subplot()
        for k, (name, values) in enumerate(clean.items()):
            color = COLORS.get(name, PALETTE[k % len(PALETTE)])
            epochs = range(1, len(values) + 1)
            ax.plot(epochs, values, color=color, linewidth=1.8, label=name)
            for epoch, value in zip(epochs, values, strict=True):
                if math.isfinite(value):  # a point of its own: its own tooltip
                    gid = f"tip-{key}-{len(tips)}"
                    tips[gid] = f"{name} {x_label.split()[0]} {epoch}: {value:.4f}"
                    ax.plot([epoch], [value], "o", color=color, markersize=3.5, gid=gid)
        if marker is not None and 1 <= marker <= n:
            ax.axvline(marker, color=MARKER_COLOR, linestyle="--", linewidth=1.2, label=f"chosen: {marker}")
        ax.set_xlim(0.6, n + 0.4)
        ax.margins(y=0.08)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="y", color="#e6e8eb", linewidth=0.8)
        ax.set_axisbelow(True)
        _plain(ax.set_title(_wrap(title)), ax.set_xlabel(x_label), ax.set_ylabel(y_label))
        _plain(*ax.legend(loc="best").get_texts())
        return _svg(fig, title, tips)


def bar_chart(title: str, values: dict[str, float], threshold: tuple[str, float] | None = None) -> str:
    """Horizontal bars, one per model, best first; ``threshold`` (label, value) draws the bar to clear."""
    if not values:
        return _no_data(title)
    ordered = sorted(values.items(), key=lambda kv: -kv[1])
    names, numbers = [name for name, _ in ordered], [float(v) for _, v in ordered]
    key = _key("bar", title, ordered, threshold)
    tips: dict[str, str] = {}
    with _LOCK, matplotlib.rc_context(_STYLE | {"svg.hashsalt": key}):
        fig = Figure(figsize=(WIDTH_IN, 1.3 + 0.3 * len(ordered) + (0.25 if threshold else 0)), layout="constrained")
        ax = fig.add_subplot()
        bars = ax.barh(
            range(len(ordered)), numbers, height=0.68, color=[COLORS.get(name, BAR_DEFAULT) for name in names]
        )
        for i, (bar, name, number) in enumerate(zip(bars, names, numbers, strict=True)):
            gid = f"tip-{key}-{i}"
            tips[gid] = f"{name}: {number:.4f}"
            bar.set_gid(gid)
        # the threshold's line may cross a label: a backing keeps the digits legible
        _plain(
            *ax.bar_label(
                bars, fmt="%.4f", padding=3, fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.4}
            )
        )
        ax.set_yticks(range(len(ordered)), labels=names, parse_math=False)
        ax.invert_yaxis()
        top = max(numbers + ([threshold[1]] if threshold else []))
        low = min(numbers + [0.0])
        ax.set_xlim(low * 1.25 if low < 0 else 0, top * 1.25 if top > 0 else 1)  # room for the value labels
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(axis="y", length=0)
        if threshold:
            label, number = threshold
            ax.axvline(number, color=MARKER_COLOR, linestyle="--", linewidth=1.2, label=label)
            _plain(*fig.legend(loc="outside lower center").get_texts())
        _plain(ax.set_title(_wrap(title)))
        return _svg(fig, title, tips)


def interval_chart(title: str, intervals: dict[str, tuple[float, float, float]], x_label: str = "") -> str:
    """One row per comparison: the mean difference as a dot, its interval (low, high) as a line, and the zero
    line a decision turns on (an interval left of it: significantly worse; right of it: significantly better)."""
    rows = {name: tuple(float(v) for v in values) for name, values in intervals.items() if all(map(_finite, values))}
    if not rows:
        return _no_data(title)
    names = list(rows)
    key = _key("interval", title, rows, x_label)
    tips: dict[str, str] = {}
    with _LOCK, matplotlib.rc_context(_STYLE | {"svg.hashsalt": key}):
        fig = Figure(figsize=(WIDTH_IN, 1.3 + 0.35 * len(names)), layout="constrained")
        ax = fig.add_subplot()
        for i, name in enumerate(names):
            mean, low, high = rows[name]
            color = "#2a6b3c" if low > 0 else ("#b3261e" if high < 0 else "#57606a")
            gid = f"tip-{key}-{i}"
            tips[gid] = f"{name}: {mean:+.4f} [{low:+.4f}, {high:+.4f}]"
            ax.plot([low, high], [i, i], color=color, linewidth=2.2, solid_capstyle="butt", gid=gid)
            ax.plot([mean], [i], "o", color=color, markersize=5)
        ax.axvline(0.0, color=MARKER_COLOR, linestyle="--", linewidth=1.2)
        ax.set_yticks(range(len(names)), labels=names, parse_math=False)
        ax.invert_yaxis()
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.margins(x=0.15)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(axis="y", length=0)
        ax.grid(axis="x", color="#e6e8eb", linewidth=0.8)
        ax.set_axisbelow(True)
        _plain(ax.set_title(_wrap(title)), ax.set_xlabel(x_label))
        return _svg(fig, title, tips)
