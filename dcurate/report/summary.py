"""The end-of-run summary table (stderr). Its numbers add up: per stage, documents in - removed
+ added = documents out, where "added" are documents a stage created (``mix`` up-sampling repeats
documents); counters a stage reports (e.g. ``dedup --method paragraphs``: documents changed and
lines removed) are listed under it."""

from __future__ import annotations

import logging
import sys
from typing import Any

_COUNTER_LABELS = {
    "docs_changed": "documents changed (text edited, kept)",
    "lines_removed": "lines removed",
}


def stage_added(s: dict[str, Any]) -> int:
    """Documents a stage added: out - (in - removed)."""
    return max(0, s["docs_out"] - (s["docs_in"] - sum(s["removed"].values())))


def format_summary(summary: dict[str, Any], output: str) -> str:
    stages = summary["stages"]
    show_added = any(stage_added(s) for s in stages)
    head = f"{'stage':<22}{'docs in':>12}{'docs out':>12}{'removed':>10}"
    head += f"{'added':>10}" if show_added else ""
    lines = [head + f"{'MB in':>10}{'MB out':>10}{'s':>9}"]
    for s in stages:
        removed = sum(s["removed"].values())
        added = stage_added(s)
        row = f"{str(s['index']) + ' ' + s['stage']:<22}{s['docs_in']:>12,}{s['docs_out']:>12,}{removed:>10,}"
        row += f"{added:>10,}" if show_added else ""
        row += f"{s['bytes_in'] / 1e6:>10.2f}{s['bytes_out'] / 1e6:>10.2f}{s['seconds']:>9.2f}"
        lines.append(row)
        for reason, n in s["removed"].items():
            lines.append(f"    removed: {reason:<40}{n:>12,}")
        if added:
            lines.append(f"    added: {'repeated documents (up-sampling)' if s['stage'] == 'mix' else 'documents':<42}"
                         f"{added:>12,}")
        for name, n in (s.get("counters") or {}).items():
            lines.append(f"    {_COUNTER_LABELS.get(name, name):<49}{n:>12,}")
    lines.append(
        f"{summary['docs_out']:,} documents written to {output} ({summary['shards_out']} shards) "
        f"in {summary['seconds']:.1f} s with {summary['workers']} worker(s)"
    )
    if summary.get("bad_records_skipped"):
        lines.append(f"{summary['bad_records_skipped']:,} malformed records skipped")
    if summary.get("resumed"):
        lines.append("fully resumed: every task was already complete, nothing was recomputed")
    return "\n".join(lines)


def print_summary(summary: dict[str, Any], output: str) -> None:
    """The table on stderr; with ``--log-format json`` one log record carrying the summary dict
    (``data``) instead; nothing with ``-q``."""
    log = logging.getLogger("dcurate")
    if not log.isEnabledFor(logging.INFO):
        return
    if any(getattr(h.formatter, "json_lines", False) for h in log.handlers):
        log.info("run summary: %s documents written to %s", f"{summary['docs_out']:,}", output,
                 extra={"data": summary})
    else:
        print(format_summary(summary, output), file=sys.stderr)
