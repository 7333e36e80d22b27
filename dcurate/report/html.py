"""``dcurate report``: one self-contained HTML page about a run (no scripts, no network: every
chart is an inline ``<svg>``, every piece of document text is HTML-escaped)."""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dcurate.report import charts
from dcurate.report.collect import EXAMPLES, RunData, collect

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#222;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;margin-top:2rem}
h3{font-size:1rem;margin-bottom:.3rem}
.sub{color:#666;margin-top:0}.note{color:#666;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{padding:.15rem .6rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
figure.chart{margin:.5rem 0;display:inline-block;max-width:100%}
svg.chart{max-width:100%;height:auto}
.charts{display:flex;flex-wrap:wrap;gap:.5rem}
.doc{border:1px solid #ddd;border-radius:4px;margin:.4rem 0;background:#fafafa}
.doc .meta{font-size:.75rem;color:#555;padding:.2rem .5rem;border-bottom:1px solid #eee;word-break:break-all}
.doc pre{white-space:pre-wrap;word-wrap:break-word;margin:0;padding:.4rem .5rem;font-size:.8rem;max-height:16rem;
overflow:auto}
.side{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:.5rem}
pre.recipe{background:#f4f4f4;padding:.5rem;font-size:.8rem;overflow:auto}
details{margin:.3rem 0}summary{cursor:pointer}
"""

_SKIP_HIST = {"epoch", "dup_cluster", "dup_cluster_size"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _n(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _stage_label(st: dict[str, Any]) -> str:
    return f"{st.get('index', '')} {st.get('stage', '')}".strip()


class _Page:
    def __init__(self, data: RunData):
        self.d = data
        self.parts: list[str] = []
        self.stages: list[dict[str, Any]] = list(data.summary.get("stages", []))
        self.mstages: list[dict[str, Any]] = list(data.manifest.get("stages", []))

    def add(self, *chunks: str) -> None:
        self.parts.extend(chunks)

    # -- sections -------------------------------------------------------------------------------
    def header(self) -> None:
        s, m = self.d.summary, self.d.manifest
        out = m.get("output") or str(self.d.files.out)
        bits = [
            f"{s.get('docs_out', 0):,} documents written",
            f"{s.get('shards_out', s.get('shards', 0))} shard(s)",
            f"{s.get('seconds', 0):,.1f} s with {s.get('workers', '?')} worker(s)",
            f"dcurate {s.get('dcurate_version', '')}",
        ]
        if m.get("started"):
            bits.append(f"started {m['started']}")
        if s.get("bad_records_skipped"):
            bits.append(f"{s['bad_records_skipped']:,} malformed records skipped")
        self.add(f"<h1>dcurate run report: {_e(out)}</h1>", f"<p class='sub'>{_e(' · '.join(bits))}</p>")

    def funnel(self) -> None:
        self.add("<h2 id='funnel'>Funnel</h2>")
        if not self.stages:
            self.add("<p class='note'>No stages ran (a reshard or copy).</p>")
            return
        first = self.stages[0]
        labels = ["input"] + [_stage_label(st) for st in self.stages]
        docs = [first.get("docs_in", 0)] + [st.get("docs_out", 0) for st in self.stages]
        mb = [first.get("bytes_in", 0) / 1e6] + [st.get("bytes_out", 0) / 1e6 for st in self.stages]
        self.add(charts.funnel(labels, docs, mb))
        rows = []
        for st in self.stages:
            vals = {k: st.get(k, 0) for k in ("docs_in", "docs_out", "bytes_in", "bytes_out")}
            attrs = " ".join(f'data-{k.replace("_", "-")}="{_e(v)}"' for k, v in vals.items())
            rows.append(
                f"<tr data-stage='{_e(st.get('stage', ''))}' {attrs}><td>{_e(_stage_label(st))}</td>"
                f"<td>{vals['docs_in']:,}</td><td>{vals['docs_out']:,}</td>"
                f"<td>{vals['docs_in'] - vals['docs_out']:,}</td>"
                f"<td>{vals['bytes_in'] / 1e6:,.2f}</td><td>{vals['bytes_out'] / 1e6:,.2f}</td>"
                f"<td>{st.get('seconds', 0):,.2f}</td></tr>"
            )
        self.add(
            "<table class='funnel'><tr><th>stage</th><th>docs in</th><th>docs out</th><th>net removed</th>"
            "<th>MB in</th><th>MB out</th><th>seconds</th></tr>", *rows, "</table>"
        )

    def removals(self) -> None:
        rows = [
            (_stage_label(st), str(reason), int(n))
            for st in self.stages for reason, n in (st.get("removed") or {}).items() if n
        ]
        self.add("<h2 id='removals'>Removals per reason</h2>")
        if not rows:
            self.add("<p class='note'>No document was removed.</p>")
            return
        self.add(charts.removals(rows))
        self.add("<details><summary>as a table</summary><table class='removals'>"
                 "<tr><th>stage</th><th style='text-align:left'>reason</th><th>documents</th></tr>")
        self.add(*(f"<tr><td>{_e(s)}</td><td style='text-align:left'>{_e(r)}</td><td>{n:,}</td></tr>"
                   for s, r, n in rows), "</table></details>")
        notes = [
            f"{_stage_label(st)}: {k.replace('_', ' ')} {v:,}"
            for st in self.stages for k, v in (st.get("counters") or {}).items()
        ]
        if notes:
            self.add(f"<p class='note'>Counters: {_e('; '.join(notes))}.</p>")

    def _score_columns(self) -> list[tuple[str, list[tuple[float, str]], bool, str, str | None]]:
        """(column, threshold lines, log scale, stage, cut) for the score columns a stage wrote; cut
        'lowest'/'highest' when the stage kept a top fraction or top k (the line is drawn at the
        lowest/highest kept value)."""
        out: list[tuple[str, list[tuple[float, str]], bool, str, str | None]] = []
        for i, ms in enumerate(self.mstages):
            name, p = ms.get("stage"), ms.get("params") or {}
            st = next((s for s in self.stages if s.get("index") == i), {})
            label = f"{i} {name}"
            if name == "quality":
                cols = p.get("column") or ["quality_score"]
                lines: list[tuple[float, str]] = []
                thr = p.get("threshold")
                if thr not in (None, "auto"):
                    lines.append((float(thr), f"threshold {float(thr):.3g}"))
                else:
                    cal = _calibrated(p.get("model") or [])
                    if cal is not None:
                        lines.append((cal, f"calibrated {cal:.3g}" + (" (applied)" if thr == "auto" else " (not applied)")))
                out.append((cols[0], lines, False, label, "lowest" if p.get("keep_top") is not None else None))
                out += [(c, [], False, label, None) for c in cols[1:]]
            elif name == "perplexity":
                lines = [(float(c), f"bucket cut {float(c):,.0f}") for c in st.get("cutoffs") or []]
                if p.get("max_perplexity") is not None:
                    lines.append((float(p["max_perplexity"]), f"max {float(p['max_perplexity']):,.0f}"))
                out.append((p.get("column") or "perplexity", lines, True, label,
                            "highest" if p.get("keep_top") is not None else None))
            elif name == "select":
                col = "dsir_log_weight" if p.get("method", "dsir") == "dsir" else "zipfit_score"
                out.append((col, [], False, label, "lowest"))
        return out

    def scores(self) -> None:
        sample = self.d.output
        known = self._score_columns()
        shown = {c for c, *_ in known}
        extra = [
            c for c in sample.numeric
            if c not in shown and c not in _SKIP_HIST and c != self.d.id_field and _is_float_like(sample.values(c))
        ]
        items = [k for k in known if k[0] in sample.numeric] + [(c, [], False, "", None) for c in extra]
        self.add("<h2 id='scores'>Score distributions</h2>")
        if not items:
            self.add("<p class='note'>The output has no score column.</p>")
            return
        self.add(f"<p class='note'>{_e(_sample_note(sample, 'output'))} Dashed lines: the stage's thresholds.</p>")
        figs = []
        for col, lines, log, stage, cut in items:
            v = sample.values(col)
            if cut and len(v):
                x = float(v.min() if cut == "lowest" else v.max())
                lines = [*lines, (x, f"{cut} kept {x:.3g}")]
            figs.append(charts.histogram(col, v, lines, log=log and bool(len(v)) and float(np.nanmin(v)) > 0))
            if stage:
                figs[-1] = figs[-1].replace("<figure ", f"<figure title='{_e(stage)}' ", 1)
        self.add("<div class='charts'>", *figs, "</div>")

    def duplicates(self) -> None:
        t = self.d.clusters
        if t is None:
            return
        self.add("<h2 id='duplicates'>Duplicate clusters</h2>")
        if t.num_rows == 0:
            self.add("<p class='note'>The cluster table is empty: no duplicates found.</p>")
            return
        cl = t.column("cluster").to_numpy()
        size = t.column("size").to_numpy()
        _, first = np.unique(cl, return_index=True)
        sizes, counts = np.unique(size[first], return_counts=True)
        self.add(
            f"<p class='note'>{len(first):,} clusters holding {t.num_rows:,} documents "
            f"(from {_e(self.d.files.clusters or 'the cluster table')}).</p>",
            charts.cluster_sizes([int(s) for s in sizes], [int(c) for c in counts]),
        )
        shown = self._cluster_examples(t)
        if not shown:
            self.add("<p class='note'>No cluster's texts were found in the samples read "
                     "(run with --rejected DIR to see the removed members).</p>")

    def _cluster_examples(self, t: Any) -> int:
        docs = self.d.cluster_docs
        if not docs:
            return 0
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = t.filter(pc.is_in(t.column("id"), value_set=pa.array(list(docs), t.column("id").type))).to_pylist()
        by: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            if r["id"] in docs:
                by.setdefault(int(r["cluster"]), []).append(r)
        chosen = sorted((c for c, m in by.items() if len(m) >= 2), key=lambda c: (-len(by[c]), c))[:EXAMPLES]
        for c in chosen:
            members = sorted(by[c], key=lambda r: (not r.get("kept", False), str(r["id"])))[:4]
            self.add(f"<h3>cluster {c} ({members[0].get('size', len(members))} documents)</h3><div class='side'>")
            for r in members:
                meta = {"kept by dedup" if r.get("kept") else "removed by dedup": ""}
                if r.get("jaccard") is not None:
                    meta["jaccard to kept"] = f"{r['jaccard']:.3f}"
                self.add(self._doc(docs[r["id"]], meta))
            self.add("</div>")
        return len(chosen)

    def domains(self) -> None:
        after: dict[Any, int] = dict(self.d.output.labels.get("domain") or {})
        if not after:
            return
        before: dict[Any, int] | None = None
        if self.d.inputs is not None and self.d.inputs.labels.get("domain"):
            before = dict(self.d.inputs.labels["domain"])
        self.add("<h2 id='domains'>Domain mixture</h2>")
        names = sorted(set(after) | set(before or {}), key=str)
        if len(names) > MAX_DOMAINS:  # the largest domains, the rest summed as one
            top = sorted(names, key=lambda k: (-(after.get(k, 0) + (before or {}).get(k, 0)), str(k)))[:MAX_DOMAINS - 1]
            after = _fold(after, top)
            before = _fold(before, top) if before else before
            names = sorted(top, key=str) + [OTHER]
        na, nb = sum(after.values()) or 1, sum((before or {}).values()) or 1
        sa = [after.get(k, 0) / na for k in names]
        sb = [(before or {}).get(k, 0) / nb for k in names]
        if before:
            self.add(charts.mixture(names, sb, sa))
        notes = [_sample_note(self.d.output, "output")]
        if self.d.inputs is not None:
            notes.append(_sample_note(self.d.inputs, "input"))
        self.add(f"<p class='note'>{_e(' '.join(notes))}</p>")
        sel = any(s.get("stage") == "select" for s in self.stages)
        head = "<tr><th>domain</th><th>input docs</th><th>input share</th><th>output docs</th><th>output share</th>"
        head += "<th>kept (output / input)</th></tr>" if sel else "</tr>"
        self.add("<table class='domains'>", head)
        for k, b, a in zip(names, sb, sa, strict=True):
            nbk, nak = (before or {}).get(k, 0), after.get(k, 0)
            row = f"<tr><td>{_e(k)}</td><td>{nbk:,}</td><td>{b:.1%}</td><td>{nak:,}</td><td>{a:.1%}</td>"
            if sel:
                row += f"<td>{nak / nbk:.1%}</td>" if nbk else "<td>–</td>"
            self.add(row + "</tr>")
        self.add("</table>")

    def examples(self) -> None:
        self.add("<h2 id='examples'>Examples</h2>")
        docs = list(self.d.output.docs)
        self.add("<h3>Kept documents</h3>")
        if not docs:
            self.add("<p class='note'>The output is empty.</p>")
        for d in docs[:EXAMPLES]:
            self.add(self._doc(d))
        for col, *_rest in self._score_columns():
            have = [d for d in docs if isinstance(d.get(col), (int, float)) and np.isfinite(d[col])]
            if len(have) < 2:
                continue
            have.sort(key=lambda d: (d[col], str(d.get(self.d.id_field))))
            self.add(f"<details><summary>kept, by {_e(col)}: lowest and highest</summary><div class='side'>")
            for d in have[:2] + have[-2:]:
                self.add(self._doc(d, {col: f"{d[col]:.4g}"}))
            self.add("</div></details>")
        for col in sorted(c for c in self.d.output.labels if c.endswith("_bucket")):
            self.add(f"<details><summary>kept, one per {_e(col)}</summary><div class='side'>")
            seen: set[Any] = set()
            for d in docs:
                if d.get(col) is not None and d[col] not in seen:
                    seen.add(d[col])
                    self.add(self._doc(d, {col: d[col]}))
            self.add("</div></details>")
        self.add("<h3>Removed documents</h3>")
        if self.d.rejected_dir is None:
            self.add("<p class='note'>Removed documents are shown when the run writes them: "
                     "<code>--rejected DIR</code>. Below: kept documents that the stages' annotations "
                     "put on the wrong side of a threshold or in a duplicate cluster.</p>")
            self._annotated(docs)
            return
        self.add(f"<p class='note'>From {_e(self.d.rejected_dir)} (first rows of each shard).</p>")
        if not self.d.rejected:
            self.add("<p class='note'>None.</p>")
        by_stage: dict[str, list[str]] = {}
        for reason in sorted(self.d.rejected):
            by_stage.setdefault(reason.split(".")[0], []).append(reason)
        for stage, reasons in by_stage.items():
            self.add(f"<h3>{_e(stage)}</h3>")
            for reason in reasons:
                rows = self.d.rejected[reason]
                self.add(f"<details><summary>{_e(reason)} ({len(rows)} shown)</summary>")
                self.add(*(self._doc(r) for r in rows), "</details>")

    def _annotated(self, docs: list[dict[str, Any]]) -> None:
        """Examples from annotations: scores below a quality threshold, perplexity above the
        maximum or in the last bucket, members of duplicate clusters (dedup --annotate)."""
        groups: list[tuple[str, list[dict[str, Any]]]] = []
        for col, lines, log, *_ in self._score_columns():
            if not lines:
                continue
            x, label = lines[-1] if log else lines[0]
            side = [d for d in docs if isinstance(d.get(col), (int, float)) and (d[col] > x if log else d[col] < x)]
            groups.append((f"{col} {'above' if log else 'below'} {label}", side))
        if any("dup_cluster_size" in d for d in docs):
            groups.append(("in a duplicate cluster (dup_cluster_size > 1)",
                           [d for d in docs if (d.get("dup_cluster_size") or 0) > 1]))
        for title, rows in groups:
            if rows:
                self.add(f"<details><summary>{_e(title)} ({min(len(rows), EXAMPLES)} shown)</summary>")
                self.add(*(self._doc(r) for r in rows[:EXAMPLES]), "</details>")

    def recipe(self) -> None:
        m = self.d.manifest
        self.add("<h2 id='recipe'>Recipe and timings</h2>")
        if self.stages:
            self.add(charts.timings([_stage_label(s) for s in self.stages], [float(s.get("seconds", 0)) for s in self.stages]))
        s = self.d.summary
        rss = s.get("peak_rss_mb") or {}
        self.add(
            f"<p class='note'>Wall time {s.get('seconds', 0):,.1f} s; {s.get('workers', '?')} worker(s); "
            f"peak memory {_e(rss.get('worker', '?'))} MB per worker, {_e(rss.get('driver', '?'))} MB driver.</p>"
        )
        recipe = m.get("recipe")
        if recipe is None:
            recipe = {
                "input": [i.get("path") for i in m.get("inputs", [])],
                "output": m.get("output"),
                "options": m.get("options", {}),
                "stages": [{"stage": st.get("stage"), **(st.get("params") or {})} for st in self.mstages],
            }
        text = recipe if isinstance(recipe, str) else json.dumps(recipe, indent=2, default=str)
        self.add(f"<pre class='recipe'>{_e(text)}</pre>")
        extra = []
        for st in self.stages:
            info = {k: v for k, v in st.items()
                    if k not in {"stage", "index", "docs_in", "docs_out", "bytes_in", "bytes_out", "removed", "seconds",
                                 "counters"}}
            if info:
                extra.append(f"<details><summary>{_e(_stage_label(st))}: stage details</summary>"
                             f"<pre class='recipe'>{_e(json.dumps(info, indent=2, default=str))}</pre></details>")
        self.add(*extra)
        self.add("<p class='note'>Methods: Gopher rules (Rae et al. 2021), MinHash LSH (Broder 1997), "
                 "CCNet perplexity buckets (Wenzek et al. 2020), DSIR (Xie et al. 2023), ZIP-FIT (Obbad et al. 2024), "
                 "UniMax (Chung et al. 2023). Charts drawn with matplotlib.</p>")

    # -- helpers --------------------------------------------------------------------------------
    def _doc(self, row: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
        tf, idf = self.d.text_field, self.d.id_field
        meta = dict(extra or {})
        meta.setdefault("id", row.get(idf))
        if row.get("dcurate_reason"):
            meta.setdefault("reason", row["dcurate_reason"])
        for k, v in row.items():
            if k in (tf, idf, "dcurate_reason", "_shard") or k in meta or v is None:
                continue
            meta[k] = f"{v:.4g}" if isinstance(v, float) else v
        meta["shard"] = row.get("_shard", "")
        line = " · ".join(f"{k}" if v == "" else f"{k}: {v}" for k, v in meta.items())
        text = row.get(tf) or ""
        return f"<div class='doc'><div class='meta'>{_e(line)}</div><pre>{_e(text)}</pre></div>"

    def render(self) -> str:
        for section in (self.header, self.funnel, self.removals, self.scores, self.duplicates, self.domains,
                        self.examples, self.recipe):
            section()
        title = f"dcurate report: {self.d.manifest.get('output') or self.d.files.out}"
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(self.parts)
            + "\n</body></html>\n"
        )


MAX_DOMAINS = 20
OTHER = "(all other domains)"


def _fold(counts: Any, keep: list[Any]) -> dict[Any, int]:
    out = {k: counts.get(k, 0) for k in keep}
    out[OTHER] = sum(v for k, v in counts.items() if k not in out)
    return out


def _is_float_like(v: np.ndarray) -> bool:
    return bool(len(v)) and not np.all(v == np.round(v))


def _sample_note(sample: Any, what: str) -> str:
    if sample.complete:
        return f"All {sample.rows:,} {what} documents read."
    return f"Sample of the {what}: the first rows of each of {sample.shards} shard(s), {sample.rows:,} documents."


def _calibrated(models: list[str]) -> float | None:
    """The threshold train-quality calibrated for the first model (its .json sidecar), if any."""
    for m in models[:1]:
        try:
            with open(f"{m}.json") as f:
                thr = json.load(f).get("threshold")
            return float(thr) if thr is not None else None
        except (OSError, ValueError, TypeError, AttributeError):
            return None
    return None


def render(out: str | os.PathLike) -> str:
    """The report page for output folder ``out``."""
    return _Page(collect(out)).render()


def write_report(out: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Write the report of output folder ``out`` (default ``OUT/.dcurate/report.html``); return its path."""
    data = collect(out)
    dest = Path(html_path) if html_path else data.files.report
    page = _Page(data).render()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, dest)
    return dest


def report_after_run(out: str | os.PathLike, shown: str | None = None) -> Path | None:
    """Called at the end of ``dcurate run``: write the report and print its path (``shown`` when
    OUT is a staging folder of an object-store URI); a failure is one warning line, never a failed run."""
    try:
        path = write_report(out)
    except Exception as e:  # noqa: BLE001 - the run's outputs are complete; the report is a bonus
        logging.getLogger("dcurate").warning("no report written (%s: %s)", type(e).__name__, e)
        return None
    logging.getLogger("dcurate").info("report: %s", shown or path)
    return path
