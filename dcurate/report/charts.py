"""The report's charts: matplotlib figures rendered in-process to inline SVG strings (text as
paths, so no font files or network are needed; element ids made unique per chart)."""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D", "#BAB0AC"]
_RC: dict[str, Any] = {
    "svg.fonttype": "path",
    "text.parse_math": False,  # '$' in a domain or reason name is text, not TeX
    "font.family": "DejaVu Sans",  # shipped with matplotlib
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "svg.image_inline": True,
}


def _styled(fn: Callable[..., str]) -> Callable[..., str]:
    """Build the chart under the report's matplotlib settings (artists read them when created)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        import matplotlib

        rc: Any = _RC
        with matplotlib.rc_context(rc):
            return fn(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def to_svg(fig: Any, name: str) -> str:
    """Render ``fig`` as an ``<svg>`` element ready to inline in HTML (ids prefixed with ``name``)."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    rc: Any = {**_RC, "svg.hashsalt": name}
    with matplotlib.rc_context(rc):  # (again, for a figure built elsewhere)
        FigureCanvasSVG(fig)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if ids:
        text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{slug}-{m.group(1)}"', text)
        text = re.sub(r"#([A-Za-z0-9_.:-]+)", lambda m: f"#{slug}-{m.group(1)}" if m.group(1) in ids else m.group(0), text)
    text = text.replace("<svg ", '<svg class="chart" ', 1)
    return f'<figure class="chart" data-chart="{slug}">{text.strip()}</figure>'


@_styled
def funnel(labels: Sequence[str], docs: Sequence[int], mbytes: Sequence[float]) -> str:
    """Documents and MB after each stage (the first bar is the input)."""
    fig = _figure(9, 3.0)
    axes = fig.subplots(1, 2)
    x = np.arange(len(labels))
    for ax, vals, title, fmt in ((axes[0], docs, "documents", "{:,.0f}"), (axes[1], mbytes, "MB of text", "{:,.2f}")):
        bars = ax.bar(x, vals, color=[PALETTE[0]] + [PALETTE[1]] * (len(vals) - 1))
        ax.bar_label(bars, labels=[fmt.format(v) for v in vals], fontsize=7, padding=2)
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.set_title(title)
        ax.set_ylim(0, max(max(vals, default=0) * 1.15, 1))
    return to_svg(fig, "funnel")


@_styled
def removals(rows: Sequence[tuple[str, str, int]]) -> str:
    """Horizontal bars: documents removed per (stage, reason)."""
    fig = _figure(9, 0.6 + 0.25 * max(len(rows), 1))
    ax = fig.subplots()
    stages = list(dict.fromkeys(r[0] for r in rows))
    y = np.arange(len(rows))[::-1]
    colors = [PALETTE[stages.index(r[0]) % len(PALETTE)] for r in rows]
    bars = ax.barh(y, [r[2] for r in rows], color=colors)
    ax.bar_label(bars, labels=[f"{r[2]:,}" for r in rows], fontsize=7, padding=2)
    ax.set_yticks(y, [r[1] for r in rows])
    ax.set_xlabel("documents removed")
    ax.set_xlim(0, max([r[2] for r in rows], default=1) * 1.12 or 1)
    return to_svg(fig, "removals")


@_styled
def histogram(name: str, values: np.ndarray, lines: Sequence[tuple[float, str]] = (), log: bool = False) -> str:
    """Histogram of a score column with the stage's thresholds drawn as vertical lines."""
    fig = _figure(4.4, 2.6)
    ax = fig.subplots()
    v = values[np.isfinite(values)]
    if log:
        v = v[v > 0]
    if len(v):
        if log:
            bins = np.geomspace(max(v.min(), 1e-12), max(v.max(), v.min() * 1.0001, 1e-12), 41)
            ax.set_xscale("log")
        else:
            bins = np.linspace(v.min(), v.max() if v.max() > v.min() else v.min() + 1, 41)
        ax.hist(v, bins=bins, color=PALETTE[0])
    for i, (x, label) in enumerate(lines):
        if log and x <= 0:
            continue
        ax.axvline(x, color=PALETTE[3 + i % 3], linestyle="--", linewidth=1.2, label=label)
    if lines:
        ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{name} ({len(v):,} documents)")
    ax.set_ylabel("documents")
    return to_svg(fig, f"hist-{name}")


@_styled
def cluster_sizes(sizes: Sequence[int], counts: Sequence[int]) -> str:
    """Number of duplicate clusters per cluster size."""
    fig = _figure(4.4, 2.6)
    ax = fig.subplots()
    x = np.arange(len(sizes))
    bars = ax.bar(x, counts, color=PALETTE[2])
    ax.set_xticks(x, [str(s) for s in sizes])
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=7, padding=2)
    ax.set_xlabel("documents in cluster")
    ax.set_ylabel("clusters")
    if counts and max(counts) / max(min(counts), 1) > 100:
        ax.set_yscale("log")
    ax.set_title("duplicate clusters by size")
    return to_svg(fig, "clusters")


@_styled
def mixture(domains: Sequence[str], before: Sequence[float], after: Sequence[float]) -> str:
    """Share of each domain before (input) and after (output)."""
    fig = _figure(6.0, 2.8)
    ax = fig.subplots()
    x = np.arange(len(domains))
    w = 0.38
    b1 = ax.bar(x - w / 2, before, w, label="input", color=PALETTE[0])
    b2 = ax.bar(x + w / 2, after, w, label="output", color=PALETTE[1])
    for b in (b1, b2):
        ax.bar_label(b, labels=[f"{v:.0%}" for v in b.datavalues], fontsize=7, padding=2)
    ax.set_xticks(x, list(domains), rotation=20 if len(domains) > 6 else 0, ha="right" if len(domains) > 6 else "center")
    ax.set_ylabel("share of documents")
    ax.set_ylim(0, max(list(before) + list(after) + [0.01]) * 1.18)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("domain mixture")
    return to_svg(fig, "mixture")


@_styled
def timings(labels: Sequence[str], seconds: Sequence[float]) -> str:
    """Seconds per stage (summed over workers)."""
    fig = _figure(6.0, 0.6 + 0.28 * max(len(labels), 1))
    ax = fig.subplots()
    y = np.arange(len(labels))[::-1]
    bars = ax.barh(y, seconds, color=PALETTE[4])
    ax.bar_label(bars, labels=[f"{s:,.2f} s" for s in seconds], fontsize=7, padding=2)
    ax.set_yticks(y, list(labels))
    ax.set_xlabel("seconds (summed over workers)")
    ax.set_xlim(0, max(list(seconds) + [0.01]) * 1.2)
    return to_svg(fig, "timings")
